/* metrics.jsonl writer and reader (contract in metrics_log.h). */
#include "metrics_log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "fileio.h"

#define MAX_METRICS_BYTES (512u << 20)

struct tc_metrics_log {
    FILE *f;
    char path[1024];
};

static int plain_key(const char *k) {
    if (!k || !k[0] || strlen(k) > 100) return 0;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '/' || *p == '-'))
            return 0;
    return 1;
}

tc_status tc_metrics_open(tc_metrics_log **out, const char *path) {
    *out = NULL;
    tc_metrics_log *m = calloc(1, sizeof *m);
    if (!m) return tc_fail(TC_ERR_OOM, "metrics: out of memory");
    if (snprintf(m->path, sizeof m->path, "%s", path) >= (int)sizeof m->path) {
        free(m);
        return tc_fail(TC_ERR_ARG, "metrics: path too long");
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        tc_status s = tc_mkdir_p(dir);
        if (s != TC_OK) {
            free(m);
            return s;
        }
    }
    m->f = fopen(path, "a");
    if (!m->f) {
        tc_status s =
            tc_fail(TC_ERR_IO, "%s: cannot open for appending: %s", path, strerror(errno));
        free(m);
        return s;
    }
    *out = m;
    return TC_OK;
}

tc_status tc_metrics_write(tc_metrics_log *m, int64_t step, const char *event, int n,
                           const char *const *keys, const double *values) {
    char line[4096];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int len = snprintf(line, sizeof line, "{\"step\": %lld, \"time\": %.3f", (long long)step,
                       (double)tv.tv_sec + (double)tv.tv_usec * 1e-6);
    if (event) {
        if (!plain_key(event))
            return tc_fail(TC_ERR_ARG, "%s: event name '%.40s' is not a plain name", m->path,
                           event);
        len += snprintf(line + len, sizeof line - (size_t)len, ", \"event\": \"%s\"", event);
    }
    for (int i = 0; i < n; i++) {
        if (!plain_key(keys[i]))
            return tc_fail(TC_ERR_ARG, "%s: metric name '%.40s' is not a plain name", m->path,
                           keys[i]);
        if ((size_t)len + strlen(keys[i]) + 40 >= sizeof line)
            return tc_fail(TC_ERR_ARG, "%s: too many metrics in one line", m->path);
        if (isfinite(values[i]))
            len += snprintf(line + len, sizeof line - (size_t)len, ", \"%s\": %.9g", keys[i],
                            values[i]);
        else
            len += snprintf(line + len, sizeof line - (size_t)len, ", \"%s\": null", keys[i]);
    }
    len += snprintf(line + len, sizeof line - (size_t)len, "}\n");
    if (fwrite(line, 1, (size_t)len, m->f) != (size_t)len || fflush(m->f) != 0)
        return tc_fail(TC_ERR_IO, "%s: write failed: %s", m->path, strerror(errno));
    return TC_OK;
}

tc_status tc_metrics_sync(tc_metrics_log *m) {
    if (fflush(m->f) != 0 || fsync(fileno(m->f)) != 0)
        return tc_fail(TC_ERR_IO, "%s: fsync failed: %s", m->path, strerror(errno));
    return TC_OK;
}

tc_status tc_metrics_close(tc_metrics_log *m) {
    if (!m) return TC_OK;
    tc_status s = TC_OK;
    if (fclose(m->f) != 0) s = tc_fail(TC_ERR_IO, "%s: close failed: %s", m->path, strerror(errno));
    free(m);
    return s;
}

/* the number after "key": in a line (NUL-terminated); 0 when absent or null */
static int line_number(const char *line, const char *key, double *v) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return 0;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    char *end;
    double d = strtod(p, &end);
    if (end == p) return 0;
    *v = d;
    return 1;
}

static int line_event_is(const char *line, const char *event) {
    const char *p = strstr(line, "\"event\":");
    if (!event) return p == NULL;
    if (!p) return 0;
    p += 8;
    while (*p == ' ')
        p++;
    size_t n = strlen(event);
    return *p == '"' && !strncmp(p + 1, event, n) && p[1 + n] == '"';
}

tc_status tc_metrics_truncate_after(const char *path, int64_t step) {
    char *data;
    size_t len;
    if (!tc_path_is_file(path)) return TC_OK;
    TC_TRY(tc_read_file_bounded(path, MAX_METRICS_BYTES, &data, &len));
    char *out = malloc(len + 1);
    if (!out) {
        free(data);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    size_t olen = 0;
    for (char *p = data; p < data + len;) {
        char *nl = memchr(p, '\n', (size_t)(data + len - p));
        if (!nl) break; /* a torn last line (killed mid-write) is dropped */
        *nl = 0;
        double s;
        if (line_number(p, "step", &s) && s <= (double)step) {
            size_t l = (size_t)(nl - p);
            memcpy(out + olen, p, l);
            out[olen + l] = '\n';
            olen += l + 1;
        }
        p = nl + 1;
    }
    tc_status st = tc_write_file_atomic(path, out, olen);
    free(out);
    free(data);
    return st;
}

tc_status tc_metrics_read_series(const char *path, const char *key, const char *event,
                                 int64_t **steps, double **values, int *n) {
    *steps = NULL;
    *values = NULL;
    *n = 0;
    if (strlen(key) > 100) return tc_fail(TC_ERR_ARG, "metrics: key too long");
    char *data;
    size_t len;
    TC_TRY(tc_read_file_bounded(path, MAX_METRICS_BYTES, &data, &len));
    int cap = 0, cnt = 0;
    int64_t *s = NULL;
    double *v = NULL;
    for (char *p = data; p < data + len;) {
        char *nl = memchr(p, '\n', (size_t)(data + len - p));
        char *end = nl ? nl : data + len;
        *end = 0;
        double st, val;
        if (line_event_is(p, event) && line_number(p, "step", &st) && line_number(p, key, &val)) {
            if (cnt == cap) {
                cap = cap ? cap * 2 : 256;
                int64_t *ns = realloc(s, (size_t)cap * sizeof *s);
                if (ns) s = ns;
                double *nv = ns ? realloc(v, (size_t)cap * sizeof *v) : NULL;
                if (!ns || !nv) {
                    free(s);
                    free(v);
                    free(data);
                    return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
                }
                v = nv;
            }
            s[cnt] = (int64_t)st;
            v[cnt] = val;
            cnt++;
        }
        if (!nl) break;
        p = nl + 1;
    }
    free(data);
    *steps = s;
    *values = v;
    *n = cnt;
    return TC_OK;
}
