/* the source interface's shared parts (source.h): sample clean-up, UTF-8
 * checks, option defaults, and choosing the source kind from a spec */
#include <string.h>
#include <stdlib.h>

#include "source.h"

void tc_sample_clear(tc_sample *s) {
    if (!s) return;
    free(s->image);
    free(s->raw.px);
    free(s->caption);
    free(s->json);
    memset(s, 0, sizeof *s);
    s->label = -1;
}

int tc_utf8_valid(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
            n = 2, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
            n = 3, cp = c & 0x07;
        else
            return 0;
        if (len - i <= (size_t)n) return 0;
        for (int k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += (size_t)n + 1;
    }
    return 1;
}

void tc_source_opts_init(tc_source_opts *o) {
    memset(o, 0, sizeof *o);
    o->csv_sep = '\t';
    tc_stream_opts_init(&o->stream);
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

tc_status tc_source_open(const char *spec, const tc_source_opts *opts, tc_source **out) {
    *out = NULL;
    if (!spec || !spec[0]) return tc_fail(TC_ERR_ARG, "data: no source given");
    const char *kind = opts ? opts->kind : NULL;
    if (!kind) {
        if (strcmp(spec, "fmnist") == 0 || strncmp(spec, "fmnist:", 7) == 0)
            kind = "fmnist";
        else if (ends_with(spec, ".csv") || ends_with(spec, ".tsv"))
            kind = "csv";
        else if (strstr(spec, ".tar") || strstr(spec, "::") || tc_shard_is_remote(spec))
            kind = "wds";
        else
            kind = "folder";
    }
    tc_status st;
    if (strcmp(kind, "fmnist") == 0) {
        const char *split = strncmp(spec, "fmnist:", 7) == 0 ? spec + 7 : "train";
        st = tc_source_fmnist_open(split, opts, out);
    } else if (strcmp(kind, "csv") == 0) {
        st = tc_source_csv_open(spec, opts, out);
    } else if (strcmp(kind, "wds") == 0) {
        st = tc_source_wds_open(spec, opts, out);
    } else if (strcmp(kind, "folder") == 0) {
        st = tc_source_folder_open(spec, opts, out);
    } else {
        st = tc_fail(TC_ERR_ARG, "data: unknown source kind '%s' (wds, csv, folder, fmnist)", kind);
    }
    return st;
}

void tc_source_destroy(tc_source *s) {
    if (s && s->destroy) s->destroy(s);
}
