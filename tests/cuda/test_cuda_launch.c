/* the launch arithmetic of the CUDA backend (cuda/launch_math.h) and its
 * choice of cuDNN algorithm (cuda/conv_pick.h), checked on the host: it
 * needs neither nvcc, cuDNN nor a GPU, so it runs in every build.
 * grids must stay inside the hardware limits (gridDim.y <= 65535), the
 * partials of the two-pass column reductions must fit the scratch and cover
 * every row, and alignment decisions must see the pruned views (element
 * offsets that leave a pointer 2- or 4-byte aligned) for what they are. */
#include <limits.h>
#include <stdio.h>

#include "testutil.h"

#include "conv_pick.h"
#include "launch_math.h"

#define SCRATCH ((size_t)64 << 20) /* TC_CUDA_SCRATCH_BYTES */

static void test_grid(void **state) {
    (void)state;
    assert_int_equal(tc_cuda_grid(0, 256), 1);
    assert_int_equal(tc_cuda_grid(1, 256), 1);
    assert_int_equal(tc_cuda_grid(256, 256), 1);
    assert_int_equal(tc_cuda_grid(257, 256), 2);
    assert_int_equal(tc_cuda_grid((size_t)154 * 1234 + 3, 256), (154 * 1234 + 3 + 255) / 256);
    /* grid-stride loops cap the grid; the loop covers the rest */
    assert_int_equal(tc_cuda_grid((size_t)1 << 40, 256), TC_CUDA_MAX_STRIDE_GRID);
}

/* the partition of every shape a model produces, and some hostile ones */
static void test_chunk_rows(void **state) {
    (void)state;
    static const int Ns[] = {0,   1,   31,    32,    33,      50,      77,      197,
                             257, 394, 25216, 19712, 1 << 20, 5000000, 1 << 28, INT_MAX / 2};
    static const int Cs[] = {1, 2, 7, 33, 64, 512, 700, 768, 1234, 3072, 49408};
    for (size_t i = 0; i < sizeof Ns / sizeof *Ns; i++)
        for (size_t j = 0; j < sizeof Cs / sizeof *Cs; j++)
            for (int arrays = 1; arrays <= 2; arrays++) {
                const int N = Ns[i], C = Cs[j];
                const int rpc = tc_cuda_chunk_rows(SCRATCH, N, C, arrays);
                if (rpc <= 0) fail_msg("N=%d C=%d arrays=%d: no partition", N, C, arrays);
                const int chunks = tc_cuda_chunks(N, rpc);
                if (rpc % 32 != 0 || (rpc & (rpc - 1)) != 0)
                    fail_msg("N=%d C=%d: %d rows per chunk is not 32 * 2^k", N, C, rpc);
                if (chunks > TC_CUDA_MAX_GRID_Y)
                    fail_msg("N=%d C=%d arrays=%d: %d chunks over gridDim.y", N, C, arrays, chunks);
                if ((size_t)chunks * (size_t)C * (size_t)arrays * sizeof(float) > SCRATCH)
                    fail_msg("N=%d C=%d arrays=%d: partials overflow the scratch", N, C, arrays);
                if ((int64_t)chunks * rpc < N || (chunks > 0 && (int64_t)(chunks - 1) * rpc >= N))
                    fail_msg("N=%d C=%d: %d chunks of %d rows do not tile the rows", N, C, chunks,
                             rpc);
            }
    /* the CLIP shapes keep the finest partition (32 rows) */
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, 25216, 768, 2), 32);
    assert_int_equal(tc_cuda_chunks(25216, 32), 788);
    /* narrow columns with many rows: the grid bound, not the scratch, decides */
    assert_true(tc_cuda_chunks(5000000, tc_cuda_chunk_rows(SCRATCH, 5000000, 1, 1)) <= 65535);
    /* too wide for one chunk: refused, never a zero-sized partition */
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, 10, (int)(SCRATCH / 4) + 1, 1), -1);
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, 10, 0, 1), -1);
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, -1, 10, 1), -1);
}

static void test_alignment(void **state) {
    (void)state;
    const uintptr_t base = 0x7f0000000000u; /* cudaMalloc: 256-byte aligned */
    assert_int_equal(tc_cuda_alignment(base), 256);
    assert_int_equal(tc_cuda_alignment(base + 2), 2);
    assert_int_equal(tc_cuda_alignment(base + 4), 4);
    assert_int_equal(tc_cuda_alignment(base + 6), 2);
    assert_int_equal(tc_cuda_alignment(base + 16), 16);
    assert_int_equal(tc_cuda_alignment(base + 48), 16);
    assert_int_equal(tc_cuda_alignment(base + 1), 1);
    /* a pruned bias view at element offset k: bf16 (2 bytes) and fp32 */
    for (uintptr_t k = 1; k < 8; k++)
        assert_true(tc_cuda_alignment(base + 2 * k) < TC_CUDA_BIAS_ALIGNMENT);
    for (uintptr_t k = 1; k < 4; k++)
        assert_true(tc_cuda_alignment(base + 4 * k) < TC_CUDA_BIAS_ALIGNMENT);
    assert_true(tc_cuda_alignment(base + 4 * 700) >= TC_CUDA_BIAS_ALIGNMENT);
}

static void test_radix_bits(void **state) {
    (void)state;
    assert_int_equal(tc_cuda_radix_end_bit(1), 1);
    assert_int_equal(tc_cuda_radix_end_bit(2), 1);
    assert_int_equal(tc_cuda_radix_end_bit(3), 2);
    assert_int_equal(tc_cuda_radix_end_bit(49408), 16); /* CLIP's vocabulary */
    assert_int_equal(tc_cuda_radix_end_bit(65536), 16);
    assert_int_equal(tc_cuda_radix_end_bit(65537), 17);
    assert_int_equal(tc_cuda_radix_end_bit(INT_MAX), 31);
    /* every id below V fits the bits */
    for (int V = 1; V < 5000; V += 37) {
        const int b = tc_cuda_radix_end_bit(V);
        assert_true(((int64_t)V - 1) < ((int64_t)1 << b));
    }
}

/* the cuDNN candidate filter on made-up lists in heuristics order: in fp32
 * mode only CUDNN_FMA_MATH candidates (the default math type lets cuDNN use
 * TF32 on sm_80+); nondeterministic, failed or too greedy ones never */
static void test_conv_pick(void **state) {
    (void)state;
    const size_t cap = (size_t)256 << 20;
    /*                        ran det fma workspace */
    const tc_conv_candidate list[] = {
        {1, 1, 0, 0},       /* 0: tensor-op or default math, the heuristics' favourite */
        {1, 0, 1, 0},       /* 1: FMA but atomics (not deterministic) */
        {0, 1, 1, 0},       /* 2: FMA, did not run */
        {1, 1, 1, cap + 1}, /* 3: FMA, workspace over the cap */
        {1, 1, 1, 4096},    /* 4: FMA, deterministic, small: the fp32 choice */
        {1, 1, 0, 4096},    /* 5 */
    };
    const int n = (int)(sizeof list / sizeof list[0]);
    assert_int_equal(tc_conv_pick(list, n, 1, cap), 4);
    assert_int_equal(tc_conv_pick(list, n, 0, cap), 0); /* mixed mode: tensor cores welcome */
    /* mixed mode skips the unusable ones too, then takes FMA as well */
    assert_int_equal(tc_conv_pick(list + 1, n - 1, 0, cap), 3); /* list[4] */
    /* the cap decides for the greedy FMA candidate */
    assert_int_equal(tc_conv_pick(list + 3, 1, 1, cap + 1), 0);
    assert_int_equal(tc_conv_pick(list + 3, 1, 1, cap), -1);
    /* no FMA candidate at all: fp32 mode refuses rather than take TF32 */
    const tc_conv_candidate tensor_only[] = {{1, 1, 0, 0}, {1, 1, 0, 1024}};
    assert_int_equal(tc_conv_pick(tensor_only, 2, 1, cap), -1);
    assert_int_equal(tc_conv_pick(tensor_only, 2, 0, cap), 0);
    assert_int_equal(tc_conv_pick(list, 0, 0, cap), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),      cmocka_unit_test(test_chunk_rows),
        cmocka_unit_test(test_alignment), cmocka_unit_test(test_radix_bits),
        cmocka_unit_test(test_conv_pick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
