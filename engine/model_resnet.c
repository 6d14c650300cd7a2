/* the ResNet image tower: a straight list of backend calls per stage, as
 * engine/model.c does for the transformer towers (see model_resnet.h). */
#include "model_resnet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* activations of one bottleneck (NCHW, per sample: cin x S x S in, 4P x So x So out) */
typedef struct {
    const tc_rn_block *p;
    int S, So;
    tc_act *c1, *a1, *c2, *a2, *p2, *c3, *b3; /* (P,S,S) x4, (P,So,So), (4P,So,So) x2 */
    tc_act *pd, *cd, *bd;                     /* downsample: (cin,So,So), (4P,So,So) x2 */
    tc_act *out;                              /* (4P,So,So) */
    float *st1, *st2, *st3, *std;             /* BatchNorm mean then rstd: (2P) (2P) (8P) (8P) */
} rn_block;

/* inference towers share one buffer per role across blocks */
enum { R_C1, R_A1, R_C2, R_A2, R_P2, R_C3, R_B3, R_PD, R_CD, R_BD, R_OUT0, R_OUT1, R_ROLES };

struct tc_rn_tower {
    tc_rn_env env;
    const tc_tower_config *cfg;
    int E, D, NH, HS, T, S, B, train;
    tc_bn_mode mode; /* of the last forward */
    float *images;   /* (B,3,S,S) */
    tc_act *img_act; /* the images in the activation type (== images when that is fp32) */
    /* stem: conv, BN+ReLU outputs at S/2, then the pool at S/4 */
    tc_act *s_c[3], *s_a[3], *s_pool;
    float *s_st[3];
    rn_block blk[TC_MAX_LAYERS];
    int nblocks;
    /* attention pool */
    tc_act *tokens, *x0, *q, *k, *v, *att, *proj; /* (B,T,D) (B,D) (B,D) (B,T,D) x2 (B,D) (B,E) */
    float *lse, *features, *norms;                /* (B,NH) (B,E) (B) */
    /* backward scratch: three role buffers and two ping-pong gradients of a
     * block's output / input, each the largest activation; the pool's */
    tc_act *g[3], *dio[2];
    tc_act *dtok, *dtok2, *dx0, *dq, *datt, *dk, *dv, *dproj;
    /* planning: the largest size of each role, and of any activation */
    size_t role_max[R_ROLES], act_max;
    tc_act *role_buf[R_ROLES];
    int planning;
};

/* ---- allocation ---- */

static tc_status alloc_bytes(tc_rn_tower *t, size_t bytes, void **out) {
    *out = NULL;
    if (bytes == 0) return TC_OK;
    return t->env.alloc(t->env.alloc_ctx, bytes, out);
}

/* an activation of n elements for role r: planning records the size; then a
 * training tower gets its own buffer, an inference tower the role's */
static tc_status act(tc_rn_tower *t, int r, size_t n, tc_act **out) {
    n *= (size_t)t->B;
    if (n > t->act_max) t->act_max = n;
    if (t->planning) {
        if (n > t->role_max[r]) t->role_max[r] = n;
        *out = NULL;
        return TC_OK;
    }
    if (!t->train) {
        *out = t->role_buf[r];
        return TC_OK;
    }
    return alloc_bytes(t, n * t->env.be->act_bytes, (void **)out);
}

static tc_status stats(tc_rn_tower *t, int C, float **out) {
    if (t->planning) return TC_OK;
    return alloc_bytes(t, 2 * (size_t)C * sizeof(float), (void **)out);
}

/* every activation of the stem and the stages (called twice: plan, allocate) */
static tc_status layout_acts(tc_rn_tower *t) {
    const int W = t->cfg->width, S1 = t->S / 2, S2 = S1 / 2;
    const int outs[3] = {W / 2, W / 2, W};
    for (int i = 0; i < 3; i++) {
        TC_TRY(act(t, R_C1 + 2 * (i % 2), (size_t)outs[i] * S1 * S1, &t->s_c[i]));
        TC_TRY(act(t, R_A1 + 2 * (i % 2), (size_t)outs[i] * S1 * S1, &t->s_a[i]));
        TC_TRY(stats(t, outs[i], &t->s_st[i]));
    }
    TC_TRY(act(t, R_OUT1, (size_t)W * S2 * S2, &t->s_pool));
    int S = S2;
    for (int i = 0; i < t->nblocks; i++) {
        rn_block *b = &t->blk[i];
        const tc_rn_block *p = &t->env.layout->rn.blocks[i];
        const int P = p->planes, So = S / p->stride;
        b->p = p;
        b->S = S;
        b->So = So;
        const size_t inner = (size_t)P * S * S, outer = (size_t)4 * P * So * So;
        TC_TRY(act(t, R_C1, inner, &b->c1));
        TC_TRY(act(t, R_A1, inner, &b->a1));
        TC_TRY(act(t, R_C2, inner, &b->c2));
        TC_TRY(act(t, R_A2, inner, &b->a2));
        b->p2 = b->a2;
        if (p->stride > 1) TC_TRY(act(t, R_P2, (size_t)P * So * So, &b->p2));
        TC_TRY(act(t, R_C3, outer, &b->c3));
        TC_TRY(act(t, R_B3, outer, &b->b3));
        TC_TRY(stats(t, P, &b->st1));
        TC_TRY(stats(t, P, &b->st2));
        TC_TRY(stats(t, 4 * P, &b->st3));
        if (p->ds_conv != TC_ABSENT) {
            b->pd = NULL;
            if (p->stride > 1) TC_TRY(act(t, R_PD, (size_t)p->cin * So * So, &b->pd));
            TC_TRY(act(t, R_CD, outer, &b->cd));
            TC_TRY(act(t, R_BD, outer, &b->bd));
            TC_TRY(stats(t, 4 * P, &b->std));
        }
        /* the stem's pool is OUT1: block outputs alternate OUT0, OUT1, ... */
        TC_TRY(act(t, i % 2 ? R_OUT1 : R_OUT0, outer, &b->out));
        S = So;
    }
    return TC_OK;
}

tc_status tc_rn_create(tc_rn_tower **out, const tc_rn_env *env, const tc_model_config *cfg,
                       int max_batch, int train) {
    *out = NULL;
    const tc_tower_config *v = &cfg->vision;
    tc_rn_tower *t = calloc(1, sizeof *t);
    if (!t) return tc_fail(TC_ERR_OOM, "resnet tower: out of host memory");
    t->env = *env;
    t->cfg = v;
    t->E = cfg->embed_dim;
    t->D = tc_resnet_pool_width(v);
    t->NH = tc_resnet_pool_heads(v);
    t->HS = v->head_width;
    t->T = tc_vision_tokens(v);
    t->S = v->image_size;
    t->B = max_batch;
    t->train = train;
    t->nblocks = env->layout->rn.nblocks;
    t->mode = TC_BN_EVAL;
    tc_status s;
    t->planning = 1;
    if ((s = layout_acts(t)) != TC_OK) goto fail;
    t->planning = 0;
    for (int r = 0; !train && r < R_ROLES; r++)
        if ((s = alloc_bytes(t, t->role_max[r] * env->be->act_bytes, (void **)&t->role_buf[r])) !=
            TC_OK)
            goto fail;
    if ((s = layout_acts(t)) != TC_OK) goto fail;
    size_t B = (size_t)max_batch, BTD = B * t->T * t->D, BD = B * t->D, F = sizeof(float);
    const size_t ab = env->be->act_bytes;
    void **bufs[] = {(void **)&t->tokens, (void **)&t->x0,  (void **)&t->q,   (void **)&t->k,
                     (void **)&t->v,      (void **)&t->att, (void **)&t->proj};
    const size_t sizes[] = {BTD, BD, BD, BTD, BTD, BD, B * t->E};
    for (size_t i = 0; i < 7; i++)
        if ((s = alloc_bytes(t, sizes[i] * ab, bufs[i])) != TC_OK) goto fail;
    if ((s = alloc_bytes(t, B * 3 * t->S * t->S * F, (void **)&t->images)) != TC_OK) goto fail;
    t->img_act = (tc_act *)t->images;
    if (ab != F && (s = alloc_bytes(t, B * 3 * t->S * t->S * ab, (void **)&t->img_act)) != TC_OK)
        goto fail;
    if ((s = alloc_bytes(t, B * t->NH * F, (void **)&t->lse)) != TC_OK ||
        (s = alloc_bytes(t, B * t->E * F, (void **)&t->features)) != TC_OK ||
        (s = alloc_bytes(t, B * F, (void **)&t->norms)) != TC_OK)
        goto fail;
    if (train) {
        void **dbufs[] = {(void **)&t->dtok, (void **)&t->dtok2, (void **)&t->dx0,
                          (void **)&t->dq,   (void **)&t->datt,  (void **)&t->dk,
                          (void **)&t->dv,   (void **)&t->dproj};
        const size_t dsizes[] = {BTD, BTD, BD, BD, BD, BTD, BTD, B * t->E};
        for (size_t i = 0; i < 8; i++)
            if ((s = alloc_bytes(t, dsizes[i] * ab, dbufs[i])) != TC_OK) goto fail;
        for (int i = 0; i < 3; i++)
            if ((s = alloc_bytes(t, t->act_max * ab, (void **)&t->g[i])) != TC_OK) goto fail;
        for (int i = 0; i < 2; i++)
            if ((s = alloc_bytes(t, t->act_max * ab, (void **)&t->dio[i])) != TC_OK) goto fail;
    }
    *out = t;
    return TC_OK;
fail:
    free(t);
    return s;
}

void tc_rn_destroy(tc_rn_tower *t) {
    free(t);
}
float *tc_rn_features(tc_rn_tower *t) {
    return t->features;
}
float *tc_rn_images(tc_rn_tower *t) {
    return t->images;
}

/* ---- forward ---- */

static const tc_act *W(const tc_rn_tower *t, size_t off) {
    return tc_act_offset(t->env.be, t->env.weights, off);
}
static float *G(const tc_rn_tower *t, size_t off) {
    return t->env.grads + off;
}

/* BatchNorm (+ReLU) with the parameters at `bn` (weight, bias, running stats) */
static void bn_forward(tc_rn_tower *t, tc_act *out, float *st, const tc_act *inp, size_t bn, int C,
                       int HW, int relu) {
    tc_backend *be = t->env.be;
    be->batchnorm_forward(be, out, st, st + C, t->env.params + bn + 2 * (size_t)C, inp, W(t, bn),
                          W(t, bn + C), t->B, C, HW, t->mode, relu);
}

static void conv_forward(tc_rn_tower *t, tc_act *out, const tc_act *inp, size_t w, int C, int S,
                         int OC, int K, int stride) {
    t->env.be->conv2d_forward(t->env.be, out, inp, W(t, w), t->B, C, S, S, OC, K, stride, K / 2);
}

static void stem_forward(tc_rn_tower *t) {
    tc_backend *be = t->env.be;
    const tc_rn_layout *L = &t->env.layout->rn;
    const int W2 = t->cfg->width / 2, Wd = t->cfg->width, S1 = t->S / 2;
    const int ins[3] = {3, W2, W2}, outs[3] = {W2, W2, Wd};
    /* the images are fp32; the first convolution reads the activation type */
    if (t->img_act != (tc_act *)t->images)
        be->f32_to_act(be, t->img_act, t->images, (size_t)t->B * 3 * t->S * t->S);
    const tc_act *x = t->img_act;
    for (int i = 0; i < 3; i++) {
        conv_forward(t, t->s_c[i], x, L->stem_conv[i], ins[i], i ? S1 : t->S, outs[i], 3,
                     i ? 1 : 2);
        bn_forward(t, t->s_a[i], t->s_st[i], t->s_c[i], L->stem_bn[i], outs[i], S1 * S1, 1);
        x = t->s_a[i];
    }
    be->avgpool_forward(be, t->s_pool, t->s_a[2], t->B * Wd, S1, S1, 2);
}

static void block_forward(tc_rn_tower *t, rn_block *b, const tc_act *x) {
    tc_backend *be = t->env.be;
    const tc_rn_block *p = b->p;
    const int P = p->planes, S = b->S, So = b->So, HW = S * S, HWo = So * So;
    conv_forward(t, b->c1, x, p->conv1, p->cin, S, P, 1, 1);
    bn_forward(t, b->a1, b->st1, b->c1, p->bn1, P, HW, 1);
    conv_forward(t, b->c2, b->a1, p->conv2, P, S, P, 3, 1);
    bn_forward(t, b->a2, b->st2, b->c2, p->bn2, P, HW, 1);
    if (p->stride > 1) be->avgpool_forward(be, b->p2, b->a2, t->B * P, S, S, p->stride);
    conv_forward(t, b->c3, b->p2, p->conv3, P, So, 4 * P, 1, 1);
    bn_forward(t, b->b3, b->st3, b->c3, p->bn3, 4 * P, HWo, 0);
    const tc_act *identity = x;
    if (p->ds_conv != TC_ABSENT) {
        const tc_act *pd = x;
        if (p->stride > 1) {
            be->avgpool_forward(be, b->pd, x, t->B * p->cin, S, S, p->stride);
            pd = b->pd;
        }
        conv_forward(t, b->cd, pd, p->ds_conv, p->cin, So, 4 * P, 1, 1);
        bn_forward(t, b->bd, b->std, b->cd, p->ds_bn, 4 * P, HWo, 0);
        identity = b->bd;
    }
    be->add_relu_forward(be, b->out, b->b3, identity, (size_t)t->B * 4 * P * HWo);
}

static void pool_forward(tc_rn_tower *t, const tc_act *feat) {
    tc_backend *be = t->env.be;
    const tc_rn_layout *L = &t->env.layout->rn;
    const int B = t->B, D = t->D, T = t->T;
    be->attnpool_tokens_forward(be, t->tokens, feat, W(t, L->pool_pos), B, D, T - 1);
    be->pool_gather_forward(be, t->x0, t->tokens, NULL, B, T, D);
    be->linear_forward(be, t->q, t->x0, W(t, L->q_w), W(t, L->q_b), B, D, D, 0);
    be->linear_forward(be, t->k, t->tokens, W(t, L->k_w), W(t, L->k_b), B * T, D, D, 0);
    be->linear_forward(be, t->v, t->tokens, W(t, L->v_w), W(t, L->v_b), B * T, D, D, 0);
    be->attention_query_forward(be, t->att, t->lse, t->q, t->k, t->v, B, T, t->NH, t->HS);
    be->linear_forward(be, t->proj, t->att, W(t, L->c_w), W(t, L->c_b), B, D, t->E, 0);
    be->l2norm_forward(be, t->features, t->norms, t->proj, B, t->E);
}

void tc_rn_forward(tc_rn_tower *t, const float *images, int B, tc_bn_mode mode) {
    tc_backend *be = t->env.be;
    t->B = B;
    t->mode = mode;
    if (images != t->images)
        be->copy(be, t->images, images, (size_t)B * 3 * t->S * t->S * sizeof(float));
    stem_forward(t);
    const tc_act *x = t->s_pool;
    for (int i = 0; i < t->nblocks; i++) {
        block_forward(t, &t->blk[i], x);
        x = t->blk[i].out;
    }
    pool_forward(t, x);
}

/* ---- backward ---- */

static void bn_backward(tc_rn_tower *t, tc_act *dinp, const tc_act *dout, const tc_act *inp,
                        const tc_act *out, const float *st, size_t bn, int C, int HW, int relu) {
    t->env.be->batchnorm_backward(t->env.be, dinp, G(t, bn), G(t, bn + C), dout, inp, out, W(t, bn),
                                  st, st + C, t->B, C, HW, relu);
}

static void conv_backward(tc_rn_tower *t, tc_act *dinp, const tc_act *dout, const tc_act *inp,
                          size_t w, int C, int S, int OC, int K, int stride) {
    t->env.be->conv2d_backward(t->env.be, dinp, G(t, w), dout, inp, W(t, w), t->B, C, S, S, OC, K,
                               stride, K / 2);
}

/* dx (cin,S,S) written from dout (4P,So,So), which is overwritten */
static void block_backward(tc_rn_tower *t, const rn_block *b, const tc_act *x, tc_act *dx,
                           tc_act *dout) {
    tc_backend *be = t->env.be;
    const tc_rn_block *p = b->p;
    const int P = p->planes, S = b->S, So = b->So, HW = S * S, HWo = So * So, B = t->B;
    tc_act *g0 = t->g[0], *g1 = t->g[1], *g2 = t->g[2];
    /* dout becomes d(sum), in place */
    be->relu_backward(be, dout, b->out, dout, (size_t)B * 4 * P * HWo);
    bn_backward(t, g0, dout, b->c3, NULL, b->st3, p->bn3, 4 * P, HWo, 0);
    conv_backward(t, g1, g0, b->p2, p->conv3, P, So, 4 * P, 1, 1);
    tc_act *da2 = g1;
    if (p->stride > 1) {
        be->avgpool_backward(be, g2, g1, B * P, S, S, p->stride);
        da2 = g2;
    }
    bn_backward(t, g0, da2, b->c2, b->a2, b->st2, p->bn2, P, HW, 1);
    conv_backward(t, g1, g0, b->a1, p->conv2, P, S, P, 3, 1);
    bn_backward(t, g0, g1, b->c1, b->a1, b->st1, p->bn1, P, HW, 1);
    conv_backward(t, dx, g0, x, p->conv1, p->cin, S, P, 1, 1);
    const size_t nin = (size_t)B * p->cin * HW;
    if (p->ds_conv == TC_ABSENT) {
        be->add(be, dx, dx, dout, nin);
        return;
    }
    bn_backward(t, g2, dout, b->cd, NULL, b->std, p->ds_bn, 4 * P, HWo, 0);
    conv_backward(t, g1, g2, p->stride > 1 ? b->pd : x, p->ds_conv, p->cin, So, 4 * P, 1, 1);
    const tc_act *did = g1;
    if (p->stride > 1) {
        be->avgpool_backward(be, g0, g1, B * p->cin, S, S, p->stride);
        did = g0;
    }
    be->add(be, dx, dx, did, nin);
}

static void stem_backward(tc_rn_tower *t, const tc_act *dpool) {
    tc_backend *be = t->env.be;
    const tc_rn_layout *L = &t->env.layout->rn;
    const int W2 = t->cfg->width / 2, Wd = t->cfg->width, S1 = t->S / 2, HW = S1 * S1;
    const int ins[3] = {3, W2, W2}, outs[3] = {W2, W2, Wd};
    tc_act *g0 = t->g[0], *g1 = t->g[1];
    be->avgpool_backward(be, g0, dpool, t->B * Wd, S1, S1, 2);
    for (int i = 2; i >= 0; i--) {
        bn_backward(t, g1, g0, t->s_c[i], t->s_a[i], t->s_st[i], L->stem_bn[i], outs[i], HW, 1);
        /* no gradient for the images */
        conv_backward(t, i ? g0 : NULL, g1, i ? t->s_a[i - 1] : t->img_act, L->stem_conv[i], ins[i],
                      i ? S1 : t->S, outs[i], 3, i ? 1 : 2);
    }
}

static void pool_backward(tc_rn_tower *t, const float *dfeatures, tc_act *dfeat) {
    tc_backend *be = t->env.be;
    const tc_rn_layout *L = &t->env.layout->rn;
    const int B = t->B, D = t->D, T = t->T, E = t->E;
    be->l2norm_backward(be, t->dproj, dfeatures, t->features, t->norms, B, E);
    be->linear_backward(be, t->datt, G(t, L->c_w), G(t, L->c_b), t->dproj, t->att, W(t, L->c_w), B,
                        D, E, 0);
    be->attention_query_backward(be, t->dq, t->dk, t->dv, t->datt, t->q, t->k, t->v, t->att, t->lse,
                                 B, T, t->NH, t->HS);
    be->linear_backward(be, t->dx0, G(t, L->q_w), G(t, L->q_b), t->dq, t->x0, W(t, L->q_w), B, D, D,
                        0);
    be->linear_backward(be, t->dtok, G(t, L->k_w), G(t, L->k_b), t->dk, t->tokens, W(t, L->k_w),
                        B * T, D, D, 0);
    be->linear_backward(be, t->dtok2, G(t, L->v_w), G(t, L->v_b), t->dv, t->tokens, W(t, L->v_w),
                        B * T, D, D, 0);
    be->add(be, t->dtok, t->dtok, t->dtok2, (size_t)B * T * D);
    be->pool_gather_backward(be, t->dtok, t->dx0, NULL, B, T, D);
    be->attnpool_tokens_backward(be, dfeat, G(t, L->pool_pos), t->dtok, B, D, T - 1);
}

tc_status tc_rn_backward(tc_rn_tower *t, const float *dfeatures) {
    if (t->mode == TC_BN_EVAL)
        return tc_fail(TC_ERR_ARG,
                       "resnet tower: a backward needs a forward on batch statistics (the model "
                       "ran in eval mode)");
    tc_act *dout = t->dio[0], *dx = t->dio[1];
    pool_backward(t, dfeatures, dout);
    for (int i = t->nblocks - 1; i >= 0; i--) {
        const tc_act *x = i ? t->blk[i - 1].out : t->s_pool;
        block_backward(t, &t->blk[i], x, dx, dout);
        tc_act *tmp = dout;
        dout = dx;
        dx = tmp;
    }
    stem_backward(t, dout);
    return TC_OK;
}

/* ---- initialisation (open_clip ModifiedResNet) ---- */

static void fill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++)
        x[i] = v;
}

/* torch's Conv2d / Linear default: U(+-1/sqrt(fan_in)) */
static void uniform(float *x, size_t n, int fan_in, tc_prng *r) {
    const float bound = 1.0f / sqrtf((float)fan_in);
    for (size_t i = 0; i < n; i++)
        x[i] = bound * (2.0f * tc_prng_uniform(r) - 1.0f);
}

static void normal(float *x, size_t n, float std, tc_prng *r) {
    for (size_t i = 0; i < n; i++)
        x[i] = std * tc_prng_normal(r);
}

/* gain 1 (0 for a residual branch's last BatchNorm), shift 0, running 0 / 1, 0 batches */
static void init_bn(float *p, size_t bn, int C, float gain) {
    fill(p + bn, C, gain);
    fill(p + bn + C, C, 0.0f);
    fill(p + bn + 2 * (size_t)C, C, 0.0f);
    fill(p + bn + 3 * (size_t)C, C, 1.0f);
    p[bn + 4 * (size_t)C] = 0.0f;
}

void tc_rn_init(float *p, const tc_param_layout *layout, const tc_model_config *cfg, tc_prng *r) {
    const tc_tower_config *v = &cfg->vision;
    const tc_rn_layout *L = &layout->rn;
    const int W = v->width, D = tc_resnet_pool_width(v), E = cfg->embed_dim;
    const int ins[3] = {3, W / 2, W / 2}, outs[3] = {W / 2, W / 2, W};
    for (int i = 0; i < 3; i++) {
        uniform(p + L->stem_conv[i], (size_t)outs[i] * ins[i] * 9, ins[i] * 9, r);
        init_bn(p, L->stem_bn[i], outs[i], 1.0f);
    }
    for (int i = 0; i < L->nblocks; i++) {
        const tc_rn_block *b = &L->blocks[i];
        const int P = b->planes;
        uniform(p + b->conv1, (size_t)P * b->cin, b->cin, r);
        init_bn(p, b->bn1, P, 1.0f);
        uniform(p + b->conv2, (size_t)P * P * 9, P * 9, r);
        init_bn(p, b->bn2, P, 1.0f);
        uniform(p + b->conv3, (size_t)4 * P * P, P, r);
        init_bn(p, b->bn3, 4 * P, 0.0f);
        if (b->ds_conv != TC_ABSENT) {
            uniform(p + b->ds_conv, (size_t)4 * P * b->cin, b->cin, r);
            init_bn(p, b->ds_bn, 4 * P, 1.0f);
        }
    }
    const int g = tc_vision_grid(v);
    const float std = 1.0f / sqrtf((float)D);
    normal(p + L->pool_pos, (size_t)(g * g + 1) * D, std, r);
    const size_t ws[4] = {L->k_w, L->q_w, L->v_w, L->c_w}, bs[4] = {L->k_b, L->q_b, L->v_b, L->c_b};
    for (int i = 0; i < 4; i++) {
        const int rows = i == 3 ? E : D;
        normal(p + ws[i], (size_t)rows * D, std, r);
        uniform(p + bs[i], rows, D, r);
    }
}
