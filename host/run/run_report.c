#include "run_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_metrics.h"
#include "fileio.h"
#include "json.h"
#include "metrics_log.h"
#include "report.h"
#include "checkpoint.h"
#include "l0.h"

#define PATH_CAP 1024

typedef struct {
    tc_report_row row;
    char kind[96];
    char metrics[PATH_CAP];
    int64_t *eval_steps;
    double *eval_top1;
    int n_eval;
} stage_row;

static double num(const tc_json *o, const char *key, double missing) {
    const tc_json *v = tc_json_get(o, key);
    return v && v->type == TC_JSON_NUMBER ? v->number : missing;
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
    row->train_gflops_per_s = num(j, "train_gflops_per_s", NAN);
    row->train_steps = (int64_t)num(j, "steps", -1);
    row->steps_to_match = -2;
    row->speedup = NAN;
    tc_json_free(j);
    const char *inh = st->inherit.kind == TC_EXP_INHERIT_AUTO     ? "auto"
                      : st->inherit.kind == TC_EXP_INHERIT_MANUAL ? "manual"
                                                                  : NULL;
    if (st->kind == TC_EXP_STAGE_SCRATCH)
        snprintf(r->kind, sizeof r->kind, "%s", st->model_stage >= 0 ? "scratch baseline" : "from scratch (CLIP loss)");
    else if (inh && st->inherit.kind == TC_EXP_INHERIT_AUTO)
        snprintf(r->kind, sizeof r->kind, "distill, auto %.0f%% sparsity%s",
                 100.0 * st->inherit.autoc.target_sparsity,
                 st->inherit.autoc.regular ? ", regular" : "");
    else
        snprintf(r->kind, sizeof r->kind, "distill%s%s", inh ? ", " : "", inh ? inh : "");
    row->kind = r->kind;
    snprintf(r->metrics, sizeof r->metrics, "%s/%s/metrics.jsonl", exp->out_dir, st->name);
    row->metrics_path = r->metrics;
    return tc_metrics_read_series(r->metrics, "zeroshot_top1", "eval", &r->eval_steps, &r->eval_top1,
                                  &r->n_eval);
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
        if (p->parent >= 0) snprintf(dir, sizeof dir, "%s/%s/final", exp->out_dir, exp->stages[p->parent].name);
        else snprintf(dir, sizeof dir, "%s", p->parent_ext.checkpoint ? p->parent_ext.checkpoint : "");
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
        tc_sbuf_printf(notes, "- %s: sparsity reached %.4f of the prunable attention and MLP parameters "
                              "(target %.4f), hidden width %d/%d vision, %d/%d text.\n",
                       st->name, 1.0 - kept / total, st->inherit.autoc.target_sparsity, cfg.vision.width,
                       root.vision.width, cfg.text.width, root.text.width);
    }
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
            tc_sbuf_printf(notes,
                           "- teacher cache %s: %.0f samples x %.0f augmentation%s, %s, %.1f MiB "
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

tc_status tc_run_report_write(const tc_experiment *exp) {
    int n = exp->n_stages;
    stage_row *rows = calloc((size_t)n, sizeof *rows);
    tc_report_row *flat = calloc((size_t)n, sizeof *flat);
    tc_status s = rows && flat ? TC_OK : tc_fail(TC_ERR_OOM, "report: out of memory");
    /* a teacher_cache stage trains no model: it has a note, not a row */
    for (int i = 0; s == TC_OK && i < n; i++)
        if (exp->stages[i].kind != TC_EXP_STAGE_TEACHER_CACHE) s = read_summary(exp, i, &rows[i]);
    /* the inheritance speedup: a from-scratch stage trained on the architecture
     * of an earlier stage X sets the bar; X's steps to reach its final
     * accuracy, against the scratch stage's steps */
    for (int i = 0; s == TC_OK && i < n; i++) {
        const tc_exp_stage *st = &exp->stages[i];
        int x = st->model_stage;
        if (st->kind != TC_EXP_STAGE_SCRATCH || x < 0 || isnan(rows[i].row.top1)) continue;
        stage_row *inh = &rows[x];
        inh->row.steps_to_match =
            tc_steps_to_reach(inh->eval_steps, inh->eval_top1, inh->n_eval, rows[i].row.top1);
        inh->row.speedup = tc_report_speedup(rows[i].row.train_steps, inh->row.steps_to_match);
    }
    int nflat = 0;
    for (int i = 0; s == TC_OK && i < n; i++)
        if (exp->stages[i].kind != TC_EXP_STAGE_TEACHER_CACHE) flat[nflat++] = rows[i].row;
    char note[256];
    snprintf(note, sizeof note, "%s backend, %d threads; inference images/s at each stage's batch",
             exp->backend == TC_EXP_BACKEND_CUDA ? "cuda" : "cpu", exp->threads);
    tc_sbuf notes = {0};
    tc_sbuf_puts(&notes, "Steps to match: evaluations of the inherited student are taken at its stage's "
                         "eval interval, counted from the start of its own stage.\n\n");
    sparsity_notes(exp, &notes);
    cache_notes(exp, &notes);
    char *notes_text = NULL;
    if (s == TC_OK) s = tc_sbuf_finish(&notes, &notes_text);
    else tc_sbuf_free(&notes);
    tc_report_options opt = {.title = exp->name, .throughput_note = note, .notes = notes_text, .plots = 1};
    if (s == TC_OK) s = tc_report_write(exp->out_dir, flat, nflat, &opt);
    free(notes_text);
    for (int i = 0; rows && i < n; i++) {
        free(rows[i].eval_steps);
        free(rows[i].eval_top1);
    }
    free(flat);
    free(rows);
    return s;
}
