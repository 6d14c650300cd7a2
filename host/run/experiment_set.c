/* --set KEY.PATH=VALUE overrides, applied to the YAML tree before the
 * experiment is parsed and validated, so an overridden value goes through
 * exactly the same checks as one written in the file.
 *
 * path components are mapping keys, list indices ("stages.2") or, inside a
 * list of mappings, the value of an item's `name` ("stages.auto50").
 * a missing mapping key is created (validation then rejects keys that are
 * not in the schema, naming the override); a missing list item, or a path
 * that runs through a scalar, is reported here. VALUE is parsed as YAML, so
 * "64", "learned", "[0, 2, 4]" and "{kind: none}" all work. */
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"

static struct fy_node *deref(struct fy_node *n) {
    for (int i = 0; n && i < 16 && fy_node_is_alias(n); i++)
        n = fy_node_resolve_alias(n);
    return n;
}

static int set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

static int parse_index(const char *s, size_t n, long *out) {
    if (n == 0 || n > 9) return 0;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* the item of a list whose `name` equals comp */
static struct fy_node *find_named_item(struct fy_node *seq, const char *comp, size_t n) {
    void *it = NULL;
    struct fy_node *item;
    while ((item = fy_node_sequence_iterate(seq, &it))) {
        struct fy_node *m = deref(item);
        if (!m || !fy_node_is_mapping(m)) continue;
        struct fy_node *nm = deref(fy_node_mapping_lookup_by_string(m, "name", FY_NT));
        if (!nm || !fy_node_is_scalar(nm)) continue;
        size_t len = 0;
        const char *s = fy_node_get_scalar(nm, &len);
        if (s && len == n && memcmp(s, comp, n) == 0) return item;
    }
    return NULL;
}

static void list_names(struct fy_node *seq, char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = 0;
    void *it = NULL;
    struct fy_node *item;
    while ((item = fy_node_sequence_iterate(seq, &it)) && used + 1 < cap) {
        struct fy_node *m = deref(item);
        if (!m || !fy_node_is_mapping(m)) continue;
        struct fy_node *nm = deref(fy_node_mapping_lookup_by_string(m, "name", FY_NT));
        if (!nm || !fy_node_is_scalar(nm)) continue;
        size_t len = 0;
        const char *s = fy_node_get_scalar(nm, &len);
        if (!s) continue;
        int w = snprintf(buf + used, cap - used, "%s%.*s", used ? ", " : "",
                         (int)(len > 60 ? 60 : len), s);
        if (w < 0) break;
        used += (size_t)w;
        if (used >= cap) {
            used = cap - 1;
            break;
        }
    }
}

static struct fy_node *build_value(struct fy_document *fyd, const char *value) {
    size_t n = strlen(value);
    int blank = 1;
    for (size_t i = 0; i < n; i++)
        if (value[i] != ' ' && value[i] != '\t') blank = 0;
    if (blank) return fy_node_create_scalar_copy(fyd, "", 0);
    return fy_node_build_from_string(fyd, value, n);
}

static void touch(struct fy_node **touched, int max, int *n, struct fy_node *node) {
    if (node && *n < max) touched[(*n)++] = node;
}

int tc_exp_apply_set(struct fy_document *fyd, const char *override, struct fy_node **touched,
                     int max_touched, char *err, size_t errcap) {
    int n_touched = 0;
    const char *eq = strchr(override, '=');
    if (!eq || eq == override)
        return set_err(err, errcap, "expected KEY.PATH=VALUE (e.g. stages.2.batch=64)");
    size_t keylen = (size_t)(eq - override);
    if (keylen > 400) return set_err(err, errcap, "key path too long");
    char key[401];
    memcpy(key, override, keylen);
    key[keylen] = 0;
    const char *value = eq + 1;

    struct fy_node *node = fy_document_root(fyd);
    if (!node || !fy_node_is_mapping(deref(node)))
        return set_err(err, errcap, "the document has no top-level mapping to override");

    /* walk every component but the last; `prefix` is the path so far */
    char prefix[401] = "";
    const char *comp = key;
    for (;;) {
        const char *dot = strchr(comp, '.');
        size_t clen = dot ? (size_t)(dot - comp) : strlen(comp);
        int last = dot == NULL;
        if (clen == 0) return set_err(err, errcap, "empty component in key path '%s'", key);
        node = deref(node);
        if (!node) return set_err(err, errcap, "'%s' is an alias that cannot be resolved", prefix);

        if (fy_node_is_mapping(node)) {
            struct fy_node_pair *pair = fy_node_mapping_lookup_pair_by_string(node, comp, clen);
            if (last) {
                struct fy_node *v = build_value(fyd, value);
                if (!v) return set_err(err, errcap, "value '%s' is not valid YAML", value);
                if (pair) {
                    if (fy_node_pair_set_value(pair, v) != 0) {
                        fy_node_free(v);
                        return set_err(err, errcap, "cannot replace '%s'", key);
                    }
                    touch(touched, max_touched, &n_touched, v);
                    touch(touched, max_touched, &n_touched, fy_node_pair_key(pair));
                } else {
                    struct fy_node *k = fy_node_create_scalar_copy(fyd, comp, clen);
                    if (!k || fy_node_mapping_append(node, k, v) != 0) {
                        fy_node_free(k);
                        fy_node_free(v);
                        return set_err(err, errcap, "cannot add '%s'", key);
                    }
                    touch(touched, max_touched, &n_touched, k);
                    touch(touched, max_touched, &n_touched, v);
                }
                return n_touched;
            }
            if (pair) {
                node = fy_node_pair_value(pair);
                if (!node || fy_node_is_null(node)) {
                    /* "key:" with nothing under it: make it a mapping to descend into */
                    struct fy_node *m = fy_node_create_mapping(fyd);
                    if (!m || fy_node_pair_set_value(pair, m) != 0) {
                        fy_node_free(m);
                        return set_err(err, errcap, "cannot create '%.*s'", (int)clen, comp);
                    }
                    touch(touched, max_touched, &n_touched, m);
                    node = m;
                }
            } else {
                struct fy_node *k = fy_node_create_scalar_copy(fyd, comp, clen);
                struct fy_node *m = fy_node_create_mapping(fyd);
                if (!k || !m || fy_node_mapping_append(node, k, m) != 0) {
                    fy_node_free(k);
                    fy_node_free(m);
                    return set_err(err, errcap, "cannot create '%.*s'", (int)clen, comp);
                }
                touch(touched, max_touched, &n_touched, k);
                touch(touched, max_touched, &n_touched, m);
                node = m;
            }
        } else if (fy_node_is_sequence(node)) {
            int count = fy_node_sequence_item_count(node);
            long idx;
            struct fy_node *item = NULL;
            if (parse_index(comp, clen, &idx)) {
                if (idx >= count)
                    return set_err(err, errcap, "'%s' has %d item%s (indices 0..%d), no item %ld",
                                   prefix[0] ? prefix : "(root)", count, count == 1 ? "" : "s",
                                   count - 1, idx);
                item = fy_node_sequence_get_by_index(node, (int)idx);
            } else {
                item = find_named_item(node, comp, clen);
                if (!item) {
                    char names[200];
                    list_names(node, names, sizeof names);
                    return set_err(err, errcap,
                                   "'%s' has no item named '%.*s' (use an index 0..%d%s%s%s)",
                                   prefix[0] ? prefix : "(root)", (int)clen, comp, count - 1,
                                   names[0] ? " or one of: " : "", names, "");
                }
            }
            if (last) {
                struct fy_node *v = build_value(fyd, value);
                if (!v) return set_err(err, errcap, "value '%s' is not valid YAML", value);
                if (fy_node_sequence_insert_after(node, item, v) != 0) {
                    fy_node_free(v);
                    return set_err(err, errcap, "cannot replace '%s'", key);
                }
                struct fy_node *old = fy_node_sequence_remove(node, item);
                if (old) fy_node_free(old);
                touch(touched, max_touched, &n_touched, v);
                return n_touched;
            }
            node = item;
        } else {
            return set_err(err, errcap,
                           "'%s' is a value, not a mapping or list; cannot descend into '%.*s'",
                           prefix[0] ? prefix : "(root)", (int)clen, comp);
        }
        size_t pl = strlen(prefix);
        snprintf(prefix + pl, sizeof prefix - pl, "%s%.*s", pl ? "." : "", (int)clen, comp);
        comp = dot + 1;
    }
}
