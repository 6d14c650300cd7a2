/* reading a teacher-feature cache (teacher_cache.h): the manifest, the
 * checks against a run, the shards' checksums, and rows from shards mapped
 * on first use. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "data_file.h"
#include "fileio.h"
#include "json.h"
#include "safetensors.h"
#include "teacher_cache.h"

/* a mapped shard and its tensors */
typedef struct {
    tc_safetensors *f;
    const tc_st_tensor *valid, *hash, *size, *crop, *img, *txt;
    uint64_t used; /* the clock at its last use */
} mapped_shard;

struct tc_teacher_cache {
    char dir[4096];
    tc_cache_key key;
    tc_cache_build_stats stats;
    int nshards;
    tc_cache_shard_info *info;
    mapped_shard *map; /* (nshards) */
    int nmapped;
    uint64_t clock;
    pthread_mutex_t mu;
};

/* ---- the manifest ---- */

static int get_hex(const tc_json *o, const char *k, uint64_t *v) {
    const tc_json *s = tc_json_get(o, k);
    if (!s || s->type != TC_JSON_STRING || s->string_len != 16) return 0;
    char *end;
    *v = strtoull(s->string, &end, 16);
    return *end == 0;
}

static int get_num(const tc_json *o, const char *k, double *v) {
    const tc_json *s = tc_json_get(o, k);
    if (!s || s->type != TC_JSON_NUMBER) return 0;
    *v = s->number;
    return 1;
}

static int get_int(const tc_json *o, const char *k, int64_t lo, int64_t hi, int64_t *v) {
    const tc_json *s = tc_json_get(o, k);
    if (!s || s->type != TC_JSON_NUMBER || !s->is_int || s->integer < lo || s->integer > hi)
        return 0;
    *v = s->integer;
    return 1;
}

static int get_str(const tc_json *o, const char *k, char *buf, size_t cap) {
    const tc_json *s = tc_json_get(o, k);
    if (!s || s->type != TC_JSON_STRING || s->string_len >= cap) return 0;
    memcpy(buf, s->string, s->string_len + 1);
    return 1;
}

static int get_pair(const tc_json *o, const char *k, double *a, double *b) {
    const tc_json *s = tc_json_get(o, k);
    if (!s || s->type != TC_JSON_ARRAY || s->count != 2 || s->items[0].type != TC_JSON_NUMBER ||
        s->items[1].type != TC_JSON_NUMBER)
        return 0;
    *a = s->items[0].number;
    *b = s->items[1].number;
    return 1;
}

static int get_rgb(const tc_json *o, const char *k, float *v) {
    const tc_json *s = tc_json_get(o, k);
    if (!s || s->type != TC_JSON_ARRAY || s->count != 3) return 0;
    for (int c = 0; c < 3; c++) {
        if (s->items[c].type != TC_JSON_NUMBER) return 0;
        v[c] = (float)s->items[c].number;
    }
    return 1;
}

/* the key's fields; 0 names the first missing or bad one in *bad */
static int parse_key(const tc_json *j, tc_cache_key *k, const char **bad) {
    const tc_json *t = tc_json_get(j, "teacher"), *d = tc_json_get(j, "data"),
                  *x = tc_json_get(j, "transform");
    int64_t v, aug, rps, ed, is, cl, ms, ns, nd;
    double dv[4];
    char dt[16];
#define NEED(cond, what)                                                                           \
    if (!(cond)) {                                                                                 \
        *bad = what;                                                                               \
        return 0;                                                                                  \
    }
    NEED(t && get_str(t, "name", k->teacher_name, sizeof k->teacher_name), "teacher.name");
    NEED(get_hex(t, "config_xxh3", &k->teacher_config), "teacher.config_xxh3");
    NEED(get_hex(t, "weights_xxh3", &k->teacher_weights), "teacher.weights_xxh3");
    NEED(get_int(t, "embed_dim", 1, 1 << 20, &ed), "teacher.embed_dim");
    NEED(d && get_str(d, "kind", k->data_kind, sizeof k->data_kind), "data.kind");
    NEED(get_str(d, "spec", k->data_spec, sizeof k->data_spec), "data.spec");
    NEED(get_hex(d, "xxh3", &k->data), "data.xxh3");
    NEED(get_int(d, "samples", 0, INT64_MAX / 2, &ns), "data.samples");
    NEED(get_int(d, "shards", 0, 1 << 30, &nd), "data.shards");
    NEED(x && get_int(x, "image_size", 1, 8192, &is), "transform.image_size");
    NEED(get_int(x, "context_length", 1, 1 << 16, &cl), "transform.context_length");
    NEED(get_int(x, "decode_min_side", 0, 1 << 20, &ms), "transform.decode_min_side");
    NEED(get_pair(x, "scale", &dv[0], &dv[1]), "transform.scale");
    NEED(get_pair(x, "ratio", &dv[2], &dv[3]), "transform.ratio");
    NEED(get_rgb(x, "mean", k->mean) && get_rgb(x, "std", k->std), "transform.mean/std");
    NEED(get_int(j, "augmentations", 1, TC_CACHE_MAX_AUG, &aug), "augmentations");
    NEED(get_hex(j, "aug_seed", &k->aug_seed), "aug_seed");
    NEED(get_str(j, "dtype", dt, sizeof dt) && tc_cache_dtype_parse(dt) >= 0, "dtype");
    NEED(get_int(j, "rows_per_shard", 0, 1 << 30, &rps), "rows_per_shard");
#undef NEED
    (void)v;
    k->embed_dim = (int)ed;
    k->samples = ns;
    k->data_shards = (int)nd;
    k->image_size = (int)is;
    k->context_length = (int)cl;
    k->decode_min_side = (int)ms;
    k->scale_min = dv[0];
    k->scale_max = dv[1];
    k->ratio_min = dv[2];
    k->ratio_max = dv[3];
    k->augmentations = (int)aug;
    k->dtype = (tc_cache_dtype)tc_cache_dtype_parse(dt);
    k->rows_per_shard = (int)rps;
    return 1;
}

/* the shard list: every file of the right name, with rows, size and checksum */
static tc_status parse_shards(tc_teacher_cache *c, const tc_json *j, const char *path) {
    const tc_json *a = tc_json_get(j, "shards");
    if (!a || a->type != TC_JSON_ARRAY || a->count == 0 || a->count > (1u << 24))
        return tc_fail(TC_ERR_FORMAT, "%s: 'shards' is not a non-empty list", path);
    c->nshards = (int)a->count;
    c->info = calloc(a->count, sizeof *c->info);
    c->map = calloc(a->count, sizeof *c->map);
    if (!c->info || !c->map) return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    int64_t total = 0;
    for (size_t i = 0; i < a->count; i++) {
        const tc_json *s = &a->items[i];
        char file[64], want[64];
        int64_t rows, bytes;
        tc_cache_shard_name((int)i, want, sizeof want);
        if (s->type != TC_JSON_OBJECT || !get_str(s, "file", file, sizeof file) ||
            strcmp(file, want) != 0 || !get_int(s, "rows", 0, 1ll << 40, &rows) ||
            !get_int(s, "bytes", 8, INT64_MAX / 2, &bytes) || !get_hex(s, "xxh3", &c->info[i].xxh3))
            return tc_fail(TC_ERR_FORMAT, "%s: shards[%zu] is not {file: %s, rows, bytes, xxh3}",
                           path, i, want);
        c->info[i].rows = rows;
        c->info[i].bytes = (uint64_t)bytes;
        total += rows;
    }
    if (total != c->key.samples)
        return tc_fail(TC_ERR_FORMAT, "%s: the shards hold %lld rows, data.samples says %lld", path,
                       (long long)total, (long long)c->key.samples);
    if (c->nshards != tc_cache_num_shards(&c->key))
        return tc_fail(TC_ERR_FORMAT, "%s: %d shards listed, the data needs %d", path, c->nshards,
                       tc_cache_num_shards(&c->key));
    return TC_OK;
}

static tc_status read_manifest(tc_teacher_cache *c) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", c->dir, TC_CACHE_MANIFEST);
    if (!tc_path_is_file(path))
        return tc_fail(TC_ERR_DATA,
                       "teacher cache %s: no %s: the cache is not complete (its build was "
                       "interrupted or never ran); run its teacher_cache stage or `tinyclip "
                       "cache` again to finish it",
                       c->dir, TC_CACHE_MANIFEST);
    char *text;
    size_t len;
    TC_TRY(tc_read_file_bounded(path, (size_t)256 << 20, &text, &len));
    tc_json *j;
    tc_status s = tc_json_parse(text, len, path, &j);
    free(text);
    if (s != TC_OK) return s;
    const tc_json *f = tc_json_get(j, "format");
    const char *bad = NULL;
    if (!f || f->type != TC_JSON_STRING || strcmp(f->string, TC_CACHE_FORMAT) != 0)
        s = tc_fail(TC_ERR_FORMAT, "%s: not a %s manifest", path, TC_CACHE_FORMAT);
    else if (!parse_key(j, &c->key, &bad))
        s = tc_fail(TC_ERR_FORMAT, "%s: '%s' is missing or out of range", path, bad);
    uint64_t kh;
    if (s == TC_OK && (!get_hex(j, "key", &kh) || kh != tc_cache_key_hash(&c->key)))
        s = tc_fail(TC_ERR_FORMAT, "%s: 'key' does not match the fields (the manifest was edited)",
                    path);
    const tc_json *b = tc_json_get(j, "build");
    double v;
    if (b && get_num(b, "process_seconds", &v)) c->stats.process_seconds = v;
    if (b && get_num(b, "teacher_image_s", &v)) c->stats.teacher_image_s = v;
    if (b && get_num(b, "teacher_text_s", &v)) c->stats.teacher_text_s = v;
    if (b && get_num(b, "processes", &v)) c->stats.processes = (int)v;
    if (s == TC_OK) s = parse_shards(c, j, path);
    tc_json_free(j);
    return s;
}

tc_status tc_teacher_cache_open(const char *dir, tc_teacher_cache **out) {
    *out = NULL;
    tc_teacher_cache *c = calloc(1, sizeof *c);
    if (!c) return tc_fail(TC_ERR_OOM, "teacher cache: out of memory");
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    pthread_mutex_init(&c->mu, NULL);
    tc_status s = tc_path_is_dir(dir) ? read_manifest(c)
                                      : tc_fail(TC_ERR_IO, "teacher cache %s: no such folder", dir);
    /* every shard is there with its size: a missing or truncated one is
     * named before anything runs (the checksums: tc_teacher_cache_verify) */
    for (int i = 0; s == TC_OK && i < c->nshards; i++) {
        char name[64], path[4200];
        tc_cache_shard_name(i, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *f = fopen(path, "rb");
        if (!f) {
            s = tc_fail(TC_ERR_DATA, "teacher cache %s: shard %s is missing (%s)", dir, name,
                        strerror(errno));
            break;
        }
        int seek = fseeko(f, 0, SEEK_END);
        off_t size = seek == 0 ? ftello(f) : -1;
        fclose(f);
        if (size < 0 || (uint64_t)size != c->info[i].bytes)
            s = tc_fail(TC_ERR_DATA,
                        "teacher cache %s: shard %s has %lld bytes, the manifest says %llu "
                        "(truncated or replaced)",
                        dir, name, (long long)size, (unsigned long long)c->info[i].bytes);
    }
    if (s != TC_OK) {
        tc_teacher_cache_close(c);
        return s;
    }
    *out = c;
    return TC_OK;
}

void tc_teacher_cache_close(tc_teacher_cache *c) {
    if (!c) return;
    for (int i = 0; c->map && i < c->nshards; i++)
        if (c->map[i].f) tc_st_close(c->map[i].f);
    free(c->map);
    free(c->info);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

const tc_cache_key *tc_teacher_cache_key(const tc_teacher_cache *c) {
    return &c->key;
}
const char *tc_teacher_cache_dir(const tc_teacher_cache *c) {
    return c->dir;
}
const tc_cache_build_stats *tc_teacher_cache_stats(const tc_teacher_cache *c) {
    return &c->stats;
}

uint64_t tc_teacher_cache_identity(const tc_teacher_cache *c) {
    uint64_t v[3] = {tc_cache_key_hash(&c->key), (uint64_t)c->key.samples, (uint64_t)c->nshards};
    XXH3_state_t *x = XXH3_createState();
    if (!x || XXH3_64bits_reset(x) != XXH_OK) {
        if (x) XXH3_freeState(x);
        return 0;
    }
    XXH3_64bits_update(x, v, sizeof v);
    for (int i = 0; i < c->nshards; i++) {
        uint64_t sh[2] = {c->info[i].bytes, c->info[i].xxh3};
        XXH3_64bits_update(x, sh, sizeof sh);
    }
    uint64_t h = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    return h;
}

uint64_t tc_teacher_cache_bytes(const tc_teacher_cache *c) {
    uint64_t n = 0;
    for (int i = 0; i < c->nshards; i++)
        n += c->info[i].bytes;
    return n;
}

/* ---- checks ---- */

tc_status tc_teacher_cache_check(const tc_teacher_cache *c, const tc_cache_expect *w) {
    const tc_cache_key *k = &c->key;
    tc_sbuf b = {0};
#define DIFF(...)                                                                                  \
    do {                                                                                           \
        tc_sbuf_puts(&b, "\n  ");                                                                  \
        tc_sbuf_printf(&b, __VA_ARGS__);                                                           \
    } while (0)
    if (w->teacher && (k->teacher_config != w->teacher->teacher_config ||
                       k->teacher_weights != w->teacher->teacher_weights ||
                       k->embed_dim != w->teacher->embed_dim))
        DIFF("teacher: built with '%s' (config %016llx, weights %016llx, embedding %d), this run's "
             "teacher is '%s' (config %016llx, weights %016llx, embedding %d)",
             k->teacher_name, (unsigned long long)k->teacher_config,
             (unsigned long long)k->teacher_weights, k->embed_dim, w->teacher->teacher_name,
             (unsigned long long)w->teacher->teacher_config,
             (unsigned long long)w->teacher->teacher_weights, w->teacher->embed_dim);
    if (w->data && (strcmp(k->data_kind, w->data->data_kind) != 0 || k->data != w->data->data))
        DIFF("data: built from %s '%s' (%016llx), this run reads %s '%s' (%016llx)", k->data_kind,
             k->data_spec, (unsigned long long)k->data, w->data->data_kind, w->data->data_spec,
             (unsigned long long)w->data->data);
    const tc_cache_key *t = w->transform;
    if (t && (k->context_length != t->context_length || k->decode_min_side != t->decode_min_side ||
              k->scale_min != t->scale_min || k->scale_max != t->scale_max ||
              k->ratio_min != t->ratio_min || k->ratio_max != t->ratio_max ||
              memcmp(k->mean, t->mean, sizeof k->mean) != 0 ||
              memcmp(k->std, t->std, sizeof k->std) != 0))
        DIFF("transform: built with scale [%g, %g], ratio [%g, %g], decode to a short side >= %d, "
             "context %d; this run uses scale [%g, %g], ratio [%g, %g], %d, context %d%s",
             k->scale_min, k->scale_max, k->ratio_min, k->ratio_max, k->decode_min_side,
             k->context_length, t->scale_min, t->scale_max, t->ratio_min, t->ratio_max,
             t->decode_min_side, t->context_length,
             memcmp(k->mean, t->mean, sizeof k->mean) || memcmp(k->std, t->std, sizeof k->std)
                 ? " (and another mean/std)"
                 : "");
    if (w->image_size > 0 && k->image_size != w->image_size)
        DIFF("image size: built for %dpx images, the student takes %dpx", k->image_size,
             w->image_size);
    if (w->augmentations > 0 && k->augmentations != w->augmentations)
        DIFF("augmentations: the cache holds %d per sample, the stage asks for %d",
             k->augmentations, w->augmentations);
    if (w->dtype >= 0 && (int)k->dtype != w->dtype)
        DIFF("dtype: the cache stores %s features, the stage asks for %s",
             tc_cache_dtype_name(k->dtype), tc_cache_dtype_name((tc_cache_dtype)w->dtype));
#undef DIFF
    if (b.len == 0) {
        tc_sbuf_free(&b);
        return TC_OK;
    }
    char *text;
    TC_TRY(tc_sbuf_finish(&b, &text));
    tc_status s =
        tc_fail(TC_ERR_CONFIG, "teacher cache %s does not match this run (nothing was trained):%s",
                c->dir, text);
    free(text);
    return s;
}

tc_status tc_teacher_cache_verify(tc_teacher_cache *c, int rank, int world) {
    for (int i = rank; i<c->nshards; i += world> 0 ? world : 1) {
        char name[64], path[4200];
        tc_cache_shard_name(i, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", c->dir, name);
        uint64_t h, n;
        TC_TRY(tc_file_xxh3(path, &h, &n));
        if (n != c->info[i].bytes || h != c->info[i].xxh3)
            return tc_fail(TC_ERR_DATA,
                           "teacher cache %s: shard %s is damaged: %llu bytes with XXH3-64 "
                           "%016llx, the manifest says %llu bytes, %016llx; build the cache again",
                           c->dir, name, (unsigned long long)n, (unsigned long long)h,
                           (unsigned long long)c->info[i].bytes,
                           (unsigned long long)c->info[i].xxh3);
    }
    return TC_OK;
}

/* ---- rows ---- */

/* a tensor of the shard: dtype and shape as the manifest implies */
static const tc_st_tensor *shard_tensor(const tc_safetensors *f, const char *name, tc_dtype dt,
                                        int ndim, const int64_t *shape) {
    const tc_st_tensor *t = tc_st_find(f, name);
    if (!t || t->dtype != dt || t->ndim != ndim) return NULL;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return NULL;
    return t;
}

static void unmap_oldest(tc_teacher_cache *c) {
    int oldest = -1;
    for (int i = 0; i < c->nshards; i++)
        if (c->map[i].f && (oldest < 0 || c->map[i].used < c->map[oldest].used)) oldest = i;
    if (oldest < 0) return;
    tc_st_close(c->map[oldest].f);
    memset(&c->map[oldest], 0, sizeof c->map[oldest]);
    c->nmapped--;
}

/* maps shard i and checks its tensors; with c->mu held */
static tc_status map_shard(tc_teacher_cache *c, int i) {
    mapped_shard *m = &c->map[i];
    if (m->f) return TC_OK;
    if (c->nmapped >= TC_CACHE_MAX_OPEN) unmap_oldest(c);
    char name[64], path[4200];
    tc_cache_shard_name(i, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    tc_safetensors *f;
    TC_TRY(tc_st_open(&f, path));
    const tc_cache_key *k = &c->key;
    int64_t n = c->info[i].rows, K = k->augmentations, E = k->embed_dim;
    tc_dtype dt = k->dtype == TC_CACHE_F32   ? TC_DT_F32
                  : k->dtype == TC_CACHE_F16 ? TC_DT_F16
                                             : TC_DT_BF16;
    int64_t s1[1] = {n}, s2[2] = {n, 2}, s3[3] = {n, K, 4}, s4[3] = {n, K, E}, s5[2] = {n, E};
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)tc_cache_key_hash(k));
    const char *fk = tc_st_metadata(f, "key");
    m->valid = shard_tensor(f, "valid", TC_DT_U8, 1, s1);
    m->hash = shard_tensor(f, "sample_hash", TC_DT_U64, 1, s1);
    m->size = shard_tensor(f, "image_size", TC_DT_I32, 2, s2);
    m->crop = shard_tensor(f, "crop", TC_DT_I32, 3, s3);
    m->img = shard_tensor(f, "image_features", dt, 3, s4);
    m->txt = shard_tensor(f, "text_features", dt, 2, s5);
    if (!fk || strcmp(fk, key) != 0 || !m->valid || !m->hash || !m->size || !m->crop || !m->img ||
        !m->txt) {
        tc_st_close(f);
        memset(m, 0, sizeof *m);
        return tc_fail(TC_ERR_DATA,
                       "teacher cache %s: shard %s does not hold the tensors of this cache "
                       "(valid, sample_hash, image_size, crop, image_features, text_features of "
                       "%lld rows, key %s)",
                       c->dir, name, (long long)n, key);
    }
    m->f = f;
    c->nmapped++;
    return TC_OK;
}

static void read_features(const tc_st_tensor *t, size_t at, size_t n, tc_cache_dtype d,
                          float *out) {
    const unsigned char *p = (const unsigned char *)t->data;
    if (d == TC_CACHE_F32) {
        memcpy(out, p + at * 4, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + (at + i) * 2, 2);
        out[i] = d == TC_CACHE_F16 ? tc_half_to_float(h) : tc_bfloat_to_float(h);
    }
}

tc_status tc_teacher_cache_get(tc_teacher_cache *c, int cshard, int64_t row, int k, uint64_t hash,
                               int img_w, int img_h, int *usable, tc_crop *crop,
                               float *img_features, float *txt_features) {
    const tc_cache_key *key = &c->key;
    *usable = 0;
    if (cshard < 0 || cshard >= c->nshards || row < 0 || row >= c->info[cshard].rows)
        return tc_fail(TC_ERR_DATA,
                       "teacher cache %s: no row %lld in shard %d: the data holds more samples "
                       "than the cache was built from",
                       c->dir, (long long)row, cshard);
    if (k < 0 || k >= key->augmentations)
        return tc_fail(TC_ERR_ARG, "teacher cache: augmentation %d of %d", k, key->augmentations);
    pthread_mutex_lock(&c->mu);
    tc_status s = map_shard(c, cshard);
    if (s != TC_OK) {
        pthread_mutex_unlock(&c->mu);
        return s;
    }
    mapped_shard *m = &c->map[cshard];
    m->used = ++c->clock;
    size_t r = (size_t)row, K = (size_t)key->augmentations, E = (size_t)key->embed_dim;
    uint64_t h;
    int32_t wh[2], box[4];
    memcpy(&h, (const unsigned char *)m->hash->data + r * 8, 8);
    memcpy(wh, (const unsigned char *)m->size->data + r * 8, 8);
    memcpy(box, (const unsigned char *)m->crop->data + (r * K + (size_t)k) * 16, 16);
    int valid = ((const unsigned char *)m->valid->data)[r] != 0;
    if (valid) {
        read_features(m->img, (r * K + (size_t)k) * E, E, key->dtype, img_features);
        read_features(m->txt, r * E, E, key->dtype, txt_features);
    }
    pthread_mutex_unlock(&c->mu);
    char name[64];
    tc_cache_shard_name(cshard, name, sizeof name);
    if (h != hash)
        return tc_fail(TC_ERR_DATA,
                       "teacher cache %s: %s row %lld holds another sample (content hash "
                       "%016llx, the data's %016llx): the data changed since the cache was built",
                       c->dir, name, (long long)row, (unsigned long long)h,
                       (unsigned long long)hash);
    if (!valid) return TC_OK;
    if (wh[0] != img_w || wh[1] != img_h)
        return tc_fail(TC_ERR_DATA,
                       "teacher cache %s: %s row %lld: the image decodes to %dx%d, the cache's "
                       "crops are for %dx%d (another decoder setting)",
                       c->dir, name, (long long)row, img_w, img_h, wh[0], wh[1]);
    *crop = (tc_crop){box[0], box[1], box[2], box[3]};
    *usable = 1;
    return TC_OK;
}
