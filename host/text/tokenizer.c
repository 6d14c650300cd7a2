/* open_clip's SimpleTokenizer; the contract is in tokenizer.h.
 *
 * BPE runs on vocabulary ids instead of strings: every symbol string of the
 * vocabulary has one id (the last one, as Python's dict(zip(vocab, ...))
 * keeps), so a merge (a, b) becomes (id a, id b) -> (rank, id of a+b) and
 * the string algorithm carries over unchanged. finished words are kept in a
 * lock-striped cache shared by all threads. */
#include "tokenizer.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "bpe_vocab.h"
#include "text_clean.h"

#define N_MERGES TC_BPE_MERGES
#define MERGE_SLOTS (1u << 17)
#define CACHE_STRIPES 64
#define CACHE_SLOTS 1024  /* per stripe; the stripe is emptied when 3/4 full */
#define CACHE_MAX_WORD 64 /* bytes; longer words are not cached */

typedef struct {
    uint64_t key; /* (a << 32 | b) + 1, 0 = empty */
    int32_t rank;
    int32_t merged;
} merge_slot;

typedef struct {
    uint64_t hash;
    unsigned char *word; /* word bytes, then the ids (int32) */
    uint32_t len, n_ids;
} cache_slot;

typedef struct {
    pthread_mutex_t mu;
    cache_slot *slots; /* CACHE_SLOTS */
    size_t used;
} cache_stripe;

struct tc_tokenizer {
    int32_t byte_id[256]; /* id of the byte_encoder character of each byte */
    merge_slot *merges;   /* MERGE_SLOTS */
    pcre2_code *pattern;
    cache_stripe cache[CACHE_STRIPES];
};

static uint64_t hash_bytes(const unsigned char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* ---- vocabulary construction: string -> id, used only while loading ---- */

typedef struct {
    const char **str; /* NUL-terminated UTF-8, per slot */
    int32_t *id;
    size_t cap;
} str_map;

static int str_map_init(str_map *m, size_t cap) {
    m->cap = cap;
    m->str = calloc(cap, sizeof *m->str);
    m->id = calloc(cap, sizeof *m->id);
    return m->str && m->id ? 0 : -1;
}

static void str_map_free(str_map *m) {
    free(m->str);
    free(m->id);
}

/* inserts or overwrites (later ids win, like a Python dict built in order) */
static void str_map_put(str_map *m, const char *s, int32_t id) {
    size_t i = hash_bytes((const unsigned char *)s, strlen(s)) & (m->cap - 1);
    while (m->str[i] && strcmp(m->str[i], s) != 0)
        i = (i + 1) & (m->cap - 1);
    m->str[i] = s;
    m->id[i] = id;
}

static int32_t str_map_get(const str_map *m, const char *s) {
    size_t i = hash_bytes((const unsigned char *)s, strlen(s)) & (m->cap - 1);
    while (m->str[i]) {
        if (strcmp(m->str[i], s) == 0) return m->id[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static void put_utf8(char *out, uint32_t c) {
    if (c < 0x80) {
        out[0] = (char)c, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (c >> 6)), out[1] = (char)(0x80 | (c & 0x3F)), out[2] = 0;
    }
}

static int32_t merge_lookup(const tc_tokenizer *t, int32_t a, int32_t b, int32_t *merged) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = hash_u64(key) & (MERGE_SLOTS - 1);
    while (t->merges[i].key) {
        if (t->merges[i].key == key) {
            *merged = t->merges[i].merged;
            return t->merges[i].rank;
        }
        i = (i + 1) & (MERGE_SLOTS - 1);
    }
    return INT32_MAX;
}

static void merge_put(tc_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = hash_u64(key) & (MERGE_SLOTS - 1);
    while (t->merges[i].key && t->merges[i].key != key)
        i = (i + 1) & (MERGE_SLOTS - 1);
    t->merges[i].key = key;
    t->merges[i].rank = rank; /* a repeated pair keeps its last rank, as dict(zip(merges, ...)) */
    t->merges[i].merged = merged;
}

static tc_status build_vocab(tc_tokenizer *t, const char *path, char *data, size_t len) {
    int bs[256];
    uint32_t cp[256], cs[256];
    tc_bpe_byte_table(bs, cp);
    for (int i = 0; i < 256; i++)
        cs[i] = cp[bs[i]];

    tc_status st = TC_OK;
    str_map enc = {0};
    char *base = malloc(512 * 8);
    char **merged_str = calloc(N_MERGES, sizeof *merged_str);
    char **parts = calloc(2 * (size_t)N_MERGES, sizeof *parts);
    if (!base || !merged_str || !parts || str_map_init(&enc, 1u << 17)) {
        st = tc_fail(TC_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < 256; i++) {
        put_utf8(base + i * 8, cs[i]);
        strcpy(base + (256 + i) * 8, base + i * 8);
        strcat(base + (256 + i) * 8, "</w>");
        t->byte_id[bs[i]] = i;
    }
    for (int i = 0; i < 512; i++)
        str_map_put(&enc, base + i * 8, i);

    /* split into lines in place; line 0 is the header */
    char *p = data, *end = data + len;
    char *nl = memchr(p, '\n', len);
    if (!nl) {
        st = tc_fail(TC_ERR_FORMAT, "%s: not a BPE vocabulary (no line breaks)", path);
        goto done;
    }
    p = nl + 1;
    for (int r = 0; r < N_MERGES; r++) {
        if (p >= end) {
            st = tc_fail(TC_ERR_FORMAT, "%s: BPE vocabulary has %d merges, %d needed", path, r,
                         N_MERGES);
            goto done;
        }
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        *e = 0;
        /* merge.split(): exactly two whitespace-separated symbols */
        char *save = NULL;
        char *a = strtok_r(p, " \t\r\v\f", &save);
        char *b = a ? strtok_r(NULL, " \t\r\v\f", &save) : NULL;
        char *c = b ? strtok_r(NULL, " \t\r\v\f", &save) : NULL;
        if (!a || !b || c) {
            st = tc_fail(TC_ERR_FORMAT, "%s: line %d: a merge must be two symbols", path, r + 2);
            goto done;
        }
        size_t la = strlen(a), lb = strlen(b);
        merged_str[r] = malloc(la + lb + 1);
        if (!merged_str[r]) {
            st = tc_fail(TC_ERR_OOM, "%s: out of memory", path);
            goto done;
        }
        memcpy(merged_str[r], a, la);
        memcpy(merged_str[r] + la, b, lb + 1);
        parts[2 * r] = a;
        parts[2 * r + 1] = b;
        str_map_put(&enc, merged_str[r], 512 + r);
        p = e + 1;
    }
    for (int r = 0; r < N_MERGES; r++) {
        int32_t a = str_map_get(&enc, parts[2 * r]), b = str_map_get(&enc, parts[2 * r + 1]);
        if (a < 0 || b < 0) {
            st = tc_fail(TC_ERR_FORMAT, "%s: line %d: merge of an unknown symbol '%s'", path, r + 2,
                         a < 0 ? parts[2 * r] : parts[2 * r + 1]);
            goto done;
        }
        merge_put(t, a, b, r, str_map_get(&enc, merged_str[r]));
    }
done:
    if (merged_str)
        for (int r = 0; r < N_MERGES; r++)
            free(merged_str[r]);
    free(merged_str);
    free(parts);
    free(base);
    str_map_free(&enc);
    return st;
}

/* the pre-tokenizer: open_clip's pattern under re.IGNORECASE, with the
 * classes of the regex module (its \s, its newer \p{L}/\p{N}, and U+0345,
 * which its case-insensitive classes never match) */
static tc_status compile_pattern(tc_tokenizer *t) {
    static const char ws[] =
        "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
        "\\x{202f}\\x{205f}\\x{3000}";
    const char *fmt =
        "<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}%s]+|[\\p{N}%s]|"
        "[^%s\\p{L}\\p{N}%s%s%s]+";
    size_t n = strlen(fmt) + 2 * strlen(tc_regex_extra_letters) +
               2 * strlen(tc_regex_extra_numbers) + strlen(ws) + strlen(tc_regex_skipped) + 1;
    char *pat = malloc(n);
    if (!pat) return tc_fail(TC_ERR_OOM, "tokenizer: out of memory");
    snprintf(pat, n, fmt, tc_regex_extra_letters, tc_regex_extra_numbers, ws,
             tc_regex_extra_letters, tc_regex_extra_numbers, tc_regex_skipped);
    int err = 0;
    PCRE2_SIZE off = 0;
    t->pattern = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &err, &off, NULL);
    free(pat);
    if (!t->pattern) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "tokenizer: PCRE2 rejects the pre-tokenizer pattern at %zu: %s", (size_t)off,
                       (const char *)msg);
    }
    pcre2_jit_compile(t->pattern,
                      PCRE2_JIT_COMPLETE); /* optional: interpreted matching if it fails */
    return TC_OK;
}

tc_status tc_tokenizer_create(tc_tokenizer **out, const char *vocab_path) {
    *out = NULL;
    const char *path = vocab_path ? vocab_path : tc_bpe_vocab_default_path();
    tc_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return tc_fail(TC_ERR_OOM, "tokenizer: out of memory");
    for (int s = 0; s < CACHE_STRIPES; s++)
        pthread_mutex_init(&t->cache[s].mu, NULL);
    char *data = NULL;
    size_t len = 0;
    tc_status st = TC_OK;
    t->merges = calloc(MERGE_SLOTS, sizeof *t->merges);
    if (!t->merges) {
        st = tc_fail(TC_ERR_OOM, "tokenizer: out of memory");
        goto fail;
    }
    if ((st = tc_bpe_vocab_read(path, &data, &len)) != TC_OK) goto fail;
    if ((st = build_vocab(t, path, data, len)) != TC_OK) goto fail;
    free(data);
    data = NULL;
    if ((st = compile_pattern(t)) != TC_OK) goto fail;
    *out = t;
    return TC_OK;
fail:
    free(data);
    tc_tokenizer_destroy(t);
    return st;
}

static void cache_clear(cache_stripe *s) {
    if (!s->slots) return;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        free(s->slots[i].word);
    memset(s->slots, 0, CACHE_SLOTS * sizeof *s->slots);
    s->used = 0;
}

void tc_tokenizer_destroy(tc_tokenizer *t) {
    if (!t) return;
    for (int s = 0; s < CACHE_STRIPES; s++) {
        cache_clear(&t->cache[s]);
        free(t->cache[s].slots);
        pthread_mutex_destroy(&t->cache[s].mu);
    }
    if (t->pattern) pcre2_code_free(t->pattern);
    free(t->merges);
    free(t);
}

/* ---- the word cache ---- */

typedef struct {
    int32_t *p;
    size_t n, cap;
} id_list;

static int ids_reserve(id_list *l, size_t extra) {
    if (extra > (SIZE_MAX / 8) - l->n) return -1;
    if (l->n + extra <= l->cap) return 0;
    size_t cap = l->cap ? l->cap : 128;
    while (cap < l->n + extra)
        cap *= 2;
    int32_t *p = realloc(l->p, cap * sizeof *p);
    if (!p) return -1;
    l->p = p;
    l->cap = cap;
    return 0;
}

/* appends the cached ids of word to l; 1 when found, 0 when not, -1 on OOM */
static int cache_get(tc_tokenizer *t, const unsigned char *w, size_t n, uint64_t h, id_list *l) {
    cache_stripe *s = &t->cache[h % CACHE_STRIPES];
    int found = 0;
    pthread_mutex_lock(&s->mu);
    if (s->slots) {
        for (size_t i = (h / CACHE_STRIPES) & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
            cache_slot *c = &s->slots[i];
            if (!c->word) break;
            if (c->hash == h && c->len == n && memcmp(c->word, w, n) == 0) {
                if (ids_reserve(l, c->n_ids)) {
                    found = -1;
                } else {
                    memcpy(l->p + l->n, c->word + c->len, c->n_ids * sizeof(int32_t));
                    l->n += c->n_ids;
                    found = 1;
                }
                break;
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

static void cache_put(tc_tokenizer *t, const unsigned char *w, size_t n, uint64_t h,
                      const int32_t *ids, size_t n_ids) {
    unsigned char *block = malloc(n + n_ids * sizeof(int32_t));
    if (!block) return; /* the cache is an optimisation only */
    memcpy(block, w, n);
    memcpy(block + n, ids, n_ids * sizeof(int32_t));
    cache_stripe *s = &t->cache[h % CACHE_STRIPES];
    pthread_mutex_lock(&s->mu);
    if (!s->slots) s->slots = calloc(CACHE_SLOTS, sizeof *s->slots);
    if (!s->slots) {
        pthread_mutex_unlock(&s->mu);
        free(block);
        return;
    }
    if (s->used >= CACHE_SLOTS * 3 / 4) cache_clear(s);
    size_t i = (h / CACHE_STRIPES) & (CACHE_SLOTS - 1);
    for (;; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *c = &s->slots[i];
        if (!c->word) break;
        if (c->hash == h && c->len == n && memcmp(c->word, w, n) == 0) { /* another thread won */
            pthread_mutex_unlock(&s->mu);
            free(block);
            return;
        }
    }
    s->slots[i] = (cache_slot){h, block, (uint32_t)n, (uint32_t)n_ids};
    s->used++;
    pthread_mutex_unlock(&s->mu);
}

/* SimpleTokenizer.bpe on the UTF-8 bytes of one pre-token; appends its ids */
static int bpe_word(tc_tokenizer *t, const unsigned char *w, size_t n, id_list *l) {
    uint64_t h = 0;
    if (n <= CACHE_MAX_WORD) {
        h = hash_bytes(w, n);
        int r = cache_get(t, w, n, h, l);
        if (r) return r < 0 ? -1 : 0;
    }
    if (ids_reserve(l, n)) return -1;
    int32_t *sym = l->p + l->n; /* the word is merged in place at the end of l */
    size_t m = n;
    for (size_t i = 0; i < n; i++)
        sym[i] = t->byte_id[w[i]];
    sym[n - 1] += 256; /* the last symbol carries </w> */
    while (m > 1) {
        int32_t best = INT32_MAX, a = 0, b = 0, merged = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            int32_t mg;
            int32_t r = merge_lookup(t, sym[i], sym[i + 1], &mg);
            if (r < best) best = r, a = sym[i], b = sym[i + 1], merged = mg;
        }
        if (best == INT32_MAX) break;
        size_t o = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && sym[i] == a && sym[i + 1] == b) {
                sym[o++] = merged;
                i += 2;
            } else {
                sym[o++] = sym[i++];
            }
        }
        m = o;
    }
    if (n <= CACHE_MAX_WORD) cache_put(t, w, n, h, sym, m);
    l->n += m;
    return 0;
}

tc_status tc_tokenize(tc_tokenizer *t, const char *text, size_t len, int32_t *ids, int context,
                      int *n_ids) {
    if (!t || (!text && len) || !ids || context < 1)
        return tc_fail(TC_ERR_ARG, "tc_tokenize: invalid arguments (context %d)", context);
    char *clean = NULL;
    size_t clean_len = 0;
    tc_status st = tc_text_clean_lower(text ? text : "", len, &clean, &clean_len);
    if (st != TC_OK) return st;

    id_list l = {0};
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->pattern, NULL);
    if (!md) {
        free(clean);
        return tc_fail(TC_ERR_OOM, "tokenizer: out of memory");
    }
    /* with context-1 or more word tokens the output is truncated: the rest of
     * the text cannot change it */
    size_t need = (size_t)context - 1;
    PCRE2_SIZE pos = 0;
    while (pos < clean_len && l.n < need + 1) {
        int rc = pcre2_match(t->pattern, (PCRE2_SPTR)clean, clean_len, pos, PCRE2_NO_UTF_CHECK, md,
                             NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = tc_fail(TC_ERR_DATA, "tokenizer: pre-tokenizer failed at byte %zu: %s",
                         (size_t)pos, (const char *)msg);
            goto done;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        const unsigned char *w = (const unsigned char *)clean + ov[0];
        size_t n = ov[1] - ov[0];
        if (n == 0) { /* cannot happen with this pattern; never loop forever */
            pos = ov[1] + 1;
            continue;
        }
        pos = ov[1];
        if (n == 15 && memcmp(w, "<start_of_text>", 15) == 0) {
            if (ids_reserve(&l, 1)) goto oom;
            l.p[l.n++] = TC_SOT;
        } else if (n == 13 && memcmp(w, "<end_of_text>", 13) == 0) {
            if (ids_reserve(&l, 1)) goto oom;
            l.p[l.n++] = TC_EOT;
        } else if (bpe_word(t, w, n, &l)) {
            goto oom;
        }
    }
    /* [SOT] + tokens + [EOT], cut to context with the last id forced to EOT */
    size_t total = l.n + 2;
    size_t keep = total > (size_t)context ? (size_t)context : total;
    ids[0] = TC_SOT;
    for (size_t i = 1; i + 1 < keep; i++)
        ids[i] = l.p[i - 1];
    ids[keep - 1] = TC_EOT;
    for (size_t i = keep; i < (size_t)context; i++)
        ids[i] = 0;
    if (n_ids) *n_ids = (int)keep;
    goto done;
oom:
    st = tc_fail(TC_ERR_OOM, "tokenizer: out of memory");
done:
    pcre2_match_data_free(md);
    free(l.p);
    free(clean);
    return st;
}
