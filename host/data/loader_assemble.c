/* the loader's assembler (loader_internal.h): done ring slots become
 * batches strictly in ring order. eval and resampled order skip a bad
 * sample and fill the batch from the next ones; training order puts every
 * position in its row and replaces the unusable ones as loader.h says.
 * called with the loader's mutex held, by one thread at a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader_internal.h"

/* ---- batch buffers ---- */

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
    b->parts = malloc(B * sizeof(int32_t));
    if ((!b->images && !b->images_bf16) || !b->tokens || !b->labels || !b->parts) {
        tc_loader_batch_free(l, b);
        return NULL;
    }
    return b;
}

void tc_loader_batch_free(tc_loader *l, tc_batch *b) {
    if (!b) return;
    tc_batch_allocator *a = &l->cfg.allocator;
    if (b->images) a->free(b->images, a->ctx);
    if (b->images_bf16) a->free(b->images_bf16, a->ctx);
    if (b->tokens) a->free(b->tokens, a->ctx);
    if (b->labels) a->free(b->labels, a->ctx);
    free(b->parts);
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
                tc_loader_set_fatal(l, TC_ERR_OOM, "data: out of memory for a batch");
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
    l->cur_rows = l->rows_bad = 0;
    if (l->cfg.epochs > 0 && l->a_epoch >= l->cfg.epochs && !l->end_queued) {
        if (push_ready(l, NULL) == 0) l->end_queued = 1;
    }
}

/* the epoch's last batch is out: the reader moves on, later slots of this
 * epoch are dropped */
static void quota_reached(tc_loader *l) {
    if (l->r_epoch == l->a_epoch && !l->r_finished) l->r_ended = 1;
    end_epoch(l);
}

/* rows of batches: (3,S,S) pixels, tokens, label */
static void put_row(tc_loader *l, tc_batch *b, int i, const sample_out *o) {
    const tc_loader_cfg *c = &l->cfg;
    size_t px = 3 * (size_t)c->image_size * c->image_size;
    if (c->bf16)
        memcpy(b->images_bf16 + (size_t)i * px, o->img16, px * 2);
    else
        memcpy(b->images + (size_t)i * px, o->img, px * 4);
    memcpy(b->tokens + (size_t)i * c->context_length, o->tok,
           sizeof(int32_t) * (size_t)c->context_length);
    b->labels[i] = o->label;
    b->parts[i] = o->part;
}

static void get_row(tc_loader *l, const tc_batch *b, int i, sample_out *o) {
    const tc_loader_cfg *c = &l->cfg;
    size_t px = 3 * (size_t)c->image_size * c->image_size;
    if (c->bf16)
        memcpy(o->img16, b->images_bf16 + (size_t)i * px, px * 2);
    else
        memcpy(o->img, b->images + (size_t)i * px, px * 4);
    memcpy(o->tok, b->tokens + (size_t)i * c->context_length,
           sizeof(int32_t) * (size_t)c->context_length);
    o->label = b->labels[i];
    o->part = b->parts[i];
    o->bad[0] = 0;
}

/* counts one examined sample; 0 when the error-rate bound stops the loader */
static int count_sample(tc_loader *l, const char *bad) {
    const tc_loader_cfg *c = &l->cfg;
    l->seen++;
    if (!bad[0]) return 1;
    l->bad++;
    tc_loader_log(l, bad);
    if (l->seen >= c->min_samples && (double)l->bad > c->max_bad_fraction * (double)l->seen) {
        char m[1024];
        snprintf(m, sizeof m,
                 "data: %lld of %lld samples were bad (%.1f%% > %.1f%%), stopping; last: %.700s",
                 (long long)l->bad, (long long)l->seen, 100.0 * (double)l->bad / (double)l->seen,
                 100.0 * c->max_bad_fraction, bad);
        tc_loader_set_fatal(l, TC_ERR_DATA, m);
        return 0;
    }
    return 1;
}

/* hands b out as batch a_batch of a_epoch; 0 when the loader stops first */
static int deliver(tc_loader *l, tc_batch *b, tc_loader_cursor next, int last) {
    b->epoch = l->a_epoch;
    b->index = l->a_batch;
    b->last_in_epoch = last;
    b->cursor = next;
    if (push_ready(l, b) != 0) return 0;
    l->a_batch++;
    return 1;
}

static tc_loader_cursor cursor_at(const tc_loader *l, int64_t epoch, int64_t batch, int64_t pos) {
    tc_loader_cursor c = {epoch, batch, pos, l->bad, l->seen, 0, 0, 0};
    return c;
}

/* ---- eval and resampled order: skip and fill ---- */

static int fill_slot(tc_loader *l, slot *s) {
    const tc_loader_cfg *c = &l->cfg;
    if (s->is_end) {
        if (l->a_good_in_epoch == 0) {
            char m[1024];
            snprintf(m, sizeof m,
                     "data: no usable samples in epoch %lld for rank %d of %d "
                     "(%lld bad samples, %lld bad shards so far) in '%.600s'",
                     (long long)l->a_epoch, c->rank, c->world_size, (long long)l->bad,
                     (long long)l->bad_shards, c->data);
            tc_loader_set_fatal(l, TC_ERR_DATA, m);
            return 0;
        }
        if (l->cur && l->cur->n > 0 && !c->train) {
            tc_batch *b = l->cur;
            l->cur = NULL;
            if (!deliver(l, b, cursor_at(l, l->a_epoch + 1, 0, 0), 1)) {
                l->cur = b;
                return 0;
            }
        } else if (l->cur) {
            l->cur->n = 0; /* drop_last */
        }
        end_epoch(l);
        return 1;
    }
    if (!count_sample(l, s->o.bad)) return 0;
    if (s->o.bad[0]) return 1;
    if (!l->cur) {
        l->cur = acquire_batch(l);
        if (!l->cur) return 0;
        l->cur->n = 0;
    }
    tc_batch *b = l->cur;
    put_row(l, b, b->n++, &s->o);
    l->a_good_in_epoch++;
    if (b->n < c->batch_size) return 1;
    int last = l->quota >= 0 && l->a_batch + 1 >= l->quota;
    tc_loader_cursor next = cursor_at(l, l->a_epoch, l->a_batch + 1, s->pos + 1);
    if (l->mode == MODE_RESAMPLED) {
        /* the block of the next position: this one's, or the next block */
        int M = c->shuffle_buffer > 1 ? c->shuffle_buffer : 1;
        int e = (s->pos + 1) % M == 0;
        next.draw = s->blk_draw[e];
        next.member = s->blk_member[e];
        next.restart = l->rs_restart;
    }
    if (last) next = cursor_at(l, l->a_epoch + 1, 0, 0);
    l->cur = NULL;
    if (!deliver(l, b, next, last)) {
        l->cur = b;
        b->n--;
        l->a_good_in_epoch--;
        return 0;
    }
    if (last) quota_reached(l);
    return 1;
}

/* ---- training order: rows and replacements ---- */

/* decodes the sample at global position q of batch k (another rank's, kept
 * in the window or read by index) into o; 0 when it is unusable */
static int decode_candidate(tc_loader *l, worker *w, subst_window *win, int64_t q, sample_out *o) {
    tc_sample *raw = NULL;
    int64_t index = 0;
    if (l->src->indexable) {
        index = l->perm[q];
    } else {
        int64_t s0 = tc_loader_row_pos(l, win->batch, 0), B = l->cfg.batch_size;
        if (q < s0 && q >= win->lo && q - win->lo < win->nbefore)
            raw = &win->before[q - win->lo];
        else if (q >= s0 + B && q - (s0 + B) < win->nafter)
            raw = &win->after[q - (s0 + B)];
        else
            return 0;
    }
    tc_loader_process(l, w, index, raw, l->a_epoch, q, o);
    return o->bad[0] == 0;
}

/* first usable position after the slice (forward) or before it (backward),
 * nearest first, in reach; into spare[0]; 0 when there is none */
static int search_outside(tc_loader *l, worker *w, subst_window *win, int forward) {
    int64_t k = l->a_batch, B = l->cfg.batch_size, s0 = tc_loader_row_pos(l, k, 0);
    int64_t lo = k * l->G, hi = (k + 1) * l->G;
    if (!l->src->indexable) {
        lo = win->lo;
        hi = s0 + B + win->nafter;
    }
    if (forward) {
        for (int64_t q = s0 + B; q < hi; q++)
            if (decode_candidate(l, w, win, q, &l->spare[0])) return 1;
    } else {
        for (int64_t q = s0 - 1; q >= lo; q--)
            if (decode_candidate(l, w, win, q, &l->spare[0])) return 1;
    }
    return 0;
}

static void copy_row(tc_loader *l, tc_batch *b, int from, int to) {
    const tc_loader_cfg *c = &l->cfg;
    size_t px = 3 * (size_t)c->image_size * c->image_size, T = (size_t)c->context_length;
    if (c->bf16)
        memcpy(b->images_bf16 + (size_t)to * px, b->images_bf16 + (size_t)from * px, px * 2);
    else
        memcpy(b->images + (size_t)to * px, b->images + (size_t)from * px, px * 4);
    memcpy(b->tokens + (size_t)to * T, b->tokens + (size_t)from * T, sizeof(int32_t) * T);
    b->labels[to] = b->labels[from];
    b->parts[to] = b->parts[from];
}

/* fills the unusable rows of cur: the first usable sample after each in the
 * global batch, else the last usable one before it (loader.h); 0 when the
 * loader stops */
static int replace_rows(tc_loader *l, worker *w) {
    tc_batch *b = l->cur;
    int B = l->cfg.batch_size;
    subst_window *win = NULL;
    if (!l->src->indexable) {
        if (tc_loader_complete_window(l, l->a_epoch, l->a_batch) != TC_OK) {
            tc_loader_set_fatal(l, tc_last_error()[0] ? TC_ERR_DATA : TC_ERR_OOM, tc_last_error());
            return 0;
        }
        win = tc_loader_window(l, l->a_epoch, l->a_batch);
        if (!win) {
            tc_loader_set_fatal(l, TC_ERR_OOM, "data: out of memory");
            return 0;
        }
    }
    /* a sweep from the end carries the nearest usable sample after each row:
     * a row of the slice, or (for the trailing unusable rows) one found after
     * the slice, in spare[0] */
    int fwd = -1, outside = 0, u = B; /* rows u.. found nothing forward */
    for (int i = B - 1; i >= 0; i--) {
        if (l->row_ok[i]) {
            fwd = i;
            continue;
        }
        if (fwd < 0 && !outside) {
            outside = search_outside(l, w, win, 1) ? 1 : -1;
            if (outside > 0) put_row(l, b, i, &l->spare[0]), fwd = i;
        }
        if (fwd >= 0 && fwd != i)
            copy_row(l, b, fwd, i);
        else if (fwd < 0)
            u = i;
    }
    if (u == B) return 1;
    /* rows u .. B-1 are the slice's last and nothing usable follows them in
     * reach: the last usable sample before them */
    if (u > 0) {
        for (int i = u; i < B; i++)
            copy_row(l, b, u - 1, i);
        return 1;
    }
    const sample_out *from = NULL;
    if (search_outside(l, w, win, 0)) {
        from = &l->spare[0];
    } else if (l->have_last) {
        char m[300];
        snprintf(m, sizeof m,
                 "global batch %lld of epoch %lld: nothing usable within reach of rank %d's "
                 "rows; its last usable sample is repeated",
                 (long long)l->a_batch, (long long)l->a_epoch, l->cfg.rank);
        tc_loader_log(l, m);
        from = &l->spare[1];
    } else {
        char m[400];
        snprintf(m, sizeof m,
                 "data: global batch %lld of epoch %lld: no usable sample in rank %d's rows "
                 "or within %d positions of them, and none before",
                 (long long)l->a_batch, (long long)l->a_epoch, l->cfg.rank, TC_LOADER_SUBST_WINDOW);
        tc_loader_set_fatal(l, TC_ERR_DATA, m);
        return 0;
    }
    for (int i = 0; i < B; i++)
        put_row(l, b, i, from);
    return 1;
}

/* one row of training order; 0 when the loader stops */
static int row_slot(tc_loader *l, worker *w, slot *s) {
    const tc_loader_cfg *c = &l->cfg;
    int B = c->batch_size;
    if (s->is_end) {
        if (l->a_batch == 0) {
            char m[1024];
            snprintf(m, sizeof m,
                     "data: epoch %lld holds no complete global batch of %lld samples "
                     "(%d processes x %d) in '%.600s'",
                     (long long)l->a_epoch, (long long)l->G, c->world_size, B, c->data);
            tc_loader_set_fatal(l, TC_ERR_DATA, m);
            return 0;
        }
        tc_loader_window_drop(l, l->a_epoch, l->a_batch); /* a partial batch: dropped */
        if (l->cur) l->cur->n = 0;
        end_epoch(l);
        return 1;
    }
    if (!count_sample(l, s->o.bad)) return 0;
    if (!l->cur) {
        l->cur = acquire_batch(l);
        if (!l->cur) return 0;
        l->cur->n = 0;
    }
    tc_batch *b = l->cur;
    l->row_ok[s->row] = s->o.bad[0] == 0;
    if (l->row_ok[s->row])
        put_row(l, b, s->row, &s->o);
    else
        l->rows_bad++;
    if (++l->cur_rows < B) return 1;
    if (l->rows_bad > 0 && !replace_rows(l, w)) return 0;
    for (int i = B - 1; i >= 0; i--)
        if (l->row_ok[i]) { /* kept for the case nothing usable is in reach */
            get_row(l, b, i, &l->spare[1]);
            l->have_last = 1;
            break;
        }
    tc_loader_window_drop(l, l->a_epoch, l->a_batch);
    b->n = B;
    int last = l->quota >= 0 && l->a_batch + 1 >= l->quota;
    tc_loader_cursor next = last
                                ? cursor_at(l, l->a_epoch + 1, 0, 0)
                                : cursor_at(l, l->a_epoch, l->a_batch + 1, (l->a_batch + 1) * l->G);
    l->cur = NULL;
    l->cur_rows = l->rows_bad = 0;
    if (!deliver(l, b, next, last)) {
        l->cur = b; /* freed by destroy */
        return 0;
    }
    if (last) quota_reached(l);
    return 1;
}

void tc_loader_assemble(tc_loader *l, worker *w) {
    if (l->assembling) return;
    l->assembling = 1;
    while (!l->stop && l->fatal == TC_OK && !l->end_queued) {
        slot *s = &l->slots[l->g_asm % l->R];
        if (l->g_asm >= l->g_next || s->state != SLOT_DONE) break;
        /* slots of an epoch that already ended (past its quota) are dropped */
        if (s->epoch == l->a_epoch) {
            int ok = l->mode == MODE_GLOBAL ? row_slot(l, w, s) : fill_slot(l, s);
            if (!ok) break;
        }
        tc_sample_clear(&s->raw);
        s->state = SLOT_FREE;
        l->g_asm++;
        pthread_cond_broadcast(&l->cv);
    }
    l->assembling = 0;
}
