/* evaluation metrics (see eval_metrics.h for the definitions and tie rule).
 * retrieval scores are computed a block of rows at a time with sgemm, so a
 * 5k x 25k evaluation never holds the full score matrix. */
#include "eval_metrics.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_ROWS 256

void tc_l2_normalize_rows(float *x, int64_t n, int d) {
    for (int64_t i = 0; i < n; i++) {
        float *r = x + i * d;
        double ss = 0;
        for (int j = 0; j < d; j++)
            ss += (double)r[j] * r[j];
        if (ss <= 0) continue;
        float inv = (float)(1.0 / sqrt(ss));
        for (int j = 0; j < d; j++)
            r[j] *= inv;
    }
}

tc_status tc_zeroshot_classifier(const float *tf, int n_classes, int n_templates, int e, float *W) {
    if (n_classes < 1 || n_templates < 1 || e < 1)
        return tc_fail(TC_ERR_ARG, "zero-shot classifier: %d classes, %d templates, embedding %d",
                       n_classes, n_templates, e);
    double *acc = malloc((size_t)e * sizeof *acc);
    if (!acc) return tc_fail(TC_ERR_OOM, "zero-shot classifier: out of memory");
    for (int c = 0; c < n_classes; c++) {
        memset(acc, 0, (size_t)e * sizeof *acc);
        for (int t = 0; t < n_templates; t++) {
            const float *r = tf + ((size_t)c * n_templates + t) * e;
            double ss = 0;
            for (int j = 0; j < e; j++)
                ss += (double)r[j] * r[j];
            if (!(ss > 0) || !isfinite(ss)) {
                free(acc);
                return tc_fail(TC_ERR_NONFINITE,
                               "zero-shot classifier: class %d template %d has a zero or "
                               "non-finite text feature",
                               c, t);
            }
            double inv = 1.0 / sqrt(ss);
            for (int j = 0; j < e; j++)
                acc[j] += r[j] * inv;
        }
        double ss = 0;
        for (int j = 0; j < e; j++) {
            acc[j] /= n_templates;
            ss += acc[j] * acc[j];
        }
        if (!(ss > 0) || !isfinite(ss)) {
            free(acc);
            return tc_fail(TC_ERR_NONFINITE,
                           "zero-shot classifier: class %d: the prompt features cancel out", c);
        }
        double inv = 1.0 / sqrt(ss);
        for (int j = 0; j < e; j++)
            W[(size_t)c * e + j] = (float)(acc[j] * inv);
    }
    free(acc);
    return TC_OK;
}

void tc_zeroshot_logits(const float *img, int64_t n, const float *W, int n_classes, int e,
                        float *logits) {
    if (n <= 0) return;
    /* logits (N, C) = 100 * img (N, E) @ W (C, E)^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, n_classes, e, 100.0f, img, e, W, e,
                0.0f, logits, n_classes);
}

tc_status tc_zeroshot_counts_init(tc_zeroshot_counts *c, int n_classes) {
    memset(c, 0, sizeof *c);
    if (n_classes < 1) return tc_fail(TC_ERR_ARG, "zero-shot: %d classes", n_classes);
    c->n_classes = n_classes;
    c->class_total = calloc((size_t)n_classes, sizeof *c->class_total);
    c->class_top1 = calloc((size_t)n_classes, sizeof *c->class_top1);
    if (!c->class_total || !c->class_top1) {
        tc_zeroshot_counts_free(c);
        return tc_fail(TC_ERR_OOM, "zero-shot: out of memory");
    }
    return TC_OK;
}

void tc_zeroshot_counts_free(tc_zeroshot_counts *c) {
    free(c->class_total);
    free(c->class_top1);
    c->class_total = c->class_top1 = NULL;
}

/* 0-based rank of entry t in row s (n entries) under the tie rule */
static int64_t rank_of(const float *s, int64_t n, int64_t t) {
    float v = s[t];
    int64_t r = 0;
    for (int64_t j = 0; j < n; j++)
        r += s[j] > v || (s[j] == v && j < t);
    return r;
}

tc_status tc_zeroshot_counts_add(tc_zeroshot_counts *c, const float *logits, int64_t n,
                                 const int *labels) {
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= c->n_classes)
            return tc_fail(TC_ERR_DATA, "zero-shot: label %d of sample %lld is outside [0, %d)",
                           labels[i], (long long)i, c->n_classes);
    for (int64_t i = 0; i < n; i++) {
        const float *row = logits + i * c->n_classes;
        int64_t r = rank_of(row, c->n_classes, labels[i]);
        c->n++;
        c->class_total[labels[i]]++;
        if (r < 1) {
            c->top1++;
            c->class_top1[labels[i]]++;
        }
        if (r < 5) c->top5++;
    }
    return TC_OK;
}

tc_zeroshot_result tc_zeroshot_result_of(const tc_zeroshot_counts *c) {
    tc_zeroshot_result r = {0, 0, 0, 0};
    r.n = c->n;
    if (c->n == 0) return r;
    r.top1 = (double)c->top1 / (double)c->n;
    r.top5 = (double)c->top5 / (double)c->n;
    double sum = 0;
    int present = 0;
    for (int k = 0; k < c->n_classes; k++)
        if (c->class_total[k] > 0) {
            sum += (double)c->class_top1[k] / (double)c->class_total[k];
            present++;
        }
    r.mean_per_class_recall = present ? sum / present : 0;
    return r;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* numpy: floor(median(ranks)) + 1, ranks 0-based */
static double median_rank(int64_t *r, int64_t n) {
    qsort(r, (size_t)n, sizeof *r, cmp_i64);
    double med = n % 2 ? (double)r[n / 2] : 0.5 * ((double)r[n / 2 - 1] + (double)r[n / 2]);
    return floor(med) + 1.0;
}

static const int KS[3] = {1, 5, 10};

tc_status tc_retrieval_metrics(const float *img, int64_t n_img, const float *txt, int64_t n_txt,
                               const int64_t *txt_image, int e, tc_retrieval_result *out) {
    memset(out, 0, sizeof *out);
    if (n_img < 1 || n_txt < 1 || e < 1)
        return tc_fail(TC_ERR_ARG, "retrieval: %lld images, %lld captions", (long long)n_img,
                       (long long)n_txt);
    for (int64_t t = 0; t < n_txt; t++)
        if (txt_image[t] < 0 || txt_image[t] >= n_img)
            return tc_fail(TC_ERR_DATA,
                           "retrieval: caption %lld belongs to image %lld, outside [0, %lld)",
                           (long long)t, (long long)txt_image[t], (long long)n_img);
    tc_status st = TC_OK;
    int64_t *count = calloc((size_t)n_img + 1, sizeof *count); /* CSR of captions per image */
    int64_t *caps = malloc((size_t)n_txt * sizeof *caps);
    int64_t *fill = calloc((size_t)n_img, sizeof *fill);
    int64_t *t2i_rank = malloc((size_t)n_txt * sizeof *t2i_rank);
    int64_t *i2t_rank = malloc((size_t)n_img * sizeof *i2t_rank);
    int64_t rows = n_txt > n_img ? n_txt : n_img;
    int64_t cols = n_txt > n_img ? n_txt : n_img;
    int64_t brows = rows < BLOCK_ROWS ? rows : BLOCK_ROWS;
    float *block = malloc((size_t)brows * (size_t)cols * sizeof *block);
    if (!count || !caps || !fill || !t2i_rank || !i2t_rank || !block) {
        st = tc_fail(TC_ERR_OOM, "retrieval: out of memory");
        goto done;
    }
    for (int64_t t = 0; t < n_txt; t++)
        count[txt_image[t] + 1]++;
    for (int64_t i = 0; i < n_img; i++)
        count[i + 1] += count[i];
    for (int64_t t = 0; t < n_txt; t++)
        caps[count[txt_image[t]] + fill[txt_image[t]]++] = t;
    int one = n_txt == n_img;
    for (int64_t i = 0; one && i < n_img; i++)
        one = count[i + 1] - count[i] == 1;
    out->one_caption = one;

    /* text -> image: scores (texts, images) */
    int64_t hits_t2i[3] = {0, 0, 0};
    double sum_t2i = 0;
    for (int64_t t0 = 0; t0 < n_txt; t0 += brows) {
        int64_t nb = n_txt - t0 < brows ? n_txt - t0 : brows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)n_img, e, 1.0f,
                    txt + t0 * e, e, img, e, 0.0f, block, (int)n_img);
        for (int64_t b = 0; b < nb; b++) {
            int64_t t = t0 + b;
            int64_t r = rank_of(block + b * n_img, n_img, txt_image[t]);
            t2i_rank[t] = r;
            sum_t2i += (double)r;
            for (int k = 0; k < 3; k++)
                hits_t2i[k] += r < KS[k];
        }
    }
    /* image -> text: scores (images, texts); best rank among the image's captions */
    int64_t hits_i2t[3] = {0, 0, 0}, with_caption = 0;
    double sum_i2t = 0;
    for (int64_t i0 = 0; i0 < n_img; i0 += brows) {
        int64_t nb = n_img - i0 < brows ? n_img - i0 : brows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)n_txt, e, 1.0f,
                    img + i0 * e, e, txt, e, 0.0f, block, (int)n_txt);
        for (int64_t b = 0; b < nb; b++) {
            int64_t i = i0 + b;
            if (count[i + 1] == count[i]) {
                i2t_rank[i] = -1;
                continue;
            }
            int64_t best = INT64_MAX;
            for (int64_t q = count[i]; q < count[i + 1]; q++) {
                int64_t r = rank_of(block + b * n_txt, n_txt, caps[q]);
                if (r < best) best = r;
            }
            i2t_rank[i] = best;
            sum_i2t += (double)best;
            with_caption++;
            for (int k = 0; k < 3; k++)
                hits_i2t[k] += best < KS[k];
        }
    }
    for (int k = 0; k < 3; k++) {
        out->t2i_recall[k] = (double)hits_t2i[k] / (double)n_txt;
        out->i2t_recall[k] = with_caption ? (double)hits_i2t[k] / (double)with_caption : 0;
    }
    if (one) {
        out->t2i_mean_rank = sum_t2i / (double)n_txt + 1.0;
        out->i2t_mean_rank = sum_i2t / (double)n_img + 1.0;
        out->t2i_median_rank = median_rank(t2i_rank, n_txt);
        out->i2t_median_rank = median_rank(i2t_rank, n_img);
    }
done:
    free(count);
    free(caps);
    free(fill);
    free(t2i_rank);
    free(i2t_rank);
    free(block);
    return st;
}

int64_t tc_steps_to_reach(const int64_t *steps, const double *acc, int n, double target) {
    for (int i = 0; i < n; i++)
        if (acc[i] >= target) return steps[i];
    return -1;
}
