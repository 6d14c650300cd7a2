/* TinyCLIP's loss (affinity mimicking, optional hard CLIP term) on rank 1 of
 * a 2-process global batch against a PyTorch fp64 autograd reference
 * (scripts/fixtures_affinity.py): the loss, the gradients of every student
 * feature of the global batch (row part + column part, gather-with-grad) and
 * of the student's log logit scale, within 1e-5 relative. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "loss.h"
#include "safetensors.h"
#include "testutil.h"

static float *read_all(tc_safetensors *f, const char *name, size_t *n) {
    const tc_st_tensor *t = tc_st_find(f, name);
    if (!t) fail_msg("affinity fixture: %s missing", name);
    float *x = malloc(t->numel * sizeof *x);
    assert_int_equal(tc_st_tensor_to_f32(f, t, x), TC_OK);
    if (n) *n = t->numel;
    return x;
}

static float *dev_copy(tc_backend *be, const float *x, size_t n) {
    float *d;
    assert_int_equal(be->alloc(be, n * sizeof *d, (void **)&d), TC_OK);
    assert_int_equal(be->upload(be, d, x, n * sizeof *d), TC_OK);
    return d;
}

static void test_affinity_parity(void **state) {
    char path[1024];
    tc_fixture("affinity/affinity.safetensors", path, sizeof path);
    tc_safetensors *f;
    if (tc_st_open(&f, path) != TC_OK) fail_msg("%s", tc_last_error());
    int W = atoi(tc_st_metadata(f, "world_size")), n = atoi(tc_st_metadata(f, "rows"));
    int rank = atoi(tc_st_metadata(f, "rank")), cases = atoi(tc_st_metadata(f, "cases"));
    float s_t = strtof(tc_st_metadata(f, "teacher_logit_scale"), NULL);
    int N = W * n, offset = rank * n;
    size_t nfi, ngi;
    float *fi = read_all(f, "student_img", &nfi), *ft = read_all(f, "student_txt", NULL);
    float *gi = read_all(f, "teacher_img", &ngi), *gt = read_all(f, "teacher_txt", NULL);
    int E = (int)(nfi / N), TE = (int)(ngi / N);
    tc_backend *be;
    assert_int_equal(tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}), TC_OK);
    float *d_fi = dev_copy(be, fi, nfi), *d_ft = dev_copy(be, ft, nfi);
    float *d_gi = dev_copy(be, gi, ngi), *d_gt = dev_copy(be, gt, ngi);
    float *scratch;
    size_t nN = (size_t)n * N;
    assert_int_equal(be->alloc(be,
                               (6 * nN + 2 * (size_t)n * E + 2 * (size_t)N * E + 4) * sizeof(float),
                               (void **)&scratch),
                     TC_OK);
    tc_loss_workspace ws = {scratch, scratch + 2 * nN, scratch + 4 * nN};
    float *dimg = scratch + 6 * nN, *dtxt = dimg + (size_t)n * E;
    float *dimg_all = dtxt + (size_t)n * E, *dtxt_all = dimg_all + (size_t)N * E;
    float *scalars = dtxt_all + (size_t)N * E; /* loss, log_scale, teacher log scale, dlog_scale */
    tc_loss_features st = {d_fi + (size_t)offset * E, d_ft + (size_t)offset * E, d_fi, d_ft};
    tc_loss_features te = {d_gi + (size_t)offset * TE, d_gt + (size_t)offset * TE, d_gi, d_gt};
    for (int k = 0; k < cases; k++) {
        char key[64];
        snprintf(key, sizeof key, "case%d.alpha", k);
        float alpha = strtof(tc_st_metadata(f, key), NULL);
        snprintf(key, sizeof key, "case%d.weight", k);
        float weight = strtof(tc_st_metadata(f, key), NULL);
        snprintf(key, sizeof key, "case%d.log_scale", k);
        float *log_s = read_all(f, key, NULL);
        float host_scalars[4] = {0.0f, log_s[0], logf(s_t), 0.0f};
        be->upload(be, scalars, host_scalars, sizeof host_scalars);
        tc_loss_weights w = {(1.0f - alpha) * weight, alpha * weight};
        tc_loss_forward_backward(be, w, n, N, offset, E, TE, &st, &te, scalars + 1, scalars + 2, ws,
                                 scalars, dimg, dtxt, dimg_all, dtxt_all, scalars + 3);
        be->download(be, host_scalars, scalars, sizeof host_scalars);
        /* the rank's gradient for every feature: columns, plus its own rows */
        float *gimg = malloc(nfi * sizeof *gimg), *gtxt = malloc(nfi * sizeof *gtxt);
        float *rimg = malloc((size_t)n * E * sizeof *rimg),
              *rtxt = malloc((size_t)n * E * sizeof *rtxt);
        be->download(be, gimg, dimg_all, nfi * sizeof *gimg);
        be->download(be, gtxt, dtxt_all, nfi * sizeof *gtxt);
        be->download(be, rimg, dimg, (size_t)n * E * sizeof *rimg);
        be->download(be, rtxt, dtxt, (size_t)n * E * sizeof *rtxt);
        for (size_t i = 0; i < (size_t)n * E; i++) {
            gimg[(size_t)offset * E + i] += rimg[i];
            gtxt[(size_t)offset * E + i] += rtxt[i];
        }
        snprintf(key, sizeof key, "case%d.loss", k);
        float *want_loss = read_all(f, key, NULL);
        TC_ASSERT_CLOSE(&host_scalars[0], want_loss, 1, 1e-5, key);
        snprintf(key, sizeof key, "case%d.grad_img", k);
        float *want = read_all(f, key, NULL);
        TC_ASSERT_CLOSE(gimg, want, nfi, 1e-5, key);
        free(want);
        snprintf(key, sizeof key, "case%d.grad_txt", k);
        want = read_all(f, key, NULL);
        TC_ASSERT_CLOSE(gtxt, want, nfi, 1e-5, key);
        free(want);
        snprintf(key, sizeof key, "case%d.grad_log_scale", k);
        want = read_all(f, key, NULL);
        TC_ASSERT_CLOSE(&host_scalars[3], want, 1, 1e-5, key);
        printf("case %d (alpha %.2f, weight %.1f): loss %.6f\n", k, alpha, weight, host_scalars[0]);
        free(want);
        free(want_loss);
        free(rtxt);
        free(rimg);
        free(gtxt);
        free(gimg);
        free(log_s);
    }
    be->free(be, scratch);
    be->free(be, d_gt);
    be->free(be, d_gi);
    be->free(be, d_ft);
    be->free(be, d_fi);
    be->destroy(be);
    free(gt);
    free(gi);
    free(ft);
    free(fi);
    tc_st_close(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_affinity_parity)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
