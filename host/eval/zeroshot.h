/* zero-shot classification of a model on a labelled image set, as open_clip
 * does it: per class, the prompt templates filled with the class name are
 * encoded and averaged into a re-normalised classifier row; images are
 * scored by 100 * image_feature . W; top-1, top-5 and mean per-class recall.
 * images go through the model's eval preprocessing. */
#ifndef TC_ZEROSHOT_H
#define TC_ZEROSHOT_H

#include <stdint.h>

#include "eval_metrics.h"
#include "model.h"
#include "tokenizer.h"

typedef struct {
    const char *data;             /* loader spec: "fmnist:test", or an image folder */
    const char *kind;             /* NULL, or "fmnist" / "folder" */
    const char *classnames;       /* folder: class-name file (NULL: DIR/classnames.txt) */
    const char *fmnist_dir;       /* NULL: the Debian package's folder */
    const char *const *templates; /* each with one "{}" */
    int n_templates;
    int64_t max_images; /* 0 = all */
    int workers;
} tc_zeroshot_cfg;

/* the classifier W (n_classes, E) for a model; class names from the data */
tc_status tc_zeroshot_build_classifier(tc_model *m, tc_tokenizer *tok, const char *const *classes,
                                       int n_classes, const char *const *templates, int n_templates,
                                       float *W);

tc_status tc_zeroshot_eval(tc_model *m, tc_tokenizer *tok, const tc_zeroshot_cfg *cfg,
                           tc_zeroshot_result *out);

#endif
