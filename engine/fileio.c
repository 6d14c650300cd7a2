#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct tc_atomic_file {
    int fd;
    char *path; /* target */
    char *tmp;  /* temp file beside it */
    char *dir;  /* directory to fsync after the rename */
};

static atomic_uint temp_counter;

static char *dup_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

static void free_file(tc_atomic_file *f) {
    if (!f) return;
    free(f->path);
    free(f->tmp);
    free(f->dir);
    free(f);
}

tc_status tc_atomic_open(tc_atomic_file **out, const char *path) {
    *out = NULL;
    tc_atomic_file *f = calloc(1, sizeof *f);
    if (!f) return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    f->fd = -1;
    f->path = strdup(path);
    f->dir = dup_dirname(path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t cap = strlen(path) + 64;
    f->tmp = malloc(cap);
    if (!f->path || !f->dir || !f->tmp) {
        free_file(f);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    unsigned n = atomic_fetch_add(&temp_counter, 1);
    snprintf(f->tmp, cap, "%s/.%s.tmp.%ld.%u", f->dir, base, (long)getpid(), n);
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (f->fd < 0) {
        tc_status st = tc_fail(TC_ERR_IO, "%s: cannot create temporary file %s: %s", path, f->tmp,
                               strerror(errno));
        free_file(f);
        return st;
    }
    *out = f;
    return TC_OK;
}

tc_status tc_atomic_write(tc_atomic_file *f, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t w = write(f->fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return tc_fail(TC_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return TC_OK;
}

void tc_atomic_abort(tc_atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    free_file(f);
}

tc_status tc_atomic_commit(tc_atomic_file *f) {
    tc_status st = TC_OK;
    if (fsync(f->fd) != 0) {
        st = tc_fail(TC_ERR_IO, "%s: fsync failed: %s", f->path, strerror(errno));
        tc_atomic_abort(f);
        return st;
    }
    int rc = close(f->fd);
    f->fd = -1;
    if (rc != 0) {
        st = tc_fail(TC_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
        tc_atomic_abort(f);
        return st;
    }
    if (rename(f->tmp, f->path) != 0) {
        st = tc_fail(TC_ERR_IO, "%s: rename from %s failed: %s", f->path, f->tmp, strerror(errno));
        tc_atomic_abort(f);
        return st;
    }
    /* the rename is durable only once the directory entry is */
    int dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL)
            st = tc_fail(TC_ERR_IO, "%s: fsync of directory %s failed: %s", f->path, f->dir,
                         strerror(errno));
        close(dfd);
    }
    free_file(f);
    return st;
}

tc_status tc_write_file_atomic(const char *path, const void *data, size_t len) {
    tc_atomic_file *f;
    TC_TRY(tc_atomic_open(&f, path));
    tc_status st = tc_atomic_write(f, data, len);
    if (st != TC_OK) {
        tc_atomic_abort(f);
        return st;
    }
    return tc_atomic_commit(f);
}

char *tc_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

tc_status tc_write_file_atomic_in(const char *dir, const char *name, const void *data, size_t len) {
    char *p = tc_path_join(dir, name);
    if (!p) return tc_fail(TC_ERR_OOM, "out of memory");
    tc_status s = tc_write_file_atomic(p, data, len);
    free(p);
    return s;
}

tc_status tc_read_file_bounded(const char *path, size_t max_bytes, char **data, size_t *len) {
    *data = NULL;
    if (len) *len = 0;
    /* O_NONBLOCK: a FIFO is refused below instead of waiting for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tc_fail(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        const char *why = tc_file_mode_kind(st.st_mode);
        return tc_fail(TC_ERR_IO, "%s: %s", path, why ? why : "cannot be examined");
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        close(fd);
        return tc_fail(TC_ERR_FORMAT, "%s: file too large (%lld bytes, limit %zu)", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(buf);
        return tc_fail(TC_ERR_IO, "%s: short read", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return TC_OK;
}

tc_status tc_mkdir_p(const char *path) {
    size_t n = strlen(path);
    if (n == 0 || n >= PATH_MAX) return tc_fail(TC_ERR_ARG, "bad directory path '%s'", path);
    char buf[PATH_MAX];
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char saved = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return tc_fail(TC_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        buf[i] = saved;
    }
    if (!tc_path_is_dir(path)) return tc_fail(TC_ERR_IO, "%s: not a directory", path);
    return TC_OK;
}

int tc_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int tc_path_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

const char *tc_path_not_regular(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT || errno == ENOTDIR ? "no such file or directory" : strerror(errno);
    return tc_file_mode_kind(st.st_mode);
}

const char *tc_file_mode_kind(unsigned mode) {
    mode_t m = (mode_t)mode;
    if (S_ISREG(m)) return NULL;
    if (S_ISDIR(m)) return "is a directory";
    if (S_ISFIFO(m)) return "is not a regular file (a FIFO)";
    if (S_ISSOCK(m)) return "is not a regular file (a socket)";
    if (S_ISCHR(m)) return "is not a regular file (a character device)";
    if (S_ISBLK(m)) return "is not a regular file (a block device)";
    return "is not a regular file";
}
