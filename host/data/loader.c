/* the data loader's life cycle, worker threads and per-sample processing;
 * the orders and resume rules are in loader.h, the design of the pipeline
 * in loader_internal.h. */
#include "loader.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "caption_templates.h"
#include "loader_internal.h"

/* ---- cursor ---- */

void tc_loader_cursor_pack(const tc_loader_cursor *c, int64_t v[TC_LOADER_CURSOR_INTS]) {
    int64_t f[TC_LOADER_CURSOR_INTS] = {c->epoch, c->batch, c->pos,    c->bad,
                                        c->seen,  c->draw,  c->member, c->restart};
    memcpy(v, f, sizeof f);
}

void tc_loader_cursor_unpack(const int64_t *v, int n, tc_loader_cursor *c) {
    int64_t f[TC_LOADER_CURSOR_INTS] = {0};
    for (int i = 0; i < n && i < TC_LOADER_CURSOR_INTS; i++)
        f[i] = v[i];
    *c = (tc_loader_cursor){f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
}

void tc_loader_cursor_rebase(tc_loader_cursor *c, int resampled) {
    if (!resampled) return;
    c->restart = c->batch;
    c->pos = c->draw = c->member = 0;
}

void tc_loader_cfg_init(tc_loader_cfg *c) {
    memset(c, 0, sizeof *c);
    tc_source_opts_init(&c->source);
    c->batch_size = 32;
    c->image_size = 224;
    c->context_length = 77;
    c->workers = 2;
    c->prefetch = 2;
    c->world_size = 1;
    c->shuffle_buffer = 1000;
    c->shuffle_initial = 100;
    c->max_bad_fraction = 0.05;
    c->min_samples = 100;
    c->dct_scale = -1;
    c->scale_min = 0.9;
    c->scale_max = 1.0;
}

static void *default_alloc(size_t n, void *ctx) {
    (void)ctx;
    return malloc(n);
}
static void default_free(void *p, void *ctx) {
    (void)ctx;
    free(p);
}

void tc_loader_log(tc_loader *l, const char *what) {
    if (l->cfg.quiet) return;
    l->logged++;
    if (l->logged <= 50 || l->logged % 1000 == 0)
        fprintf(l->cfg.log ? l->cfg.log : stderr, "tinyclip: data: %s%s\n", what,
                l->logged == 50 ? " (further skips are logged every 1000th)" : "");
}

void tc_loader_set_fatal(tc_loader *l, tc_status st, const char *msg) {
    if (l->fatal != TC_OK) return;
    l->fatal = st;
    snprintf(l->fatal_msg, sizeof l->fatal_msg, "%s", msg);
    pthread_cond_broadcast(&l->cv);
}

/* ---- worker-side processing (no lock) ---- */

void tc_loader_process(tc_loader *l, worker *w, int64_t index, tc_sample *raw, int64_t epoch,
                       int64_t pos, sample_out *o) {
    const tc_loader_cfg *c = &l->cfg;
    tc_sample smp;
    o->bad[0] = 0;
    o->label = -1;
    o->part = 0;
    if (l->src->indexable) {
        tc_status st = l->src->get(l->src, index, &smp);
        if (st != TC_OK) {
            snprintf(o->bad, sizeof o->bad, "%s", tc_last_error());
            return;
        }
    } else {
        smp = *raw;
        memset(raw, 0, sizeof *raw);
    }
    o->part = smp.part;
    if (smp.bad[0]) {
        snprintf(o->bad, sizeof o->bad, "%.300s: sample %.250s: %.200s", smp.where, smp.key,
                 smp.bad);
        tc_sample_clear(&smp);
        return;
    }
    char name[800];
    snprintf(name, sizeof name, "%s: sample %s", smp.where, smp.key);
    tc_image img = {0, 0, NULL};
    tc_status st = TC_OK;
    if (smp.raw.px) {
        img = smp.raw;
        smp.raw.px = NULL;
    } else {
        st = tc_image_decode(w->dec, smp.image, smp.image_len, name, l->min_side, &img);
    }
    if (st == TC_OK) {
        /* training order: the same crop for a position whatever the rank */
        uint64_t aug_rank = l->mode == MODE_GLOBAL ? 0 : (uint64_t)c->rank;
        tc_rng r = tc_rng_for(c->seed, (uint64_t)epoch, aug_rank, (uint64_t)pos);
        st = tc_transform_apply(&l->tcfg, &img, &r, w->scratch, c->bf16 ? NULL : o->img,
                                c->bf16 ? o->img16 : NULL);
    }
    if (st == TC_OK) {
        int n = 0;
        st = tc_tokenize(c->tokenizer, smp.caption ? smp.caption : "", smp.caption_len, o->tok,
                         c->context_length, &n);
        if (st != TC_OK) tc_fail_context(st, "%s: caption", name);
    }
    if (st != TC_OK) {
        const char *m = tc_last_error();
        snprintf(o->bad, sizeof o->bad, "%.790s", m[0] ? m : name);
    }
    o->label = smp.label;
    tc_image_free(&img);
    tc_sample_clear(&smp);
}

/* ---- workers ---- */

static void *worker_main(void *arg) {
    worker *w = arg;
    tc_loader *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (l->stop || l->fatal != TC_OK) break;
        if (l->g_next - l->g_asm >= l->R || l->r_finished) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        int64_t g = l->g_next;
        slot *s = &l->slots[g % l->R];
        int produced = 0;
        tc_status st = tc_loader_produce(l, s, &produced);
        if (st != TC_OK) {
            tc_loader_set_fatal(l, st, tc_last_error());
            break;
        }
        if (!produced) continue; /* r_finished now set */
        l->g_next++;
        s->state = SLOT_BUSY;
        if (!s->is_end) {
            pthread_mutex_unlock(&l->mu);
            tc_loader_process(l, w, s->index, &s->raw, s->epoch, s->pos, &s->o);
            pthread_mutex_lock(&l->mu);
        }
        s->state = SLOT_DONE;
        tc_loader_assemble(l, w);
        pthread_cond_broadcast(&l->cv);
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- set-up ---- */

static tc_status alloc_out(sample_out *o, const tc_loader_cfg *c) {
    size_t S = (size_t)c->image_size;
    if (c->bf16)
        o->img16 = malloc(3 * S * S * sizeof(uint16_t));
    else
        o->img = malloc(3 * S * S * sizeof(float));
    o->tok = malloc(sizeof(int32_t) * (size_t)c->context_length);
    if ((!o->img && !o->img16) || !o->tok) return tc_fail(TC_ERR_OOM, "data: out of memory");
    return TC_OK;
}

static void free_out(sample_out *o) {
    free(o->img);
    free(o->img16);
    free(o->tok);
}

/* the order, the epoch quota and the reader's buffers */
static tc_status plan(tc_loader *l) {
    tc_loader_cfg *c = &l->cfg;
    tc_source *src = l->src;
    int64_t W = c->world_size, B = c->batch_size;
    l->mode = !c->train ? MODE_EVAL : c->resampled ? MODE_RESAMPLED : MODE_GLOBAL;
    l->G = B * W;
    l->nparts = src->num_parts > 1 ? src->num_parts : 1;
    if (l->mode == MODE_RESAMPLED && src->indexable)
        return tc_fail(TC_ERR_CONFIG,
                       "data: resampled reading needs webdataset shards ('%s' is a %s source)",
                       c->data, src->kind);
    if (src->indexable) {
        int64_t n = src->num_samples;
        if (n <= 0) return tc_fail(TC_ERR_DATA, "data: '%s' has no samples", c->data);
        if (c->train) {
            l->quota = n / l->G;
            if (!(l->perm = malloc(sizeof(int64_t) * (size_t)n)))
                return tc_fail(TC_ERR_OOM, "data: out of memory");
            if (l->quota == 0)
                return tc_fail(TC_ERR_DATA,
                               "data: %lld samples do not fill one global batch of %lld "
                               "(%lld processes x %lld)",
                               (long long)n, (long long)l->G, (long long)W, (long long)B);
        } else {
            l->per_rank = n > c->rank ? (n - c->rank + W - 1) / W : 0;
            l->quota = (l->per_rank + B - 1) / B;
        }
        return TC_OK;
    }
    if (l->mode == MODE_EVAL && src->num_shards < c->world_size)
        return tc_fail(TC_ERR_CONFIG, "data: %d shards for %d ranks: every rank needs a shard",
                       src->num_shards, c->world_size);
    if (!(l->rshards = malloc(sizeof(int) * (size_t)src->num_shards)))
        return tc_fail(TC_ERR_OOM, "data: out of memory");
    l->quota = -1;
    if (c->train && src->num_samples > 0) {
        l->quota = (src->num_samples + l->G - 1) / l->G;
        l->cycle = 1;
    } else if (l->mode == MODE_RESAMPLED) {
        return tc_fail(TC_ERR_CONFIG,
                       "data: resampled reading of '%s' needs the number of samples per epoch "
                       "(num_samples, as open_clip's --train-num-samples)",
                       c->data);
    }
    if (l->mode == MODE_RESAMPLED) {
        if (!(l->part_cum = malloc(sizeof(double) * (size_t)src->num_shards)))
            return tc_fail(TC_ERR_OOM, "data: out of memory");
        double acc = 0;
        for (int i = 0; i < src->num_shards; i++) {
            acc += src->part_factor ? src->part_factor[src->shard_part[i]] : 1.0;
            l->part_cum[i] = acc;
        }
    }
    if (c->shuffle_buffer > 0 &&
        !(l->sbuf = calloc((size_t)c->shuffle_buffer + 1, sizeof(tc_sample))))
        return tc_fail(TC_ERR_OOM, "data: out of memory");
    return TC_OK;
}

static tc_status start_workers(tc_loader *l) {
    tc_loader_cfg *c = &l->cfg;
    size_t S = (size_t)c->image_size;
    l->workers = calloc((size_t)c->workers, sizeof(worker));
    if (!l->workers) return tc_fail(TC_ERR_OOM, "data: out of memory");
    for (int i = 0; i < c->workers; i++) {
        worker *w = &l->workers[i];
        w->l = l;
        l->nworkers = i + 1;
        TC_TRY(tc_image_decoder_create(&w->dec));
        tc_image_decoder_set_max_pixels(w->dec, c->max_image_pixels);
        if (!(w->scratch = malloc(3 * S * S))) return tc_fail(TC_ERR_OOM, "data: out of memory");
    }
    for (int i = 0; i < c->workers; i++) {
        worker *w = &l->workers[i];
        if (pthread_create(&w->th, NULL, worker_main, w) != 0)
            return tc_fail(TC_ERR_BACKEND, "data: cannot start worker thread");
        w->started = 1;
    }
    return TC_OK;
}

/* the ring, batch queues and replacement buffers */
static tc_status alloc_ring(tc_loader *l) {
    tc_loader_cfg *c = &l->cfg;
    l->R = 4 * c->workers + 4;
    l->slots = calloc((size_t)l->R, sizeof(slot));
    l->pool_cap = c->prefetch + 2;
    l->pool = calloc((size_t)l->pool_cap, sizeof(tc_batch *));
    l->rq_cap = c->prefetch;
    l->ready = calloc((size_t)l->rq_cap + 1, sizeof(tc_batch *));
    l->row_ok = calloc((size_t)c->batch_size, 1);
    l->part_counts = calloc((size_t)l->nparts, sizeof(int64_t));
    if (!l->slots || !l->pool || !l->ready || !l->row_ok || !l->part_counts)
        return tc_fail(TC_ERR_OOM, "data: out of memory");
    for (int i = 0; i < l->R; i++) {
        l->slots[i].raw.label = -1;
        TC_TRY(alloc_out(&l->slots[i].o, c));
    }
    TC_TRY(alloc_out(&l->spare[0], c));
    return alloc_out(&l->spare[1], c);
}

static tc_status start_at(tc_loader *l, const tc_loader_cursor *resume) {
    tc_loader_cursor start = {0, 0, 0, 0, 0, 0, 0, 0};
    if (resume) start = *resume;
    if (start.epoch < 0 || start.batch < 0 || start.pos < 0 || start.draw < 0 || start.member < 0 ||
        start.restart < 0)
        return tc_fail(TC_ERR_ARG, "data: bad resume cursor");
    /* training order: a batch starts at a global position known from its index */
    if (l->mode == MODE_GLOBAL) start.pos = start.batch * l->G;
    TC_TRY(tc_loader_reader_start(l, start.epoch, &start));
    if (!l->r_finished) TC_TRY(tc_loader_fast_forward(l, &start));
    l->a_epoch = start.epoch;
    l->a_batch = start.batch;
    l->a_good_in_epoch = start.batch > 0 || start.pos > 0 ? 1 : 0;
    l->bad = start.bad;
    l->seen = start.seen;
    if (l->r_finished) {
        l->ready[0] = NULL;
        l->rq_n = 1;
        l->end_queued = 1;
    }
    return TC_OK;
}

tc_status tc_loader_create(const tc_loader_cfg *cfg, const tc_loader_cursor *resume,
                           tc_loader **out) {
    *out = NULL;
    if (!cfg->tokenizer) return tc_fail(TC_ERR_ARG, "data loader: no tokenizer");
    if (cfg->batch_size <= 0 || cfg->image_size <= 0 || cfg->image_size > 4096 ||
        cfg->context_length <= 0 || cfg->world_size <= 0 || cfg->rank < 0 ||
        cfg->rank >= cfg->world_size || (int64_t)cfg->batch_size * cfg->world_size > (1 << 30))
        return tc_fail(
            TC_ERR_ARG, "data loader: bad batch %d, image size %d, context %d or rank %d/%d",
            cfg->batch_size, cfg->image_size, cfg->context_length, cfg->rank, cfg->world_size);
    tc_loader *l = calloc(1, sizeof *l);
    if (!l) return tc_fail(TC_ERR_OOM, "data loader: out of memory");
    l->cfg = *cfg;
    tc_loader_cfg *c = &l->cfg;
    if (c->workers <= 0) c->workers = 1;
    if (c->workers > 256) c->workers = 256;
    if (c->prefetch <= 0) c->prefetch = 1;
    if (!c->allocator.alloc || !c->allocator.free) {
        c->allocator.alloc = default_alloc;
        c->allocator.free = default_free;
        c->allocator.ctx = NULL;
    }
    if (c->shuffle_buffer < 0) c->shuffle_buffer = 0;
    if (c->shuffle_buffer > 1000000) c->shuffle_buffer = 1000000;
    /* shard streams stop when the loader does; their lines go where ours go */
    c->source.stream.cancel = &l->cancel;
    if (!c->source.log) c->source.log = c->log;
    if (c->quiet) c->source.quiet = 1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    tc_status st = tc_source_open(c->data, &c->source, &l->src);
    if (st == TC_OK) {
        l->tcfg = tc_transform_default(c->image_size, c->train);
        l->tcfg.scale_min = c->scale_min;
        l->tcfg.scale_max = c->scale_max;
        int dct = c->dct_scale < 0 ? c->train : c->dct_scale;
        /* keep the crop's short side >= S after DCT scaling: a 0.9-area crop at
         * ratio 3/4 keeps ~0.82 of the short side */
        l->min_side = dct ? (int)ceil(c->image_size * (c->train ? 1.22 : 1.0)) : 0;
        st = plan(l);
    }
    if (st == TC_OK) st = alloc_ring(l);
    if (st == TC_OK) st = start_at(l, resume);
    if (st == TC_OK) st = start_workers(l);
    if (st != TC_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tc_last_error());
        tc_loader_destroy(l);
        return tc_fail(st, "%s", msg);
    }
    *out = l;
    return TC_OK;
}

tc_status tc_loader_next(tc_loader *l, tc_batch **out) {
    *out = NULL;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (l->rq_n > 0) {
            tc_batch *b = l->ready[l->rq_head];
            if (!b) { /* the end: leave the marker for later calls */
                pthread_mutex_unlock(&l->mu);
                return TC_OK;
            }
            l->rq_head = (l->rq_head + 1) % l->rq_cap;
            l->rq_n--;
            for (int i = 0; i < b->n; i++)
                if (b->parts[i] >= 0 && b->parts[i] < l->nparts) l->part_counts[b->parts[i]]++;
            *out = b;
            pthread_cond_broadcast(&l->cv);
            pthread_mutex_unlock(&l->mu);
            return TC_OK;
        }
        if (l->fatal != TC_OK) {
            tc_status st = l->fatal;
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", l->fatal_msg);
            pthread_mutex_unlock(&l->mu);
            return tc_fail(st, "%s", msg);
        }
        pthread_cond_wait(&l->cv, &l->mu);
    }
}

void tc_loader_release(tc_loader *l, tc_batch *b) {
    if (!b) return;
    pthread_mutex_lock(&l->mu);
    if (l->npool < l->pool_cap) {
        b->n = 0;
        l->pool[l->npool++] = b;
        b = NULL;
    } else {
        l->nallocated--;
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (b) tc_loader_batch_free(l, b);
}

void tc_loader_destroy(tc_loader *l) {
    if (!l) return;
    /* first, without the lock: a worker may be waiting on a shard's command
     * while it holds the lock */
    __atomic_store_n(&l->cancel, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; l->workers && i < l->nworkers; i++) {
        worker *w = &l->workers[i];
        if (w->started) pthread_join(w->th, NULL);
        tc_image_decoder_destroy(w->dec);
        free(w->scratch);
    }
    free(l->workers);
    for (int i = 0; l->slots && i < l->R; i++) {
        tc_sample_clear(&l->slots[i].raw);
        free_out(&l->slots[i].o);
    }
    free(l->slots);
    free_out(&l->spare[0]);
    free_out(&l->spare[1]);
    for (int i = 0; i < l->npool; i++)
        tc_loader_batch_free(l, l->pool[i]);
    free(l->pool);
    for (int i = 0; i < l->rq_n; i++)
        tc_loader_batch_free(l, l->ready[(l->rq_head + i) % (l->rq_cap ? l->rq_cap : 1)]);
    free(l->ready);
    tc_loader_batch_free(l, l->cur);
    if (l->src) {
        tc_loader_reader_reset(l);
        tc_loader_windows_clear(l);
        tc_source_destroy(l->src);
    }
    free(l->sbuf);
    free(l->perm);
    free(l->rshards);
    free(l->part_cum);
    free(l->row_ok);
    free(l->part_counts);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

int64_t tc_loader_batches_per_epoch(const tc_loader *l) {
    return l->quota;
}

const tc_source *tc_loader_source(const tc_loader *l) {
    return l->src;
}

void tc_loader_stats(tc_loader *l, int64_t *seen, int64_t *bad, int64_t *bad_shards) {
    pthread_mutex_lock(&l->mu);
    if (seen) *seen = l->seen;
    if (bad) *bad = l->bad;
    if (bad_shards) *bad_shards = l->bad_shards;
    pthread_mutex_unlock(&l->mu);
}

int tc_loader_part_counts(tc_loader *l, int64_t *counts, int cap) {
    pthread_mutex_lock(&l->mu);
    int n = l->nparts;
    for (int i = 0; i < n && i < cap; i++)
        counts[i] = l->part_counts[i];
    pthread_mutex_unlock(&l->mu);
    return n;
}
