/* the backend's operations, listed once. every other place that needs the
 * list (the tc_backend table in backend.h, each backend's prototypes and
 * table filler, the test that every required op is filled) expands it with
 * its own definition of the two macros:
 *
 *   TC_OP(ret, name, params)           every backend implements it
 *   TC_OPTIONAL_OP(ret, name, params)  a backend may leave it NULL; its
 *                                      capabilities say when it is used
 *
 * a backend implements op `name` as `tc_<backend>_<name>` (tc_cpu_add,
 * tc_cuda_add). adding an op: a line here, one function per backend, tests.
 *
 * shape letters: B batch, T tokens, C width, NH heads, HS head size,
 * A = NH*HS attention width, M mlp width, E embedding, N rows, V vocabulary.
 * all tensors are row-major and contiguous unless a stride is given.
 *
 * no include guard: this file is meant to be included several times. */
/* clang-format off */
#ifndef TC_OPTIONAL_OP
#define TC_OPTIONAL_OP(ret, name, params) TC_OP(ret, name, params)
#define TC_BACKEND_OPS_DEFAULTED_OPTIONAL
#endif

/* ---- memory ---- */
TC_OP(tc_status, alloc, (tc_backend *b, size_t bytes, void **ptr)) /* zero-filled */
TC_OP(void, free, (tc_backend *b, void *ptr))
TC_OP(tc_status, upload, (tc_backend *b, void *dst, const void *host_src, size_t bytes))
TC_OP(tc_status, download, (tc_backend *b, void *host_dst, const void *src, size_t bytes))
/* waits for queued work; reports asynchronous errors */
TC_OP(tc_status, synchronize, (tc_backend *b))
/* upload queued behind the work already queued, without waiting: the host
 * buffer must stay unchanged until fence_wait of a fence recorded after this
 * call has returned (page-locked memory gives a DMA with no staging copy).
 * the trainer's inputs go this way (engine/train.h) */
TC_OP(tc_status, upload_async, (tc_backend *b, void *dst, const void *host_src, size_t bytes))
/* fences in TC_FENCES slots: record marks the work queued so far, wait
 * returns when it has run (CPU: everything has run already) */
TC_OP(tc_status, fence_record, (tc_backend *b, int slot))
TC_OP(tc_status, fence_wait, (tc_backend *b, int slot))
/* the memory this process holds at its peak, in bytes: CPU the resident
 * set's high-water mark (VmHWM); CUDA the device memory in use (runtime and
 * libraries included), which is the peak once a step has run, since every
 * buffer is allocated before the first one. 0 when unknown. */
TC_OP(size_t, memory_peak, (tc_backend *b))
TC_OP(void, destroy, (tc_backend *b))

/* ---- elementwise and copies ---- */
TC_OP(void, fill_f32, (tc_backend *b, float *x, float value, size_t n))
TC_OP(void, zero, (tc_backend *b, void *x, size_t bytes))
TC_OP(void, copy, (tc_backend *b, void *dst, const void *src, size_t bytes))
/* dst = src converted to the activation type (weights for compute) */
TC_OP(void, f32_to_act, (tc_backend *b, tc_act *dst, const float *src, size_t n))
/* dst = src converted to fp32 */
TC_OP(void, act_to_f32, (tc_backend *b, float *dst, const tc_act *src, size_t n))
/* out = a + b */
TC_OP(void, add, (tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y, size_t n))
/* x = x * scale[0] (scale is a device scalar) */
TC_OP(void, scale_f32, (tc_backend *b, float *x, const float *scale, size_t n))
/* x = min(max(x, lo), hi) */
TC_OP(void, clamp_f32, (tc_backend *b, float *x, float lo, float hi, size_t n))
/* out[0] = 1 if every element of x is finite else 0 */
TC_OP(void, all_finite, (tc_backend *b, float *out, const float *x, size_t n))

/* ---- linear layers ----
 * w_trans = 0: w is (OC, C), nn.Linear layout, out = inp @ w^T
 * w_trans = 1: w is (C, OC), projection layout (visual.proj), out = inp @ w */
/* out (N,OC) = inp (N,C) . w + bias (OC) [bias may be NULL] */
TC_OP(void, linear_forward,
      (tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
       int C, int OC, int w_trans))
/* dinp (N,C) = dout . w          (written; skipped when NULL)
 * dw        += dout^T inp        (skipped when NULL)
 * dbias (OC) += sum_rows dout    (skipped when NULL) */
TC_OP(void, linear_backward,
      (tc_backend *b, tc_act *dinp, float *dw, float *dbias, const tc_act *dout,
       const tc_act *inp, const tc_act *w, int N, int C, int OC, int w_trans))
/* fp32 gemm on row-major matrices: C (M,N) = alpha * op(A) op(B) + beta * C,
 * op(A) is (M,K), op(B) is (K,N); trans flags transpose the stored matrix. */
TC_OP(void, gemm_f32,
      (tc_backend *b, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
       const float *B, float beta, float *C))

/* ---- layernorm (eps 1e-5), over the last dim C of N rows ---- */
TC_OP(void, layernorm_forward,
      (tc_backend *b, tc_act *out, float *mean, float *rstd, const tc_act *inp, const tc_act *w,
       const tc_act *bias, int N, int C))
/* dinp += ..., dw += ..., dbias += ... */
TC_OP(void, layernorm_backward,
      (tc_backend *b, tc_act *dinp, float *dw, float *dbias, const tc_act *dout,
       const tc_act *inp, const tc_act *w, const float *mean, const float *rstd, int N, int C))

/* ---- activation (GELU exact erf, or QuickGELU x*sigmoid(1.702x)) ---- */
TC_OP(void, gelu_forward,
      (tc_backend *b, tc_act *out, const tc_act *inp, size_t n, tc_activation kind))
/* dinp = dout * act'(inp) */
TC_OP(void, gelu_backward,
      (tc_backend *b, tc_act *dinp, const tc_act *inp, const tc_act *dout, size_t n,
       tc_activation kind))

/* ---- attention ----
 * qkv (B,T,3A) is the packed in_proj output: [q heads | k heads | v heads],
 * head h of q at columns h*HS..h*HS+HS. out (B,T,A) heads concatenated.
 * scale HS^-0.5; causal masks j > i. lse (B,NH,T) = log-sum-exp of the
 * scaled scores per query row, saved for the backward. */
TC_OP(void, attention_forward,
      (tc_backend *b, tc_act *out, float *lse, const tc_act *qkv, int B, int T, int NH, int HS,
       int causal))
/* dqkv (B,T,3A) written */
TC_OP(void, attention_backward,
      (tc_backend *b, tc_act *dqkv, const tc_act *dout, const tc_act *qkv, const tc_act *out,
       const float *lse, int B, int T, int NH, int HS, int causal))

/* ---- embeddings ---- */
/* image (B,3,H,W) fp32 planar -> patches (B*g*g, 3*P*P), row (b, gy, gx),
 * column (c, ky, kx) to match conv1.weight (C,3,P,P) flattened */
TC_OP(void, patchify, (tc_backend *b, tc_act *patches, const float *image, int B, int H, int W, int P))
/* the patch embedding as one convolution (conv1: kernel = stride = P, no
 * bias), the same result as patchify + linear_forward (w_trans 0) and
 * linear_backward's dw; used when caps.patch_embed_conv is set (CUDA: when
 * cuDNN can be loaded and the options ask for it). H, W multiples of P;
 * gh = H/P, gw = W/P.
 *   image     (B,3,H,W) fp32 planar
 *   image_act B*3*H*W tc_act, the size of patchify's patches: written by the
 *             forward (the image in the backend's own layout and type), read
 *             by the weight gradient of the same shape
 *   w         (C,3,P,P) conv1.weight = (C, 3*P*P) of linear_forward
 *   out       (B*gh*gw, C), row (b, gy, gx) = patches . w^T
 * out, image_act and dout are whole allocations from alloc(). */
TC_OPTIONAL_OP(void, patch_embed_forward,
               (tc_backend *b, tc_act *out, tc_act *image_act, const float *image,
                const tc_act *w, int B, int H, int W, int P, int C))
/* dw (C,3,P,P) += dout^T patches; dout (B*gh*gw, C). no image gradient.
 * CUDA mixed mode: the increment is rounded to bf16 once before the +=
 * (cuDNN gives the filter gradient in the input type). */
TC_OPTIONAL_OP(void, patch_embed_backward_weight,
               (tc_backend *b, float *dw, const tc_act *dout, const tc_act *image_act, int B,
                int H, int W, int P, int C))
/* x (B,T,C): x[b,0] = cls + pos[0]; x[b,t] = patch_emb[b,t-1] + pos[t] */
TC_OP(void, vision_embed_forward,
      (tc_backend *b, tc_act *x, const tc_act *patch_emb, const tc_act *cls, const tc_act *pos,
       int B, int T, int C))
/* dpatch_emb written; dcls, dpos += */
TC_OP(void, vision_embed_backward,
      (tc_backend *b, tc_act *dpatch_emb, float *dcls, float *dpos, const tc_act *dx, int B,
       int T, int C))
/* x (B,T,C) = wte[ids[b,t]] + wpe[t]; ids in [0,V) (checked by the host) */
TC_OP(void, token_embed_forward,
      (tc_backend *b, tc_act *x, const int32_t *ids, const tc_act *wte, const tc_act *wpe, int B,
       int T, int C))
/* dwte += scatter (deterministic, no atomics), dwpe += */
TC_OP(void, token_embed_backward,
      (tc_backend *b, float *dwte, float *dwpe, const tc_act *dx, const int32_t *ids, int B,
       int T, int C, int V))

/* ---- pooling ---- */
/* idx[b] = first position of the largest id in ids[b,:] (EOT for CLIP) */
TC_OP(void, argmax_rows, (tc_backend *b, int32_t *idx, const int32_t *ids, int B, int T))
/* out (B,C) = x[b, idx[b]]; idx NULL means position 0 (class token) */
TC_OP(void, pool_gather_forward,
      (tc_backend *b, tc_act *out, const tc_act *x, const int32_t *idx, int B, int T, int C))
/* dx += scatter of dout into the pooled rows */
TC_OP(void, pool_gather_backward,
      (tc_backend *b, tc_act *dx, const tc_act *dout, const int32_t *idx, int B, int T, int C))
/* out (B,C) = mean of x[b, 1..T-1] (vision pool_type 'avg') */
TC_OP(void, pool_mean_forward, (tc_backend *b, tc_act *out, const tc_act *x, int B, int T, int C))
/* dx += */
TC_OP(void, pool_mean_backward,
      (tc_backend *b, tc_act *dx, const tc_act *dout, int B, int T, int C))

/* ---- features and losses (fp32) ---- */
/* out (N,C) = inp / max(||inp||, 1e-12); norm (N) saved */
TC_OP(void, l2norm_forward,
      (tc_backend *b, float *out, float *norm, const tc_act *inp, int N, int C))
/* dinp written */
TC_OP(void, l2norm_backward,
      (tc_backend *b, tc_act *dinp, const float *dout, const float *out, const float *norm, int N,
       int C))
/* one direction of the contrastive / affinity loss on similarity rows.
 * sim (n,Ncols): cosine similarities of n local rows against all columns.
 * logits = exp(log_scale[0]) * sim; the hard target of row i is column
 * label_offset + i; the soft target (when teacher_sim is not NULL and
 * w_soft != 0) is softmax(exp(teacher_log_scale[0]) * teacher_sim[i]).
 *   loss[0]  += (1/n) sum_i [ w_hard * CE(logits_i, label_i)
 *                           + w_soft * softCE(logits_i, target_i) ]
 *   dsim      = d loss / d sim (written)
 *   dlog_scale[0] += d loss / d log_scale (skipped when NULL) */
TC_OP(void, softmax_xent_rows,
      (tc_backend *b, float *loss, float *dsim, float *dlog_scale, const float *sim,
       const float *teacher_sim, const float *log_scale, const float *teacher_log_scale, int n,
       int Ncols, int label_offset, float w_hard, float w_soft))

/* ---- optimizer ---- */
/* out[0] = sum of squares of g (n elements); deterministic tree reduction */
TC_OP(void, sum_squares, (tc_backend *b, float *out, const float *g, size_t n))
/* scale[0] = min(1, max_norm / (sqrt(sum_sq[0]) + 1e-6)), torch clip_grad_norm_ */
TC_OP(void, clip_coefficient, (tc_backend *b, float *scale, const float *sum_sq, float max_norm))
/* AdamW (torch semantics, decoupled decay) on every segment; the gradient is
 * first multiplied by grad_scale[0] (NULL = 1). when compute is not NULL the
 * updated weights are also written to it converted to tc_act. */
TC_OP(void, adamw_update,
      (tc_backend *b, float *params, const float *grads, float *m, float *v, tc_act *compute,
       const tc_param_segment *segs, int nseg, tc_adamw_hparams hp, const float *grad_scale))
/* the optimizer's bookkeeping of a step, on the device; state is
 * {finite, updates, skipped, skipped in a row}: when state[0] != 0
 * updates += 1 and skipped in a row = 0, else skipped += 1 and skipped in a
 * row += 1 (counts held exactly as floats up to 2^24) */
TC_OP(void, step_gate, (tc_backend *b, float *state))

/* ---- structured masks (automatic inheritance, docs/method.md) ---- */
/* out (N,C) = x * z[c / group]; out may alias x. group 1 masks single
 * columns (hidden dims, MLP units), group HS whole heads. */
TC_OP(void, mask_cols_forward,
      (tc_backend *b, tc_act *out, const tc_act *x, const float *z, int N, int C, int group))
/* dx = dout * z[c / group] (written; dx may alias dout);
 * dz[c / group] += sum over rows of dout * x (skipped when dz is NULL) */
TC_OP(void, mask_cols_backward,
      (tc_backend *b, tc_act *dx, float *dz, const tc_act *dout, const tc_act *x, const float *z,
       int N, int C, int group))
/* "compressed" LayerNorm: statistics over the columns where mask != 0 only,
 * output 0 in the other columns (the mask values themselves do not scale
 * anything) */
TC_OP(void, layernorm_masked_forward,
      (tc_backend *b, tc_act *out, float *mean, float *rstd, const tc_act *inp, const tc_act *w,
       const tc_act *bias, const float *mask, int N, int C))
/* dinp += ..., dw += ..., dbias += ... on the kept columns only */
TC_OP(void, layernorm_masked_backward,
      (tc_backend *b, tc_act *dinp, float *dw, float *dbias, const tc_act *dout,
       const tc_act *inp, const tc_act *w, const float *mean, const float *rstd, const float *mask,
       int N, int C))

/* ---- ResNet image towers (open_clip ModifiedResNet); images NCHW ----
 * (N,C,HW) is N samples of C planes of HW = H*W pixels, row-major. */
/* 2-D convolution without bias, square kernel K, zero padding pad, stride S:
 *   inp (N,C,H,W), w (OC,C,K,K), out (N,OC,Ho,Wo), Ho = (H + 2 pad - K) / S + 1.
 * works when caps.conv2d (CUDA: cuDNN loaded; without it the call records an
 * error and the model refuses ResNet towers at creation) */
TC_OP(void, conv2d_forward,
      (tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w, int N, int C, int H,
       int W, int OC, int K, int stride, int pad))
/* dinp (N,C,H,W) written (skipped when NULL); dw (OC,C,K,K) += (skipped when NULL).
 * CUDA mixed mode: dw's increment is rounded to bf16 once before the += */
TC_OP(void, conv2d_backward,
      (tc_backend *b, tc_act *dinp, float *dw, const tc_act *dout, const tc_act *inp,
       const tc_act *w, int N, int C, int H, int W, int OC, int K, int stride, int pad))
/* BatchNorm2d (eps 1e-5) over the N*HW values of each of C channels, then
 * ReLU when relu != 0. inp, out (N,C,HW); w, bias (C); mean, rstd (C) saved
 * for the backward (eval mode: those of the running statistics). running
 * (2C+1) is the fp32 master of running_mean (C), running_var (C),
 * num_batches_tracked (1), contiguous as in the parameter layout:
 *   TC_BN_TRAIN   batch statistics; running_* = 0.9 running_* + 0.1 batch
 *                 (variance unbiased: n/(n-1)), num_batches_tracked += 1
 *   TC_BN_REPLAY  batch statistics, running statistics untouched (a
 *                 forward run again for its activations)
 *   TC_BN_EVAL    the running statistics */
TC_OP(void, batchnorm_forward,
      (tc_backend *b, tc_act *out, float *mean, float *rstd, float *running, const tc_act *inp,
       const tc_act *w, const tc_act *bias, int N, int C, int HW, tc_bn_mode mode, int relu))
/* the backward of a batch-statistics forward: dinp written; dw, dbias +=.
 * relu: dout counts only where out > 0 (out is the forward's output) */
TC_OP(void, batchnorm_backward,
      (tc_backend *b, tc_act *dinp, float *dw, float *dbias, const tc_act *dout,
       const tc_act *inp, const tc_act *out, const tc_act *w, const float *mean,
       const float *rstd, int N, int C, int HW, int relu))
/* out = max(x + y, 0): a bottleneck's residual sum */
TC_OP(void, add_relu_forward,
      (tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y, size_t n))
/* dx = dout where out > 0, else 0 (written; dx may alias dout) */
TC_OP(void, relu_backward,
      (tc_backend *b, tc_act *dx, const tc_act *out, const tc_act *dout, size_t n))
/* AvgPool2d(k) (kernel = stride = k) on NC planes of H x W, H and W
 * multiples of k: out (NC, H/k, W/k) */
TC_OP(void, avgpool_forward,
      (tc_backend *b, tc_act *out, const tc_act *inp, int NC, int H, int W, int k))
/* dinp (NC,H,W) written */
TC_OP(void, avgpool_backward,
      (tc_backend *b, tc_act *dinp, const tc_act *dout, int NC, int H, int W, int k))
/* the attention pool's tokens: feat (B,D,HW) -> x (B,T,D), T = HW + 1:
 * x[b,0] = mean over p of feat[b,:,p] + pos[0], x[b,1+p] = feat[b,:,p] + pos[1+p] */
TC_OP(void, attnpool_tokens_forward,
      (tc_backend *b, tc_act *x, const tc_act *feat, const tc_act *pos, int B, int D, int HW))
/* dfeat (B,D,HW) written; dpos (T,D) += */
TC_OP(void, attnpool_tokens_backward,
      (tc_backend *b, tc_act *dfeat, float *dpos, const tc_act *dx, int B, int D, int HW))
/* one query per sample over T keys, no mask (the attention pool reads the
 * mean token's query): q (B,A), k, v (B,T,A), heads of HS at h*HS; scale
 * HS^-0.5; out (B,A); lse (B,NH) saved for the backward */
TC_OP(void, attention_query_forward,
      (tc_backend *b, tc_act *out, float *lse, const tc_act *q, const tc_act *k, const tc_act *v,
       int B, int T, int NH, int HS))
/* dq (B,A), dk, dv (B,T,A) written */
TC_OP(void, attention_query_backward,
      (tc_backend *b, tc_act *dq, tc_act *dk, tc_act *dv, const tc_act *dout, const tc_act *q,
       const tc_act *k, const tc_act *v, const tc_act *out, const float *lse, int B, int T, int NH,
       int HS))

#ifdef TC_BACKEND_OPS_DEFAULTED_OPTIONAL
#undef TC_OPTIONAL_OP
#undef TC_BACKEND_OPS_DEFAULTED_OPTIONAL
#endif
/* clang-format on */
