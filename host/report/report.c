/* run report (contract in report.h). gnuplot is run with posix_spawnp and
 * no shell; it writes each PNG to a temporary name that is renamed into
 * place, so a failed plot never leaves a torn image. */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileio.h"
#include "metrics_log.h"

extern char **environ;

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int w = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && (size_t)w < room) {
            b->n += (size_t)w;
            return;
        }
        size_t ncap = (b->cap + (size_t)w + 1) * 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* a JSON string literal */
static void sb_json_str(sbuf *b, const char *s) {
    if (!s) {
        sb_printf(b, "null");
        return;
    }
    sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') sb_printf(b, "\\%c", *p);
        else if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
        else sb_printf(b, "%c", *p);
    }
    sb_printf(b, "\"");
}

static void sb_json_num(sbuf *b, double v) {
    if (isfinite(v)) sb_printf(b, "%.9g", v);
    else sb_printf(b, "null");
}

/* markdown cell text: pipes and newlines would break the table */
static void sb_md_cell(sbuf *b, const char *s) {
    if (!s || !s[0]) {
        sb_printf(b, "–");
        return;
    }
    for (const char *p = s; *p; p++) {
        if (*p == '|') sb_printf(b, "\\|");
        else if (*p == '\n' || *p == '\r') sb_printf(b, " ");
        else sb_printf(b, "%c", *p);
    }
}

static void fmt_count(char *buf, size_t cap, int64_t n) {
    if (n < 0) snprintf(buf, cap, "–");
    else if (n >= 1000000) snprintf(buf, cap, "%.2fM", (double)n / 1e6);
    else if (n >= 1000) snprintf(buf, cap, "%.1fk", (double)n / 1e3);
    else snprintf(buf, cap, "%lld", (long long)n);
}

static void fmt_num(char *buf, size_t cap, double v, const char *f) {
    if (!isfinite(v)) snprintf(buf, cap, "–");
    else snprintf(buf, cap, f, v);
}

double tc_report_speedup(int64_t scratch_steps, int64_t steps_to_match) {
    if (scratch_steps <= 0 || steps_to_match <= 0) return NAN;
    return (double)scratch_steps / (double)steps_to_match;
}

/* ---------------------------------------------------------------- gnuplot */

/* a name safe inside a single-quoted gnuplot string and a file name */
static void safe_name(char *out, size_t cap, const char *s, int i) {
    size_t n = 0;
    for (const char *p = s ? s : ""; *p && n + 1 < cap; p++)
        out[n++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                           *p == '-' || *p == '.'
                       ? *p
                       : '_';
    out[n] = 0;
    if (!n) snprintf(out, cap, "model%d", i);
}

/* runs `gnuplot script`; returns the exit status, 127 when it cannot start */
static int run_gnuplot(const char *prog, const char *script) {
    pid_t pid;
    char *argv[] = {(char *)prog, (char *)script, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    /* gnuplot's chatter goes nowhere; its exit status is what counts */
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return 127;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 127;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* writes the data files and the script for one terminal; returns 0 or -1 */
static int write_plots_script(const char *pdir, const char *terminal, const tc_report_row *rows, int n,
                              int *n_loss, int *n_acc, char *script, size_t script_cap) {
    sbuf gp = {0};
    char path[1200], name[80];
    *n_loss = *n_acc = 0;
    /* loss series */
    sbuf plot = {0};
    for (int i = 0; i < n; i++) {
        if (!rows[i].metrics_path || !tc_path_is_file(rows[i].metrics_path)) continue;
        int64_t *steps;
        double *vals;
        int cnt;
        if (tc_metrics_read_series(rows[i].metrics_path, "loss", NULL, &steps, &vals, &cnt) != TC_OK) continue;
        if (cnt == 0) {
            free(steps);
            free(vals);
            continue;
        }
        safe_name(name, sizeof name, rows[i].name, i);
        snprintf(path, sizeof path, "%s/loss_%s.dat", pdir, name);
        sbuf d = {0};
        sb_printf(&d, "# step loss (%s)\n", name);
        for (int k = 0; k < cnt; k++)
            if (isfinite(vals[k])) sb_printf(&d, "%lld %.9g\n", (long long)steps[k], vals[k]);
        free(steps);
        free(vals);
        int bad = d.oom || tc_write_file_atomic(path, d.p ? d.p : "", d.n) != TC_OK;
        free(d.p);
        if (bad) continue;
        sb_printf(&plot, "%s'%s' using 1:2 with lines lw 2 title '%s'", *n_loss ? ", \\\n     " : "plot ", path, name);
        (*n_loss)++;
    }
    /* accuracy against parameters */
    snprintf(path, sizeof path, "%s/acc_params.dat", pdir);
    sbuf a = {0};
    sb_printf(&a, "# parameters_millions top1_percent name\n");
    for (int i = 0; i < n; i++) {
        if (rows[i].params < 0 || !isfinite(rows[i].top1)) continue;
        safe_name(name, sizeof name, rows[i].name, i);
        sb_printf(&a, "%.6f %.4f %s\n", (double)rows[i].params / 1e6, rows[i].top1 * 100.0, name);
        (*n_acc)++;
    }
    int abad = a.oom || tc_write_file_atomic(path, a.p ? a.p : "", a.n) != TC_OK;
    free(a.p);
    if (abad) *n_acc = 0;

    sb_printf(&gp, "set terminal %s size 900,560 noenhanced\nset grid\nset key outside right\n", terminal);
    if (*n_loss) {
        sb_printf(&gp, "set output '%s/loss.png.tmp'\nset title 'training loss per stage'\n"
                       "set xlabel 'step'\nset ylabel 'loss'\n%s\nunset output\n",
                  pdir, plot.p);
    }
    if (*n_acc) {
        sb_printf(&gp, "set output '%s/acc_params.png.tmp'\nset title 'zero-shot top-1 against parameters'\n"
                       "set xlabel 'parameters (millions)'\nset ylabel 'top-1 (%%)'\nunset key\n"
                       "set offsets graph 0.08, graph 0.08, graph 0.12, graph 0.08\n"
                       "plot '%s' using 1:2 with points pt 7 ps 1.5, '' using 1:2:3 with labels offset 0,1\n"
                       "unset output\n",
                  pdir, path);
    }
    free(plot.p);
    snprintf(script, script_cap, "%s/report.gp", pdir);
    int bad = gp.oom || tc_write_file_atomic(script, gp.p, gp.n) != TC_OK;
    free(gp.p);
    return bad ? -1 : 0;
}

/* makes the plots; fills `why` when none could be made */
static int make_plots(const char *dir, const tc_report_row *rows, int n, const char *prog, int *n_loss,
                      int *n_acc, char *why, size_t why_cap) {
    char pdir[1100], script[1200];
    snprintf(pdir, sizeof pdir, "%s/plots", dir);
    if (tc_mkdir_p(pdir) != TC_OK) {
        snprintf(why, why_cap, "cannot create %s", pdir);
        return -1;
    }
    static const char *const terminals[] = {"pngcairo", "png"};
    for (int t = 0; t < 2; t++) {
        if (write_plots_script(pdir, terminals[t], rows, n, n_loss, n_acc, script, sizeof script)) {
            snprintf(why, why_cap, "cannot write the plot data under %s", pdir);
            return -1;
        }
        if (!*n_loss && !*n_acc) {
            snprintf(why, why_cap, "no data to plot");
            return -1;
        }
        int rc = run_gnuplot(prog, script);
        if (rc == 127) {
            snprintf(why, why_cap, "%s was not found (install gnuplot-nox, then run the report again)", prog);
            return -1;
        }
        if (rc != 0) {
            snprintf(why, why_cap, "%s failed (exit %d) on %s", prog, rc, script);
            continue; /* try the next terminal */
        }
        const char *names[2] = {"loss", "acc_params"};
        int made[2] = {*n_loss > 0, *n_acc > 0};
        for (int k = 0; k < 2; k++) {
            if (!made[k]) continue;
            char tmp[1200], fin[1200];
            snprintf(tmp, sizeof tmp, "%s/%s.png.tmp", pdir, names[k]);
            snprintf(fin, sizeof fin, "%s/%s.png", pdir, names[k]);
            if (rename(tmp, fin) != 0) {
                snprintf(why, why_cap, "%s did not produce %s", prog, tmp);
                return -1;
            }
        }
        return 0;
    }
    return -1;
}

/* ---------------------------------------------------------------- report */

tc_status tc_report_write(const char *dir, const tc_report_row *rows, int n, const tc_report_options *opt) {
    static const tc_report_options defaults = {NULL, NULL, NULL, 1, NULL};
    if (!opt) opt = &defaults;
    if (n < 0 || (n > 0 && !rows)) return tc_fail(TC_ERR_ARG, "report: %d rows", n);
    TC_TRY(tc_mkdir_p(dir));
    const char *title = opt->title ? opt->title : "tinyclip run report";

    char why[1400] = "";
    int n_loss = 0, n_acc = 0, plotted = 0;
    if (opt->plots)
        plotted = make_plots(dir, rows, n, opt->gnuplot ? opt->gnuplot : "gnuplot", &n_loss, &n_acc, why,
                             sizeof why) == 0;

    sbuf md = {0}, js = {0};
    sb_printf(&md, "# %s\n\n", title);
    sb_printf(&md,
              "| model | kind | parameters | without token embedding | GFLOPs image | GFLOPs text "
              "| zero-shot top-1 | top-5 | images/s | training GFLOP/s | training steps "
              "| steps to scratch top-1 | speedup |\n");
    sb_printf(&md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const tc_report_row *r = &rows[i];
        char p[32], pn[32], gi[32], gt[32], t1[32], t5[32], ips[32], tg[32], st[32], sm[32], sp[32];
        fmt_count(p, sizeof p, r->params);
        fmt_count(pn, sizeof pn, r->params_no_token_emb);
        fmt_num(gi, sizeof gi, r->gflops_image, "%.3f");
        fmt_num(gt, sizeof gt, r->gflops_text, "%.3f");
        fmt_num(t1, sizeof t1, r->top1 * 100.0, "%.2f%%");
        fmt_num(t5, sizeof t5, r->top5 * 100.0, "%.2f%%");
        fmt_num(ips, sizeof ips, r->images_per_sec, "%.1f");
        fmt_num(tg, sizeof tg, r->train_gflops_per_s > 0 ? r->train_gflops_per_s : NAN, "%.1f");
        if (r->train_steps >= 0) snprintf(st, sizeof st, "%lld", (long long)r->train_steps);
        else snprintf(st, sizeof st, "–");
        if (r->steps_to_match > 0) snprintf(sm, sizeof sm, "%lld", (long long)r->steps_to_match);
        else if (r->steps_to_match == -1) snprintf(sm, sizeof sm, "not reached");
        else snprintf(sm, sizeof sm, "–");
        fmt_num(sp, sizeof sp, r->speedup, "%.2fx");
        sb_printf(&md, "| ");
        sb_md_cell(&md, r->name);
        sb_printf(&md, " | ");
        sb_md_cell(&md, r->kind);
        sb_printf(&md, " | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p, pn, gi, gt,
                  t1, t5, ips, tg, st, sm, sp);
    }
    if (opt->throughput_note) sb_printf(&md, "\nimages/s: inference, %s.\n", opt->throughput_note);
    sb_printf(&md, "\nTraining GFLOP/s: the stage's training images/s times its step's FLOPs per "
                   "sample (forward and backward of both towers, plus the teacher's forward when "
                   "it distils), counted for the final model.\n");
    sb_printf(&md, "\nThe speedup is the from-scratch baseline's training steps divided by the steps this model "
                   "needed to reach the baseline's final zero-shot top-1.\n");
    if (opt->plots) {
        sb_printf(&md, "\n## Plots\n\n");
        if (plotted) {
            if (n_loss) sb_printf(&md, "![training loss per stage](plots/loss.png)\n\n");
            if (n_acc) sb_printf(&md, "![zero-shot top-1 against parameters](plots/acc_params.png)\n\n");
        } else {
            sb_printf(&md, "No plots: %s.\n", why);
        }
    }
    if (opt->notes) sb_printf(&md, "\n%s\n", opt->notes);

    sb_printf(&js, "{\n  \"title\": ");
    sb_json_str(&js, title);
    sb_printf(&js, ",\n  \"plots\": {\"loss\": %s, \"acc_params\": %s, \"note\": ",
              plotted && n_loss ? "\"plots/loss.png\"" : "null", plotted && n_acc ? "\"plots/acc_params.png\"" : "null");
    sb_json_str(&js, plotted || !opt->plots ? NULL : why);
    sb_printf(&js, "},\n  \"models\": [");
    for (int i = 0; i < n; i++) {
        const tc_report_row *r = &rows[i];
        sb_printf(&js, "%s\n    {\"name\": ", i ? "," : "");
        sb_json_str(&js, r->name);
        sb_printf(&js, ", \"kind\": ");
        sb_json_str(&js, r->kind);
        sb_printf(&js, ", \"parameters\": ");
        sb_json_num(&js, r->params >= 0 ? (double)r->params : NAN);
        sb_printf(&js, ", \"parameters_without_token_embedding\": ");
        sb_json_num(&js, r->params_no_token_emb >= 0 ? (double)r->params_no_token_emb : NAN);
        sb_printf(&js, ", \"gflops_image\": ");
        sb_json_num(&js, r->gflops_image);
        sb_printf(&js, ", \"gflops_text\": ");
        sb_json_num(&js, r->gflops_text);
        sb_printf(&js, ", \"zero_shot_top1\": ");
        sb_json_num(&js, r->top1);
        sb_printf(&js, ", \"zero_shot_top5\": ");
        sb_json_num(&js, r->top5);
        sb_printf(&js, ", \"images_per_second\": ");
        sb_json_num(&js, r->images_per_sec);
        sb_printf(&js, ", \"training_gflops_per_second\": ");
        sb_json_num(&js, r->train_gflops_per_s > 0 ? r->train_gflops_per_s : NAN);
        sb_printf(&js, ", \"training_steps\": ");
        sb_json_num(&js, r->train_steps >= 0 ? (double)r->train_steps : NAN);
        sb_printf(&js, ", \"steps_to_scratch_top1\": ");
        sb_json_num(&js, r->steps_to_match > 0 ? (double)r->steps_to_match : NAN);
        sb_printf(&js, ", \"speedup\": ");
        sb_json_num(&js, r->speedup);
        sb_printf(&js, "}");
    }
    sb_printf(&js, "%s]\n}\n", n ? "\n  " : "");

    tc_status s = TC_OK;
    if (md.oom || js.oom) s = tc_fail(TC_ERR_OOM, "report: out of memory");
    char path[1100];
    if (s == TC_OK) {
        snprintf(path, sizeof path, "%s/report.md", dir);
        s = tc_write_file_atomic(path, md.p, md.n);
    }
    if (s == TC_OK) {
        snprintf(path, sizeof path, "%s/report.json", dir);
        s = tc_write_file_atomic(path, js.p, js.n);
    }
    free(md.p);
    free(js.p);
    return s;
}
