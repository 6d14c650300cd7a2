/* building a teacher-feature cache: the work of every process, shard by
 * shard, resumable (cache_build.h). the folder's format is
 * host/data/teacher_cache.h; the stage and the command that call this are
 * run_cache.c and cache_command.c. */
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "fileio.h"
#include "scheduler_internal.h"

/* one process's builder */
typedef struct {
    const cache_build_args *a;
    tc_source *src;
    tc_cache_key key;
    tc_transform_cfg tcfg;
    int min_side, S, T, K, E;
    tc_model *teacher;
    int nthreads;
    tc_image_decoder **dec; /* (nthreads) */
    uint8_t **scratch;      /* (nthreads) S*S*3 */
    /* one chunk of m <= mcap samples: raw samples, K crops each, tokens */
    int mcap;
    tc_sample *raw;   /* (mcap) */
    int64_t *uid;     /* (mcap) */
    float *images;    /* (mcap*K, 3, S, S) */
    int32_t *ids;     /* (mcap, T) */
    int *order;       /* (mcap*K) rows of images packed for the forward */
    char (*why)[400]; /* (mcap) why a sample is unusable */
    float *feat;      /* (batch, E) features read back */
    int64_t *to;      /* (batch) the row each read-back feature goes to */
    float *pack;      /* (batch, 3, S, S) or ids: the forward's input */
    int64_t rows_done, rows_total, bad_logged;
    double t0, t_print;
} builder;

/* ---- keys ---- */

tc_status cache_key_teacher(tc_cache_key *k, const char *label, const tc_model_config *cfg,
                            const float *params, size_t n) {
    tc_model_config named = *cfg;
    named.name[0] = 0; /* the same architecture under another name is the same teacher */
    char *json;
    TC_TRY(tc_model_config_to_json(&named, &json));
    k->teacher_config = XXH3_64bits(json, strlen(json));
    free(json);
    k->teacher_weights = XXH3_64bits(params, n * sizeof(float));
    k->embed_dim = cfg->embed_dim;
    snprintf(k->teacher_name, sizeof k->teacher_name, "%s", label ? label : cfg->name);
    return TC_OK;
}

void cache_key_transform(tc_cache_key *k, int image_size, int context_length) {
    tc_transform_cfg t = tc_transform_default(image_size, 1);
    tc_cache_key_transform(k, &t, context_length, tc_loader_decode_min_side(image_size, 1));
}

/* ---- per sample ---- */

/* the hash, decode, K crops and tokens of sample j into the chunk and its
 * row; 0 with why[j] set when it is unusable (as the train loader decides) */
static int prepare_sample(builder *b, int j, int th, tc_cache_rows *rows, int64_t r) {
    tc_sample *s = &b->raw[j];
    int K = b->K, S = b->S;
    size_t px = (size_t)3 * S * S;
    rows->hash[r] = tc_cache_sample_hash(s);
    if (s->bad[0]) {
        snprintf(b->why[j], sizeof b->why[j], "%.100s: sample %.80s: %.190s", s->where, s->key,
                 s->bad);
        return 0;
    }
    char name[600];
    snprintf(name, sizeof name, "%.300s: sample %.250s", s->where, s->key);
    tc_image img = {0, 0, NULL};
    tc_status st = TC_OK;
    if (s->raw.px) {
        img = s->raw;
        s->raw.px = NULL;
    } else {
        st = tc_image_decode(b->dec[th], s->image, s->image_len, name, b->min_side, &img);
    }
    if (st == TC_OK) {
        rows->image_size[2 * r] = img.w;
        rows->image_size[2 * r + 1] = img.h;
    }
    for (int k = 0; st == TC_OK && k < K; k++) {
        tc_crop c =
            tc_aug_pool_crop(&b->tcfg, img.w, img.h, b->key.aug_seed, (uint64_t)b->uid[j], k);
        int32_t *box = rows->crop + ((size_t)r * K + k) * 4;
        box[0] = c.top;
        box[1] = c.left;
        box[2] = c.height;
        box[3] = c.width;
        st = tc_transform_apply_crop(&b->tcfg, &img, c, b->scratch[th],
                                     b->images + ((size_t)j * K + k) * px, NULL);
    }
    tc_image_free(&img);
    if (st == TC_OK) {
        int n = 0;
        st = tc_tokenize(b->a->tok, s->caption ? s->caption : "", s->caption_len,
                         b->ids + (size_t)j * b->T, b->T, &n);
    }
    if (st != TC_OK) {
        snprintf(b->why[j], sizeof b->why[j], "%.399s", tc_last_error());
        return 0;
    }
    rows->valid[r] = 1;
    return 1;
}

/* ---- the teacher ---- */

/* features of the packed inputs (n rows) into dst rows given by `to`
 * (row index times stride); images when ids is NULL */
static tc_status forward(builder *b, const float *images, const int32_t *ids, int n, float *dst,
                         const int64_t *to) {
    tc_backend *be = b->a->be;
    size_t E = (size_t)b->E;
    TC_TRY(images ? tc_model_encode_image(b->teacher, images, n)
                  : tc_model_encode_text(b->teacher, ids, n));
    float *f = images ? tc_model_image_features(b->teacher) : tc_model_text_features(b->teacher);
    TC_TRY(be->download(be, b->feat, f, (size_t)n * E * sizeof(float)));
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)to[i] * E, b->feat + (size_t)i * E, E * sizeof(float));
    return TC_OK;
}

/* the teacher's features of the chunk's usable samples (rows r0..r0+m) */
static tc_status chunk_features(builder *b, tc_cache_rows *rows, int64_t r0, int m,
                                tc_cache_shard_info *info) {
    int K = b->K, B = b->a->batch;
    size_t px = (size_t)3 * b->S * b->S;
    int64_t *to = b->to;
    /* images: every usable sample's K crops, in pieces of at most B */
    int n = 0;
    for (int j = 0; j < m; j++)
        for (int k = 0; rows->valid[r0 + j] && k < K; k++)
            b->order[n++] = j * K + k;
    double t = wall_seconds();
    for (int at = 0; at < n; at += B) {
        int c = n - at < B ? n - at : B;
        for (int i = 0; i < c; i++) {
            int jk = b->order[at + i];
            memcpy(b->pack + (size_t)i * px, b->images + (size_t)jk * px, px * sizeof(float));
            to[i] = (r0 + jk / K) * K + jk % K;
        }
        TC_TRY(forward(b, b->pack, NULL, c, rows->img, to));
    }
    info->image_s += wall_seconds() - t;
    info->images += n;
    /* captions */
    t = wall_seconds();
    int32_t *ids = (int32_t *)b->pack;
    n = 0;
    for (int j = 0; j < m; j++) {
        if (!rows->valid[r0 + j]) continue;
        memcpy(ids + (size_t)n * b->T, b->ids + (size_t)j * b->T, (size_t)b->T * sizeof(int32_t));
        to[n++] = r0 + j;
        if (n == B) {
            TC_TRY(forward(b, NULL, ids, n, rows->txt, to));
            n = 0;
        }
    }
    if (n > 0) TC_TRY(forward(b, NULL, ids, n, rows->txt, to));
    info->text_s += wall_seconds() - t;
    return TC_OK;
}

/* ---- chunks and shards ---- */

static void progress(builder *b, int shard, int force) {
    const cache_build_args *a = b->a;
    double now = wall_seconds();
    if (!force && now - b->t_print < 5.0) return;
    b->t_print = now;
    double rate = b->rows_done / (now - b->t0 > 1e-9 ? now - b->t0 : 1e-9);
    char eta[32] = "";
    if (b->rows_total > 0 && rate > 0) {
        long s = (long)((double)(b->rows_total - b->rows_done) / rate);
        snprintf(eta, sizeof eta, ", ETA %02ld:%02ld", s / 60, s % 60);
    }
    char of[64] = "";
    if (b->rows_total > 0) snprintf(of, sizeof of, " of %lld", (long long)b->rows_total);
    fprintf(a->log, "cache %s: %lld%s samples%s (shard %d), %.1f samples/s%s\n", a->name,
            (long long)b->rows_done, of, a->world > 1 ? " on this process" : "", shard, rate, eta);
    fflush(a->log);
}

/* m samples in b->raw (their rows r0..) through preparation and the teacher */
static tc_status run_chunk(builder *b, tc_cache_rows *rows, int64_t r0, int m,
                           tc_cache_shard_info *info, int shard) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(b->nthreads)
    for (int j = 0; j < m; j++) {
        int th = omp_get_thread_num();
        b->why[j][0] = 0;
        prepare_sample(b, j, th < b->nthreads ? th : 0, rows, r0 + j);
        tc_sample_clear(&b->raw[j]);
    }
    for (int j = 0; j < m; j++)
        if (b->why[j][0] && b->bad_logged++ < 20)
            fprintf(b->a->log, "cache %s: unusable (no features stored): %s\n", b->a->name,
                    b->why[j]);
    TC_TRY(chunk_features(b, rows, r0, m, info));
    b->rows_done += m;
    progress(b, shard, 0);
    return TC_OK;
}

/* an indexable source's rows of shard s */
static tc_status build_indexable(builder *b, int s, tc_cache_rows *rows,
                                 tc_cache_shard_info *info) {
    int64_t R = b->key.rows_per_shard, lo = (int64_t)s * R, N = b->src->num_samples;
    int64_t n = N - lo < R ? N - lo : R;
    TC_TRY(tc_cache_rows_alloc(rows, n, b->K, b->E));
    for (int64_t r0 = 0; r0 < n; r0 += b->mcap) {
        int m = n - r0 < b->mcap ? (int)(n - r0) : b->mcap;
        tc_status st = TC_OK;
#pragma omp parallel for schedule(dynamic, 4) num_threads(b->nthreads)
        for (int j = 0; j < m; j++) {
            int64_t i = lo + r0 + j;
            b->uid[j] = (int64_t)tc_cache_sample_uid(1, i, 0, 0);
            if (b->src->get(b->src, i, &b->raw[j]) != TC_OK) {
                memset(&b->raw[j], 0, sizeof b->raw[j]);
                snprintf(b->raw[j].bad, sizeof b->raw[j].bad, "%.190s", tc_last_error());
                snprintf(b->raw[j].key, sizeof b->raw[j].key, "%lld", (long long)i);
            }
        }
        if (st == TC_OK) st = run_chunk(b, rows, r0, m, info, s);
        TC_TRY(st);
    }
    return TC_OK;
}

/* grows rows to hold at least n (doubling) */
static tc_status rows_reserve(tc_cache_rows *r, int64_t n, int64_t *cap) {
    if (n <= *cap) return TC_OK;
    int64_t nc = *cap ? *cap : 256;
    while (nc < n)
        nc *= 2;
    tc_cache_rows g;
    TC_TRY(tc_cache_rows_alloc(&g, nc, r->K, r->E));
    size_t o = (size_t)r->n, K = (size_t)r->K, E = (size_t)r->E;
    memcpy(g.valid, r->valid, o);
    memcpy(g.hash, r->hash, o * sizeof *g.hash);
    memcpy(g.image_size, r->image_size, o * 2 * sizeof(int32_t));
    memcpy(g.crop, r->crop, o * K * 4 * sizeof(int32_t));
    memcpy(g.img, r->img, o * K * E * sizeof(float));
    memcpy(g.txt, r->txt, o * E * sizeof(float));
    g.n = r->n;
    tc_cache_rows_free(r);
    *r = g;
    *cap = nc;
    return TC_OK;
}

/* a webdataset shard, front to back */
static tc_status build_wds(builder *b, int s, tc_cache_rows *rows, tc_cache_shard_info *info) {
    tc_shard_reader *rd;
    TC_TRY(tc_cache_rows_alloc(rows, 0, b->K, b->E));
    int64_t cap = 0;
    TC_TRY(b->src->open_shard(b->src, s, &rd));
    tc_status st = TC_OK;
    int eof = 0;
    while (st == TC_OK && !eof) {
        int m = 0;
        while (m < b->mcap && st == TC_OK) {
            memset(&b->raw[m], 0, sizeof b->raw[m]);
            st = b->src->next(rd, &b->raw[m], &eof);
            if (st != TC_OK || eof) break;
            b->uid[m] = (int64_t)tc_cache_sample_uid(0, 0, s, b->raw[m].member);
            if (b->raw[m].member != rows->n + m)
                st = tc_fail(TC_ERR_DATA, "shard %d: sample %lld came as number %lld", s,
                             (long long)(rows->n + m), (long long)b->raw[m].member);
            m++;
        }
        if (st == TC_OK && m > 0) st = rows_reserve(rows, rows->n + m, &cap);
        if (st == TC_OK && m > 0) {
            int64_t r0 = rows->n;
            rows->n += m;
            st = run_chunk(b, rows, r0, m, info, s);
        }
        for (int j = 0; j < m; j++)
            tc_sample_clear(&b->raw[j]);
    }
    b->src->close_shard(rd);
    if (st != TC_OK)
        return tc_fail_context(st,
                               "cache %s: the data shard %d cannot be read whole (a cache "
                               "must cover every sample)",
                               b->a->name, s);
    return TC_OK;
}

static tc_status build_shard(builder *b, int s, tc_cache_shard_info *info) {
    tc_cache_rows rows;
    memset(&rows, 0, sizeof rows);
    double t = wall_seconds();
    memset(info, 0, sizeof *info);
    tc_status st =
        b->src->indexable ? build_indexable(b, s, &rows, info) : build_wds(b, s, &rows, info);
    info->seconds = wall_seconds() - t;
    if (st == TC_OK) st = tc_cache_shard_write(b->a->dir, s, &b->key, &rows, info);
    tc_cache_rows_free(&rows);
    return st;
}

/* ---- set-up ---- */

static void builder_free(builder *b) {
    for (int i = 0; b->dec && i < b->nthreads; i++) {
        tc_image_decoder_destroy(b->dec[i]);
        free(b->scratch[i]);
    }
    free(b->dec);
    free(b->scratch);
    free(b->raw);
    free(b->uid);
    free(b->images);
    free(b->ids);
    free(b->order);
    free(b->why);
    free(b->feat);
    free(b->to);
    free(b->pack);
    tc_model_destroy(b->teacher);
    tc_source_destroy(b->src);
}

static tc_status builder_init(builder *b, const cache_build_args *a) {
    memset(b, 0, sizeof *b);
    b->a = a;
    const tc_model_config *tc = a->teacher_cfg;
    if (a->batch < 1 || a->augmentations < 1 || a->augmentations > TC_CACHE_MAX_AUG)
        return tc_fail(TC_ERR_ARG, "cache %s: batch %d, augmentations %d", a->name, a->batch,
                       a->augmentations);
    TC_TRY(tc_source_open(a->data, a->source, &b->src));
    b->S = tc->vision.image_size;
    b->T = tc->text.context_length;
    b->K = a->augmentations;
    b->E = tc->embed_dim;
    b->tcfg = tc_transform_default(b->S, 1);
    b->min_side = tc_loader_decode_min_side(b->S, 1);
    TC_TRY(cache_key_teacher(&b->key, a->teacher_label, tc, a->teacher_params, a->teacher_nparams));
    tc_cache_key_data(&b->key, b->src, a->data);
    tc_cache_key_transform(&b->key, &b->tcfg, b->T, b->min_side);
    b->key.augmentations = b->K;
    b->key.aug_seed = a->aug_seed;
    b->key.dtype = (tc_cache_dtype)a->dtype;
    b->key.rows_per_shard = b->src->indexable ? a->rows_per_shard : 0;
    if (b->src->indexable && b->src->num_samples <= 0)
        return tc_fail(TC_ERR_DATA, "cache %s: '%s' has no samples", a->name, a->data);
    b->nthreads = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    b->mcap = a->batch / b->K > 0 ? a->batch / b->K : 1;
    if (b->mcap > 4096) b->mcap = 4096;
    size_t px = (size_t)3 * b->S * b->S, B = (size_t)a->batch, M = (size_t)b->mcap;
    b->dec = calloc((size_t)b->nthreads, sizeof *b->dec);
    b->scratch = calloc((size_t)b->nthreads, sizeof *b->scratch);
    b->raw = calloc(M, sizeof *b->raw);
    b->uid = calloc(M, sizeof *b->uid);
    b->images = malloc(M * b->K * px * sizeof(float));
    b->ids = calloc(M * (size_t)b->T, sizeof(int32_t));
    b->order = malloc(M * b->K * sizeof(int));
    b->why = calloc(M, sizeof *b->why);
    b->feat = malloc(B * (size_t)b->E * sizeof(float));
    b->to = malloc(B * sizeof(int64_t));
    size_t pack = B * px * sizeof(float), idb = B * (size_t)b->T * sizeof(int32_t);
    b->pack = malloc(pack > idb ? pack : idb);
    if (!b->dec || !b->scratch || !b->raw || !b->uid || !b->images || !b->order || !b->ids ||
        !b->why || !b->feat || !b->to || !b->pack)
        return tc_fail(TC_ERR_OOM, "cache %s: out of memory", a->name);
    for (int i = 0; i < b->nthreads; i++) {
        TC_TRY(tc_image_decoder_create(&b->dec[i]));
        tc_image_decoder_set_max_pixels(b->dec[i], a->max_image_pixels);
        if (!(b->scratch[i] = malloc(px))) return tc_fail(TC_ERR_OOM, "cache: out of memory");
    }
    tc_model_options o = {.max_batch = a->batch, .train = 0};
    TC_TRY(tc_model_create(&b->teacher, a->be, tc, o));
    return tc_model_set_params(b->teacher, a->teacher_params);
}

/* ---- the build ---- */

/* a finished cache already in the folder: 1 when it is this build's, 0 when
 * there is none; an error when it is another's */
static int finished_before(builder *b, tc_status *st) {
    char path[PATH_CAP + 32];
    snprintf(path, sizeof path, "%s/%s", b->a->dir, TC_CACHE_MANIFEST);
    *st = TC_OK;
    if (!tc_path_is_file(path)) return 0;
    tc_teacher_cache *c;
    if ((*st = tc_teacher_cache_open(b->a->dir, &c)) != TC_OK) return 0;
    tc_cache_expect w = {
        &b->key, &b->key, &b->key, b->key.image_size, b->key.augmentations, (int)b->key.dtype};
    *st = tc_teacher_cache_check(c, &w);
    if (*st == TC_OK && tc_cache_key_hash(tc_teacher_cache_key(c)) != tc_cache_key_hash(&b->key))
        *st = tc_fail(TC_ERR_CONFIG,
                      "teacher cache %s was built with another augmentation seed or shard size",
                      b->a->dir);
    tc_teacher_cache_close(c);
    if (*st != TC_OK)
        *st = tc_fail_context(*st,
                              "cache %s: the folder holds another cache; remove it or build "
                              "into another folder",
                              b->a->name);
    return *st == TC_OK;
}

/* the temporaries of writes a kill interrupted (fileio.h names them
 * ".NAME.tmp.PID.N"), in the folder and its build/ */
static void remove_stale_temporaries(const char *dir) {
    for (int sub = 0; sub < 2; sub++) {
        char d[PATH_CAP + 16];
        snprintf(d, sizeof d, "%s%s", dir, sub ? "/build" : "");
        DIR *h = opendir(d);
        if (!h) continue;
        struct dirent *e;
        while ((e = readdir(h))) {
            if (e->d_name[0] != '.' || !strstr(e->d_name, ".tmp.")) continue;
            char p[PATH_CAP + 300];
            snprintf(p, sizeof p, "%s/%s", d, e->d_name);
            unlink(p);
        }
        closedir(h);
    }
}

/* every shard's info on every process: each fills its own, the sums combine */
static tc_status share_infos(const cache_build_args *a, tc_cache_shard_info *info, int n) {
    if (a->world <= 1) return TC_OK;
    enum { F = 9 };
    double *v = calloc((size_t)n * F, sizeof *v);
    if (!v) return tc_fail(TC_ERR_OOM, "cache: out of memory");
    for (int s = a->rank; s < n; s += a->world) {
        const tc_cache_shard_info *i = &info[s];
        double row[F] = {(double)i->rows,
                         (double)i->bytes,
                         (double)(uint32_t)(i->xxh3 >> 32),
                         (double)(uint32_t)i->xxh3,
                         i->seconds,
                         i->image_s,
                         i->text_s,
                         (double)i->images,
                         1.0};
        memcpy(v + (size_t)s * F, row, sizeof row);
    }
    tc_status st = a->comm->host_all_reduce_f64(a->comm, v, (size_t)n * F, TC_REDUCE_SUM);
    for (int s = 0; st == TC_OK && s < n; s++) {
        const double *r = v + (size_t)s * F;
        info[s] = (tc_cache_shard_info){
            (int64_t)r[0], (uint64_t)r[1], ((uint64_t)r[2] << 32) | (uint64_t)r[3], r[4], r[5],
            r[6],          (int64_t)r[7]};
    }
    free(v);
    return st;
}

tc_status cache_build(const cache_build_args *a, tc_cache_build_stats *totals, uint64_t *bytes,
                      int64_t *rows) {
    builder b;
    tc_status st = builder_init(&b, a);
    int done = st == TC_OK ? finished_before(&b, &st) : 0;
    int n = st == TC_OK ? tc_cache_num_shards(&b.key) : 0;
    tc_cache_shard_info *info = n > 0 ? calloc((size_t)n, sizeof *info) : NULL;
    if (st == TC_OK && n > 0 && !info) st = tc_fail(TC_ERR_OOM, "cache: out of memory");
    if (st == TC_OK && !done) {
        if (a->rank == 0) st = tc_mkdir_p(a->dir);
        if (st == TC_OK && a->rank == 0) remove_stale_temporaries(a->dir);
        if (st == TC_OK && a->world > 1) st = a->comm->barrier(a->comm);
        b.t0 = b.t_print = wall_seconds();
        b.rows_total = b.src->indexable         ? b.src->num_samples
                       : b.src->num_samples > 0 ? b.src->num_samples
                                                : 0;
        if (b.rows_total > 0 && a->world > 1)
            b.rows_total = (b.rows_total + a->world - 1) / a->world;
        int built = 0, kept = 0;
        for (int s = a->rank; st == TC_OK && s < n; s += a->world) {
            char why[1024];
            int before = tc_cache_shard_done(a->dir, s, &b.key, &info[s], why, sizeof why);
            if (before < 0) {
                st = tc_fail(TC_ERR_CONFIG, "cache %s: %s", a->name, why);
            } else if (before > 0) {
                kept++;
                b.rows_done += info[s].rows;
            } else {
                st = build_shard(&b, s, &info[s]);
                built++;
                if (st == TC_OK) progress(&b, s, 1);
                if (st == TC_OK) tc_fault_after_cache_shard(a->faults, a->name, s);
            }
        }
        if (st == TC_OK && kept > 0)
            fprintf(a->log, "cache %s: %d shard%s done before, kept; %d built now\n", a->name, kept,
                    kept == 1 ? "" : "s", built);
        if (st == TC_OK) st = share_infos(a, info, n);
        if (st == TC_OK && a->rank == 0)
            st = tc_cache_manifest_write(a->dir, &b.key, info, n, a->world);
        if (st == TC_OK && a->world > 1) st = a->comm->barrier(a->comm);
    }
    tc_teacher_cache *c = NULL;
    if (st == TC_OK) st = tc_teacher_cache_open(a->dir, &c);
    if (st == TC_OK) {
        *totals = *tc_teacher_cache_stats(c);
        *bytes = tc_teacher_cache_bytes(c);
        *rows = tc_teacher_cache_key(c)->samples;
        if (done) fprintf(a->log, "cache %s: %s is complete, nothing to build\n", a->name, a->dir);
    }
    tc_teacher_cache_close(c);
    free(info);
    builder_free(&b);
    return st;
}
