/* which fused form each linear layer of a residual block takes, decided
 * from what the backend offers, the model's activation and whether masks
 * are installed; in plain C so that a test checks the choice per layer
 * without a device.
 *
 * a block's linear layers (shape letters of engine/backend_ops.h):
 *   QKV   ln1 (N,C) -> qkv (N,3A)          bias
 *   OUT   heads (N,A) -> x + out (N,C)     bias, residual add
 *   FC    ln2 (N,C) -> fch (N,M) -> act    bias, activation
 *   PROJ  act (N,M) -> x + proj (N,C)      bias, residual add; its input
 *                                          gradient feeds the activation's
 * and the tower's head projection and patch embedding (no bias).
 *
 * the rules (docs/cuda.md, "Fast paths"):
 *   - the residual add goes into the OUT and PROJ products (beta = 1 on the
 *     residual) when the backend has linear_residual_forward;
 *   - GELU goes into FC's product with the pre-activation kept, and GELU's
 *     gradient into PROJ's input-gradient product, when the backend has the
 *     GELU ops and the model uses GELU; a QuickGELU model keeps its
 *     activation kernel (the GEMM library has no QuickGELU);
 *   - with masks installed (the mask phase of automatic inheritance) a mask
 *     sits between each product and what follows it: nothing is fused;
 *   - every bias gradient goes into the weight-gradient product when the
 *     backend says so (caps.gemm_bias_grad_epilogue); the backend decides
 *     that inside linear_backward, the model calls the same op. */
#ifndef TC_FUSION_H
#define TC_FUSION_H

#include "backend.h"

/* what the backend offers */
typedef struct {
    int residual;  /* linear_residual_forward */
    int gelu;      /* linear_gelu_forward and linear_gelu_backward */
    int bias_grad; /* caps.gemm_bias_grad_epilogue */
} tc_fusion_avail;

tc_fusion_avail tc_fusion_avail_of(const tc_backend *be);

typedef enum {
    TC_LIN_QKV,
    TC_LIN_OUT,
    TC_LIN_FC,
    TC_LIN_PROJ,
    TC_LIN_HEAD,
    TC_LIN_PATCH
} tc_linear_kind;

/* the forward product's epilogue */
typedef enum {
    TC_FWD_PLAIN = 0,     /* no bias */
    TC_FWD_BIAS,          /* + bias */
    TC_FWD_BIAS_RESIDUAL, /* + bias + the residual stream (beta = 1) */
    TC_FWD_GELU_AUX_BIAS, /* GELU(... + bias), the pre-activation kept */
} tc_fwd_epilogue;

typedef struct {
    tc_fwd_epilogue fwd;
    int act_kernel;     /* a separate activation kernel follows the product */
    int add_kernel;     /* a separate residual add follows the product */
    int dinp_dgelu;     /* the input-gradient product applies GELU' of the layer before */
    int bias_grad_gemm; /* the bias gradient comes from the weight-gradient product */
} tc_linear_fusion;

tc_linear_fusion tc_linear_fusion_for(tc_fusion_avail avail, tc_activation act, int masked,
                                      tc_linear_kind kind);

#endif
