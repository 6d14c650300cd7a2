/* the source interface's shared parts (source.h): sample clean-up, option
 * defaults, and choosing the source kind from a spec */
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

void tc_source_opts_init(tc_source_opts *o) {
    memset(o, 0, sizeof *o);
    o->csv_sep = '\t';
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
        else if (strstr(spec, ".tar") || strstr(spec, "::"))
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
