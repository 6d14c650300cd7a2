/* fault injection for the tests (fault.h); empty unless TC_FAULT_INJECTION */
#include "fault.h"

#ifdef TC_FAULT_INJECTION

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long long env_fault(const char *what, char *stage, size_t cap) {
    const char *v = getenv("TINYCLIP_FAULT");
    size_t n = strlen(what);
    if (!v || strncmp(v, what, n) != 0 || v[n] != ':') return -1;
    const char *at = strchr(v + n + 1, '@');
    if (at) snprintf(stage, cap, "%s", at + 1);
    return atoll(v + n + 1);
}

void tc_faults_from_env(tc_faults *f) {
    memset(f, 0, sizeof *f);
    f->kill_at_step = env_fault("kill_at_step", f->stage, sizeof f->stage);
    f->kill_in_checkpoint = env_fault("kill_in_checkpoint", f->stage, sizeof f->stage);
    f->nan_from_step = env_fault("nan_from_step", f->stage, sizeof f->stage);
}

static int in_stage(const tc_faults *f, const char *stage) {
    return !f->stage[0] || strcmp(f->stage, stage) == 0;
}

void tc_fault_after_step(const tc_faults *f, const char *stage, long long step) {
    if (f->kill_at_step == step && in_stage(f, stage)) raise(SIGKILL);
}

void tc_fault_in_checkpoint(const tc_faults *f, const char *stage, long long step) {
    if (f->kill_in_checkpoint == step && in_stage(f, stage)) raise(SIGKILL);
}

void tc_fault_batch(const tc_faults *f, const char *stage, long long step, float *images,
                    size_t n) {
    if (f->nan_from_step < 0 || step < f->nan_from_step || !in_stage(f, stage)) return;
    for (size_t k = 0; k < n; k++)
        images[k] = NAN;
}

#endif
