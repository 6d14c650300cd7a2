/* the run folder's lock (run_lock.h) */
#include "run_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"

/* what the holder wrote: "pid N host H since T"; it writes right after it
 * locks, so an empty file is retried for a moment */
static void read_holder(int fd, char *buf, size_t cap) {
    buf[0] = 0;
    for (int tries = 0; tries < 50 && !buf[0]; tries++) {
        ssize_t n = pread(fd, buf, cap - 1, 0);
        buf[n > 0 ? n : 0] = 0;
        buf[strcspn(buf, "\n")] = 0;
        if (!buf[0]) usleep(10000);
    }
}

tc_status tc_run_lock_acquire(tc_run_lock *l, const char *dir) {
    l->fd = -1;
    TC_TRY(tc_mkdir_p(dir));
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, TC_RUN_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    if (fd < 0)
        return tc_fail(TC_ERR_IO, "%s: cannot open the run folder's lock: %s", path,
                       strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tc_fail(TC_ERR_IO, "%s: not a regular file; the run folder's lock must be one",
                       path);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            char who[256];
            read_holder(fd, who, sizeof who);
            close(fd);
            return tc_fail(TC_ERR_IO,
                           "%s: another run is writing to this run folder (%s); wait for it to "
                           "end or give another --out (the lock is %s)",
                           dir, who[0] ? who : "its pid is not written yet", path);
        }
        close(fd);
        return tc_fail(TC_ERR_IO,
                       "%s: cannot lock the run folder: %s (the file system must support "
                       "flock for one writer per run folder)",
                       path, strerror(e));
    }
    char host[128] = "unknown", when[64] = "", text[320];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = 0;
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(text, sizeof text, "pid %ld host %s since %s\n", (long)getpid(), host, when);
    /* informative only: the lock is the flock, not the text (a holder that
     * cannot be named still excludes) */
    ssize_t w = ftruncate(fd, 0) == 0 ? pwrite(fd, text, (size_t)n, 0) : -1;
    (void)w;
    l->fd = fd;
    return TC_OK;
}

void tc_run_lock_release(tc_run_lock *l) {
    if (l->fd >= 0) close(l->fd); /* closing the last descriptor drops the flock */
    l->fd = -1;
}
