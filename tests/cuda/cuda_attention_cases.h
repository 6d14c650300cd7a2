/* test_cuda_ops' cases for the fused attention (cuda_attention_cases.c) */
#ifndef TC_TEST_CUDA_ATTENTION_CASES_H
#define TC_TEST_CUDA_ATTENTION_CASES_H

void test_attention(void **state);
void test_attention_mma(void **state);
void test_attention_wgmma(void **state);
void test_attention_tma(void **state);
/* destroys the extra backends the tensor-core cases made (end of a mode) */
void attention_cases_teardown(void);

#endif
