#include "fusion.h"

tc_fusion_avail tc_fusion_avail_of(const tc_backend *be) {
    tc_fusion_avail a;
    a.residual = be->linear_residual_forward != NULL;
    a.gelu = be->linear_gelu_forward != NULL && be->linear_gelu_backward != NULL;
    a.bias_grad = be->caps.gemm_bias_grad_epilogue != 0;
    return a;
}

tc_linear_fusion tc_linear_fusion_for(tc_fusion_avail avail, tc_activation act, int masked,
                                      tc_linear_kind kind) {
    tc_linear_fusion f = {TC_FWD_BIAS, 0, 0, 0, avail.bias_grad != 0};
    const int residual = avail.residual && !masked;
    const int gelu = avail.gelu && !masked && act == TC_GELU;
    switch (kind) {
    case TC_LIN_QKV: break;
    case TC_LIN_OUT:
        f.fwd = residual ? TC_FWD_BIAS_RESIDUAL : TC_FWD_BIAS;
        f.add_kernel = !residual;
        break;
    case TC_LIN_FC:
        f.fwd = gelu ? TC_FWD_GELU_AUX_BIAS : TC_FWD_BIAS;
        f.act_kernel = !gelu;
        break;
    case TC_LIN_PROJ:
        f.fwd = residual ? TC_FWD_BIAS_RESIDUAL : TC_FWD_BIAS;
        f.add_kernel = !residual;
        f.dinp_dgelu = gelu;
        break;
    case TC_LIN_HEAD:
    case TC_LIN_PATCH:
        f.fwd = TC_FWD_PLAIN;
        f.bias_grad_gemm = 0;
        break;
    }
    return f;
}
