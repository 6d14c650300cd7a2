/* the trainer's state and the pieces of a step, shared by train.c (the
 * step as plain launches, the setters) and train_graph.c (the step as a
 * recorded graph). internal to the engine. */
#ifndef TC_TRAIN_INTERNAL_H
#define TC_TRAIN_INTERNAL_H

#include "step_graph.h"
#include "train.h"

/* device scalars of a step; S_FINITE.. is step_gate's state, in its order */
enum { S_LOSS, S_SUMSQ, S_CLIP, S_FINITE, S_UPDATES, S_SKIPPED, S_IN_A_ROW, S_LR, S_COUNT };

/* a run of the gradient buffer all-reduced as one collective, started when
 * the backward reaches event `ready` (train.c's event numbering below) */
typedef struct {
    size_t lo, hi;
    int ready;
} grad_bucket;

struct tc_trainer {
    tc_model *student, *teacher;
    tc_optim_config optim;
    tc_loss_config loss;
    tc_parallel_config par;
    tc_backend *be;
    int step;               /* schedule position: the lr of the next step is tc_lr_at(step) */
    int max_batch;          /* b: samples per micro-batch */
    int rows;               /* R = accum_steps * b: this rank's samples per step, at most */
    int world;              /* W */
    int shape[3];           /* rows, world, sharded of the step buffers as allocated */
    tc_param_segment *segs; /* what AdamW updates: every tensor but the BatchNorm buffers */
    int nseg;
    /* what the gradient norm sums: every tensor in layout order, the
     * BatchNorm buffers (zero gradient) included, so the norm's partition
     * is that of the packed sequence of all tensors */
    tc_param_segment *nsegs;
    int nnseg;
    float *m, *v;                    /* AdamW moments: (P), or this rank's slice with zero1 */
    float *sim, *dsim, *teacher_sim; /* (2, R, W*R): i2t then t2i */
    float *dimg, *dtxt;              /* (R, E) feature gradients of this rank's rows */
    float *scalars;                  /* S_COUNT */
    float *in_images;                /* (R, 3, S, S) the step's inputs on the device */
    int32_t *in_ids;                 /* (R, context) */
    /* stored teacher features instead of a teacher (tc_trainer_create_cached) */
    int cached_dim;                     /* TE; 0 with a live teacher or none */
    const float *host_timg, *host_ttxt; /* the next step's, host (B, TE) */
    float *in_timg, *in_ttxt;           /* (R, TE) on the device */
    float *cached_scale;                /* device: ln of the teacher's logit scale */
    int async_inputs;                   /* inputs uploaded without waiting (fences) */
    long long fences;                   /* input fences recorded so far */
    float last_sum_sq;                  /* of the last result read, on the host */
    float last_lr;
    /* accum_steps > 1: the features of every micro-batch of the step */
    float *img_rows, *txt_rows;   /* (R, E) */
    float *timg_rows, *ttxt_rows; /* (R, TE) */
    /* data parallel (comm with world > 1) */
    tc_comm *comm;
    float *img_all, *txt_all;   /* (W*R, E) gathered student features */
    float *timg_all, *ttxt_all; /* (W*R, TE) gathered teacher features */
    float *dimg_all, *dtxt_all; /* (W*R, E) column gradients of this rank's loss */
    float *cols;                /* (R, E) the columns' gradients reduced to their owner */
    float *one;                 /* device 1.0f: the add of cols through gemm */
    /* bucketed all-reduce */
    grad_bucket *buckets;
    tc_comm_request *requests;
    int nbuckets, hooks_on, base_text;
    int started_early; /* buckets the last backward started through its events */
    tc_status hook_status;
    /* zero1: rank r owns the buffer's elements [shard_lo[r], shard_lo[r] +
     * shard_n[r]), which hold its packed elements [pshard_lo[r], + pshard_n[r]) */
    size_t *shard_n, *shard_lo, *pshard_n, *pshard_lo;
    /* the slice buffers (m, v, gshard) start shard_head elements into their
     * allocation, so that a tensor's element sits on the alignment it has in
     * the whole buffer (shard_head = shard_lo[rank] % TC_PARAM_ALIGN) */
    size_t shard_head;
    float *gshard;           /* (shard_n[rank]) averaged gradient slice */
    tc_param_segment *zsegs; /* segs cut to this rank's slice, relative to it */
    int nzseg;
    tc_param_segment *znsegs; /* nsegs cut the same way */
    int nznseg;
    /* the step as a recorded graph (train_graph.c, engine/step_graph.h) */
    tc_graph *graph;
    tc_step_graph_state gs;
    long long config_epoch; /* bumped by every setter: a recording is then stale */
};

/* ---- small questions about a trainer ---- */
static inline tc_status tc_tr_trainer_alloc(tc_trainer *t, void **ptr, size_t bytes) {
    return t->be->alloc(t->be, bytes, ptr);
}

static inline int tc_tr_distributed(const tc_trainer *t) {
    return t->comm && t->comm->world_size > 1;
}
static inline int tc_tr_sharded(const tc_trainer *t) {
    return tc_tr_distributed(t) && t->par.zero1;
}

static inline size_t tc_tr_param_count(const tc_trainer *t) {
    return tc_model_layout(t->student)->total;
}
static inline int tc_tr_student_dim(const tc_trainer *t) {
    return tc_model_cfg(t->student)->embed_dim;
}
static inline int tc_tr_teacher_dim(const tc_trainer *t) {
    return t->teacher ? tc_model_cfg(t->teacher)->embed_dim : t->cached_dim;
}
/* a teacher's features take part: a live teacher's or stored ones */
static inline int tc_tr_has_teacher(const tc_trainer *t) {
    return t->teacher || t->cached_dim > 0;
}
static inline size_t tc_tr_moment_count(const tc_trainer *t) {
    return tc_tr_sharded(t) ? t->shard_n[t->comm->rank] : tc_tr_param_count(t);
}

/* ---- train_buffers.c ---- */
/* every step buffer whose size depends on the rows, the world or the sharding */
void tc_train_free_step_buffers(tc_trainer *t);
tc_status tc_train_alloc_step_buffers(tc_trainer *t);
/* the bucket event a tower's layer ends */
int tc_train_tower_event(const tc_trainer *t, tc_tower_id tower, int layer);
tc_status tc_train_plan_buckets(tc_trainer *t);
void tc_train_fire_event(tc_trainer *t, int event);
/* the model's backward hook: fires the event of (tower, layer) */
void tc_train_backward_hook(void *ctx, tc_tower_id tower, int layer);

/* the step's B samples checked and uploaded to in_images / in_ids */
tc_status tc_trainer_upload_step(tc_trainer *t, const float *images, const int32_t *ids, int B);
/* forward, loss, backward, gradient norm and finite check of the uploaded
 * step (no host wait) */
tc_status tc_trainer_compute_device(tc_trainer *t, int B);
/* clipping, AdamW with lr_dev (NULL: the schedule's lr by value), the logit
 * scale rule; no host state changes */
tc_status tc_trainer_apply_device(tc_trainer *t, double extra_sum_sq, const float *lr_dev);

#endif
