/* runs a validated experiment: its stages in file order, each from its
 * parent's final weights (or from scratch), with the teacher, data, losses,
 * inheritance, evaluation and checkpoints the experiment describes.
 *
 * run folder (exp->out_dir):
 *   run.lock                       the one writer's lock (run_lock.h)
 *   experiment.yaml                the resolved experiment; describes the weights here
 *   changes.log, replaced/N/       free changes between runs; stages --restart-from moved
 *   <stage>/inputs.txt             what shapes the stage's results (run_inputs.c)
 *   <stage>/checkpoints/step-N/    open_clip weights + config + train_state.safetensors
 *                                  + manifest.txt (the newest keep_checkpoints)
 *   <stage>/final/                 open_clip_model.safetensors + open_clip_config.json
 *   <stage>/metrics.jsonl, <stage>/events.out.tfevents.*
 *   <stage>/summary.json           written last: the stage is done
 *   report.md, report.json, *.png
 *
 * resume: running the same experiment again skips finished stages and
 * continues an unfinished one from its newest intact checkpoint; the result
 * is bit-identical to a run that never stopped (same threads, same CPU or
 * GPU, same build; the run warns when they differ from the checkpoint's).
 * a stage whose inputs changed is refused (run_folder.c) unless asked for
 * with restart_from. one writer per run folder: run_lock.h.
 *
 * data parallel: started by mpirun or srun (host/dist/world.h detects it),
 * every process is one rank running the same stages in lockstep with the
 * stage's batch per process (global batch = ranks x batch): its own data
 * shard (loader rank/world_size), its own mask samples in the mask phase
 * (mask gradients averaged over ranks), the trainer's gathered loss and
 * averaged gradients (engine/train.h). rank 0 alone writes the run folder
 * (checkpoints with every rank's loader cursor, metrics, final weights,
 * summaries, report) and prints progress; every rank resumes from the
 * checkpoint rank 0 finds. CPU backend: MPI collectives; CUDA: one GPU per
 * rank by local rank, NCCL bootstrapped through MPI. a failing rank aborts
 * the job with its message; a lost rank stops the others (comm timeout). */
#ifndef TC_SCHEDULER_H
#define TC_SCHEDULER_H

#include <stdio.h>

#include "experiment.h"

typedef struct {
    FILE *log;                /* progress and messages (NULL: stdout) */
    int force_tty;            /* -1 detect, 0 plain lines, 1 terminal progress */
    const char *restart_from; /* run this stage and its dependants again (NULL: none) */
} tc_run_options;

/* what is checked before anything is written (the same checks and
 * messages as --dry-run's): every model config, every checkpoint from
 * outside the run (header against config), the --restart-from stage */
tc_status tc_run_validate(const tc_experiment *exp, const char *restart_from);

/* validates, then (rank 0) locks the run folder, compares it with the
 * experiment (run_folder.c), and runs the stages */
tc_status tc_run_experiment(const tc_experiment *exp, const tc_run_options *opt);

#endif
