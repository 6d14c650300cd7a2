/* inside the scheduler (host/run): the state of a run and of one stage, and
 * the functions its files share; not for other callers.
 *
 *   scheduler.c        the entry point: world, tokenizer, templates, stages, report
 *   run_stage.c        one stage: resume or start, the step loop, the end
 *   run_build.c        the student, the teacher, the loader; weights on the host
 *   run_masks.c        automatic inheritance: L0 masks, the masked step, pruning
 *   run_checkpoint.c   checkpoint folders: save, find the newest intact one, resume
 *   run_eval.c         zero-shot evaluation, metrics lines, summary.json
 *   run_folder.c       the run folder before the stages: compare, restart, clean, record
 *   run_inputs.c       the inputs of a stage, their fingerprint and differences
 *   run_lock.c         one writer per run folder (run_lock.h)
 *   manifest.c         checksums of the files of a folder of weights (manifest.h)
 *   run_cache.c        teacher_cache stages; a distill stage's cache, checked
 *   cache_build.c      building a teacher-feature cache (cache_build.h)
 */
#ifndef TC_SCHEDULER_INTERNAL_H
#define TC_SCHEDULER_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "experiment.h"
#include "fault.h"
#include "l0.h"
#include "loader.h"
#include "metrics_log.h"
#include "model.h"
#include "params.h"
#include "retrieval.h"
#include "run_lock.h"
#include "tb_events.h"
#include "teacher_cache.h"
#include "tokenizer.h"
#include "train.h"
#include "zeroshot.h"

#define PATH_CAP 1024
#define CKPT_CAP (PATH_CAP + 320)

/* the inputs of a stage (run_inputs.c): "result" lines shape its results,
 * "free" lines cannot; the fingerprint is of the result lines */
typedef struct {
    int n, cap, oom;
    char **key, **value;
    unsigned char *result;
    uint64_t fingerprint;
} stage_inputs;

typedef struct {
    int done;
    tc_model_config cfg; /* final architecture */
    int has_root;        /* the stage was (re)expanded from this uniform shape */
    tc_model_config root;
    char final_dir[PATH_CAP];
} stage_result;

typedef struct {
    const tc_experiment *exp;
    FILE *log;
    int force_tty;
    tc_backend *be;
    tc_batch_allocator batch_allocator; /* the loader's: pinned memory for the CUDA backend */
    tc_tokenizer *tok;
    stage_result *res;
    /* zero-shot templates */
    const char **templates;
    int n_templates;
    char **template_storage;
    tc_faults faults; /* the test build's injected faults (fault.h) */
    /* data parallel: every rank runs the same stages in lockstep; rank 0
     * alone writes files (run folder, checkpoints, metrics, reports) */
    tc_comm *comm;
    int rank, world;
    /* what this rank computes on (host/dist/world.h), for the train state */
    int threads;
    const char *device, *build;
    /* rank 0: the folder's lock, the inputs of every stage */
    tc_run_lock lock;
    stage_inputs *inputs;
    const char *restart_from; /* --restart-from STAGE, or NULL */
    /* the teacher's part of a cache key, computed once per run */
    int teacher_key_ready;
    tc_cache_key teacher_key;
} run_ctx;

/* one tower's L0 state during a mask phase */
typedef struct {
    int on;
    tc_l0_masks masks;
    tc_l0_adamw opt;
    tc_l0_rng rng;
    float *zg, *dz_dloga, *dloss_dg; /* host, per gate: n_loga each */
    float *z, *dloss_dz, *grad;      /* host: n_z, n_z, count */
    tc_l0_device_layout dl;          /* the device vectors' aligned rows */
    float *stage;                    /* host: dl.total, z or dz in that layout */
    float *z_dev, *dz_dev;           /* device: dl.total */
    tc_tower_masks tm;
} tower_l0;

/* weights on the host */
typedef struct {
    tc_model_config cfg;
    tc_param_layout layout;
    float *params;
} host_model;

/* the train state's counters */
typedef struct {
    long long step; /* iterations done in this stage */
    long long adam_step;
    long long nonfinite; /* consecutive skipped steps */
    int masked;          /* still in the mask phase */
    tc_loader_cursor cursor;
    long long global_batch; /* processes x batch of the run that saved it */
} state_meta;

/* one stage while it runs */
typedef struct {
    run_ctx *c;
    int i;
    const tc_exp_stage *st;
    host_model init; /* the student's starting weights (host) */
    int masked;      /* auto inheritance: the mask phase is to run */
    tower_l0 l0[2];
    tc_model *student, *teacher;
    tc_teacher_cache *cache; /* teacher features from a cache instead of a teacher */
    tc_trainer *trainer;
    tc_loader *loader;
    tc_metrics_log *metrics;
    tc_tb_writer *tb;
    state_meta meta;
    int batch; /* samples per process and step (the stage's batch) */
    int micro; /* samples per micro-batch: batch / accum_steps (the models' max batch) */
    /* the trainer counts skipped steps on the device from its creation:
     * steps since then, and the consecutive skips carried in from before */
    long long trainer_steps, nonfinite_base;
    long long resumed_at;      /* the step this process started the stage from */
    int64_t source_logged[16]; /* samples per "::" data source at the last metrics line */
} stage_run;

/* ---- scheduler.c ---- */
double wall_seconds(void);
void logf_run(run_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* out_dir/<stage i>[/sub] into buf (PATH_CAP bytes) */
void stage_path(const run_ctx *c, int i, const char *sub, char *buf);

/* ---- run_stage.c ---- */
tc_status run_stage(run_ctx *c, int i);

/* ---- run_build.c ---- */
void host_model_free(host_model *h);
tc_status host_model_load(const char *path, const char *config, host_model *h);
tc_status host_model_random(tc_backend *be, const tc_model_config *cfg, uint64_t seed,
                            host_model *h);
/* the final weights of stage k, verified against their manifest */
tc_status load_stage_final(run_ctx *c, int k, host_model *h);
tc_status load_parent(run_ctx *c, int i, host_model *h);
/* the architecture and starting weights of the student, into r->init */
tc_status build_student(stage_run *r);
/* the student (masked: with the L0 masks of r->l0) and its trainer */
tc_status make_student(stage_run *r, const tc_model_config *cfg, const float *params, int masked);
tc_status make_teacher(stage_run *r);
/* the run's teacher, its weights on the host */
tc_status load_teacher(run_ctx *c, host_model *h);
tc_status open_loader(stage_run *r, const tc_loader_cursor *resume);
/* the training data's spec and source options, as the loader opens them */
const char *train_source(const tc_experiment *e, tc_source_opts *o);
/* samples_sourceN (samples of each "::" data source since the last metrics
 * line, all processes) appended to keys/vals, 0 with one source; every rank
 * calls it (a collective) */
int source_counts(stage_run *r, const char **keys, double *vals);

/* ---- run_masks.c ---- */
/* automatic inheritance: the parent at the full shape, with masks */
tc_status build_auto_student(stage_run *r, uint64_t seed);
void l0_free(tc_backend *be, tower_l0 *t);
uint64_t l0_rank_seed(uint64_t seed, int rank);
tc_status l0_deterministic(stage_run *r);
/* t->z (packed, n_z) into the aligned device vector; nothing when t is off */
tc_status l0_upload_z(tc_backend *be, tower_l0 *t);
/* the mask phase ends: deterministic masks, prune, a fresh dense student */
tc_status prune_student(stage_run *r);
/* one iteration of the mask phase: sample, step, mask gradients, Lagrangian, mask AdamW;
 * *lag: the Lagrangian and the sparsities it was computed from */
tc_status masked_step(stage_run *r, const tc_batch *b, tc_step_result *res,
                      tc_l0_lagrangian_result *lag);

/* ---- run_cache.c ---- */
/* a teacher_cache stage: built (or found complete), summary.json */
tc_status run_cache_stage(run_ctx *c, int i);
/* a distill stage's cache: opened, checked against the run, every shard's
 * checksum verified (each process its share), into r->cache */
tc_status open_stage_cache(stage_run *r);

/* ---- cache_build.c ---- */
typedef struct {
    const char *name;          /* the stage, or "cache": messages and faults */
    const char *dir;           /* the cache folder */
    const char *teacher_label; /* the teacher in messages */
    const tc_model_config *teacher_cfg;
    const float *teacher_params;
    size_t teacher_nparams;
    const char *data;
    const tc_source_opts *source;
    int64_t max_image_pixels;
    int augmentations, dtype, rows_per_shard, batch;
    uint64_t aug_seed;
    tc_backend *be;
    tc_comm *comm;
    int rank, world;
    tc_tokenizer *tok;
    FILE *log;
    const tc_faults *faults;
} cache_build_args;
/* builds what is missing of the cache (cache_build.h); totals, size and
 * rows of the finished cache */
tc_status cache_build(const cache_build_args *a, tc_cache_build_stats *totals, uint64_t *bytes,
                      int64_t *rows);
/* a key's teacher part (XXH3 of the config without its name, of the n
 * weights); label names it in messages */
tc_status cache_key_teacher(tc_cache_key *k, const char *label, const tc_model_config *cfg,
                            const float *params, size_t n);
/* the run's teacher in messages: "stage NAME" or its checkpoint */
void teacher_label(const run_ctx *c, char *buf, size_t cap);
/* a key's transform part: the train transform and decoding of size S */
void cache_key_transform(tc_cache_key *k, int image_size, int context_length);

/* ---- run_checkpoint.c ---- */
/* the newest intact checkpoint folder of a stage (its manifest verified; a
 * damaged newer one is renamed step-N.damaged and the fall-back said), ""
 * when there is none; fails when checkpoints exist but none is intact.
 * out has CKPT_CAP bytes */
tc_status latest_checkpoint(run_ctx *c, int i, char *out);
/* rank 0: the complete folder tmp becomes checkpoints/<name>; the newest
 * keep_checkpoints are kept (run_checkpoint_dirs.c) */
tc_status publish_checkpoint(run_ctx *c, int i, const char *tmp, const char *name);
/* restores weights, moments, masks and counters from a checkpoint folder */
tc_status resume_from(stage_run *r, const char *ckpt);
/* a checkpoint of another number of processes: r->batch and r->micro that
 * keep its global batch (before the models are made) */
tc_status keep_global_batch(stage_run *r, const char *ckpt);
/* a checkpoint of the stage as it is now (rank 0 writes it) */
tc_status checkpoint_stage(stage_run *r);

/* ---- run_inputs.c ---- */
tc_status stage_inputs_build(const tc_experiment *e, int i, const uint64_t *fps, stage_inputs *in);
void stage_inputs_free(stage_inputs *in);
/* written with mode 0600 when a value holds a secret (run_text_holds_secret) */
tc_status stage_inputs_write(const stage_inputs *in, const char *stage, const char *path);
/* 1 when tc_shard_redact would hide part of text (a URL's password, query
 * string, a NAME=value word): files that keep it are written 0600 */
int run_text_holds_secret(const char *text);
tc_status stage_inputs_read(const char *path, stage_inputs *in);
/* calls fn for every key whose value differs (or is only in one); returns how many */
typedef void (*stage_inputs_diff_fn)(void *ctx, const char *key, const char *was, const char *now,
                                     int result);
int stage_inputs_diff(const stage_inputs *old, const stage_inputs *now, stage_inputs_diff_fn fn,
                      void *ctx);

/* ---- run_folder.c ---- */
/* rm -rf in process (symbolic links removed, never followed); 0 on success */
int remove_tree(const char *path);
/* the inputs of every stage, in order (each includes its dependencies' fingerprints) */
tc_status run_inputs_build(run_ctx *c);
void run_inputs_free(run_ctx *c);
/* rank 0, lock held: compare with the earlier run, restart, clean, experiment.yaml */
tc_status run_folder_prepare(run_ctx *c);
/* <stage>/inputs.txt from c->inputs */
tc_status write_stage_inputs(run_ctx *c, int i);

/* ---- run_eval.c ---- */
tc_status load_templates(run_ctx *c);
void free_templates(run_ctx *c);
tc_status metrics_write(tc_metrics_log *m, int64_t step, const char *event, int n,
                        const char **keys, const double *vals);
tc_status metrics_sync(tc_metrics_log *m);
/* the images of the evaluations during a stage (data.eval.zero_shot.subset)
 * and of the one at its end (max_images); 0 = all */
int64_t eval_images_during(const run_ctx *c);
/* zero-shot on the first max_images images (0 = all) */
tc_status eval_now(stage_run *r, int64_t max_images, tc_zeroshot_result *zr);
/* event "eval" (the curve) or "eval_full" (the whole set at the stage's end) */
tc_status log_eval(stage_run *r, const char *event, const tc_zeroshot_result *zr);
/* images/s of the final model's image tower at the stage batch */
double inference_speed(run_ctx *c, tc_model *m, int batch);
/* what summary.json tells besides the model */
typedef struct {
    double stage_seconds; /* the stage in this process: build, steps, evaluations, end */
    double train_seconds; /* the steps alone: evaluations and checkpoints taken out */
    double eval_seconds;  /* evaluations during the stage and at its end */
    long long resumed_at; /* the step this process started from; 0: the stage's start */
    double train_ips, wait_fraction;
} stage_timing;
tc_status write_summary(stage_run *r, const tc_zeroshot_result *zr, int has_eval,
                        const tc_retrieval_result *rr, double ips, const stage_timing *t);

#endif
