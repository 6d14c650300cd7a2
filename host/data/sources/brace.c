/* braceexpand's brace expansion of shard patterns (source.h), as
 * webdataset expands its URLs: {a,b}, {0..9}, {000..099}, {1..9..2},
 * {a..e}, nesting; at most a million names. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"

void tc_strlist_free(char **list, int n) {
    if (!list) return;
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

typedef struct {
    char **v;
    int n, cap;
} strlist;

static int sl_push(strlist *l, char *s) {
    if (!s) return -1;
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 8;
        char **nv = realloc(l->v, sizeof(char *) * (size_t)nc);
        if (!nv) {
            free(s);
            return -1;
        }
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = s;
    return 0;
}

static char *concat3(const char *a, size_t na, const char *b, size_t nb, const char *c, size_t nc) {
    char *s = malloc(na + nb + nc + 1);
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb);
    memcpy(s + na + nb, c, nc);
    s[na + nb + nc] = 0;
    return s;
}

#define BRACE_MAX_OUTPUTS 1000000

static int parse_int(const char *s, size_t n, long long *v) {
    if (n == 0 || n > 18) return 0;
    size_t i = 0;
    int neg = 0;
    if (s[0] == '-') neg = 1, i = 1;
    if (i == n) return 0;
    long long x = 0;
    for (; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return 0;
        x = x * 10 + (s[i] - '0');
    }
    *v = neg ? -x : x;
    return 1;
}

/* the alternatives of one {...} body: comma list or a range; NULL-free list */
static int brace_body(const char *b, size_t n, strlist *alts) {
    /* split at top-level commas */
    int depth = 0, commas = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] == '{')
            depth++;
        else if (b[i] == '}')
            depth--;
        else if (b[i] == ',' && depth == 0)
            commas++;
    }
    if (commas > 0) {
        size_t start = 0;
        depth = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i < n && b[i] == '{')
                depth++;
            else if (i < n && b[i] == '}')
                depth--;
            if (i == n || (b[i] == ',' && depth == 0)) {
                if (sl_push(alts, concat3(b + start, i - start, "", 0, "", 0))) return -1;
                start = i + 1;
            }
        }
        return 1;
    }
    /* range: x..y or x..y..incr */
    const char *d1 = NULL, *d2 = NULL;
    for (size_t i = 0; i + 1 < n; i++)
        if (b[i] == '.' && b[i + 1] == '.') {
            if (!d1)
                d1 = b + i;
            else if (!d2 && b + i >= d1 + 2)
                d2 = b + i;
        }
    if (!d1) return 0;
    const char *lo = b;
    size_t nlo = (size_t)(d1 - b);
    const char *hi = d1 + 2;
    size_t nhi = d2 ? (size_t)(d2 - hi) : (size_t)(b + n - hi);
    long long incr = 1;
    if (d2 && !parse_int(d2 + 2, (size_t)(b + n - d2 - 2), &incr)) return 0;
    if (incr < 0) incr = -incr;
    if (incr == 0) incr = 1;
    long long a, z;
    if (parse_int(lo, nlo, &a) && parse_int(hi, nhi, &z)) {
        int pad = 0;
        int lead0 = (nlo > 1 && (lo[0] == '0' || (lo[0] == '-' && lo[1] == '0'))) ||
                    (nhi > 1 && (hi[0] == '0' || (hi[0] == '-' && hi[1] == '0')));
        if (lead0) pad = (int)(nlo > nhi ? nlo : nhi);
        long long step = a <= z ? incr : -incr;
        long long count = (a <= z ? z - a : a - z) / incr + 1;
        if (count > BRACE_MAX_OUTPUTS) return -2;
        for (long long k = 0, v = a; k < count; k++, v += step) {
            char tmp[64];
            snprintf(tmp, sizeof tmp, "%0*lld", pad, v);
            if (sl_push(alts, concat3(tmp, strlen(tmp), "", 0, "", 0))) return -1;
        }
        return 1;
    }
    if (nlo == 1 && nhi == 1 && isalpha((unsigned char)lo[0]) && isalpha((unsigned char)hi[0])) {
        int x = lo[0], y = hi[0];
        int step = x <= y ? (int)incr : -(int)incr;
        for (int c = x; x <= y ? c <= y : c >= y; c += step) {
            char tmp[2] = {(char)c, 0};
            if (sl_push(alts, concat3(tmp, 1, "", 0, "", 0))) return -1;
        }
        return 1;
    }
    return 0;
}

static tc_status expand_rec(const char *p, strlist *out, int depth) {
    if (depth > 32) return tc_fail(TC_ERR_ARG, "brace expansion: nesting too deep");
    size_t n = strlen(p);
    /* first top-level {...} that expands to something */
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n) {
            i++;
            continue;
        }
        if (p[i] != '{') continue;
        int d = 0;
        size_t j;
        for (j = i; j < n; j++) {
            if (p[j] == '{')
                d++;
            else if (p[j] == '}' && --d == 0)
                break;
        }
        if (j >= n) break; /* unbalanced: literal */
        strlist alts = {0};
        int r = brace_body(p + i + 1, j - i - 1, &alts);
        if (r < 0) {
            tc_strlist_free(alts.v, alts.n);
            return r == -2 ? tc_fail(TC_ERR_ARG, "brace expansion of '%s': range too large", p)
                           : tc_fail(TC_ERR_OOM, "brace expansion: out of memory");
        }
        if (r == 0) { /* not an expansion: keep literal, look further */
            tc_strlist_free(alts.v, alts.n);
            continue;
        }
        tc_status st = TC_OK;
        for (int k = 0; k < alts.n && st == TC_OK; k++) {
            char *s = concat3(p, i, alts.v[k], strlen(alts.v[k]), p + j + 1, n - j - 1);
            if (!s)
                st = tc_fail(TC_ERR_OOM, "brace expansion: out of memory");
            else
                st = expand_rec(s, out, depth + 1);
            free(s);
            if (out->n > BRACE_MAX_OUTPUTS)
                st = tc_fail(TC_ERR_ARG, "brace expansion of '%s': too many names", p);
        }
        tc_strlist_free(alts.v, alts.n);
        return st;
    }
    if (sl_push(out, concat3(p, n, "", 0, "", 0)))
        return tc_fail(TC_ERR_OOM, "brace expansion: out of memory");
    return TC_OK;
}

tc_status tc_brace_expand(const char *pattern, char ***out, int *n) {
    strlist l = {0};
    *out = NULL;
    *n = 0;
    tc_status st = expand_rec(pattern, &l, 0);
    if (st != TC_OK) {
        tc_strlist_free(l.v, l.n);
        return st;
    }
    *out = l.v;
    *n = l.n;
    return TC_OK;
}
