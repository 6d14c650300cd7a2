#include "flops.h"

/* multiply-adds of the residual blocks of one tower over T tokens */
static double blocks_macs(const tc_tower_config *t, double T) {
    double C = t->width, macs = 0;
    for (int i = 0; i < t->layers; i++) {
        double A = (double)t->heads[i] * TC_HEAD_SIZE, M = t->mlp_width[i];
        macs += T * C * 3 * A + 2 * T * T * A + T * A * C; /* qkv, QK^T, AV, out */
        macs += 2 * T * C * M;                             /* c_fc, c_proj */
    }
    return macs;
}

void tc_model_flops(const tc_model_config *cfg, double *gflops_image, double *gflops_text) {
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    double E = cfg->embed_dim;
    double Tv = tc_vision_tokens(v), P = v->patch_size;
    double img = (Tv - 1) * 3 * P * P * v->width + blocks_macs(v, Tv) + (double)v->width * E;
    double Tt = t->context_length;
    double txt = blocks_macs(t, Tt) + (double)t->width * E;
    if (gflops_image) *gflops_image = 2 * img / 1e9;
    if (gflops_text) *gflops_text = 2 * txt / 1e9;
}

double tc_step_gflops(tc_step_kind kind, const tc_model_config *student,
                      const tc_model_config *teacher) {
    double si, st;
    tc_model_flops(student, &si, &st);
    if (kind == TC_STEP_INFER) return si;
    double g = 3.0 * (si + st);
    if (kind == TC_STEP_DISTILL && teacher) {
        double ti, tt;
        tc_model_flops(teacher, &ti, &tt);
        g += ti + tt;
    }
    return g;
}
