/* one training step of a CLIP student, written top to bottom as llm.c does:
 * zero gradients, encode both towers, loss forward+backward on the similarity
 * rows, backward both towers, global-norm clipping, AdamW, logit-scale rule.
 *
 * the loss (docs/method.md §1) per direction i2t and t2i, weight 0.5 each:
 *   w_clip    * CE(s * sim, labels)                      (open_clip ClipLoss)
 * + w_distill * softCE(s * sim, softmax(s_t * sim_teacher)) (affinity mimicking)
 * with s = exp(student logit_scale), s_t = the teacher's fixed scale.
 * a teacher (frozen, forward only) is needed when w_distill != 0. */
#ifndef TC_TRAIN_H
#define TC_TRAIN_H

#include <stdint.h>

#include "comm.h"
#include "model.h"
#include "step_graph.h"

typedef enum {
    TC_SCHEDULE_COSINE = 0, /* linear warm-up then cosine to 0 (open_clip cosine_lr) */
    TC_SCHEDULE_CONST = 1,  /* linear warm-up then constant */
    TC_SCHEDULE_COSINE_NO_WARMUP =
        2, /* cosine from base lr starting at warmup_steps (after pruning) */
} tc_schedule_kind;

typedef struct {
    float lr, weight_decay, beta1, beta2, eps;
    int warmup_steps, total_steps;
    tc_schedule_kind schedule;
    float grad_clip; /* global L2 norm; <= 0 disables */
} tc_optim_config;

typedef struct {
    float w_clip;      /* contrastive loss weight (1 - alpha) * weight */
    float w_distill;   /* affinity-mimicking weight alpha * weight */
    float logit_scale; /* > 0: student scale fixed to this after every step; 0: learned, clamped to
                          [0, ln 100] */
    float teacher_logit_scale; /* the teacher's scale, fixed (method: 50) */
} tc_loss_config;

typedef struct {
    float loss;      /* total loss of the step (before the update) */
    float grad_norm; /* global L2 norm before clipping */
    float lr;
    int skipped;             /* 1 when the loss or gradients were not finite: no update */
    int skipped_in_a_row;    /* consecutive skipped steps up to this one */
    long long skipped_total; /* skipped steps since the trainer was made */
} tc_step_result;

/* how a step is spread over micro-batches and processes */
typedef struct {
    /* micro-batches per step: a step's batch B (per process) is encoded in
     * accum_steps pieces of B / accum_steps samples, so the models hold the
     * activations of one piece (max_batch is the piece size). the loss sees
     * every feature of the step, as one process with the whole global batch
     * would (the gradient is exact, not an average of per-piece losses):
     * every piece is first encoded without keeping anything but its
     * features, the loss and its feature gradients are computed once over
     * all of them, then each piece is encoded again and its backward run
     * with its rows of the feature gradient (the last piece's activations
     * are still there, so it is not encoded twice). the student's forward
     * costs (2 - 1/accum_steps) times one forward; the teacher runs once. */
    int accum_steps;
    /* data parallel only: shard the AdamW moments over the ranks (ZeRO
     * stage 1). the gradients are reduce-scattered (averaged) instead of
     * all-reduced, each rank updates its contiguous slice of the parameters,
     * and the slices are all-gathered. the moments take 2P/W floats per
     * rank instead of 2P; the traffic equals the all-reduce's, but it is
     * not overlapped with the backward. */
    int zero1;
    /* data parallel without zero1: gradients are all-reduced in buckets of
     * about this many bytes, each started as soon as the backward has
     * finished every parameter in it (per residual block), overlapping the
     * rest of the backward. 0: 25 MiB (DDP's default) */
    size_t bucket_bytes;
} tc_parallel_config;

/* default optimizer of open_clip for ViT models (lr 5e-4, wd 0.2, 0.9/0.98/1e-6) */
tc_optim_config tc_optim_default(void);
/* lr at a 0-based step */
float tc_lr_at(const tc_optim_config *o, int step);

typedef struct tc_trainer tc_trainer;

/* teacher may be NULL when loss->w_distill == 0; the trainer does not own the models */
tc_status tc_trainer_create(tc_trainer **out, tc_model *student, tc_model *teacher,
                            const tc_optim_config *optim, const tc_loss_config *loss);

/* distillation from stored teacher features (a teacher-feature cache,
 * host/data/teacher_cache.h) instead of a teacher model: the trainer takes
 * the teacher's L2-normalised image and text features of every step's
 * samples from tc_trainer_set_teacher_features, uploads them with the
 * inputs, and computes the same loss as with a teacher whose last encode
 * gave those features (its logit scale is loss->teacher_logit_scale, as
 * the live teacher's). with several processes they are gathered like a
 * live teacher's, once per step. teacher_dim: their width E. */
tc_status tc_trainer_create_cached(tc_trainer **out, tc_model *student, int teacher_dim,
                                   const tc_optim_config *optim, const tc_loss_config *loss);
/* the teacher features of the next step's B samples: host (B, teacher_dim)
 * each, in the rows of that step's images; kept like the images (read when
 * the step is queued, or by then, with async inputs, until inputs_wait) */
void tc_trainer_set_teacher_features(tc_trainer *t, const float *img, const float *txt);
void tc_trainer_destroy(tc_trainer *t);

/* one step on a batch: images host (B,3,S,S), ids host (B,context).
 * the whole step is queued on the backend with no host synchronisation: a
 * step whose loss or gradient norm is not finite is skipped on the device
 * (no update, the AdamW step count unchanged; backend step_gate). result
 * may be NULL; when given, the step's result is read back, which waits for
 * the step to finish (do it at logging intervals). */
tc_status tc_trainer_step(tc_trainer *t, const float *images, const int32_t *ids, int B,
                          tc_step_result *result);
/* with a backend that records graphs (CUDA, TINYCLIP_CUDA_GRAPH=on) a step
 * may run as a recording made once and replayed (engine/step_graph.h says
 * when; the bits are the same); how the trainer's steps ran so far */
const tc_step_graph_state *tc_trainer_graph_state(const tc_trainer *t);
/* the result of the last step (one synchronisation) */
tc_status tc_trainer_read_result(tc_trainer *t, tc_step_result *result);

/* a step's inputs go to the device before its first operation. by default
 * the upload waits for the backend's queue (the caller may reuse its
 * buffers when the step returns). with async inputs the upload is queued
 * without waiting (a DMA from the caller's page-locked buffers): the
 * caller keeps a step's images and ids unchanged until inputs_wait says
 * they were read; lag 0 is the last step's inputs, lag 1 the step before
 * (the scheduler releases batch N-1 after queuing step N, so the device
 * always has a step queued). CPU: every upload has happened on return. */
void tc_trainer_set_async_inputs(tc_trainer *t, int on);
tc_status tc_trainer_inputs_wait(tc_trainer *t, int lag);

/* the same in two halves, for callers with parameters of their own in the
 * clipped norm (the mask optimizer of automatic inheritance):
 * compute runs forward and backward (and, when result is not NULL, reads it
 * back: result->skipped tells the caller to leave its own parameters
 * alone); apply clips by the global norm over the model's gradients plus
 * extra_sum_sq and updates, skipping on the device when the step was not
 * finite. extra_sum_sq != 0 needs the result read (the norm is combined on
 * the host). */
tc_status tc_trainer_compute(tc_trainer *t, const float *images, const int32_t *ids, int B,
                             tc_step_result *result);
tc_status tc_trainer_apply(tc_trainer *t, double extra_sum_sq);
/* the factor apply multiplies gradients by (1 when clipping is off) */
float tc_trainer_clip_coefficient(const tc_trainer *t, double extra_sum_sq);

/* data parallel over comm's ranks (NULL or world size 1: one process, the
 * default). every step call then takes this rank's n = B samples, the same
 * B on every rank; the global batch is N = world * B with rank r's samples at
 * rows r*B... . per step (docs/method.md §1.4, open_clip local_loss + gather-with-grad,
 * DDP): the student's and teacher's features are all-gathered; this rank's
 * loss is the mean over its B rows against all N columns, both directions;
 * the column gradients are reduce-scattered (summed) to their owners and
 * added to the row gradients; after the towers' backward the parameter
 * gradients (logit scale included) are all-reduced with the average, and so
 * is the loss. the mean over ranks of the per-rank losses is the loss of one
 * process over the whole global batch, so the update equals that process's
 * (up to rounding). clipping, the finite check and the reported loss and
 * norm use the reduced values: every rank takes the same decision.
 * the comm's buffers must be the backend's memory (MPI with the CPU backend,
 * NCCL with CUDA). with masks installed, the mask gradients stay local: the
 * caller averages them (host/run/scheduler.c). */
tc_status tc_trainer_set_comm(tc_trainer *t, tc_comm *comm);

/* micro-batches, ZeRO-1, buckets (see tc_parallel_config); before the first
 * step (the buffers whose shape changes are made again, moments at zero) */
tc_status tc_trainer_set_parallel(tc_trainer *t, const tc_parallel_config *p);
tc_parallel_config tc_trainer_parallel(const tc_trainer *t);
/* the gradient buckets of a data-parallel run without zero1 (else 0), and
 * how many of them the last backward started before it returned */
int tc_trainer_buckets(const tc_trainer *t, int *started_by_backward);

/* bytes the trainer holds on its backend (moments, loss and gather buffers) */
size_t tc_trainer_device_bytes(const tc_trainer *t);
/* of which the AdamW moments (per rank: 2P/W floats with zero1) */
size_t tc_trainer_optimizer_bytes(const tc_trainer *t);

/* loss and feature gradients without an update (for tests and evaluation);
 * data parallel: the loss and the parameter gradients are the reduced ones */
tc_status tc_trainer_loss(tc_trainer *t, const float *images, const int32_t *ids, int B,
                          int backward, float *loss);

/* the schedule position (the lr of the next step); the caller may set it,
 * e.g. to the iteration index when earlier iterations were skipped */
int tc_trainer_step_index(const tc_trainer *t);
void tc_trainer_set_step_index(tc_trainer *t, int step);
/* updates since the moments were last reset (Adam's bias correction); the
 * count lives on the device: reading it synchronises */
int tc_trainer_adam_step(tc_trainer *t);
void tc_trainer_set_adam_step(tc_trainer *t, int step);
/* the AdamW moments, host buffers of the layout's packed_total floats (the
 * tensors in layout order, without the padding: the train state's form).
 * with zero1 both are collective (every rank calls them): get gathers every
 * rank's slice into m and v on every rank, set keeps this rank's slice. */
tc_status tc_trainer_get_moments(tc_trainer *t, float *m, float *v);
tc_status tc_trainer_set_moments(tc_trainer *t, const float *m, const float *v);
/* resets moments and step count (after pruning, the original rebuilds its optimizers) */
void tc_trainer_reset_optimizer(tc_trainer *t);
void tc_trainer_set_optim(tc_trainer *t, const tc_optim_config *optim);

#endif
