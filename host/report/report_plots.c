/* the run report's plots (list in report.h), made with gnuplot. gnuplot is
 * run with posix_spawnp and no shell; it writes each PNG to a temporary name
 * that is renamed into place, so a failed plot never leaves a torn image.
 * the data of every plot is written next to it (plots/NAME.dat) with the
 * script (plots/report.gp), so a reader can redraw them.
 *
 * labels of scatter plots are placed here, not by gnuplot: the plot area is
 * fixed in screen coordinates, so a label's box is known in pixels and each
 * label takes the first of eight places around its point that overlaps no
 * other label and no point. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileio.h"
#include "metrics_log.h"
#include "report.h"

extern char **environ;

#define PATH_LEN 1200
#define W_PX 960
#define H_PX 600

/* one colour per stage, the same in every plot */
static const char *colour(int i) {
    static const char *const c[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    return c[i % 10];
}

/* a name safe inside a single-quoted gnuplot string and a file name */
static void safe_name(char *out, size_t cap, const char *s, int i) {
    size_t n = 0;
    for (const char *p = s ? s : ""; *p && n + 1 < cap; p++)
        out[n++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                           (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
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

static int write_dat(const char *path, tc_sbuf *d) {
    char *text = NULL;
    if (tc_sbuf_finish(d, &text) != TC_OK) return -1;
    int bad = tc_write_file_atomic(path, text, strlen(text)) != TC_OK;
    free(text);
    return bad ? -1 : 0;
}

typedef struct {
    const char *pdir;
    tc_sbuf gp; /* the script */
} plotter;

/* ---------------------------------------------------------------- loss */

/* the loss of a stage without the mask phase's Lagrangian, into loss_NAME.dat */
static int loss_data(const plotter *P, const tc_report_row *r, const char *name, char *path) {
    int64_t *st = NULL, *ls = NULL;
    double *v = NULL, *lv = NULL;
    int n = 0, nl = 0;
    if (tc_metrics_read_series(r->metrics_path, "loss", NULL, &st, &v, &n) != TC_OK) return 0;
    if (tc_metrics_read_series(r->metrics_path, "lagrangian", NULL, &ls, &lv, &nl) != TC_OK) nl = 0;
    tc_sbuf d = {0};
    tc_sbuf_printf(&d, "# step loss (%s; the Lagrangian of the mask phase taken out)\n", name);
    int rows = 0;
    for (int k = 0, j = 0; k < n; k++) {
        while (j < nl && ls[j] < st[k])
            j++;
        double loss = v[k] - (j < nl && ls[j] == st[k] && isfinite(lv[j]) ? lv[j] : 0.0);
        if (isfinite(loss)) {
            tc_sbuf_printf(&d, "%lld %.9g\n", (long long)st[k], loss);
            rows++;
        }
    }
    free(st);
    free(v);
    free(ls);
    free(lv);
    snprintf(path, PATH_LEN, "%s/loss_%s.dat", P->pdir, name);
    if (write_dat(path, &d) != 0) return 0;
    return rows > 0;
}

/* two panels: CLIP loss and distillation loss are different quantities */
static int plot_loss(plotter *P, const tc_report_row *rows, int n) {
    tc_sbuf panel[2] = {{0}, {0}};
    int count[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        const tc_report_row *r = &rows[i];
        if (!r->metrics_path || !tc_path_is_file(r->metrics_path)) continue;
        char name[80], path[PATH_LEN];
        safe_name(name, sizeof name, r->name, i);
        if (!loss_data(P, r, name, path)) continue;
        int k = r->distill ? 1 : 0;
        tc_sbuf_printf(&panel[k], "%s'%s' using 1:2 with lines lw 2 lc rgb '%s' title '%s'",
                       count[k] ? ", \\\n     " : "plot ", path, colour(i), name);
        count[k]++;
    }
    int made = count[0] + count[1] > 0;
    if (made) {
        tc_sbuf *g = &P->gp;
        tc_sbuf_printf(g, "set output '%s/loss.png.tmp'\nreset\nset grid\nset key top right\n",
                       P->pdir);
        int both = count[0] && count[1];
        if (both) tc_sbuf_puts(g, "set multiplot layout 2,1 title 'training loss per stage'\n");
        static const char *const titles[2] = {
            "CLIP loss (contrastive, stages trained from scratch)",
            "distillation loss (affinity mimicking; without the Lagrangian of the mask phase)"};
        for (int k = 0; k < 2; k++) {
            if (!count[k]) continue;
            tc_sbuf_printf(g,
                           "set title '%s'\nset xlabel 'step of the stage'\nset ylabel 'loss'\n"
                           "%s\n",
                           titles[k], panel[k].data);
        }
        if (both) tc_sbuf_puts(g, "unset multiplot\n");
        tc_sbuf_puts(g, "unset output\n");
    }
    tc_sbuf_free(&panel[0]);
    tc_sbuf_free(&panel[1]);
    return made;
}

/* ---------------------------------------------------------------- accuracy */

/* zero-shot top-1 against steps, every stage; the evaluations before the
 * final architecture dashed; each speedup target as a dotted segment from
 * the student's crossing to the baseline's */
static int plot_acc_steps(plotter *P, const tc_report_row *rows, int n,
                          const tc_report_options *opt) {
    tc_sbuf plot = {0};
    int count = 0;
    for (int i = 0; i < n; i++) {
        const tc_curve *c = &rows[i].curve;
        if (c->n < 1) continue;
        char name[80], path[PATH_LEN];
        safe_name(name, sizeof name, rows[i].name, i);
        tc_sbuf d = {0};
        /* before the final architecture (with the first counted point, so
         * the lines join) a block of its own, then the counted evaluations */
        tc_sbuf_printf(&d, "# step top1_percent (%s)\n", name);
        int k0 = 0;
        while (k0 < c->n && c->steps[k0] < c->counted_from)
            k0++;
        for (int k = 0; k0 > 0 && k <= k0 && k < c->n; k++)
            tc_sbuf_printf(&d, "%lld %.4f\n", (long long)c->steps[k], 100.0 * c->acc[k]);
        if (k0 > 0) tc_sbuf_puts(&d, "\n\n");
        for (int k = k0; k < c->n; k++)
            tc_sbuf_printf(&d, "%lld %.4f\n", (long long)c->steps[k], 100.0 * c->acc[k]);
        snprintf(path, sizeof path, "%s/acc_steps_%s.dat", P->pdir, name);
        if (write_dat(path, &d) != 0) continue;
        if (k0 > 0)
            tc_sbuf_printf(&plot,
                           "%s'%s' index 0 using 1:2 with lines dt 2 lw 2 lc rgb '%s' notitle",
                           count ? ", \\\n     " : "plot ", path, colour(i));
        tc_sbuf_printf(&plot,
                       "%s'%s' index %d using 1:2 with linespoints pt 7 ps 0.6 lw 2 lc rgb '%s' "
                       "title '%s'",
                       count || k0 > 0 ? ", \\\n     " : "plot ", path, k0 > 0, colour(i), name);
        count++;
    }
    if (count) {
        tc_sbuf *g = &P->gp;
        tc_sbuf_printf(g,
                       "set output '%s/acc_steps.png.tmp'\nreset\nset grid\n"
                       "set key bottom right\nset title \"zero-shot top-1 during training\\n"
                       "dashed: mask phase, before pruning; dotted: a speedup target, from the "
                       "student's crossing to the baseline's\"\n"
                       "set xlabel 'training step of the stage'\nset ylabel 'top-1 (%%)'\n",
                       P->pdir);
        for (int s = 0; s < opt->n_speedups; s++) {
            const tc_speedup *sp = &opt->speedups[s].sp;
            for (int k = 0; k < sp->n; k++) {
                const tc_reach *r = &sp->reach[k];
                if (isnan(r->steps) || isnan(r->baseline_steps)) continue;
                tc_sbuf_printf(g,
                               "set arrow from %.2f,%.4f to %.2f,%.4f nohead dt 3 lw 2 "
                               "lc rgb 'gray30' back\n",
                               r->steps, 100.0 * r->target, r->baseline_steps, 100.0 * r->target);
            }
        }
        tc_sbuf_printf(g, "%s\nunset output\n", plot.data);
    }
    tc_sbuf_free(&plot);
    return count > 0;
}

/* ---------------------------------------------------------------- scatter */

typedef struct {
    double x, y; /* data */
    char name[80];
    int row;
} point;

typedef struct {
    double x0, y0, x1, y1; /* pixels inside the plot area, y up */
} box;

static int overlaps(box a, box b) {
    return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

/* the plot area in pixels, from the margins set in screen coordinates */
#define AREA_L 0.10
#define AREA_R 0.95
#define AREA_B 0.12
#define AREA_T 0.90
#define CHAR_W 8.5
#define CHAR_H 15.0

/* labels of a scatter plot placed so that none overlaps another or a point */
static void place_labels(tc_sbuf *g, const point *pts, int n, double xlo, double xhi, double ylo,
                         double yhi) {
    double aw = (AREA_R - AREA_L) * W_PX, ah = (AREA_T - AREA_B) * H_PX;
    box placed[64];
    int np = 0;
    box dots[64];
    for (int i = 0; i < n && i < 64; i++) {
        double px = (pts[i].x - xlo) / (xhi - xlo) * aw, py = (pts[i].y - ylo) / (yhi - ylo) * ah;
        dots[i] = (box){px - 5, py - 5, px + 5, py + 5};
    }
    for (int i = 0; i < n && i < 64; i++) {
        double px = (dots[i].x0 + dots[i].x1) / 2, py = (dots[i].y0 + dots[i].y1) / 2;
        double w = CHAR_W * (double)strlen(pts[i].name), h = CHAR_H;
        /* right, left, above, below, then the corners */
        const double off[8][2] = {{9, -h / 2}, {-9 - w, -h / 2}, {-w / 2, 8}, {-w / 2, -8 - h},
                                  {6, 6},      {6, -6 - h},      {-6 - w, 6}, {-6 - w, -6 - h}};
        int best = 0;
        double best_cost = 1e300;
        for (int k = 0; k < 8; k++) {
            box b = {px + off[k][0], py + off[k][1], px + off[k][0] + w, py + off[k][1] + h};
            double cost = 0;
            if (b.x0 < 0 || b.x1 > aw || b.y0 < 0 || b.y1 > ah) cost += 1000;
            for (int j = 0; j < np; j++)
                cost += overlaps(b, placed[j]) ? 100 : 0;
            for (int j = 0; j < n && j < 64; j++)
                cost += overlaps(b, dots[j]) ? 10 : 0;
            if (cost < best_cost) {
                best_cost = cost;
                best = k;
            }
            if (cost == 0) break;
        }
        box b = {px + off[best][0], py + off[best][1], px + off[best][0] + w,
                 py + off[best][1] + h};
        placed[np++] = b;
        tc_sbuf_printf(g, "set label %d '%s' at graph %.4f, graph %.4f left front tc rgb '%s'\n",
                       i + 1, pts[i].name, b.x0 / aw, (b.y0 + h / 2) / ah, colour(pts[i].row));
    }
}

static void range_of(const point *pts, int n, int axis, double *lo, double *hi) {
    double a = 1e300, b = -1e300;
    for (int i = 0; i < n; i++) {
        double v = axis ? pts[i].y : pts[i].x;
        if (v < a) a = v;
        if (v > b) b = v;
    }
    double pad = b > a ? 0.15 * (b - a) : (fabs(a) > 0 ? 0.1 * fabs(a) : 1.0);
    *lo = a - pad;
    *hi = b + pad;
}

/* top-1 against a per-model quantity, one labelled point per model */
static int plot_scatter(plotter *P, const tc_report_row *rows, int n, const char *file,
                        const char *title, const char *xlabel, int speed) {
    point pts[64];
    int np = 0;
    tc_sbuf d = {0};
    tc_sbuf_printf(&d, "# %s top1_percent name\n", speed ? "images_per_s" : "parameters_millions");
    for (int i = 0; i < n && np < 64; i++) {
        double x = speed ? rows[i].images_per_sec : (double)rows[i].params / 1e6;
        if (!(x > 0) || !isfinite(rows[i].top1)) continue;
        point *p = &pts[np++];
        p->x = x;
        p->y = 100.0 * rows[i].top1;
        p->row = i;
        safe_name(p->name, sizeof p->name, rows[i].name, i);
        tc_sbuf_printf(&d, "%.6f %.4f %s\n", p->x, p->y, p->name);
    }
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/%s.dat", P->pdir, file);
    if (write_dat(path, &d) != 0 || np == 0) return 0;
    double xlo, xhi, ylo, yhi;
    range_of(pts, np, 0, &xlo, &xhi);
    range_of(pts, np, 1, &ylo, &yhi);
    tc_sbuf *g = &P->gp;
    tc_sbuf_printf(g,
                   "set output '%s/%s.png.tmp'\nreset\nset grid\nunset key\nset title '%s'\n"
                   "set xlabel '%s'\nset ylabel 'zero-shot top-1 (%%)'\n"
                   "set lmargin at screen %.2f\nset rmargin at screen %.2f\n"
                   "set bmargin at screen %.2f\nset tmargin at screen %.2f\n"
                   "set xrange [%.6g:%.6g]\nset yrange [%.6g:%.6g]\n",
                   P->pdir, file, title, xlabel, AREA_L, AREA_R, AREA_B, AREA_T, xlo, xhi, ylo,
                   yhi);
    place_labels(g, pts, np, xlo, xhi, ylo, yhi);
    tc_sbuf_puts(g, "plot ");
    for (int i = 0; i < np; i++)
        tc_sbuf_printf(g, "%s'%s' every ::%d::%d using 1:2 with points pt 7 ps 1.8 lc rgb '%s'",
                       i ? ", " : "", path, i, i, colour(pts[i].row));
    tc_sbuf_puts(g, "\nunset label\nunset output\n");
    return 1;
}

/* ---------------------------------------------------------------- masks */

/* the mask-phase lines of one stage into masks_NAME.dat:
 * step expected_sparsity target_sparsity lambda1 lambda2 lagrangian */
static int mask_data(const plotter *P, const tc_report_row *r, const char *name, char *path) {
    static const char *const keys[5] = {"expected_sparsity", "target_sparsity", "lambda1",
                                        "lambda2", "lagrangian"};
    int64_t *st[5] = {0};
    double *v[5] = {0};
    int cnt[5] = {0}, ok = 1;
    for (int k = 0; k < 5 && ok; k++)
        ok = tc_metrics_read_series(r->metrics_path, keys[k], "mask", &st[k], &v[k], &cnt[k]) ==
             TC_OK;
    int rows = 0;
    tc_sbuf d = {0};
    tc_sbuf_printf(&d, "# step expected_sparsity target_sparsity lambda1 lambda2 lagrangian (%s)\n",
                   name);
    for (int i = 0; ok && i < cnt[0]; i++) {
        int same = 1;
        for (int k = 1; k < 5; k++)
            same &= i < cnt[k] && st[k][i] == st[0][i];
        if (!same) continue;
        tc_sbuf_printf(&d, "%lld %.6g %.6g %.6g %.6g %.6g\n", (long long)st[0][i], v[0][i], v[1][i],
                       v[2][i], v[3][i], v[4][i]);
        rows++;
    }
    for (int k = 0; k < 5; k++) {
        free(st[k]);
        free(v[k]);
    }
    snprintf(path, PATH_LEN, "%s/masks_%s.dat", P->pdir, name);
    if (write_dat(path, &d) != 0) return 0;
    return rows > 0;
}

static int plot_masks(plotter *P, const tc_report_row *rows, int n) {
    tc_sbuf panel[3] = {{0}, {0}, {0}};
    int count = 0;
    for (int i = 0; i < n; i++) {
        const tc_report_row *r = &rows[i];
        if (!r->masks || !r->metrics_path || !tc_path_is_file(r->metrics_path)) continue;
        char name[80], path[PATH_LEN];
        safe_name(name, sizeof name, r->name, i);
        if (!mask_data(P, r, name, path)) continue;
        const char *sep = count ? ", \\\n     " : "plot ";
        const char *c = colour(i);
        tc_sbuf_printf(&panel[0],
                       "%s'%s' using 1:2 with lines lw 2 lc rgb '%s' title '%s expected', "
                       "'' using 1:3 with lines dt 2 lw 1.5 lc rgb '%s' title '%s target'",
                       sep, path, c, name, c, name);
        tc_sbuf_printf(&panel[1],
                       "%s'%s' using 1:4 with lines lw 2 lc rgb '%s' title '%s lambda1', "
                       "'' using 1:5 with lines dt 2 lw 1.5 lc rgb '%s' title '%s lambda2'",
                       sep, path, c, name, c, name);
        tc_sbuf_printf(&panel[2], "%s'%s' using 1:6 with lines lw 2 lc rgb '%s' title '%s'", sep,
                       path, c, name);
        count++;
    }
    if (count) {
        tc_sbuf *g = &P->gp;
        tc_sbuf_printf(g,
                       "set output '%s/masks.png.tmp'\nreset\nset grid\nset key outside right\n"
                       /* the same margins on every panel: the step axes line up */
                       "set lmargin at screen 0.09\nset rmargin at screen 0.74\n"
                       "set multiplot layout 3,1 title 'mask phases of automatic inheritance'\n"
                       "set title 'pooled sparsity of the prunable parameters'\n"
                       "set ylabel 'sparsity'\nunset xlabel\n%s\n"
                       "set title 'Lagrange multipliers (mean over the towers)'\n"
                       "set ylabel 'lambda'\n%s\n"
                       "set title 'Lagrangian term of the loss'\nset ylabel 'Lagrangian'\n"
                       "set xlabel 'training step of the stage'\n%s\n"
                       "unset multiplot\nunset output\n",
                       P->pdir, panel[0].data, panel[1].data, panel[2].data);
    }
    for (int k = 0; k < 3; k++)
        tc_sbuf_free(&panel[k]);
    return count > 0;
}

/* ---------------------------------------------------------------- driver */

/* writes the data files and the script for one terminal */
static int write_script(const char *pdir, const char *terminal, const tc_report_row *rows, int n,
                        const tc_report_options *opt, tc_report_plots *made, char *script) {
    plotter P = {pdir, {0}};
    tc_sbuf_printf(&P.gp, "set terminal %s size %d,%d font 'DejaVu Sans,11' noenhanced\n", terminal,
                   W_PX, H_PX);
    made->acc_steps = plot_acc_steps(&P, rows, n, opt);
    /* the loss and mask plots are taller: several panels */
    tc_sbuf_printf(&P.gp, "set terminal %s size %d,%d font 'DejaVu Sans,11' noenhanced\n", terminal,
                   W_PX, H_PX * 3 / 2);
    made->loss = plot_loss(&P, rows, n);
    made->masks = plot_masks(&P, rows, n);
    tc_sbuf_printf(&P.gp, "set terminal %s size %d,%d font 'DejaVu Sans,11' noenhanced\n", terminal,
                   W_PX, H_PX);
    made->acc_speed =
        plot_scatter(&P, rows, n, "acc_speed",
                     "zero-shot top-1 against inference speed (the compression trade-off)",
                     "inference images/s (image tower)", 1);
    made->acc_params = plot_scatter(&P, rows, n, "acc_params", "zero-shot top-1 against parameters",
                                    "parameters (millions)", 0);
    snprintf(script, PATH_LEN, "%s/report.gp", pdir);
    char *text = NULL;
    if (tc_sbuf_finish(&P.gp, &text) != TC_OK) return -1;
    int bad = tc_write_file_atomic(script, text, strlen(text)) != TC_OK;
    free(text);
    return bad ? -1 : 0;
}

int tc_report_make_plots(const char *dir, const tc_report_row *rows, int n,
                         const tc_report_options *opt, tc_report_plots *made) {
    char pdir[1100], script[PATH_LEN];
    const char *prog = opt->gnuplot ? opt->gnuplot : "gnuplot";
    memset(made, 0, sizeof *made);
    snprintf(pdir, sizeof pdir, "%s/plots", dir);
    if (tc_mkdir_p(pdir) != TC_OK) {
        snprintf(made->why, sizeof made->why, "cannot create %s", pdir);
        return -1;
    }
    static const char *const terminals[] = {"pngcairo", "png"};
    for (int t = 0; t < 2; t++) {
        if (write_script(pdir, terminals[t], rows, n, opt, made, script)) {
            snprintf(made->why, sizeof made->why, "cannot write the plot data under %s", pdir);
            return -1;
        }
        const char *names[5] = {"loss", "acc_steps", "acc_speed", "acc_params", "masks"};
        int want[5] = {made->loss, made->acc_steps, made->acc_speed, made->acc_params, made->masks};
        if (!want[0] && !want[1] && !want[2] && !want[3] && !want[4]) {
            snprintf(made->why, sizeof made->why, "no data to plot");
            return -1;
        }
        int rc = run_gnuplot(prog, script);
        if (rc == 127) {
            snprintf(made->why, sizeof made->why,
                     "%s was not found (install gnuplot-nox, then run the report again)", prog);
            return -1;
        }
        if (rc != 0) {
            snprintf(made->why, sizeof made->why, "%s failed (exit %d) on %s", prog, rc, script);
            continue; /* try the next terminal */
        }
        for (int k = 0; k < 5; k++) {
            if (!want[k]) continue;
            char tmp[PATH_LEN], fin[PATH_LEN];
            snprintf(tmp, sizeof tmp, "%s/%s.png.tmp", pdir, names[k]);
            snprintf(fin, sizeof fin, "%s/%s.png", pdir, names[k]);
            if (rename(tmp, fin) != 0) {
                snprintf(made->why, sizeof made->why, "%s did not produce %s", prog, tmp);
                return -1;
            }
        }
        return 0;
    }
    return -1;
}
