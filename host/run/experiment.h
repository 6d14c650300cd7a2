/* experiment files: one YAML document describing a whole multi-stage
 * TinyCLIP run, parsed with libfyaml into a validated tc_experiment.
 *
 * contract: tc_experiment_load() applies the --set overrides to the YAML
 * tree, then parses and validates the whole file before anything runs.
 * every problem found is reported (up to TC_EXP_MAX_ERRORS) as
 *   FILE:LINE:COLUMN: KEY.PATH: message
 * (or "--set 'KEY=VALUE': KEY.PATH: message" for a value that came from an
 * override). unknown keys, wrong types, out-of-range values, unknown or
 * later stage parents and teacher references are all errors. on success
 * every field holds a value: either the file's or the original TinyCLIP /
 * open_clip default (docs/experiments.md and docs/method.md §5).
 *
 * schema (defaults in brackets; "!" = required):
 *
 *   name: STR                   [file stem]  run name
 *   seed: INT                   [0]
 *   out: PATH                   [runs/<name>]  run folder
 *   backend: cpu|cuda           [cpu]
 *   precision: fp32|bf16        [fp32 on cpu, bf16 on cuda]
 *   threads: INT                [0 = all cores]
 *   params: {NAME: STR|null}    values for ${NAME} in any string below;
 *                               a null value falls back to the environment
 *   data:
 *     train:
 *       source: fmnist|wds|csv  !
 *       path: PATH              shard pattern "dir/{00000..00099}.tar" (wds),
 *                               csv/tsv file (csv), dataset dir (fmnist,
 *                               [/usr/share/datasets/fashion-mnist])
 *       num_samples: INT        [60000 fmnist; required for wds]
 *       workers: INT            [4]
 *       batch: INT              [1024]  per-process batch of stages that
 *                                       do not set one
 *       csv_img_key: STR        [filepath]
 *       csv_caption_key: STR    [title]
 *       csv_separator: STR      ["\t"]  one character
 *     eval:
 *       zero_shot:              [none]
 *         dataset: fmnist|folder  !
 *         path: PATH            image folder root (folder; one sub-folder per
 *                               class) / dataset dir (fmnist)
 *         classnames: PATH      one name per line (folder)
 *         templates: openai|simple|fmnist|PATH  [openai (80); fmnist for fmnist]
 *         max_images: INT       [0 = all]
 *         subset: INT           [0 = none]  evaluations during a stage use the
 *                               first `subset` images; a stage's end is
 *                               evaluated on them too and on max_images
 *         batch: INT            [256]
 *       retrieval:              [none]
 *         source: wds|csv       !
 *         path: PATH            !
 *         num_samples: INT      [0 = all]
 *         batch: INT            [256]
 *   distributed:                [zero1 false, bucket_mb 25]  data-parallel runs
 *     zero1: BOOL               shard the AdamW moments over the ranks (ZeRO-1)
 *     bucket_mb: NUM            gradient all-reduce bucket size, MiB (0.001..1024)
 *   teacher:                    required when a stage is kind distill
 *     stage: NAME               a train_scratch_clip/distill stage of this run, or
 *     checkpoint: PATH          open_clip / Hugging Face / TinyCLIP checkpoint
 *     model: CFG                model config of the checkpoint
 *     logit_scale: NUM          [50]  fixed teacher logit scale
 *   goals:                      [none]  thresholds checked by the run report
 *     - {kind: top1_at_least, stage: S, top1: F}
 *     - {kind: top1_within, stage: S, of: R, points: P}
 *     - {kind: reach_faster, stage: S, baseline: B, at: F, max_ratio: X}
 *     - {kind: ahead_at_equal_steps, stage: S, baseline: B, points: P}
 *     - {kind: wall_time, minutes: M}
 *   stages: !                   a non-empty list, run in file order
 *     - name: STR !             unique, [A-Za-z0-9_.-]
 *       kind: train_scratch_clip|distill|teacher_cache !
 *       parent: NAME | {checkpoint: PATH, model: CFG}   [none]
 *       model: CFG | {stage: NAME}   required unless derived from the parent
 *                               (auto stages always derive it); {stage: NAME}
 *                               is the final (e.g. pruned) architecture of an
 *                               earlier stage, for a from-scratch baseline
 *       inheritance: none | {kind: manual, vision: TOWER, text: TOWER}
 *                         | {kind: auto, target_sparsity: !, ...}   [none]
 *         manual TOWER: none | {layers: interval_front | [INT...],
 *                                width: leading}         [interval_front, leading]
 *         auto: start_sparsity [parent auto stage's target, else 0],
 *               target_sparsity !, sparsity_warmup [1000], prune_step !,
 *               lambda_init [10], mask_lr [0.02], lambda_lr [-0.02],
 *               round_to 0|8|64 [0], vision [true], text [true],
 *               shape irregular|regular [irregular]: regular ties the masks
 *               so that the pruned model is a plain open_clip ViT
 *       loss: {distill_weight [1.0], alpha [1.0 = affinity only],
 *              logit_scale NUM|learned [50 distill, learned scratch],
 *              teacher_logit_scale [teacher.logit_scale]}
 *       batch: INT              [data.train.batch]
 *       accum_steps: INT        [1]  micro-batches per step (batch / accum_steps
 *                               samples each, a multiple); the loss sees the
 *                               whole batch (engine/train.h)
 *       steps: INT | epochs: NUM   exactly one !  (epochs need num_samples)
 *       optimizer: {lr [1e-4 distill, 5e-4 scratch], wd [0.2], beta1 [0.9],
 *                   beta2 [0.98], eps [1e-6], grad_clip [5, 0 = off]}
 *       schedule: {kind cosine|const [cosine], warmup [prune_step for auto,
 *                  else 2000]}
 *       eval_every: INT         [1000, 0 = at the end only]
 *       checkpoint_every: INT   [1000, 0 = at the end only]
 *       log_every: INT          [100]
 *       keep_checkpoints: INT   [2]  the newest K checkpoints are kept (a damaged
 *                               newest one falls back to the one before)
 *       max_nonfinite_skips: INT [100]  consecutive non-finite losses allowed
 *       augmentations: INT      [0]  a fixed pool of K crops per sample (the live
 *                               equal of a cache of K); teacher_cache: K [1]
 *       teacher_cache: NAME | {path: PATH, dtype: fp32|fp16|bf16}   [none]
 *                               distill: teacher features from that cache
 *                               (a teacher_cache stage, or a folder)
 *     kind teacher_cache takes name, kind, batch (the teacher's), augmentations,
 *       dtype: fp32|fp16|bf16 [fp32], path: PATH [the stage folder],
 *       shard_samples: INT [8192]; it builds the cache and trains nothing
 *
 * CFG is a model config: a path ending in .json (relative to the YAML
 * file's folder), or a bare name such as ViT-B-32, looked up as
 * <yaml dir>/../models/NAME.json, then <source tree>/configs/models/NAME.json.
 * relative PATHs are resolved against the YAML file's folder, except `out`,
 * which is relative to the working directory. */
#ifndef TC_EXPERIMENT_H
#define TC_EXPERIMENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "evidence.h"
#include "status.h"
#include "yaml_table.h"

#define TC_EXP_MAX_ERRORS TC_YAML_MAX_ERRORS
#define TC_EXP_MAX_STAGES 64
#define TC_EXP_MAX_LAYER_LIST 64
#define TC_EXP_MAX_GOALS 32

/* where a value came from: a position in the file (1-based), or an override */
typedef tc_yaml_loc tc_exp_loc;

typedef enum { TC_EXP_BACKEND_CPU = 0, TC_EXP_BACKEND_CUDA = 1 } tc_exp_backend;
typedef enum { TC_EXP_PREC_FP32 = 0, TC_EXP_PREC_BF16 = 1 } tc_exp_precision;
typedef enum {
    TC_EXP_DATA_FMNIST = 0,
    TC_EXP_DATA_WDS = 1,
    TC_EXP_DATA_CSV = 2
} tc_exp_data_source;
typedef enum { TC_EXP_ZS_NONE = 0, TC_EXP_ZS_FMNIST = 1, TC_EXP_ZS_FOLDER = 2 } tc_exp_zs_dataset;
typedef enum {
    TC_EXP_TEMPLATES_OPENAI = 0, /* the 80 OpenAI ImageNet prompts */
    TC_EXP_TEMPLATES_SIMPLE = 1, /* the 7-prompt subset */
    TC_EXP_TEMPLATES_FMNIST = 2, /* the Fashion-MNIST caption templates of host/data */
    TC_EXP_TEMPLATES_FILE = 3,   /* one template per line with {c}, in templates_path */
} tc_exp_templates;
typedef enum {
    TC_EXP_STAGE_SCRATCH = 0,
    TC_EXP_STAGE_DISTILL = 1,
    TC_EXP_STAGE_TEACHER_CACHE = 2, /* builds a teacher-feature cache, trains nothing */
} tc_exp_stage_kind;
typedef enum {
    TC_EXP_INHERIT_NONE = 0,
    TC_EXP_INHERIT_MANUAL = 1,
    TC_EXP_INHERIT_AUTO = 2
} tc_exp_inherit_kind;
typedef enum { TC_EXP_SCHED_COSINE = 0, TC_EXP_SCHED_CONST = 1 } tc_exp_schedule_kind;

typedef struct {
    tc_exp_data_source source;
    char *path;          /* NULL: the loader's default (fmnist only) */
    int64_t num_samples; /* samples per epoch; 0 = unknown */
    int workers;
    int batch;
    char *csv_img_key, *csv_caption_key;
    char csv_separator;
    int resampled;      /* wds: shards drawn with replacement per rank (--dataset-resampled) */
    int shuffle_buffer; /* wds: samples in the shuffle buffer (1000) */
    double *upsampling; /* one factor per "::" source (resampled only), or NULL */
    int n_upsampling;
    int64_t max_image_pixels; /* larger images are skipped (0: Pillow's 89478485) */
    int pipe_retries;         /* pipe:/http(s) shards: runs again of a failed command (3) */
    double pipe_backoff;      /* seconds before the first retry, doubled after each (1) */
    double pipe_timeout;      /* seconds without data before a command is killed (300) */
} tc_exp_train_data;

typedef struct {
    tc_exp_zs_dataset dataset; /* TC_EXP_ZS_NONE: no zero-shot evaluation */
    char *path, *classnames;
    tc_exp_templates templates;
    char *templates_path; /* TC_EXP_TEMPLATES_FILE */
    int64_t max_images;   /* 0 = all */
    int64_t subset; /* evaluations during a stage: the first `subset` images; 0 = max_images */
    int batch;
} tc_exp_zeroshot;

typedef struct {
    int enabled;
    tc_exp_data_source source; /* wds or csv */
    char *path;
    int64_t num_samples; /* 0 = all */
    int batch;
} tc_exp_retrieval;

/* a model source outside this run */
typedef struct {
    char *checkpoint; /* NULL when the model is built from the config alone */
    char *model;      /* resolved model config path */
    tc_exp_loc model_loc, checkpoint_loc;
} tc_exp_external;

typedef struct {
    int stage; /* index into stages, or -1 for an external checkpoint */
    tc_exp_external ext;
    float logit_scale;
    int present; /* 0 when the file has no teacher */
} tc_exp_teacher;

typedef enum { TC_EXP_LAYERS_INTERVAL_FRONT = 0, TC_EXP_LAYERS_LIST = 1 } tc_exp_layer_select;

typedef struct {
    int inherit; /* 0: the tower is initialised from scratch */
    tc_exp_layer_select layers;
    int n_layers; /* TC_EXP_LAYERS_LIST: teacher layer index per student layer */
    int layer_list[TC_EXP_MAX_LAYER_LIST];
    /* width: always the leading slice (the original's only rule) */
} tc_exp_manual_tower;

typedef struct {
    float start_sparsity, target_sparsity;
    int64_t sparsity_warmup; /* steps over which the target ramps linearly */
    int64_t prune_step;      /* mask phase length; pruned into a dense model here */
    float lambda_init, mask_lr, lambda_lr;
    int round_to;     /* 0, 8 or 64: kept units rounded up to a multiple */
    int regular;      /* shape: regular (tied masks, open_clip-regular result) */
    int vision, text; /* towers that get masks */
} tc_exp_auto;

typedef struct {
    tc_exp_inherit_kind kind;
    tc_exp_manual_tower vision, text; /* manual */
    tc_exp_auto autoc;                /* auto */
} tc_exp_inheritance;

typedef struct {
    float distill_weight, alpha;
    int learned_logit_scale; /* 1: the student's logit scale is trained (clamped to ln 100) */
    float logit_scale;       /* the fixed value when not learned */
    float teacher_logit_scale;
} tc_exp_loss;

typedef struct {
    float lr, wd, beta1, beta2, eps, grad_clip;
} tc_exp_optimizer;

typedef struct {
    tc_exp_schedule_kind kind;
    int64_t warmup;
} tc_exp_schedule;

typedef struct {
    char *name;
    tc_exp_stage_kind kind;
    int parent;                 /* stage index, -1: external checkpoint or none */
    tc_exp_external parent_ext; /* parent_ext.checkpoint != NULL: an external parent */
    char *model;                /* resolved config path; NULL when derived from the parent */
    int model_stage;            /* model: {stage: NAME}: the final architecture of that earlier
                                   stage (e.g. a pruned student trained again from scratch); -1 */
    tc_exp_loc model_loc, loc;  /* loc: the stage's list item */
    tc_exp_inheritance inherit;
    tc_exp_loss loss;
    int batch;
    int accum_steps; /* micro-batches per step; batch is a multiple */
    int64_t steps;   /* resolved from epochs when given that way */
    double epochs;   /* 0 when given as steps */
    tc_exp_optimizer opt;
    tc_exp_schedule sched;
    int64_t eval_every, checkpoint_every, log_every;
    int keep_checkpoints; /* the newest this many checkpoints are kept */
    int max_nonfinite_skips;
    /* fixed augmentations: teacher_cache, K stored per sample (default 1);
     * other stages, 0 (a fresh crop every epoch) or a pool of K per sample
     * seeded by the run's seed, as a cache of K holds them */
    int augmentations;
    /* teacher_cache stages */
    int cache_dtype;   /* 0 fp32, 1 fp16, 2 bf16 (host/data/teacher_cache.h) */
    char *cache_path;  /* where the cache is built; NULL: the stage folder */
    int shard_samples; /* rows per cache shard of an indexable source */
    /* distill stages whose teacher features come from a cache */
    int cache_stage;        /* teacher_cache: NAME, a teacher_cache stage; -1 */
    char *cache_dir;        /* teacher_cache: {path: DIR}, a cache built elsewhere */
    int cache_expect_dtype; /* teacher_cache: {dtype: ...}; -1: any */
    tc_exp_loc cache_loc;   /* where teacher_cache was given */
} tc_exp_stage;

/* 1 when the stage reads its teacher features from a cache */
int tc_exp_stage_uses_cache(const tc_exp_stage *st);
/* the cache folder stage i builds (teacher_cache) or reads (distill with a
 * cache): its path, else the stage folder <out>/<name>; "" when none */
struct tc_experiment;
void tc_exp_cache_dir(const struct tc_experiment *e, int i, char *buf, size_t cap);

/* a goal of the run report (host/report/evidence.h); the stage indices are
 * resolved from the names once every stage is read */
typedef struct {
    tc_goal goal;
    char *stage_name, *other_name;
    tc_exp_loc loc;
} tc_exp_goal;

typedef struct tc_experiment {
    char *source;   /* the file name used in messages */
    char *base_dir; /* folder relative paths were resolved against */
    char *name;
    int64_t seed;
    char *out_dir;
    tc_exp_backend backend;
    tc_exp_precision precision;
    int threads;
    tc_exp_train_data train;
    tc_exp_zeroshot zero_shot;
    tc_exp_retrieval retrieval;
    tc_exp_teacher teacher;
    int zero1;        /* distributed.zero1 */
    double bucket_mb; /* distributed.bucket_mb */
    int n_stages;
    tc_exp_stage *stages;
    int n_goals;
    tc_exp_goal *goals;
    char *resolved_yaml; /* the document after overrides, for the run folder */
} tc_experiment;

/* one reported problem (text, line, column, key_path), and all of them */
typedef tc_yaml_error tc_exp_error;
typedef tc_yaml_errors tc_exp_errors;

/* reads, overrides ("key.path=value", e.g. "stages.2.batch=64" or
 * "stages.auto50.optimizer.lr=1e-4") and validates an experiment file.
 * on failure *out is NULL and tc_last_error() holds the errors, one per line
 * (as many as fit). */
tc_status tc_experiment_load(const char *path, const char *const *overrides, int n_overrides,
                             tc_experiment **out);

/* the same, also filling `errors` (optional) with every problem found, for a
 * caller that prints them all */
tc_status tc_experiment_load_diag(const char *path, const char *const *overrides, int n_overrides,
                                  tc_experiment **out, tc_exp_errors *errors);

/* the same from memory; `source` names the text in messages, `base_dir`
 * resolves relative paths (NULL = "."); `errors` (optional) receives every
 * problem found, with its position */
tc_status tc_experiment_parse(const char *yaml, size_t len, const char *source,
                              const char *base_dir, const char *const *overrides, int n_overrides,
                              tc_experiment **out, tc_exp_errors *errors);

void tc_experiment_free(tc_experiment *exp);

/* index of the stage called `name`, -1 when absent */
int tc_experiment_find_stage(const tc_experiment *exp, const char *name);

/* names of enum values, for printing */
const char *tc_exp_stage_kind_name(tc_exp_stage_kind k);
const char *tc_exp_inherit_kind_name(tc_exp_inherit_kind k);
const char *tc_exp_data_source_name(tc_exp_data_source s);

/* the lr the schedule gives at `step` (0-based): linear warmup lr*(step+1)/warmup,
 * then cosine to 0 (or constant). for auto stages the warmup is the mask phase
 * and the cosine restarts from the base lr at prune_step, as the original. */
double tc_exp_stage_lr(const tc_exp_stage *st, int64_t step);

/* internal, shared by experiment.c and experiment_set.c: applies one
 * override to a libfyaml document. the nodes it creates or replaces go into
 * `touched` (so errors on them name the override); returns their count, or
 * -1 with the reason in err. */
struct fy_document;
struct fy_node;
int tc_exp_apply_set(struct fy_document *fyd, const char *override, struct fy_node **touched,
                     int max_touched, char *err, size_t errcap);

#endif
