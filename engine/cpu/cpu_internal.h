/* internals of the CPU reference backend: the backend handle and the op
 * functions that cpu_backend.c puts into the tc_backend table.
 *
 * every op works on fp32 (tc_act is float here) and is deterministic
 * independently of the thread count wherever it does not call BLAS: each
 * output element is produced by one thread, and every reduction runs in a
 * fixed order over a fixed partition. OpenMP parallelises over rows, heads or
 * column blocks; cblas_sgemm does the matrix products. */
#ifndef TC_CPU_INTERNAL_H
#define TC_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

typedef struct {
    tc_backend base; /* first member: a tc_backend * is a tc_cpu_backend * */
    int threads;     /* OpenMP threads used by every parallel region */
} tc_cpu_backend;

static inline int tc_cpu_threads(const tc_backend *b) {
    return ((const tc_cpu_backend *)b)->threads;
}

/* tc_act is fp32 on this backend */
#define TC_F(p) ((float *)(p))
#define TC_CF(p) ((const float *)(p))

/* cpu_blas.c: kernel selection (once per process) and the BLAS thread count */
void tc_cpu_blas_init(int threads);

/* cpu_elementwise.c */
void tc_cpu_fill_f32(tc_backend *b, float *x, float value, size_t n);
void tc_cpu_zero(tc_backend *b, void *x, size_t bytes);
void tc_cpu_copy(tc_backend *b, void *dst, const void *src, size_t bytes);
void tc_cpu_f32_to_act(tc_backend *b, tc_act *dst, const float *src, size_t n);
void tc_cpu_act_to_f32(tc_backend *b, float *dst, const tc_act *src, size_t n);
void tc_cpu_add(tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y, size_t n);
void tc_cpu_scale_f32(tc_backend *b, float *x, const float *scale, size_t n);
void tc_cpu_clamp_f32(tc_backend *b, float *x, float lo, float hi, size_t n);
void tc_cpu_all_finite(tc_backend *b, float *out, const float *x, size_t n);

/* cpu_gelu.c */
void tc_cpu_gelu_forward(tc_backend *b, tc_act *out, const tc_act *inp, size_t n,
                         tc_activation kind);
void tc_cpu_gelu_backward(tc_backend *b, tc_act *dinp, const tc_act *inp, const tc_act *dout,
                          size_t n, tc_activation kind);

/* cpu_linear.c */
void tc_cpu_linear_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w,
                           const tc_act *bias, int N, int C, int OC, int w_trans);
void tc_cpu_linear_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                            const tc_act *dout, const tc_act *inp, const tc_act *w, int N, int C,
                            int OC, int w_trans);
void tc_cpu_gemm_f32(tc_backend *b, int trans_a, int trans_b, int M, int N, int K, float alpha,
                     const float *A, const float *B, float beta, float *C);

/* cpu_layernorm.c */
void tc_cpu_layernorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                              const tc_act *inp, const tc_act *w, const tc_act *bias, int N, int C);
void tc_cpu_layernorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                               const tc_act *dout, const tc_act *inp, const tc_act *w,
                               const float *mean, const float *rstd, int N, int C);

/* cpu_attention.c */
void tc_cpu_attention_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *qkv, int B,
                              int T, int NH, int HS, int causal);
void tc_cpu_attention_backward(tc_backend *b, tc_act *dqkv, const tc_act *dout, const tc_act *qkv,
                               const tc_act *out, const float *lse, int B, int T, int NH, int HS,
                               int causal);

/* cpu_embed.c */
void tc_cpu_patchify(tc_backend *b, tc_act *patches, const float *image, int B, int H, int W,
                     int P);
void tc_cpu_vision_embed_forward(tc_backend *b, tc_act *x, const tc_act *patch_emb,
                                 const tc_act *cls, const tc_act *pos, int B, int T, int C);
void tc_cpu_vision_embed_backward(tc_backend *b, tc_act *dpatch_emb, float *dcls, float *dpos,
                                  const tc_act *dx, int B, int T, int C);
void tc_cpu_token_embed_forward(tc_backend *b, tc_act *x, const int32_t *ids, const tc_act *wte,
                                const tc_act *wpe, int B, int T, int C);
void tc_cpu_token_embed_backward(tc_backend *b, float *dwte, float *dwpe, const tc_act *dx,
                                 const int32_t *ids, int B, int T, int C, int V);

/* cpu_pool.c */
void tc_cpu_argmax_rows(tc_backend *b, int32_t *idx, const int32_t *ids, int B, int T);
void tc_cpu_pool_gather_forward(tc_backend *b, tc_act *out, const tc_act *x, const int32_t *idx,
                                int B, int T, int C);
void tc_cpu_pool_gather_backward(tc_backend *b, tc_act *dx, const tc_act *dout, const int32_t *idx,
                                 int B, int T, int C);
void tc_cpu_pool_mean_forward(tc_backend *b, tc_act *out, const tc_act *x, int B, int T, int C);
void tc_cpu_pool_mean_backward(tc_backend *b, tc_act *dx, const tc_act *dout, int B, int T, int C);

/* cpu_loss.c */
void tc_cpu_l2norm_forward(tc_backend *b, float *out, float *norm, const tc_act *inp, int N, int C);
void tc_cpu_l2norm_backward(tc_backend *b, tc_act *dinp, const float *dout, const float *out,
                            const float *norm, int N, int C);
void tc_cpu_softmax_xent_rows(tc_backend *b, float *loss, float *dsim, float *dlog_scale,
                              const float *sim, const float *teacher_sim, const float *log_scale,
                              const float *teacher_log_scale, int n, int Ncols, int label_offset,
                              float w_hard, float w_soft);

/* cpu_optim.c */
void tc_cpu_sum_squares(tc_backend *b, float *out, const float *g, const tc_param_segment *segs,
                        int nseg);
void tc_cpu_clip_coefficient(tc_backend *b, float *scale, const float *sum_sq, float max_norm);
void tc_cpu_adamw_update(tc_backend *b, float *params, const float *grads, float *m, float *v,
                         tc_act *compute, const tc_param_segment *segs, int nseg,
                         tc_adamw_hparams hp, const float *grad_scale);
void tc_cpu_step_gate(tc_backend *b, float *state);

/* cpu_mask.c */
void tc_cpu_mask_cols_forward(tc_backend *b, tc_act *out, const tc_act *x, const float *z, int N,
                              int C, int group);
void tc_cpu_mask_cols_backward(tc_backend *b, tc_act *dx, float *dz, const tc_act *dout,
                               const tc_act *x, const float *z, int N, int C, int group);
void tc_cpu_layernorm_masked_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                                     const tc_act *inp, const tc_act *w, const tc_act *bias,
                                     const float *mask, int N, int C);
void tc_cpu_layernorm_masked_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                      const tc_act *dout, const tc_act *inp, const tc_act *w,
                                      const float *mean, const float *rstd, const float *mask,
                                      int N, int C);

/* cpu_mask.c (structured masks for automatic inheritance) */
void tc_cpu_mask_cols_forward(tc_backend *b, tc_act *out, const tc_act *x, const float *z, int N,
                              int C, int group);
void tc_cpu_mask_cols_backward(tc_backend *b, tc_act *dx, float *dz, const tc_act *dout,
                               const tc_act *x, const float *z, int N, int C, int group);
void tc_cpu_layernorm_masked_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                                     const tc_act *inp, const tc_act *w, const tc_act *bias,
                                     const float *mask, int N, int C);
void tc_cpu_layernorm_masked_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                      const tc_act *dout, const tc_act *inp, const tc_act *w,
                                      const float *mean, const float *rstd, const float *mask,
                                      int N, int C);

#endif
