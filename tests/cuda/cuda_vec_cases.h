/* test_cuda_ops' cases for the 16-byte vector kernels (layernorm, the fused
 * residual + layernorm, add and GELU) and the token embedding's spread
 * scatter (cuda_vec_cases.c) */
#ifndef TC_TEST_CUDA_VEC_CASES_H
#define TC_TEST_CUDA_VEC_CASES_H

void test_layernorm(void **state);
void test_residual_layernorm(void **state);
void test_elementwise_vec(void **state);
void test_token_embed_pieces(void **state);

#endif
