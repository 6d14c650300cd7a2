/* evaluation metrics on fp32 host arrays: zero-shot classification as
 * open_clip / CLIP_benchmark, and image<->text retrieval as CLIP_benchmark
 * (several captions per image) plus open_clip's get_clip_metrics ranks for
 * the one-caption case (docs/design.md §10). pure functions: no I/O, no model.
 *
 * ties: wherever a ranking is needed, equal scores are ordered by the lower
 * index first (as a stable descending sort). a target is "in the top k" when
 *   #{j : s_j > s_t} + #{j < t : s_j == s_t} < k,
 * so an exact tie never counts in the target's favour beyond index order,
 * and results do not depend on sort stability. */
#ifndef TC_EVAL_METRICS_H
#define TC_EVAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* rows of x (n, d) scaled to unit L2 norm; a zero row stays zero */
void tc_l2_normalize_rows(float *x, int64_t n, int d);

/* open_clip build_zero_shot_classifier:
 *   text_features (C*T, E): class c's T prompt features at rows c*T .. c*T+T-1
 *   W (C, E): per class, the mean over templates of the L2-normalised features,
 *   re-normalised. fails on a class whose mean is zero or non-finite. */
tc_status tc_zeroshot_classifier(const float *text_features, int n_classes, int n_templates,
                                 int embed_dim, float *W);

/* logits (N, C) = 100 * img (N, E) @ W^T; img must already be L2-normalised */
void tc_zeroshot_logits(const float *img, int64_t n, const float *W, int n_classes, int embed_dim,
                        float *logits);

/* streaming top-1 / top-5 / per-class recall over batches */
typedef struct {
    int n_classes;
    int64_t n, top1, top5;
    int64_t *class_total, *class_top1; /* (C) */
} tc_zeroshot_counts;

tc_status tc_zeroshot_counts_init(tc_zeroshot_counts *c, int n_classes);
void tc_zeroshot_counts_free(tc_zeroshot_counts *c);
/* adds a batch of logits (N, C) with labels in [0, C); a label out of range fails */
tc_status tc_zeroshot_counts_add(tc_zeroshot_counts *c, const float *logits, int64_t n,
                                 const int *labels);

typedef struct {
    int64_t n;
    double top1, top5;            /* fractions */
    double mean_per_class_recall; /* sklearn balanced_accuracy: mean top-1 recall over the
                                     classes that occur in the labels */
} tc_zeroshot_result;

tc_zeroshot_result tc_zeroshot_result_of(const tc_zeroshot_counts *c);

/* retrieval between n_img images and n_txt captions, features L2-normalised,
 * scores = txt @ img^T. caption t belongs to image txt_image[t].
 *   text->image R@k (CLIP_benchmark image_retrieval_recall@k): mean over captions
 *     of [its image is in the caption's top k images]
 *   image->text R@k (text_retrieval_recall@k): mean over images of [at least one
 *     of its captions is in the image's top k captions]; images without a
 *     caption are left out of the mean
 * when every image has exactly one caption (one_caption = 1) the 1-based mean
 * and median rank of the ground truth are filled for both directions, as
 * open_clip get_clip_metrics (median = floor(numpy median) + 1); else 0. */
typedef struct {
    double t2i_recall[3], i2t_recall[3]; /* k = 1, 5, 10 */
    int one_caption;
    double i2t_mean_rank, i2t_median_rank, t2i_mean_rank, t2i_median_rank;
} tc_retrieval_result;

tc_status tc_retrieval_metrics(const float *img, int64_t n_img, const float *txt, int64_t n_txt,
                               const int64_t *txt_image, int embed_dim, tc_retrieval_result *out);

/* the first step at which acc reaches target (steps ascending); -1 when never.
 * used for the inheritance speedup: steps for an inherited student to reach
 * the from-scratch student's final accuracy. */
int64_t tc_steps_to_reach(const int64_t *steps, const double *acc, int n, double target);

#endif
