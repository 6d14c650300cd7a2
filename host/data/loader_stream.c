/* the loader's reader (loader_internal.h): which sample comes at which
 * stream position in each order of loader.h, and how a cursor is restored.
 * every function here runs with the loader's mutex held. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader_internal.h"

static const uint64_t SALT_SHARDS = 0x7368617264ull, SALT_PERM = 0x7065726dull,
                      SALT_SHUF = 0x73687566ull, SALT_DRAW = 0x64726177ull,
                      SALT_BLOCK = 0x626c6f636bull;

static void shuffle_i64(int64_t *v, int64_t n, tc_rng *r) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)tc_rng_below(r, (uint64_t)i + 1);
        int64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static void clear_samples(tc_sample *v, int n) {
    for (int i = 0; i < n; i++)
        tc_sample_clear(&v[i]);
}

void tc_loader_reader_reset(tc_loader *l) {
    if (l->rd) {
        l->src->close_shard(l->rd);
        l->rd = NULL;
    }
    clear_samples(l->sbuf, l->sbuf_n);
    l->sbuf_n = l->sbuf_at = 0;
    l->src_done = 0;
    l->shard_i = 0;
    l->cycle_items = 0;
    l->raw_pos = 0;
    l->rs_draw = l->rs_member = 0;
}

/* ---- training order: slices and replacement windows ---- */

int64_t tc_loader_row_pos(const tc_loader *l, int64_t k, int row) {
    return k * l->G + (int64_t)l->cfg.rank * l->cfg.batch_size + row;
}

subst_window *tc_loader_window(tc_loader *l, int64_t epoch, int64_t batch) {
    for (int i = 0; i < l->nwin; i++)
        if (l->win[i].epoch == epoch && l->win[i].batch == batch) return &l->win[i];
    if (l->nwin == l->win_cap) {
        int nc = l->win_cap ? l->win_cap * 2 : 4;
        subst_window *nw = realloc(l->win, sizeof *nw * (size_t)nc);
        if (!nw) return NULL;
        l->win = nw;
        l->win_cap = nc;
    }
    subst_window *w = &l->win[l->nwin++];
    memset(w, 0, sizeof *w);
    w->epoch = epoch;
    w->batch = batch;
    int64_t s0 = tc_loader_row_pos(l, batch, 0), k0 = batch * l->G;
    w->lo = s0 - TC_LOADER_SUBST_WINDOW > k0 ? s0 - TC_LOADER_SUBST_WINDOW : k0;
    return w;
}

void tc_loader_window_drop(tc_loader *l, int64_t epoch, int64_t batch) {
    for (int i = 0; i < l->nwin; i++) {
        subst_window *w = &l->win[i];
        if (w->epoch != epoch || w->batch != batch) continue;
        clear_samples(w->before, w->nbefore);
        clear_samples(w->after, w->nafter);
        l->win[i] = l->win[--l->nwin];
        return;
    }
}

void tc_loader_windows_clear(tc_loader *l) {
    while (l->nwin > 0)
        tc_loader_window_drop(l, l->win[0].epoch, l->win[0].batch);
    free(l->win);
    l->win = NULL;
    l->win_cap = 0;
}

/* a position of another rank's slice: kept when it lies in this rank's
 * window (taking *smp), dropped otherwise */
static void keep_for_window(tc_loader *l, int64_t p, tc_sample *smp) {
    int64_t G = l->G, B = l->cfg.batch_size, k = p / G;
    int64_t s0 = tc_loader_row_pos(l, k, 0), K = TC_LOADER_SUBST_WINDOW;
    if ((p >= s0 - K && p < s0) || (p >= s0 + B && p < s0 + B + K && p < (k + 1) * G)) {
        subst_window *w = tc_loader_window(l, l->r_epoch, k);
        if (w && p < s0) {
            int i = (int)(p - w->lo);
            if (i == w->nbefore) w->before[w->nbefore++] = *smp, memset(smp, 0, sizeof *smp);
        } else if (w) {
            int i = (int)(p - (s0 + B));
            if (i == w->nafter) w->after[w->nafter++] = *smp, memset(smp, 0, sizeof *smp);
        }
    }
    tc_sample_clear(smp);
}

/* ---- webdataset streams ---- */

/* a shard that could not be read to its end: named, counted, and held to
 * the error-rate bound as a fraction of the shards opened (loader.h) */
static void shard_failed(tc_loader *l, const char *why) {
    const tc_loader_cfg *c = &l->cfg;
    l->bad_shards++;
    tc_loader_log(l, why);
    if (l->shards_opened >= TC_LOADER_MIN_SHARDS &&
        (double)l->bad_shards > c->max_bad_fraction * (double)l->shards_opened) {
        char m[1024];
        snprintf(m, sizeof m,
                 "data: %lld of %lld shards could not be read (%.1f%% > %.1f%%), stopping; "
                 "last: %.700s",
                 (long long)l->bad_shards, (long long)l->shards_opened,
                 100.0 * (double)l->bad_shards / (double)l->shards_opened,
                 100.0 * c->max_bad_fraction, why);
        tc_loader_set_fatal(l, TC_ERR_DATA, m);
    }
}

static tc_status open_next_shard(tc_loader *l, int sh) {
    l->shards_opened++;
    tc_status st = l->src->open_shard(l->src, sh, &l->rd);
    if (st == TC_OK) return TC_OK;
    if (st == TC_ERR_OOM) return st;
    l->rd = NULL;
    shard_failed(l, tc_last_error());
    return TC_OK;
}

/* the next raw sample of the current shard; *got = 0 at its end (closed) */
static tc_status read_open_shard(tc_loader *l, tc_sample *out, int *got) {
    *got = 0;
    int eof = 0;
    tc_status st = l->src->next(l->rd, out, &eof);
    if (st != TC_OK) {
        if (st == TC_ERR_OOM) return st;
        shard_failed(l, tc_last_error());
        eof = 1;
    }
    if (eof) {
        l->src->close_shard(l->rd);
        l->rd = NULL;
        return TC_OK;
    }
    *got = 1;
    return TC_OK;
}

/* the next raw sample from the rank's shard list; *got = 0 when it is used up */
static tc_status pull_raw(tc_loader *l, tc_sample *out, int *got) {
    *got = 0;
    for (;;) {
        if (!l->rd) {
            if (l->shard_i >= l->nrshards) return TC_OK;
            TC_TRY(open_next_shard(l, l->rshards[l->shard_i++]));
            if (!l->rd) continue;
        }
        TC_TRY(read_open_shard(l, out, got));
        if (*got) {
            l->cycle_items++;
            return TC_OK;
        }
    }
}

/* webdataset's shuffle(bufsize, initial) as a pull: *got = 0 at the end */
static tc_status next_wds_item(tc_loader *l, tc_sample *out, int *got) {
    int bufsize = l->cfg.train ? l->cfg.shuffle_buffer : 0;
    if (bufsize <= 1) return pull_raw(l, out, got);
    int initial = l->cfg.shuffle_initial < bufsize ? l->cfg.shuffle_initial : bufsize;
    *got = 0;
    while (!l->src_done) {
        int g = 0;
        TC_TRY(pull_raw(l, &l->sbuf[l->sbuf_n], &g));
        if (!g) {
            l->src_done = 1;
            break;
        }
        l->sbuf_n++;
        if (l->sbuf_n < bufsize) {
            TC_TRY(pull_raw(l, &l->sbuf[l->sbuf_n], &g));
            if (g)
                l->sbuf_n++;
            else
                l->src_done = 1;
        }
        if (l->sbuf_n >= initial) break;
    }
    if (l->sbuf_n == 0) return TC_OK;
    int k = (int)tc_rng_below(&l->shuf_rng, (uint64_t)l->sbuf_n);
    *out = l->sbuf[k];
    l->sbuf[k] = l->sbuf[l->sbuf_n - 1];
    memset(&l->sbuf[l->sbuf_n - 1], 0, sizeof(tc_sample));
    l->sbuf_n--;
    *got = 1;
    return TC_OK;
}

/* the next sample of the stream. when a pass over the shards ends (the
 * shuffle buffer drained) and the epoch needs more (a known size,
 * open_clip's with_epoch), a new pass starts, as webdataset re-iterates the
 * pipeline; a pass that yields nothing ends the stream. */
static tc_status next_stream_item(tc_loader *l, tc_sample *out, int *got) {
    TC_TRY(next_wds_item(l, out, got));
    if (!*got && l->cycle && l->cycle_items > 0) {
        if (l->rd) {
            l->src->close_shard(l->rd);
            l->rd = NULL;
        }
        l->shard_i = 0;
        l->src_done = 0;
        l->cycle_items = 0;
        TC_TRY(next_wds_item(l, out, got));
    }
    return TC_OK;
}

/* ---- resampled streams ---- */

/* the shard of draw d: weighted by the parts' upsampling factors */
static int draw_shard(tc_loader *l, int64_t d) {
    const tc_loader_cfg *c = &l->cfg;
    tc_rng r = tc_rng_for(tc_mix64(c->seed, SALT_DRAW), (uint64_t)l->r_epoch, (uint64_t)c->rank,
                          tc_mix64((uint64_t)l->rs_restart, (uint64_t)d));
    int n = l->src->num_shards;
    double u = tc_rng_uniform(&r) * l->part_cum[n - 1];
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (l->part_cum[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* the next sample of the rank's endless draws; *got = 0 only when no drawn
 * shard gives any sample for a long run of draws */
static tc_status pull_draw(tc_loader *l, tc_sample *out, int *got) {
    *got = 0;
    int64_t empty = 0, limit = 2 * (int64_t)l->src->num_shards + 16;
    while (empty < limit) {
        if (!l->rd) {
            int sh = draw_shard(l, l->rs_draw++);
            l->rs_member = 0;
            TC_TRY(open_next_shard(l, sh));
            if (!l->rd) {
                empty++;
                continue;
            }
        }
        int had = l->rs_member > 0;
        TC_TRY(read_open_shard(l, out, got));
        if (*got) {
            l->rs_member++;
            return TC_OK;
        }
        if (!had) empty++;
    }
    tc_loader_set_fatal(l, TC_ERR_DATA, "data: resampled: no drawn shard gave a sample");
    return TC_OK;
}

/* where the next block starts: draw and samples of it already read */
static void draw_position(const tc_loader *l, int64_t *d, int64_t *m) {
    if (l->rd) {
        *d = l->rs_draw - 1;
        *m = l->rs_member;
    } else {
        *d = l->rs_draw;
        *m = 0;
    }
}

/* reads the block of shuffle_buffer samples that starts at stream position
 * pos, and permutes it by the block's index */
static tc_status fill_block(tc_loader *l, int64_t pos) {
    int M = l->cfg.shuffle_buffer > 1 ? l->cfg.shuffle_buffer : 1;
    clear_samples(l->sbuf, l->sbuf_n);
    l->sbuf_n = l->sbuf_at = 0;
    draw_position(l, &l->blk_draw[0], &l->blk_member[0]);
    while (l->sbuf_n < M && l->fatal == TC_OK) {
        int got = 0;
        TC_TRY(pull_draw(l, &l->sbuf[l->sbuf_n], &got));
        if (!got) break;
        l->sbuf_n++;
    }
    draw_position(l, &l->blk_draw[1], &l->blk_member[1]);
    tc_rng r =
        tc_rng_for(tc_mix64(l->cfg.seed, SALT_BLOCK), (uint64_t)l->r_epoch, (uint64_t)l->cfg.rank,
                   tc_mix64((uint64_t)l->rs_restart, (uint64_t)(pos / M)));
    for (int i = l->sbuf_n - 1; i > 0; i--) {
        int j = (int)tc_rng_below(&r, (uint64_t)i + 1);
        tc_sample t = l->sbuf[i];
        l->sbuf[i] = l->sbuf[j];
        l->sbuf[j] = t;
    }
    return TC_OK;
}

static tc_status next_block_item(tc_loader *l, slot *s, int *got) {
    *got = 0;
    if (l->sbuf_at >= l->sbuf_n) TC_TRY(fill_block(l, l->r_pos));
    if (l->sbuf_at >= l->sbuf_n) return TC_OK;
    s->raw = l->sbuf[l->sbuf_at];
    memset(&l->sbuf[l->sbuf_at], 0, sizeof(tc_sample));
    l->sbuf_at++;
    for (int k = 0; k < 2; k++) {
        s->blk_draw[k] = l->blk_draw[k];
        s->blk_member[k] = l->blk_member[k];
    }
    *got = 1;
    return TC_OK;
}

/* ---- epochs ---- */

tc_status tc_loader_reader_start(tc_loader *l, int64_t epoch, const tc_loader_cursor *at) {
    l->r_epoch = epoch;
    l->r_pos = 0;
    l->r_ended = 0;
    tc_loader_reader_reset(l);
    l->rs_restart = at ? at->restart : 0;
    const tc_loader_cfg *c = &l->cfg;
    if (c->epochs > 0 && epoch >= c->epochs) {
        l->r_finished = 1;
        return TC_OK;
    }
    if (l->src->indexable) {
        if (c->train) {
            int64_t n = l->src->num_samples;
            for (int64_t i = 0; i < n; i++)
                l->perm[i] = i;
            tc_rng r = tc_rng_for(c->seed, (uint64_t)epoch, SALT_PERM, 0);
            shuffle_i64(l->perm, n, &r);
        }
        return TC_OK;
    }
    if (l->mode == MODE_RESAMPLED) return TC_OK;
    int ns = l->src->num_shards;
    int64_t *order = malloc(sizeof(int64_t) * (size_t)ns);
    if (!order) return tc_fail(TC_ERR_OOM, "data: out of memory");
    for (int i = 0; i < ns; i++)
        order[i] = i;
    if (c->train) {
        tc_rng r = tc_rng_for(c->seed, (uint64_t)epoch, SALT_SHARDS, 0);
        shuffle_i64(order, ns, &r);
    }
    /* training order: every rank reads every shard; eval: shards r, r+W, ... */
    int first = l->mode == MODE_GLOBAL ? 0 : c->rank;
    int stride = l->mode == MODE_GLOBAL ? 1 : c->world_size;
    l->nrshards = 0;
    for (int i = first; i < ns; i += stride)
        l->rshards[l->nrshards++] = (int)order[i];
    free(order);
    int shuf_rank = l->mode == MODE_GLOBAL ? 0 : c->rank;
    l->shuf_rng = tc_rng_for(c->seed, (uint64_t)epoch, (uint64_t)shuf_rank, SALT_SHUF);
    return TC_OK;
}

/* training order: the next position of this rank at or after p */
static int64_t next_owned(const tc_loader *l, int64_t p) {
    int64_t G = l->G, B = l->cfg.batch_size, r0 = (int64_t)l->cfg.rank * B;
    int64_t k = p / G, o = p % G;
    if (o < r0) return k * G + r0;
    if (o >= r0 + B) return (k + 1) * G + r0;
    return p;
}

static tc_status produce_global_wds(tc_loader *l, slot *s) {
    int64_t B = l->cfg.batch_size, r0 = (int64_t)l->cfg.rank * B;
    for (;;) {
        int64_t p = l->raw_pos;
        if (l->quota >= 0 && p >= l->quota * l->G) break;
        tc_sample smp;
        memset(&smp, 0, sizeof smp);
        int got = 0;
        TC_TRY(next_stream_item(l, &smp, &got));
        if (!got) break;
        l->raw_pos++;
        int64_t o = p % l->G;
        if (o >= r0 && o < r0 + B) {
            s->raw = smp;
            s->pos = p;
            s->row = (int)(o - r0);
            l->r_pos = p + 1;
            return TC_OK;
        }
        keep_for_window(l, p, &smp);
    }
    s->is_end = 1;
    s->pos = l->raw_pos;
    return TC_OK;
}

tc_status tc_loader_produce(tc_loader *l, slot *s, int *produced) {
    *produced = 0;
    if (l->r_finished) return TC_OK;
    if (l->r_ended) { /* the end marker is out; the next epoch starts at once */
        TC_TRY(tc_loader_reader_start(l, l->r_epoch + 1, NULL));
        if (l->r_finished) return TC_OK;
    }
    const tc_loader_cfg *c = &l->cfg;
    s->epoch = l->r_epoch;
    s->pos = l->r_pos;
    s->is_end = 0;
    s->row = 0;
    s->o.bad[0] = 0;
    int got = 0;
    if (l->mode == MODE_GLOBAL && l->src->indexable) {
        int64_t p = next_owned(l, l->r_pos);
        if (p >= l->quota * l->G) {
            s->is_end = 1;
        } else {
            s->index = l->perm[p];
            s->row = (int)(p % l->G - (int64_t)c->rank * c->batch_size);
            l->r_pos = p + 1;
        }
        s->pos = p;
    } else if (l->mode == MODE_GLOBAL) {
        TC_TRY(produce_global_wds(l, s));
    } else if (l->mode == MODE_RESAMPLED) {
        TC_TRY(next_block_item(l, s, &got));
        s->is_end = !got;
        l->r_pos++;
    } else if (l->src->indexable) {
        s->is_end = l->r_pos >= l->per_rank;
        s->index = c->rank + l->r_pos * c->world_size;
        l->r_pos++;
    } else {
        TC_TRY(next_stream_item(l, &s->raw, &got));
        s->is_end = !got;
        l->r_pos++;
    }
    if (s->is_end) l->r_ended = 1;
    *produced = 1;
    return TC_OK;
}

/* ---- resume ---- */

tc_status tc_loader_fast_forward(tc_loader *l, const tc_loader_cursor *at) {
    int64_t pos = at->pos;
    if (l->src->indexable) {
        l->r_pos = pos;
        return TC_OK;
    }
    if (l->mode == MODE_RESAMPLED) {
        /* open the block's first draw, read past its first samples, and
         * read the block again */
        if (pos == 0) return TC_OK;
        l->rs_draw = at->draw;
        for (int64_t i = 0; i < at->member && l->fatal == TC_OK; i++) {
            tc_sample smp;
            memset(&smp, 0, sizeof smp);
            int got = 0;
            if (!l->rd) {
                TC_TRY(pull_draw(l, &smp, &got));
            } else {
                TC_TRY(read_open_shard(l, &smp, &got));
                if (got) l->rs_member++;
            }
            tc_sample_clear(&smp);
            if (!got) break;
        }
        int M = l->cfg.shuffle_buffer > 1 ? l->cfg.shuffle_buffer : 1;
        TC_TRY(fill_block(l, pos - pos % M));
        l->sbuf_at = (int)(pos % M);
        clear_samples(l->sbuf, l->sbuf_at);
        l->r_pos = pos;
        return TC_OK;
    }
    for (int64_t i = 0; i < pos; i++) {
        tc_sample s;
        int got = 0;
        memset(&s, 0, sizeof s);
        TC_TRY(next_stream_item(l, &s, &got));
        tc_sample_clear(&s);
        if (!got) {
            l->r_ended = 1;
            break;
        }
        l->r_pos++;
        l->raw_pos++;
    }
    return TC_OK;
}

/* training order, webdataset: reads the positions of other ranks up to the
 * end of this rank's window in global batch k, so that the window is
 * whole; nothing of this rank lies there, so no ring slot is needed */
tc_status tc_loader_complete_window(tc_loader *l, int64_t epoch, int64_t k) {
    if (l->r_epoch != epoch || l->r_ended || l->r_finished) return TC_OK;
    int64_t B = l->cfg.batch_size, end = tc_loader_row_pos(l, k, 0) + B + TC_LOADER_SUBST_WINDOW;
    if (end > (k + 1) * l->G) end = (k + 1) * l->G;
    if (l->quota >= 0 && end > l->quota * l->G) end = l->quota * l->G;
    while (l->raw_pos < end) {
        tc_sample smp;
        memset(&smp, 0, sizeof smp);
        int got = 0;
        TC_TRY(next_stream_item(l, &smp, &got));
        if (!got) break;
        keep_for_window(l, l->raw_pos++, &smp);
    }
    return TC_OK;
}
