/* the data loader; the ordering, epoch and resume rules are in loader.h.
 *
 * pipeline, one mutex: a worker claims the next global sequence number g,
 * and while holding the lock produces the stream item for it (an index for
 * indexable sources; for webdataset the next raw sample through the shard
 * reader and shuffle buffer, a cheap sequential read). it then decodes,
 * transforms and tokenizes into ring slot g % R without the lock, marks the
 * slot done, and the one thread that holds the `assembling` role copies done
 * slots into batches strictly in g order. the reader switches epochs only
 * when the assembler says the epoch is over (end of stream or batch quota),
 * so an epoch's content never depends on timing. */
#include "loader.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "caption_templates.h"

/* ---- cursor ---- */

void tc_loader_cursor_pack(const tc_loader_cursor *c, int64_t v[TC_LOADER_CURSOR_INTS]) {
    v[0] = c->epoch;
    v[1] = c->batch;
    v[2] = c->pos;
    v[3] = c->bad;
    v[4] = c->seen;
}

void tc_loader_cursor_unpack(const int64_t v[TC_LOADER_CURSOR_INTS], tc_loader_cursor *c) {
    c->epoch = v[0];
    c->batch = v[1];
    c->pos = v[2];
    c->bad = v[3];
    c->seen = v[4];
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

/* ---- state ---- */

enum { SLOT_FREE = 0, SLOT_BUSY, SLOT_DONE };

typedef struct {
    int state;
    int64_t epoch, pos;
    int is_end;    /* end-of-stream marker for `epoch` */
    int64_t index; /* indexable: sample index */
    tc_sample raw; /* webdataset: the raw sample read by the reader */
    /* results */
    float *img;      /* (3,S,S) */
    uint16_t *img16; /* (3,S,S) */
    int32_t *tok;    /* (context) */
    int32_t label;
    char bad[800]; /* non-empty: skipped, with the log line's text */
} slot;

typedef struct {
    tc_loader *l;
    pthread_t th;
    tc_image_decoder *dec;
    uint8_t *scratch;
    int started;
} worker;

struct tc_loader {
    tc_loader_cfg cfg;
    tc_source *src;
    tc_transform_cfg tcfg;
    int min_side;
    int64_t per_rank; /* indexable: stream length per epoch */
    int64_t quota;    /* batches per epoch, -1 unknown */
    int cycle;        /* webdataset: re-read the shards when they run out */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    tc_status fatal;
    char fatal_msg[1024];

    /* reader */
    int64_t r_epoch, r_pos;
    int r_finished; /* epochs limit reached */
    int r_ended;    /* end marker of r_epoch already issued */
    int64_t *perm;  /* indexable train: permutation of r_epoch */
    int *rshards;   /* webdataset: this rank's shards in r_epoch order */
    int nrshards, shard_i;
    int64_t cycle_items; /* raw samples read in the current pass */
    tc_shard_reader *rd;
    tc_sample *sbuf; /* shuffle buffer */
    int sbuf_n, src_done;
    tc_rng shuf_rng;

    /* ring */
    slot *slots;
    int R;
    int64_t g_next, g_asm;

    /* assembler */
    int assembling;
    int64_t a_epoch, a_batch, a_good_in_epoch;
    int64_t seen, bad, bad_shards, logged;
    tc_batch *cur;
    tc_batch **pool;
    int npool, pool_cap, nallocated;
    tc_batch **ready;
    int rq_head, rq_n, rq_cap;
    int end_queued;

    worker *workers;
    int nworkers;
};

static void *default_alloc(size_t n, void *ctx) {
    (void)ctx;
    return malloc(n);
}
static void default_free(void *p, void *ctx) {
    (void)ctx;
    free(p);
}

static void log_line(tc_loader *l, const char *what) {
    if (l->cfg.quiet) return;
    l->logged++;
    if (l->logged <= 50 || l->logged % 1000 == 0)
        fprintf(l->cfg.log ? l->cfg.log : stderr, "tinyclip: data: %s%s\n", what,
                l->logged == 50 ? " (further skips are logged every 1000th)" : "");
}

static void set_fatal(tc_loader *l, tc_status st, const char *msg) {
    if (l->fatal != TC_OK) return;
    l->fatal = st;
    snprintf(l->fatal_msg, sizeof l->fatal_msg, "%s", msg);
    pthread_cond_broadcast(&l->cv);
}

/* ---- reader (called with mu held) ---- */

static void shuffle_i64(int64_t *v, int64_t n, tc_rng *r) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)tc_rng_below(r, (uint64_t)i + 1);
        int64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static void reader_reset_stream(tc_loader *l) {
    if (l->rd) {
        l->src->close_shard(l->rd);
        l->rd = NULL;
    }
    for (int i = 0; i < l->sbuf_n; i++)
        tc_sample_clear(&l->sbuf[i]);
    l->sbuf_n = 0;
    l->src_done = 0;
    l->shard_i = 0;
    l->cycle_items = 0;
}

static tc_status reader_start_epoch(tc_loader *l, int64_t epoch) {
    l->r_epoch = epoch;
    l->r_pos = 0;
    l->r_ended = 0;
    reader_reset_stream(l);
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
            tc_rng r = tc_rng_for(c->seed, (uint64_t)epoch, 0x7065726dull, 0);
            shuffle_i64(l->perm, n, &r);
        }
        return TC_OK;
    }
    int ns = l->src->num_shards;
    int64_t *order = malloc(sizeof(int64_t) * (size_t)ns);
    if (!order) return tc_fail(TC_ERR_OOM, "data: out of memory");
    for (int i = 0; i < ns; i++)
        order[i] = i;
    if (c->train) {
        tc_rng r = tc_rng_for(c->seed, (uint64_t)epoch, 0x7368617264ull, 0);
        shuffle_i64(order, ns, &r);
    }
    l->nrshards = 0;
    for (int i = c->rank; i < ns; i += c->world_size)
        l->rshards[l->nrshards++] = (int)order[i];
    free(order);
    l->shuf_rng = tc_rng_for(c->seed, (uint64_t)epoch, (uint64_t)c->rank, 0x73687566ull);
    return TC_OK;
}

/* the next raw sample from the rank's shards; *got = 0 when they are used up */
static tc_status pull_raw(tc_loader *l, tc_sample *out, int *got) {
    *got = 0;
    for (;;) {
        if (!l->rd) {
            if (l->shard_i >= l->nrshards) return TC_OK;
            int sh = l->rshards[l->shard_i++];
            tc_status st = l->src->open_shard(l->src, sh, &l->rd);
            if (st != TC_OK) {
                if (st == TC_ERR_OOM) return st;
                l->bad_shards++;
                log_line(l, tc_last_error());
                l->rd = NULL;
                continue;
            }
        }
        int eof = 0;
        tc_status st = l->src->next(l->rd, out, &eof);
        if (st != TC_OK) {
            if (st == TC_ERR_OOM) return st;
            l->bad_shards++;
            log_line(l, tc_last_error());
            l->src->close_shard(l->rd);
            l->rd = NULL;
            continue;
        }
        if (eof) {
            l->src->close_shard(l->rd);
            l->rd = NULL;
            continue;
        }
        l->cycle_items++;
        *got = 1;
        return TC_OK;
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

/* the next sample of the rank's stream. when a pass over the shards ends
 * (the shuffle buffer drained) and the epoch needs more (a known size,
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

/* stream item (r_epoch, r_pos) into s; returns 0 when nothing can be produced now */
static tc_status produce(tc_loader *l, slot *s, int *produced) {
    *produced = 0;
    if (l->r_finished) return TC_OK;
    if (l->r_ended) { /* the end marker is out; the next epoch starts at once */
        TC_TRY(reader_start_epoch(l, l->r_epoch + 1));
        if (l->r_finished) return TC_OK;
    }
    s->epoch = l->r_epoch;
    s->pos = l->r_pos;
    s->is_end = 0;
    s->bad[0] = 0;
    if (l->src->indexable) {
        if (l->r_pos >= l->per_rank) {
            s->is_end = 1;
        } else if (l->cfg.train) {
            int64_t n = l->src->num_samples;
            int64_t i = l->cfg.rank + l->r_pos * l->cfg.world_size;
            s->index = l->perm[i % n]; /* DistributedSampler pads with the permutation's head */
        } else {
            s->index = l->cfg.rank + l->r_pos * l->cfg.world_size;
        }
    } else {
        int got = 0;
        TC_TRY(next_stream_item(l, &s->raw, &got));
        if (!got) s->is_end = 1;
    }
    if (s->is_end) l->r_ended = 1;
    l->r_pos++;
    *produced = 1;
    return TC_OK;
}

/* ---- worker-side processing (no lock) ---- */

static void process(tc_loader *l, worker *w, slot *s) {
    const tc_loader_cfg *c = &l->cfg;
    tc_sample smp;
    if (l->src->indexable) {
        tc_status st = l->src->get(l->src, s->index, &smp);
        if (st != TC_OK) {
            snprintf(s->bad, sizeof s->bad, "%s", tc_last_error());
            return;
        }
    } else {
        smp = s->raw;
        memset(&s->raw, 0, sizeof s->raw);
    }
    if (smp.bad[0]) {
        snprintf(s->bad, sizeof s->bad, "%.300s: sample %.250s: %.200s", smp.where, smp.key,
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
        tc_rng r = tc_rng_for(c->seed, (uint64_t)s->epoch, (uint64_t)c->rank, (uint64_t)s->pos);
        st = tc_transform_apply(&l->tcfg, &img, &r, w->scratch, c->bf16 ? NULL : s->img,
                                c->bf16 ? s->img16 : NULL);
    }
    if (st == TC_OK) {
        int n = 0;
        st = tc_tokenize(c->tokenizer, smp.caption ? smp.caption : "", smp.caption_len, s->tok,
                         c->context_length, &n);
        if (st != TC_OK) tc_fail_context(st, "%s: caption", name);
    }
    if (st != TC_OK) {
        const char *m = tc_last_error();
        snprintf(s->bad, sizeof s->bad, "%.790s", m[0] ? m : name);
    }
    s->label = smp.label;
    tc_image_free(&img);
    tc_sample_clear(&smp);
}

/* ---- batches ---- */

static tc_batch *batch_new(tc_loader *l) {
    const tc_loader_cfg *c = &l->cfg;
    size_t B = (size_t)c->batch_size, S = (size_t)c->image_size;
    tc_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    tc_batch_allocator *a = &l->cfg.allocator;
    b->batch_size = c->batch_size;
    if (c->bf16)
        b->images_bf16 = a->alloc(B * 3 * S * S * sizeof(uint16_t), a->ctx);
    else
        b->images = a->alloc(B * 3 * S * S * sizeof(float), a->ctx);
    b->tokens = a->alloc(B * (size_t)c->context_length * sizeof(int32_t), a->ctx);
    b->labels = a->alloc(B * sizeof(int32_t), a->ctx);
    if ((!b->images && !b->images_bf16) || !b->tokens || !b->labels) {
        if (b->images) a->free(b->images, a->ctx);
        if (b->images_bf16) a->free(b->images_bf16, a->ctx);
        if (b->tokens) a->free(b->tokens, a->ctx);
        if (b->labels) a->free(b->labels, a->ctx);
        free(b);
        return NULL;
    }
    return b;
}

static void batch_free(tc_loader *l, tc_batch *b) {
    if (!b) return;
    tc_batch_allocator *a = &l->cfg.allocator;
    if (b->images) a->free(b->images, a->ctx);
    if (b->images_bf16) a->free(b->images_bf16, a->ctx);
    if (b->tokens) a->free(b->tokens, a->ctx);
    if (b->labels) a->free(b->labels, a->ctx);
    free(b);
}

/* a free batch, waiting for the consumer if all are out; NULL on stop/fatal */
static tc_batch *acquire_batch(tc_loader *l) {
    for (;;) {
        if (l->stop || l->fatal != TC_OK) return NULL;
        if (l->npool > 0) return l->pool[--l->npool];
        if (l->nallocated < l->pool_cap) {
            tc_batch *b = batch_new(l);
            if (!b) {
                set_fatal(l, TC_ERR_OOM, "data: out of memory for a batch");
                return NULL;
            }
            l->nallocated++;
            return b;
        }
        pthread_cond_wait(&l->cv, &l->mu);
    }
}

static int push_ready(tc_loader *l, tc_batch *b) {
    while (l->rq_n >= l->rq_cap) {
        if (l->stop || l->fatal != TC_OK) return -1;
        pthread_cond_wait(&l->cv, &l->mu);
    }
    l->ready[(l->rq_head + l->rq_n) % l->rq_cap] = b;
    l->rq_n++;
    pthread_cond_broadcast(&l->cv);
    return 0;
}

static void end_epoch(tc_loader *l) {
    l->a_epoch++;
    l->a_batch = 0;
    l->a_good_in_epoch = 0;
    if (l->cfg.epochs > 0 && l->a_epoch >= l->cfg.epochs && !l->end_queued) {
        if (push_ready(l, NULL) == 0) l->end_queued = 1;
    }
}

/* copies done slots into batches in g order; called with mu held */
static void assemble(tc_loader *l) {
    if (l->assembling) return;
    l->assembling = 1;
    const tc_loader_cfg *c = &l->cfg;
    size_t S = (size_t)c->image_size, px = 3 * S * S;
    while (!l->stop && l->fatal == TC_OK && !l->end_queued) {
        slot *s = &l->slots[l->g_asm % l->R];
        if (l->g_asm >= l->g_next || s->state != SLOT_DONE) break;
        if (s->epoch == l->a_epoch) {
            if (s->is_end) {
                if (l->a_good_in_epoch == 0) {
                    char m[1024];
                    snprintf(m, sizeof m,
                             "data: no usable samples in epoch %lld for rank %d of %d "
                             "(%lld bad samples, %lld bad shards so far) in '%s'",
                             (long long)l->a_epoch, c->rank, c->world_size, (long long)l->bad,
                             (long long)l->bad_shards, c->data);
                    set_fatal(l, TC_ERR_DATA, m);
                    break;
                }
                if (l->cur && l->cur->n > 0 && !c->train) {
                    tc_batch *b = l->cur;
                    l->cur = NULL;
                    b->epoch = l->a_epoch;
                    b->index = l->a_batch++;
                    b->last_in_epoch = 1;
                    b->cursor = (tc_loader_cursor){l->a_epoch + 1, 0, 0, l->bad, l->seen};
                    if (push_ready(l, b) != 0) {
                        l->cur = b;
                        break;
                    }
                } else if (l->cur) {
                    l->cur->n = 0; /* drop_last */
                }
                end_epoch(l);
            } else {
                l->seen++;
                if (s->bad[0]) {
                    l->bad++;
                    log_line(l, s->bad);
                    if (l->seen >= c->min_samples &&
                        (double)l->bad > c->max_bad_fraction * (double)l->seen) {
                        char m[1024];
                        snprintf(m, sizeof m,
                                 "data: %lld of %lld samples were bad (%.1f%% > %.1f%%), stopping; "
                                 "last: %.700s",
                                 (long long)l->bad, (long long)l->seen,
                                 100.0 * (double)l->bad / (double)l->seen,
                                 100.0 * c->max_bad_fraction, s->bad);
                        set_fatal(l, TC_ERR_DATA, m);
                        break;
                    }
                } else {
                    if (!l->cur) {
                        l->cur = acquire_batch(l);
                        if (!l->cur) break;
                        l->cur->n = 0;
                    }
                    tc_batch *b = l->cur;
                    int i = b->n++;
                    if (c->bf16)
                        memcpy(b->images_bf16 + (size_t)i * px, s->img16, px * 2);
                    else
                        memcpy(b->images + (size_t)i * px, s->img, px * 4);
                    memcpy(b->tokens + (size_t)i * c->context_length, s->tok,
                           sizeof(int32_t) * (size_t)c->context_length);
                    b->labels[i] = s->label;
                    l->a_good_in_epoch++;
                    if (b->n == c->batch_size) {
                        l->cur = NULL;
                        b->epoch = l->a_epoch;
                        b->index = l->a_batch++;
                        int last = l->quota >= 0 && l->a_batch >= l->quota;
                        b->last_in_epoch = last;
                        if (last)
                            b->cursor = (tc_loader_cursor){l->a_epoch + 1, 0, 0, l->bad, l->seen};
                        else
                            b->cursor = (tc_loader_cursor){l->a_epoch, l->a_batch, s->pos + 1,
                                                           l->bad, l->seen};
                        if (push_ready(l, b) != 0) {
                            l->cur = b;
                            b->n--;
                            l->a_batch--;
                            l->a_good_in_epoch--;
                            break;
                        }
                        if (last) {
                            /* quota reached: the reader moves on, later slots of
                             * this epoch are dropped */
                            if (l->r_epoch == l->a_epoch && !l->r_finished) l->r_ended = 1;
                            end_epoch(l);
                        }
                    }
                }
            }
        }
        /* slots of an epoch that already ended (past its quota) are dropped */
        tc_sample_clear(&s->raw);
        s->state = SLOT_FREE;
        l->g_asm++;
        pthread_cond_broadcast(&l->cv);
    }
    l->assembling = 0;
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
        tc_status st = produce(l, s, &produced);
        if (st != TC_OK) {
            set_fatal(l, st, tc_last_error());
            break;
        }
        if (!produced) continue; /* r_finished now set */
        l->g_next++;
        s->state = SLOT_BUSY;
        if (!s->is_end) {
            pthread_mutex_unlock(&l->mu);
            process(l, w, s);
            pthread_mutex_lock(&l->mu);
        }
        s->state = SLOT_DONE;
        assemble(l);
        pthread_cond_broadcast(&l->cv);
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- public ---- */

static tc_status fast_forward(tc_loader *l, int64_t pos) {
    /* rebuild the reader state at `pos` of the current epoch */
    if (l->src->indexable) {
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
    }
    return TC_OK;
}

tc_status tc_loader_create(const tc_loader_cfg *cfg, const tc_loader_cursor *resume,
                           tc_loader **out) {
    *out = NULL;
    if (!cfg->tokenizer) return tc_fail(TC_ERR_ARG, "data loader: no tokenizer");
    if (cfg->batch_size <= 0 || cfg->image_size <= 0 || cfg->image_size > 4096 ||
        cfg->context_length <= 0 || cfg->world_size <= 0 || cfg->rank < 0 ||
        cfg->rank >= cfg->world_size)
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
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    tc_status st = tc_source_open(c->data, &c->source, &l->src);
    if (st != TC_OK) {
        tc_loader_destroy(l);
        return st;
    }
    tc_source *src = l->src;
    l->tcfg = tc_transform_default(c->image_size, c->train);
    l->tcfg.scale_min = c->scale_min;
    l->tcfg.scale_max = c->scale_max;
    int dct = c->dct_scale < 0 ? c->train : c->dct_scale;
    /* keep the crop's short side >= S after DCT scaling: a 0.9-area crop at
     * ratio 3/4 keeps ~0.82 of the short side */
    l->min_side = dct ? (int)ceil(c->image_size * (c->train ? 1.22 : 1.0)) : 0;
    int64_t W = c->world_size, B = c->batch_size;
    if (src->indexable) {
        int64_t n = src->num_samples;
        if (n <= 0) st = tc_fail(TC_ERR_DATA, "data: '%s' has no samples", c->data);
        if (c->train) {
            l->per_rank = (n + W - 1) / W;
            l->quota = l->per_rank / B;
            l->perm = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
            if (!l->perm && st == TC_OK) st = tc_fail(TC_ERR_OOM, "data: out of memory");
        } else {
            l->per_rank = n > c->rank ? (n - c->rank + W - 1) / W : 0;
            l->quota = (l->per_rank + B - 1) / B;
        }
        if (st == TC_OK && l->quota == 0 && c->train)
            st = tc_fail(TC_ERR_DATA,
                         "data: %lld samples over %lld ranks do not fill one batch of %lld",
                         (long long)n, (long long)W, (long long)B);
    } else {
        if (src->num_shards < c->world_size)
            st = tc_fail(TC_ERR_CONFIG, "data: %d shards for %d ranks: every rank needs a shard",
                         src->num_shards, c->world_size);
        l->rshards = malloc(sizeof(int) * (size_t)src->num_shards);
        if (!l->rshards && st == TC_OK) st = tc_fail(TC_ERR_OOM, "data: out of memory");
        if (c->train && src->num_samples > 0) {
            l->quota = (src->num_samples + B * W - 1) / (B * W);
            l->cycle = 1;
        } else {
            l->quota = -1;
        }
        if (c->shuffle_buffer > 0) {
            l->sbuf = calloc((size_t)c->shuffle_buffer + 1, sizeof(tc_sample));
            if (!l->sbuf && st == TC_OK) st = tc_fail(TC_ERR_OOM, "data: out of memory");
        }
    }
    /* ring and workers */
    l->R = 4 * c->workers + 4;
    l->slots = calloc((size_t)l->R, sizeof(slot));
    l->pool_cap = c->prefetch + 2;
    l->pool = calloc((size_t)l->pool_cap, sizeof(tc_batch *));
    l->rq_cap = c->prefetch;
    l->ready = calloc((size_t)l->rq_cap + 1, sizeof(tc_batch *));
    if ((!l->slots || !l->pool || !l->ready) && st == TC_OK)
        st = tc_fail(TC_ERR_OOM, "data: out of memory");
    size_t S = (size_t)c->image_size;
    for (int i = 0; st == TC_OK && i < l->R; i++) {
        slot *s = &l->slots[i];
        s->raw.label = -1;
        if (c->bf16)
            s->img16 = malloc(3 * S * S * sizeof(uint16_t));
        else
            s->img = malloc(3 * S * S * sizeof(float));
        s->tok = malloc(sizeof(int32_t) * (size_t)c->context_length);
        if ((!s->img && !s->img16) || !s->tok) st = tc_fail(TC_ERR_OOM, "data: out of memory");
    }
    /* starting point */
    tc_loader_cursor start = {0, 0, 0, 0, 0};
    if (resume) start = *resume;
    if (st == TC_OK && (start.epoch < 0 || start.batch < 0 || start.pos < 0))
        st = tc_fail(TC_ERR_ARG, "data: bad resume cursor");
    if (st == TC_OK) st = reader_start_epoch(l, start.epoch);
    if (st == TC_OK && !l->r_finished) st = fast_forward(l, start.pos);
    l->a_epoch = start.epoch;
    l->a_batch = start.batch;
    l->a_good_in_epoch = start.batch > 0 || start.pos > 0 ? 1 : 0;
    l->bad = start.bad;
    l->seen = start.seen;
    if (st == TC_OK && l->r_finished) {
        l->ready[0] = NULL;
        l->rq_n = 1;
        l->end_queued = 1;
    }
    l->workers = calloc((size_t)c->workers, sizeof(worker));
    if (!l->workers && st == TC_OK) st = tc_fail(TC_ERR_OOM, "data: out of memory");
    for (int i = 0; st == TC_OK && i < c->workers; i++) {
        worker *w = &l->workers[i];
        w->l = l;
        st = tc_image_decoder_create(&w->dec);
        if (st == TC_OK && !(w->scratch = malloc(3 * S * S)))
            st = tc_fail(TC_ERR_OOM, "data: out of memory");
        l->nworkers = i + 1;
    }
    for (int i = 0; st == TC_OK && i < c->workers; i++) {
        worker *w = &l->workers[i];
        if (pthread_create(&w->th, NULL, worker_main, w) != 0)
            st = tc_fail(TC_ERR_BACKEND, "data: cannot start worker thread");
        else
            w->started = 1;
    }
    if (st != TC_OK) {
        tc_loader_destroy(l);
        return st;
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
    if (b) batch_free(l, b);
}

void tc_loader_destroy(tc_loader *l) {
    if (!l) return;
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
        free(l->slots[i].img);
        free(l->slots[i].img16);
        free(l->slots[i].tok);
    }
    free(l->slots);
    for (int i = 0; i < l->npool; i++)
        batch_free(l, l->pool[i]);
    free(l->pool);
    for (int i = 0; i < l->rq_n; i++)
        batch_free(l, l->ready[(l->rq_head + i) % (l->rq_cap ? l->rq_cap : 1)]);
    free(l->ready);
    batch_free(l, l->cur);
    if (l->src) {
        reader_reset_stream(l);
        tc_source_destroy(l->src);
    }
    free(l->sbuf);
    free(l->perm);
    free(l->rshards);
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
