/* a model's random initialisation, as open_clip's for training from
 * scratch */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "model_resnet.h"
#include "rng.h"

static void init_normal(float *x, size_t n, float std, tc_prng *r) {
    for (size_t i = 0; i < n; i++)
        x[i] = std * tc_prng_normal(r);
}
static void init_uniform(float *x, size_t n, float bound, tc_prng *r) {
    for (size_t i = 0; i < n; i++)
        x[i] = bound * (2.0f * tc_prng_uniform(r) - 1.0f);
}
static void init_fill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++)
        x[i] = v;
}

/* torch defaults: nn.Linear weight and bias U(+-1/sqrt(fan_in)); MHA
 * in_proj xavier_uniform, biases 0; LayerNorm 1/0. the text tower then
 * re-draws its weights with CLIP's normal init (TextTransformer.init_parameters),
 * the vision tower keeps torch's defaults (VisionTransformer.init_parameters is
 * a no-op in open_clip). */
static void init_blocks(float *p, const tc_tower_config *cfg, const tc_block_offsets *blocks,
                        int clip_init, tc_prng *r) {
    int C = cfg->width;
    float attn_std = powf((float)C, -0.5f);
    float proj_std = attn_std * powf(2.0f * cfg->layers, -0.5f);
    float fc_std = powf(2.0f * C, -0.5f);
    for (int l = 0; l < cfg->layers; l++) {
        const tc_block_offsets *o = &blocks[l];
        int A = cfg->heads[l] * cfg->head_width, M = cfg->mlp_width[l];
        if (A > 0) {
            init_fill(p + o->ln1_w, C, 1.0f);
            init_fill(p + o->ln1_b, C, 0.0f);
            if (clip_init)
                init_normal(p + o->qkv_w, (size_t)3 * A * C, attn_std, r);
            else
                init_uniform(p + o->qkv_w, (size_t)3 * A * C, sqrtf(6.0f / (float)(C + 3 * A)), r);
            init_fill(p + o->qkv_b, 3 * A, 0.0f);
            if (clip_init)
                init_normal(p + o->out_w, (size_t)C * A, proj_std, r);
            else
                init_uniform(p + o->out_w, (size_t)C * A, 1.0f / sqrtf((float)A), r);
            init_fill(p + o->out_b, C, 0.0f);
        }
        if (M > 0) {
            init_fill(p + o->ln2_w, C, 1.0f);
            init_fill(p + o->ln2_b, C, 0.0f);
            if (clip_init)
                init_normal(p + o->fc_w, (size_t)M * C, fc_std, r);
            else
                init_uniform(p + o->fc_w, (size_t)M * C, 1.0f / sqrtf((float)C), r);
            init_uniform(p + o->fc_b, M, 1.0f / sqrtf((float)C), r);
            if (clip_init)
                init_normal(p + o->proj_w, (size_t)C * M, proj_std, r);
            else
                init_uniform(p + o->proj_w, (size_t)C * M, 1.0f / sqrtf((float)M), r);
            init_uniform(p + o->proj_b, C, 1.0f / sqrtf((float)M), r);
        }
    }
}

tc_status tc_model_init_random(tc_model *m, uint64_t seed) {
    const tc_param_layout *L = tc_model_layout(m);
    const tc_model_config *cfg = tc_model_cfg(m);
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    float *p = calloc(L->total, sizeof *p);
    if (!p)
        return tc_fail(TC_ERR_OOM, "model %s: out of host memory for initialisation", cfg->name);
    tc_prng r;
    tc_prng_seed(&r, seed, 0);
    int Cv = v->width, Ct = t->width, E = cfg->embed_dim, P = v->patch_size;
    float vscale = powf((float)Cv, -0.5f);
    /* text */
    init_normal(p + L->token_emb, (size_t)t->vocab_size * Ct, 0.02f, &r);
    init_normal(p + L->text_pos, (size_t)t->context_length * Ct, 0.01f, &r);
    init_blocks(p, t, L->tblocks, 1, &r);
    init_normal(p + L->text_proj, (size_t)Ct * E, powf((float)Ct, -0.5f), &r);
    init_fill(p + L->ln_final_w, Ct, 1.0f);
    init_fill(p + L->ln_final_b, Ct, 0.0f);
    /* vision */
    if (v->resnet) {
        tc_rn_init(p, L, cfg, &r);
        goto done;
    }
    init_uniform(p + L->v_conv1, (size_t)Cv * 3 * P * P, 1.0f / sqrtf(3.0f * P * P), &r);
    init_normal(p + L->v_cls, Cv, vscale, &r);
    init_normal(p + L->v_pos, (size_t)tc_vision_tokens(v) * Cv, vscale, &r);
    init_normal(p + L->v_proj, (size_t)Cv * E, vscale, &r);
    if (L->v_ln_pre_w != TC_ABSENT) {
        init_fill(p + L->v_ln_pre_w, Cv, 1.0f);
        init_fill(p + L->v_ln_pre_b, Cv, 0.0f);
    }
    init_blocks(p, v, L->vblocks, 0, &r);
    init_fill(p + L->v_ln_post_w, Cv, 1.0f);
    init_fill(p + L->v_ln_post_b, Cv, 0.0f);
done:
    p[L->logit_scale] = logf(1.0f / 0.07f);
    tc_status s = tc_model_set_params(m, p);
    free(p);
    return s;
}
