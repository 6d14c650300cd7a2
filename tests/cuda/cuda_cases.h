/* the cases of test_cuda_ops, one file per family of ops (tests/cuda/cuda_*_cases.c,
 * named by the cuda/ file they cover); the attention, ResNet, fast-path and
 * vector-kernel cases have headers of their own */
#ifndef TC_TEST_CUDA_CASES_H
#define TC_TEST_CUDA_CASES_H

/* cuda/gemm.cu, cuda/linear.cu (cuda_linear_cases.c) */
void test_linear(void **state);
void test_gemm_f32(void **state);

/* cuda/mask.cu (cuda_mask_cases.c) */
void test_mask_cols(void **state);
void test_layernorm_masked(void **state);

/* cuda/elementwise.cu (cuda_elementwise_cases.c) */
void test_gelu_add(void **state);
void test_reductions_elementwise(void **state);

/* cuda/embed.cu, cuda/conv_cudnn.cu (cuda_embed_cases.c) */
void test_vision_embed(void **state);
void test_patch_embed(void **state);
void test_patch_embed_choice(void **state);
void test_token_embed(void **state);
void test_pooling(void **state);

/* cuda/loss.cu (cuda_loss_cases.c) */
void test_l2norm(void **state);
void test_softmax_xent(void **state);

/* cuda/optimizer.cu (cuda_optimizer_cases.c) */
void test_step_gate_adamw(void **state);
void test_adamw(void **state);

/* cuda/backend.cu, cuda/pinned.c (cuda_memory_cases.c) */
void test_pinned_allocator(void **state);
void test_upload_async_fences(void **state);
void test_error_reporting(void **state);

/* cuda/attention_*.cu, cuda/gemm.cu, cuda/conv_cudnn.cu (cuda_bench_cases.c) */
int run_bench(void);
int run_patch_embed_bench(void);

#endif
