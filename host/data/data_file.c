/* non-blocking, regular-files-only opening of data files; see data_file.h. */
#include "data_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

int tc_data_open_regular(const char *path, char *why, size_t why_cap) {
    /* O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, why_cap, "cannot be opened: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_cap, "cannot be examined: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_cap, "%s", tc_file_mode_kind(st.st_mode));
        close(fd);
        return -1;
    }
    /* a regular file: ordinary blocking reads from here */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        snprintf(why, why_cap, "cannot be opened: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int tc_data_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, char *why,
                      size_t why_cap) {
    *data = NULL;
    *len = 0;
    int fd = tc_data_open_regular(path, why, why_cap);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0) {
        snprintf(why, why_cap, "cannot be examined: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        snprintf(why, why_cap, "has size %lld, over the limit of %zu bytes", (long long)st.st_size,
                 max_bytes);
        close(fd);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n + 1);
    if (!b) {
        snprintf(why, why_cap, "does not fit in memory (%zu bytes)", n);
        close(fd);
        return -1;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t k = read(fd, b + off, n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            snprintf(why, why_cap, "cannot be read: %s", strerror(errno));
            free(b);
            close(fd);
            return -1;
        }
        if (k == 0) break;
        off += (size_t)k;
    }
    close(fd);
    if (off != n) {
        snprintf(why, why_cap, "changed while it was read (%zu of %zu bytes)", off, n);
        free(b);
        return -1;
    }
    b[n] = 0;
    *data = b;
    *len = n;
    return 0;
}

int tc_data_is_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
