/* the webdataset source: a spec of brace patterns joined by "::" (the
 * parts), each expanded to shard names (local tars, pipe: commands,
 * http(s) URLs); wds_reader.c reads one shard. grouping is done per shard:
 * a key split across two shards gives two samples (open_clip would join
 * them when the second shard is read next by the same worker). the sample
 * count comes from sizes.json (basename -> count) beside local shards, or
 * from opts->num_samples. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_file.h"
#include "json.h"
#include "source.h"
#include "wds_reader.h"

typedef struct {
    tc_source_opts o; /* stream options, log; pointers into the caller not kept */
} wds_impl;

static tc_status wds_open_shard(tc_source *s, int shard, tc_shard_reader **out) {
    *out = NULL;
    if (shard < 0 || shard >= s->num_shards) return tc_fail(TC_ERR_ARG, "shard index %d", shard);
    wds_impl *w = s->impl;
    return tc_wds_reader_open_url(s->shards[shard], s->shard_part[shard], &w->o, out);
}

static tc_status wds_next(tc_shard_reader *r, tc_sample *out, int *eof) {
    return tc_wds_reader_next(r, out, eof);
}

static void wds_destroy(tc_source *s) {
    tc_strlist_free(s->shards, s->num_shards);
    free(s->shard_part);
    free(s->part_factor);
    free(s->impl);
    free(s);
}

/* count from sizes.json beside a local shard; -1 when absent */
static int64_t shard_size(const char *shard, char **cache_dir, tc_json **cache) {
    if (tc_shard_is_remote(shard)) return -1;
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
        char p[4200], why[160];
        snprintf(p, sizeof p, "%s%ssizes.json", dir, dlen ? "/" : "");
        uint8_t *text = NULL;
        size_t n = 0;
        if (tc_data_read_file(p, (size_t)64 << 20, &text, &n, why, sizeof why) == 0 &&
            tc_json_parse((char *)text, n, p, cache) != TC_OK)
            *cache = NULL;
        free(text);
    }
    if (!*cache) return -1;
    const tc_json *v = tc_json_get(*cache, slash ? slash + 1 : shard);
    if (!v || v->type != TC_JSON_NUMBER || !v->is_int || v->integer < 0) return -1;
    return v->integer;
}

/* appends the expansion of one "::" part to the source's shards */
static tc_status add_part(tc_source *s, const char *p, size_t n, int part, int *cap) {
    char *pat = malloc(n + 1);
    if (!pat) return tc_fail(TC_ERR_OOM, "webdataset: out of memory");
    memcpy(pat, p, n);
    pat[n] = 0;
    char **names = NULL;
    int k = 0;
    tc_status st = n > 0 ? tc_brace_expand(pat, &names, &k) : TC_OK;
    free(pat);
    for (int i = 0; st == TC_OK && i < k; i++) {
        if (s->num_shards == *cap) {
            int nc = *cap ? *cap * 2 : 64;
            char **nv = realloc(s->shards, sizeof(char *) * (size_t)nc);
            if (nv) s->shards = nv;
            int *np = nv ? realloc(s->shard_part, sizeof(int) * (size_t)nc) : NULL;
            if (np) s->shard_part = np;
            if (!nv || !np) {
                st = tc_fail(TC_ERR_OOM, "webdataset: out of memory");
                break;
            }
            *cap = nc;
        }
        if (tc_shard_is_remote(names[i])) st = tc_shard_check(names[i]);
        if (st != TC_OK) break;
        s->shard_part[s->num_shards] = part;
        s->shards[s->num_shards++] = names[i];
        names[i] = NULL;
    }
    tc_strlist_free(names, k);
    return st;
}

static tc_status parse_spec(tc_source *s, const char *spec, const tc_source_opts *opts) {
    int cap = 0, part = 0;
    for (const char *p = spec;; part++) {
        const char *sep = strstr(p, "::");
        size_t n = sep ? (size_t)(sep - p) : strlen(p);
        TC_TRY(add_part(s, p, n, part, &cap));
        if (!sep) break;
        p = sep + 2;
    }
    s->num_parts = part + 1;
    char shown[300];
    tc_shard_display(spec, shown, sizeof shown);
    if (s->num_shards == 0) return tc_fail(TC_ERR_DATA, "webdataset '%s': no shards", shown);
    s->part_factor = malloc(sizeof(double) * (size_t)s->num_parts);
    if (!s->part_factor) return tc_fail(TC_ERR_OOM, "webdataset: out of memory");
    int nf = opts ? opts->num_upsampling : 0;
    if (nf > 0 && nf != s->num_parts)
        return tc_fail(TC_ERR_CONFIG,
                       "webdataset '%s': %d upsampling factors for %d sources (one per '::' part)",
                       shown, nf, s->num_parts);
    for (int i = 0; i < s->num_parts; i++) {
        s->part_factor[i] = nf > 0 ? opts->upsampling[i] : 1.0;
        if (!(s->part_factor[i] > 0) || s->part_factor[i] > 1e6)
            return tc_fail(TC_ERR_CONFIG,
                           "webdataset '%s': upsampling factor %d is %g (must be in "
                           "(0, 1e6])",
                           shown, i, s->part_factor[i]);
    }
    return TC_OK;
}

tc_status tc_source_wds_open(const char *spec, const tc_source_opts *opts, tc_source **out) {
    *out = NULL;
    tc_source *s = calloc(1, sizeof *s);
    wds_impl *w = calloc(1, sizeof *w);
    if (!s || !w) {
        free(s);
        free(w);
        return tc_fail(TC_ERR_OOM, "webdataset: out of memory");
    }
    s->impl = w;
    s->kind = "wds";
    s->open_shard = wds_open_shard;
    s->next = wds_next;
    s->close_shard = tc_wds_reader_close;
    s->destroy = wds_destroy;
    if (opts) {
        w->o.stream = opts->stream;
        w->o.log = opts->log;
        w->o.quiet = opts->quiet;
    } else {
        tc_source_opts_init(&w->o);
    }
    tc_status st = parse_spec(s, spec, opts);
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
