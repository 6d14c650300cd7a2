/* a YAML document read as typed tables (yaml_table.h).
 *
 * positions of nodes come from libfyaml's diagnostics: reporting on a node
 * records its mark, which is read back from the collected error list. they
 * are taken once, right after parsing, because reports on an edited tree are
 * not safe; a node an override made is named by the override instead. */
#include "yaml_table.h"

#include <ctype.h>
#include <errno.h>
#include <libfyaml.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MARKED_NODES 20000 /* positions recorded for at most this many nodes */

/* ---------------------------------------------------------------- errors */

/* snprintf whose truncation is intended (messages and key paths are capped) */
static void fmtc(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmtc(char *buf, size_t cap, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, cap, f, ap);
    va_end(ap);
}

static void add_error(tc_yaml *y, tc_yaml_loc loc, const char *path, const char *fmt, va_list ap) {
    if (y->errs->count >= TC_YAML_MAX_ERRORS) {
        y->errs->dropped++;
        return;
    }
    tc_yaml_error *e = &y->errs->items[y->errs->count++];
    char msg[400];
    vsnprintf(msg, sizeof msg, fmt, ap);
    e->line = loc.from_set ? 0 : loc.line;
    e->column = loc.from_set ? 0 : loc.column;
    snprintf(e->key_path, sizeof e->key_path, "%s", path ? path : "");
    const char *p = path && path[0] ? path : "(top level)";
    if (loc.from_set) {
        const char *ov = y->overrides ? y->overrides[loc.from_set - 1] : "?";
        fmtc(e->text, sizeof e->text, "--set '%.150s': %s: %s", ov, p, msg);
    } else if (loc.line > 0) {
        fmtc(e->text, sizeof e->text, "%s:%d:%d: %s: %s", y->source, loc.line, loc.column, p, msg);
    } else {
        fmtc(e->text, sizeof e->text, "%s: %s: %s", y->source, p, msg);
    }
}

void tc_yaml_report_at(tc_yaml *y, tc_yaml_loc loc, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    add_error(y, loc, path, fmt, ap);
    va_end(ap);
}

static int mark_cmp(const void *a, const void *b) {
    const tc_yaml_mark *x = a, *y = b;
    return x->node < y->node ? -1 : x->node > y->node;
}

tc_yaml_loc tc_yaml_node_loc(tc_yaml *y, struct fy_node *n) {
    tc_yaml_loc loc = {0, 0, 0};
    if (!n) return loc;
    /* a node from an override, or inside one, is named by the override */
    struct fy_node *a = n;
    for (int depth = 0; a && depth < 300; depth++, a = fy_node_get_parent(a))
        for (int i = 0; i < y->n_touched; i++)
            if (y->touched[i] == a) {
                loc.from_set = y->touched_set[i] + 1;
                return loc;
            }
    tc_yaml_mark key = {n, 0, 0};
    tc_yaml_mark *m =
        y->marks ? bsearch(&key, y->marks, (size_t)y->n_marks, sizeof *y->marks, mark_cmp) : NULL;
    if (m) {
        loc.line = m->line;
        loc.column = m->column;
    }
    return loc;
}

void tc_yaml_report(tc_yaml *y, struct fy_node *n, const char *path, const char *fmt, ...) {
    if (y->errs->count >= TC_YAML_MAX_ERRORS) {
        y->errs->dropped++;
        return;
    }
    tc_yaml_loc loc = tc_yaml_node_loc(y, n);
    va_list ap;
    va_start(ap, fmt);
    add_error(y, loc, path, fmt, ap);
    va_end(ap);
}

tc_status tc_yaml_fail(const tc_yaml_errors *errs) {
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
    if (more > 0)
        snprintf(msg + used, sizeof msg - used, "%s(and %d more)", used ? "\n" : "", more);
    return tc_fail(TC_ERR_CONFIG, "%s", msg);
}

/* ---------------------------------------------------------------- marks */

static void collect_nodes(tc_yaml *y, struct fy_node *n, int depth) {
    if (!n || depth > 256 || y->n_marks >= MAX_MARKED_NODES) return;
    if (y->n_marks == y->cap_marks) {
        int ncap = y->cap_marks ? y->cap_marks * 2 : 256;
        tc_yaml_mark *m = realloc(y->marks, (size_t)ncap * sizeof *m);
        if (!m) return;
        y->marks = m;
        y->cap_marks = ncap;
    }
    y->marks[y->n_marks].node = n;
    y->marks[y->n_marks].line = y->marks[y->n_marks].column = 0;
    y->n_marks++;
    if (fy_node_is_mapping(n)) {
        void *it = NULL;
        struct fy_node_pair *pair;
        while ((pair = fy_node_mapping_iterate(n, &it))) {
            collect_nodes(y, fy_node_pair_key(pair), depth + 1);
            collect_nodes(y, fy_node_pair_value(pair), depth + 1);
        }
    } else if (fy_node_is_sequence(n)) {
        void *it = NULL;
        struct fy_node *item;
        while ((item = fy_node_sequence_iterate(n, &it)))
            collect_nodes(y, item, depth + 1);
    }
}

/* positions of every node of the file as parsed, taken before any override
 * edits the tree: libfyaml reports a node's mark through its diagnostics,
 * and reports on an edited tree are not safe */
static void record_marks(tc_yaml *y, struct fy_node *root) {
    collect_nodes(y, root, 0);
    for (int i = 0; i < y->n_marks; i++) {
        /* scalars carry their token's mark (0-based); collections are reported */
        struct fy_node *n = y->marks[i].node;
        struct fy_token *t = fy_node_is_scalar(n) ? fy_node_get_scalar_token(n) : NULL;
        const struct fy_mark *m = t ? fy_token_start_mark(t) : NULL;
        if (m) {
            y->marks[i].line = m->line + 1;
            y->marks[i].column = m->column + 1;
        } else {
            fy_node_report(n, FYET_ERROR, "#%d", i);
        }
    }
    void *it = NULL;
    struct fy_diag_error *e;
    while ((e = fy_diag_errors_iterate(y->diag, &it))) {
        if (!e->msg || e->msg[0] != '#') continue;
        char *end;
        long i = strtol(e->msg + 1, &end, 10);
        if (*end || i < 0 || i >= y->n_marks) continue;
        y->marks[i].line = e->line;
        y->marks[i].column = e->column;
    }
    qsort(y->marks, (size_t)y->n_marks, sizeof *y->marks, mark_cmp);
}

/* ---------------------------------------------------------------- document */

static void noop_output(struct fy_diag *diag, void *user, const char *buf, size_t len) {}

tc_status tc_yaml_init(tc_yaml *y, const char *source, const char *base_dir,
                       const char *const *overrides, tc_yaml_errors *errs) {
    memset(y, 0, sizeof *y);
    memset(errs, 0, sizeof *errs);
    y->errs = errs;
    y->source = source;
    y->base_dir = base_dir;
    y->overrides = overrides;
    struct fy_diag_cfg dc;
    fy_diag_cfg_default(&dc);
    dc.fp = NULL;
    dc.output_fn = noop_output;
    dc.colorize = false;
    y->diag = fy_diag_create(&dc);
    if (!y->diag) return tc_fail(TC_ERR_OOM, "%s: cannot create the YAML diagnostics", source);
    fy_diag_set_collect_errors(y->diag, true);
    return TC_OK;
}

/* YAML text must be UTF-8 (libfyaml can loop forever on some invalid
 * sequences inside directives, so the bytes are checked first); returns 0
 * and the 1-based position of the first bad byte, or 1 when valid */
static int valid_utf8(const unsigned char *s, size_t n, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        size_t len = b < 0x80             ? 1
                     : (b & 0xE0) == 0xC0 ? 2
                     : (b & 0xF0) == 0xE0 ? 3
                     : (b & 0xF8) == 0xF0 ? 4
                                          : 0;
        if (len == 0 || b == 0 || i + len > n) return 0;
        uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
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

/* the 1-based line and column of the start of a second document in the
 * text, or 0 when there is none (or the text does not parse that far: the
 * build below reports the syntax error) */
static int second_document(const char *text, size_t len, int *line, int *col) {
    struct fy_parse_cfg pc;
    memset(&pc, 0, sizeof pc);
    pc.flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2;
    struct fy_parser *fyp = fy_parser_create(&pc);
    if (!fyp) return 0;
    int docs = 0, found = 0;
    if (fy_parser_set_string(fyp, text, len) == 0) {
        struct fy_event *ev;
        while (!found && (ev = fy_parser_parse(fyp))) {
            if (ev->type == FYET_DOCUMENT_START) docs++;
            /* the "---" of the second document, or its first token when implicit */
            struct fy_token *t = docs >= 2 ? fy_event_get_token(ev) : NULL;
            const struct fy_mark *m = t ? fy_token_start_mark(t) : NULL;
            if (m) {
                *line = m->line + 1;
                *col = m->column + 1;
                found = 1;
            }
            fy_parser_event_free(fyp, ev);
        }
    }
    fy_parser_destroy(fyp);
    return found;
}

int tc_yaml_load(tc_yaml *y, const char *text, size_t len) {
    tc_yaml_loc top = {1, 1, 0};
    int bl, bc;
    if (!valid_utf8((const unsigned char *)text, len, &bl, &bc)) {
        tc_yaml_loc l = {bl, bc, 0};
        tc_yaml_report_at(y, l, "", "not valid UTF-8 text (or a NUL byte)");
        return 0;
    }
    struct fy_parse_cfg pc;
    memset(&pc, 0, sizeof pc);
    pc.flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2;
    pc.diag = y->diag;
    y->fyd = fy_document_build_from_string(&pc, text, len);
    if (!y->fyd) {
        void *it = NULL;
        struct fy_diag_error *de;
        int any = 0;
        while ((de = fy_diag_errors_iterate(y->diag, &it))) {
            tc_yaml_loc l = {de->line, de->column, 0};
            tc_yaml_report_at(y, l, "", "YAML syntax: %s", de->msg ? de->msg : "error");
            any = 1;
        }
        if (!any) tc_yaml_report_at(y, top, "", "not a YAML document");
        return 0;
    }
    record_marks(y, fy_document_root(y->fyd));
    int dl, dc;
    if (second_document(text, len, &dl, &dc)) {
        /* libfyaml builds the first document only: the rest would be ignored */
        tc_yaml_loc l = {dl, dc, 0};
        tc_yaml_report_at(y, l, "",
                          "a second YAML document starts here; an experiment file holds one "
                          "document (remove the '---' and what follows, or merge it)");
        return 0;
    }
    return 1;
}

struct fy_node *tc_yaml_root(tc_yaml *y) {
    return y->fyd ? tc_yaml_deref(fy_document_root(y->fyd)) : NULL;
}

void tc_yaml_touch(tc_yaml *y, struct fy_node *n, int set) {
    if (y->n_touched >= TC_YAML_MAX_TOUCHED) return;
    y->touched[y->n_touched] = n;
    y->touched_set[y->n_touched++] = set;
}

void tc_yaml_free(tc_yaml *y) {
    if (y->fyd) fy_document_destroy(y->fyd);
    if (y->diag) fy_diag_destroy(y->diag);
    for (int i = 0; i < y->n_params; i++)
        free(y->params[i].value);
    free(y->marks);
    y->fyd = NULL;
    y->diag = NULL;
    y->marks = NULL;
    y->n_params = y->n_marks = 0;
}

/* ---------------------------------------------------------------- nodes */

struct fy_node *tc_yaml_deref(struct fy_node *n) {
    for (int i = 0; n && i < 16 && fy_node_is_alias(n); i++)
        n = fy_node_resolve_alias(n);
    if (n && fy_node_is_alias(n)) return NULL;
    return n;
}

int tc_yaml_is_null(struct fy_node *n) {
    if (!n) return 1;
    if (!fy_node_is_scalar(n)) return 0;
    if (fy_node_get_style(n) != FYNS_PLAIN) return 0;
    size_t len = 0;
    const char *s = fy_node_get_scalar(n, &len);
    if (!s || len == 0) return 1;
    return (len == 1 && s[0] == '~') ||
           (len == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

const char *tc_yaml_scalar_text(struct fy_node *n, char *buf, size_t cap) {
    if (!n || !fy_node_is_scalar(n)) return NULL;
    size_t len = 0;
    const char *s = fy_node_get_scalar(n, &len);
    if (!s) s = "", len = 0;
    if (len >= cap) len = cap - 1;
    memcpy(buf, s, len);
    buf[len] = 0;
    return buf;
}

const char *tc_yaml_node_kind(struct fy_node *n) {
    if (!n) return "nothing";
    if (fy_node_is_mapping(n)) return "a mapping";
    if (fy_node_is_sequence(n)) return "a list";
    return "a value";
}

char *tc_yaml_strdup(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

void tc_yaml_join(char *out, size_t cap, const char *path, const char *key) {
    if (path && path[0])
        fmtc(out, cap, "%s.%s", path, key);
    else
        fmtc(out, cap, "%s", key);
}

/* ---------------------------------------------------------------- strings */

/* the value of ${name}: params first, then the environment; NULL with the
 * error recorded when neither has a non-empty one */
static const char *param_value(tc_yaml *y, struct fy_node *n, const char *path, const char *name) {
    const char *val = NULL;
    int found = 0;
    for (int i = 0; i < y->n_params; i++)
        if (!strcmp(y->params[i].name, name)) {
            found = 1;
            val = y->params[i].value;
        }
    if (!val) val = getenv(name);
    if (val && val[0]) return val;
    if (found)
        tc_yaml_report(y, n, path,
                       "${%s}: params.%s is empty and the environment has no %s; set it, e.g. "
                       "--set params.%s=VALUE",
                       name, name, name, name);
    else
        tc_yaml_report(
            y, n, path,
            "${%s} is not defined: add it under 'params:' or set the environment variable %s", name,
            name);
    return NULL;
}

/* ${NAME} from params:, then the environment */
char *tc_yaml_substitute(tc_yaml *y, struct fy_node *n, const char *path, const char *text) {
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
                tc_yaml_report(y, n, path, "malformed placeholder in '%.80s' (expected ${NAME})",
                               text);
                free(out);
                return NULL;
            }
            memcpy(name, p + 2, nl);
            name[nl] = 0;
            val = param_value(y, n, path, name);
            if (!val) {
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

char *tc_yaml_resolve_path(tc_yaml *y, const char *p) {
    if (p[0] == '/' || !y->base_dir || !y->base_dir[0] || !strcmp(y->base_dir, "."))
        return tc_yaml_strdup(p);
    size_t n = strlen(y->base_dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%s/%s", y->base_dir, p);
    return r;
}

int tc_yaml_parse_i64(const char *s, int64_t *out) {
    if (!s[0]) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end == 0 && end != s) {
        if (errno == ERANGE) return -1; /* strtoll saturates: never take its INT64_MAX */
        *out = v;
        return 1;
    }
    /* 1e4 style, when integral */
    errno = 0;
    double d = strtod(s, &end);
    if (*end || end == s) return 0;
    if (errno == ERANGE || !isfinite(d) || fabs(d) > 9.0e15) return d != floor(d) ? 0 : -1;
    if (d != floor(d)) return 0;
    *out = (int64_t)d;
    return 1;
}

int tc_yaml_parse_f64(const char *s, double *out) {
    char *end;
    if (!s[0]) return 0;
    errno = 0;
    double d = strtod(s, &end);
    if (*end || end == s) return 0;
    /* 1e999 overflows, 1e-999 underflows: neither is taken as inf or 0 */
    if (errno == ERANGE || !isfinite(d)) return isnan(d) ? 0 : -1;
    *out = d;
    return 1;
}

/* ---------------------------------------------------------------- params */

/* one NAME: value of params:, checked; 0 when the table is full (stop) */
static int read_param(tc_yaml *y, struct fy_node *k, struct fy_node *v) {
    char kb[128], vb[1024], path[192];
    const char *key = tc_yaml_scalar_text(k, kb, sizeof kb);
    if (!key) {
        tc_yaml_report(y, k, "params", "parameter names must be plain names");
        return 1;
    }
    tc_yaml_join(path, sizeof path, "params", key);
    int ok = key[0] != 0 && strlen(key) < sizeof y->params[0].name;
    for (const char *q = key; ok && *q; q++)
        if (!(isalnum((unsigned char)*q) || *q == '_')) ok = 0;
    if (!ok) {
        tc_yaml_report(y, k, path, "a parameter name is letters, digits and '_' (used as ${NAME})");
        return 1;
    }
    if (y->n_params >= TC_YAML_MAX_PARAMS) {
        tc_yaml_report(y, k, path, "at most %d parameters", TC_YAML_MAX_PARAMS);
        return 0;
    }
    const char *val = NULL;
    if (!tc_yaml_is_null(v)) {
        val = tc_yaml_scalar_text(v, vb, sizeof vb);
        if (!val) {
            tc_yaml_report(y, v, path, "a parameter value is a string, got %s",
                           tc_yaml_node_kind(v));
            return 1;
        }
        if (strstr(val, "${")) {
            tc_yaml_report(y, v, path, "a parameter value cannot refer to other parameters");
            return 1;
        }
    }
    snprintf(y->params[y->n_params].name, sizeof y->params[0].name, "%s", key);
    y->params[y->n_params].value = val ? tc_yaml_strdup(val) : NULL;
    y->n_params++;
    return 1;
}

void tc_yaml_read_params(tc_yaml *y, struct fy_node *root) {
    struct fy_node *p = tc_yaml_deref(fy_node_mapping_lookup_by_string(root, "params", FY_NT));
    if (!p || tc_yaml_is_null(p)) return;
    if (!fy_node_is_mapping(p)) {
        tc_yaml_report(y, p, "params", "expected a mapping NAME: value, got %s",
                       tc_yaml_node_kind(p));
        return;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(p, &it)))
        if (!read_param(y, tc_yaml_deref(fy_node_pair_key(pair)),
                        tc_yaml_deref(fy_node_pair_value(pair))))
            return;
}

/* ---------------------------------------------------------------- fields */

/* a bound as written: 1000000000000 rather than 1e+12 */
static void bound_text(char *buf, size_t cap, double d) {
    if (d == floor(d) && fabs(d) < 1e15)
        snprintf(buf, cap, "%.0f", d);
    else
        snprintf(buf, cap, "%.10g", d);
}

static void range_error(tc_yaml *y, struct fy_node *v, const char *path, const tc_yaml_field *f,
                        const char *text) {
    char lo[32], hi[32];
    bound_text(lo, sizeof lo, f->lo);
    bound_text(hi, sizeof hi, f->hi);
    tc_yaml_report(y, v, path, "must be in %s%s, %s], got %.60s", f->excl_lo ? "(" : "[", lo, hi,
                   text);
}

static int in_range(const tc_yaml_field *f, double d) {
    if (f->excl_lo ? !(d > f->lo) : !(d >= f->lo)) return 0;
    return d <= f->hi;
}

static void set_integer(tc_yaml *y, const tc_yaml_field *f, struct fy_node *v, const char *path,
                        const char *text, char *dst) {
    int64_t x;
    int r = tc_yaml_parse_i64(text, &x);
    if (r == 0) {
        tc_yaml_report(y, v, path, "expected an integer, got '%s'", text);
        return;
    }
    if (r < 0 || !in_range(f, (double)x)) {
        range_error(y, v, path, f, text);
        return;
    }
    if (f->type == TC_YAML_INT)
        *(int *)dst = (int)x;
    else
        *(int64_t *)dst = x;
}

static void set_number(tc_yaml *y, const tc_yaml_field *f, struct fy_node *v, const char *path,
                       const char *text, char *dst) {
    double d;
    int r = tc_yaml_parse_f64(text, &d);
    if (r == 0) {
        tc_yaml_report(y, v, path, "expected a number, got '%s'", text);
        return;
    }
    if (r < 0 || !in_range(f, d)) {
        range_error(y, v, path, f, text);
        return;
    }
    if (f->type == TC_YAML_F32)
        *(float *)dst = (float)d;
    else
        *(double *)dst = d;
}

static void set_enum(tc_yaml *y, const tc_yaml_field *f, struct fy_node *v, const char *path,
                     const char *text, char *dst) {
    char opts[256] = "";
    for (int i = 0; f->enums[i]; i++) {
        if (!strcmp(text, f->enums[i])) {
            *(int *)dst = i;
            return;
        }
        size_t l = strlen(opts);
        snprintf(opts + l, sizeof opts - l, "%s%s", i ? ", " : "", f->enums[i]);
    }
    tc_yaml_report(y, v, path, "'%s' is not one of: %s", text, opts);
}

static void set_string(tc_yaml *y, const tc_yaml_field *f, struct fy_node *v, const char *path,
                       const char *text, char *dst) {
    char **sp = (char **)dst;
    if (tc_yaml_is_null(v)) {
        free(*sp);
        *sp = NULL;
        return;
    }
    char *s = tc_yaml_substitute(y, v, path, text);
    if (!s) return;
    char *r = s;
    if (f->type == TC_YAML_PATH) r = f->resolve ? f->resolve(y, s) : tc_yaml_resolve_path(y, s);
    if (r != s) free(s);
    free(*sp);
    *sp = r;
}

void tc_yaml_set_field(tc_yaml *y, const tc_yaml_field *f, struct fy_node *v, const char *path,
                       void *obj) {
    char buf[1024];
    char *dst = (char *)obj + f->off;
    if (f->type == TC_YAML_CUSTOM) {
        f->fn(y, v, path, obj);
        return;
    }
    const char *text = tc_yaml_scalar_text(v, buf, sizeof buf);
    if (!text || (tc_yaml_is_null(v) && f->type != TC_YAML_STR)) {
        const char *want = f->type == TC_YAML_INT || f->type == TC_YAML_I64   ? "an integer"
                           : f->type == TC_YAML_F32 || f->type == TC_YAML_F64 ? "a number"
                           : f->type == TC_YAML_BOOL                          ? "true or false"
                                                                              : "a string";
        tc_yaml_report(y, v, path, "expected %s, got %s", want,
                       text ? "nothing" : tc_yaml_node_kind(v));
        return;
    }
    switch (f->type) {
    case TC_YAML_INT:
    case TC_YAML_I64: set_integer(y, f, v, path, text, dst); return;
    case TC_YAML_F32:
    case TC_YAML_F64: set_number(y, f, v, path, text, dst); return;
    case TC_YAML_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "True") || !strcmp(text, "TRUE"))
            *(int *)dst = 1;
        else if (!strcmp(text, "false") || !strcmp(text, "False") || !strcmp(text, "FALSE"))
            *(int *)dst = 0;
        else
            tc_yaml_report(y, v, path, "expected true or false, got '%s'", text);
        return;
    case TC_YAML_ENUM: set_enum(y, f, v, path, text, dst); return;
    case TC_YAML_STR:
    case TC_YAML_PATH: set_string(y, f, v, path, text, dst); return;
    case TC_YAML_CUSTOM: return;
    }
}

uint64_t tc_yaml_parse_map(tc_yaml *y, struct fy_node *map, const char *path,
                           const tc_yaml_field *fields, int nfields, void *obj) {
    uint64_t seen = 0;
    map = tc_yaml_deref(map);
    if (!map || !fy_node_is_mapping(map)) {
        tc_yaml_report(y, map, path, "expected a mapping, got %s", tc_yaml_node_kind(map));
        return 0;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(map, &it))) {
        struct fy_node *k = fy_node_pair_key(pair), *v = tc_yaml_deref(fy_node_pair_value(pair));
        char kb[128], child[256];
        const char *key = tc_yaml_scalar_text(tc_yaml_deref(k), kb, sizeof kb);
        if (!key) {
            tc_yaml_report(y, k, path, "keys must be plain names, got %s",
                           tc_yaml_node_kind(tc_yaml_deref(k)));
            continue;
        }
        tc_yaml_join(child, sizeof child, path, key);
        int found = -1;
        for (int i = 0; i < nfields; i++)
            if (!strcmp(fields[i].key, key)) found = i;
        if (found < 0) {
            char opts[400] = "";
            for (int i = 0; i < nfields; i++) {
                size_t l = strlen(opts);
                snprintf(opts + l, sizeof opts - l, "%s%s", i ? ", " : "", fields[i].key);
            }
            tc_yaml_report(y, k, child, "unknown key '%s' (expected one of: %s)", key, opts);
            continue;
        }
        seen |= 1ull << found;
        tc_yaml_set_field(y, &fields[found], v, child, obj);
    }
    return seen;
}

int tc_yaml_seen(const tc_yaml_field *fields, int nfields, uint64_t seen, const char *key) {
    for (int i = 0; i < nfields; i++)
        if (!strcmp(fields[i].key, key)) return (seen >> i) & 1;
    return 0;
}
