/* test_cuda_ops' cases for the CUDA fast paths (cuda_fused_cases.c): the
 * fused linear ops, the bias gradient in the weight-gradient GEMM, the
 * matmul plan cache and graphs, each against the CPU backend */
#ifndef TC_TEST_CUDA_FUSED_CASES_H
#define TC_TEST_CUDA_FUSED_CASES_H

void test_fused_linear(void **state);
void test_plan_cache(void **state);
void test_graph_ops(void **state);
/* the mode's fast-path backend, made on first use; freed here */
void fused_cases_teardown(void);

#endif
