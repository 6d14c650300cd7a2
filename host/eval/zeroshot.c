#include "zeroshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_loader.h"

/* template with every "{}" replaced by the class name */
static void fill_template(char *buf, size_t cap, const char *tmpl, const char *name) {
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 1 < cap; p++) {
        if (p[0] == '{' && p[1] == '}') {
            for (const char *q = name; *q && n + 1 < cap; q++)
                buf[n++] = *q;
            p++;
        } else {
            buf[n++] = *p;
        }
    }
    buf[n] = 0;
}

tc_status tc_zeroshot_build_classifier(tc_model *m, tc_tokenizer *tok, const char *const *classes,
                                       int n_classes, const char *const *templates, int n_templates,
                                       float *W) {
    const tc_model_config *c = tc_model_cfg(m);
    tc_backend *be = tc_model_backend(m);
    int T = c->text.context_length, E = c->embed_dim, chunk = tc_model_max_batch(m);
    int64_t rows = (int64_t)n_classes * n_templates;
    int32_t *ids = malloc((size_t)chunk * T * sizeof *ids);
    float *feat = malloc((size_t)rows * E * sizeof *feat);
    tc_status s = (ids && feat) ? TC_OK : tc_fail(TC_ERR_OOM, "zero-shot: out of memory");
    char text[1024];
    for (int64_t at = 0; s == TC_OK && at < rows; at += chunk) {
        int b = rows - at < chunk ? (int)(rows - at) : chunk;
        for (int i = 0; i < b && s == TC_OK; i++) {
            int64_t r = at + i;
            fill_template(text, sizeof text, templates[r % n_templates], classes[r / n_templates]);
            int used;
            s = tc_tokenize(tok, text, strlen(text), ids + (size_t)i * T, T, &used);
        }
        if (s == TC_OK) s = tc_model_encode_text(m, ids, b);
        if (s == TC_OK)
            s = be->download(be, feat + (size_t)at * E, tc_model_text_features(m),
                             (size_t)b * E * sizeof(float));
    }
    if (s == TC_OK) s = tc_zeroshot_classifier(feat, n_classes, n_templates, E, W);
    free(feat);
    free(ids);
    return s;
}

tc_status tc_zeroshot_eval(tc_model *m, tc_tokenizer *tok, const tc_zeroshot_cfg *cfg,
                           tc_zeroshot_result *out) {
    const tc_model_config *c = tc_model_cfg(m);
    tc_backend *be = tc_model_backend(m);
    int E = c->embed_dim, B = tc_model_max_batch(m);
    memset(out, 0, sizeof *out);

    tc_loader_cfg lc;
    tc_eval_loader_cfg(&lc, m, cfg->data, tok);
    lc.source.kind = cfg->kind;
    if (cfg->classnames) lc.source.classnames = cfg->classnames;
    if (cfg->fmnist_dir) lc.source.fmnist_dir = cfg->fmnist_dir;
    if (cfg->workers > 0) lc.workers = cfg->workers;
    tc_loader *l;
    TC_TRY(tc_loader_create(&lc, NULL, &l));
    const tc_source *src = tc_loader_source(l);
    int n_classes = src->num_classes;
    if (n_classes < 2) {
        tc_loader_destroy(l);
        return tc_fail(TC_ERR_DATA, "zero-shot data %s: needs labelled classes (found %d)",
                       cfg->data, n_classes);
    }
    float *W = malloc((size_t)n_classes * E * sizeof *W);
    float *img = malloc((size_t)B * E * sizeof *img);
    float *logits = malloc((size_t)B * n_classes * sizeof *logits);
    int *labels = malloc((size_t)B * sizeof *labels);
    tc_zeroshot_counts counts = {0};
    tc_status s =
        (W && img && logits && labels) ? TC_OK : tc_fail(TC_ERR_OOM, "zero-shot: out of memory");
    if (s == TC_OK)
        s = tc_zeroshot_build_classifier(m, tok, (const char *const *)src->class_names, n_classes,
                                         cfg->templates, cfg->n_templates, W);
    if (s == TC_OK) s = tc_zeroshot_counts_init(&counts, n_classes);
    while (s == TC_OK) {
        tc_batch *batch;
        s = tc_loader_next(l, &batch);
        if (s != TC_OK || !batch) break;
        int n = batch->n;
        if (cfg->max_images > 0 && counts.n + n > cfg->max_images)
            n = (int)(cfg->max_images - counts.n);
        if (n > 0) s = tc_model_encode_image(m, batch->images, n);
        if (s == TC_OK && n > 0)
            s = be->download(be, img, tc_model_image_features(m), (size_t)n * E * sizeof(float));
        if (s == TC_OK && n > 0) {
            for (int i = 0; i < n; i++)
                labels[i] = batch->labels[i];
            tc_zeroshot_logits(img, n, W, n_classes, E, logits);
            s = tc_zeroshot_counts_add(&counts, logits, n, labels);
        }
        tc_loader_release(l, batch);
        if (cfg->max_images > 0 && counts.n >= cfg->max_images) break;
    }
    if (s == TC_OK) {
        if (counts.n == 0)
            s = tc_fail(TC_ERR_DATA, "zero-shot data %s: no images", cfg->data);
        else
            *out = tc_zeroshot_result_of(&counts);
    }
    tc_zeroshot_counts_free(&counts);
    free(labels);
    free(logits);
    free(img);
    free(W);
    tc_loader_destroy(l);
    return s;
}
