/* the stage plan of an experiment: stages in run order (file order, which
 * validation guarantees is a topological order of the DAG: every parent,
 * teacher stage and {stage: NAME} model comes earlier), each with the
 * architecture it trains, its parameter count and a memory estimate.
 * `tinyclip train --dry-run` prints it with tc_stage_plan_print.
 *
 * architectures: a stage with `model` loads that config; an auto stage
 * masks its parent's architecture (for an auto parent: the parent's
 * architecture before pruning, since pruned models are re-expanded to full
 * size); inheritance none + parent copies the parent's final architecture.
 * the final architecture of an auto stage exists only after its pruning
 * step, so stages that depend on it are planned with the pre-pruning shape
 * and marked estimated.
 *
 * memory estimate (bytes), per process:
 *   student   (16 + c) * P        fp32 weights, grads, AdamW m and v;
 *                                 c = 2 for the bf16 compute copy on cuda, else 0
 *   teacher   (4 + c) * P_t       frozen, forward only
 *   activations saved for backward, per tower, a = 4 (fp32) or 2 (bf16):
 *             a * B * T * (4C + sum_l (4 A_l + 2 M_l))
 *           + a * B * T^2 * sum_l NH_l          (attention probabilities)
 *     with T tokens (grid^2 + 1 or context length), C width, A_l = 64 NH_l
 *     attention width and M_l MLP width of layer l; the 4C covers the
 *     embedding, ln_pre/ln_final and pooled outputs. the teacher keeps one
 *     layer's worth: a * B * T * (4C + 4A + 2M) + a * B * T^2 * NH.
 *   logits    4 * 4 * B^2           student and teacher, both directions
 * it ignores allocator slack, workspace of BLAS/cuBLAS and the data
 * pipeline's queue; treat it as a lower bound. */
#ifndef TC_STAGE_PLAN_H
#define TC_STAGE_PLAN_H

#include <stdio.h>

#include "experiment.h"
#include "model_config.h"
#include "params.h"
#include "status.h"

typedef struct {
    double student, teacher, activations, logits, total; /* bytes */
} tc_stage_memory;

typedef struct {
    int index;                   /* into exp->stages */
    const tc_exp_stage *stage;
    tc_model_config model;       /* the architecture trained (before pruning for auto) */
    char model_source[256];      /* config path, or how it was derived */
    int estimated;               /* 1: derived from a stage pruned at run time */
    tc_param_counts params;
    /* auto: prunable parameters (attention + MLP blocks of masked towers) and the
     * expected total after pruning: params.total - target * prunable; else params.total */
    size_t prunable;
    double params_after;
    int has_teacher;
    tc_model_config teacher;
    tc_param_counts teacher_params;
    int deps[3], n_deps;         /* parent, teacher stage, model stage (indices, earlier) */
    tc_stage_memory memory;
} tc_stage_plan_entry;

typedef struct {
    const tc_experiment *exp;
    int n;
    tc_stage_plan_entry *entries; /* run order */
} tc_stage_plan;

/* loads every model config the experiment names; fails naming the stage, the
 * YAML position of its `model`, and the config's own error */
tc_status tc_stage_plan_build(const tc_experiment *exp, tc_stage_plan **out);
void tc_stage_plan_free(tc_stage_plan *plan);

/* every checkpoint from outside the run (the teacher's, external parents)
 * checked against its model config from its header alone: names, shapes,
 * dtypes, file size (engine/checkpoint.h tc_checkpoint_check). fails naming
 * the YAML position of its `checkpoint` key. run before the first write of
 * a run, and by --dry-run after the plan is printed */
tc_status tc_stage_plan_check_checkpoints(const tc_stage_plan *plan);

/* the --dry-run text: per stage kind, parent, inheritance, model shape,
 * parameter counts, steps, batch and the memory estimate */
void tc_stage_plan_print(FILE *f, const tc_stage_plan *plan);

/* the estimate above for one architecture (teacher may be NULL) */
tc_stage_memory tc_stage_memory_estimate(const tc_model_config *student, const tc_model_config *teacher,
                                         int batch, int cuda_bf16);

#endif
