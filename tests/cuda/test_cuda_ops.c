/* every op of the CUDA backend against the CPU reference backend (the cases
 * in tests/cuda/cuda_*_cases.c, one file per family of ops, compiled in), on fresh
 * random inputs at CLIP shapes, in the fp32 mode and in the mixed (bf16)
 * mode. '=' outputs are poisoned with NaN bit patterns on the GPU before each
 * run, so an element the kernel does not write fails the comparison; '+='
 * outputs start from the same random values on both backends, so an op that
 * overwrites instead of accumulating fails too. ops with reductions are run
 * twice and must give the same bits (no atomics).
 *
 * tolerances are relative to the largest magnitude of the reference tensor
 * (tc_rel_err):
 *   fp32 mode: both backends compute in fp32 (or double), and differ only in
 *     the order of summation. a K-term fp32 dot product carries a rounding
 *     error of about sqrt(K) 2^-24 of its terms, ~3e-6 for K = 3072, so the
 *     1e-5 bound holds with margin; TOL_FP32 = 1e-5.
 *   mixed mode: inputs are rounded to bf16 on the host before either backend
 *     sees them, so both multiply the same numbers, and products of bf16
 *     values are exact in fp32. what remains is the rounding of a bf16 result:
 *     bf16 keeps 8 significant bits, so rounding to nearest errs by at most
 *     2^-9 (~2e-3) of the value and hence of the tensor maximum. an op that
 *     rounds twice ('+=' into a bf16 buffer rounds the sum, which can be
 *     larger than either term) can reach ~4e-3; TOL_BF16 = 1e-2 leaves a 2.5x
 *     margin over that. fp32 outputs computed from bf16 inputs (dw, dbias,
 *     lse, features, losses) see only summation order and fp32-vs-double
 *     statistics: TOL_F32_IN_MIXED = 1e-4.
 *
 * TC_CUDA_TEST_QUICK=1 runs one small shape per op (for compute-sanitizer).
 * without a CUDA build or a device the test prints the reason and exits 77. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_attention_cases.h"
#include "cuda_cases.h"
#include "cuda_fused_cases.h"
#include "cuda_harness.h"
#include "cuda_resnet_cases.h"
#include "cuda_vec_cases.h"
#include "testutil.h"

#include "backend.h"
#include "status.h"
#ifdef TC_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "tc_cuda.h"
#endif

#ifdef TC_HAVE_CUDA

/* the cases live in tests/cuda/cuda_*_cases.c, one file per family of ops */

static int setup_fp32(void **state) {
    (void)state;
    return setup_backends(1);
}

static int setup_mixed(void **state) {
    (void)state;
    return setup_backends(0);
}

static int teardown_mode(void **state) {
    fused_cases_teardown();
    attention_cases_teardown();
    return teardown_backends(state);
}

#define TC_T(fn) cmocka_unit_test_teardown(fn, teardown_test)

int main(int argc, char **argv) {
    char why[256] = "";
    if (tc_cuda_device_count(why, sizeof why) <= 0) tc_skip_test("no CUDA device: %s", why);
    harness_quick_from_env();
    char name[256];
    tc_cuda_device_name(0, name, sizeof name);
    printf("device 0: %s%s\n", name, g_quick ? " (quick mode)" : "");
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return run_bench() | run_patch_embed_bench();
    const struct CMUnitTest tests[] = {
        TC_T(test_linear),
        TC_T(test_gemm_f32),
        TC_T(test_layernorm), /* cuda_vec_cases.c */
        TC_T(test_mask_cols),
        TC_T(test_layernorm_masked),
        TC_T(test_gelu_add),
        TC_T(test_attention),
        TC_T(test_attention_mma),
        TC_T(test_attention_wgmma),
        TC_T(test_attention_tma),
        TC_T(test_vision_embed),
        TC_T(test_patch_embed),
        TC_T(test_patch_embed_choice),
        TC_T(test_token_embed),
        TC_T(test_pooling),
        TC_T(test_l2norm),
        TC_T(test_softmax_xent),
        TC_T(test_reductions_elementwise),
        TC_T(test_adamw),
        TC_T(test_step_gate_adamw),
        TC_T(test_pinned_allocator),
        TC_T(test_upload_async_fences),
        TC_T(test_error_reporting),
        /* the ResNet ops (cuda_resnet_cases.c) */
        TC_T(test_conv2d),
        TC_T(test_batchnorm),
        TC_T(test_relu_avgpool),
        TC_T(test_attnpool),
        TC_T(test_resnet_model),
        /* the fast paths (cuda_fused_cases.c) */
        TC_T(test_fused_linear),
        TC_T(test_plan_cache),
        TC_T(test_graph_ops),
        /* the vector kernels and the spread token scatter (cuda_vec_cases.c) */
        TC_T(test_residual_layernorm),
        TC_T(test_elementwise_vec),
        TC_T(test_token_embed_pieces),
    };
    int failed =
        cmocka_run_group_tests_name("cuda ops, fp32 mode", tests, setup_fp32, teardown_mode);
    failed +=
        cmocka_run_group_tests_name("cuda ops, mixed bf16 mode", tests, setup_mixed, teardown_mode);
    return failed ? 1 : 0;
}

#else /* no CUDA backend in this build */

int main(void) {
    tc_skip_test(
        "no CUDA device: the CUDA backend is not built (nvcc was not found or TC_ENABLE_CUDA=OFF)");
}

#endif
