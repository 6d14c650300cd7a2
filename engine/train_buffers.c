/* the trainer's step buffers (sized by the rows, the world and the
 * sharding) and its gradient buckets (which backward events start which
 * all-reduce) */
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

/* the parts of n segments within buffer elements [lo, hi), relative to lo */
static int cut_segments(const tc_param_segment *in, int n, size_t lo, size_t hi,
                        tc_param_segment *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        size_t a = in[i].offset, b = a + in[i].count;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a < b) out[k++] = (tc_param_segment){a - lo, b - a, in[i].weight_decay};
    }
    return k;
}

/* ---------------------------------------------------------------- buffers ---- */

/* every step buffer whose size depends on the rows, the world or the sharding */
void tc_train_free_step_buffers(tc_trainer *t) {
    tc_backend *be = t->be;
    /* the slice buffers: their allocation starts shard_head elements before */
    float **slices[] = {&t->m, &t->v, &t->gshard};
    for (size_t i = 0; i < sizeof slices / sizeof slices[0]; i++) {
        if (*slices[i]) be->free(be, *slices[i] - t->shard_head);
        *slices[i] = NULL;
    }
    float **bufs[] = {&t->sim,      &t->dsim,     &t->teacher_sim, &t->dimg,      &t->dtxt,
                      &t->img_rows, &t->txt_rows, &t->timg_rows,   &t->ttxt_rows, &t->img_all,
                      &t->txt_all,  &t->timg_all, &t->ttxt_all,    &t->dimg_all,  &t->dtxt_all,
                      &t->cols,     &t->one,      &t->in_images,   &t->in_timg,   &t->in_ttxt};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    if (t->in_ids) be->free(be, t->in_ids);
    t->in_ids = NULL;
}

/* the slices of zero1 (tc_param_shards): the same elements in the same
 * order whatever the padding, so the gradient norm (summed per slice, then
 * over the ranks) keeps its bits */
static tc_status plan_shards(tc_trainer *t) {
    size_t W = (size_t)t->world;
    free(t->shard_n);
    t->shard_n = calloc(4 * W, sizeof *t->shard_n);
    if (!t->shard_n) return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    t->shard_lo = t->shard_n + W;
    t->pshard_n = t->shard_n + 2 * W;
    t->pshard_lo = t->shard_n + 3 * W;
    tc_param_shards(tc_model_layout(t->student), t->world, t->pshard_lo, t->pshard_n, t->shard_lo,
                    t->shard_n);
    size_t lo = t->shard_lo[t->comm->rank], hi = lo + t->shard_n[t->comm->rank];
    t->shard_head = lo % TC_PARAM_ALIGN;
    /* the segments cut to this rank's slice, relative to it */
    free(t->zsegs);
    free(t->znsegs);
    t->zsegs = calloc((size_t)t->nseg + 1, sizeof *t->zsegs);
    t->znsegs = calloc((size_t)t->nnseg + 1, sizeof *t->znsegs);
    if (!t->zsegs || !t->znsegs) return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    t->nzseg = cut_segments(t->segs, t->nseg, lo, hi, t->zsegs);
    t->nznseg = cut_segments(t->nsegs, t->nnseg, lo, hi, t->znsegs);
    return TC_OK;
}

/* a slice buffer of n floats whose element j sits on the alignment of
 * buffer element shard_lo[rank] + j (zero1), else a buffer of n floats */
static tc_status slice_alloc(tc_trainer *t, float **ptr, size_t n) {
    float *base = NULL;
    TC_TRY(t->be->alloc(t->be, (t->shard_head + (n ? n : 1)) * sizeof(float), (void **)&base));
    *ptr = base + t->shard_head;
    return TC_OK;
}

/* the step buffers for the current rows, world and sharding (kept when
 * those are what they were allocated for); new moments start at zero */
tc_status tc_train_alloc_step_buffers(tc_trainer *t) {
    int shape[3] = {t->rows, t->world, tc_tr_sharded(t)};
    if (t->m && memcmp(shape, t->shape, sizeof shape) == 0) return TC_OK;
    tc_train_free_step_buffers(t);
    t->shape[0] = -1; /* nothing valid until every buffer is made */
    t->shard_head = 0;
    size_t R = (size_t)t->rows, W = (size_t)t->world, E = (size_t)tc_tr_student_dim(t);
    size_t TE = (size_t)tc_tr_teacher_dim(t), F = sizeof(float);
    if (R * W > (1u << 24))
        return tc_fail(TC_ERR_ARG, "trainer: global batch %zu x %zu too large", W, R);
    if (tc_tr_sharded(t)) TC_TRY(plan_shards(t));
    size_t rows = 2 * R * W * R * F, M = tc_tr_moment_count(t);
    const tc_model_config *sc = tc_model_cfg(t->student);
    size_t img_n = (size_t)3 * sc->vision.image_size * sc->vision.image_size;
    size_t ids_n = (size_t)sc->text.context_length;
    int acc = t->par.accum_steps > 1, dp = tc_tr_distributed(t), distill = tc_tr_has_teacher(t);
    /* stored features arrive whole for the step: no per-micro-batch copy */
    int live_acc = acc && t->teacher;
    tc_status s;
    if ((s = slice_alloc(t, &t->m, M)) != TC_OK || (s = slice_alloc(t, &t->v, M)) != TC_OK ||
        (s = tc_tr_trainer_alloc(t, (void **)&t->sim, rows)) != TC_OK ||
        (s = tc_tr_trainer_alloc(t, (void **)&t->dsim, rows)) != TC_OK ||
        (distill && (s = tc_tr_trainer_alloc(t, (void **)&t->teacher_sim, rows)) != TC_OK) ||
        (s = tc_tr_trainer_alloc(t, (void **)&t->dimg, R * E * F)) != TC_OK ||
        (s = tc_tr_trainer_alloc(t, (void **)&t->dtxt, R * E * F)) != TC_OK ||
        (acc && (s = tc_tr_trainer_alloc(t, (void **)&t->img_rows, R * E * F)) != TC_OK) ||
        (acc && (s = tc_tr_trainer_alloc(t, (void **)&t->txt_rows, R * E * F)) != TC_OK) ||
        (live_acc && (s = tc_tr_trainer_alloc(t, (void **)&t->timg_rows, R * TE * F)) != TC_OK) ||
        (live_acc && (s = tc_tr_trainer_alloc(t, (void **)&t->ttxt_rows, R * TE * F)) != TC_OK) ||
        (t->cached_dim &&
         (s = tc_tr_trainer_alloc(t, (void **)&t->in_timg, R * TE * F)) != TC_OK) ||
        (t->cached_dim &&
         (s = tc_tr_trainer_alloc(t, (void **)&t->in_ttxt, R * TE * F)) != TC_OK) ||
        (dp && (s = tc_tr_trainer_alloc(t, (void **)&t->img_all, W * R * E * F)) != TC_OK) ||
        (dp && (s = tc_tr_trainer_alloc(t, (void **)&t->txt_all, W * R * E * F)) != TC_OK) ||
        (dp && distill &&
         (s = tc_tr_trainer_alloc(t, (void **)&t->timg_all, W * R * TE * F)) != TC_OK) ||
        (dp && distill &&
         (s = tc_tr_trainer_alloc(t, (void **)&t->ttxt_all, W * R * TE * F)) != TC_OK) ||
        (dp && (s = tc_tr_trainer_alloc(t, (void **)&t->dimg_all, W * R * E * F)) != TC_OK) ||
        (dp && (s = tc_tr_trainer_alloc(t, (void **)&t->dtxt_all, W * R * E * F)) != TC_OK) ||
        (dp && (s = tc_tr_trainer_alloc(t, (void **)&t->cols, R * E * F)) != TC_OK) ||
        (dp && (s = tc_tr_trainer_alloc(t, (void **)&t->one, F)) != TC_OK) ||
        (tc_tr_sharded(t) && (s = slice_alloc(t, &t->gshard, M)) != TC_OK) ||
        (s = tc_tr_trainer_alloc(t, (void **)&t->in_images, R * img_n * F)) != TC_OK ||
        (s = tc_tr_trainer_alloc(t, (void **)&t->in_ids, R * ids_n * sizeof(int32_t))) != TC_OK)
        return s;
    memcpy(t->shape, shape, sizeof shape);
    if (t->one) t->be->fill_f32(t->be, t->one, 1.0f, 1);
    t->be->zero(t->be, t->m, M * F);
    t->be->zero(t->be, t->v, M * F);
    t->be->fill_f32(t->be, &t->scalars[S_UPDATES], 0.0f, 1);
    return TC_OK;
}

/* ---------------------------------------------------------------- buckets ---- */

/* backward events, in the order they happen: 0 the loss (logit scale),
 * 1 the image head, 1 + (Lv - l) image block l, Lv + 2 the image tower's
 * embeddings, then the same for the text tower from base_text */
int tc_train_tower_event(const tc_trainer *t, tc_tower_id tower, int layer) {
    const tc_model_config *c = tc_model_cfg(t->student);
    if (tower == TC_TOWER_VISION) return 1 + c->vision.layers - layer;
    return t->base_text + c->text.layers - layer;
}

/* the event after which a parameter's gradient is final */
static int param_event(const tc_trainer *t, const tc_param_layout *L, const tc_param_info *p) {
    const tc_model_config *c = tc_model_cfg(t->student);
    if (p->tower == TC_TOWER_SHARED) return 0;
    int vision = p->tower == TC_TOWER_VISION;
    const tc_tower_config *tc = vision ? &c->vision : &c->text;
    tc_tower_id id = vision ? TC_TOWER_VISION : TC_TOWER_TEXT;
    const char *rb = strstr(p->name, "resblocks.");
    if (rb) {
        int l = atoi(rb + strlen("resblocks."));
        if (l >= 0 && l < tc->layers) return tc_train_tower_event(t, id, l);
    }
    size_t o = p->offset;
    int head = vision ? (o == L->v_ln_post_w || o == L->v_ln_post_b || o == L->v_proj)
                      : (o == L->ln_final_w || o == L->ln_final_b || o == L->text_proj);
    if (head) return tc_train_tower_event(t, id, tc->layers);
    return tc_train_tower_event(t, id,
                                -1); /* embeddings: final when the tower's backward returns */
}

static int cmp_offset_desc(const void *a, const void *b) {
    const tc_param_info *x = *(const tc_param_info *const *)a,
                        *y = *(const tc_param_info *const *)b;
    return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

/* buckets of about bucket_bytes over the layout from its end (the backward
 * meets the parameters roughly in reverse layout order, as DDP assumes) */
tc_status tc_train_plan_buckets(tc_trainer *t) {
    const tc_param_layout *L = tc_model_layout(t->student);
    const tc_model_config *c = tc_model_cfg(t->student);
    t->base_text = c->vision.layers + 3;
    size_t cap = t->par.bucket_bytes ? t->par.bucket_bytes : (size_t)25 << 20;
    cap /= sizeof(float);
    if (cap == 0) cap = 1;
    const tc_param_info **order = malloc((size_t)L->count * sizeof *order);
    free(t->buckets);
    free(t->requests);
    t->buckets = calloc((size_t)L->count, sizeof *t->buckets);
    t->requests = calloc((size_t)L->count, sizeof *t->requests);
    if (!order || !t->buckets || !t->requests) {
        free(order);
        return tc_fail(TC_ERR_OOM, "trainer: out of host memory");
    }
    for (int i = 0; i < L->count; i++)
        order[i] = &L->params[i];
    qsort(order, (size_t)L->count, sizeof *order, cmp_offset_desc);
    t->nbuckets = 0;
    grad_bucket *cur = NULL;
    size_t elements = 0; /* the tensors' elements in cur: the padding does not count */
    for (int i = 0; i < L->count; i++) {
        const tc_param_info *p = order[i];
        int ev = param_event(t, L, p);
        if (!cur || elements >= cap) {
            cur = &t->buckets[t->nbuckets++];
            cur->hi = p->offset + p->count;
            cur->lo = p->offset;
            cur->ready = ev;
            elements = 0;
        }
        /* the padding between its tensors (zero) travels with the bucket */
        cur->lo = p->offset;
        elements += p->count;
        if (ev > cur->ready) cur->ready = ev;
    }
    free(order);
    return TC_OK;
}

/* starts the all-reduce of every bucket complete at this event */
void tc_train_fire_event(tc_trainer *t, int event) {
    if (!t->hooks_on) return;
    float *g = tc_model_grads(t->student);
    for (int k = 0; k < t->nbuckets && t->hook_status == TC_OK; k++) {
        const grad_bucket *b = &t->buckets[k];
        if (b->ready != event) continue;
        t->hook_status = t->comm->all_reduce_start(t->comm, g + b->lo, b->hi - b->lo, TC_REDUCE_AVG,
                                                   &t->requests[k]);
        t->started_early++;
    }
}

void tc_train_backward_hook(void *ctx, tc_tower_id tower, int layer) {
    tc_trainer *t = ctx;
    tc_train_fire_event(t, tc_train_tower_event(t, tower, layer));
}
