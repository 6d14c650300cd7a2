/* CPU emulation of the layouts the Hopper attention kernels assume
 * (cuda/sm90/attention_wgmma_layout.h): runs everywhere, no device needed.
 *
 * the model of wgmma.mma_async below is written from the PTX ISA
 * ("Asynchronous Warpgroup Level Matrix Multiply-Accumulate": register
 * fragments of D and of A for .m64nNk16, the shared memory matrix layout and
 * the matrix descriptor), independently of the header's formulas:
 *   - D (fp32, 64 x N) and A (bf16, 64 x 16, from registers): thread tid =
 *     t0 + 4 t1 + 32 t2 (t0 < 4, t1 < 8, t2 < 4), value v = v0 + 2 v1 + 4 v2;
 *     the element is row t1 + 16 t2 + 8 v1 and column 2 t0 + v0 + 8 v2 (A:
 *     v2 < 2, register v / 2, low half for even v; D: v2 < N / 8).
 *   - descriptor: start address bits 0-13, leading byte offset 16-29, stride
 *     byte offset 32-45 (each >> 4), base offset 49-51, swizzle 62-63.
 *   - no-swizzle operands are made of core matrices of 8 rows x 16 bytes,
 *     128 contiguous bytes. K-major (imm-trans 0): a core matrix row is one
 *     M/N index with 8 consecutive k; the leading byte offset steps along K,
 *     the stride byte offset along M/N. MN-major (imm-trans 1): a core
 *     matrix row is one k with 8 consecutive M/N; the leading byte offset
 *     steps along K (the next 8 k), the stride byte offset along M/N.
 * what is checked: the descriptor bit fields; the header's fragment maps
 * against the model's; the tile copy (every byte of a tile written once,
 * rows past T and columns past hs zero, never read from the source); and the
 * products the kernels issue - S = Q K^T from two K-major descriptors, and
 * O = P V with P packed from S's D registers into A registers and V through
 * an MN-major descriptor - for every padded head width 16 .. 128, head
 * widths that need padding and partial tiles, against a float64 product of
 * the same bf16 values. unwritten shared memory holds NaN, so a descriptor
 * that reads outside the written tile fails. the model itself is a reading of
 * the documentation: only a GPU run (tests/cuda/test_cuda_ops, attention
 * wgmma) proves that the hardware agrees. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_wgmma_layout.h"
#include "testutil.h"

#define SMEM_BYTES (2 * ATT_WG_TILE_BYTES(ATT_WG_MAX_HS))
#define THREADS ATT_WG_THREADS

/* ---- bf16 ---- */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u); /* round to nearest even (finite inputs) */
    return (uint16_t)(u >> 16);
}
static double from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- the model (PTX ISA) ---- */
typedef struct {
    uint32_t start, lead, stride;
    int base, swizzle;
} desc_fields;

static desc_fields desc_decode(uint64_t d) {
    desc_fields f;
    f.start = (uint32_t)(d & 0x3FFFu) << 4;
    f.lead = (uint32_t)((d >> 16) & 0x3FFFu) << 4;
    f.stride = (uint32_t)((d >> 32) & 0x3FFFu) << 4;
    f.base = (int)((d >> 49) & 7u);
    f.swizzle = (int)((d >> 62) & 3u);
    return f;
}

/* byte address of element (mn, k) of a no-swizzle operand */
static uint32_t model_addr(uint64_t desc, int mn_major, int mn, int k) {
    desc_fields f = desc_decode(desc);
    if (f.swizzle != 0 || f.base != 0)
        fail_msg("descriptor %#llx: swizzle %d, base offset %d (the kernels use 0, 0)",
                 (unsigned long long)desc, f.swizzle, f.base);
    const uint32_t core = (uint32_t)(mn / 8) * f.stride + (uint32_t)(k / 8) * f.lead;
    if (!mn_major) return f.start + core + (uint32_t)(mn % 8) * 16 + (uint32_t)(k % 8) * 2;
    return f.start + core + (uint32_t)(k % 8) * 16 + (uint32_t)(mn % 8) * 2;
}

/* the element of register value v of thread tid (D: v < N/2; A: v < 8) */
static void model_frag(int tid, int v, int *row, int *col) {
    const int t0 = tid & 3, t1 = (tid >> 2) & 7, t2 = tid >> 5;
    const int v0 = v & 1, v1 = (v >> 1) & 1, v2 = v >> 2;
    *row = t1 + 16 * t2 + 8 * v1;
    *col = 2 * t0 + v0 + 8 * v2;
}

static double smem_elem(const uint8_t *smem, uint32_t addr) {
    if (addr % 2 != 0 || addr + 2 > SMEM_BYTES) fail_msg("shared address %u out of range", addr);
    uint16_t h;
    memcpy(&h, smem + addr, 2);
    double x = from_bf16(h);
    if (isnan(x)) fail_msg("shared address %u read but never written", addr);
    return x;
}

/* acc[tid][v] += A B for one wgmma m64nNk16; A from shared memory (desc_a,
 * trans_a) or, when a_regs is not NULL, from registers a_regs[tid][4] */
static void model_wgmma(int N, double (*acc)[64], const uint8_t *smem, uint64_t desc_a, int trans_a,
                        const uint32_t (*a_regs)[4], uint64_t desc_b, int trans_b) {
    static double A[64][16], B[16][ATT_WG_MAX_HS];
    if (a_regs) {
        for (int tid = 0; tid < THREADS; tid++)
            for (int v = 0; v < 8; v++) {
                int r, c;
                model_frag(tid, v, &r, &c);
                A[r][c] = from_bf16((uint16_t)(a_regs[tid][v >> 1] >> (16 * (v & 1))));
            }
    } else {
        for (int m = 0; m < 64; m++)
            for (int k = 0; k < 16; k++)
                A[m][k] = smem_elem(smem, model_addr(desc_a, trans_a, m, k));
    }
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < N; n++)
            B[k][n] = smem_elem(smem, model_addr(desc_b, trans_b, n, k));
    for (int tid = 0; tid < THREADS; tid++)
        for (int v = 0; v < N / 2; v++) {
            int r, c;
            model_frag(tid, v, &r, &c);
            double s = 0.0;
            for (int k = 0; k < 16; k++)
                s += A[r][k] * B[k][c];
            acc[tid][v] += s;
        }
}

/* ---- the kernels' side, through the header ---- */

/* the tile copy of att_wg_load_tile: rows row0.. of src (bf16, row stride
 * ld), Tn rows, hs columns, into a tile of HS columns at byte `tile` */
static void load_tile(uint8_t *smem, uint32_t tile, const uint16_t *src, int ld, int row0, int Tn,
                      int hs, int HS, int *writes) {
    const int CH = HS / 8;
    for (int idx = 0; idx < ATT_WG_ROWS * CH; idx++) {
        int r, p;
        att_wg_chunk(idx, CH, &r, &p);
        const uint32_t at = tile + att_wg_offset(r, 8 * p);
        assert_true(at % 16 == 0 && at + 16 <= SMEM_BYTES);
        /* 8 consecutive chunks (8 consecutive threads) fill one core matrix:
         * 128 contiguous bytes, no two in one bank group */
        int r0, p0;
        att_wg_chunk(idx & ~7, CH, &r0, &p0);
        assert_int_equal(at, tile + att_wg_offset(r0, 8 * p0) + 16 * (uint32_t)(idx & 7));
        uint16_t v[8] = {0};
        if (att_wg_chunk_valid(row0, r, p, Tn, hs))
            memcpy(v, src + (size_t)(row0 + r) * ld + 8 * p, sizeof v);
        memcpy(smem + at, v, 16);
        for (int b = 0; b < 16; b++)
            writes[at + b]++;
    }
}

static void rand_bf16(uint16_t *x, size_t n, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) {
        float f;
        tc_fill_uniform(&f, 1, rng, 2.0f);
        x[i] = to_bf16(f);
    }
}

static void test_descriptor_fields(void **state) {
    (void)state;
    const uint64_t d = att_wg_desc(0x12340, 1024, 128);
    desc_fields f = desc_decode(d);
    assert_int_equal(f.start, 0x12340);
    assert_int_equal(f.lead, 1024);
    assert_int_equal(f.stride, 128);
    assert_int_equal(f.base, 0);
    assert_int_equal(f.swizzle, 0);
    /* nothing outside the five fields */
    const uint64_t fields =
        0x3FFFull | (0x3FFFull << 16) | (0x3FFFull << 32) | (7ull << 49) | (3ull << 62);
    assert_int_equal(att_wg_desc(0x3FFF0, 0x3FFF0, 0x3FFF0) & ~fields, 0);
    /* every kernel's shared memory fits the 18 address bits and the 227 KiB a
     * Hopper block may opt into */
    for (int HS = 16; HS <= ATT_WG_MAX_HS; HS += 16) {
        assert_true(ATT_WG_FWD_SMEM(HS) < (1 << 18) && ATT_WG_FWD_SMEM(HS) <= 227 * 1024);
        assert_true(ATT_WG_DKV_SMEM(HS) < (1 << 18) && ATT_WG_DKV_SMEM(HS) <= 227 * 1024);
        assert_true(ATT_WG_DQ_SMEM(HS) < (1 << 18) && ATT_WG_DQ_SMEM(HS) <= 227 * 1024);
    }
    /* the padded widths: hs multiples of 8 up to 128 */
    assert_int_equal(att_wg_padded_head(8), 16);
    assert_int_equal(att_wg_padded_head(64), 64);
    assert_int_equal(att_wg_padded_head(80), 80);
    assert_int_equal(att_wg_padded_head(88), 96);
    assert_int_equal(att_wg_padded_head(104), 112);
    assert_int_equal(att_wg_padded_head(128), 128);
    assert_int_equal(att_wg_padded_head(136), 0);
}

static void test_fragments(void **state) {
    (void)state;
    static int seen[64][ATT_WG_MAX_HS];
    for (int N = 16; N <= ATT_WG_MAX_HS; N += 16) {
        memset(seen, 0, sizeof seen);
        for (int tid = 0; tid < THREADS; tid++)
            for (int v = 0; v < N / 2; v++) {
                int r, c;
                model_frag(tid, v, &r, &c);
                if (att_wg_acc_row(tid, v) != r || att_wg_acc_col(tid, v) != c)
                    fail_msg(
                        "D fragment N=%d thread %d register %d: header (%d, %d), model (%d, %d)", N,
                        tid, v, att_wg_acc_row(tid, v), att_wg_acc_col(tid, v), r, c);
                seen[r][c]++;
            }
        for (int r = 0; r < 64; r++)
            for (int c = 0; c < N; c++)
                assert_int_equal(seen[r][c], 1);
    }
    for (int tid = 0; tid < THREADS; tid++)
        for (int v = 0; v < 8; v++) {
            int r, c;
            model_frag(tid, v, &r, &c);
            assert_int_equal(att_wg_a_row(tid, v >> 1), r);
            assert_int_equal(att_wg_a_col(tid, v >> 1, v & 1), c);
            /* the D register packed there holds the same element of a product
             * whose columns 16 ks.. are this k-step */
            for (int ks = 0; ks < 4; ks++) {
                const int i = att_wg_a_from_acc(ks, v >> 1) + (v & 1);
                assert_int_equal(att_wg_acc_row(tid, i), r);
                assert_int_equal(att_wg_acc_col(tid, i), 16 * ks + c);
            }
        }
}

static void test_tile_copy(void **state) {
    (void)state;
    static uint8_t smem[SMEM_BYTES];
    static int writes[SMEM_BYTES];
    static uint16_t src[100 * 3 * ATT_WG_MAX_HS];
    uint64_t rng = 7;
    for (int HS = 16; HS <= ATT_WG_MAX_HS; HS += 16) {
        const int hs = HS > 16 ? HS - 8 : HS, ld = 3 * hs, Tn = 77, row0 = 64;
        rand_bf16(src, (size_t)Tn * ld, &rng);
        memset(smem, 0xFF, sizeof smem);
        memset(writes, 0, sizeof writes);
        load_tile(smem, 0, src, ld, row0, Tn, hs, HS, writes);
        for (uint32_t b = 0; b < (uint32_t)ATT_WG_TILE_BYTES(HS); b++)
            if (writes[b] != 1) fail_msg("HS=%d: tile byte %u written %d times", HS, b, writes[b]);
        for (int r = 0; r < ATT_WG_ROWS; r++)
            for (int c = 0; c < HS; c++) {
                uint16_t h;
                memcpy(&h, smem + att_wg_offset(r, c), 2);
                const uint16_t want =
                    row0 + r < Tn && c < hs ? src[(size_t)(row0 + r) * ld + c] : 0;
                if (h != want)
                    fail_msg("HS=%d hs=%d: tile (%d, %d) = %#x, expected %#x", HS, hs, r, c, h,
                             want);
            }
    }
}

/* S = Q K^T and O = bf16(S) V through the kernels' descriptors and fragment
 * maps, for a head of hs columns in HS and Tn valid rows (queries and keys) */
static void check_products(int HS, int hs, int Tn, uint64_t *rng) {
    static uint8_t smem[SMEM_BYTES];
    static int writes[SMEM_BYTES];
    static uint16_t q[64 * ATT_WG_MAX_HS], k[64 * ATT_WG_MAX_HS];
    static double s[THREADS][64], o[THREADS][64], ref[64][64], oref[64][ATT_WG_MAX_HS];
    static uint32_t pa[4][THREADS][4];
    const uint32_t qt = 0, kt = (uint32_t)ATT_WG_TILE_BYTES(HS); /* two tiles */
    rand_bf16(q, (size_t)64 * hs, rng);
    rand_bf16(k, (size_t)64 * hs, rng);
    memset(smem, 0xFF, sizeof smem);
    memset(writes, 0, sizeof writes);
    load_tile(smem, qt, q, hs, 0, Tn, hs, HS, writes);
    load_tile(smem, kt, k, hs, 0, Tn, hs, HS, writes);

    /* S = Q K^T: HS / 16 k-steps, both operands K-major */
    memset(s, 0, sizeof s);
    for (int ks = 0; ks < HS / 16; ks++)
        model_wgmma(64, s, smem, att_wg_desc_k(qt, 0, ks), 0, NULL, att_wg_desc_k(kt, 0, ks), 0);
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++) {
            double r = 0.0;
            for (int d = 0; d < hs && i < Tn && j < Tn; d++)
                r += from_bf16(q[i * hs + d]) * from_bf16(k[j * hs + d]);
            ref[i][j] = r;
        }
    for (int tid = 0; tid < THREADS; tid++)
        for (int v = 0; v < 32; v++) {
            const double r = ref[att_wg_acc_row(tid, v)][att_wg_acc_col(tid, v)];
            if (fabs(s[tid][v] - r) > 1e-9 * (1.0 + fabs(r)))
                fail_msg("S = Q K^T, HS=%d hs=%d Tn=%d: thread %d register %d = %g, expected %g",
                         HS, hs, Tn, tid, v, s[tid][v], r);
        }

    /* O = bf16(S) V, V = the K tile read MN-major (keys are k, dims are n);
     * P packed from S's registers as the kernels pack it */
    for (int ks = 0; ks < 4; ks++)
        for (int tid = 0; tid < THREADS; tid++)
            for (int j = 0; j < 4; j++) {
                const int i = att_wg_a_from_acc(ks, j);
                pa[ks][tid][j] = (uint32_t)to_bf16((float)s[tid][i]) |
                                 ((uint32_t)to_bf16((float)s[tid][i + 1]) << 16);
            }
    memset(o, 0, sizeof o);
    for (int ks = 0; ks < 4; ks++)
        model_wgmma(HS, o, smem, 0, 0, (const uint32_t(*)[4])pa[ks], att_wg_desc_mn(kt, ks), 1);
    for (int i = 0; i < 64; i++)
        for (int d = 0; d < HS; d++) {
            double r = 0.0;
            for (int j = 0; j < Tn && d < hs; j++)
                r += from_bf16(to_bf16((float)ref[i][j])) * from_bf16(k[j * hs + d]);
            oref[i][d] = r;
        }
    for (int tid = 0; tid < THREADS; tid++)
        for (int v = 0; v < HS / 2; v++) {
            const double r = oref[att_wg_acc_row(tid, v)][att_wg_acc_col(tid, v)];
            if (fabs(o[tid][v] - r) > 1e-9 * (1.0 + fabs(r)))
                fail_msg("O = P V, HS=%d hs=%d Tn=%d: thread %d register %d = %g, expected %g", HS,
                         hs, Tn, tid, v, o[tid][v], r);
        }
}

static void test_products(void **state) {
    (void)state;
    uint64_t rng = 11;
    int n = 0;
    for (int HS = 16; HS <= ATT_WG_MAX_HS; HS += 16) {
        const int widths[2] = {HS, HS - 8};
        const int rows[3] = {64, 50, 13}; /* a full tile, T = 50, the last tile of T = 77 */
        for (int w = 0; w < 2; w++)
            for (int t = 0; t < 3; t++) {
                if (widths[w] < 8) continue;
                check_products(HS, widths[w], rows[t], &rng);
                n++;
            }
    }
    printf("  %d (HS, hs, T) cases: S = Q K^T and O = P V exact\n", n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor_fields),
        cmocka_unit_test(test_fragments),
        cmocka_unit_test(test_tile_copy),
        cmocka_unit_test(test_products),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
