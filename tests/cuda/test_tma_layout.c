/* CPU emulation of what the warp-specialised Hopper attention kernels
 * (cuda/sm90/attention_*_tma.cu) assume: runs everywhere, no device needed.
 * the functions checked are those of cuda/sm90/attention_tma_layout.h, the
 * ones the kernels call.
 *
 * - tensor maps: the geometry of every CLIP shape passes the rules the
 *   encoder documents (cuTensorMapEncodeTiled: 16-byte base, strides
 *   multiples of 16 and each at least the previous one times its extent,
 *   boxes of 1..256 with a multiple of 16 bytes in dim 0), and a broken
 *   geometry is caught rule by rule;
 * - the copies: a model of a tensor copy written from the CUDA
 *   documentation (a box of elements, dimension 0 fastest, lands in shared
 *   memory in box order; an element out of bounds arrives as zero; the
 *   transaction count is the box's whole size) runs the kernels' boxes (the
 *   coordinates of att_tma_qkv_coord / att_tma_rows_coord, one per panel) and
 *   must write exactly the tile of attention_wgmma_layout.h: every byte once,
 *   rows past T and columns past hs zero, the expected-bytes count of a tile;
 * - the pipeline: the producer / consumer protocol of the kernels (slots,
 *   full/empty mbarrier parities, the forward's overlap of S_i with
 *   P_{i-1} V_{i-1}, the ping-pong of two consumer warpgroups on named
 *   barriers, the backward's 32 producer lanes) is run by a model of
 *   mbarriers (phase parity, pending arrivals, transaction bytes) and of
 *   named barriers (bar.sync / bar.arrive counts) under thousands of random
 *   interleavings; it must never deadlock, never write a slot a consumer
 *   still reads, always hand a consumer the tile it expects, and end with no
 *   named-barrier arrival pending. breaking a parity or the ping-pong rule
 *   makes it fail (checked below).
 * only a GPU run (tests/cuda/test_cuda_ops, attention tma) proves that the
 * hardware agrees with these readings of the documentation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_tma_layout.h"
#include "testutil.h"

/* ---- tensor maps ---- */

static void test_geometry_rules(void **state) {
    (void)state;
    static const int Ts[] = {1, 50, 77, 197, 257, 1000};
    int n = 0;
    for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++)
        for (int hs = 8; hs <= ATT_WG_MAX_HS; hs += 8)
            for (int NH = 1; NH <= 16; NH += 5)
                for (int B = 1; B <= 256; B *= 16) {
                    att_tma_geom g;
                    att_tma_qkv_geom(&g, B, Ts[ti], NH, hs);
                    int rule = att_tma_geom_check(&g, 256);
                    if (rule)
                        fail_msg("qkv B=%d T=%d NH=%d hs=%d: rule %d broken", B, Ts[ti], NH, hs,
                                 rule);
                    /* the q, k, v slices of one base: the base is 16-byte aligned whenever qkv is
                     */
                    assert_int_equal(g.stride[1] % 16, 0);
                    att_tma_rows_geom(&g, B, Ts[ti], NH, hs);
                    rule = att_tma_geom_check(&g, 4096);
                    if (rule)
                        fail_msg("rows B=%d T=%d NH=%d hs=%d: rule %d broken", B, Ts[ti], NH, hs,
                                 rule);
                    n++;
                }
    /* each rule, broken once */
    att_tma_geom g;
    att_tma_qkv_geom(&g, 2, 77, 8, 64);
    assert_int_equal(att_tma_geom_check(&g, 8), 1);
    att_tma_qkv_geom(&g, 2, 77, 8, 12); /* 24-byte rows */
    assert_int_equal(att_tma_geom_check(&g, 0), 3);
    att_tma_qkv_geom(&g, 2, 77, 8, 64);
    g.dim[3] = 0;
    assert_int_equal(att_tma_geom_check(&g, 0), 2);
    att_tma_qkv_geom(&g, 2, 77, 8, 64);
    const uint64_t s1 = g.stride[1];
    g.stride[1] = g.stride[2];
    g.stride[2] = s1; /* (row before q/k/v): strides out of order */
    assert_int_equal(att_tma_geom_check(&g, 0), 4);
    att_tma_qkv_geom(&g, 2, 77, 8, 64);
    g.box[3] = 512;
    assert_int_equal(att_tma_geom_check(&g, 0), 5);
    att_tma_qkv_geom(&g, 2, 77, 8, 64);
    g.box[0] = 4; /* 8 bytes */
    assert_int_equal(att_tma_geom_check(&g, 0), 6);
    printf("  %d shapes: qkv and dout maps within the encoder's rules; 6 broken rules caught\n", n);
}

/* the model of one tensor copy: the box at coordinates c into dst */
static void model_copy(uint8_t *smem, size_t smem_bytes, uint32_t dst, int *writes,
                       const att_tma_geom *g, const uint8_t *global, const int32_t *c) {
    const int E = g->elem_bytes;
    uint32_t box_elems = 1;
    for (int i = 0; i < g->rank; i++)
        box_elems *= g->box[i];
    for (uint32_t e = 0; e < box_elems; e++) {
        uint32_t rest = e;
        int oob = 0;
        uint64_t off = 0;
        for (int i = 0; i < g->rank; i++) {
            const int64_t x = (int64_t)c[i] + (int64_t)(rest % g->box[i]);
            rest /= g->box[i];
            if (x < 0 || (uint64_t)x >= g->dim[i]) oob = 1;
            off += (uint64_t)x * (i == 0 ? (uint64_t)E : g->stride[i - 1]);
        }
        const uint32_t at = dst + e * (uint32_t)E;
        assert_true(at + (uint32_t)E <= smem_bytes);
        if (oob)
            memset(smem + at, 0, (size_t)E);
        else
            memcpy(smem + at, global + off, (size_t)E);
        for (int b = 0; b < E; b++)
            writes[at + b]++;
    }
}

static uint16_t rand_u16(uint64_t *rng) {
    return (uint16_t)(tc_test_rand(rng) | 1u); /* never 0: a zero in a tile means "filled" */
}

#define TILE_MAX ATT_WG_TILE_BYTES(ATT_WG_MAX_HS)

/* the tile of rows row0.. of (b, h, which) as the kernels load it; which < 0:
 * the dout map. checked against the tile layout byte by byte */
static void check_tile(const att_tma_geom *g, const uint16_t *x, int B, int T, int NH, int hs,
                       int HS, int b, int h, int which, int row0) {
    static uint8_t smem[TILE_MAX];
    static int writes[TILE_MAX];
    memset(smem, 0xA5, sizeof smem);
    memset(writes, 0, sizeof writes);
    uint32_t bytes = 0;
    for (int p = 0; p < HS / 8; p++) {
        int32_t c[5];
        if (which >= 0)
            att_tma_qkv_coord(c, p, h, which, row0, b);
        else
            att_tma_rows_coord(c, p, h, row0, b);
        model_copy(smem, sizeof smem, (uint32_t)(p * ATT_WG_PANEL), writes, g, (const uint8_t *)x,
                   c);
        bytes += att_tma_box_bytes(g);
    }
    /* the expected-bytes count the kernels give per tile */
    assert_int_equal(bytes, ATT_WG_TILE_BYTES(HS));
    for (int i = 0; i < ATT_WG_TILE_BYTES(HS); i++)
        if (writes[i] != 1) fail_msg("HS=%d: tile byte %d written %d times", HS, i, writes[i]);
    const int A = NH * hs;
    for (int r = 0; r < ATT_WG_ROWS; r++)
        for (int col = 0; col < HS; col++) {
            uint16_t got, want = 0;
            memcpy(&got, smem + att_wg_offset(r, col), 2);
            const int row = row0 + r;
            if (row < T && col < hs)
                want = which >= 0
                           ? x[((size_t)b * T + row) * 3 * A + (size_t)which * A + h * hs + col]
                           : x[((size_t)b * T + row) * A + h * hs + col];
            if (got != want)
                fail_msg("B=%d T=%d NH=%d hs=%d HS=%d b=%d h=%d which=%d row0=%d: tile (%d, %d) = "
                         "%#x, expected %#x",
                         B, T, NH, hs, HS, b, h, which, row0, r, col, got, want);
        }
}

static void test_tma_tiles(void **state) {
    (void)state;
    static const int Ts[] = {13, 50, 77, 130};
    uint64_t rng = 5;
    int n = 0;
    for (int HS = 16; HS <= ATT_WG_MAX_HS; HS += 16)
        for (int w = 0; w < 2; w++) {
            const int hs = w ? HS - 8 : HS, B = 2, NH = 3;
            for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) {
                const int T = Ts[ti];
                const size_t nq = (size_t)B * T * 3 * NH * hs, nd = (size_t)B * T * NH * hs;
                uint16_t *qkv = malloc(nq * 2), *dout = malloc(nd * 2);
                assert_non_null(qkv);
                assert_non_null(dout);
                for (size_t i = 0; i < nq; i++)
                    qkv[i] = rand_u16(&rng);
                for (size_t i = 0; i < nd; i++)
                    dout[i] = rand_u16(&rng);
                att_tma_geom gq, gd;
                att_tma_qkv_geom(&gq, B, T, NH, hs);
                att_tma_rows_geom(&gd, B, T, NH, hs);
                /* every tile start of the sequence, and one past its end (the
                 * second warpgroup of a last CTA: all zeros) */
                for (int row0 = 0; row0 <= T + ATT_WG_ROWS - 1; row0 += ATT_WG_ROWS)
                    for (int b = 0; b < B; b++) {
                        const int h = (b + row0 / ATT_WG_ROWS) % NH;
                        for (int which = 0; which < 3; which++)
                            check_tile(&gq, qkv, B, T, NH, hs, HS, b, h, which, row0);
                        check_tile(&gd, dout, B, T, NH, hs, HS, b, h, -1, row0);
                        n += 4;
                    }
                free(qkv);
                free(dout);
            }
        }
    printf("  %d tiles (q, k, v, dout) copied by the model: the tile layout exactly\n", n);
}

/* ---- the pipeline ---- */

typedef struct {
    int count, pending, phase;
    long tx;
} mbar;
static void mbar_init(mbar *m, int count) {
    m->count = m->pending = count;
    m->phase = 0;
    m->tx = 0;
}
static void mbar_complete_if_done(mbar *m) {
    if (m->pending == 0 && m->tx == 0) {
        m->phase++;
        m->pending = m->count;
    }
}
/* 0, or -1 when the arrivals overrun the phase (a protocol error) */
static int mbar_arrive(mbar *m, int n, long expect) {
    m->tx += expect;
    m->pending -= n;
    if (m->pending < 0) return -1;
    mbar_complete_if_done(m);
    return 0;
}
static int mbar_tx(mbar *m, long bytes) {
    m->tx -= bytes;
    if (m->tx < 0) return -1;
    mbar_complete_if_done(m);
    return 0;
}
/* try_wait.parity: true once the phase of that parity has completed */
static int mbar_passed(const mbar *m, uint32_t parity) {
    return (uint32_t)(m->phase & 1) != parity;
}

/* a named barrier of 256 threads; the agents count 128 each */
typedef struct {
    int arrived, gen;
} nbar;
static void nbar_add(nbar *b) {
    b->arrived += ATT_WG_THREADS; /* two agents: never past 256 before it completes */
    if (b->arrived == 2 * ATT_WG_THREADS) {
        b->arrived = 0;
        b->gen++;
    }
}

enum { MAX_TILES = 8, MAX_COPIES = 64, TILE = 1000 };

/* the rules under test: the header's, or deliberately broken ones */
typedef struct {
    int broken_empty_parity, broken_pingpong;
} rules;
static int empty_parity(const rules *r, int i) {
    const int e = att_tma_empty_parity(i);
    return r->broken_empty_parity && e >= 0 ? e ^ 1 : e;
}
static int pp_arrives(const rules *r, int c, int k, int n) {
    return r->broken_pingpong ? 1 : att_tma_pp_arrives(c, k, n);
}

typedef struct {
    int slot, tile, bytes, bar; /* bar: 0 q_full, 1 + s full[s] */
} copy_op;

typedef struct {
    const rules *R;
    int nc, nkt, lanes, overlap;
    mbar q_full, full[ATT_TMA_STAGES], empty[ATT_TMA_STAGES];
    nbar pp[2];
    int content[ATT_TMA_STAGES]; /* the tile in a slot (K and V together; -1 none) */
    int stats[ATT_TMA_STAGES];   /* the tile of the lse / D a lane wrote (backward) */
    int held[2][ATT_TMA_STAGES]; /* consumer c reads slot s (its tile), -1 none */
    copy_op copies[MAX_COPIES];
    int ncopies;
    /* agents: 0 producer lane 0, 1 the other producer lanes, 2.. consumers */
    int pc[4], kt[4], waiting[4], done[4];
    int moved; /* a blocked step that still changed the state (an arrival) */
    char why[160];
} sim;

static int fail_sim(sim *s, const char *msg) {
    snprintf(s->why, sizeof s->why, "%s", msg);
    return -1;
}

/* a slot may be written only when no consumer reads it */
static int slot_free(sim *s, int slot) {
    for (int c = 0; c < s->nc; c++)
        if (s->held[c][slot] >= 0) return 0;
    return 1;
}

static int issue_copy(sim *s, int slot, int tile, int bar) {
    if (s->ncopies == MAX_COPIES) return fail_sim(s, "too many copies in flight");
    if (slot >= 0 && !slot_free(s, slot)) return fail_sim(s, "copy into a slot still being read");
    s->copies[s->ncopies++] = (copy_op){slot, tile, TILE, bar};
    return 1;
}

/* named barrier wait of consumer agent a on barrier k: 1 passed, 0 blocked */
static int pp_wait(sim *s, int a, int k) {
    if (!s->waiting[a]) {
        const int gen = s->pp[k].gen;
        nbar_add(&s->pp[k]);
        if (s->pp[k].gen != gen) return 1;
        s->waiting[a] = gen + 1; /* gen + 1: nonzero */
        s->moved = 1;
        return 0;
    }
    if (s->pp[k].gen != s->waiting[a] - 1) {
        s->waiting[a] = 0;
        return 1;
    }
    return 0;
}

/* one step of the producer's lane 0 (and, backward, the other lanes as one
 * agent of lanes - 1 arrivals). 1 progressed, 0 blocked, -1 failed */
static int step_producer(sim *s, int a) {
    const int lane0 = a == 0;
    int *pc = &s->pc[a], *kt = &s->kt[a];
    if (*pc == 0) { /* the resident tiles (q_full, or kv_full for dkv) */
        if (lane0) {
            if (mbar_arrive(&s->q_full, 1, (long)s->nc * TILE) < 0)
                return fail_sim(s, "q_full: arrivals overrun");
            for (int c = 0; c < s->nc; c++)
                if (issue_copy(s, -1, 0, 0) < 0) return -1;
        }
        *pc = 1;
        return 1;
    }
    if (*kt == s->nkt) {
        s->done[a] = 1;
        return 0;
    }
    const int slot = att_tma_slot(*kt), e = empty_parity(s->R, *kt);
    if (*pc == 1) {
        if (e >= 0 && !mbar_passed(&s->empty[slot], (uint32_t)e)) return 0;
        *pc = 2;
        return 1;
    }
    /* pc 2: fill the slot */
    if (!lane0) {
        if (!slot_free(s, slot)) return fail_sim(s, "lse / D written into a slot being read");
        s->stats[slot] = *kt;
        if (mbar_arrive(&s->full[slot], s->lanes - 1, 0) < 0)
            return fail_sim(s, "full: more arrivals than the phase counts");
    } else {
        if (s->lanes == 1) s->stats[slot] = *kt;
        if (mbar_arrive(&s->full[slot], 1, 2L * TILE) < 0)
            return fail_sim(s, "full: more arrivals than the phase counts");
        if (issue_copy(s, slot, *kt, 1 + slot) < 0 || issue_copy(s, slot, *kt, 1 + slot) < 0)
            return -1;
    }
    (*kt)++;
    *pc = 1;
    return 1;
}

/* a copy lands: its bytes, then its transaction count */
static int step_copy(sim *s, int i) {
    copy_op op = s->copies[i];
    s->copies[i] = s->copies[--s->ncopies];
    if (op.slot >= 0) {
        if (!slot_free(s, op.slot)) return fail_sim(s, "a copy landed in a slot being read");
        s->content[op.slot] = op.tile;
    }
    if (mbar_tx(op.bar ? &s->full[op.bar - 1] : &s->q_full, op.bytes) < 0)
        return fail_sim(s, "more bytes than expected");
    return 1;
}

static int read_slot(sim *s, int c, int slot, int tile, int hold) {
    if (s->content[slot] != tile) return fail_sim(s, "a consumer read a slot holding another tile");
    if (s->lanes > 1 && s->stats[slot] != tile)
        return fail_sim(s, "a consumer read lse / D of another tile");
    if (hold) s->held[c][slot] = tile;
    return 1;
}

static int release_slot(sim *s, int c, int slot) {
    s->held[c][slot] = -1;
    if (mbar_arrive(&s->empty[slot], ATT_WG_THREADS, 0) < 0)
        return fail_sim(s, "empty: more releases than the phase counts");
    return 1;
}

/* a consumer warpgroup without overlap (the backward): per tile wait, read,
 * release */
static int step_consumer_plain(sim *s, int a, int c) {
    int *pc = &s->pc[a], *kt = &s->kt[a];
    if (*pc == 0) {
        if (!mbar_passed(&s->q_full, 0)) return 0;
        *pc = 1;
        return 1;
    }
    if (*kt == s->nkt) {
        s->done[a] = 1;
        return 0;
    }
    const int slot = att_tma_slot(*kt);
    if (*pc == 1) {
        if (!mbar_passed(&s->full[slot], att_tma_full_parity(*kt))) return 0;
        if (read_slot(s, c, slot, *kt, 1) < 0) return -1;
        *pc = 2;
        return 1;
    }
    if (release_slot(s, c, slot) < 0) return -1; /* pc 2: the products retired */
    (*kt)++;
    *pc = 1;
    return 1;
}

/* issue point k of consumer c (turn taken): hand the turn over */
static void turn_end(sim *s, int c, int k) {
    if (s->nc == 2 && pp_arrives(s->R, c, k, s->nkt + 1)) nbar_add(&s->pp[c ^ 1]);
}

/* the forward's consumer warpgroup: S_0; then per tile S_i with P_{i-1}
 * V_{i-1}, release of i-1; then P V of the last tile and its release */
static int step_consumer_fwd(sim *s, int a, int c) {
    int *pc = &s->pc[a], *kt = &s->kt[a];
    const int n = s->nkt;
    switch (*pc) {
    case 0: /* warpgroup 1 lets warpgroup 0 begin */
        if (s->nc == 2 && c == 1) nbar_add(&s->pp[0]);
        *pc = 1;
        return 1;
    case 1:
        if (!mbar_passed(&s->q_full, 0)) return 0;
        *kt = 0;
        *pc = 2;
        return 1;
    case 2: /* the tile of issue point kt (< n) has landed */
        if (*kt == n) {
            *pc = 5;
            return 1;
        }
        if (!mbar_passed(&s->full[att_tma_slot(*kt)], att_tma_full_parity(*kt))) return 0;
        *pc = 3;
        return 1;
    case 3: /* turn; issue S_kt (and P V of kt - 1) */
        if (s->nc == 2 && !pp_wait(s, a, c)) return 0;
        if (read_slot(s, c, att_tma_slot(*kt), *kt, 1) < 0) return -1;
        if (*kt > 0 && read_slot(s, c, att_tma_slot(*kt - 1), *kt - 1, 0) < 0) return -1;
        turn_end(s, c, *kt);
        *pc = 4;
        return 1;
    case 4: /* P V of kt - 1 retired: release its slot */
        if (*kt > 0 && release_slot(s, c, att_tma_slot(*kt - 1)) < 0) return -1;
        (*kt)++;
        *pc = 2;
        return 1;
    case 5: /* the last P V */
        if (s->nc == 2 && !pp_wait(s, a, c)) return 0;
        if (read_slot(s, c, att_tma_slot(n - 1), n - 1, 0) < 0) return -1;
        turn_end(s, c, n);
        *pc = 6;
        return 1;
    case 6:
        if (release_slot(s, c, att_tma_slot(n - 1)) < 0) return -1;
        *pc = 7;
        return 1;
    default: s->done[a] = 1; return 0;
    }
}

/* one random interleaving to its end: 0 finished cleanly, -1 failed (why) */
static int run_schedule(sim *s, uint64_t seed) {
    uint64_t rng = seed;
    mbar_init(&s->q_full, 1);
    for (int i = 0; i < ATT_TMA_STAGES; i++) {
        mbar_init(&s->full[i], s->lanes);
        mbar_init(&s->empty[i], s->nc * ATT_WG_THREADS);
        s->content[i] = s->stats[i] = -1;
        s->held[0][i] = s->held[1][i] = -1;
    }
    memset(s->pp, 0, sizeof s->pp);
    memset(s->pc, 0, sizeof s->pc);
    memset(s->kt, 0, sizeof s->kt);
    memset(s->waiting, 0, sizeof s->waiting);
    memset(s->done, 0, sizeof s->done);
    s->ncopies = 0;
    const int agents = 2 + s->nc;
    s->done[1] = s->lanes == 1; /* no other lanes */
    for (long steps = 0; steps < 100000; steps++) {
        /* the runnable choices: every unfinished agent, every copy in flight */
        const int choices = agents + s->ncopies;
        int progressed = 0;
        s->moved = 0;
        const int first = (int)(tc_test_rand(&rng) % (uint64_t)choices);
        for (int k = 0; k < choices && !progressed; k++) {
            const int ch = (first + k) % choices;
            int r;
            if (ch >= agents)
                r = step_copy(s, ch - agents);
            else if (s->done[ch])
                r = 0;
            else if (ch < 2)
                r = step_producer(s, ch);
            else
                r = s->overlap ? step_consumer_fwd(s, ch, ch - 2)
                               : step_consumer_plain(s, ch, ch - 2);
            if (r < 0) return -1;
            progressed = r || s->moved;
        }
        int all_done = s->ncopies == 0;
        for (int a = 0; a < agents; a++)
            all_done &= s->done[a];
        if (all_done) {
            if (s->pp[0].arrived || s->pp[1].arrived)
                return fail_sim(s, "a named barrier ends with arrivals pending");
            return 0;
        }
        if (!progressed) return fail_sim(s, "deadlock: no agent can move");
    }
    return fail_sim(s, "no end after 100000 steps");
}

/* every configuration under `schedules` interleavings; the number that failed */
static int run_protocols(const rules *R, int schedules, char *why, size_t why_len) {
    /* forward: 1 or 2 consumer warpgroups with overlap; backward: dq (one
     * lane fills) and dkv (32 lanes arrive) */
    static const struct {
        int nc, lanes, overlap;
    } kinds[] = {{1, 1, 1}, {2, 1, 1}, {1, 1, 0}, {1, ATT_TMA_PRODUCER, 0}};
    int failed = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        for (int nkt = 1; nkt <= MAX_TILES; nkt++)
            for (int seed = 0; seed < schedules; seed++) {
                sim s;
                memset(&s, 0, sizeof s);
                s.R = R;
                s.nc = kinds[k].nc;
                s.lanes = kinds[k].lanes;
                s.overlap = kinds[k].overlap;
                s.nkt = nkt;
                if (run_schedule(&s, (uint64_t)seed + 1) < 0) {
                    if (!failed)
                        snprintf(why, why_len, "nc=%d lanes=%d overlap=%d tiles=%d seed=%d: %s",
                                 s.nc, s.lanes, s.overlap, nkt, seed, s.why);
                    failed++;
                }
            }
    return failed;
}

static void test_pipeline(void **state) {
    (void)state;
    char why[256] = "";
    const rules ok = {0, 0};
    const int schedules = 400;
    const int failed = run_protocols(&ok, schedules, why, sizeof why);
    if (failed) fail_msg("%d schedules failed; the first: %s", failed, why);
    printf("  %d interleavings (forward 1 and 2 warpgroups, backward dq and dkv, 1..%d tiles): "
           "no deadlock, no slot overwritten while read, every tile as expected\n",
           4 * MAX_TILES * schedules, MAX_TILES);

    /* the model must catch broken rules */
    const rules bad_parity = {1, 0}, bad_pingpong = {0, 1};
    char why2[256] = "";
    if (!run_protocols(&bad_parity, 50, why2, sizeof why2))
        fail_msg("an inverted empty-barrier parity went unnoticed");
    printf("  inverted empty parity caught: %s\n", why2);
    if (!run_protocols(&bad_pingpong, 50, why2, sizeof why2))
        fail_msg("an unbalanced ping-pong went unnoticed");
    printf("  unbalanced ping-pong caught: %s\n", why2);
}

/* the bookkeeping functions themselves, on their own */
static void test_bookkeeping(void **state) {
    (void)state;
    for (int i = 0; i < 64; i++) {
        assert_int_equal(att_tma_slot(i), i % ATT_TMA_STAGES);
        assert_int_equal(att_tma_full_parity(i), (uint32_t)((i / ATT_TMA_STAGES) % 2));
        if (i < ATT_TMA_STAGES)
            assert_int_equal(att_tma_empty_parity(i), -1);
        else /* the release of tile i - STAGES: the use before in the same slot */
            assert_int_equal(att_tma_empty_parity(i), (int)att_tma_full_parity(i - ATT_TMA_STAGES));
    }
    assert_int_equal(att_tma_consumers(1), 1);
    assert_int_equal(att_tma_consumers(50), 1);
    assert_int_equal(att_tma_consumers(64), 1);
    assert_int_equal(att_tma_consumers(77), 2);
    assert_int_equal(att_tma_consumers(257), 2);
    /* shared memory of the largest head: within Hopper's 227 KiB, descriptors' 2^18 */
    assert_true(ATT_TMA_FWD_SMEM(128, 2) <= 227 * 1024);
    assert_true(ATT_TMA_DKV_SMEM(128) <= 227 * 1024);
    assert_true(ATT_TMA_DQ_SMEM(128) <= 227 * 1024);
    /* the barriers sit after the tiles, 8-byte aligned, inside the reserved bytes */
    assert_int_equal((ATT_TMA_FWD_SMEM(128, 2) - ATT_TMA_BAR_BYTES) % 8, 0);
    assert_true(8 * (1 + 2 * ATT_TMA_STAGES) <= ATT_TMA_BAR_BYTES);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_geometry_rules),
        cmocka_unit_test(test_tma_tiles),
        cmocka_unit_test(test_bookkeeping),
        cmocka_unit_test(test_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
