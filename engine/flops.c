#include "flops.h"

#include <math.h>

/* multiply-adds of the residual blocks of one tower over T tokens */
static double blocks_macs(const tc_tower_config *t, double T) {
    double C = t->width, macs = 0;
    for (int i = 0; i < t->layers; i++) {
        double A = (double)t->heads[i] * t->head_width, M = t->mlp_width[i];
        macs += T * C * 3 * A + 2 * T * T * A + T * A * C; /* qkv, QK^T, AV, out */
        macs += 2 * T * C * M;                             /* c_fc, c_proj */
    }
    return macs;
}

/* multiply-adds of a ResNet tower (open_clip ModifiedResNet) on one image:
 * the convolutions, and the attention pool as this engine computes it (the
 * query of the mean token only) */
static double resnet_macs(const tc_tower_config *v, double E) {
    double W = v->width, S = v->image_size / 2.0; /* after the stride-2 first conv */
    double macs = S * S * (W / 2 * 3 * 9 + W / 2 * W / 2 * 9 + W * W / 2 * 9);
    S /= 2; /* the stem's average pool */
    double cin = W;
    for (int s = 0; s < TC_RESNET_STAGES; s++) {
        double P = W * (1 << s);
        for (int i = 0; i < v->stages[s]; i++) {
            int down = i == 0 && s > 0;
            double So = down ? S / 2 : S;
            macs += S * S * P * cin + S * S * P * P * 9 + So * So * 4 * P * P;
            if (down || cin != 4 * P) macs += So * So * 4 * P * cin;
            cin = 4 * P;
            S = So;
        }
    }
    double D = tc_resnet_pool_width(v), T = tc_vision_tokens(v);
    return macs + D * D + 2 * T * D * D + 2 * T * D + D * E;
}

void tc_model_flops(const tc_model_config *cfg, double *gflops_image, double *gflops_text) {
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    double E = cfg->embed_dim;
    double Tv = tc_vision_tokens(v), P = v->patch_size;
    double img = v->resnet
                     ? resnet_macs(v, E)
                     : (Tv - 1) * 3 * P * P * v->width + blocks_macs(v, Tv) + (double)v->width * E;
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

double tc_resnet_activations(const tc_tower_config *v, int train) {
    double W = v->width, S = v->image_size / 2.0, cin = W;
    double sum = S * S * (W / 2 * 4 + W * 2), widest = S * S * W;
    double role = 0; /* the largest tensor of a block: 4 roles of it cover inference */
    S /= 2;
    sum += S * S * W;
    for (int s = 0; s < TC_RESNET_STAGES; s++) {
        double P = W * (1 << s);
        for (int i = 0; i < v->stages[s]; i++) {
            int down = i == 0 && s > 0;
            double So = down ? S / 2 : S, out = 4 * P * So * So;
            sum += 4 * P * S * S + (down ? P * So * So : 0) + 3 * out;
            if (down || cin != 4 * P) sum += 2 * out + (down ? cin * So * So : 0);
            role = fmax(role, fmax(P * S * S, fmax(out, cin * S * S)));
            cin = 4 * P;
            S = So;
        }
    }
    double D = tc_resnet_pool_width(v), T = tc_vision_tokens(v);
    double pool = 3 * T * D + 4 * D;
    if (!train) return 12 * fmax(role, widest) + pool;
    return sum + 5 * fmax(role, widest) + 2 * pool;
}
