/* image<->text retrieval of a model over a paired dataset (webdataset
 * shards or csv), one caption per image: R@1/5/10 both ways and the ranks of
 * open_clip's get_clip_metrics (host/eval/eval_metrics). */
#ifndef TC_RETRIEVAL_EVAL_H
#define TC_RETRIEVAL_EVAL_H

#include <stdint.h>

#include "eval_metrics.h"
#include "model.h"
#include "tokenizer.h"

/* max_n > 0 stops after that many pairs */
tc_status tc_retrieval_eval(tc_model *m, tc_tokenizer *tok, const char *data, int64_t max_n,
                            tc_retrieval_result *out);

#endif
