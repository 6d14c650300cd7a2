/* console progress (contract in progress.h). */
#include "progress.h"

#include <math.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

void tc_progress_format(char *buf, size_t cap, const char *stage, int64_t step, int64_t total,
                        double loss, double ips, double eta) {
    char eta_s[32];
    if (!(eta >= 0) || !isfinite(eta))
        snprintf(eta_s, sizeof eta_s, "--:--");
    else {
        long s = (long)(eta + 0.5);
        if (s >= 3600)
            snprintf(eta_s, sizeof eta_s, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else
            snprintf(eta_s, sizeof eta_s, "%02ld:%02ld", s / 60, s % 60);
    }
    int w = 1;
    for (int64_t t = total; t >= 10; t /= 10)
        w++;
    snprintf(buf, cap, "stage %s [%*lld/%lld] loss %.4f  img/s %.1f  ETA %s", stage, w,
             (long long)step, (long long)total, loss, ips, eta_s);
}

void tc_progress_begin(tc_progress *p, FILE *f, const char *stage, int64_t start_step,
                       int64_t total, int64_t every, int force_tty) {
    memset(p, 0, sizeof *p);
    p->f = f;
    p->tty = force_tty >= 0 ? force_tty : isatty(fileno(f));
    snprintf(p->stage, sizeof p->stage, "%s", stage);
    p->start_step = start_step;
    p->total = total;
    p->every = every > 0 ? every : 1;
    p->t_start = now_s();
    p->t_last_draw = -1;
}

void tc_progress_update(tc_progress *p, int64_t step, double loss, double ips) {
    double t = now_s();
    int last = step >= p->total;
    if (p->tty) {
        if (!last && p->t_last_draw >= 0 && t - p->t_last_draw < 0.1) return;
    } else if (!last && step % p->every != 0) {
        return;
    }
    int64_t done = step - p->start_step;
    double eta = done > 0 ? (t - p->t_start) / (double)done * (double)(p->total - step) : -1;
    char line[256];
    tc_progress_format(line, sizeof line, p->stage, step, p->total, loss, ips, eta);
    if (p->tty) {
        fprintf(p->f, "\r%s\033[K", line);
        p->drawn = 1;
        if (last) {
            fputc('\n', p->f);
            p->drawn = 0;
        }
    } else {
        fprintf(p->f, "%s\n", line);
    }
    fflush(p->f);
    p->t_last_draw = t;
}

void tc_progress_message(tc_progress *p, const char *msg) {
    if (p->tty && p->drawn) fprintf(p->f, "\r\033[K");
    fprintf(p->f, "%s\n", msg);
    p->drawn = 0;
    p->t_last_draw = -1; /* redraw at the next update */
    fflush(p->f);
}

void tc_progress_end(tc_progress *p) {
    if (p->tty && p->drawn) fputc('\n', p->f);
    p->drawn = 0;
    fflush(p->f);
}
