/* the report of a finished run: one row per stage from its summary.json
 * and its metrics.jsonl (the evaluations during the stage), the inheritance
 * speedup of each inherited student against the from-scratch baseline of
 * its architecture, the training compute of every model's lineage, the
 * experiment's goals, the machine; host/report writes report.md,
 * report.json and the plots. */
#include "run_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "fileio.h"
#include "json.h"
#include "l0.h"
#include "metrics_log.h"
#include "report.h"

#define PATH_CAP 1024

/* the baseline's accuracy at these fractions of its steps sets the targets;
 * the last lies on its plateau and is shown for what it is */
static const double target_fractions[] = {0.25, 0.5, 0.75, 1.0};

typedef struct {
    tc_report_row row;
    char kind[96];
    char metrics[PATH_CAP];
    char lineage[512];
    int64_t *eval_steps;
    double *eval_top1;
    double stage_seconds, resumed_at;
    char cpu[160], blas[64];
    double threads;
} stage_row;

typedef struct {
    const tc_experiment *exp;
    int n;
    stage_row *rows;     /* (n) by stage index; a teacher_cache stage's stays empty */
    tc_report_row *flat; /* (n_flat) the stages that train a model */
    int n_flat;
    tc_report_speedup speedups[TC_EXP_MAX_STAGES];
    int n_speedups;
    tc_goal_result goals[TC_EXP_MAX_GOALS];
    char machine[320], eval_note[400], throughput[512];
    char *notes;
} run_report;

static double num(const tc_json *o, const char *key, double missing) {
    const tc_json *v = tc_json_get(o, key);
    return v && v->type == TC_JSON_NUMBER ? v->number : missing;
}

static void str(const tc_json *o, const char *key, char *buf, size_t cap) {
    const tc_json *v = tc_json_get(o, key);
    snprintf(buf, cap, "%s", v && v->type == TC_JSON_STRING ? v->string : "");
}

static void kind_text(const tc_exp_stage *st, char *buf, size_t cap) {
    if (st->kind == TC_EXP_STAGE_SCRATCH)
        snprintf(buf, cap, "%s",
                 st->model_stage >= 0 ? "scratch baseline" : "from scratch (CLIP loss)");
    else if (st->inherit.kind == TC_EXP_INHERIT_AUTO)
        snprintf(buf, cap, "distill, auto %.0f%% sparsity%s",
                 100.0 * st->inherit.autoc.target_sparsity,
                 st->inherit.autoc.regular ? ", regular" : "");
    else if (st->inherit.kind == TC_EXP_INHERIT_MANUAL)
        snprintf(buf, cap, "distill, manual");
    else
        snprintf(buf, cap, "distill");
}

/* the step from which a stage has its final architecture: an auto stage's
 * pruning step (or its end, when it ends in the mask phase) */
static int64_t final_architecture_from(const tc_exp_stage *st) {
    if (st->inherit.kind != TC_EXP_INHERIT_AUTO) return 0;
    return st->inherit.autoc.prune_step < st->steps ? st->inherit.autoc.prune_step : st->steps;
}

static tc_status read_summary(const tc_experiment *exp, int i, stage_row *r) {
    const tc_exp_stage *st = &exp->stages[i];
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/%s/summary.json", exp->out_dir, st->name);
    char *text;
    size_t len;
    TC_TRY(tc_read_file_bounded(path, 1 << 20, &text, &len));
    tc_json *j;
    tc_status s = tc_json_parse(text, len, path, &j);
    free(text);
    if (s != TC_OK) return s;
    tc_report_row *row = &r->row;
    row->name = st->name;
    row->params = (int64_t)num(j, "params", -1);
    row->params_no_token_emb = (int64_t)num(j, "params_without_token_embedding", -1);
    row->gflops_image = num(j, "gflops_image", NAN);
    row->gflops_text = num(j, "gflops_text", NAN);
    double top1 = num(j, "zeroshot_top1", -1), top5 = num(j, "zeroshot_top5", -1);
    row->top1 = top1 < 0 ? NAN : top1;
    row->top5 = top5 < 0 ? NAN : top5;
    row->images_per_sec = num(j, "inference_images_per_s", NAN);
    row->train_steps = (int64_t)num(j, "steps", -1);
    row->images_per_step = num(j, "images_per_step", NAN);
    row->train_gflop = num(j, "train_gflop", NAN);
    r->resumed_at = num(j, "resumed_at_step", NAN);
    /* a stage resumed part-way was timed only from its resume on */
    row->train_seconds = r->resumed_at == 0 ? num(j, "train_seconds", NAN) : NAN;
    r->stage_seconds = r->resumed_at == 0 ? num(j, "stage_seconds", NAN) : NAN;
    str(j, "cpu", r->cpu, sizeof r->cpu);
    str(j, "blas_core", r->blas, sizeof r->blas);
    r->threads = num(j, "threads", NAN);
    tc_json_free(j);
    kind_text(st, r->kind, sizeof r->kind);
    row->kind = r->kind;
    row->distill = st->kind == TC_EXP_STAGE_DISTILL;
    row->masks = st->inherit.kind == TC_EXP_INHERIT_AUTO;
    snprintf(r->metrics, sizeof r->metrics, "%s/%s/metrics.jsonl", exp->out_dir, st->name);
    row->metrics_path = r->metrics;
    int n_eval = 0;
    TC_TRY(tc_metrics_read_series(r->metrics, "zeroshot_top1", "eval", &r->eval_steps,
                                  &r->eval_top1, &n_eval));
    row->curve = (tc_curve){r->eval_steps, r->eval_top1, n_eval, final_architecture_from(st)};
    return TC_OK;
}

/* the architecture of a checkpoint folder */
static tc_status final_config(const char *dir, tc_model_config *cfg) {
    tc_param_layout l;
    float *p = NULL;
    TC_TRY(tc_checkpoint_load(dir, NULL, cfg, &l, &p));
    free(p);
    tc_param_layout_free(&l);
    return TC_OK;
}

/* the L0 expected size (docs/method.md §3.4) of a pruned tower with 0/1
 * masks, relative to the uniform root it was pruned from */
static double kept_params(const tc_tower_config *root, const tc_tower_config *t) {
    double heads = 0, mlp = 0;
    for (int l = 0; l < t->layers; l++) {
        heads += t->heads[l];
        mlp += t->mlp_width[l];
    }
    double pph = (double)tc_l0_params_per_head(root->width, root->heads[0]) / root->width;
    return t->width * heads * pph + 2.0 * t->width * mlp;
}

static double prunable(const tc_tower_config *t) {
    return tc_l0_prunable_size(t->layers, t->width, t->heads[0], t->mlp_width[0]);
}

/* a line per auto stage: the sparsity its pruned model reached, against the target */
static void sparsity_notes(const tc_experiment *exp, tc_sbuf *notes) {
    for (int i = 0; i < exp->n_stages; i++) {
        const tc_exp_stage *st = &exp->stages[i];
        if (st->inherit.kind != TC_EXP_INHERIT_AUTO) continue;
        const tc_exp_stage *p = st;
        while (p->parent >= 0 && exp->stages[p->parent].inherit.kind == TC_EXP_INHERIT_AUTO)
            p = &exp->stages[p->parent];
        char dir[PATH_CAP];
        tc_model_config root, cfg;
        if (p->parent >= 0)
            snprintf(dir, sizeof dir, "%s/%s/final", exp->out_dir, exp->stages[p->parent].name);
        else
            snprintf(dir, sizeof dir, "%s",
                     p->parent_ext.checkpoint ? p->parent_ext.checkpoint : "");
        if (final_config(dir, &root) != TC_OK) continue;
        snprintf(dir, sizeof dir, "%s/%s/final", exp->out_dir, st->name);
        if (final_config(dir, &cfg) != TC_OK) continue;
        double kept = 0, total = 0;
        if (st->inherit.autoc.vision) {
            kept += kept_params(&root.vision, &cfg.vision);
            total += prunable(&root.vision);
        }
        if (st->inherit.autoc.text) {
            kept += kept_params(&root.text, &cfg.text);
            total += prunable(&root.text);
        }
        if (total <= 0) continue;
        tc_sbuf_printf(notes,
                       "- %s: sparsity reached %.4f of the prunable attention and MLP parameters "
                       "(target %.4f), hidden width %d/%d vision, %d/%d text.\n",
                       st->name, 1.0 - kept / total, st->inherit.autoc.target_sparsity,
                       cfg.vision.width, root.vision.width, cfg.text.width, root.text.width);
    }
}

static int is_cache_stage(const tc_experiment *exp, int i) {
    return exp->stages[i].kind == TC_EXP_STAGE_TEACHER_CACHE;
}

static tc_json *read_json(const char *path) {
    char *text;
    size_t len;
    tc_json *j = NULL;
    if (tc_read_file_bounded(path, 1 << 20, &text, &len) != TC_OK) return NULL;
    if (tc_json_parse(text, len, path, &j) != TC_OK) j = NULL;
    free(text);
    return j;
}

/* the seconds a teacher_cache stage took: its shards' build times (kept with
 * each shard, so a resumed build counts whole) over its processes; NaN
 * without a summary */
static double cache_stage_seconds(const tc_experiment *exp, int i) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/summary.json", exp->out_dir, exp->stages[i].name);
    tc_json *j = read_json(path);
    if (!j) return NAN;
    const double procs = num(j, "processes", 1), secs = num(j, "process_seconds", NAN);
    tc_json_free(j);
    return secs / (procs >= 1 ? procs : 1);
}

/* per image and per caption seconds of the teacher's forward, from the
 * summary of the teacher_cache stage that built stage i's cache */
static int cache_costs(const tc_experiment *exp, int i, double *img_s, double *txt_s) {
    int k = exp->stages[i].cache_stage;
    if (k < 0) return 0;
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/%s/summary.json", exp->out_dir, exp->stages[k].name);
    tc_json *j = read_json(path);
    if (!j) return 0;
    *img_s = num(j, "teacher_image_s", 0);
    *txt_s = num(j, "teacher_text_s", 0);
    tc_json_free(j);
    return *img_s > 0;
}

/* a line per teacher cache (what building it cost, once) and per stage that
 * read one (its images/s, and the estimate without the cache) */
static void cache_notes(const tc_experiment *exp, tc_sbuf *notes) {
    for (int i = 0; i < exp->n_stages; i++) {
        const tc_exp_stage *st = &exp->stages[i];
        char path[PATH_CAP];
        snprintf(path, sizeof path, "%s/%s/summary.json", exp->out_dir, st->name);
        if (st->kind == TC_EXP_STAGE_TEACHER_CACHE) {
            tc_json *j = read_json(path);
            if (!j) continue;
            double rows = num(j, "samples", 0), K = num(j, "augmentations", 1);
            double bytes = num(j, "bytes", 0);
            const tc_json *dt = tc_json_get(j, "dtype");
            tc_sbuf_printf(
                notes,
                "- teacher-feature cache (stage %s): %.0f samples x %.0f augmentation%s, "
                "%s, %.1f MiB "
                "(%.0f bytes per sample and augmentation); built once in %.1f s of "
                "wall time (%.1f process-seconds), the teacher's forward %.3f ms per "
                "image and %.3f ms per caption.\n",
                st->name, rows, K, K == 1 ? "" : "s",
                dt && dt->type == TC_JSON_STRING ? dt->string : "?", bytes / 1048576.0,
                rows > 0 ? bytes / (rows * K) : 0.0, num(j, "wall_seconds", 0),
                num(j, "process_seconds", 0), 1e3 * num(j, "teacher_image_s", 0),
                1e3 * num(j, "teacher_text_s", 0));
            tc_json_free(j);
            continue;
        }
        if (!tc_exp_stage_uses_cache(st)) continue;
        tc_json *j = read_json(path);
        double ips = j ? num(j, "train_images_per_s", 0) : 0, img_s = 0, txt_s = 0;
        tc_json_free(j);
        if (ips <= 0) continue;
        tc_sbuf_printf(notes, "- %s trained on the cache's teacher features at %.1f images/s",
                       st->name, ips);
        if (cache_costs(exp, i, &img_s, &txt_s))
            tc_sbuf_printf(notes,
                           "; with the teacher run live about %.1f images/s (an estimate: its step "
                           "time plus the teacher's forward per sample as measured while building "
                           "the cache; `tinyclip bench --teacher T --cache` measures both)",
                           1.0 / (1.0 / ips + img_s + txt_s));
        tc_sbuf_puts(notes, ".\n");
    }
}

/* each from-scratch stage trained on an earlier stage's architecture is
 * that stage's baseline */
static tc_status speedups(run_report *R) {
    const tc_experiment *exp = R->exp;
    int nf = (int)(sizeof target_fractions / sizeof target_fractions[0]);
    for (int i = 0; i < R->n; i++) {
        const tc_exp_stage *st = &exp->stages[i];
        int x = st->model_stage;
        if (st->kind != TC_EXP_STAGE_SCRATCH || x < 0) continue;
        if (exp->stages[x].kind != TC_EXP_STAGE_DISTILL) continue;
        tc_report_speedup *sp = &R->speedups[R->n_speedups++];
        sp->student = x;
        sp->baseline = i;
        const tc_report_row *a = &R->rows[x].row, *b = &R->rows[i].row;
        TC_TRY(tc_speedup_compute(&a->curve, a->train_steps, &b->curve, b->train_steps,
                                  target_fractions, nf, &sp->sp));
    }
    return TC_OK;
}

/* each stage's lineage: itself, the stages whose weights it starts from, the
 * teachers that distil any of them */
static tc_status lineages(run_report *R) {
    const tc_experiment *exp = R->exp;
    tc_lineage_node nodes[TC_EXP_MAX_STAGES];
    for (int i = 0; i < R->n; i++) {
        const tc_exp_stage *st = &exp->stages[i];
        int distill = st->kind == TC_EXP_STAGE_DISTILL;
        nodes[i] = (tc_lineage_node){.parent = st->parent,
                                     .teacher = distill ? exp->teacher.stage : -1,
                                     .external = st->parent_ext.checkpoint != NULL ||
                                                 (distill && exp->teacher.stage < 0),
                                     .gflop = R->rows[i].row.train_gflop,
                                     .seconds = R->rows[i].row.train_seconds};
    }
    for (int i = 0; i < R->n; i++) {
        tc_lineage l;
        TC_TRY(tc_lineage_sum(nodes, R->n, i, &l));
        stage_row *r = &R->rows[i];
        r->row.lineage_gflop = l.gflop;
        r->row.lineage_seconds = l.seconds;
        r->row.lineage_external = l.external;
        size_t len = 0;
        r->lineage[0] = 0;
        for (int k = 0; k < R->n; k++)
            if (l.members & (1ull << k))
                len += (size_t)snprintf(r->lineage + len,
                                        len < sizeof r->lineage ? sizeof r->lineage - len : 0,
                                        "%s%s", len ? " + " : "", exp->stages[k].name);
        r->row.lineage_names = r->lineage;
    }
    return TC_OK;
}

static void goals(run_report *R) {
    const tc_experiment *exp = R->exp;
    tc_goal_stage gs[TC_EXP_MAX_STAGES];
    double run_seconds = 0.0;
    for (int i = 0; i < R->n; i++) {
        const tc_report_row *r = &R->rows[i].row;
        gs[i] = (tc_goal_stage){r->name, r->top1, r->curve, r->train_steps};
        run_seconds += R->rows[i].stage_seconds; /* NaN when a stage was resumed */
    }
    for (int k = 0; k < exp->n_goals && k < TC_EXP_MAX_GOALS; k++)
        tc_goal_check(&exp->goals[k].goal, gs, R->n, run_seconds, &R->goals[k]);
}

/* the machine of the stages (the first's; a note when another differs) */
static void machine(run_report *R) {
    int first = 0;
    while (first + 1 < R->n && is_cache_stage(R->exp, first))
        first++;
    const stage_row *f = &R->rows[first];
    int same = 1;
    for (int i = first + 1; i < R->n; i++)
        if (!is_cache_stage(R->exp, i))
            same &= !strcmp(R->rows[i].cpu, f->cpu) && !strcmp(R->rows[i].blas, f->blas) &&
                    R->rows[i].threads == f->threads;
    snprintf(R->machine, sizeof R->machine, "%s, %.0f threads, OpenBLAS kernels %s%s",
             f->cpu[0] ? f->cpu : "unknown CPU", f->threads, f->blas[0] ? f->blas : "unknown",
             same ? "" : " (not every stage ran on this machine: see each summary.json)");
}

/* what the evaluations during a stage ran on, and how often */
static void notes_text(run_report *R) {
    const tc_experiment *exp = R->exp;
    const tc_exp_zeroshot *z = &exp->zero_shot;
    int64_t during = z->subset > 0 && (z->max_images <= 0 || z->subset < z->max_images)
                         ? z->subset
                         : z->max_images;
    char every[160] = "";
    size_t len = 0;
    for (int i = 0; i < R->n && len < sizeof every; i++) {
        if (exp->stages[i].kind == TC_EXP_STAGE_TEACHER_CACHE) continue; /* evaluates nothing */
        len += (size_t)snprintf(every + len, sizeof every - len, "%s%s %lld", len ? ", " : "",
                                exp->stages[i].name, (long long)exp->stages[i].eval_every);
    }
    if (during > 0)
        snprintf(R->eval_note, sizeof R->eval_note,
                 "Curves: zero-shot top-1 on the first %lld images of the evaluation set (a fixed "
                 "subset), every N steps (%s) and at each stage's end.",
                 (long long)during, every);
    else
        snprintf(R->eval_note, sizeof R->eval_note,
                 "Curves: zero-shot top-1 on the whole evaluation set, every N steps (%s) and at "
                 "each stage's end.",
                 every);
    snprintf(R->throughput, sizeof R->throughput,
             "%s backend, %s, each model's image tower at its stage's batch",
             exp->backend == TC_EXP_BACKEND_CUDA ? "cuda" : "cpu", R->machine);
}

static void report_free(run_report *R) {
    for (int i = 0; R->rows && i < R->n; i++) {
        free(R->rows[i].eval_steps);
        free(R->rows[i].eval_top1);
    }
    free(R->rows);
    free(R->flat);
    free(R->notes);
}

/* everything the report shows, from the run folder */
static tc_status report_build(const tc_experiment *exp, run_report *R) {
    memset(R, 0, sizeof *R);
    R->exp = exp;
    R->n = exp->n_stages;
    if (R->n < 1) return tc_fail(TC_ERR_ARG, "report: no stages");
    R->rows = calloc((size_t)R->n, sizeof *R->rows);
    R->flat = calloc((size_t)R->n, sizeof *R->flat);
    if (!R->rows || !R->flat) return tc_fail(TC_ERR_OOM, "report: out of memory");
    /* a teacher_cache stage trains no model: it has a note, not a row */
    for (int i = 0; i < R->n; i++) {
        if (is_cache_stage(exp, i))
            R->rows[i].stage_seconds = cache_stage_seconds(exp, i); /* in the run's time */
        else
            TC_TRY(read_summary(exp, i, &R->rows[i]));
    }
    TC_TRY(speedups(R));
    TC_TRY(lineages(R));
    goals(R);
    machine(R);
    notes_text(R);
    /* the report's rows leave the cache stages out: a speedup names rows */
    int row_of[TC_EXP_MAX_STAGES];
    for (int i = 0; i < R->n; i++) {
        row_of[i] = is_cache_stage(exp, i) ? -1 : R->n_flat;
        if (row_of[i] >= 0) R->flat[R->n_flat++] = R->rows[i].row;
    }
    for (int k = 0; k < R->n_speedups; k++) {
        R->speedups[k].student = row_of[R->speedups[k].student];
        R->speedups[k].baseline = row_of[R->speedups[k].baseline];
    }
    tc_sbuf notes = {0};
    sparsity_notes(exp, &notes);
    cache_notes(exp, &notes);
    return tc_sbuf_finish(&notes, &R->notes);
}

static tc_report_options report_options(const run_report *R) {
    return (tc_report_options){.title = R->exp->name,
                               .throughput_note = R->throughput,
                               .machine = R->machine,
                               .eval_note = R->eval_note,
                               .notes = R->notes && R->notes[0] ? R->notes : NULL,
                               .speedups = R->speedups,
                               .n_speedups = R->n_speedups,
                               .goals = R->goals,
                               .n_goals = R->exp->n_goals,
                               .plots = 1};
}

tc_status tc_run_report_write(const tc_experiment *exp) {
    run_report R;
    tc_status s = report_build(exp, &R);
    tc_report_options opt = report_options(&R);
    if (s == TC_OK) s = tc_report_write(exp->out_dir, R.flat, R.n_flat, &opt);
    report_free(&R);
    return s;
}

tc_status tc_run_report_print(FILE *f, const char *run_dir) {
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/experiment.yaml", run_dir);
    tc_experiment *exp;
    TC_TRY(tc_experiment_load(path, NULL, 0, &exp));
    /* the folder may have moved since the run: it is where the files are */
    free(exp->out_dir);
    exp->out_dir = strdup(run_dir);
    run_report R;
    tc_status s = exp->out_dir ? report_build(exp, &R) : tc_fail(TC_ERR_OOM, "out of memory");
    if (s == TC_OK) {
        tc_report_options opt = report_options(&R);
        tc_sbuf b = {0};
        tc_sbuf_printf(&b, "Machine of the run: %s.\n", R.machine);
        tc_report_evidence_md(&b, R.flat, R.n_flat, &opt);
        char *text;
        s = tc_sbuf_finish(&b, &text);
        if (s == TC_OK) {
            fputs(text, f);
            free(text);
        }
    }
    if (exp->out_dir) report_free(&R);
    tc_experiment_free(exp);
    return s;
}
