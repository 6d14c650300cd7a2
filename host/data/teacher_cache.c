/* the teacher-feature cache (teacher_cache.h): its key, sample identities,
 * and writing shards and the manifest. reading is in teacher_cache_read.c. */
#include "teacher_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "data_file.h"
#include "fileio.h"
#include "json.h"
#include "safetensors.h"
#include "shard_stream.h"

const char *tc_cache_dtype_name(tc_cache_dtype d) {
    static const char *const n[] = {"fp32", "fp16", "bf16"};
    return (unsigned)d < 3 ? n[d] : "?";
}

int tc_cache_dtype_parse(const char *s) {
    for (int d = 0; d < 3; d++)
        if (s && strcmp(s, tc_cache_dtype_name((tc_cache_dtype)d)) == 0) return d;
    return -1;
}

size_t tc_cache_dtype_bytes(tc_cache_dtype d) {
    return d == TC_CACHE_F32 ? 4 : 2;
}

/* ---- the key ---- */

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

void tc_cache_key_data(tc_cache_key *k, const tc_source *src, const char *spec) {
    snprintf(k->data_kind, sizeof k->data_kind, "%s", src->kind);
    tc_shard_display(spec ? spec : "", k->data_spec, sizeof k->data_spec);
    XXH3_state_t *x = XXH3_createState();
    uint64_t h = 0;
    if (x && XXH3_64bits_reset(x) == XXH_OK) {
        XXH3_64bits_update(x, src->kind, strlen(src->kind) + 1);
        if (src->indexable) {
            int64_t n = src->num_samples;
            XXH3_64bits_update(x, &n, sizeof n);
        } else {
            /* the shards' file names in order: the same data in another
             * folder (or bucket) is the same data */
            for (int i = 0; i < src->num_shards; i++) {
                const char *b = base_name(src->shards[i]);
                XXH3_64bits_update(x, b, strlen(b) + 1);
            }
        }
        h = XXH3_64bits_digest(x);
    }
    if (x) XXH3_freeState(x);
    k->data = h;
    k->samples = src->indexable ? src->num_samples : 0;
    k->data_shards = src->indexable ? 0 : src->num_shards;
}

void tc_cache_key_transform(tc_cache_key *k, const tc_transform_cfg *t, int context_length,
                            int decode_min_side) {
    k->image_size = t->size;
    k->context_length = context_length;
    k->decode_min_side = decode_min_side;
    k->scale_min = t->scale_min;
    k->scale_max = t->scale_max;
    k->ratio_min = t->ratio_min;
    k->ratio_max = t->ratio_max;
    for (int c = 0; c < 3; c++) {
        k->mean[c] = t->mean[c];
        k->std[c] = t->std[c];
    }
}

uint64_t tc_cache_key_hash(const tc_cache_key *k) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "%s|%016llx|%016llx|%d|%s|%016llx|%d|%d|%d|%.17g|%.17g|%.17g|%.17g|"
                     "%.9g|%.9g|%.9g|%.9g|%.9g|%.9g|%d|%016llx|%d|%d",
                     TC_CACHE_FORMAT, (unsigned long long)k->teacher_config,
                     (unsigned long long)k->teacher_weights, k->embed_dim, k->data_kind,
                     (unsigned long long)k->data, k->image_size, k->context_length,
                     k->decode_min_side, k->scale_min, k->scale_max, k->ratio_min, k->ratio_max,
                     (double)k->mean[0], (double)k->mean[1], (double)k->mean[2], (double)k->std[0],
                     (double)k->std[1], (double)k->std[2], k->augmentations,
                     (unsigned long long)k->aug_seed, (int)k->dtype, k->rows_per_shard);
    return XXH3_64bits(buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* ---- samples ---- */

uint64_t tc_cache_aug_seed(uint64_t seed) {
    return tc_mix64(seed, 0x6175676d656e74ull /* "augment" */);
}

uint64_t tc_cache_sample_uid(int indexable, int64_t index, int shard, int64_t member) {
    if (indexable) return (uint64_t)index;
    return ((uint64_t)(uint32_t)shard << 40) | ((uint64_t)member & ((1ull << 40) - 1));
}

uint64_t tc_cache_sample_hash(const tc_sample *s) {
    XXH3_state_t *x = XXH3_createState();
    uint64_t h = 0;
    if (x && XXH3_64bits_reset(x) == XXH_OK) {
        XXH3_64bits_update(x, s->key, strlen(s->key) + 1);
        if (s->caption) XXH3_64bits_update(x, s->caption, s->caption_len);
        XXH3_64bits_update(x, "\0img", 4);
        if (s->image) {
            XXH3_64bits_update(x, s->image, s->image_len);
        } else if (s->raw.px) {
            int32_t wh[2] = {s->raw.w, s->raw.h};
            XXH3_64bits_update(x, wh, sizeof wh);
            XXH3_64bits_update(x, s->raw.px, (size_t)s->raw.w * s->raw.h * 3);
        }
        h = XXH3_64bits_digest(x);
    }
    if (x) XXH3_freeState(x);
    return h;
}

void tc_cache_locate(const tc_cache_key *k, int indexable, int64_t index, int shard, int64_t member,
                     int *cshard, int64_t *row) {
    if (indexable) {
        int64_t R = k->rows_per_shard > 0 ? k->rows_per_shard : 1;
        *cshard = (int)(index / R);
        *row = index % R;
    } else {
        *cshard = shard;
        *row = member;
    }
}

int tc_cache_num_shards(const tc_cache_key *k) {
    if (k->data_shards > 0) return k->data_shards;
    int64_t R = k->rows_per_shard > 0 ? k->rows_per_shard : 1;
    return (int)((k->samples + R - 1) / R);
}

void tc_cache_shard_name(int shard, char *buf, size_t cap) {
    snprintf(buf, cap, "shard-%06d.safetensors", shard);
}

/* ---- rows ---- */

tc_status tc_cache_rows_alloc(tc_cache_rows *r, int64_t n, int K, int E) {
    memset(r, 0, sizeof *r);
    r->n = n;
    r->K = K;
    r->E = E;
    size_t N = n > 0 ? (size_t)n : 1;
    r->valid = calloc(N, 1);
    r->hash = calloc(N, sizeof *r->hash);
    r->image_size = calloc(N * 2, sizeof(int32_t));
    r->crop = calloc(N * (size_t)K * 4, sizeof(int32_t));
    r->img = calloc(N * (size_t)K * (size_t)E, sizeof(float));
    r->txt = calloc(N * (size_t)E, sizeof(float));
    if (!r->valid || !r->hash || !r->image_size || !r->crop || !r->img || !r->txt) {
        tc_cache_rows_free(r);
        return tc_fail(TC_ERR_OOM, "teacher cache: out of memory for %lld rows", (long long)n);
    }
    return TC_OK;
}

void tc_cache_rows_free(tc_cache_rows *r) {
    free(r->valid);
    free(r->hash);
    free(r->image_size);
    free(r->crop);
    free(r->img);
    free(r->txt);
    memset(r, 0, sizeof *r);
}

/* ---- shards ---- */

/* n floats into the key's dtype (round to nearest even) */
static void *convert(const float *x, size_t n, tc_cache_dtype d) {
    if (d == TC_CACHE_F32) return NULL;
    uint16_t *o = malloc((n ? n : 1) * sizeof *o);
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++)
        o[i] = d == TC_CACHE_F16 ? tc_float_to_half(x[i]) : tc_float_to_bfloat(x[i]);
    return o;
}

tc_status tc_cache_shard_write(const char *dir, int shard, const tc_cache_key *k,
                               const tc_cache_rows *r, tc_cache_shard_info *info) {
    size_t n = (size_t)r->n, K = (size_t)r->K, E = (size_t)r->E;
    tc_dtype dt = k->dtype == TC_CACHE_F32   ? TC_DT_F32
                  : k->dtype == TC_CACHE_F16 ? TC_DT_F16
                                             : TC_DT_BF16;
    void *img = convert(r->img, n * K * E, k->dtype), *txt = convert(r->txt, n * E, k->dtype);
    if (k->dtype != TC_CACHE_F32 && (!img || !txt)) {
        free(img);
        free(txt);
        return tc_fail(TC_ERR_OOM, "teacher cache: out of memory for shard %d", shard);
    }
    tc_st_write_tensor t[6] = {
        {"valid", TC_DT_U8, 1, {(int64_t)n}, r->valid},
        {"sample_hash", TC_DT_U64, 1, {(int64_t)n}, r->hash},
        {"image_size", TC_DT_I32, 2, {(int64_t)n, 2}, r->image_size},
        {"crop", TC_DT_I32, 3, {(int64_t)n, (int64_t)K, 4}, r->crop},
        {"image_features", dt, 3, {(int64_t)n, (int64_t)K, (int64_t)E}, img ? img : r->img},
        {"text_features", dt, 2, {(int64_t)n, (int64_t)E}, txt ? txt : r->txt},
    };
    char key[32], idx[32], rows[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)tc_cache_key_hash(k));
    snprintf(idx, sizeof idx, "%d", shard);
    snprintf(rows, sizeof rows, "%lld", (long long)r->n);
    const char *mk[] = {"format", "key", "shard", "rows"};
    const char *mv[] = {TC_CACHE_FORMAT, key, idx, rows};
    char name[64], path[4096];
    tc_cache_shard_name(shard, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tc_status s = tc_st_write(path, t, 6, mk, mv, 4);
    free(img);
    free(txt);
    if (s != TC_OK) return s;
    info->rows = r->n;
    TC_TRY(tc_file_xxh3(path, &info->xxh3, &info->bytes));
    /* what it cost, beside it (the shard's bytes depend on the data alone):
     * build/shard-NNNNNN.txt */
    char cost[200], cdir[4096 + 8];
    int cn = snprintf(cost, sizeof cost, "%.17g %.17g %.17g %lld\n", info->seconds, info->image_s,
                      info->text_s, (long long)info->images);
    snprintf(cdir, sizeof cdir, "%s/build", dir);
    TC_TRY(tc_mkdir_p(cdir));
    snprintf(path, sizeof path, "%s/build/shard-%06d.txt", dir, shard);
    return tc_write_file_atomic(path, cost, (size_t)cn);
}

int tc_cache_shard_done(const char *dir, int shard, const tc_cache_key *k,
                        tc_cache_shard_info *info, char *why, size_t cap) {
    char name[64], path[4096];
    tc_cache_shard_name(shard, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!tc_path_is_file(path)) return 0;
    tc_safetensors *f;
    if (tc_st_open(&f, path) != TC_OK) {
        snprintf(why, cap, "%s", tc_last_error());
        return -1;
    }
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)tc_cache_key_hash(k));
    const char *fk = tc_st_metadata(f, "key"), *rows = tc_st_metadata(f, "rows");
    char theirs[32];
    snprintf(theirs, sizeof theirs, "%.20s", fk ? fk : "missing");
    int ok = fk && strcmp(fk, key) == 0 && rows;
    if (ok) info->rows = atoll(rows);
    /* its cost, when the build got to write it */
    char cpath[4096 + 32], *cost = NULL;
    size_t clen;
    long long images = 0;
    snprintf(cpath, sizeof cpath, "%s/build/shard-%06d.txt", dir, shard);
    if (ok && tc_path_is_file(cpath) && tc_read_file_bounded(cpath, 4096, &cost, &clen) == TC_OK &&
        sscanf(cost, "%lf %lf %lf %lld", &info->seconds, &info->image_s, &info->text_s, &images) ==
            4)
        info->images = images;
    free(cost);
    tc_st_close(f);
    if (!ok) {
        snprintf(why, cap,
                 "%s belongs to another build (its key %s, this build's %s): remove the folder "
                 "or build into another one",
                 path, theirs, key);
        return -1;
    }
    if (tc_file_xxh3(path, &info->xxh3, &info->bytes) != TC_OK) {
        snprintf(why, cap, "%s", tc_last_error());
        return -1;
    }
    return 1;
}

/* ---- the manifest ---- */

static void hex_field(tc_sbuf *b, const char *name, uint64_t v, const char *sep) {
    tc_sbuf_printf(b, "\"%s\": \"%016llx\"%s", name, (unsigned long long)v, sep);
}

tc_cache_build_stats tc_cache_build_totals(const tc_cache_shard_info *shards, int n,
                                           int processes) {
    tc_cache_build_stats st = {0, 0, 0, processes};
    double img = 0, txt = 0, rows = 0, images = 0;
    for (int i = 0; i < n; i++) {
        st.process_seconds += shards[i].seconds;
        img += shards[i].image_s;
        txt += shards[i].text_s;
        images += (double)shards[i].images;
        rows += (double)shards[i].rows;
    }
    st.teacher_image_s = images > 0 ? img / images : 0;
    st.teacher_text_s = rows > 0 ? txt / rows : 0;
    return st;
}

tc_status tc_cache_manifest_write(const char *dir, const tc_cache_key *k,
                                  const tc_cache_shard_info *shards, int n, int processes) {
    tc_cache_build_stats bs = tc_cache_build_totals(shards, n, processes);
    const tc_cache_build_stats *st = &bs;
    tc_sbuf b = {0};
    int64_t rows = 0;
    for (int i = 0; i < n; i++)
        rows += shards[i].rows;
    tc_sbuf_printf(&b, "{\n  \"format\": \"%s\",\n  ", TC_CACHE_FORMAT);
    hex_field(&b, "key", tc_cache_key_hash(k), ",\n");
    tc_sbuf_puts(&b, "  \"teacher\": {\"name\": ");
    tc_sbuf_json_string(&b, k->teacher_name, strlen(k->teacher_name));
    tc_sbuf_puts(&b, ", ");
    hex_field(&b, "config_xxh3", k->teacher_config, ", ");
    hex_field(&b, "weights_xxh3", k->teacher_weights, ", ");
    tc_sbuf_printf(&b, "\"embed_dim\": %d},\n  \"data\": {\"kind\": ", k->embed_dim);
    tc_sbuf_json_string(&b, k->data_kind, strlen(k->data_kind));
    tc_sbuf_puts(&b, ", \"spec\": ");
    tc_sbuf_json_string(&b, k->data_spec, strlen(k->data_spec));
    tc_sbuf_puts(&b, ", ");
    hex_field(&b, "xxh3", k->data, ", ");
    tc_sbuf_printf(&b, "\"samples\": %lld, \"shards\": %d},\n", (long long)rows, k->data_shards);
    tc_sbuf_printf(&b,
                   "  \"transform\": {\"image_size\": %d, \"context_length\": %d, "
                   "\"decode_min_side\": %d, \"interpolation\": \"bicubic\", \"scale\": [",
                   k->image_size, k->context_length, k->decode_min_side);
    tc_sbuf_json_number(&b, k->scale_min);
    tc_sbuf_puts(&b, ", ");
    tc_sbuf_json_number(&b, k->scale_max);
    tc_sbuf_puts(&b, "], \"ratio\": [");
    tc_sbuf_json_number(&b, k->ratio_min);
    tc_sbuf_puts(&b, ", ");
    tc_sbuf_json_number(&b, k->ratio_max);
    for (int m = 0; m < 2; m++) {
        tc_sbuf_puts(&b, m ? "], \"std\": [" : "], \"mean\": [");
        for (int c = 0; c < 3; c++) {
            tc_sbuf_json_number(&b, (double)(m ? k->std[c] : k->mean[c]));
            if (c < 2) tc_sbuf_puts(&b, ", ");
        }
    }
    tc_sbuf_printf(&b, "]},\n  \"augmentations\": %d,\n  ", k->augmentations);
    hex_field(&b, "aug_seed", k->aug_seed, ",\n");
    tc_sbuf_printf(&b, "  \"dtype\": \"%s\",\n  \"rows_per_shard\": %d,\n",
                   tc_cache_dtype_name(k->dtype), k->rows_per_shard);
    tc_sbuf_puts(&b, "  \"build\": {\"process_seconds\": ");
    tc_sbuf_json_number(&b, st->process_seconds);
    tc_sbuf_puts(&b, ", \"teacher_image_s\": ");
    tc_sbuf_json_number(&b, st->teacher_image_s);
    tc_sbuf_puts(&b, ", \"teacher_text_s\": ");
    tc_sbuf_json_number(&b, st->teacher_text_s);
    tc_sbuf_printf(&b, ", \"processes\": %d},\n  \"shards\": [\n", st->processes);
    for (int i = 0; i < n; i++) {
        char name[64];
        tc_cache_shard_name(i, name, sizeof name);
        tc_sbuf_printf(&b, "    {\"file\": \"%s\", \"rows\": %lld, \"bytes\": %llu, ", name,
                       (long long)shards[i].rows, (unsigned long long)shards[i].bytes);
        hex_field(&b, "xxh3", shards[i].xxh3, i + 1 < n ? "},\n" : "}\n");
    }
    tc_sbuf_puts(&b, "  ]\n}\n");
    char *text;
    TC_TRY(tc_sbuf_finish(&b, &text));
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, TC_CACHE_MANIFEST);
    tc_status s = tc_write_file_atomic(path, text, strlen(text));
    free(text);
    return s;
}
