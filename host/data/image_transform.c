/* Pillow-exact bicubic resampling and open_clip's transforms; see image_transform.h. */
#include "image_transform.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- rng ---- */

uint64_t tc_rng_next(tc_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double tc_rng_uniform(tc_rng *r) {
    return (double)(tc_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t tc_rng_below(tc_rng *r, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* rejection keeps it unbiased */
    uint64_t x;
    do
        x = tc_rng_next(r);
    while (x >= limit);
    return x % n;
}

uint64_t tc_mix64(uint64_t a, uint64_t b) {
    tc_rng r = {a ^ (b * 0xD1B54A32D192ED03ull)};
    tc_rng_next(&r);
    r.s ^= b;
    return tc_rng_next(&r);
}

tc_rng tc_rng_for(uint64_t seed, uint64_t epoch, uint64_t rank, uint64_t index) {
    tc_rng r = {tc_mix64(tc_mix64(tc_mix64(seed, epoch), rank), index)};
    return r;
}

/* ---- Pillow's resampler ---- */

#define PRECISION_BITS (32 - 8 - 2)

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* one axis: for output positions [o0, o0+n) of a resize in_size -> out_size,
 * bounds[2*i] = first input index, bounds[2*i+1] = tap count, kk[i*ksize..]
 * the fixed-point taps. precompute_coeffs + normalize_coeffs_8bpc. */
typedef struct {
    int ksize;
    int *bounds;
    int32_t *kk;
} axis_coeffs;

static void axis_free(axis_coeffs *a) {
    free(a->bounds);
    free(a->kk);
    a->bounds = NULL;
    a->kk = NULL;
}

static tc_status axis_init(axis_coeffs *a, int in_size, int out_size, int o0, int n) {
    double scale = (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    a->ksize = ksize;
    a->bounds = malloc(sizeof(int) * 2 * (size_t)n);
    a->kk = malloc(sizeof(int32_t) * (size_t)ksize * (size_t)n);
    double *w = malloc(sizeof(double) * (size_t)ksize);
    if (!a->bounds || !a->kk || !w) {
        free(w);
        axis_free(a);
        return tc_fail(TC_ERR_OOM, "resize: out of memory");
    }
    for (int i = 0; i < n; i++) {
        int xx = o0 + i;
        double center = 0.0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize) xmax = ksize; /* cannot happen; keeps indexing in range */
        int x;
        for (x = 0; x < xmax; x++) {
            double v = bicubic_filter((x + xmin - center + 0.5) * ss);
            w[x] = v;
            ww += v;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) w[x] /= ww;
        for (; x < ksize; x++)
            w[x] = 0;
        int32_t *k = a->kk + (size_t)i * ksize;
        for (x = 0; x < ksize; x++)
            k[x] = w[x] < 0 ? (int32_t)(-0.5 + w[x] * (1 << PRECISION_BITS))
                            : (int32_t)(0.5 + w[x] * (1 << PRECISION_BITS));
        a->bounds[2 * i] = xmin;
        a->bounds[2 * i + 1] = xmax < 0 ? 0 : xmax;
    }
    free(w);
    return TC_OK;
}

/* gcc vectorises these loops only from -O3; clang does at -O2 */
#if defined(__GNUC__) && !defined(__clang__)
#define TC_VECTORIZE __attribute__((optimize("O3")))
#else
#define TC_VECTORIZE
#endif

/* one output row of the vertical pass: taps over rows of src (stride n) */
static inline __attribute__((always_inline)) void
vertical_row_body(const uint8_t *restrict src, size_t n, const int32_t *restrict k, int taps,
                  int32_t *restrict acc, uint8_t *restrict dst) {
    for (size_t c = 0; c < n; c++)
        acc[c] = 1 << (PRECISION_BITS - 1);
    for (int y = 0; y < taps; y++) {
        const uint8_t *restrict row = src + (size_t)y * n;
        int32_t ky = k[y];
        for (size_t c = 0; c < n; c++)
            acc[c] += row[c] * ky;
    }
    for (size_t c = 0; c < n; c++) {
        int32_t v = acc[c] >> PRECISION_BITS;
        dst[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

TC_VECTORIZE static void vertical_row_generic(const uint8_t *restrict src, size_t n,
                                              const int32_t *restrict k, int taps,
                                              int32_t *restrict acc, uint8_t *restrict dst) {
    vertical_row_body(src, n, k, taps, acc, dst);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* 32-bit lane multiplies need SSE4.1/AVX2; the x86-64 baseline (SSE2) has
 * none, so the AVX2 build of the same loop is picked at run time */
TC_VECTORIZE __attribute__((target("avx2"))) static void
vertical_row_avx2(const uint8_t *restrict src, size_t n, const int32_t *restrict k, int taps,
                  int32_t *restrict acc, uint8_t *restrict dst) {
    vertical_row_body(src, n, k, taps, acc, dst);
}

static void vertical_row(const uint8_t *src, size_t n, const int32_t *k, int taps, int32_t *acc,
                         uint8_t *dst) {
    /* reads a flag the runtime filled in at start-up: cheap enough per row */
    if (__builtin_cpu_supports("avx2"))
        vertical_row_avx2(src, n, k, taps, acc, dst);
    else
        vertical_row_generic(src, n, k, taps, acc, dst);
}
#else
#define vertical_row vertical_row_generic
#endif

/* resize the box (bx, by, bw, bh) of `in` to full_w x full_h and write the
 * window [x0, x0+ow) x [y0, y0+oh) of the result to out (oh, ow, 3). each
 * output pixel depends only on its own taps, so computing a window gives
 * the same bytes as resizing everything and cropping afterwards. */
static tc_status resample_window(const tc_image *in, int bx, int by, int bw, int bh, int full_w,
                                 int full_h, int x0, int y0, int ow, int oh, uint8_t *out) {
    if (bw <= 0 || bh <= 0 || bx < 0 || by < 0 || bx + bw > in->w || by + bh > in->h ||
        full_w <= 0 || full_h <= 0 || x0 < 0 || y0 < 0 || x0 + ow > full_w || y0 + oh > full_h)
        return tc_fail(TC_ERR_ARG, "resize: box or window out of range");
    const size_t stride = (size_t)in->w * 3;
    int need_h = full_w != bw, need_v = full_h != bh;
    axis_coeffs ch = {0, NULL, NULL}, cv = {0, NULL, NULL};
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    uint8_t *colT = NULL, *tmpT = NULL;
    tc_status st = TC_OK;
    if (need_h && (st = axis_init(&ch, bw, full_w, x0, ow)) != TC_OK) goto done;
    if (need_v && (st = axis_init(&cv, bh, full_h, y0, oh)) != TC_OK) goto done;
    /* rows of the box that the vertical pass reads */
    int r0, r1;
    if (need_v) {
        r0 = cv.bounds[0];
        r1 = cv.bounds[2 * (oh - 1)] + cv.bounds[2 * (oh - 1) + 1];
        for (int i = 1; i < oh; i++)
            if (cv.bounds[2 * i] < r0) r0 = cv.bounds[2 * i];
    } else {
        r0 = y0;
        r1 = y0 + oh;
    }
    int nrows = r1 - r0;
    if (nrows <= 0) nrows = 1;
    tmp = malloc((size_t)nrows * ow * 3);
    acc = malloc(sizeof(int32_t) * (size_t)ow * 3);
    if (!tmp || !acc) {
        st = tc_fail(TC_ERR_OOM, "resize: out of memory");
        goto done;
    }
    /* horizontal pass: box rows r0..r1 -> tmp (nrows, ow, 3). done on the
     * transposed box so that it runs as vectorised row sums: colT (bw,
     * nrows, 3) -> tmpT (ow, nrows, 3) -> tmp. the integer sums are the same
     * as Pillow's per-pixel loop. */
    if (!need_h) {
        for (int y = 0; y < r1 - r0; y++)
            memcpy(tmp + (size_t)y * ow * 3,
                   in->px + (size_t)(by + r0 + y) * stride + (size_t)(bx + x0) * 3, (size_t)ow * 3);
    } else {
        size_t col = (size_t)nrows * 3;
        /* only the columns the taps read */
        int c0 = ch.bounds[0], c1 = ch.bounds[2 * (ow - 1)] + ch.bounds[2 * (ow - 1) + 1];
        if (c1 < c0 + 1) c1 = c0 + 1;
        colT = malloc(col * (size_t)(c1 - c0));
        tmpT = malloc(col * (size_t)ow);
        int32_t *hacc =
            realloc(acc, sizeof(int32_t) * (col > (size_t)ow * 3 ? col : (size_t)ow * 3));
        if (hacc) acc = hacc;
        if (!colT || !tmpT || !hacc) {
            st = tc_fail(TC_ERR_OOM, "resize: out of memory");
            goto done;
        }
        for (int y = 0; y < nrows; y++) {
            const uint8_t *src = in->px + (size_t)(by + r0 + y) * stride + (size_t)(bx + c0) * 3;
            uint8_t *d = colT + (size_t)y * 3;
            for (int x = 0; x < c1 - c0; x++, src += 3, d += col) {
                d[0] = src[0];
                d[1] = src[1];
                d[2] = src[2];
            }
        }
        for (int xx = 0; xx < ow; xx++)
            vertical_row(colT + (size_t)(ch.bounds[2 * xx] - c0) * col, col,
                         ch.kk + (size_t)xx * ch.ksize, ch.bounds[2 * xx + 1], acc,
                         tmpT + (size_t)xx * col);
        for (int xx = 0; xx < ow; xx++) {
            const uint8_t *src = tmpT + (size_t)xx * col;
            uint8_t *d = tmp + (size_t)xx * 3;
            for (int y = 0; y < nrows; y++, src += 3, d += (size_t)ow * 3) {
                d[0] = src[0];
                d[1] = src[1];
                d[2] = src[2];
            }
        }
    }
    /* vertical pass: tmp -> out */
    const size_t tstride = (size_t)ow * 3;
    for (int yy = 0; yy < oh; yy++) {
        uint8_t *dst = out + (size_t)yy * tstride;
        if (!need_v) {
            memcpy(dst, tmp + (size_t)(y0 + yy - r0) * tstride, tstride);
            continue;
        }
        int ymin = cv.bounds[2 * yy] - r0, yn = cv.bounds[2 * yy + 1];
        const int32_t *k = cv.kk + (size_t)yy * cv.ksize;
        /* row-wise accumulation (vectorises); same integer sums as Pillow's
         * per-pixel loop since integer addition is exact */
        vertical_row(tmp + (size_t)ymin * tstride, tstride, k, yn, acc, dst);
    }
done:
    free(tmp);
    free(acc);
    free(colT);
    free(tmpT);
    axis_free(&ch);
    axis_free(&cv);
    return st;
}

tc_status tc_resized_crop_u8(const tc_image *in, tc_crop box, int out_w, int out_h, uint8_t *out) {
    return resample_window(in, box.left, box.top, box.width, box.height, out_w, out_h, 0, 0, out_w,
                           out_h, out);
}

void tc_resize_shortest_dims(int w, int h, int size, int *rw, int *rh) {
    /* torchvision _compute_resized_output_size: int(size * long / short) */
    if (w <= h) {
        *rw = size;
        *rh = (int)(((long long)size * h) / w);
    } else {
        *rh = size;
        *rw = (int)(((long long)size * w) / h);
    }
}

/* int(round(d / 2.0)) with Python's round-half-even */
static int half_even(int d) {
    int q = d / 2;
    if (d % 2 == 0) return q;
    return (q % 2 == 0) ? q : q + 1;
}

tc_status tc_eval_resize_crop_u8(const tc_image *in, int size, uint8_t *out) {
    if (size <= 0 || in->w <= 0 || in->h <= 0)
        return tc_fail(TC_ERR_ARG, "eval transform: bad size %d for %dx%d image", size, in->w,
                       in->h);
    int rw, rh;
    tc_resize_shortest_dims(in->w, in->h, size, &rw, &rh);
    if (rw < size || rh < size)
        return tc_fail(TC_ERR_ARG, "eval transform: resized %dx%d smaller than crop %d", rw, rh,
                       size);
    int top = half_even(rh - size), left = half_even(rw - size);
    return resample_window(in, 0, 0, in->w, in->h, rw, rh, left, top, size, size, out);
}

tc_crop tc_rrc_params(int w, int h, double scale_min, double scale_max, double ratio_min,
                      double ratio_max, tc_rng *rng) {
    tc_crop c;
    double area = (double)w * h;
    double lr0 = log(ratio_min), lr1 = log(ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (scale_min + (scale_max - scale_min) * tc_rng_uniform(rng));
        double aspect = exp(lr0 + (lr1 - lr0) * tc_rng_uniform(rng));
        int cw = (int)nearbyint(sqrt(target * aspect));
        int chh = (int)nearbyint(sqrt(target / aspect));
        if (cw > 0 && cw <= w && chh > 0 && chh <= h) {
            c.top = (int)tc_rng_below(rng, (uint64_t)(h - chh + 1));
            c.left = (int)tc_rng_below(rng, (uint64_t)(w - cw + 1));
            c.height = chh;
            c.width = cw;
            return c;
        }
    }
    /* central-crop fallback */
    double in_ratio = (double)w / (double)h;
    int cw, chh;
    if (in_ratio < ratio_min) {
        cw = w;
        chh = (int)nearbyint(cw / ratio_min);
    } else if (in_ratio > ratio_max) {
        chh = h;
        cw = (int)nearbyint(chh * ratio_max);
    } else {
        cw = w;
        chh = h;
    }
    if (cw < 1) cw = 1;
    if (chh < 1) chh = 1;
    if (cw > w) cw = w;
    if (chh > h) chh = h;
    c.top = (h - chh) / 2;
    c.left = (w - cw) / 2;
    c.height = chh;
    c.width = cw;
    return c;
}

tc_transform_cfg tc_transform_default(int size, int train) {
    tc_transform_cfg c;
    c.size = size;
    c.train = train;
    c.scale_min = 0.9;
    c.scale_max = 1.0;
    c.ratio_min = 3.0 / 4.0;
    c.ratio_max = 4.0 / 3.0;
    c.mean[0] = TC_OPENAI_MEAN_R;
    c.mean[1] = TC_OPENAI_MEAN_G;
    c.mean[2] = TC_OPENAI_MEAN_B;
    c.std[0] = TC_OPENAI_STD_R;
    c.std[1] = TC_OPENAI_STD_G;
    c.std[2] = TC_OPENAI_STD_B;
    return c;
}

/* float32 arithmetic in torch's order: x/255 (ToTensor), then (x-mean)/std */
static void make_lut(const tc_transform_cfg *cfg, float lut[3][256]) {
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            volatile float x = (float)v / 255.0f;
            volatile float y = x - cfg->mean[c];
            lut[c][v] = y / cfg->std[c];
        }
}

void tc_normalize_planar(const tc_transform_cfg *cfg, const uint8_t *hwc, int w, int h,
                         float *chw) {
    float lut[3][256];
    make_lut(cfg, lut);
    size_t n = (size_t)w * h;
    float *r = chw, *g = chw + n, *b = chw + 2 * n;
    for (size_t i = 0; i < n; i++) {
        r[i] = lut[0][hwc[3 * i]];
        g[i] = lut[1][hwc[3 * i + 1]];
        b[i] = lut[2][hwc[3 * i + 2]];
    }
}

uint16_t tc_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

void tc_normalize_planar_bf16(const tc_transform_cfg *cfg, const uint8_t *hwc, int w, int h,
                              uint16_t *chw) {
    float lut[3][256];
    uint16_t lb[3][256];
    make_lut(cfg, lut);
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lb[c][v] = tc_f32_to_bf16(lut[c][v]);
    size_t n = (size_t)w * h;
    uint16_t *r = chw, *g = chw + n, *b = chw + 2 * n;
    for (size_t i = 0; i < n; i++) {
        r[i] = lb[0][hwc[3 * i]];
        g[i] = lb[1][hwc[3 * i + 1]];
        b[i] = lb[2][hwc[3 * i + 2]];
    }
}

tc_status tc_transform_apply(const tc_transform_cfg *cfg, const tc_image *img, tc_rng *rng,
                             uint8_t *scratch, float *out_f32, uint16_t *out_bf16) {
    int S = cfg->size;
    if (S <= 0 || S > 8192) return tc_fail(TC_ERR_ARG, "transform: bad image size %d", S);
    if (!img->px || img->w <= 0 || img->h <= 0)
        return tc_fail(TC_ERR_ARG, "transform: empty image");
    uint8_t *buf = scratch;
    if (!buf && !(buf = malloc((size_t)S * S * 3)))
        return tc_fail(TC_ERR_OOM, "transform: out of memory");
    tc_status st;
    if (cfg->train) {
        tc_crop c = tc_rrc_params(img->w, img->h, cfg->scale_min, cfg->scale_max, cfg->ratio_min,
                                  cfg->ratio_max, rng);
        st = tc_resized_crop_u8(img, c, S, S, buf);
    } else {
        st = tc_eval_resize_crop_u8(img, S, buf);
    }
    if (st == TC_OK) {
        if (out_f32) tc_normalize_planar(cfg, buf, S, S, out_f32);
        if (out_bf16) tc_normalize_planar_bf16(cfg, buf, S, S, out_bf16);
    }
    if (buf != scratch) free(buf);
    return st;
}
