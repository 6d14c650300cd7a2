/* the launch arithmetic of the CUDA backend (cuda/launch_math.h) and its
 * choice of cuDNN algorithm (cuda/conv_pick.h), checked on the host: it
 * needs neither nvcc, cuDNN nor a GPU, so it runs in every build.
 * grids must stay inside the hardware limits (gridDim.y <= 65535), the
 * partials of the two-pass column reductions must fit the scratch and cover
 * every row, and alignment decisions must see the pruned views (element
 * offsets that leave a pointer 2- or 4-byte aligned) for what they are.
 *
 * two pieces of kernel logic are plain C shared with the kernels, and run
 * here the way the kernels run them: the one-pass row statistics of the
 * layernorm (cuda/welford.h, with the warp's lane partition and merge tree)
 * on hostile rows, and the partition of the token embedding's sorted
 * scatter (cuda/run_pieces.h) on sorted ids with long runs. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "conv_pick.h"
#include "launch_math.h"
#include "run_pieces.h"
#include "seg_slots.h"
#include "welford.h"

#define SCRATCH ((size_t)64 << 20) /* TC_CUDA_SCRATCH_BYTES */

static void test_grid(void **state) {
    (void)state;
    assert_int_equal(tc_cuda_grid(0, 256), 1);
    assert_int_equal(tc_cuda_grid(1, 256), 1);
    assert_int_equal(tc_cuda_grid(256, 256), 1);
    assert_int_equal(tc_cuda_grid(257, 256), 2);
    assert_int_equal(tc_cuda_grid((size_t)154 * 1234 + 3, 256), (154 * 1234 + 3 + 255) / 256);
    /* grid-stride loops cap the grid; the loop covers the rest */
    assert_int_equal(tc_cuda_grid((size_t)1 << 40, 256), TC_CUDA_MAX_STRIDE_GRID);
}

/* the partition of every shape a model produces, and some hostile ones */
static void test_chunk_rows(void **state) {
    (void)state;
    static const int Ns[] = {0,   1,   31,    32,    33,      50,      77,      197,
                             257, 394, 25216, 19712, 1 << 20, 5000000, 1 << 28, INT_MAX / 2};
    static const int Cs[] = {1, 2, 7, 33, 64, 512, 700, 768, 1234, 3072, 49408};
    for (size_t i = 0; i < sizeof Ns / sizeof *Ns; i++)
        for (size_t j = 0; j < sizeof Cs / sizeof *Cs; j++)
            for (int arrays = 1; arrays <= 2; arrays++) {
                const int N = Ns[i], C = Cs[j];
                const int rpc = tc_cuda_chunk_rows(SCRATCH, N, C, arrays);
                if (rpc <= 0) fail_msg("N=%d C=%d arrays=%d: no partition", N, C, arrays);
                const int chunks = tc_cuda_chunks(N, rpc);
                if (rpc % 32 != 0 || (rpc & (rpc - 1)) != 0)
                    fail_msg("N=%d C=%d: %d rows per chunk is not 32 * 2^k", N, C, rpc);
                if (chunks > TC_CUDA_MAX_GRID_Y)
                    fail_msg("N=%d C=%d arrays=%d: %d chunks over gridDim.y", N, C, arrays, chunks);
                if ((size_t)chunks * (size_t)C * (size_t)arrays * sizeof(float) > SCRATCH)
                    fail_msg("N=%d C=%d arrays=%d: partials overflow the scratch", N, C, arrays);
                if ((int64_t)chunks * rpc < N || (chunks > 0 && (int64_t)(chunks - 1) * rpc >= N))
                    fail_msg("N=%d C=%d: %d chunks of %d rows do not tile the rows", N, C, chunks,
                             rpc);
            }
    /* the CLIP shapes keep the finest partition (32 rows) */
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, 25216, 768, 2), 32);
    assert_int_equal(tc_cuda_chunks(25216, 32), 788);
    /* narrow columns with many rows: the grid bound, not the scratch, decides */
    assert_true(tc_cuda_chunks(5000000, tc_cuda_chunk_rows(SCRATCH, 5000000, 1, 1)) <= 65535);
    /* too wide for one chunk: refused, never a zero-sized partition */
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, 10, (int)(SCRATCH / 4) + 1, 1), -1);
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, 10, 0, 1), -1);
    assert_int_equal(tc_cuda_chunk_rows(SCRATCH, -1, 10, 1), -1);
}

static void test_alignment(void **state) {
    (void)state;
    const uintptr_t base = 0x7f0000000000u; /* cudaMalloc: 256-byte aligned */
    assert_int_equal(tc_cuda_alignment(base), 256);
    assert_int_equal(tc_cuda_alignment(base + 2), 2);
    assert_int_equal(tc_cuda_alignment(base + 4), 4);
    assert_int_equal(tc_cuda_alignment(base + 6), 2);
    assert_int_equal(tc_cuda_alignment(base + 16), 16);
    assert_int_equal(tc_cuda_alignment(base + 48), 16);
    assert_int_equal(tc_cuda_alignment(base + 1), 1);
    /* a pruned bias view at element offset k: bf16 (2 bytes) and fp32 */
    for (uintptr_t k = 1; k < 8; k++)
        assert_true(tc_cuda_alignment(base + 2 * k) < TC_CUDA_BIAS_ALIGNMENT);
    for (uintptr_t k = 1; k < 4; k++)
        assert_true(tc_cuda_alignment(base + 4 * k) < TC_CUDA_BIAS_ALIGNMENT);
    assert_true(tc_cuda_alignment(base + 4 * 700) >= TC_CUDA_BIAS_ALIGNMENT);
}

static void test_radix_bits(void **state) {
    (void)state;
    assert_int_equal(tc_cuda_radix_end_bit(1), 1);
    assert_int_equal(tc_cuda_radix_end_bit(2), 1);
    assert_int_equal(tc_cuda_radix_end_bit(3), 2);
    assert_int_equal(tc_cuda_radix_end_bit(49408), 16); /* CLIP's vocabulary */
    assert_int_equal(tc_cuda_radix_end_bit(65536), 16);
    assert_int_equal(tc_cuda_radix_end_bit(65537), 17);
    assert_int_equal(tc_cuda_radix_end_bit(INT_MAX), 31);
    /* every id below V fits the bits */
    for (int V = 1; V < 5000; V += 37) {
        const int b = tc_cuda_radix_end_bit(V);
        assert_true(((int64_t)V - 1) < ((int64_t)1 << b));
    }
}

/* the 16-byte paths: taken only when every operand is aligned and, for the
 * row kernels, a row is a whole number of vectors */
static void test_vector_paths(void **state) {
    (void)state;
    const uintptr_t base = 0x7f0000000000u;
    assert_int_equal(tc_cuda_vec_elems(4), 4);
    assert_int_equal(tc_cuda_vec_elems(2), 8);
    const void *aligned[3] = {(void *)base, (void *)(base + 256), NULL};
    assert_true(tc_cuda_all_aligned16(aligned, 3));
    assert_true(tc_cuda_all_aligned16(aligned, 0));
    for (uintptr_t off = 1; off < 16; off++) {
        const void *one_off[3] = {(void *)base, (void *)(base + off), NULL};
        if (tc_cuda_all_aligned16(one_off, 3))
            fail_msg("offset %d bytes taken as aligned", (int)off);
    }
    /* widths: fp32 rows need C % 4 == 0, bf16 rows C % 8 == 0 */
    static const int widths[] = {1, 3, 4, 8, 33, 100, 512, 700, 768, 770, 1024, 1280};
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++) {
        const int C = widths[i];
        assert_int_equal(tc_cuda_rows_vectorizable(C, 4, aligned, 3), C % 4 == 0);
        assert_int_equal(tc_cuda_rows_vectorizable(C, 2, aligned, 3), C % 8 == 0);
    }
    /* a pruned view one element in: scalar, whatever the width */
    const void *view4[2] = {(void *)base, (void *)(base + 4)};
    const void *view2[2] = {(void *)base, (void *)(base + 2 * 3)};
    assert_false(tc_cuda_rows_vectorizable(768, 4, view4, 2));
    assert_false(tc_cuda_rows_vectorizable(768, 2, view2, 2));
    /* a view a whole number of vectors in keeps the vector path */
    const void *view16[2] = {(void *)base, (void *)(base + 4 * 768)};
    assert_true(tc_cuda_rows_vectorizable(768, 4, view16, 2));
    assert_false(tc_cuda_rows_vectorizable(0, 4, aligned, 3));
    /* column blocks: a multiple of 32 threads, at most 256, covering the units */
    static const int units[] = {1, 31, 32, 33, 96, 192, 255, 256, 257, 100000};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        const int t = tc_cuda_col_threads(units[i]);
        assert_true(t % 32 == 0 && t >= 32 && t <= 256);
        assert_true(t >= (units[i] < 256 ? units[i] : 256));
    }
    assert_int_equal(tc_cuda_col_threads(96), 96);
    assert_int_equal(tc_cuda_col_threads(0), 32);
}

/* ---- the layernorm's row statistics, as a warp computes them ---- */

/* lane L folds the V-element vectors at L V, L V + 32 V, ...; then lane i
 * merges lane i + off for off = 16, 8, 4, 2, 1 (a lane past 31 reads its own
 * value, as __shfl_down_sync gives it) and lane 0 holds the row's result */
static void warp_stats(const float *x, int C, int V, double *mean, double *var) {
    float n[32], m[32], q[32];
    for (int lane = 0; lane < 32; lane++) {
        n[lane] = m[lane] = q[lane] = 0.0f;
        for (int i = lane * V; i < C; i += 32 * V)
            tc_welford_add(&n[lane], &m[lane], &q[lane], x + i, V);
    }
    for (int off = 16; off > 0; off >>= 1) {
        float n2[32], m2[32], q2[32];
        for (int lane = 0; lane < 32; lane++) {
            const int src = lane + off < 32 ? lane + off : lane;
            n2[lane] = n[lane];
            m2[lane] = m[lane];
            q2[lane] = q[lane];
            tc_welford_merge(&n2[lane], &m2[lane], &q2[lane], n[src], m[src], q[src]);
        }
        memcpy(n, n2, sizeof n);
        memcpy(m, m2, sizeof m);
        memcpy(q, q2, sizeof q);
    }
    if (n[0] != (float)C) fail_msg("C=%d V=%d: the lanes counted %g elements", C, V, n[0]);
    *mean = m[0];
    *var = q[0] / C;
}

/* rows of the residual stream's kind: a large common offset, a few outlier
 * columns, small noise. the fp32 statistics must match double precision to
 * 4 ulps of the largest element (mean) and 1e-4 relative (variance), where
 * fp32 sum / sum of squares loses the variance */
static void test_welford_rows(void **state) {
    (void)state;
    uint64_t rng = 0x77e11f0cdULL;
    static const int widths[] = {8, 33, 100, 512, 768, 770, 1024, 1280};
    static const float offsets[] = {0.0f, 3.0f, 100.0f, 3000.0f};
    static const int vecs[] = {1, 4, 8};
    int naive_failed = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
        for (size_t oi = 0; oi < sizeof offsets / sizeof *offsets; oi++)
            for (size_t vi = 0; vi < sizeof vecs / sizeof *vecs; vi++) {
                const int C = widths[wi], V = vecs[vi];
                if (C % V != 0) continue; /* the vector path needs whole vectors */
                float *x = malloc((size_t)C * sizeof(float));
                assert_non_null(x);
                for (int c = 0; c < C; c++) {
                    const double u = (double)(tc_test_rand(&rng) >> 11) / 9007199254740992.0;
                    x[c] = offsets[oi] + (float)(u - 0.5);
                }
                x[C / 3] += 40.0f; /* outlier dimensions */
                x[C - 1] -= 25.0f;
                double mu = 0.0, var = 0.0;
                for (int c = 0; c < C; c++)
                    mu += x[c];
                mu /= C;
                for (int c = 0; c < C; c++)
                    var += (x[c] - mu) * (x[c] - mu);
                var /= C;
                double gm, gv;
                warp_stats(x, C, V, &gm, &gv);
                double scale = 0.0;
                for (int c = 0; c < C; c++)
                    scale = fmax(scale, fabs(x[c]));
                /* 4 ulps of the largest element */
                const double mean_tol = 4.0 * scale / 8388608.0;
                if (fabs(gm - mu) > mean_tol)
                    fail_msg("C=%d V=%d offset %g: mean %.9g, double %.9g", C, V, offsets[oi], gm,
                             mu);
                if (fabs(gv - var) > 1e-4 * var)
                    fail_msg("C=%d V=%d offset %g: variance %.9g, double %.9g", C, V, offsets[oi],
                             gv, var);
                /* the same row through fp32 sum and sum of squares */
                float s = 0.0f, s2 = 0.0f;
                for (int c = 0; c < C; c++) {
                    s += x[c];
                    s2 += x[c] * x[c];
                }
                const double nv = (double)(s2 / C - (s / C) * (s / C));
                if (fabs(nv - var) > 1e-4 * var) naive_failed++;
                free(x);
            }
    /* the hostile rows are hostile: the formula the kernels avoid fails on them */
    assert_true(naive_failed > 0);
}

/* ---- the token embedding's sorted scatter, as the kernels run it ---- */

/* the two kernels on one column: value[q] is the dx entry of sorted position
 * q. partial slots start as NaN, so a slot read before it is written fails;
 * writes counts the writes of each dwte row */
static void scatter(const int32_t *keys, const float *value, int n, int P, float *dwte, int *writes,
                    float *partial) {
    const int pieces = tc_run_pieces(n, P);
    for (int i = 0; i < 2 * pieces; i++)
        partial[i] = NAN;
    for (int k = 0; k < pieces; k++) { /* wte_pieces_kernel, block k */
        const int p0 = k * P, p1 = n - p0 < P ? n : p0 + P;
        for (int s = p0; s < p1;) {
            const int32_t id = keys[s];
            float acc = 0.0f;
            int e = s;
            for (; e < p1 && keys[e] == id; e++)
                acc += value[e];
            const int slot = tc_run_segment_slot(keys, n, p0, s, e);
            if (slot < 0) {
                dwte[id] += acc;
                writes[id]++;
            } else {
                partial[2 * k + slot] = acc;
            }
            s = e;
        }
    }
    if (pieces == 1) return;
    for (int k = 0; k < pieces; k++) { /* wte_spans_kernel, block k */
        int32_t id;
        int slot, last;
        if (!tc_run_span(keys, n, P, pieces, k, &id, &slot, &last)) continue;
        if (last <= k || last >= pieces) fail_msg("piece %d: span ends at piece %d", k, last);
        float acc = partial[2 * k + slot];
        for (int j = k + 1; j <= last; j++)
            acc += partial[2 * j];
        dwte[id] += acc;
        writes[id]++;
    }
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* sorted ids of every shape of run against the plain per-id sums (small
 * integers, so every order of summation is exact) */
static void test_run_pieces(void **state) {
    (void)state;
    uint64_t rng = 0x5c47e2ULL;
    enum { V = 300 };
    static const int sizes[] = {1, 2, 63, 64, 65, 127, 128, 129, 640, 1000, 4928};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (int pattern = 0; pattern < 5; pattern++) {
            const int n = sizes[si];
            int32_t *keys = malloc((size_t)n * sizeof *keys);
            float *value = malloc((size_t)n * sizeof *value);
            float *partial = malloc((size_t)(2 * n + 2) * sizeof *partial);
            assert_true(keys && value && partial);
            for (int q = 0; q < n; q++) {
                const uint64_t r = tc_test_rand(&rng);
                switch (pattern) {
                case 0: keys[q] = 0; break;                                     /* one run */
                case 1: keys[q] = q % V; break;                                 /* short runs */
                case 2: keys[q] = (r & 7) ? 0 : (int32_t)((r >> 8) % V); break; /* padding */
                case 3: keys[q] = (q / 64) % V; break; /* piece-sized runs */
                default: keys[q] = (r & 1) ? 5 : (int32_t)((r >> 8) % 3) * 7; break;
                }
                value[q] = (float)((int)((r >> 20) % 17) - 8);
            }
            qsort(keys, (size_t)n, sizeof *keys, cmp_i32);
            float ref[V] = {0}, dwte[V] = {0};
            int present[V] = {0}, writes[V] = {0};
            for (int q = 0; q < n; q++) {
                ref[keys[q]] += value[q];
                present[keys[q]] = 1;
            }
            for (int P = TC_RUN_PIECE_MIN; P <= 256; P *= 2) {
                memset(dwte, 0, sizeof dwte);
                memset(writes, 0, sizeof writes);
                scatter(keys, value, n, P, dwte, writes, partial);
                for (int id = 0; id < V; id++) {
                    if (writes[id] != present[id])
                        fail_msg("n=%d pattern %d P=%d: id %d written %d times", n, pattern, P, id,
                                 writes[id]);
                    if (dwte[id] != ref[id])
                        fail_msg("n=%d pattern %d P=%d: id %d sum %g, expected %g", n, pattern, P,
                                 id, dwte[id], ref[id]);
                }
            }
            free(keys);
            free(value);
            free(partial);
        }
}

/* the piece size: a power of two >= 64 whose partials fit, or one piece */
static void test_run_piece_size(void **state) {
    (void)state;
    static const int ns[] = {1, 64, 65, 4928, 19712, 78848, 1 << 20, (1 << 30) - 1};
    static const int Cs[] = {1, 512, 768, 1280};
    static const size_t avail[] = {0, 4096, (size_t)1 << 20, (size_t)60 << 20};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (size_t j = 0; j < sizeof Cs / sizeof *Cs; j++)
            for (size_t a = 0; a < sizeof avail / sizeof *avail; a++) {
                const int n = ns[i], C = Cs[j];
                const int P = tc_run_piece_size(avail[a], n, C);
                const int pieces = tc_run_pieces(n, P);
                if (P < TC_RUN_PIECE_MIN) fail_msg("n=%d C=%d: P=%d", n, C, P);
                if (pieces < 1 || (int64_t)pieces * P < n)
                    fail_msg("n=%d C=%d: %d pieces of %d do not cover", n, C, pieces, P);
                if (pieces > 1 && (size_t)pieces * 2 * (size_t)C * sizeof(float) > avail[a])
                    fail_msg("n=%d C=%d: partials overflow %zu bytes", n, C, avail[a]);
                if (pieces > 1 && (P & (P - 1)) != 0) fail_msg("n=%d: P=%d", n, P);
                if (pieces > 1 && (int64_t)pieces * P >= (int64_t)1 << 31)
                    fail_msg("n=%d: positions overflow int", n);
            }
    /* a CLIP text batch (256 x 77, width 512) gets the finest pieces */
    assert_int_equal(tc_run_piece_size((size_t)60 << 20, 256 * 77, 512), 64);
    assert_int_equal(tc_run_pieces(256 * 77, 64), 308);
    /* no room for partials: one piece */
    assert_int_equal(tc_run_pieces(19712, tc_run_piece_size(0, 19712, 512)), 1);
}

/* the cuDNN candidate filter on made-up lists in heuristics order: in fp32
 * mode only CUDNN_FMA_MATH candidates (the default math type lets cuDNN use
 * TF32 on sm_80+); nondeterministic, failed or too greedy ones never */
static void test_conv_pick(void **state) {
    (void)state;
    const size_t cap = (size_t)256 << 20;
    /*                        ran det fma workspace */
    const tc_conv_candidate list[] = {
        {1, 1, 0, 0},       /* 0: tensor-op or default math, the heuristics' favourite */
        {1, 0, 1, 0},       /* 1: FMA but atomics (not deterministic) */
        {0, 1, 1, 0},       /* 2: FMA, did not run */
        {1, 1, 1, cap + 1}, /* 3: FMA, workspace over the cap */
        {1, 1, 1, 4096},    /* 4: FMA, deterministic, small: the fp32 choice */
        {1, 1, 0, 4096},    /* 5 */
    };
    const int n = (int)(sizeof list / sizeof list[0]);
    assert_int_equal(tc_conv_pick(list, n, 1, cap), 4);
    assert_int_equal(tc_conv_pick(list, n, 0, cap), 0); /* mixed mode: tensor cores welcome */
    /* mixed mode skips the unusable ones too, then takes FMA as well */
    assert_int_equal(tc_conv_pick(list + 1, n - 1, 0, cap), 3); /* list[4] */
    /* the cap decides for the greedy FMA candidate */
    assert_int_equal(tc_conv_pick(list + 3, 1, 1, cap + 1), 0);
    assert_int_equal(tc_conv_pick(list + 3, 1, 1, cap), -1);
    /* no FMA candidate at all: fp32 mode refuses rather than take TF32 */
    const tc_conv_candidate tensor_only[] = {{1, 1, 0, 0}, {1, 1, 0, 1024}};
    assert_int_equal(tc_conv_pick(tensor_only, 2, 1, cap), -1);
    assert_int_equal(tc_conv_pick(tensor_only, 2, 0, cap), 0);
    assert_int_equal(tc_conv_pick(list, 0, 0, cap), -1);
}

/* the segment-table slots: a ResNet trainer alternates two lists (the
 * gradient norm's, AdamW's); both stay kept, so after the first step every
 * call hits (no upload, no sync); a third list replaces the one used least
 * recently; lists are compared by value, field by field */
typedef struct {
    tc_seg_key key[TC_CUDA_SEG_SLOTS];
    unsigned long long clock;
    int uploads;
} seg_model;

/* what the backend's upload_segments does with the keys */
static int seg_use(seg_model *m, const tc_param_segment *segs, int nseg) {
    const tc_seg_key *keys[TC_CUDA_SEG_SLOTS];
    for (int i = 0; i < TC_CUDA_SEG_SLOTS; i++)
        keys[i] = &m->key[i];
    int hit = 0;
    const int slot = tc_seg_slot_pick(keys, TC_CUDA_SEG_SLOTS, segs, nseg, &hit);
    tc_seg_key *k = &m->key[slot];
    k->used = ++m->clock;
    if (!hit) {
        free(k->host);
        k->host = malloc((size_t)nseg * sizeof *segs);
        assert_non_null(k->host);
        memcpy(k->host, segs, (size_t)nseg * sizeof *segs);
        k->count = nseg;
        m->uploads++;
    }
    return slot;
}

static void test_seg_slots(void **state) {
    (void)state;
    seg_model m;
    memset(&m, 0, sizeof m);
    tc_param_segment norm[3], adamw[4], other[4];
    memset(norm, 0xAB, sizeof norm); /* padding bytes differ from the copies' */
    for (int i = 0; i < 3; i++)
        norm[i] = (tc_param_segment){.offset = (size_t)i * 256, .count = 50, .weight_decay = 0.1f};
    for (int i = 0; i < 4; i++)
        adamw[i] =
            (tc_param_segment){.offset = (size_t)i * 256, .count = 100, .weight_decay = 0.1f};
    memcpy(other, adamw, sizeof adamw);
    other[3].weight_decay = 0.0f; /* one field differs */
    /* ten steps of a ResNet trainer: two uploads, then hits only */
    int s_norm = -1, s_adamw = -1;
    for (int step = 0; step < 10; step++) {
        const int a = seg_use(&m, norm, 3), b = seg_use(&m, adamw, 4);
        if (step == 0) {
            s_norm = a;
            s_adamw = b;
            assert_int_not_equal(a, b);
        }
        assert_int_equal(a, s_norm);
        assert_int_equal(b, s_adamw);
    }
    assert_int_equal(m.uploads, 2);
    /* a copy of the list (other padding) is the same list */
    tc_param_segment copy[3];
    memset(copy, 0, sizeof copy);
    for (int i = 0; i < 3; i++)
        copy[i] = norm[i];
    assert_int_equal(seg_use(&m, copy, 3), s_norm);
    assert_int_equal(m.uploads, 2);
    /* a list differing in one weight decay replaces the least recently used
     * (adamw's, used before the norm's copy) */
    assert_int_equal(seg_use(&m, other, 4), s_adamw);
    assert_int_equal(m.uploads, 3);
    assert_int_equal(seg_use(&m, norm, 3), s_norm);
    assert_int_equal(m.uploads, 3);
    /* a shorter prefix of a kept list is another list */
    seg_use(&m, adamw, 3);
    assert_int_equal(m.uploads, 4);
    for (int i = 0; i < TC_CUDA_SEG_SLOTS; i++)
        free(m.key[i].host);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),         cmocka_unit_test(test_chunk_rows),
        cmocka_unit_test(test_alignment),    cmocka_unit_test(test_radix_bits),
        cmocka_unit_test(test_vector_paths), cmocka_unit_test(test_welford_rows),
        cmocka_unit_test(test_run_pieces),   cmocka_unit_test(test_run_piece_size),
        cmocka_unit_test(test_conv_pick),    cmocka_unit_test(test_seg_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
