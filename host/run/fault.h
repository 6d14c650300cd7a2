/* fault injection for the resume and lost-rank tests, compiled only into
 * the test build of the program (tinyclip_faults: the run library built
 * with TC_FAULT_INJECTION, see host/run/CMakeLists.txt). there, the
 * environment variable TINYCLIP_FAULT asks for one fault:
 *   kill_at_step:N[@stage]        SIGKILL right after step N
 *   kill_in_checkpoint:N[@stage]  SIGKILL inside the step-N checkpoint, after
 *                                 its weights and before its train state
 *   nan_from_step:N[@stage]       the images of every batch from step N on
 *                                 are NaN (the non-finite guard's test)
 * (@stage: only in that stage). in the released tinyclip every hook below
 * is an empty inline function: it has no fault code and reads no variable. */
#ifndef TC_RUN_FAULT_H
#define TC_RUN_FAULT_H

#include <stddef.h>

typedef struct {
    long long kill_at_step, kill_in_checkpoint, nan_from_step; /* -1: none */
    char stage[64];                                            /* "": every stage */
} tc_faults;

#ifdef TC_FAULT_INJECTION

/* the fault TINYCLIP_FAULT asks for */
void tc_faults_from_env(tc_faults *f);

/* raise SIGKILL when that fault is due at `step` of `stage` */
void tc_fault_after_step(const tc_faults *f, const char *stage, long long step);
void tc_fault_in_checkpoint(const tc_faults *f, const char *stage, long long step);

/* images (n floats) of the batch of `step` set to NaN when due */
void tc_fault_batch(const tc_faults *f, const char *stage, long long step, float *images, size_t n);

#else

static inline void tc_faults_from_env(tc_faults *f) {
    (void)f;
}
static inline void tc_fault_after_step(const tc_faults *f, const char *stage, long long step) {}
static inline void tc_fault_in_checkpoint(const tc_faults *f, const char *stage, long long step) {}
static inline void tc_fault_batch(const tc_faults *f, const char *stage, long long step,
                                  float *images, size_t n) {}

#endif

#endif
