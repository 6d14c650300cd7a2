#include "retrieval.h"

#include <stdlib.h>

#include "eval_loader.h"

/* retrieval over a paired dataset, one caption per image */
tc_status tc_retrieval_eval(tc_model *m, tc_tokenizer *tok, const char *data, int64_t max_n,
                            tc_retrieval_result *out) {
    const tc_model_config *c = tc_model_cfg(m);
    tc_backend *be = tc_model_backend(m);
    int E = c->embed_dim;
    tc_loader_cfg lc;
    tc_eval_loader_cfg(&lc, m, data, tok);
    tc_loader *l;
    TC_TRY(tc_loader_create(&lc, NULL, &l));
    size_t cap = 1024, n = 0;
    float *img = malloc(cap * E * sizeof *img), *txt = malloc(cap * E * sizeof *txt);
    tc_status s = img && txt ? TC_OK : tc_fail(TC_ERR_OOM, "retrieval: out of memory");
    while (s == TC_OK) {
        tc_batch *b;
        s = tc_loader_next(l, &b);
        if (s != TC_OK || !b) break;
        int k = b->n;
        if (max_n > 0 && (int64_t)(n + k) > max_n) k = (int)(max_n - (int64_t)n);
        while (n + k > cap) {
            cap *= 2;
            float *a = realloc(img, cap * E * sizeof *img),
                  *t = a ? realloc(txt, cap * E * sizeof *txt) : NULL;
            if (a) img = a;
            if (t) txt = t;
            if (!a || !t) s = tc_fail(TC_ERR_OOM, "retrieval: out of memory");
            if (s != TC_OK) break;
        }
        if (s == TC_OK && k > 0) s = tc_model_encode_image(m, b->images, k);
        if (s == TC_OK && k > 0)
            s = be->download(be, img + n * E, tc_model_image_features(m),
                             (size_t)k * E * sizeof(float));
        if (s == TC_OK && k > 0) s = tc_model_encode_text(m, b->tokens, k);
        if (s == TC_OK && k > 0)
            s = be->download(be, txt + n * E, tc_model_text_features(m),
                             (size_t)k * E * sizeof(float));
        n += (size_t)k;
        tc_loader_release(l, b);
        if (max_n > 0 && (int64_t)n >= max_n) break;
    }
    int64_t *owner = s == TC_OK ? malloc((n ? n : 1) * sizeof *owner) : NULL;
    if (s == TC_OK && !owner) s = tc_fail(TC_ERR_OOM, "retrieval: out of memory");
    for (size_t i = 0; owner && i < n; i++)
        owner[i] = (int64_t)i;
    if (s == TC_OK && n == 0) s = tc_fail(TC_ERR_DATA, "retrieval data %s: no pairs", data);
    if (s == TC_OK) s = tc_retrieval_metrics(img, (int64_t)n, txt, (int64_t)n, owner, E, out);
    free(owner);
    free(txt);
    free(img);
    tc_loader_destroy(l);
    return s;
}
