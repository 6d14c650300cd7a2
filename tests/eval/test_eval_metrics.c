/* evaluation metrics against hand-computed cases: the zero-shot classifier
 * (mean of normalised prompt features, re-normalised), x100 logits, top-1/5
 * with the documented tie rule, mean per-class recall, retrieval R@k both
 * ways with several captions per image, and get_clip_metrics mean/median
 * ranks (numpy median, even and odd counts). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_metrics.h"
#include "testutil.h"

static void test_classifier(void **state) {
    /* class 0: (3,4) -> (0.6,0.8) and (1,0); mean (0.8,0.4), normalised (2,1)/sqrt(5)
     * class 1: (0,2) and (0,1) -> (0,1) */
    const float tf[8] = {3, 4, 1, 0, 0, 2, 0, 1};
    float W[4];
    assert_int_equal(tc_zeroshot_classifier(tf, 2, 2, 2, W), TC_OK);
    assert_float_equal(W[0], 2 / sqrt(5), 1e-6);
    assert_float_equal(W[1], 1 / sqrt(5), 1e-6);
    assert_float_equal(W[2], 0, 1e-7);
    assert_float_equal(W[3], 1, 1e-7);

    /* logits = 100 * img @ W^T */
    const float img[4] = {1, 0, 0.6f, 0.8f};
    float logits[4];
    tc_zeroshot_logits(img, 2, W, 2, 2, logits);
    assert_float_equal(logits[0], 200 / sqrt(5), 1e-4);
    assert_float_equal(logits[1], 0, 1e-5);
    assert_float_equal(logits[2], 100 * (1.2 + 0.8) / sqrt(5), 1e-4);
    assert_float_equal(logits[3], 80, 1e-4);

    /* features that cancel, or a zero prompt feature, are errors, not NaN */
    const float cancel[4] = {1, 0, -1, 0};
    assert_int_equal(tc_zeroshot_classifier(cancel, 1, 2, 2, W), TC_ERR_NONFINITE);
    const float zero[4] = {0, 0, 1, 0};
    assert_int_equal(tc_zeroshot_classifier(zero, 1, 2, 2, W), TC_ERR_NONFINITE);
}

static void test_topk_and_ties(void **state) {
    tc_zeroshot_counts c;
    assert_int_equal(tc_zeroshot_counts_init(&c, 6), TC_OK);
    /* all six logits equal: ranks follow the class index */
    const float flat[6] = {1, 1, 1, 1, 1, 1};
    int lab;
    lab = 0; /* rank 0: top-1 */
    assert_int_equal(tc_zeroshot_counts_add(&c, flat, 1, &lab), TC_OK);
    lab = 4; /* rank 4: top-5 only */
    assert_int_equal(tc_zeroshot_counts_add(&c, flat, 1, &lab), TC_OK);
    lab = 5; /* rank 5: neither */
    assert_int_equal(tc_zeroshot_counts_add(&c, flat, 1, &lab), TC_OK);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.top1, 1);
    assert_int_equal(c.top5, 2);
    /* a strict order: true class 2 has 5 larger logits -> outside the top 5 */
    const float row[6] = {6, 5, 0, 4, 3, 2};
    lab = 2;
    assert_int_equal(tc_zeroshot_counts_add(&c, row, 1, &lab), TC_OK);
    assert_int_equal(c.top5, 2);
    lab = 6;
    assert_int_equal(tc_zeroshot_counts_add(&c, row, 1, &lab), TC_ERR_DATA);
    tc_zeroshot_counts_free(&c);
}

static void test_per_class_recall(void **state) {
    tc_zeroshot_counts c;
    assert_int_equal(tc_zeroshot_counts_init(&c, 3), TC_OK);
    /* labels 0,0,1: sample 0 right, sample 1 wrong (predicts 1), sample 2 right.
     * recall class 0 = 1/2, class 1 = 1/1, class 2 absent -> mean 0.75; top-1 2/3 */
    const float logits[9] = {5, 1, 0, 1, 5, 0, 0, 5, 1};
    const int labels[3] = {0, 0, 1};
    assert_int_equal(tc_zeroshot_counts_add(&c, logits, 3, labels), TC_OK);
    tc_zeroshot_result r = tc_zeroshot_result_of(&c);
    assert_int_equal(r.n, 3);
    assert_float_equal(r.top1, 2.0 / 3.0, 1e-12);
    assert_float_equal(r.top5, 1.0, 1e-12);
    assert_float_equal(r.mean_per_class_recall, 0.75, 1e-12);
    tc_zeroshot_counts_free(&c);
}

static void test_retrieval_multi_caption(void **state) {
    /* images: i0 (1,0), i1 (0,1), i2 (0.6,0.8)
     * captions: t0 (1,0) and t1 (0,1) of i0, t2 (0,1) of i1, t3 (0.8,0.6) of i2
     * text->image ranks of the true image: t0 0, t1 2 (i1 1.0, i2 0.8 > 0), t2 0, t3 0
     * image->text best caption rank: i0 0 (t0), i1 1 (t1 ties t2 at 1.0 with a
     * lower index), i2 0 (t3 0.96) */
    const float img[6] = {1, 0, 0, 1, 0.6f, 0.8f};
    const float txt[8] = {1, 0, 0, 1, 0, 1, 0.8f, 0.6f};
    const int64_t owner[4] = {0, 0, 1, 2};
    tc_retrieval_result r;
    assert_int_equal(tc_retrieval_metrics(img, 3, txt, 4, owner, 2, &r), TC_OK);
    assert_float_equal(r.t2i_recall[0], 0.75, 1e-12);
    assert_float_equal(r.t2i_recall[1], 1.0, 1e-12);
    assert_float_equal(r.t2i_recall[2], 1.0, 1e-12);
    assert_float_equal(r.i2t_recall[0], 2.0 / 3.0, 1e-12);
    assert_float_equal(r.i2t_recall[1], 1.0, 1e-12);
    assert_int_equal(r.one_caption, 0);
    assert_float_equal(r.t2i_mean_rank, 0, 0);

    int64_t bad[4] = {0, 0, 3, 2};
    assert_int_equal(tc_retrieval_metrics(img, 3, txt, 4, bad, 2, &r), TC_ERR_DATA);
}

static void test_retrieval_ranks(void **state) {
    /* one caption per image: t0 (0.6,0.8) of i0, t1 (0,1) of i1, t2 (1,0) of i2
     * t2i ranks: t0 -> i0 scores (.6, .8, 1.0): rank 2; t1 -> i1: rank 0; t2 -> i2 (1, 0, .6): rank
     * 1 i2t ranks: i0 over (t0 .6, t1 0, t2 1): rank 1; i1 (0.8, 1, 0): rank 0; i2 (1.0, .8, .6):
     * rank 2 mean rank (1-based) 2, median floor(1)+1 = 2, R@1 1/3 */
    const float img[6] = {1, 0, 0, 1, 0.6f, 0.8f};
    const float txt[6] = {0.6f, 0.8f, 0, 1, 1, 0};
    const int64_t owner[3] = {0, 1, 2};
    tc_retrieval_result r;
    assert_int_equal(tc_retrieval_metrics(img, 3, txt, 3, owner, 2, &r), TC_OK);
    assert_int_equal(r.one_caption, 1);
    assert_float_equal(r.t2i_mean_rank, 2.0, 1e-12);
    assert_float_equal(r.t2i_median_rank, 2.0, 1e-12);
    assert_float_equal(r.i2t_mean_rank, 2.0, 1e-12);
    assert_float_equal(r.i2t_median_rank, 2.0, 1e-12);
    assert_float_equal(r.t2i_recall[0], 1.0 / 3.0, 1e-12);
    assert_float_equal(r.i2t_recall[0], 1.0 / 3.0, 1e-12);

    /* even count: ranks {1, 0} -> numpy median 0.5 -> floor + 1 = 1; mean 1.5 */
    const float img2[4] = {1, 0, 0, 1};
    const float txt2[4] = {0, 1, 0, 1};
    const int64_t owner2[2] = {0, 1};
    assert_int_equal(tc_retrieval_metrics(img2, 2, txt2, 2, owner2, 2, &r), TC_OK);
    assert_float_equal(r.t2i_median_rank, 1.0, 1e-12);
    assert_float_equal(r.t2i_mean_rank, 1.5, 1e-12);
}

static void test_retrieval_large_blocks(void **state) {
    /* more rows than one sgemm block: every caption is its own image's
     * exact copy, so every recall is 1 and every rank 1 */
    enum { N = 600, E = 8 };
    float *img = malloc(sizeof(float) * N * E), *txt = malloc(sizeof(float) * N * E);
    int64_t *owner = malloc(sizeof(int64_t) * N);
    uint64_t s = 7;
    tc_fill_uniform(img, N * E, &s, 1.0f);
    tc_l2_normalize_rows(img, N, E);
    memcpy(txt, img, sizeof(float) * N * E);
    for (int i = 0; i < N; i++)
        owner[i] = i;
    tc_retrieval_result r;
    assert_int_equal(tc_retrieval_metrics(img, N, txt, N, owner, E, &r), TC_OK);
    for (int k = 0; k < 3; k++) {
        assert_float_equal(r.t2i_recall[k], 1.0, 1e-12);
        assert_float_equal(r.i2t_recall[k], 1.0, 1e-12);
    }
    assert_float_equal(r.t2i_mean_rank, 1.0, 1e-12);
    assert_float_equal(r.i2t_median_rank, 1.0, 1e-12);
    free(img);
    free(txt);
    free(owner);
}

static void test_steps_to_reach(void **state) {
    const int64_t steps[4] = {100, 200, 300, 400};
    const double acc[4] = {0.5, 0.7, 0.69, 0.8};
    assert_int_equal(tc_steps_to_reach(steps, acc, 4, 0.7), 200);
    assert_int_equal(tc_steps_to_reach(steps, acc, 4, 0.75), 400);
    assert_int_equal(tc_steps_to_reach(steps, acc, 4, 0.9), -1);
    float x[4] = {3, 4, 0, 0};
    tc_l2_normalize_rows(x, 2, 2);
    assert_float_equal(x[0], 0.6, 1e-7);
    assert_float_equal(x[1], 0.8, 1e-7);
    assert_float_equal(x[2], 0, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classifier),       cmocka_unit_test(test_topk_and_ties),
        cmocka_unit_test(test_per_class_recall), cmocka_unit_test(test_retrieval_multi_caption),
        cmocka_unit_test(test_retrieval_ranks),  cmocka_unit_test(test_retrieval_large_blocks),
        cmocka_unit_test(test_steps_to_reach),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
