/* webdataset shards through libarchive, with open_clip's grouping rules:
 * key = path up to the first dot of the basename, extension = the rest,
 * lower-cased; members that are not regular files and __*__ names are
 * skipped; a sample's files are adjacent; a new sample starts when the key
 * changes or a suffix repeats (group_by_keys_nothrow). grouping is done per
 * shard: a key split across two shards gives two samples (open_clip would
 * join them when the second shard is read next by the same worker).
 * image = first of jpg, png, jpeg, webp; caption = txt; label = cls.
 * shard specs are brace-expanded and joined by '::'; the sample count comes
 * from sizes.json (basename -> count) beside the shards. */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"
#include "fileio.h"
#include "json.h"

#define MAX_IMAGE_BYTES ((int64_t)64 << 20)
#define MAX_TEXT_BYTES ((int64_t)1 << 20)
#define MAX_SUFFIXES 32

/* ---- utf-8 ---- */

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

/* ---- brace expansion ---- */

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

/* ---- tar member reading and grouping ---- */

struct tc_shard_reader {
    struct archive *a;
    char name[512];
    /* sample under construction */
    int have;
    char key[256];
    char suffixes[MAX_SUFFIXES][32];
    int nsuf;
    tc_sample cur;
    char img_ext[8];
    int img_rank; /* lower is preferred: jpg, png, jpeg, webp */
    int has_txt;
    /* a fatal error met after the last member: reported on the next call */
    tc_status pending_err;
    char pending_msg[600];
    int done;
};

static int img_rank_of(const char *ext) {
    if (strcmp(ext, "jpg") == 0) return 0;
    if (strcmp(ext, "png") == 0) return 1;
    if (strcmp(ext, "jpeg") == 0) return 2;
    if (strcmp(ext, "webp") == 0) return 3;
    return -1;
}

static void start_sample(tc_shard_reader *r, const char *key) {
    tc_sample_clear(&r->cur);
    r->have = 1;
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->cur.key, sizeof r->cur.key, "%s", key);
    snprintf(r->cur.where, sizeof r->cur.where, "%s", r->name);
    r->cur.label = -1;
    r->nsuf = 0;
    r->img_rank = 99;
    r->has_txt = 0;
    r->img_ext[0] = 0;
}

/* hands the finished sample to out, deciding whether it is usable */
static void finish_sample(tc_shard_reader *r, tc_sample *out) {
    *out = r->cur;
    memset(&r->cur, 0, sizeof r->cur);
    r->have = 0;
    if (out->bad[0]) return;
    if (!r->has_txt) {
        snprintf(out->bad, sizeof out->bad, "no caption (.txt)");
    } else if (!out->image) {
        snprintf(out->bad, sizeof out->bad, "no image (.jpg/.jpeg/.png)");
    } else if (!tc_utf8_valid(out->caption, out->caption_len)) {
        snprintf(out->bad, sizeof out->bad, "caption is not valid UTF-8");
    } else if (strcmp(r->img_ext, "webp") == 0) {
        snprintf(out->bad, sizeof out->bad, "WebP images are not supported");
    }
}

static tc_status read_member(tc_shard_reader *r, int64_t size, const char *mname, uint8_t **buf,
                             size_t *len) {
    *buf = malloc((size_t)size + 1);
    if (!*buf) return tc_fail(TC_ERR_OOM, "%s: out of memory for member %s", r->name, mname);
    size_t off = 0;
    while (off < (size_t)size) {
        la_ssize_t k = archive_read_data(r->a, *buf + off, (size_t)size - off);
        if (k < 0) {
            free(*buf);
            *buf = NULL;
            return tc_fail(TC_ERR_FORMAT, "shard %s: member %s: %s", r->name, mname,
                           archive_error_string(r->a) ? archive_error_string(r->a) : "read error");
        }
        if (k == 0) break;
        off += (size_t)k;
    }
    if (off != (size_t)size) {
        free(*buf);
        *buf = NULL;
        return tc_fail(TC_ERR_FORMAT, "shard %s: member %s truncated (%zu of %lld bytes)", r->name,
                       mname, off, (long long)size);
    }
    (*buf)[size] = 0;
    *len = (size_t)size;
    return TC_OK;
}

tc_status tc_wds_reader_next(tc_shard_reader *r, tc_sample *out, int *eof) {
    memset(out, 0, sizeof *out);
    out->label = -1;
    *eof = 0;
    if (r->pending_err != TC_OK) {
        tc_status e = r->pending_err;
        r->pending_err = TC_OK;
        r->done = 1;
        return tc_fail(e, "%s", r->pending_msg);
    }
    if (r->done) {
        *eof = 1;
        return TC_OK;
    }
    int emitted = 0;
    for (;;) {
        struct archive_entry *e;
        int rc = archive_read_next_header(r->a, &e);
        if (rc == ARCHIVE_EOF || rc < ARCHIVE_WARN) {
            if (rc != ARCHIVE_EOF) {
                const char *m = archive_error_string(r->a);
                r->pending_err = TC_ERR_FORMAT;
                snprintf(r->pending_msg, sizeof r->pending_msg,
                         "shard %s: truncated or corrupt tar: %s", r->name, m ? m : "read error");
            } else {
                r->done = 1;
            }
            if (r->have) {
                finish_sample(r, out);
                if (r->pending_err != TC_OK && out->bad[0]) {
                    char why[sizeof out->bad];
                    snprintf(why, sizeof why, "%s", out->bad);
                    snprintf(out->bad, sizeof out->bad,
                             "incomplete, the shard breaks off in it (%.150s)", why);
                }
                return TC_OK;
            }
            if (r->pending_err != TC_OK) return tc_wds_reader_next(r, out, eof);
            *eof = 1;
            return TC_OK;
        }
        if (archive_entry_filetype(e) != AE_IFREG) continue;
        const char *path = archive_entry_pathname(e);
        if (!path || !path[0]) continue;
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        size_t blen = strlen(base);
        if (blen >= 4 && base[0] == '_' && base[1] == '_' && base[blen - 1] == '_' &&
            base[blen - 2] == '_')
            continue; /* __key__-style metadata */
        const char *dot = strchr(base, '.');
        if (!dot || dot == base) continue; /* no key or no extension: base_plus_ext gives None */
        char key[256], ext[32];
        size_t klen = (size_t)(dot - path);
        size_t elen = strlen(dot + 1);
        int key_too_long = klen >= sizeof key;
        if (key_too_long) klen = sizeof key - 1;
        memcpy(key, path, klen);
        key[klen] = 0;
        if (elen >= sizeof ext) elen = sizeof ext - 1;
        for (size_t i = 0; i < elen; i++)
            ext[i] = (char)tolower((unsigned char)dot[1 + i]);
        ext[elen] = 0;
        int repeated = 0;
        for (int i = 0; i < r->nsuf; i++)
            if (strcmp(r->suffixes[i], ext) == 0) repeated = 1;
        if (r->have && (strcmp(key, r->key) != 0 || repeated)) {
            /* this member opens the next sample: the current one is handed
             * out when this member has been taken in */
            finish_sample(r, out);
            emitted = 1;
            start_sample(r, key);
        } else if (!r->have) {
            start_sample(r, key);
        }
        if (key_too_long && !r->cur.bad[0])
            snprintf(r->cur.bad, sizeof r->cur.bad, "key longer than %zu bytes", sizeof key - 1);
        if (r->nsuf < MAX_SUFFIXES) snprintf(r->suffixes[r->nsuf++], 32, "%s", ext);
        int rank = img_rank_of(ext);
        int want_txt = strcmp(ext, "txt") == 0, want_json = strcmp(ext, "json") == 0,
            want_cls = strcmp(ext, "cls") == 0;
        if (rank >= 0 || want_txt || want_json || want_cls) {
            int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
            int64_t limit = rank >= 0 ? MAX_IMAGE_BYTES : MAX_TEXT_BYTES;
            if (size < 0 || size > limit) {
                if (!r->cur.bad[0])
                    snprintf(r->cur.bad, sizeof r->cur.bad, "member .%s has size %lld (limit %lld)",
                             ext, (long long)size, (long long)limit);
            } else if (rank < 0 || rank < r->img_rank) {
                uint8_t *buf = NULL;
                size_t len = 0;
                tc_status st = read_member(r, size, path, &buf, &len);
                if (st != TC_OK) {
                    /* the stream is broken from here: report the shard */
                    r->pending_err = st;
                    snprintf(r->pending_msg, sizeof r->pending_msg, "%s", tc_last_error());
                    r->done = 1;
                    tc_sample_clear(&r->cur);
                    r->have = 0;
                    if (emitted) return TC_OK; /* a finished sample is already in out */
                    r->pending_err = TC_OK;
                    return tc_fail(st, "%s", r->pending_msg);
                }
                if (rank >= 0) {
                    free(r->cur.image);
                    r->cur.image = buf;
                    r->cur.image_len = len;
                    r->img_rank = rank;
                    snprintf(r->img_ext, sizeof r->img_ext, "%.7s", ext);
                } else if (want_txt) {
                    r->cur.caption = (char *)buf;
                    r->cur.caption_len = len;
                    r->has_txt = 1;
                } else if (want_json) {
                    r->cur.json = (char *)buf;
                    r->cur.json_len = len;
                } else {
                    char *endp = NULL;
                    long v = strtol((char *)buf, &endp, 10);
                    if (endp != (char *)buf && v >= 0 && v < (1L << 30)) r->cur.label = (int32_t)v;
                    free(buf);
                }
            }
        }
        if (emitted) return TC_OK;
    }
}

static tc_status reader_open(tc_shard_reader **out, const char *name) {
    tc_shard_reader *r = calloc(1, sizeof *r);
    if (!r) return tc_fail(TC_ERR_OOM, "shard %s: out of memory", name);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->a = archive_read_new();
    if (!r->a) {
        free(r);
        return tc_fail(TC_ERR_OOM, "shard %s: out of memory", name);
    }
    archive_read_support_format_tar(r->a);
    archive_read_support_filter_gzip(r->a);
    *out = r;
    return TC_OK;
}

void tc_wds_reader_close(tc_shard_reader *r) {
    if (!r) return;
    if (r->a) archive_read_free(r->a);
    tc_sample_clear(&r->cur);
    free(r);
}

tc_status tc_wds_reader_open_memory(const void *data, size_t len, const char *name,
                                    tc_shard_reader **out) {
    *out = NULL;
    tc_shard_reader *r;
    TC_TRY(reader_open(&r, name));
    if (archive_read_open_memory(r->a, data, len) != ARCHIVE_OK) {
        tc_status st = tc_fail(TC_ERR_FORMAT, "shard %s: not a tar archive: %s", name,
                               archive_error_string(r->a) ? archive_error_string(r->a) : "?");
        tc_wds_reader_close(r);
        return st;
    }
    *out = r;
    return TC_OK;
}

/* ---- the source ---- */

static tc_status wds_open_shard(tc_source *s, int shard, tc_shard_reader **out) {
    *out = NULL;
    if (shard < 0 || shard >= s->num_shards) return tc_fail(TC_ERR_ARG, "shard index %d", shard);
    const char *path = s->shards[shard];
    tc_shard_reader *r;
    TC_TRY(reader_open(&r, path));
    if (archive_read_open_filename(r->a, path, 1 << 16) != ARCHIVE_OK) {
        const char *m = archive_error_string(r->a);
        tc_status st =
            tc_fail(TC_ERR_IO, "shard %s: cannot open: %s", path, m ? m : strerror(errno));
        tc_wds_reader_close(r);
        return st;
    }
    *out = r;
    return TC_OK;
}

static tc_status wds_next(tc_shard_reader *r, tc_sample *out, int *eof) {
    return tc_wds_reader_next(r, out, eof);
}

static void wds_destroy(tc_source *s) {
    tc_strlist_free(s->shards, s->num_shards);
    free(s);
}

/* count from sizes.json beside the shard; -1 when absent */
static int64_t shard_size(const char *shard, char **cache_dir, tc_json **cache) {
    const char *slash = strrchr(shard, '/');
    size_t dlen = slash ? (size_t)(slash - shard) : 0;
    char dir[4096];
    if (dlen >= sizeof dir) return -1;
    memcpy(dir, shard, dlen);
    dir[dlen] = 0;
    if (!*cache_dir || strcmp(*cache_dir, dir) != 0) {
        free(*cache_dir);
        tc_json_free(*cache);
        *cache = NULL;
        *cache_dir = strdup(dir);
        char p[4200];
        snprintf(p, sizeof p, "%s%ssizes.json", dir, dlen ? "/" : "");
        FILE *f = fopen(p, "rb");
        if (f) {
            char *text = NULL;
            size_t n = 0, cap = 0;
            for (;;) {
                if (n + 4096 > cap) {
                    cap = cap ? cap * 2 : 8192;
                    if (cap > ((size_t)64 << 20)) break;
                    char *t = realloc(text, cap);
                    if (!t) break;
                    text = t;
                }
                size_t k = fread(text + n, 1, cap - n, f);
                if (k == 0) break;
                n += k;
            }
            fclose(f);
            if (text && tc_json_parse(text, n, p, cache) != TC_OK) *cache = NULL;
            free(text);
        }
    }
    if (!*cache) return -1;
    const tc_json *v = tc_json_get(*cache, slash ? slash + 1 : shard);
    if (!v || v->type != TC_JSON_NUMBER || !v->is_int || v->integer < 0) return -1;
    return v->integer;
}

tc_status tc_source_wds_open(const char *spec, const tc_source_opts *opts, tc_source **out) {
    *out = NULL;
    tc_source *s = calloc(1, sizeof *s);
    if (!s) return tc_fail(TC_ERR_OOM, "webdataset: out of memory");
    s->kind = "wds";
    s->open_shard = wds_open_shard;
    s->next = wds_next;
    s->close_shard = tc_wds_reader_close;
    s->destroy = wds_destroy;
    strlist all = {0};
    tc_status st = TC_OK;
    const char *p = spec;
    while (st == TC_OK) {
        const char *sep = strstr(p, "::");
        size_t n = sep ? (size_t)(sep - p) : strlen(p);
        char *part = concat3(p, n, "", 0, "", 0);
        char **names = NULL;
        int k = 0;
        if (!part)
            st = tc_fail(TC_ERR_OOM, "webdataset: out of memory");
        else if (n > 0)
            st = tc_brace_expand(part, &names, &k);
        free(part);
        for (int i = 0; st == TC_OK && i < k; i++) {
            if (sl_push(&all, names[i])) st = tc_fail(TC_ERR_OOM, "webdataset: out of memory");
            names[i] = NULL;
        }
        tc_strlist_free(names, k);
        if (!sep) break;
        p = sep + 2;
    }
    s->shards = all.v;
    s->num_shards = all.n;
    if (st == TC_OK && s->num_shards == 0)
        st = tc_fail(TC_ERR_DATA, "webdataset '%s': no shards", spec);
    if (st != TC_OK) {
        wds_destroy(s);
        return st;
    }
    if (opts && opts->num_samples > 0) {
        s->num_samples = opts->num_samples;
    } else {
        char *cdir = NULL;
        tc_json *cache = NULL;
        int64_t total = 0;
        for (int i = 0; i < s->num_shards && total >= 0; i++) {
            int64_t c = shard_size(s->shards[i], &cdir, &cache);
            total = c < 0 ? -1 : total + c;
        }
        free(cdir);
        tc_json_free(cache);
        s->num_samples = total;
    }
    *out = s;
    return TC_OK;
}
