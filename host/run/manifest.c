/* folder manifests with XXH3-64 checksums (manifest.h) */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fileio.h"

#define MAX_MANIFEST_BYTES (1u << 20)
#define MAX_LISTED 256

tc_status tc_file_xxh3(const char *path, uint64_t *hash, uint64_t *size) {
    /* O_NONBLOCK: a FIFO is refused by the fstat below, never waited on */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tc_fail(TC_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tc_fail(TC_ERR_IO, "%s: not a regular file", path);
    }
    XXH3_state_t *x = XXH3_createState();
    size_t cap = 1u << 20;
    unsigned char *buf = malloc(cap);
    tc_status s = TC_OK;
    if (!x || !buf || XXH3_64bits_reset(x) != XXH_OK)
        s = tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    uint64_t total = 0;
    while (s == TC_OK) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) s = tc_fail(TC_ERR_IO, "%s: read error: %s", path, strerror(errno));
        if (n <= 0) break;
        if (XXH3_64bits_update(x, buf, (size_t)n) != XXH_OK)
            s = tc_fail(TC_ERR_IO, "%s: xxh3 failed", path);
        total += (uint64_t)n;
    }
    if (s == TC_OK) {
        *hash = XXH3_64bits_digest(x);
        *size = total;
    }
    free(buf);
    if (x) XXH3_freeState(x);
    close(fd);
    return s;
}

/* files of the manifest: regular, not hidden (temporaries), not the manifest */
static int listed_name(const char *dir, const char *name) {
    if (name[0] == '.' || strcmp(name, TC_MANIFEST_FILE) == 0) return 0;
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return lstat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

tc_status tc_manifest_write(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return tc_fail(TC_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    char *names[MAX_LISTED];
    int n = 0;
    tc_status s = TC_OK;
    struct dirent *e;
    while (s == TC_OK && (e = readdir(d))) {
        if (!listed_name(dir, e->d_name)) continue;
        if (n == MAX_LISTED)
            s = tc_fail(TC_ERR_IO, "%s: more than %d files", dir, MAX_LISTED);
        else if (!(names[n++] = strdup(e->d_name)))
            s = tc_fail(TC_ERR_OOM, "manifest: out of memory");
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    size_t cap = 64 + (size_t)n * 320, used = 0;
    char *text = s == TC_OK ? malloc(cap) : NULL;
    if (s == TC_OK && !text) s = tc_fail(TC_ERR_OOM, "manifest: out of memory");
    if (s == TC_OK) used = (size_t)snprintf(text, cap, "# tinyclip manifest: xxh3-64 size name\n");
    for (int i = 0; i < n && s == TC_OK; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        uint64_t h, size;
        s = tc_file_xxh3(p, &h, &size);
        if (s == TC_OK)
            used += (size_t)snprintf(text + used, cap - used,
                                     "xxh3 %016" PRIx64 " %" PRIu64 " %.255s\n", h, size, names[i]);
    }
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, TC_MANIFEST_FILE);
    if (s == TC_OK) s = tc_write_file_atomic(path, text, used);
    free(text);
    for (int i = 0; i < n; i++)
        free(names[i]);
    return s;
}

/* one line "xxh3 HEX SIZE NAME" checked against the file; 0 with why on a mismatch */
static int check_line(const char *dir, const char *line, char *why, size_t cap) {
    char hex[32], name[256];
    unsigned long long size;
    if (sscanf(line, "xxh3 %31s %llu %255[^\n]", hex, &size, name) != 3 || strchr(name, '/') ||
        strlen(hex) != 16) {
        snprintf(why, cap, "%s: unreadable line '%.80s'", TC_MANIFEST_FILE, line);
        return 0;
    }
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    const char *kind = tc_path_not_regular(p);
    if (kind) {
        snprintf(why, cap, "%s: %s", name, kind);
        return 0;
    }
    uint64_t h, got;
    if (tc_file_xxh3(p, &h, &got) != TC_OK) {
        snprintf(why, cap, "%.300s", tc_last_error());
        return 0;
    }
    if (got != size) {
        snprintf(why, cap, "%s: %" PRIu64 " bytes, the manifest says %llu", name, got, size);
        return 0;
    }
    char want[17];
    snprintf(want, sizeof want, "%016" PRIx64, h);
    if (strcmp(want, hex) != 0) {
        snprintf(why, cap, "%s: checksum %s, the manifest says %s", name, want, hex);
        return 0;
    }
    return 1;
}

int tc_manifest_verify(const char *dir, char *why, size_t cap) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, TC_MANIFEST_FILE);
    const char *kind = tc_path_not_regular(path);
    if (kind) {
        snprintf(why, cap, "%s: %s", TC_MANIFEST_FILE, kind);
        return strcmp(kind, "no such file or directory") == 0 ? -1 : 0;
    }
    char *text;
    size_t len;
    if (tc_read_file_bounded(path, MAX_MANIFEST_BYTES, &text, &len) != TC_OK) {
        snprintf(why, cap, "%.300s", tc_last_error());
        return 0;
    }
    int ok = 1, lines = 0;
    for (char *line = text; ok && line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (line[0] && line[0] != '#') {
            ok = check_line(dir, line, why, cap);
            lines++;
        }
        line = next;
    }
    free(text);
    if (ok && lines == 0) {
        snprintf(why, cap, "%s lists no file", TC_MANIFEST_FILE);
        ok = 0;
    }
    return ok;
}
