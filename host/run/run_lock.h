/* one writer per run folder: an advisory exclusive lock (flock) on
 * DIR/run.lock, taken before anything in the folder is written and held for
 * the life of the process. the kernel drops it when the process ends, killed
 * or not, so a lock is never stale; the file itself stays and says who held
 * it last ("pid N host H since TIME"). a second run on the same folder fails
 * at once naming the holder's pid and host. in a data-parallel run rank 0
 * takes it for the job.
 *
 * the descriptor is close-on-exec: a child the run starts (gnuplot) never
 * inherits the lock. */
#ifndef TC_RUN_LOCK_H
#define TC_RUN_LOCK_H

#include "status.h"

typedef struct {
    int fd; /* -1: not held */
} tc_run_lock;

#define TC_RUN_LOCK_FILE "run.lock"

/* creates dir (and its parents) if needed and locks it; TC_ERR_IO naming the
 * holder when another process holds the lock */
tc_status tc_run_lock_acquire(tc_run_lock *l, const char *dir);

/* releases a held lock (a no-op on one never taken) */
void tc_run_lock_release(tc_run_lock *l);

#endif
