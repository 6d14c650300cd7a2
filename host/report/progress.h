/* training progress on the console. on a terminal: one line rewritten in
 * place (at most 10 times a second)
 *   stage auto50 [  350/700] loss 1.2345  img/s 812.3  ETA 01:07
 * otherwise (a log file, a pipe): the same text as a plain line every
 * `every` steps and at the last step. ETA is measured from the steps done
 * since tc_progress_begin, so a resumed stage does not count restored steps. */
#ifndef TC_PROGRESS_H
#define TC_PROGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    int tty;
    char stage[64];
    int64_t total, start_step, every;
    double t_start, t_last_draw;
    int drawn; /* a partial line is on the terminal */
} tc_progress;

/* force_tty: -1 detect with isatty, 0 plain, 1 terminal */
void tc_progress_begin(tc_progress *p, FILE *f, const char *stage, int64_t start_step,
                       int64_t total, int64_t every, int force_tty);
/* step is the number of steps done (1..total) */
void tc_progress_update(tc_progress *p, int64_t step, double loss, double images_per_sec);
/* ends the terminal line; prints a plain message line without breaking it */
void tc_progress_message(tc_progress *p, const char *msg);
void tc_progress_end(tc_progress *p);

/* the line's text (no newline); eta_seconds < 0 prints "--:--" */
void tc_progress_format(char *buf, size_t cap, const char *stage, int64_t step, int64_t total,
                        double loss, double images_per_sec, double eta_seconds);

#endif
