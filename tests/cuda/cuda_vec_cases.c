/* test_cuda_ops' cases for the 16-byte vector kernels and the spread token
 * scatter (compiled into that binary, which scripts/gpu_check.sh runs): the
 * CUDA backend against the CPU reference backend, in the fp32 mode and the
 * mixed (bf16) mode (tolerances: tests/cuda/cuda_harness.h).
 *
 * every kernel with a vector path runs on operands placed `shift` elements
 * into their buffers: shift 0 is cudaMalloc's alignment (the vector path
 * where the width allows it), shift 1 or 3 a 2- or 4-byte aligned view (the
 * scalar path), at widths that are and are not multiples of 4 and 8:
 *   layernorm forward / backward, the fused residual + layernorm (also
 *   against add + layernorm_forward on the GPU: the same bits), add and the
 *   GELU family (vector and scalar paths: the same bits), and the token
 *   embedding's backward with a padding run over many pieces.
 * '=' outputs are poisoned first; '+=' outputs start from the same random
 * values on both backends; reductions run twice and must give the same bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_harness.h"
#include "cuda_vec_cases.h"
#include "testutil.h"

#ifdef TC_HAVE_CUDA

/* n activations `shift` elements into a fresh GPU buffer */
static tc_act *put_act_at(const float *h, size_t n, int shift) {
    tc_act *buf = balloc(g_gpu, (n + (size_t)shift) * g_gpu->act_bytes);
    tc_act *p = tc_act_offset(g_gpu, buf, (size_t)shift);
    float *tmp = put_f32(g_gpu, h, n);
    g_gpu->f32_to_act(g_gpu, p, tmp, n);
    return p;
}

/* a poisoned output of n activations `shift` elements into its buffer */
static tc_act *out_act_at(size_t n, int shift) {
    const size_t bytes = (n + (size_t)shift) * g_gpu->act_bytes;
    tc_act *buf = balloc(g_gpu, bytes);
    poison(g_gpu, buf, bytes);
    return tc_act_offset(g_gpu, buf, (size_t)shift);
}

static float *get_act_h(tc_backend *b, const tc_act *p, size_t n) {
    float *h = hmalloc(n * sizeof(float));
    get_act(b, h, p, n);
    return h;
}

static float *get_f32_h(tc_backend *b, const float *p, size_t n) {
    float *h = hmalloc(n * sizeof(float));
    get_f32(b, h, p, n);
    return h;
}

/* rows with an offset per row and two outlier columns, as the residual
 * stream has; representable in the activation type */
static float *stream_rows(int N, int C) {
    float *x = rand_act((size_t)N * C, 2.0f);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++) {
            float v = x[(size_t)r * C + c] + (float)(r % 7) * 4.0f - 12.0f;
            if (c == C / 3) v += 30.0f;
            if (c == C - 1) v -= 20.0f;
            x[(size_t)r * C + c] = g_fp32 ? v : bf16_round(v);
        }
    return x;
}

/* ---- layernorm ---- */

typedef struct {
    int N, C;
    int shift;   /* x, out, dout, dinp */
    int shift_w; /* w, bias */
} ln_case;

static void run_ln(const ln_case *k) {
    const int N = k->N, C = k->C;
    const size_t n = (size_t)N * C;
    float *x = stream_rows(N, C);
    float *w = rand_act(C, 1.0f), *bias = rand_act(C, 1.0f), *dout = rand_act(n, 1.0f);
    float *dinp0 = rand_act(n, 1.0f), *dw0 = rand_f32(C, 1.0f), *db0 = rand_f32(C, 1.0f);

    tc_act *cx = put_act(g_cpu, x, n), *cw = put_act(g_cpu, w, C), *cb = put_act(g_cpu, bias, C);
    tc_act *cdo = put_act(g_cpu, dout, n), *cdi = put_act(g_cpu, dinp0, n);
    tc_act *co = balloc(g_cpu, n * 4);
    float *cm = balloc(g_cpu, N * 4), *cr = balloc(g_cpu, N * 4);
    float *cdw = put_f32(g_cpu, dw0, C), *cdb = put_f32(g_cpu, db0, C);
    g_cpu->layernorm_forward(g_cpu, co, cm, cr, cx, cw, cb, N, C);
    g_cpu->layernorm_backward(g_cpu, cdi, cdw, cdb, cdo, cx, cw, cm, cr, N, C);
    float *r_o = get_act_h(g_cpu, co, n), *r_di = get_act_h(g_cpu, cdi, n);
    float *r_m = get_f32_h(g_cpu, cm, N), *r_r = get_f32_h(g_cpu, cr, N);
    float *r_dw = get_f32_h(g_cpu, cdw, C), *r_db = get_f32_h(g_cpu, cdb, C);

    tc_act *gx = put_act_at(x, n, k->shift), *gdo = put_act_at(dout, n, k->shift);
    tc_act *gdi = put_act_at(dinp0, n, k->shift), *go = out_act_at(n, k->shift);
    tc_act *gw = put_act_at(w, C, k->shift_w), *gb = put_act_at(bias, C, k->shift_w);
    float *gm = gpu_out_f32(N), *gr = gpu_out_f32(N);
    float *gdw = put_f32(g_gpu, dw0, C), *gdb = put_f32(g_gpu, db0, C);
    g_gpu->layernorm_forward(g_gpu, go, gm, gr, gx, gw, gb, N, C);
    g_gpu->layernorm_backward(g_gpu, gdi, gdw, gdb, gdo, gx, gw, gm, gr, N, C);
    bsync(g_gpu, "cuda layernorm");
    printf("  layernorm N=%d C=%d shift %d, w shift %d\n", N, C, k->shift, k->shift_w);
    expect_close("out", get_act_h(g_gpu, go, n), r_o, n, tol_act());
    expect_close("mean", get_f32_h(g_gpu, gm, N), r_m, N, tol_f32());
    expect_close("rstd", get_f32_h(g_gpu, gr, N), r_r, N, tol_f32());
    expect_close("dinp (+=)", get_act_h(g_gpu, gdi, n), r_di, n, tol_act());
    float *dw = get_f32_h(g_gpu, gdw, C), *db = get_f32_h(g_gpu, gdb, C);
    expect_close("dw (+=)", dw, r_dw, C, tol_f32());
    expect_close("dbias (+=)", db, r_db, C, tol_f32());

    /* the parameter gradients again: the same bits */
    if (g_gpu->upload(g_gpu, gdw, dw0, C * 4) != TC_OK ||
        g_gpu->upload(g_gpu, gdb, db0, C * 4) != TC_OK)
        fail_msg("upload");
    g_gpu->layernorm_backward(g_gpu, NULL, gdw, gdb, gdo, gx, gw, gm, gr, N, C);
    expect_same_bits("layernorm dw", dw, get_f32_h(g_gpu, gdw, C), C);
    expect_same_bits("layernorm dbias", db, get_f32_h(g_gpu, gdb, C), C);
}

void test_layernorm(void **state) {
    (void)state;
    static const ln_case full[] = {
        {100, 768, 0, 0}, /* vector in both modes */
        {394, 768, 0, 0}, /* vector, a text batch's rows */
        {394, 768, 1, 0}, /* activations one element off: scalar */
        {154, 512, 0, 3}, /* weights off only: scalar */
        {77, 100, 0, 0},  /* a multiple of 4, not of 8: fp32 vector, bf16 scalar */
        {77, 770, 0, 0},  /* a multiple of neither */
        {154, 700, 0, 0}, /* a pruned width: fp32 vector, bf16 scalar */
        {3, 33, 0, 0},    /* odd: scalar */
        {50, 1024, 0, 0}, /* a lane holds several vectors */
        {33, 8, 0, 0},    /* narrower than a warp's vectors */
        {5, 1, 0, 0},     /* one column: variance 0 */
        {21, 1280, 3, 3}, /* everything three elements off */
    };
    static const ln_case quick[] = {{10, 96, 0, 0}, {3, 33, 1, 1}};
    RUN_CASES(run_ln, full, quick);
}

/* ---- residual + layernorm ---- */

typedef struct {
    int N, C, shift, in_place;
} res_ln_case;

static void run_res_ln(const res_ln_case *k) {
    const int N = k->N, C = k->C;
    const size_t n = (size_t)N * C;
    float *x = stream_rows(N, C), *y = rand_act(n, 1.0f);
    float *w = rand_act(C, 1.0f), *bias = rand_act(C, 1.0f);

    /* cpu: the fused op is add + layernorm_forward there */
    if (!g_cpu->residual_layernorm_forward)
        fail_msg("cpu backend lacks residual_layernorm_forward");
    tc_act *cx = put_act(g_cpu, x, n), *cy = put_act(g_cpu, y, n);
    tc_act *cw = put_act(g_cpu, w, C), *cb = put_act(g_cpu, bias, C);
    tc_act *cres = balloc(g_cpu, n * 4), *co = balloc(g_cpu, n * 4);
    float *cm = balloc(g_cpu, N * 4), *cr = balloc(g_cpu, N * 4);
    g_cpu->residual_layernorm_forward(g_cpu, cres, co, cm, cr, cx, cy, cw, cb, N, C);
    float *r_res = get_act_h(g_cpu, cres, n), *r_o = get_act_h(g_cpu, co, n);
    float *r_m = get_f32_h(g_cpu, cm, N), *r_r = get_f32_h(g_cpu, cr, N);

    /* gpu, fused; in place: res is x's buffer */
    if (!g_gpu->residual_layernorm_forward)
        fail_msg("cuda backend lacks residual_layernorm_forward");
    tc_act *gx = put_act_at(x, n, k->shift), *gy = put_act_at(y, n, k->shift);
    tc_act *gw = put_act_at(w, C, k->shift), *gb = put_act_at(bias, C, k->shift);
    tc_act *gres = k->in_place ? gx : out_act_at(n, k->shift), *go = out_act_at(n, k->shift);
    float *gm = gpu_out_f32(N), *gr = gpu_out_f32(N);
    g_gpu->residual_layernorm_forward(g_gpu, gres, go, gm, gr, gx, gy, gw, gb, N, C);
    bsync(g_gpu, "cuda residual_layernorm_forward");
    float *res = get_act_h(g_gpu, gres, n), *o = get_act_h(g_gpu, go, n);
    float *m = get_f32_h(g_gpu, gm, N), *r = get_f32_h(g_gpu, gr, N);
    printf("  residual_layernorm N=%d C=%d shift %d%s\n", N, C, k->shift,
           k->in_place ? " in place" : "");
    expect_close("res", res, r_res, n, tol_act());
    expect_close("out", o, r_o, n, tol_act());
    expect_close("mean", m, r_m, N, tol_f32());
    expect_close("rstd", r, r_r, N, tol_f32());

    /* gpu, the two ops on the same placement: the same bits */
    tc_act *gx2 = put_act_at(x, n, k->shift);
    tc_act *gres2 = out_act_at(n, k->shift), *go2 = out_act_at(n, k->shift);
    float *gm2 = gpu_out_f32(N), *gr2 = gpu_out_f32(N);
    g_gpu->add(g_gpu, gres2, gx2, gy, n);
    g_gpu->layernorm_forward(g_gpu, go2, gm2, gr2, gres2, gw, gb, N, C);
    bsync(g_gpu, "cuda add + layernorm_forward");
    expect_same_bits("res = add", res, get_act_h(g_gpu, gres2, n), n);
    expect_same_bits("out = layernorm_forward", o, get_act_h(g_gpu, go2, n), n);
    expect_same_bits("mean", m, get_f32_h(g_gpu, gm2, N), N);
    expect_same_bits("rstd", r, get_f32_h(g_gpu, gr2, N), N);
}

void test_residual_layernorm(void **state) {
    (void)state;
    static const res_ln_case full[] = {
        {394, 768, 0, 0}, {394, 768, 1, 0}, {154, 512, 0, 1}, {77, 100, 0, 0},
        {77, 770, 3, 0},  {50, 1024, 0, 0}, {33, 8, 1, 1},
    };
    static const res_ln_case quick[] = {{10, 96, 0, 0}, {3, 33, 1, 1}};
    RUN_CASES(run_res_ln, full, quick);
}

/* ---- add and the GELU family ---- */

typedef struct {
    size_t n;
    int shift;
} ew_case;

/* the three ops on the GPU at a placement; out[0..2] are add, forward and
 * backward (kind: GELU or QuickGELU) */
static void gpu_ew(float *out[3], const float *x, const float *y, const float *dout, size_t n,
                   int shift, tc_activation kind) {
    tc_act *gx = put_act_at(x, n, shift), *gy = put_act_at(y, n, shift);
    tc_act *gd = put_act_at(dout, n, shift);
    tc_act *gs = out_act_at(n, shift), *go = out_act_at(n, shift), *gdi = out_act_at(n, shift);
    g_gpu->add(g_gpu, gs, gx, gy, n);
    g_gpu->gelu_forward(g_gpu, go, gx, n, kind);
    g_gpu->gelu_backward(g_gpu, gdi, gx, gd, n, kind);
    bsync(g_gpu, "cuda add / gelu");
    out[0] = get_act_h(g_gpu, gs, n);
    out[1] = get_act_h(g_gpu, go, n);
    out[2] = get_act_h(g_gpu, gdi, n);
}

/* fp32 -> activations -> fp32 on the GPU, every buffer `shift` elements into its allocation */
static float *gpu_cast_round_trip(const float *x, size_t n, int shift) {
    float *src = (float *)balloc(g_gpu, (n + (size_t)shift) * sizeof(float)) + shift;
    float *back = (float *)balloc(g_gpu, (n + (size_t)shift) * sizeof(float)) + shift;
    if (g_gpu->upload(g_gpu, src, x, n * sizeof(float)) != TC_OK) fail_msg("upload");
    poison(g_gpu, back, n * sizeof(float));
    tc_act *a = out_act_at(n, shift);
    g_gpu->f32_to_act(g_gpu, a, src, n);
    g_gpu->act_to_f32(g_gpu, back, a, n);
    bsync(g_gpu, "cuda f32_to_act / act_to_f32");
    return get_f32_h(g_gpu, back, n);
}

static void run_ew(const ew_case *k) {
    const size_t n = k->n;
    /* the casts: bf16 rounding to nearest even (exact in the fp32 mode), the
     * vector and scalar paths alike */
    {
        float *x = rand_f32(n, 3.0f), *want = hmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++)
            want[i] = g_fp32 ? x[i] : bf16_round(x[i]);
        expect_same_bits("cast round trip", gpu_cast_round_trip(x, n, k->shift), want, n);
        expect_same_bits("cast round trip (aligned)", gpu_cast_round_trip(x, n, 0), want, n);
    }
    for (int kind = 0; kind < 2; kind++) {
        float *x = rand_act(n, 4.0f), *y = rand_act(n, 4.0f), *dout = rand_act(n, 1.0f);
        tc_act *cx = put_act(g_cpu, x, n), *cy = put_act(g_cpu, y, n),
               *cd = put_act(g_cpu, dout, n);
        tc_act *cs = balloc(g_cpu, n * 4), *co = balloc(g_cpu, n * 4), *cdi = balloc(g_cpu, n * 4);
        g_cpu->add(g_cpu, cs, cx, cy, n);
        g_cpu->gelu_forward(g_cpu, co, cx, n, (tc_activation)kind);
        g_cpu->gelu_backward(g_cpu, cdi, cx, cd, n, (tc_activation)kind);
        float *ref[3] = {get_act_h(g_cpu, cs, n), get_act_h(g_cpu, co, n),
                         get_act_h(g_cpu, cdi, n)};
        float *got[3], *aligned[3];
        gpu_ew(got, x, y, dout, n, k->shift, (tc_activation)kind);
        gpu_ew(aligned, x, y, dout, n, 0, (tc_activation)kind);
        static const char *names[3] = {"add", "forward", "backward"};
        printf("  %s n=%zu shift %d\n", kind ? "quick_gelu" : "gelu", n, k->shift);
        for (int i = 0; i < 3; i++) {
            expect_close(names[i], got[i], ref[i], n, tol_act());
            /* the scalar and vector paths compute every element alike */
            expect_same_bits(names[i], got[i], aligned[i], n);
        }
    }
    /* add in place (out is x), as the ResNet and backward sums use it */
    float *x = rand_act(n, 1.0f), *y = rand_act(n, 1.0f), *sum = hmalloc(n * 4);
    for (size_t i = 0; i < n; i++)
        sum[i] = x[i] + y[i];
    tc_act *gx = put_act_at(x, n, k->shift), *gy = put_act_at(y, n, k->shift);
    g_gpu->add(g_gpu, gx, gx, gy, n);
    bsync(g_gpu, "cuda add in place");
    expect_close("add in place", get_act_h(g_gpu, gx, n), sum, n, tol_act());
}

void test_elementwise_vec(void **state) {
    (void)state;
    static const ew_case full[] = {
        {1, 0},
        {7, 0},
        {8, 0},
        {9, 0},
        {9, 1},
        {4099, 0},
        {4099, 3},
        {65536, 1},
        {(size_t)154 * 1234 + 3, 0},
        {(size_t)154 * 1234 + 3, 1},
    };
    static const ew_case quick[] = {{9, 0}, {1001, 1}};
    RUN_CASES(run_ew, full, quick);
}

/* ---- token embedding backward: runs over many pieces ---- */

typedef struct {
    int B, T, C;
} tok_case;

/* CLIP's layout: start token, words, end token (the largest id), then
 * padding (id 0) to T: the padding run covers most sorted positions */
static void run_tok(const tok_case *k) {
    const int B = k->B, T = k->T, C = k->C, V = 49408;
    const size_t nv = (size_t)V * C, nx = (size_t)B * T * C;
    int32_t *ids = hmalloc((size_t)B * T * 4);
    for (int bb = 0; bb < B; bb++) {
        const int len = 2 + (int)(tc_test_rand(&g_rng) % (uint64_t)(T - 2));
        for (int t = 0; t < T; t++) {
            const uint64_t r = tc_test_rand(&g_rng);
            int32_t id = 0;
            if (t == 0)
                id = V - 2;
            else if (t == len - 1)
                id = V - 1;
            else if (t < len - 1) /* a few common words (runs near piece size), some rare */
                id = (r & 3) ? (int32_t)(1 + (r >> 8) % 5) : (int32_t)(1 + (r >> 8) % (V - 3));
            ids[bb * T + t] = id;
        }
    }
    float *dx = rand_act(nx, 1.0f), *dwte0 = rand_f32(nv, 1.0f);

    int32_t *cid = balloc(g_cpu, (size_t)B * T * 4);
    if (g_cpu->upload(g_cpu, cid, ids, (size_t)B * T * 4) != TC_OK) fail_msg("upload");
    tc_act *cdx = put_act(g_cpu, dx, nx);
    float *cdwte = put_f32(g_cpu, dwte0, nv);
    g_cpu->token_embed_backward(g_cpu, cdwte, NULL, cdx, cid, B, T, C, V);
    float *r_dwte = get_f32_h(g_cpu, cdwte, nv);

    int32_t *gid = balloc(g_gpu, (size_t)B * T * 4);
    if (g_gpu->upload(g_gpu, gid, ids, (size_t)B * T * 4) != TC_OK) fail_msg("upload");
    tc_act *gdx = put_act(g_gpu, dx, nx);
    float *gdwte = put_f32(g_gpu, dwte0, nv);
    g_gpu->token_embed_backward(g_gpu, gdwte, NULL, gdx, gid, B, T, C, V);
    bsync(g_gpu, "cuda token embed backward");
    float *dwte = get_f32_h(g_gpu, gdwte, nv);
    printf("  token embed backward B=%d T=%d C=%d (%d sorted positions)\n", B, T, C, B * T);
    expect_close("dwte (+=)", dwte, r_dwte, nv, tol_f32());
    /* the padding row alone: its sum spans the most pieces */
    expect_close("dwte padding row", dwte, r_dwte, (size_t)C, tol_f32());
    if (g_gpu->upload(g_gpu, gdwte, dwte0, nv * 4) != TC_OK) fail_msg("upload");
    g_gpu->token_embed_backward(g_gpu, gdwte, NULL, gdx, gid, B, T, C, V);
    expect_same_bits("token embed dwte", dwte, get_f32_h(g_gpu, gdwte, nv), nv);
}

void test_token_embed_pieces(void **state) {
    (void)state;
    static const tok_case full[] = {
        {1, 16, 64},    /* one piece */
        {64, 77, 512},  /* 4928 positions: 77 pieces */
        {256, 77, 130}, /* 308 pieces; C not a multiple of the 128-column blocks */
    };
    static const tok_case quick[] = {{4, 77, 64}};
    RUN_CASES(run_tok, full, quick);
}

#endif
