/* the harness of the CUDA op tests (test_cuda_ops.c, with the ResNet cases
 * of cuda_resnet_cases.c): a CPU reference backend and a CUDA backend in one mode (fp32 or mixed
 * bf16), random inputs representable in the activation type, data moved
 * through the backend interface, poisoned outputs (NaN bit patterns, so an
 * element a kernel does not write fails), comparisons with the mode's
 * tolerance, and allocations tracked and freed after every case.
 *
 * tolerances, relative to the largest magnitude of the reference tensor
 * (tc_rel_err; test_cuda_ops.c explains them):
 *   fp32 mode 1e-5; mixed mode 1e-2 for a tc_act output, 1e-4 for an fp32
 *   output computed from bf16 inputs. */
#ifndef TC_TEST_CUDA_HARNESS_H
#define TC_TEST_CUDA_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "testutil.h"

#ifdef TC_HAVE_CUDA
#include "tc_cuda.h"

#define TOL_FP32 1e-5
#define TOL_BF16 1e-2
#define TOL_F32_IN_MIXED 1e-4

extern tc_backend *g_cpu, *g_gpu;
extern int g_fp32;  /* mode of g_gpu */
extern int g_quick; /* TC_CUDA_TEST_QUICK: one small shape per op (compute-sanitizer) */
extern uint64_t g_rng;

/* tolerance for a tc_act output / an fp32 output of the current mode */
double tol_act(void);
double tol_f32(void);

/* tracked allocations, freed by free_all (and by the per-test teardown) */
void free_all(void);
int teardown_test(void **state);
void *hmalloc(size_t bytes);
void *balloc(tc_backend *b, size_t bytes);
/* synchronize, failing the test with the backend's message */
void bsync(tc_backend *b, const char *what);

float bf16_round(float x);
/* uniform [-scale, scale); rand_act rounds to bf16 in the mixed mode */
float *rand_f32(size_t n, float scale);
float *rand_act(size_t n, float scale);

/* host <-> backend, through the interface */
float *put_f32(tc_backend *b, const float *h, size_t n);
tc_act *put_act(tc_backend *b, const float *h, size_t n);
void get_f32(tc_backend *b, float *h, const float *p, size_t n);
void get_act(tc_backend *b, float *h, const tc_act *p, size_t n);

/* 0xFF bytes (NaN as fp32 and bf16); poisoned GPU outputs */
void poison(tc_backend *b, void *p, size_t bytes);
tc_act *gpu_out_act(size_t n);
float *gpu_out_f32(size_t n);

void expect_close(const char *what, const float *gpu, const float *ref, size_t n, double tol);
void expect_same_bits(const char *what, const float *a, const float *b, size_t n);

/* run(&case) for every case of full, or of quick in the quick (sanitizer)
 * mode, the test's buffers freed after each */
#define RUN_CASES(run, full, quick)                                                                \
    do {                                                                                           \
        size_t n_ = g_quick ? sizeof(quick) / sizeof(quick)[0] : sizeof(full) / sizeof(full)[0];   \
        for (size_t i_ = 0; i_ < n_; i_++) {                                                       \
            run(g_quick ? &(quick)[i_] : &(full)[i_]);                                             \
            free_all();                                                                            \
        }                                                                                          \
    } while (0)

/* the two backends of a group of tests (every op filled, the mode's act size) */
int setup_backends(int fp32);
int teardown_backends(void **state);
void harness_quick_from_env(void);

#endif
#endif
