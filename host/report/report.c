/* run report (contract in report.h): report.md and report.json; the plots
 * are made by report_plots.c. */
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

/* a JSON string literal, or null */
static void json_str(tc_sbuf *b, const char *s) {
    if (s)
        tc_sbuf_json_string(b, s, strlen(s));
    else
        tc_sbuf_puts(b, "null");
}

static void json_num(tc_sbuf *b, double v) {
    if (isfinite(v))
        tc_sbuf_printf(b, "%.9g", v);
    else
        tc_sbuf_puts(b, "null");
}

/* markdown cell text: pipes and newlines would break the table */
static void md_cell(tc_sbuf *b, const char *s) {
    if (!s || !s[0]) {
        tc_sbuf_puts(b, "–");
        return;
    }
    for (const char *p = s; *p; p++) {
        if (*p == '|')
            tc_sbuf_puts(b, "\\|");
        else if (*p == '\n' || *p == '\r')
            tc_sbuf_puts(b, " ");
        else
            tc_sbuf_append(b, p, 1);
    }
}

static void fmt_count(char *buf, size_t cap, double n) {
    if (!(n >= 0))
        snprintf(buf, cap, "–");
    else if (n >= 1e6)
        snprintf(buf, cap, "%.2fM", n / 1e6);
    else if (n >= 1e3)
        snprintf(buf, cap, "%.1fk", n / 1e3);
    else
        snprintf(buf, cap, "%.0f", n);
}

static void fmt_num(char *buf, size_t cap, double v, const char *f) {
    if (!isfinite(v))
        snprintf(buf, cap, "–");
    else
        snprintf(buf, cap, f, v);
}

/* GFLOP in the unit that keeps 3 digits readable */
static void fmt_flop(char *buf, size_t cap, double gflop) {
    static const char *const units[] = {"GFLOP", "TFLOP", "PFLOP", "EFLOP", "ZFLOP"};
    if (!isfinite(gflop)) {
        snprintf(buf, cap, "–");
        return;
    }
    int u = 0;
    while (gflop >= 1000.0 && u < 4) {
        gflop /= 1000.0;
        u++;
    }
    snprintf(buf, cap, "%.3g %s", gflop, units[u]);
}

static double images_at(const tc_report_row *r, double steps) {
    return steps * r->images_per_step;
}

/* "118.5" / "at 120" / "not reached" */
static void fmt_steps(char *buf, size_t cap, double steps, int at_first) {
    if (isnan(steps))
        snprintf(buf, cap, "not reached");
    else if (at_first)
        snprintf(buf, cap, "%.0f (first counted evaluation)", steps);
    else
        snprintf(buf, cap, "%.1f", steps);
}

/* ---------------------------------------------------------------- markdown */

static void md_models(tc_sbuf *md, const tc_report_row *rows, int n, const tc_report_options *opt) {
    tc_sbuf_puts(md, "| model | kind | parameters | without token embedding | GFLOPs image | "
                     "GFLOPs text | zero-shot top-1 | top-5 | inference images/s | "
                     "training steps | images seen |\n");
    tc_sbuf_puts(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const tc_report_row *r = &rows[i];
        char p[32], pn[32], gi[32], gt[32], t1[32], t5[32], ips[32], st[32], seen[32];
        fmt_count(p, sizeof p, (double)r->params);
        fmt_count(pn, sizeof pn, (double)r->params_no_token_emb);
        fmt_num(gi, sizeof gi, r->gflops_image, "%.3f");
        fmt_num(gt, sizeof gt, r->gflops_text, "%.3f");
        fmt_num(t1, sizeof t1, r->top1 * 100.0, "%.2f%%");
        fmt_num(t5, sizeof t5, r->top5 * 100.0, "%.2f%%");
        fmt_num(ips, sizeof ips, r->images_per_sec, "%.1f");
        if (r->train_steps >= 0)
            snprintf(st, sizeof st, "%lld", (long long)r->train_steps);
        else
            snprintf(st, sizeof st, "–");
        fmt_count(seen, sizeof seen, images_at(r, (double)r->train_steps));
        tc_sbuf_puts(md, "| ");
        md_cell(md, r->name);
        tc_sbuf_puts(md, " | ");
        md_cell(md, r->kind);
        tc_sbuf_printf(md, " | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p, pn, gi, gt, t1,
                       t5, ips, st, seen);
    }
    if (opt->throughput_note)
        tc_sbuf_printf(md, "\nInference images/s: %s (timing-sensitive).\n", opt->throughput_note);
    tc_sbuf_puts(md, "Zero-shot top-1 and top-5: each model at the end of its stage, on the whole "
                     "evaluation set.\n");
}

static void md_goals(tc_sbuf *md, const tc_report_options *opt) {
    if (opt->n_goals <= 0) return;
    tc_sbuf_puts(md, "\n## Goals\n\n| goal | result | met |\n|---|---|---|\n");
    for (int i = 0; i < opt->n_goals; i++) {
        const tc_goal_result *g = &opt->goals[i];
        tc_sbuf_puts(md, "| ");
        md_cell(md, g->goal);
        tc_sbuf_puts(md, " | ");
        md_cell(md, g->result);
        tc_sbuf_printf(md, " | %s |\n",
                       g->met == 1   ? "met"
                       : g->met == 0 ? "**not met**"
                                     : "cannot tell");
    }
}

static void md_speedup(tc_sbuf *md, const tc_report_row *rows, const tc_report_speedup *s,
                       const tc_report_options *opt) {
    const tc_report_row *st = &rows[s->student], *bl = &rows[s->baseline];
    tc_sbuf_printf(md, "\n## Inheritance speedup: %s against %s\n\n", st->name, bl->name);
    tc_sbuf_printf(md,
                   "The targets are %s's zero-shot top-1 at fractions of its %lld steps (the "
                   "last, 100%%, lies on its plateau, where a few images decide). A crossing is "
                   "the first, located by linear interpolation between two evaluations. ",
                   bl->name, (long long)bl->train_steps);
    if (st->curve.counted_from > 0)
        tc_sbuf_printf(md,
                       "%s's evaluations count from step %lld on, where it has its final "
                       "architecture (before it, it is the larger masked model); ",
                       st->name, (long long)st->curve.counted_from);
    tc_sbuf_printf(md,
                   "%s's steps are counted from the start of its own stage%s; what it inherited "
                   "is in the compute table below.",
                   st->name, st->curve.counted_from > 0 ? ", mask phase included" : "");
    if (opt->eval_note) tc_sbuf_printf(md, " %s", opt->eval_note);
    tc_sbuf_printf(md,
                   "\n\n| target | top-1 | %s steps | %s images | %s steps | %s images | "
                   "speedup |\n|---|---:|---:|---:|---:|---:|---:|\n",
                   bl->name, bl->name, st->name, st->name);
    for (int k = 0; k < s->sp.n; k++) {
        const tc_reach *r = &s->sp.reach[k];
        char t[32], bs[64], bi[32], ss[64], si[32], sp[32];
        fmt_num(t, sizeof t, 100.0 * r->target, "%.2f%%");
        fmt_steps(bs, sizeof bs, r->baseline_steps, 0);
        if (r->baseline_at_first)
            snprintf(bs, sizeof bs, "at most %.0f (first evaluation)", r->baseline_steps);
        fmt_count(bi, sizeof bi, images_at(bl, r->baseline_steps));
        fmt_steps(ss, sizeof ss, r->steps, r->at_first);
        fmt_count(si, sizeof si, images_at(st, r->steps));
        fmt_num(sp, sizeof sp, r->speedup, "%.2fx");
        tc_sbuf_printf(md, "| %.0f%% of %s's steps (%.0f) | %s | %s | %s | %s | %s | %s |\n",
                       100.0 * r->fraction, bl->name, r->fraction * (double)bl->train_steps, t, bs,
                       bi, ss, si, sp);
    }
    if (isfinite(s->sp.margin))
        tc_sbuf_printf(md,
                       "\nAt equal steps (%.0f): %s %.2f%%, %s %.2f%% (interpolated): %+.2f "
                       "points.\n",
                       s->sp.equal_step, st->name, 100.0 * s->sp.student_final, bl->name,
                       100.0 * s->sp.baseline_at_equal, 100.0 * s->sp.margin);
    else
        tc_sbuf_printf(md, "\nAt equal steps (%.0f): %s was not evaluated that far.\n",
                       s->sp.equal_step, bl->name);
}

static void md_compute(tc_sbuf *md, const tc_report_row *rows, int n) {
    int any = 0;
    for (int i = 0; i < n; i++)
        any |= isfinite(rows[i].train_gflop);
    if (!any) return;
    tc_sbuf_puts(md,
                 "\n## Training compute: each stage, and each model's whole lineage\n\n"
                 "The lineage of a model is its stage, the stages whose weights it starts from "
                 "and the teachers that distil any of them, each counted once. FLOPs are model "
                 "FLOPs of the training steps (engine/flops.h: the student's forward and "
                 "backward, the teacher's forward; a mask phase at the masked model's full "
                 "size); evaluations and checkpoints are not in them. Wall times are the steps' "
                 "own (evaluations and checkpoints taken out) and depend on the machine and its "
                 "load.\n\n"
                 "| model | steps | images | FLOPs | wall s | lineage | lineage FLOPs | "
                 "lineage wall s |\n|---|---:|---:|---:|---:|---|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const tc_report_row *r = &rows[i];
        char seen[32], f[32], w[32], lf[32], lw[32];
        fmt_count(seen, sizeof seen, images_at(r, (double)r->train_steps));
        fmt_flop(f, sizeof f, r->train_gflop);
        fmt_num(w, sizeof w, r->train_seconds, "%.0f");
        fmt_flop(lf, sizeof lf, r->lineage_gflop);
        fmt_num(lw, sizeof lw, r->lineage_seconds, "%.0f");
        tc_sbuf_puts(md, "| ");
        md_cell(md, r->name);
        tc_sbuf_printf(md, " | %lld | %s | %s | %s | ", (long long)r->train_steps, seen, f, w);
        md_cell(md, r->lineage_names);
        tc_sbuf_printf(md, "%s | %s | %s |\n",
                       r->lineage_external ? " + an outside checkpoint" : "", lf, lw);
    }
}

void tc_report_evidence_md(tc_sbuf *b, const tc_report_row *rows, int n,
                           const tc_report_options *opt) {
    md_goals(b, opt);
    for (int i = 0; i < opt->n_speedups; i++)
        if (opt->speedups[i].student >= 0 && opt->speedups[i].student < n &&
            opt->speedups[i].baseline >= 0 && opt->speedups[i].baseline < n)
            md_speedup(b, rows, &opt->speedups[i], opt);
    md_compute(b, rows, n);
}

static void md_plots(tc_sbuf *md, const tc_report_plots *p, int plotted) {
    tc_sbuf_puts(md, "\n## Plots\n\n");
    if (!plotted) {
        tc_sbuf_printf(md, "No plots: %s.\n", p->why);
        return;
    }
    if (p->acc_steps)
        tc_sbuf_puts(md, "![zero-shot top-1 against training steps](plots/acc_steps.png)\n\n");
    if (p->loss) tc_sbuf_puts(md, "![training loss per stage](plots/loss.png)\n\n");
    if (p->masks) tc_sbuf_puts(md, "![mask phases](plots/masks.png)\n\n");
    if (p->acc_speed)
        tc_sbuf_puts(md, "![zero-shot top-1 against inference speed](plots/acc_speed.png)\n\n");
    if (p->acc_params)
        tc_sbuf_puts(md, "![zero-shot top-1 against parameters](plots/acc_params.png)\n\n");
}

/* ---------------------------------------------------------------- json */

static void json_curve(tc_sbuf *js, const tc_curve *c) {
    tc_sbuf_puts(js, ", \"eval_steps\": [");
    for (int k = 0; k < c->n; k++)
        tc_sbuf_printf(js, "%s%lld", k ? ", " : "", (long long)c->steps[k]);
    tc_sbuf_puts(js, "], \"eval_top1\": [");
    for (int k = 0; k < c->n; k++) {
        if (k) tc_sbuf_puts(js, ", ");
        json_num(js, c->acc[k]);
    }
    tc_sbuf_printf(js, "], \"counted_from\": %lld", (long long)c->counted_from);
}

static void json_model(tc_sbuf *js, const tc_report_row *r) {
    tc_sbuf_puts(js, "{\"name\": ");
    json_str(js, r->name);
    tc_sbuf_puts(js, ", \"kind\": ");
    json_str(js, r->kind);
    const char *keys[] = {"parameters",        "parameters_without_token_embedding",
                          "gflops_image",      "gflops_text",
                          "zero_shot_top1",    "zero_shot_top5",
                          "images_per_second", "training_steps",
                          "images_seen",       "train_gflop",
                          "train_seconds",     "lineage_gflop",
                          "lineage_seconds"};
    double vals[] = {r->params >= 0 ? (double)r->params : NAN,
                     r->params_no_token_emb >= 0 ? (double)r->params_no_token_emb : NAN,
                     r->gflops_image,
                     r->gflops_text,
                     r->top1,
                     r->top5,
                     r->images_per_sec,
                     r->train_steps >= 0 ? (double)r->train_steps : NAN,
                     images_at(r, (double)r->train_steps),
                     r->train_gflop,
                     r->train_seconds,
                     r->lineage_gflop,
                     r->lineage_seconds};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        tc_sbuf_printf(js, ", \"%s\": ", keys[k]);
        json_num(js, vals[k]);
    }
    tc_sbuf_puts(js, ", \"lineage\": ");
    json_str(js, r->lineage_names);
    tc_sbuf_printf(js, ", \"lineage_external\": %s", r->lineage_external ? "true" : "false");
    json_curve(js, &r->curve);
    tc_sbuf_puts(js, "}");
}

static void json_speedup(tc_sbuf *js, const tc_report_row *rows, const tc_report_speedup *s) {
    const tc_report_row *st = &rows[s->student], *bl = &rows[s->baseline];
    tc_sbuf_puts(js, "{\"student\": ");
    json_str(js, st->name);
    tc_sbuf_puts(js, ", \"baseline\": ");
    json_str(js, bl->name);
    tc_sbuf_puts(js, ", \"targets\": [");
    for (int k = 0; k < s->sp.n; k++) {
        const tc_reach *r = &s->sp.reach[k];
        const char *keys[] = {"fraction",        "top1",          "baseline_steps",
                              "baseline_images", "student_steps", "student_images",
                              "speedup"};
        double vals[] = {r->fraction,       r->target,
                         r->baseline_steps, images_at(bl, r->baseline_steps),
                         r->steps,          images_at(st, r->steps),
                         r->speedup};
        tc_sbuf_puts(js, k ? ", {" : "{");
        for (size_t j = 0; j < sizeof keys / sizeof keys[0]; j++) {
            tc_sbuf_printf(js, "%s\"%s\": ", j ? ", " : "", keys[j]);
            json_num(js, vals[j]);
        }
        tc_sbuf_printf(js,
                       ", \"baseline_at_first_evaluation\": %s, "
                       "\"student_at_first_counted_evaluation\": %s}",
                       r->baseline_at_first ? "true" : "false", r->at_first ? "true" : "false");
    }
    tc_sbuf_puts(js, "], \"equal_step\": ");
    json_num(js, s->sp.equal_step);
    tc_sbuf_puts(js, ", \"student_top1\": ");
    json_num(js, s->sp.student_final);
    tc_sbuf_puts(js, ", \"baseline_top1_at_equal_step\": ");
    json_num(js, s->sp.baseline_at_equal);
    tc_sbuf_puts(js, "}");
}

static void write_json(tc_sbuf *js, const char *title, const tc_report_row *rows, int n,
                       const tc_report_options *opt, const tc_report_plots *p, int plotted) {
    tc_sbuf_puts(js, "{\n  \"title\": ");
    json_str(js, title);
    tc_sbuf_puts(js, ",\n  \"machine\": ");
    json_str(js, opt->machine);
    const char *names[] = {"loss", "acc_steps", "acc_speed", "acc_params", "masks"};
    int made[] = {p->loss, p->acc_steps, p->acc_speed, p->acc_params, p->masks};
    tc_sbuf_puts(js, ",\n  \"plots\": {");
    for (int k = 0; k < 5; k++) {
        tc_sbuf_printf(js, "\"%s\": ", names[k]);
        if (plotted && made[k])
            tc_sbuf_printf(js, "\"plots/%s.png\", ", names[k]);
        else
            tc_sbuf_puts(js, "null, ");
    }
    tc_sbuf_puts(js, "\"note\": ");
    json_str(js, plotted || !opt->plots ? NULL : p->why);
    tc_sbuf_puts(js, "},\n  \"models\": [");
    for (int i = 0; i < n; i++) {
        tc_sbuf_puts(js, i ? ",\n    " : "\n    ");
        json_model(js, &rows[i]);
    }
    tc_sbuf_puts(js, n ? "\n  ],\n  \"speedups\": [" : "],\n  \"speedups\": [");
    for (int i = 0; i < opt->n_speedups; i++) {
        tc_sbuf_puts(js, i ? ",\n    " : "\n    ");
        json_speedup(js, rows, &opt->speedups[i]);
    }
    tc_sbuf_puts(js, opt->n_speedups ? "\n  ],\n  \"goals\": [" : "],\n  \"goals\": [");
    for (int i = 0; i < opt->n_goals; i++) {
        const tc_goal_result *g = &opt->goals[i];
        tc_sbuf_puts(js, i ? ",\n    {\"goal\": " : "\n    {\"goal\": ");
        json_str(js, g->goal);
        tc_sbuf_puts(js, ", \"result\": ");
        json_str(js, g->result);
        tc_sbuf_printf(js, ", \"met\": %s}", g->met == 1 ? "true" : g->met == 0 ? "false" : "null");
    }
    tc_sbuf_puts(js, opt->n_goals ? "\n  ]\n}\n" : "]\n}\n");
}

/* ---------------------------------------------------------------- report */

static tc_status check_speedups(const tc_report_options *opt, int n) {
    for (int i = 0; i < opt->n_speedups; i++) {
        const tc_report_speedup *s = &opt->speedups[i];
        if (s->student < 0 || s->student >= n || s->baseline < 0 || s->baseline >= n)
            return tc_fail(TC_ERR_ARG, "report: speedup %d names rows %d and %d of %d", i,
                           s->student, s->baseline, n);
    }
    return TC_OK;
}

tc_status tc_report_write(const char *dir, const tc_report_row *rows, int n,
                          const tc_report_options *opt) {
    static const tc_report_options defaults = {.plots = 1};
    if (!opt) opt = &defaults;
    if (n < 0 || (n > 0 && !rows)) return tc_fail(TC_ERR_ARG, "report: %d rows", n);
    TC_TRY(check_speedups(opt, n));
    TC_TRY(tc_mkdir_p(dir));
    const char *title = opt->title ? opt->title : "tinyclip run report";

    tc_report_plots plots;
    memset(&plots, 0, sizeof plots);
    int plotted = 0;
    if (opt->plots) plotted = tc_report_make_plots(dir, rows, n, opt, &plots) == 0;

    tc_sbuf md = {0}, js = {0};
    tc_sbuf_printf(&md, "# %s\n\n", title);
    if (opt->machine) tc_sbuf_printf(&md, "Machine: %s.\n\n", opt->machine);
    md_models(&md, rows, n, opt);
    tc_report_evidence_md(&md, rows, n, opt);
    if (opt->plots) md_plots(&md, &plots, plotted);
    if (opt->notes) tc_sbuf_printf(&md, "\n%s\n", opt->notes);
    write_json(&js, title, rows, n, opt, &plots, plotted);

    char *mdt = NULL, *jst = NULL;
    tc_status s = tc_sbuf_finish(&md, &mdt);
    if (s == TC_OK)
        s = tc_sbuf_finish(&js, &jst);
    else
        tc_sbuf_free(&js);
    char path[1100];
    if (s == TC_OK) {
        snprintf(path, sizeof path, "%s/report.md", dir);
        s = tc_write_file_atomic(path, mdt, strlen(mdt));
    }
    if (s == TC_OK) {
        snprintf(path, sizeof path, "%s/report.json", dir);
        s = tc_write_file_atomic(path, jst, strlen(jst));
    }
    free(mdt);
    free(jst);
    return s;
}
