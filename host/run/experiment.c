/* experiment files: YAML (libfyaml) -> validated tc_experiment.
 * the schema is written out in experiment.h and docs/experiments.md.
 *
 * the parser is table driven: each mapping of the schema is a list of
 * fields (key, type, offset, range); a pass over the mapping reports
 * unknown keys, wrong types and out-of-range values, each at the node's
 * line:column. defaults that depend on other fields (lr by stage kind,
 * warm-up by inheritance, start sparsity from the parent) and the checks
 * that span the document (parents, teacher reference) run afterwards.
 * positions of nodes come from libfyaml's diagnostics: reporting on a node
 * records its mark, which is read back from the collected error list. */
#include "experiment.h"

#include <ctype.h>
#include <libfyaml.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(tc_exp_backend) == sizeof(int), "enum fields are written as int");

#define MAX_TOUCHED 512
#define MAX_PARAMS 64
#define MAX_FILE_BYTES (1u << 20)
#define MAX_MARKED_NODES 20000 /* positions recorded for at most this many nodes */

struct ctx;
typedef void (*custom_fn)(struct ctx *c, struct fy_node *v, const char *path, void *obj);

enum { FT_INT, FT_I64, FT_F32, FT_F64, FT_BOOL, FT_STR, FT_PATH, FT_CFG, FT_ENUM, FT_CUSTOM };

typedef struct {
    const char *key;
    int type;
    size_t off;
    double lo, hi;
    int excl_lo;               /* lo itself is out of range */
    const char *const *enums;  /* FT_ENUM: NULL-terminated names, value = index */
    custom_fn fn;              /* FT_CUSTOM */
} field;

typedef struct {
    struct fy_node *node;
    int line, column;
} node_mark;

typedef struct ctx {
    node_mark *marks; /* sorted by node address */
    int n_marks, cap_marks;
    struct fy_document *fyd;
    struct fy_diag *diag;
    const char *source;
    const char *base_dir;
    tc_exp_errors *errs;
    const char *const *overrides;
    struct fy_node *touched[MAX_TOUCHED];
    int touched_set[MAX_TOUCHED];
    int n_touched;
    struct {
        char name[64];
        char *value; /* NULL: take the environment */
    } params[MAX_PARAMS];
    int n_params;
    tc_experiment *exp;
    /* names resolved after all stages are read */
    char **parent_name;
    char **model_stage_name;
    tc_exp_loc *parent_loc, *name_loc;
    char *teacher_stage;
    tc_exp_loc teacher_stage_loc;
    tc_exp_loc teacher_loc;
    int cur_stage;
} ctx;

/* ---------------------------------------------------------------- errors */

/* snprintf whose truncation is intended (messages and key paths are capped) */
static void fmtc(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmtc(char *buf, size_t cap, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, cap, f, ap);
    va_end(ap);
}

static void add_error(ctx *c, tc_exp_loc loc, const char *path, const char *fmt, va_list ap) {
    if (c->errs->count >= TC_EXP_MAX_ERRORS) {
        c->errs->dropped++;
        return;
    }
    tc_exp_error *e = &c->errs->items[c->errs->count++];
    char msg[400];
    vsnprintf(msg, sizeof msg, fmt, ap);
    e->line = loc.from_set ? 0 : loc.line;
    e->column = loc.from_set ? 0 : loc.column;
    snprintf(e->key_path, sizeof e->key_path, "%s", path ? path : "");
    const char *p = path && path[0] ? path : "(top level)";
    if (loc.from_set) {
        const char *ov = c->overrides ? c->overrides[loc.from_set - 1] : "?";
        fmtc(e->text, sizeof e->text, "--set '%.150s': %s: %s", ov, p, msg);
    } else if (loc.line > 0) {
        fmtc(e->text, sizeof e->text, "%s:%d:%d: %s: %s", c->source, loc.line, loc.column, p, msg);
    } else {
        fmtc(e->text, sizeof e->text, "%s: %s: %s", c->source, p, msg);
    }
}

static void errl(ctx *c, tc_exp_loc loc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void errl(ctx *c, tc_exp_loc loc, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    add_error(c, loc, path, fmt, ap);
    va_end(ap);
}

static int mark_cmp(const void *a, const void *b) {
    const node_mark *x = a, *y = b;
    return x->node < y->node ? -1 : x->node > y->node;
}

static void collect_nodes(ctx *c, struct fy_node *n, int depth) {
    if (!n || depth > 256 || c->n_marks >= MAX_MARKED_NODES) return;
    if (c->n_marks == c->cap_marks) {
        int ncap = c->cap_marks ? c->cap_marks * 2 : 256;
        node_mark *m = realloc(c->marks, (size_t)ncap * sizeof *m);
        if (!m) return;
        c->marks = m;
        c->cap_marks = ncap;
    }
    c->marks[c->n_marks].node = n;
    c->marks[c->n_marks].line = c->marks[c->n_marks].column = 0;
    c->n_marks++;
    if (fy_node_is_mapping(n)) {
        void *it = NULL;
        struct fy_node_pair *pair;
        while ((pair = fy_node_mapping_iterate(n, &it))) {
            collect_nodes(c, fy_node_pair_key(pair), depth + 1);
            collect_nodes(c, fy_node_pair_value(pair), depth + 1);
        }
    } else if (fy_node_is_sequence(n)) {
        void *it = NULL;
        struct fy_node *item;
        while ((item = fy_node_sequence_iterate(n, &it))) collect_nodes(c, item, depth + 1);
    }
}

/* positions of every node of the file as parsed, taken before any override
 * edits the tree: libfyaml reports a node's mark through its diagnostics,
 * and reports on an edited tree are not safe */
static void record_marks(ctx *c, struct fy_node *root) {
    collect_nodes(c, root, 0);
    for (int i = 0; i < c->n_marks; i++) {
        /* scalars carry their token's mark (0-based); collections are reported */
        struct fy_token *t = fy_node_is_scalar(c->marks[i].node) ? fy_node_get_scalar_token(c->marks[i].node) : NULL;
        const struct fy_mark *m = t ? fy_token_start_mark(t) : NULL;
        if (m) {
            c->marks[i].line = m->line + 1;
            c->marks[i].column = m->column + 1;
        } else {
            fy_node_report(c->marks[i].node, FYET_ERROR, "#%d", i);
        }
    }
    void *it = NULL;
    struct fy_diag_error *e;
    while ((e = fy_diag_errors_iterate(c->diag, &it))) {
        if (!e->msg || e->msg[0] != '#') continue;
        char *end;
        long i = strtol(e->msg + 1, &end, 10);
        if (*end || i < 0 || i >= c->n_marks) continue;
        c->marks[i].line = e->line;
        c->marks[i].column = e->column;
    }
    qsort(c->marks, (size_t)c->n_marks, sizeof *c->marks, mark_cmp);
}

static tc_exp_loc node_loc(ctx *c, struct fy_node *n) {
    tc_exp_loc loc = {0, 0, 0};
    if (!n) return loc;
    /* a node from an override, or inside one, is named by the override */
    struct fy_node *a = n;
    for (int depth = 0; a && depth < 300; depth++, a = fy_node_get_parent(a))
        for (int i = 0; i < c->n_touched; i++)
            if (c->touched[i] == a) {
                loc.from_set = c->touched_set[i] + 1;
                return loc;
            }
    node_mark key = {n, 0, 0};
    node_mark *m = c->marks ? bsearch(&key, c->marks, (size_t)c->n_marks, sizeof *c->marks, mark_cmp) : NULL;
    if (m) {
        loc.line = m->line;
        loc.column = m->column;
    }
    return loc;
}

static void err(ctx *c, struct fy_node *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err(ctx *c, struct fy_node *n, const char *path, const char *fmt, ...) {
    if (c->errs->count >= TC_EXP_MAX_ERRORS) {
        c->errs->dropped++;
        return;
    }
    tc_exp_loc loc = node_loc(c, n);
    va_list ap;
    va_start(ap, fmt);
    add_error(c, loc, path, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- nodes */

static struct fy_node *deref(struct fy_node *n) {
    for (int i = 0; n && i < 16 && fy_node_is_alias(n); i++) n = fy_node_resolve_alias(n);
    if (n && fy_node_is_alias(n)) return NULL;
    return n;
}

static int is_null(struct fy_node *n) {
    if (!n) return 1;
    if (!fy_node_is_scalar(n)) return 0;
    if (fy_node_get_style(n) != FYNS_PLAIN) return 0;
    size_t len = 0;
    const char *s = fy_node_get_scalar(n, &len);
    if (!s || len == 0) return 1;
    return (len == 1 && s[0] == '~') ||
           (len == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

/* a scalar's text as a NUL-terminated copy in buf; NULL when not a scalar */
static const char *scalar_text(struct fy_node *n, char *buf, size_t cap) {
    if (!n || !fy_node_is_scalar(n)) return NULL;
    size_t len = 0;
    const char *s = fy_node_get_scalar(n, &len);
    if (!s) s = "", len = 0;
    if (len >= cap) len = cap - 1;
    memcpy(buf, s, len);
    buf[len] = 0;
    return buf;
}

static const char *node_kind(struct fy_node *n) {
    if (!n) return "nothing";
    if (fy_node_is_mapping(n)) return "a mapping";
    if (fy_node_is_sequence(n)) return "a list";
    return "a value";
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static void join(char *out, size_t cap, const char *path, const char *key) {
    if (path && path[0])
        fmtc(out, cap, "%s.%s", path, key);
    else
        fmtc(out, cap, "%s", key);
}

/* ---------------------------------------------------------------- strings */

/* ${NAME} from params:, then the environment */
static char *substitute(ctx *c, struct fy_node *n, const char *path, const char *text) {
    size_t cap = strlen(text) + 1, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    for (const char *p = text; *p;) {
        const char *val = NULL;
        size_t vlen = 0, skip = 1;
        char name[64];
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            size_t nl = end ? (size_t)(end - p - 2) : 0;
            int ok = end && nl > 0 && nl < sizeof name;
            for (size_t i = 0; ok && i < nl; i++)
                if (!(isalnum((unsigned char)p[2 + i]) || p[2 + i] == '_')) ok = 0;
            if (!ok) {
                err(c, n, path, "malformed placeholder in '%.80s' (expected ${NAME})", text);
                free(out);
                return NULL;
            }
            memcpy(name, p + 2, nl);
            name[nl] = 0;
            int found = 0;
            for (int i = 0; i < c->n_params; i++)
                if (!strcmp(c->params[i].name, name)) {
                    found = 1;
                    val = c->params[i].value;
                }
            if (!val) val = getenv(name);
            if (!val || !val[0]) {
                if (found)
                    err(c, n, path, "${%s}: params.%s is empty and the environment has no %s; set it, e.g. --set params.%s=VALUE",
                        name, name, name, name);
                else
                    err(c, n, path, "${%s} is not defined: add it under 'params:' or set the environment variable %s",
                        name, name);
                free(out);
                return NULL;
            }
            vlen = strlen(val);
            skip = nl + 3;
        } else {
            val = p;
            vlen = 1;
        }
        if (len + vlen + 1 > cap) {
            size_t ncap = (len + vlen + 1) * 2;
            char *t = realloc(out, ncap);
            if (!t) {
                free(out);
                return NULL;
            }
            out = t;
            cap = ncap;
        }
        memcpy(out + len, val, vlen);
        len += vlen;
        p += skip;
    }
    out[len] = 0;
    return out;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static char *resolve_path(ctx *c, const char *p) {
    if (p[0] == '/' || !c->base_dir || !c->base_dir[0] || !strcmp(c->base_dir, ".")) return xstrdup(p);
    size_t n = strlen(c->base_dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%s/%s", c->base_dir, p);
    return r;
}

/* a model config: a .json path, or a bare name looked up in the model folders */
static char *resolve_cfg(ctx *c, const char *p) {
    if (strchr(p, '/') || (strlen(p) > 5 && !strcmp(p + strlen(p) - 5, ".json"))) return resolve_path(c, p);
    char cand[2][1024];
    snprintf(cand[0], sizeof cand[0], "%s/../models/%s.json", c->base_dir ? c->base_dir : ".", p);
#ifdef TC_SOURCE_DIR
    snprintf(cand[1], sizeof cand[1], "%s/configs/models/%s.json", TC_SOURCE_DIR, p);
#else
    snprintf(cand[1], sizeof cand[1], "configs/models/%s.json", p);
#endif
    for (int i = 0; i < 2; i++)
        if (file_exists(cand[i])) return xstrdup(cand[i]);
    /* not found: keep the source-tree name so the stage plan's message names it */
    return xstrdup(cand[1]);
}

/* ---------------------------------------------------------------- fields */

static int parse_i64(const char *s, int64_t *out) {
    if (!s[0]) return 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end == 0 && end != s) {
        *out = v;
        return 1;
    }
    /* 1e4 style, when integral */
    double d = strtod(s, &end);
    if (*end || end == s || !isfinite(d) || d != floor(d) || fabs(d) > 9.0e15) return 0;
    *out = (int64_t)d;
    return 1;
}

static int parse_f64(const char *s, double *out) {
    char *end;
    if (!s[0]) return 0;
    double d = strtod(s, &end);
    if (*end || end == s || !isfinite(d)) return 0;
    *out = d;
    return 1;
}

static void range_error(ctx *c, struct fy_node *v, const char *path, const field *f, const char *text) {
    if (f->hi >= 1e300)
        err(c, v, path, "must be %s %.10g, got %s", f->excl_lo ? ">" : ">=", f->lo, text);
    else
        err(c, v, path, "must be in %s%.10g, %.10g], got %s", f->excl_lo ? "(" : "[", f->lo, f->hi, text);
}

static int in_range(const field *f, double d) {
    if (f->excl_lo ? !(d > f->lo) : !(d >= f->lo)) return 0;
    return d <= f->hi;
}

static void set_field(ctx *c, const field *f, struct fy_node *v, const char *path, void *obj) {
    char buf[1024];
    char *dst = (char *)obj + f->off;
    if (f->type == FT_CUSTOM) {
        f->fn(c, v, path, obj);
        return;
    }
    const char *text = scalar_text(v, buf, sizeof buf);
    if (!text || (is_null(v) && f->type != FT_STR)) {
        const char *want = f->type == FT_INT || f->type == FT_I64 ? "an integer"
                         : f->type == FT_F32 || f->type == FT_F64 ? "a number"
                         : f->type == FT_BOOL ? "true or false"
                                              : "a string";
        err(c, v, path, "expected %s, got %s", want, text ? "nothing" : node_kind(v));
        return;
    }
    switch (f->type) {
    case FT_INT:
    case FT_I64: {
        int64_t x;
        if (!parse_i64(text, &x)) {
            err(c, v, path, "expected an integer, got '%s'", text);
            return;
        }
        if (!in_range(f, (double)x)) {
            range_error(c, v, path, f, text);
            return;
        }
        if (f->type == FT_INT)
            *(int *)dst = (int)x;
        else
            *(int64_t *)dst = x;
        return;
    }
    case FT_F32:
    case FT_F64: {
        double d;
        if (!parse_f64(text, &d)) {
            err(c, v, path, "expected a number, got '%s'", text);
            return;
        }
        if (!in_range(f, d)) {
            range_error(c, v, path, f, text);
            return;
        }
        if (f->type == FT_F32)
            *(float *)dst = (float)d;
        else
            *(double *)dst = d;
        return;
    }
    case FT_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "True") || !strcmp(text, "TRUE"))
            *(int *)dst = 1;
        else if (!strcmp(text, "false") || !strcmp(text, "False") || !strcmp(text, "FALSE"))
            *(int *)dst = 0;
        else
            err(c, v, path, "expected true or false, got '%s'", text);
        return;
    case FT_ENUM: {
        char opts[256] = "";
        for (int i = 0; f->enums[i]; i++) {
            if (!strcmp(text, f->enums[i])) {
                *(int *)dst = i;
                return;
            }
            size_t l = strlen(opts);
            snprintf(opts + l, sizeof opts - l, "%s%s", i ? ", " : "", f->enums[i]);
        }
        err(c, v, path, "'%s' is not one of: %s", text, opts);
        return;
    }
    case FT_STR:
    case FT_PATH:
    case FT_CFG: {
        char **sp = (char **)dst;
        if (is_null(v)) {
            free(*sp);
            *sp = NULL;
            return;
        }
        char *s = substitute(c, v, path, text);
        if (!s) return;
        char *r = s;
        if (f->type == FT_PATH) r = resolve_path(c, s);
        if (f->type == FT_CFG) r = resolve_cfg(c, s);
        if (r != s) free(s);
        free(*sp);
        *sp = r;
        return;
    }
    }
}

/* walks a mapping; returns a bitmask of the fields present */
static uint64_t parse_map(ctx *c, struct fy_node *map, const char *path, const field *fields,
                          int nfields, void *obj) {
    uint64_t seen = 0;
    map = deref(map);
    if (!map || !fy_node_is_mapping(map)) {
        err(c, map, path, "expected a mapping, got %s", node_kind(map));
        return 0;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(map, &it))) {
        struct fy_node *k = fy_node_pair_key(pair), *v = deref(fy_node_pair_value(pair));
        char kb[128], child[256];
        const char *key = scalar_text(deref(k), kb, sizeof kb);
        if (!key) {
            err(c, k, path, "keys must be plain names, got %s", node_kind(deref(k)));
            continue;
        }
        join(child, sizeof child, path, key);
        int found = -1;
        for (int i = 0; i < nfields; i++)
            if (!strcmp(fields[i].key, key)) found = i;
        if (found < 0) {
            char opts[400] = "";
            for (int i = 0; i < nfields; i++) {
                size_t l = strlen(opts);
                snprintf(opts + l, sizeof opts - l, "%s%s", i ? ", " : "", fields[i].key);
            }
            err(c, k, child, "unknown key '%s' (expected one of: %s)", key, opts);
            continue;
        }
        seen |= 1ull << found;
        set_field(c, &fields[found], v, child, obj);
    }
    return seen;
}

static int seen_key(const field *fields, int nfields, uint64_t seen, const char *key) {
    for (int i = 0; i < nfields; i++)
        if (!strcmp(fields[i].key, key)) return (seen >> i) & 1;
    return 0;
}

#define NF(tab) ((int)(sizeof(tab) / sizeof((tab)[0])))
#define BIG 1e308

/* ---------------------------------------------------------------- schema */

static const char *const backend_names[] = {"cpu", "cuda", NULL};
static const char *const precision_names[] = {"fp32", "bf16", NULL};
static const char *const source_names[] = {"fmnist", "wds", "csv", NULL};
static const char *const zs_names[] = {"none", "fmnist", "folder", NULL};
static const char *const stage_kind_names[] = {"train_scratch_clip", "distill", NULL};
static const char *const sched_names[] = {"cosine", "const", NULL};

static void csv_sep_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    char buf[16];
    const char *t = scalar_text(v, buf, sizeof buf);
    size_t len = 0;
    if (t && v) fy_node_get_scalar(v, &len);
    if (!t || len != 1) {
        err(c, v, path, "expected a single character, e.g. \"\\t\" or \",\"");
        return;
    }
    ((tc_exp_train_data *)obj)->csv_separator = t[0];
}

static const field train_fields[] = {
    {"source", FT_ENUM, offsetof(tc_exp_train_data, source), 0, 0, 0, source_names, NULL},
    {"path", FT_PATH, offsetof(tc_exp_train_data, path), 0, 0, 0, NULL, NULL},
    {"num_samples", FT_I64, offsetof(tc_exp_train_data, num_samples), 1, BIG, 0, NULL, NULL},
    {"workers", FT_INT, offsetof(tc_exp_train_data, workers), 0, 1024, 0, NULL, NULL},
    {"batch", FT_INT, offsetof(tc_exp_train_data, batch), 1, 1 << 20, 0, NULL, NULL},
    {"csv_img_key", FT_STR, offsetof(tc_exp_train_data, csv_img_key), 0, 0, 0, NULL, NULL},
    {"csv_caption_key", FT_STR, offsetof(tc_exp_train_data, csv_caption_key), 0, 0, 0, NULL, NULL},
    {"csv_separator", FT_CUSTOM, 0, 0, 0, 0, NULL, csv_sep_fn},
};

static void templates_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_zeroshot *z = obj;
    char buf[1024];
    const char *t = scalar_text(v, buf, sizeof buf);
    if (!t || is_null(v)) {
        err(c, v, path, "expected openai, simple, fmnist or a template file path");
        return;
    }
    if (!strcmp(t, "openai")) z->templates = TC_EXP_TEMPLATES_OPENAI;
    else if (!strcmp(t, "simple")) z->templates = TC_EXP_TEMPLATES_SIMPLE;
    else if (!strcmp(t, "fmnist")) z->templates = TC_EXP_TEMPLATES_FMNIST;
    else {
        char *s = substitute(c, v, path, t);
        if (!s) return;
        free(z->templates_path);
        z->templates_path = resolve_path(c, s);
        free(s);
        z->templates = TC_EXP_TEMPLATES_FILE;
    }
}

static const field zs_fields[] = {
    {"dataset", FT_ENUM, offsetof(tc_exp_zeroshot, dataset), 0, 0, 0, zs_names, NULL},
    {"path", FT_PATH, offsetof(tc_exp_zeroshot, path), 0, 0, 0, NULL, NULL},
    {"classnames", FT_PATH, offsetof(tc_exp_zeroshot, classnames), 0, 0, 0, NULL, NULL},
    {"templates", FT_CUSTOM, 0, 0, 0, 0, NULL, templates_fn},
    {"max_images", FT_I64, offsetof(tc_exp_zeroshot, max_images), 0, BIG, 0, NULL, NULL},
    {"batch", FT_INT, offsetof(tc_exp_zeroshot, batch), 1, 1 << 20, 0, NULL, NULL},
};

static const field ret_fields[] = {
    {"source", FT_ENUM, offsetof(tc_exp_retrieval, source), 0, 0, 0, source_names, NULL},
    {"path", FT_PATH, offsetof(tc_exp_retrieval, path), 0, 0, 0, NULL, NULL},
    {"num_samples", FT_I64, offsetof(tc_exp_retrieval, num_samples), 0, BIG, 0, NULL, NULL},
    {"batch", FT_INT, offsetof(tc_exp_retrieval, batch), 1, 1 << 20, 0, NULL, NULL},
};

static void zero_shot_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_zeroshot *z = &((tc_experiment *)obj)->zero_shot;
    if (is_null(v)) {
        z->dataset = TC_EXP_ZS_NONE;
        return;
    }
    uint64_t seen = parse_map(c, v, path, zs_fields, NF(zs_fields), z);
    if (!seen_key(zs_fields, NF(zs_fields), seen, "dataset")) {
        if (v && fy_node_is_mapping(v)) err(c, v, path, "missing key 'dataset' (fmnist or folder)");
        return;
    }
    char p[256];
    if (z->dataset == TC_EXP_ZS_FOLDER) {
        join(p, sizeof p, path, "path");
        if (!z->path) err(c, v, p, "an image-folder evaluation needs a path");
        join(p, sizeof p, path, "classnames");
        if (!z->classnames) err(c, v, p, "an image-folder evaluation needs a class-name file");
    }
    if (z->dataset == TC_EXP_ZS_FMNIST && !seen_key(zs_fields, NF(zs_fields), seen, "templates"))
        z->templates = TC_EXP_TEMPLATES_FMNIST;
}

static void retrieval_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_retrieval *r = &((tc_experiment *)obj)->retrieval;
    if (is_null(v)) return;
    uint64_t seen = parse_map(c, v, path, ret_fields, NF(ret_fields), r);
    if (!v || !fy_node_is_mapping(v)) return;
    r->enabled = 1;
    char p[256];
    if (!seen_key(ret_fields, NF(ret_fields), seen, "source"))
        err(c, v, path, "missing key 'source' (wds or csv)");
    else if (r->source == TC_EXP_DATA_FMNIST) {
        join(p, sizeof p, path, "source");
        err(c, v, p, "retrieval needs captioned images: wds or csv");
    }
    join(p, sizeof p, path, "path");
    if (!r->path) err(c, v, p, "missing key 'path'");
}

static const field eval_fields[] = {
    {"zero_shot", FT_CUSTOM, 0, 0, 0, 0, NULL, zero_shot_fn},
    {"retrieval", FT_CUSTOM, 0, 0, 0, 0, NULL, retrieval_fn},
};

static void train_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_train_data *t = &((tc_experiment *)obj)->train;
    uint64_t seen = parse_map(c, v, path, train_fields, NF(train_fields), t);
    if (!v || !fy_node_is_mapping(v)) return;
    if (!seen_key(train_fields, NF(train_fields), seen, "source")) {
        err(c, v, path, "missing key 'source' (fmnist, wds or csv)");
        return;
    }
    char p[256];
    join(p, sizeof p, path, "path");
    if (t->source != TC_EXP_DATA_FMNIST && !t->path)
        err(c, v, p, "a %s source needs a path", source_names[t->source]);
    join(p, sizeof p, path, "num_samples");
    if (t->source == TC_EXP_DATA_WDS && t->num_samples <= 0)
        err(c, v, p, "webdataset shards need num_samples (samples per epoch), as open_clip's --train-num-samples");
    if (t->source == TC_EXP_DATA_FMNIST && t->num_samples <= 0) t->num_samples = 60000;
}

static void eval_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    if (is_null(v)) return;
    parse_map(c, v, path, eval_fields, NF(eval_fields), obj);
}

static const field data_fields[] = {
    {"train", FT_CUSTOM, 0, 0, 0, 0, NULL, train_fn},
    {"eval", FT_CUSTOM, 0, 0, 0, 0, NULL, eval_fn},
};

static void data_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    uint64_t seen = parse_map(c, v, path, data_fields, NF(data_fields), obj);
    if (v && fy_node_is_mapping(v) && !seen_key(data_fields, NF(data_fields), seen, "train"))
        err(c, v, path, "missing key 'train'");
}

/* ---- teacher and parents ---- */

static const field ext_fields[] = {
    {"checkpoint", FT_PATH, offsetof(tc_exp_external, checkpoint), 0, 0, 0, NULL, NULL},
    {"model", FT_CFG, offsetof(tc_exp_external, model), 0, 0, 0, NULL, NULL},
};

static void teacher_stage_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    char buf[256];
    const char *s = scalar_text(v, buf, sizeof buf);
    if (!s || is_null(v)) {
        err(c, v, path, "expected a stage name");
        return;
    }
    free(c->teacher_stage);
    c->teacher_stage = xstrdup(s);
    c->teacher_stage_loc = node_loc(c, v);
}

static void teacher_ckpt_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    static const field f = {"checkpoint", FT_PATH, offsetof(tc_exp_external, checkpoint), 0, 0, 0, NULL, NULL};
    set_field(c, &f, v, path, &((tc_exp_teacher *)obj)->ext);
}

static void teacher_model_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_teacher *t = obj;
    static const field f = {"model", FT_CFG, offsetof(tc_exp_external, model), 0, 0, 0, NULL, NULL};
    set_field(c, &f, v, path, &t->ext);
    t->ext.model_loc = node_loc(c, v);
}

static const field teacher_fields[] = {
    {"stage", FT_CUSTOM, 0, 0, 0, 0, NULL, teacher_stage_fn},
    {"checkpoint", FT_CUSTOM, 0, 0, 0, 0, NULL, teacher_ckpt_fn},
    {"model", FT_CUSTOM, 0, 0, 0, 0, NULL, teacher_model_fn},
    {"logit_scale", FT_F32, offsetof(tc_exp_teacher, logit_scale), 0, 100, 1, NULL, NULL},
};

static void teacher_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_teacher *t = &((tc_experiment *)obj)->teacher;
    if (is_null(v)) return;
    c->teacher_loc = node_loc(c, v);
    uint64_t seen = parse_map(c, v, path, teacher_fields, NF(teacher_fields), t);
    if (!v || !fy_node_is_mapping(v)) return;
    t->present = 1;
    int has_stage = seen_key(teacher_fields, NF(teacher_fields), seen, "stage");
    int has_ckpt = seen_key(teacher_fields, NF(teacher_fields), seen, "checkpoint");
    int has_model = seen_key(teacher_fields, NF(teacher_fields), seen, "model");
    if (has_stage && (has_ckpt || has_model))
        err(c, v, path, "give either 'stage' (a stage of this run) or 'checkpoint' + 'model', not both");
    else if (!has_stage && !has_ckpt)
        err(c, v, path, "missing 'stage' (a stage of this run) or 'checkpoint' + 'model'");
    else if (has_ckpt && !has_model)
        err(c, v, path, "missing 'model': the teacher's architecture (model config) must be given with its checkpoint");
}

/* ---- stages ---- */

static void parent_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_stage *st = obj;
    int i = c->cur_stage;
    if (is_null(v)) return;
    if (v && fy_node_is_mapping(v)) {
        uint64_t seen = parse_map(c, v, path, ext_fields, NF(ext_fields), &st->parent_ext);
        if (!seen_key(ext_fields, NF(ext_fields), seen, "checkpoint"))
            err(c, v, path, "missing key 'checkpoint'");
        if (!seen_key(ext_fields, NF(ext_fields), seen, "model"))
            err(c, v, path, "missing key 'model': the architecture of the checkpoint");
        struct fy_node *m = deref(fy_node_mapping_lookup_by_string(v, "model", FY_NT));
        st->parent_ext.model_loc = node_loc(c, m ? m : v);
        return;
    }
    char buf[256];
    const char *s = scalar_text(v, buf, sizeof buf);
    if (!s) {
        err(c, v, path, "expected a stage name or {checkpoint: PATH, model: CONFIG}, got %s", node_kind(v));
        return;
    }
    free(c->parent_name[i]);
    c->parent_name[i] = xstrdup(s);
    c->parent_loc[i] = node_loc(c, v);
}

static void model_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_stage *st = obj;
    if (v && fy_node_is_mapping(v)) {
        struct fy_node *sn = deref(fy_node_mapping_lookup_by_string(v, "stage", FY_NT));
        char buf[256];
        const char *s = scalar_text(sn, buf, sizeof buf);
        if (!s || is_null(sn) || fy_node_mapping_item_count(v) != 1) {
            err(c, v, path, "expected a model config or {stage: NAME}");
            return;
        }
        free(c->model_stage_name[c->cur_stage]);
        c->model_stage_name[c->cur_stage] = xstrdup(s);
        st->model_loc = node_loc(c, sn);
        return;
    }
    static const field f = {"model", FT_CFG, offsetof(tc_exp_stage, model), 0, 0, 0, NULL, NULL};
    set_field(c, &f, v, path, st);
    st->model_loc = node_loc(c, v);
}

static void layers_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_manual_tower *t = obj;
    char buf[64];
    if (v && fy_node_is_sequence(v)) {
        int n = fy_node_sequence_item_count(v);
        if (n < 1 || n > TC_EXP_MAX_LAYER_LIST) {
            err(c, v, path, "a layer list needs 1..%d entries, got %d", TC_EXP_MAX_LAYER_LIST, n);
            return;
        }
        void *it = NULL;
        struct fy_node *item;
        int k = 0;
        while ((item = fy_node_sequence_iterate(v, &it)) && k < n) {
            item = deref(item);
            const char *s = scalar_text(item, buf, sizeof buf);
            int64_t x;
            if (!s || !parse_i64(s, &x) || x < 0 || x >= 4096) {
                err(c, item, path, "expected a teacher layer index >= 0");
                return;
            }
            if (k > 0 && x <= t->layer_list[k - 1]) {
                err(c, item, path, "layer indices must increase");
                return;
            }
            t->layer_list[k++] = (int)x;
        }
        t->layers = TC_EXP_LAYERS_LIST;
        t->n_layers = k;
        return;
    }
    const char *s = scalar_text(v, buf, sizeof buf);
    if (s && !strcmp(s, "interval_front")) {
        t->layers = TC_EXP_LAYERS_INTERVAL_FRONT;
        return;
    }
    err(c, v, path, "expected interval_front or a list of teacher layer indices");
}

static void width_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    char buf[64];
    const char *s = scalar_text(v, buf, sizeof buf);
    if (!s || strcmp(s, "leading"))
        err(c, v, path, "expected leading (the first channels, heads and MLP units are kept)");
}

static const field tower_fields[] = {
    {"layers", FT_CUSTOM, 0, 0, 0, 0, NULL, layers_fn},
    {"width", FT_CUSTOM, 0, 0, 0, 0, NULL, width_fn},
};

static void manual_tower(ctx *c, struct fy_node *v, const char *path, tc_exp_manual_tower *t) {
    char buf[32];
    const char *s = scalar_text(v, buf, sizeof buf);
    if (s && (!strcmp(s, "none") || is_null(v))) {
        t->inherit = 0;
        return;
    }
    parse_map(c, v, path, tower_fields, NF(tower_fields), t);
}

static void vision_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    manual_tower(c, v, path, &((tc_exp_inheritance *)obj)->vision);
}
static void text_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    manual_tower(c, v, path, &((tc_exp_inheritance *)obj)->text);
}
static void ignore_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {}

static const field manual_fields[] = {
    {"kind", FT_CUSTOM, 0, 0, 0, 0, NULL, ignore_fn},
    {"vision", FT_CUSTOM, 0, 0, 0, 0, NULL, vision_fn},
    {"text", FT_CUSTOM, 0, 0, 0, 0, NULL, text_fn},
};

#define AOFF(f) (offsetof(tc_exp_inheritance, autoc) + offsetof(tc_exp_auto, f))
static void round_to_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    char buf[32];
    const char *s = scalar_text(v, buf, sizeof buf);
    int64_t x;
    if (!s || !parse_i64(s, &x) || (x != 0 && x != 8 && x != 64)) {
        err(c, v, path, "expected 0 (no rounding), 8 or 64");
        return;
    }
    ((tc_exp_inheritance *)obj)->autoc.round_to = (int)x;
}

static const field auto_fields[] = {
    {"kind", FT_CUSTOM, 0, 0, 0, 0, NULL, ignore_fn},
    {"start_sparsity", FT_F32, AOFF(start_sparsity), 0, 0.999, 0, NULL, NULL},
    {"target_sparsity", FT_F32, AOFF(target_sparsity), 0, 0.999, 1, NULL, NULL},
    {"sparsity_warmup", FT_I64, AOFF(sparsity_warmup), 0, BIG, 0, NULL, NULL},
    {"prune_step", FT_I64, AOFF(prune_step), 1, BIG, 0, NULL, NULL},
    {"lambda_init", FT_F32, AOFF(lambda_init), -1e6, 1e6, 0, NULL, NULL},
    {"mask_lr", FT_F32, AOFF(mask_lr), 0, 100, 1, NULL, NULL},
    {"lambda_lr", FT_F32, AOFF(lambda_lr), -100, 100, 0, NULL, NULL},
    {"round_to", FT_CUSTOM, 0, 0, 0, 0, NULL, round_to_fn},
    {"vision", FT_BOOL, AOFF(vision), 0, 0, 0, NULL, NULL},
    {"text", FT_BOOL, AOFF(text), 0, 0, 0, NULL, NULL},
};

static void inheritance_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_inheritance *inh = &((tc_exp_stage *)obj)->inherit;
    char buf[64];
    if (is_null(v)) return;
    const char *s = scalar_text(v, buf, sizeof buf);
    if (s) {
        if (!strcmp(s, "none")) inh->kind = TC_EXP_INHERIT_NONE;
        else err(c, v, path, "expected none or a mapping with kind: manual or kind: auto, got '%s'", s);
        return;
    }
    if (!v || !fy_node_is_mapping(v)) {
        err(c, v, path, "expected none or a mapping with kind: manual or kind: auto, got %s", node_kind(v));
        return;
    }
    struct fy_node *k = deref(fy_node_mapping_lookup_by_string(v, "kind", FY_NT));
    const char *kind = scalar_text(k, buf, sizeof buf);
    char kp[256];
    join(kp, sizeof kp, path, "kind");
    if (!kind) {
        err(c, v, path, "missing key 'kind' (none, manual or auto)");
        return;
    }
    if (!strcmp(kind, "none")) {
        inh->kind = TC_EXP_INHERIT_NONE;
        if (fy_node_mapping_item_count(v) > 1) err(c, v, path, "kind: none takes no other keys");
    } else if (!strcmp(kind, "manual")) {
        inh->kind = TC_EXP_INHERIT_MANUAL;
        parse_map(c, v, path, manual_fields, NF(manual_fields), inh);
        if (!inh->vision.inherit && !inh->text.inherit)
            err(c, v, path, "manual inheritance with both towers 'none' inherits nothing; use inheritance: none");
    } else if (!strcmp(kind, "auto")) {
        inh->kind = TC_EXP_INHERIT_AUTO;
        uint64_t seen = parse_map(c, v, path, auto_fields, NF(auto_fields), inh);
        if (!seen_key(auto_fields, NF(auto_fields), seen, "target_sparsity"))
            err(c, v, path, "missing key 'target_sparsity' (fraction of prunable parameters to remove, e.g. 0.5)");
        if (!seen_key(auto_fields, NF(auto_fields), seen, "prune_step"))
            err(c, v, path, "missing key 'prune_step' (mask-learning steps before pruning; 3000/5000/8000 in the original)");
        if (!inh->autoc.vision && !inh->autoc.text)
            err(c, v, path, "auto inheritance with vision: false and text: false masks nothing");
    } else {
        err(c, k, kp, "'%s' is not one of: none, manual, auto", kind);
    }
}

static void logit_scale_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_loss *l = obj;
    char buf[64];
    const char *s = scalar_text(v, buf, sizeof buf);
    double d;
    if (s && !strcmp(s, "learned")) {
        l->learned_logit_scale = 1;
        return;
    }
    if (!s || !parse_f64(s, &d) || !(d > 0) || d > 100) {
        err(c, v, path, "expected learned or a fixed scale in (0, 100] (the original fixes 50)");
        return;
    }
    l->learned_logit_scale = 0;
    l->logit_scale = (float)d;
}

static const field loss_fields[] = {
    {"distill_weight", FT_F32, offsetof(tc_exp_loss, distill_weight), 0, 1e6, 0, NULL, NULL},
    {"alpha", FT_F32, offsetof(tc_exp_loss, alpha), 0, 1, 0, NULL, NULL},
    {"logit_scale", FT_CUSTOM, 0, 0, 0, 0, NULL, logit_scale_fn},
    {"teacher_logit_scale", FT_F32, offsetof(tc_exp_loss, teacher_logit_scale), 0, 100, 1, NULL, NULL},
};

static void loss_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    parse_map(c, v, path, loss_fields, NF(loss_fields), &((tc_exp_stage *)obj)->loss);
}

static const field opt_fields[] = {
    {"lr", FT_F32, offsetof(tc_exp_optimizer, lr), 0, 10, 1, NULL, NULL},
    {"wd", FT_F32, offsetof(tc_exp_optimizer, wd), 0, 10, 0, NULL, NULL},
    {"beta1", FT_F32, offsetof(tc_exp_optimizer, beta1), 0, 0.999999, 0, NULL, NULL},
    {"beta2", FT_F32, offsetof(tc_exp_optimizer, beta2), 0, 0.999999, 0, NULL, NULL},
    {"eps", FT_F32, offsetof(tc_exp_optimizer, eps), 0, 1, 1, NULL, NULL},
    {"grad_clip", FT_F32, offsetof(tc_exp_optimizer, grad_clip), 0, 1e9, 0, NULL, NULL},
};

static void opt_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    parse_map(c, v, path, opt_fields, NF(opt_fields), &((tc_exp_stage *)obj)->opt);
}

static const field sched_fields[] = {
    {"kind", FT_ENUM, offsetof(tc_exp_schedule, kind), 0, 0, 0, sched_names, NULL},
    {"warmup", FT_I64, offsetof(tc_exp_schedule, warmup), 0, BIG, 0, NULL, NULL},
};

static void sched_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    parse_map(c, v, path, sched_fields, NF(sched_fields), &((tc_exp_stage *)obj)->sched);
}

static void name_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_exp_stage *st = obj;
    char buf[256];
    const char *s = scalar_text(v, buf, sizeof buf);
    if (!s || is_null(v) || !s[0]) {
        err(c, v, path, "expected a stage name");
        return;
    }
    if (strlen(s) > 64) {
        err(c, v, path, "a stage name has at most 64 characters");
        return;
    }
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.')) {
            err(c, v, path, "'%s': a stage name is a folder name: letters, digits, '_', '-', '.'", s);
            return;
        }
    if (!strcmp(s, ".") || !strcmp(s, "..") || (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s))) {
        err(c, v, path, "'%s' cannot be a stage name (all digits would be read as a list index by --set)", s);
        return;
    }
    free(st->name);
    st->name = xstrdup(s);
    c->name_loc[c->cur_stage] = node_loc(c, v);
}

static const field stage_fields[] = {
    {"name", FT_CUSTOM, 0, 0, 0, 0, NULL, name_fn},
    {"kind", FT_ENUM, offsetof(tc_exp_stage, kind), 0, 0, 0, stage_kind_names, NULL},
    {"parent", FT_CUSTOM, 0, 0, 0, 0, NULL, parent_fn},
    {"model", FT_CUSTOM, 0, 0, 0, 0, NULL, model_fn},
    {"inheritance", FT_CUSTOM, 0, 0, 0, 0, NULL, inheritance_fn},
    {"loss", FT_CUSTOM, 0, 0, 0, 0, NULL, loss_fn},
    {"batch", FT_INT, offsetof(tc_exp_stage, batch), 1, 1 << 20, 0, NULL, NULL},
    {"accum_steps", FT_INT, offsetof(tc_exp_stage, accum_steps), 1, 4096, 0, NULL, NULL},
    {"steps", FT_I64, offsetof(tc_exp_stage, steps), 1, BIG, 0, NULL, NULL},
    {"epochs", FT_F64, offsetof(tc_exp_stage, epochs), 0, 1e6, 1, NULL, NULL},
    {"optimizer", FT_CUSTOM, 0, 0, 0, 0, NULL, opt_fn},
    {"schedule", FT_CUSTOM, 0, 0, 0, 0, NULL, sched_fn},
    {"eval_every", FT_I64, offsetof(tc_exp_stage, eval_every), 0, BIG, 0, NULL, NULL},
    {"checkpoint_every", FT_I64, offsetof(tc_exp_stage, checkpoint_every), 0, BIG, 0, NULL, NULL},
    {"log_every", FT_I64, offsetof(tc_exp_stage, log_every), 1, BIG, 0, NULL, NULL},
    {"max_nonfinite_skips", FT_INT, offsetof(tc_exp_stage, max_nonfinite_skips), 0, 1 << 30, 0, NULL, NULL},
};

static void stage_defaults(tc_exp_stage *st) {
    memset(st, 0, sizeof *st);
    st->parent = -1;
    st->model_stage = -1;
    st->kind = TC_EXP_STAGE_DISTILL;
    st->inherit.kind = TC_EXP_INHERIT_NONE;
    st->inherit.vision.inherit = st->inherit.text.inherit = 1;
    tc_exp_auto *a = &st->inherit.autoc;
    a->start_sparsity = NAN;
    a->target_sparsity = NAN;
    a->sparsity_warmup = 1000;
    a->prune_step = -1;
    a->lambda_init = 10.0f;
    a->mask_lr = 0.02f;
    a->lambda_lr = -0.02f;
    a->round_to = 0;
    a->vision = a->text = 1;
    st->loss.distill_weight = 1.0f;
    st->loss.alpha = 1.0f;
    st->loss.learned_logit_scale = -1; /* by kind */
    st->loss.logit_scale = NAN;
    st->loss.teacher_logit_scale = NAN;
    st->batch = 0;
    st->accum_steps = 1;
    st->steps = -1;
    st->epochs = 0;
    st->opt.lr = NAN;
    st->opt.wd = 0.2f;
    st->opt.beta1 = 0.9f;
    st->opt.beta2 = 0.98f;
    st->opt.eps = 1e-6f;
    st->opt.grad_clip = 5.0f;
    st->sched.kind = TC_EXP_SCHED_COSINE;
    st->sched.warmup = -1;
    st->eval_every = 1000;
    st->checkpoint_every = 1000;
    st->log_every = 100;
    st->max_nonfinite_skips = 100;
}

static void stages_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    tc_experiment *e = obj;
    if (!v || !fy_node_is_sequence(v)) {
        err(c, v, path, "expected a list of stages, got %s", node_kind(v));
        return;
    }
    int n = fy_node_sequence_item_count(v);
    if (n < 1) {
        err(c, v, path, "at least one stage is needed");
        return;
    }
    if (n > TC_EXP_MAX_STAGES) {
        err(c, v, path, "at most %d stages, got %d", TC_EXP_MAX_STAGES, n);
        return;
    }
    if (e->stages) return; /* duplicate key cannot happen; be safe */
    e->stages = calloc((size_t)n, sizeof *e->stages);
    c->parent_name = calloc((size_t)n, sizeof *c->parent_name);
    c->parent_loc = calloc((size_t)n, sizeof *c->parent_loc);
    c->model_stage_name = calloc((size_t)n, sizeof *c->model_stage_name);
    c->name_loc = calloc((size_t)n, sizeof *c->name_loc);
    if (!e->stages || !c->parent_name || !c->parent_loc || !c->model_stage_name || !c->name_loc) {
        err(c, v, path, "out of memory");
        return;
    }
    e->n_stages = n;
    void *it = NULL;
    struct fy_node *item;
    int i = 0;
    while ((item = fy_node_sequence_iterate(v, &it)) && i < n) {
        tc_exp_stage *st = &e->stages[i];
        stage_defaults(st);
        char sp[64];
        snprintf(sp, sizeof sp, "%s.%d", path, i);
        item = deref(item);
        st->loc = node_loc(c, item);
        c->cur_stage = i;
        uint64_t seen = parse_map(c, item, sp, stage_fields, NF(stage_fields), st);
        if (item && fy_node_is_mapping(item)) {
            if (!seen_key(stage_fields, NF(stage_fields), seen, "name"))
                err(c, item, sp, "missing key 'name'");
            if (!seen_key(stage_fields, NF(stage_fields), seen, "kind"))
                err(c, item, sp, "missing key 'kind' (train_scratch_clip or distill)");
            int has_steps = seen_key(stage_fields, NF(stage_fields), seen, "steps");
            int has_epochs = seen_key(stage_fields, NF(stage_fields), seen, "epochs");
            if (has_steps && has_epochs)
                err(c, item, sp, "give either 'steps' or 'epochs', not both");
            else if (!has_steps && !has_epochs)
                err(c, item, sp, "missing 'steps' (or 'epochs')");
        }
        i++;
    }
}

static void params_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    /* read first, by tc_experiment_parse, so that ${NAME} works everywhere */
}

static void name_top_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    static const field f = {"name", FT_STR, offsetof(tc_experiment, name), 0, 0, 0, NULL, NULL};
    set_field(c, &f, v, path, obj);
}

static void out_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    /* relative to the working directory, as open_clip's --logs */
    static const field f = {"out", FT_STR, offsetof(tc_experiment, out_dir), 0, 0, 0, NULL, NULL};
    set_field(c, &f, v, path, obj);
}

static const field distributed_fields[] = {
    {"zero1", FT_BOOL, offsetof(tc_experiment, zero1), 0, 0, 0, NULL, NULL},
    {"bucket_mb", FT_F64, offsetof(tc_experiment, bucket_mb), 0.001, 1024, 0, NULL, NULL},
};

static void distributed_fn(ctx *c, struct fy_node *v, const char *path, void *obj) {
    if (is_null(v)) return;
    parse_map(c, v, path, distributed_fields, NF(distributed_fields), obj);
}

static const field top_fields[] = {
    {"name", FT_CUSTOM, 0, 0, 0, 0, NULL, name_top_fn},
    {"seed", FT_I64, offsetof(tc_experiment, seed), 0, 4294967295.0, 0, NULL, NULL},
    {"out", FT_CUSTOM, 0, 0, 0, 0, NULL, out_fn},
    {"backend", FT_ENUM, offsetof(tc_experiment, backend), 0, 0, 0, backend_names, NULL},
    {"precision", FT_ENUM, offsetof(tc_experiment, precision), 0, 0, 0, precision_names, NULL},
    {"threads", FT_INT, offsetof(tc_experiment, threads), 0, 4096, 0, NULL, NULL},
    {"params", FT_CUSTOM, 0, 0, 0, 0, NULL, params_fn},
    {"data", FT_CUSTOM, 0, 0, 0, 0, NULL, data_fn},
    {"teacher", FT_CUSTOM, 0, 0, 0, 0, NULL, teacher_fn},
    {"distributed", FT_CUSTOM, 0, 0, 0, 0, NULL, distributed_fn},
    {"stages", FT_CUSTOM, 0, 0, 0, 0, NULL, stages_fn},
};

/* ---------------------------------------------------------------- params */

static void read_params(ctx *c, struct fy_node *root) {
    struct fy_node *p = deref(fy_node_mapping_lookup_by_string(root, "params", FY_NT));
    if (!p || is_null(p)) return;
    if (!fy_node_is_mapping(p)) {
        err(c, p, "params", "expected a mapping NAME: value, got %s", node_kind(p));
        return;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(p, &it))) {
        struct fy_node *k = deref(fy_node_pair_key(pair)), *v = deref(fy_node_pair_value(pair));
        char kb[128], vb[1024], path[192];
        const char *key = scalar_text(k, kb, sizeof kb);
        if (!key) {
            err(c, k, "params", "parameter names must be plain names");
            continue;
        }
        join(path, sizeof path, "params", key);
        int ok = key[0] != 0 && strlen(key) < sizeof c->params[0].name;
        for (const char *q = key; ok && *q; q++)
            if (!(isalnum((unsigned char)*q) || *q == '_')) ok = 0;
        if (!ok) {
            err(c, k, path, "a parameter name is letters, digits and '_' (used as ${NAME})");
            continue;
        }
        if (c->n_params >= MAX_PARAMS) {
            err(c, k, path, "at most %d parameters", MAX_PARAMS);
            return;
        }
        const char *val = NULL;
        if (!is_null(v)) {
            val = scalar_text(v, vb, sizeof vb);
            if (!val) {
                err(c, v, path, "a parameter value is a string, got %s", node_kind(v));
                continue;
            }
            if (strstr(val, "${")) {
                err(c, v, path, "a parameter value cannot refer to other parameters");
                continue;
            }
        }
        snprintf(c->params[c->n_params].name, sizeof c->params[0].name, "%s", key);
        c->params[c->n_params].value = val ? xstrdup(val) : NULL;
        c->n_params++;
    }
}

/* ---------------------------------------------------------------- checks */

static void check_document(ctx *c) {
    tc_experiment *e = c->exp;
    char p[256];
    tc_exp_loc none = {0, 0, 0};

    if (e->backend == TC_EXP_BACKEND_CPU && e->precision == TC_EXP_PREC_BF16)
        errl(c, none, "precision", "the cpu backend computes in fp32; bf16 needs backend: cuda");

    /* teacher stage reference */
    if (c->teacher_stage) {
        int t = tc_experiment_find_stage(e, c->teacher_stage);
        if (t < 0)
            errl(c, c->teacher_stage_loc, "teacher.stage", "no stage is named '%s'", c->teacher_stage);
        e->teacher.stage = t;
    }

    for (int i = 0; i < e->n_stages; i++) {
        tc_exp_stage *st = &e->stages[i];
        char sp[64];
        snprintf(sp, sizeof sp, "stages.%d", i);
        if (!st->name) continue; /* already reported */
        for (int j = 0; j < i; j++)
            if (e->stages[j].name && !strcmp(e->stages[j].name, st->name)) {
                join(p, sizeof p, sp, "name");
                errl(c, c->name_loc ? c->name_loc[i] : st->loc, p, "stage name '%s' is already used by stages.%d",
                     st->name, j);
            }
        /* parent */
        if (c->parent_name && c->parent_name[i]) {
            join(p, sizeof p, sp, "parent");
            int k = tc_experiment_find_stage(e, c->parent_name[i]);
            if (k < 0)
                errl(c, c->parent_loc[i], p, "no stage is named '%s'", c->parent_name[i]);
            else if (k == i)
                errl(c, c->parent_loc[i], p, "a stage cannot be its own parent");
            else if (k > i)
                errl(c, c->parent_loc[i], p,
                     "'%s' is stages.%d, after this one; a parent must come earlier in the list",
                     c->parent_name[i], k);
            else
                st->parent = k;
        }
        int has_model = st->model != NULL;
        if (c->model_stage_name && c->model_stage_name[i]) {
            join(p, sizeof p, sp, "model.stage");
            int k = tc_experiment_find_stage(e, c->model_stage_name[i]);
            has_model = 1;
            if (k < 0)
                errl(c, st->model_loc, p, "no stage is named '%s'", c->model_stage_name[i]);
            else if (k >= i)
                errl(c, st->model_loc, p, "'%s' is not an earlier stage; its architecture is not known yet",
                     c->model_stage_name[i]);
            else
                st->model_stage = k;
        }
        int has_parent = st->parent >= 0 || st->parent_ext.checkpoint;
        int parent_known = has_parent || (c->parent_name && c->parent_name[i]);

        /* kinds, models and inheritance */
        join(p, sizeof p, sp, "inheritance");
        if (st->kind == TC_EXP_STAGE_SCRATCH) {
            if (parent_known) errl(c, st->loc, sp, "a train_scratch_clip stage starts from random weights: remove 'parent'");
            if (st->inherit.kind != TC_EXP_INHERIT_NONE)
                errl(c, st->loc, p, "a train_scratch_clip stage inherits nothing: use inheritance: none");
            if (!has_model) errl(c, st->loc, sp, "missing key 'model' (the architecture to train)");
        } else {
            if (!e->teacher.present)
                errl(c, st->loc, sp, "a distill stage needs the top-level 'teacher'");
            else if (e->teacher.stage >= 0 && e->teacher.stage >= i)
                errl(c, c->teacher_stage_loc, "teacher.stage",
                     "the teacher '%s' is stages.%d, but stages.%d ('%s') distills from it: the teacher stage must come first",
                     c->teacher_stage, e->teacher.stage, i, st->name);
            switch (st->inherit.kind) {
            case TC_EXP_INHERIT_NONE:
                if (!has_model && !parent_known)
                    errl(c, st->loc, sp, "missing key 'model' (or a 'parent' to copy)");
                if (has_model && parent_known)
                    errl(c, st->model_loc, sp,
                         "with inheritance: none and a parent the student is a copy of the parent; remove 'model' or use inheritance: manual");
                break;
            case TC_EXP_INHERIT_MANUAL:
                if (!parent_known) errl(c, st->loc, p, "manual inheritance needs a 'parent' (a stage or a checkpoint)");
                if (!has_model) errl(c, st->loc, sp, "manual inheritance needs 'model', the student's shape");
                break;
            case TC_EXP_INHERIT_AUTO: {
                tc_exp_auto *a = &st->inherit.autoc;
                if (!parent_known) errl(c, st->loc, p, "auto inheritance needs a 'parent' (a stage or a checkpoint)");
                if (has_model)
                    errl(c, st->model_loc, sp, "an auto stage masks its parent's architecture: remove 'model'");
                if (isnan(a->start_sparsity)) {
                    a->start_sparsity = 0.0f;
                    if (st->parent >= 0 && e->stages[st->parent].inherit.kind == TC_EXP_INHERIT_AUTO &&
                        !isnan(e->stages[st->parent].inherit.autoc.target_sparsity))
                        a->start_sparsity = e->stages[st->parent].inherit.autoc.target_sparsity;
                }
                if (!isnan(a->target_sparsity) && a->start_sparsity > a->target_sparsity) {
                    char q[256];
                    join(q, sizeof q, p, "start_sparsity");
                    errl(c, st->loc, q, "start_sparsity %.3g is above target_sparsity %.3g",
                         (double)a->start_sparsity, (double)a->target_sparsity);
                }
                break;
            }
            }
        }

        /* batch, steps, schedule */
        if (st->batch == 0) st->batch = e->train.batch;
        if (st->batch % st->accum_steps != 0)
            errl(c, st->loc, sp, "batch %d is not a multiple of accum_steps %d", st->batch,
                 st->accum_steps);
        if (st->epochs > 0) {
            if (e->train.num_samples <= 0)
                errl(c, st->loc, sp, "'epochs' needs data.train.num_samples; give 'steps' instead");
            else {
                int64_t per_epoch = e->train.num_samples / st->batch;
                st->steps = (int64_t)floor(st->epochs * (double)per_epoch);
                if (st->steps < 1)
                    errl(c, st->loc, sp, "%g epochs of %lld samples at batch %d is less than one step",
                         st->epochs, (long long)e->train.num_samples, st->batch);
            }
        }
        if (isnan(st->opt.lr)) st->opt.lr = st->kind == TC_EXP_STAGE_SCRATCH ? 5e-4f : 1e-4f;
        if (st->loss.learned_logit_scale < 0) st->loss.learned_logit_scale = st->kind == TC_EXP_STAGE_SCRATCH;
        if (isnan(st->loss.logit_scale)) st->loss.logit_scale = 50.0f;
        if (isnan(st->loss.teacher_logit_scale)) st->loss.teacher_logit_scale = e->teacher.logit_scale;
        int is_auto = st->kind == TC_EXP_STAGE_DISTILL && st->inherit.kind == TC_EXP_INHERIT_AUTO;
        if (st->sched.warmup < 0) st->sched.warmup = is_auto && st->inherit.autoc.prune_step > 0 ? st->inherit.autoc.prune_step : 2000;
        if (st->steps > 0) {
            if (st->sched.warmup > st->steps) {
                join(p, sizeof p, sp, "schedule.warmup");
                errl(c, st->loc, p, "warm-up of %lld steps is longer than the stage (%lld steps); set schedule.warmup",
                     (long long)st->sched.warmup, (long long)st->steps);
            }
            if (is_auto && st->inherit.autoc.prune_step > st->steps) {
                join(p, sizeof p, sp, "inheritance.prune_step");
                errl(c, st->loc, p, "prune_step %lld is after the last step (%lld)",
                     (long long)st->inherit.autoc.prune_step, (long long)st->steps);
            }
        }
    }
}

/* ---------------------------------------------------------------- api */

/* YAML text must be UTF-8 (libfyaml can loop forever on some invalid
 * sequences inside directives, so the bytes are checked first); returns 0
 * and the 1-based position of the first bad byte, or 1 when valid */
static int valid_utf8(const unsigned char *s, size_t n, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        size_t len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || b == 0 || i + len > n) return 0;
        uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        if (b == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
        i += len;
    }
    return 1;
}

static void noop_output(struct fy_diag *diag, void *user, const char *buf, size_t len) {}

static void set_defaults(tc_experiment *e) {
    e->seed = 0;
    e->backend = TC_EXP_BACKEND_CPU;
    e->precision = TC_EXP_PREC_FP32;
    e->threads = 0;
    e->bucket_mb = 25.0;
    e->train.source = TC_EXP_DATA_FMNIST;
    e->train.workers = 4;
    e->train.batch = 1024;
    e->train.csv_separator = '\t';
    e->zero_shot.dataset = TC_EXP_ZS_NONE;
    e->zero_shot.templates = TC_EXP_TEMPLATES_OPENAI;
    e->zero_shot.batch = 256;
    e->retrieval.batch = 256;
    e->retrieval.source = TC_EXP_DATA_WDS;
    e->teacher.stage = -1;
    e->teacher.logit_scale = 50.0f;
}

static char *stem_of(const char *source) {
    const char *b = strrchr(source, '/');
    b = b ? b + 1 : source;
    size_t n = strlen(b);
    const char *dot = strrchr(b, '.');
    if (dot && dot != b) n = (size_t)(dot - b);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

static void finish_errors(tc_exp_errors *errs) {
    char msg[1000];
    size_t used = 0;
    msg[0] = 0;
    int shown = 0;
    for (int i = 0; i < errs->count; i++) {
        size_t l = strlen(errs->items[i].text);
        if (used + l + 2 + 40 >= sizeof msg) break;
        if (used) msg[used++] = '\n';
        memcpy(msg + used, errs->items[i].text, l);
        used += l;
        msg[used] = 0;
        shown++;
    }
    int more = errs->count - shown + errs->dropped;
    if (more > 0) snprintf(msg + used, sizeof msg - used, "%s(and %d more)", used ? "\n" : "", more);
    tc_fail(TC_ERR_CONFIG, "%s", msg);
}

tc_status tc_experiment_parse(const char *yaml, size_t len, const char *source,
                              const char *base_dir, const char *const *overrides,
                              int n_overrides, tc_experiment **out, tc_exp_errors *errors) {
    tc_exp_errors local;
    ctx c;
    memset(&c, 0, sizeof c);
    if (!errors) errors = &local;
    memset(errors, 0, sizeof *errors);
    *out = NULL;
    c.errs = errors;
    c.source = source ? source : "<experiment>";
    c.base_dir = base_dir ? base_dir : ".";
    c.overrides = overrides;
    tc_status status = TC_ERR_CONFIG;
    tc_exp_loc top = {1, 1, 0};

    tc_experiment *e = calloc(1, sizeof *e);
    if (!e) return tc_fail(TC_ERR_OOM, "%s: out of memory", c.source);
    set_defaults(e);
    e->source = xstrdup(c.source);
    e->base_dir = xstrdup(c.base_dir);
    c.exp = e;

    struct fy_diag_cfg dc;
    fy_diag_cfg_default(&dc);
    dc.fp = NULL;
    dc.output_fn = noop_output;
    dc.colorize = false;
    c.diag = fy_diag_create(&dc);
    if (!c.diag) {
        tc_experiment_free(e);
        return tc_fail(TC_ERR_OOM, "%s: cannot create the YAML diagnostics", c.source);
    }
    fy_diag_set_collect_errors(c.diag, true);
    struct fy_parse_cfg pc;
    memset(&pc, 0, sizeof pc);
    pc.flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2;
    pc.diag = c.diag;

    if (len > MAX_FILE_BYTES) {
        errl(&c, top, "", "the file is %zu bytes; an experiment file is at most %u", len, MAX_FILE_BYTES);
        goto done;
    }
    int bl, bc;
    if (!valid_utf8((const unsigned char *)yaml, len, &bl, &bc)) {
        tc_exp_loc l = {bl, bc, 0};
        errl(&c, l, "", "not valid UTF-8 text (or a NUL byte)");
        goto done;
    }
    c.fyd = fy_document_build_from_string(&pc, yaml, len);
    if (!c.fyd) {
        void *it = NULL;
        struct fy_diag_error *de;
        int any = 0;
        while ((de = fy_diag_errors_iterate(c.diag, &it))) {
            tc_exp_loc l = {de->line, de->column, 0};
            errl(&c, l, "", "YAML syntax: %s", de->msg ? de->msg : "error");
            any = 1;
        }
        if (!any) errl(&c, top, "", "not a YAML document");
        goto done;
    }
    record_marks(&c, fy_document_root(c.fyd));
    struct fy_node *root = deref(fy_document_root(c.fyd));
    if (!root || is_null(root)) {
        errl(&c, top, "", "the file is empty; an experiment needs at least 'stages'");
        goto done;
    }
    if (!fy_node_is_mapping(root)) {
        err(&c, root, "", "the top level must be a mapping of keys (name, data, teacher, stages, ...), got %s",
            node_kind(root));
        goto done;
    }

    for (int i = 0; i < n_overrides; i++) {
        struct fy_node *t[64];
        char why[400];
        int n = tc_exp_apply_set(c.fyd, overrides[i], t, 64, why, sizeof why);
        if (n < 0) {
            tc_exp_loc l = {0, 0, i + 1};
            char kp[160];
            const char *eq = strchr(overrides[i], '=');
            snprintf(kp, sizeof kp, "%.*s", eq ? (int)(eq - overrides[i]) : 0, overrides[i]);
            errl(&c, l, kp, "%s", why);
            continue;
        }
        for (int j = 0; j < n && c.n_touched < MAX_TOUCHED; j++) {
            c.touched[c.n_touched] = t[j];
            c.touched_set[c.n_touched++] = i;
        }
    }
    if (errors->count) goto done;
    root = deref(fy_document_root(c.fyd));

    read_params(&c, root);
    uint64_t seen = parse_map(&c, root, "", top_fields, NF(top_fields), e);
    if (!seen_key(top_fields, NF(top_fields), seen, "stages")) errl(&c, top, "stages", "missing key 'stages'");
    if (!seen_key(top_fields, NF(top_fields), seen, "data")) errl(&c, top, "data", "missing key 'data'");
    if (!seen_key(top_fields, NF(top_fields), seen, "precision"))
        e->precision = e->backend == TC_EXP_BACKEND_CUDA ? TC_EXP_PREC_BF16 : TC_EXP_PREC_FP32;
    if (!e->name) e->name = stem_of(c.source);
    if (!e->out_dir && e->name) {
        size_t n = strlen(e->name) + 6;
        e->out_dir = malloc(n);
        if (e->out_dir) snprintf(e->out_dir, n, "runs/%s", e->name);
    }
    if (!e->train.csv_img_key) e->train.csv_img_key = xstrdup("filepath");
    if (!e->train.csv_caption_key) e->train.csv_caption_key = xstrdup("title");
    /* cross-references are checked even after other errors, so one run shows them all */
    check_document(&c);
    if (errors->count == 0) {
        e->resolved_yaml = fy_emit_document_to_string(c.fyd, FYECF_DEFAULT);
        status = TC_OK;
    }

done:
    if (c.fyd) fy_document_destroy(c.fyd);
    fy_diag_destroy(c.diag);
    for (int i = 0; i < c.n_params; i++) free(c.params[i].value);
    if (c.parent_name)
        for (int i = 0; i < e->n_stages; i++) free(c.parent_name[i]);
    free(c.parent_name);
    if (c.model_stage_name)
        for (int i = 0; i < e->n_stages; i++) free(c.model_stage_name[i]);
    free(c.model_stage_name);
    free(c.parent_loc);
    free(c.name_loc);
    free(c.teacher_stage);
    free(c.marks);
    if (status != TC_OK) {
        tc_experiment_free(e);
        finish_errors(errors);
        return status;
    }
    *out = e;
    return TC_OK;
}

tc_status tc_experiment_load(const char *path, const char *const *overrides, int n_overrides,
                             tc_experiment **out) {
    return tc_experiment_load_diag(path, overrides, n_overrides, out, NULL);
}

tc_status tc_experiment_load_diag(const char *path, const char *const *overrides, int n_overrides,
                                  tc_experiment **out, tc_exp_errors *errors) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return tc_fail(TC_ERR_IO, "%s: cannot open the experiment file", path);
    char *buf = malloc(MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return tc_fail(TC_ERR_IO, "%s: read error", path);
    }
    /* base dir: the file's folder */
    char dir[1024];
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t dl = (size_t)(slash - path);
        if (dl == 0) dl = 1;
        if (dl >= sizeof dir) dl = sizeof dir - 1;
        memcpy(dir, path, dl);
        dir[dl] = 0;
    } else {
        strcpy(dir, ".");
    }
    tc_status s = tc_experiment_parse(buf, n, path, dir, overrides, n_overrides, out, errors);
    free(buf);
    return s;
}

static void free_ext(tc_exp_external *x) {
    free(x->checkpoint);
    free(x->model);
}

void tc_experiment_free(tc_experiment *e) {
    if (!e) return;
    free(e->source);
    free(e->base_dir);
    free(e->name);
    free(e->out_dir);
    free(e->train.path);
    free(e->train.csv_img_key);
    free(e->train.csv_caption_key);
    free(e->zero_shot.path);
    free(e->zero_shot.classnames);
    free(e->zero_shot.templates_path);
    free(e->retrieval.path);
    free_ext(&e->teacher.ext);
    for (int i = 0; i < e->n_stages; i++) {
        free(e->stages[i].name);
        free(e->stages[i].model);
        free_ext(&e->stages[i].parent_ext);
    }
    free(e->stages);
    free(e->resolved_yaml);
    free(e);
}

int tc_experiment_find_stage(const tc_experiment *e, const char *name) {
    if (!e || !name) return -1;
    for (int i = 0; i < e->n_stages; i++)
        if (e->stages[i].name && !strcmp(e->stages[i].name, name)) return i;
    return -1;
}

const char *tc_exp_stage_kind_name(tc_exp_stage_kind k) {
    return (unsigned)k < 2 ? stage_kind_names[k] : "?";
}

const char *tc_exp_inherit_kind_name(tc_exp_inherit_kind k) {
    static const char *const n[] = {"none", "manual", "auto"};
    return (unsigned)k < 3 ? n[k] : "?";
}

const char *tc_exp_data_source_name(tc_exp_data_source s) {
    return (unsigned)s < 3 ? source_names[s] : "?";
}

double tc_exp_stage_lr(const tc_exp_stage *st, int64_t step) {
    double base = st->opt.lr;
    int64_t total = st->steps;
    int is_auto = st->kind == TC_EXP_STAGE_DISTILL && st->inherit.kind == TC_EXP_INHERIT_AUTO;
    if (is_auto && step >= st->inherit.autoc.prune_step) {
        /* cosine_lr_start_nowarmup after pruning */
        int64_t e = step - st->inherit.autoc.prune_step, es = total - st->inherit.autoc.prune_step;
        if (st->sched.kind == TC_EXP_SCHED_CONST) return base;
        if (es <= 0) return 0.0;
        return 0.5 * (1.0 + cos(M_PI * (double)e / (double)es)) * base;
    }
    int64_t warmup = st->sched.warmup;
    if (step < warmup) return base * (double)(step + 1) / (double)warmup;
    if (st->sched.kind == TC_EXP_SCHED_CONST) return base;
    int64_t e = step - warmup, es = total - warmup;
    if (es <= 0) return 0.0;
    return 0.5 * (1.0 + cos(M_PI * (double)e / (double)es)) * base;
}
