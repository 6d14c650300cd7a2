/* the data.train section of the experiment schema (docs/experiments.md):
 * the source and its path (a webdataset spec resolved part by part: local
 * patterns against the file's folder, pipe: commands and URLs as given),
 * the reading order (resampled), the shuffle buffer, the sources'
 * upsampling factors, the pixel limit, and how pipe:/http(s) shards are
 * retried and timed out. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "experiment_internal.h"

static void csv_sep_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    char buf[16];
    const char *t = tc_yaml_scalar_text(v, buf, sizeof buf);
    size_t len = 0;
    if (t && v) fy_node_get_scalar(v, &len);
    if (!t || len != 1) {
        tc_yaml_report(y, v, path, "expected a single character, e.g. \"\\t\" or \",\"");
        return;
    }
    ((tc_exp_train_data *)obj)->csv_separator = t[0];
}

#define MAX_FACTORS 64

/* one factor in (0, 1e6]; 0 when the text is not one */
static int factor(const char *text, double *f) {
    return text && tc_yaml_parse_f64(text, f) == 1 && *f > 0 && *f <= 1e6;
}

/* upsampling_factors: [1, 3], or open_clip's "1::3" */
static void upsampling_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_train_data *t = obj;
    char buf[256];
    double f[MAX_FACTORS];
    int n = 0;
    if (v && fy_node_is_sequence(v)) {
        void *it = NULL;
        struct fy_node *item;
        while ((item = fy_node_sequence_iterate(v, &it))) {
            if (n == MAX_FACTORS ||
                !factor(tc_yaml_scalar_text(tc_yaml_deref(item), buf, sizeof buf), &f[n])) {
                tc_yaml_report(y, item, path, "expected up to %d factors in (0, 1e6]", MAX_FACTORS);
                return;
            }
            n++;
        }
    } else {
        const char *text = tc_yaml_scalar_text(v, buf, sizeof buf);
        char *list = text ? tc_yaml_strdup(text) : NULL;
        for (char *p = list, *sep; p; p = sep ? sep + 2 : NULL) {
            sep = strstr(p, "::");
            if (sep) *sep = 0;
            if (n == MAX_FACTORS || !factor(p, &f[n])) {
                n = -1;
                break;
            }
            n++;
        }
        free(list);
        if (n <= 0) {
            tc_yaml_report(y, v, path,
                           "expected a list of factors in (0, 1e6], or \"1::3\" as open_clip "
                           "writes them");
            return;
        }
    }
    free(t->upsampling);
    t->upsampling = n > 0 ? malloc(sizeof(double) * (size_t)n) : NULL;
    if (t->upsampling) memcpy(t->upsampling, f, sizeof(double) * (size_t)n);
    t->n_upsampling = t->upsampling ? n : 0;
}

/* for a single path it is tc_yaml_resolve_path */
char *tc_exp_resolve_spec(tc_yaml *y, const char *spec) {
    size_t parts = 1;
    for (const char *q = strstr(spec, "::"); q; q = strstr(q + 2, "::"))
        parts++;
    size_t cap = strlen(spec) + parts * ((y->base_dir ? strlen(y->base_dir) : 0) + 2) + 1;
    char *out = malloc(cap);
    if (!out) return NULL;
    out[0] = 0;
    for (const char *p = spec; p;) {
        const char *sep = strstr(p, "::");
        size_t n = sep ? (size_t)(sep - p) : strlen(p);
        char *part = malloc(n + 1);
        if (!part) {
            free(out);
            return NULL;
        }
        memcpy(part, p, n);
        part[n] = 0;
        int keep = !strncmp(part, "pipe:", 5) || strstr(part, "://") != NULL;
        char *r = keep ? tc_yaml_strdup(part) : tc_yaml_resolve_path(y, part);
        if (r) {
            strcat(out, r);
            if (sep) strcat(out, "::");
        }
        free(r);
        free(part);
        p = sep ? sep + 2 : NULL;
    }
    return out;
}

static const tc_yaml_field train_fields[] = {
    {.key = "source",
     .type = TC_YAML_ENUM,
     .off = offsetof(tc_exp_train_data, source),
     .enums = tc_exp_source_names},
    {.key = "path",
     .type = TC_YAML_PATH,
     .off = offsetof(tc_exp_train_data, path),
     .resolve = tc_exp_resolve_spec},
    {.key = "num_samples",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_train_data, num_samples),
     .lo = 1,
     .hi = TC_EXP_MAX_SAMPLES},
    {.key = "workers",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_train_data, workers),
     .hi = 1024},
    {.key = "batch",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_train_data, batch),
     .lo = 1,
     .hi = 1 << 20},
    {.key = "csv_img_key", .type = TC_YAML_STR, .off = offsetof(tc_exp_train_data, csv_img_key)},
    {.key = "csv_caption_key",
     .type = TC_YAML_STR,
     .off = offsetof(tc_exp_train_data, csv_caption_key)},
    {.key = "csv_separator", .type = TC_YAML_CUSTOM, .fn = csv_sep_fn},
    {.key = "resampled", .type = TC_YAML_BOOL, .off = offsetof(tc_exp_train_data, resampled)},
    {.key = "shuffle_buffer",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_train_data, shuffle_buffer),
     .hi = 1000000},
    {.key = "upsampling_factors", .type = TC_YAML_CUSTOM, .fn = upsampling_fn},
    {.key = "max_image_pixels",
     .type = TC_YAML_I64,
     .off = offsetof(tc_exp_train_data, max_image_pixels),
     .lo = 1,
     .hi = 4.3e9},
    {.key = "pipe_retries",
     .type = TC_YAML_INT,
     .off = offsetof(tc_exp_train_data, pipe_retries),
     .hi = 100},
    {.key = "pipe_backoff",
     .type = TC_YAML_F64,
     .off = offsetof(tc_exp_train_data, pipe_backoff),
     .hi = 3600},
    {.key = "pipe_timeout",
     .type = TC_YAML_F64,
     .off = offsetof(tc_exp_train_data, pipe_timeout),
     .lo = 1,
     .hi = 86400},
};

void tc_exp_train_fn(tc_yaml *y, struct fy_node *v, const char *path, void *obj) {
    tc_exp_train_data *t = &((tc_experiment *)obj)->train;
    uint64_t seen = tc_yaml_parse_map(y, v, path, train_fields, TC_YAML_NF(train_fields), t);
    if (!v || !fy_node_is_mapping(v)) return;
    if (!tc_yaml_seen(train_fields, TC_YAML_NF(train_fields), seen, "source")) {
        tc_yaml_report(y, v, path, "missing key 'source' (fmnist, wds or csv)");
        return;
    }
    char p[256];
    tc_yaml_join(p, sizeof p, path, "path");
    if (t->source != TC_EXP_DATA_FMNIST && !t->path)
        tc_yaml_report(y, v, p, "a %s source needs a path", tc_exp_source_names[t->source]);
    tc_yaml_join(p, sizeof p, path, "num_samples");
    if (t->source == TC_EXP_DATA_WDS && t->num_samples <= 0)
        tc_yaml_report(y, v, p,
                       "webdataset shards need num_samples (samples per epoch), as open_clip's "
                       "--train-num-samples");
    if (t->source == TC_EXP_DATA_FMNIST && t->num_samples <= 0) t->num_samples = 60000;
    tc_yaml_join(p, sizeof p, path, "resampled");
    if (t->resampled && t->source != TC_EXP_DATA_WDS)
        tc_yaml_report(y, v, p, "resampled reading needs webdataset shards (source: wds)");
    tc_yaml_join(p, sizeof p, path, "upsampling_factors");
    int parts = 1;
    for (const char *q = t->path ? strstr(t->path, "::") : NULL; q; q = strstr(q + 2, "::"))
        parts++;
    if (t->n_upsampling > 0 && !t->resampled)
        tc_yaml_report(y, v, p,
                       "upsampling factors need resampled: true (as open_clip's "
                       "--dataset-resampled)");
    else if (t->n_upsampling > 0 && t->n_upsampling != parts)
        tc_yaml_report(y, v, p, "%d factors for %d sources (one per '::' part of the path)",
                       t->n_upsampling, parts);
}
