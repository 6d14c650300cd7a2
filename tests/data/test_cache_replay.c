/* the teacher-feature cache as host/data reads it (teacher_cache.h), on
 * caches this test writes with the format's own writer (the teacher's
 * features are made-up numbers; tests/run/test_teacher_cache.c builds real
 * ones with tinyclip):
 *   - replay: a loader on a cache of K = 3 hands, for every row, exactly the
 *     image the train transform makes from the stored crop of the picked
 *     augmentation (recomputed here from the decoded sample), the stored
 *     features of that augmentation and caption, and the same images as a
 *     live loader drawing from the same fixed pool; webdataset shards and an
 *     image folder (an indexable source), fp32, fp16 and bf16 features
 *   - resume: a loader started from a batch's cursor continues with the
 *     same images and features
 *   - one test per refusal: no manifest, a missing shard, a truncated shard,
 *     a corrupt shard (same size), a shard of another build, another
 *     teacher, data, transform, image size, number of augmentations, dtype,
 *     and data that changed after the build (a sample's caption)
 *   - a sample unusable when the cache was built is skipped by the loader */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image_decode.h"
#include "loader.h"
#include "safetensors.h"
#include "shard_writer.h"
#include "teacher_cache.h"
#include "testutil.h"

enum { S = 24, T = 16, E = 8, PER_SHARD = 20, NWDS = 60, NFOLDER = 36, SEED = 5 };

static tc_tokenizer *tok;
static char *tmp;
static char wds_spec[1300], folder_dir[1024];

/* ---- data ---- */

static uint8_t *photo(uint64_t *rs, int *w, int *h, size_t *len) {
    *w = 26 + (int)(tc_test_rand(rs) % 30);
    *h = 26 + (int)(tc_test_rand(rs) % 30);
    uint8_t *px = malloc((size_t)*w * *h * 3), *png;
    for (int k = 0; k < *w * *h * 3; k++)
        px[k] = (uint8_t)(tc_test_rand(rs) >> 13);
    assert_int_equal(tc_png_encode(px, *w, *h, 3, &png, len), TC_OK);
    free(px);
    return png;
}

/* the shards; `changed`: sample 25's caption differs (the data after a build) */
static void write_shards(const char *dir, int changed) {
    tc_shard_writer *w;
    assert_int_equal(tc_shard_writer_create(dir, PER_SHARD, &w), TC_OK);
    uint64_t rs = 7;
    for (int i = 0; i < NWDS; i++) {
        int W, H;
        size_t len;
        uint8_t *png = photo(&rs, &W, &H, &len);
        char key[32], cap[64];
        snprintf(key, sizeof key, "%06d", i);
        int cl = snprintf(cap, sizeof cap, "thing %d%s", i, changed && i == 25 ? " (new)" : "");
        assert_int_equal(tc_shard_writer_add(w, key, "png", png, len, cap, (size_t)cl, i, NULL),
                         TC_OK);
        free(png);
    }
    assert_int_equal(tc_shard_writer_close(w, NULL, NULL), TC_OK);
    tc_shard_writer_destroy(w);
}

static void write_folder(void) {
    uint64_t rs = 11;
    for (int c = 0; c < 2; c++) {
        char d[1100];
        snprintf(d, sizeof d, "%s/class%d", folder_dir, c);
        assert_int_equal(mkdir(d, 0777), 0);
        for (int i = 0; i < NFOLDER / 2; i++) {
            int W, H;
            size_t len;
            uint8_t *png = photo(&rs, &W, &H, &len);
            char p[1200];
            snprintf(p, sizeof p, "%s/img%02d.png", d, i);
            assert_int_equal(tc_write_file(p, png, len), 0);
            free(png);
        }
    }
}

/* ---- a cache written with the format's writer ---- */

typedef struct {
    int K, dtype, image_size, bad_row; /* bad_row >= 0: that row stored as unusable */
    uint64_t teacher_weights;
} cache_opts;

static float fake_feature(uint64_t uid, int k, int e) {
    return (float)sin(0.37 * (double)(uid % 100003) + 1.3 * k + 0.11 * e);
}

/* the key a run with these options expects */
static void make_key(tc_cache_key *k, const tc_source *src, const char *spec, const cache_opts *o) {
    memset(k, 0, sizeof *k);
    snprintf(k->teacher_name, sizeof k->teacher_name, "fake-teacher");
    k->teacher_config = 0x1111;
    k->teacher_weights = o->teacher_weights;
    k->embed_dim = E;
    tc_cache_key_data(k, src, spec);
    tc_transform_cfg t = tc_transform_default(o->image_size, 1);
    tc_cache_key_transform(k, &t, T, tc_loader_decode_min_side(o->image_size, 1));
    k->augmentations = o->K;
    k->aug_seed = tc_cache_aug_seed(SEED);
    k->dtype = (tc_cache_dtype)o->dtype;
    k->rows_per_shard = src->indexable ? 16 : 0;
}

/* one row: hash, decoded size, K pool crops, made-up features */
static void fill_row(tc_cache_rows *r, int64_t row, tc_sample *s, uint64_t uid,
                     const tc_cache_key *k, tc_image_decoder *dec) {
    r->hash[row] = tc_cache_sample_hash(s);
    tc_image img = s->raw;
    if (!img.px)
        assert_int_equal(
            tc_image_decode(dec, s->image, s->image_len, "t", k->decode_min_side, &img), TC_OK);
    r->image_size[2 * row] = img.w;
    r->image_size[2 * row + 1] = img.h;
    tc_transform_cfg t = tc_transform_default(k->image_size, 1);
    for (int a = 0; a < r->K; a++) {
        tc_crop c = tc_aug_pool_crop(&t, img.w, img.h, k->aug_seed, uid, a);
        int32_t *b = r->crop + ((size_t)row * r->K + a) * 4;
        b[0] = c.top, b[1] = c.left, b[2] = c.height, b[3] = c.width;
        for (int e = 0; e < E; e++)
            r->img[((size_t)row * r->K + a) * E + e] = fake_feature(uid, a, e);
    }
    for (int e = 0; e < E; e++)
        r->txt[(size_t)row * E + e] = fake_feature(uid, 99, e);
    r->valid[row] = 1;
    if (img.px != s->raw.px) tc_image_free(&img);
}

/* the source at spec (kind NULL: guessed from spec) */
static tc_source *open_source(const char *spec, const char *kind) {
    tc_source_opts so;
    tc_source_opts_init(&so);
    so.kind = kind;
    tc_source *src;
    assert_int_equal(tc_source_open(spec, &so, &src), TC_OK);
    return src;
}

static void write_cache(const char *dir, const char *spec, const char *kind, const cache_opts *o) {
    tc_source *src = open_source(spec, kind);
    tc_cache_key k;
    make_key(&k, src, spec, o);
    tc_image_decoder *dec;
    assert_int_equal(tc_image_decoder_create(&dec), TC_OK);
    int n = tc_cache_num_shards(&k);
    tc_cache_shard_info *info = calloc((size_t)n, sizeof *info);
    assert_int_equal(mkdir(dir, 0777), 0);
    int64_t total = 0;
    for (int s = 0; s < n; s++) {
        tc_cache_rows r;
        if (src->indexable) {
            int64_t lo = (int64_t)s * k.rows_per_shard, m = src->num_samples - lo;
            if (m > k.rows_per_shard) m = k.rows_per_shard;
            assert_int_equal(tc_cache_rows_alloc(&r, m, o->K, E), TC_OK);
            for (int64_t j = 0; j < m; j++) {
                tc_sample smp;
                assert_int_equal(src->get(src, lo + j, &smp), TC_OK);
                fill_row(&r, j, &smp, tc_cache_sample_uid(1, lo + j, 0, 0), &k, dec);
                tc_sample_clear(&smp);
            }
        } else {
            tc_shard_reader *rd;
            assert_int_equal(src->open_shard(src, s, &rd), TC_OK);
            assert_int_equal(tc_cache_rows_alloc(&r, PER_SHARD, o->K, E), TC_OK);
            for (int j = 0;; j++) {
                tc_sample smp;
                int eof = 0;
                memset(&smp, 0, sizeof smp);
                assert_int_equal(src->next(rd, &smp, &eof), TC_OK);
                if (eof) break;
                assert_int_equal(smp.shard, s);
                assert_int_equal(smp.member, j);
                fill_row(&r, j, &smp, tc_cache_sample_uid(0, 0, s, j), &k, dec);
                tc_sample_clear(&smp);
            }
            src->close_shard(rd);
        }
        if (o->bad_row >= total && o->bad_row < total + r.n) r.valid[o->bad_row - total] = 0;
        total += r.n;
        assert_int_equal(tc_cache_shard_write(dir, s, &k, &r, &info[s]), TC_OK);
        tc_cache_rows_free(&r);
    }
    assert_int_equal(tc_cache_manifest_write(dir, &k, info, n, 1), TC_OK);
    free(info);
    tc_image_decoder_destroy(dec);
    tc_source_destroy(src);
}

static const cache_opts base = {3, 0, S, -1, 0x2222};

/* ---- loaders ---- */

static tc_loader *loader(const char *spec, const char *kind, tc_teacher_cache *c, int pool,
                         const tc_loader_cursor *at) {
    tc_loader_cfg lc;
    tc_loader_cfg_init(&lc);
    lc.data = spec;
    lc.source.kind = kind;
    lc.batch_size = 8;
    lc.image_size = S;
    lc.context_length = T;
    lc.train = 1;
    lc.workers = 2;
    lc.seed = 77;
    lc.shuffle_buffer = 10;
    lc.tokenizer = tok;
    lc.quiet = 1;
    lc.cache = c;
    lc.aug_pool = pool;
    lc.aug_seed = tc_cache_aug_seed(SEED);
    tc_loader *l;
    assert_int_equal(tc_loader_create(&lc, at, &l), TC_OK);
    return l;
}

/* the webdataset sample a label names, and its identity */
static void sample_of(tc_source *src, int label, tc_sample *out, uint64_t *uid) {
    int s = label / PER_SHARD, m = label % PER_SHARD;
    tc_shard_reader *rd;
    assert_int_equal(src->open_shard(src, s, &rd), TC_OK);
    for (int j = 0; j <= m; j++) {
        int eof = 0;
        tc_sample_clear(out);
        assert_int_equal(src->next(rd, out, &eof), TC_OK);
        assert_false(eof);
    }
    src->close_shard(rd);
    *uid = tc_cache_sample_uid(0, 0, s, m);
}

/* a dtype's rounding of a stored feature */
static float stored(float x, tc_cache_dtype d) {
    if (d == TC_CACHE_F16) return tc_half_to_float(tc_float_to_half(x));
    if (d == TC_CACHE_BF16) return tc_bfloat_to_float(tc_float_to_bfloat(x));
    return x;
}

/* an indexable source's sample of row r: the one whose made-up caption
 * features the row holds */
static int64_t index_of(tc_source *src, const float *txt, tc_cache_dtype d) {
    for (int64_t i = 0; i < src->num_samples; i++)
        if (stored(fake_feature((uint64_t)i, 99, 0), d) == txt[0] &&
            stored(fake_feature((uint64_t)i, 99, 1), d) == txt[1])
            return i;
    fail_msg("no sample has the row's caption features");
    return -1;
}

/* every row of a batch: the image the stored crop of the picked
 * augmentation makes from the sample, and the stored features */
static void check_rows(tc_teacher_cache *c, tc_source *src, const tc_batch *b, int64_t epoch,
                       int64_t index) {
    const tc_cache_key *k = tc_teacher_cache_key(c);
    tc_transform_cfg t = tc_transform_default(S, 1);
    tc_image_decoder *dec;
    assert_int_equal(tc_image_decoder_create(&dec), TC_OK);
    float *want = malloc((size_t)3 * S * S * sizeof(float)), fi[E], ft[E];
    for (int r = 0; r < b->n; r++) {
        tc_sample smp;
        memset(&smp, 0, sizeof smp);
        uint64_t uid;
        int64_t i = 0;
        if (src->indexable) {
            i = index_of(src, b->teacher_txt + (size_t)r * E, k->dtype);
            assert_int_equal(src->get(src, i, &smp), TC_OK);
            uid = tc_cache_sample_uid(1, i, 0, 0);
        } else {
            sample_of(src, b->labels[r], &smp, &uid);
        }
        tc_image img;
        assert_int_equal(
            tc_image_decode(dec, smp.image, smp.image_len, "t", k->decode_min_side, &img), TC_OK);
        int kk = tc_aug_pool_pick(77, epoch, 0, index * 8 + r, k->augmentations), usable;
        tc_crop crop;
        int cs;
        int64_t row;
        tc_cache_locate(k, src->indexable, i, smp.shard, smp.member, &cs, &row);
        assert_int_equal(tc_teacher_cache_get(c, cs, row, kk, tc_cache_sample_hash(&smp), img.w,
                                              img.h, &usable, &crop, fi, ft),
                         TC_OK);
        assert_true(usable);
        assert_int_equal(tc_transform_apply_crop(&t, &img, crop, NULL, want, NULL), TC_OK);
        assert_memory_equal(want, b->images + (size_t)r * 3 * S * S, (size_t)3 * S * S * 4);
        assert_memory_equal(fi, b->teacher_img + (size_t)r * E, sizeof fi);
        assert_memory_equal(ft, b->teacher_txt + (size_t)r * E, sizeof ft);
        for (int e = 0; e < E; e++)
            assert_true(fi[e] == stored(fake_feature(uid, kk, e), k->dtype));
        tc_image_free(&img);
        tc_sample_clear(&smp);
    }
    free(want);
    tc_image_decoder_destroy(dec);
}

/* cache loader against recomputation and against the live pool */
static void replay(const char *spec, const char *kind, int dtype, const char *tag) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/cache-%s", tmp, tag);
    cache_opts o = base;
    o.dtype = dtype;
    write_cache(dir, spec, kind, &o);
    tc_teacher_cache *c;
    assert_int_equal(tc_teacher_cache_open(dir, &c), TC_OK);
    assert_int_equal(tc_teacher_cache_verify(c, 0, 1), TC_OK);
    tc_source *src = open_source(spec, kind);
    tc_loader *cached = loader(spec, kind, c, 0, NULL), *live = loader(spec, kind, NULL, 3, NULL);
    int batches = 0, rows_checked = 0;
    for (int i = 0; i < 10; i++) {
        tc_batch *a, *b;
        assert_int_equal(tc_loader_next(cached, &a), TC_OK);
        assert_int_equal(tc_loader_next(live, &b), TC_OK);
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(a->teacher_img);
        assert_null(b->teacher_img);
        assert_memory_equal(a->images, b->images, (size_t)a->n * 3 * S * S * 4);
        assert_memory_equal(a->labels, b->labels, (size_t)a->n * 4);
        check_rows(c, src, a, a->epoch, a->index);
        rows_checked += a->n;
        tc_loader_release(cached, a);
        tc_loader_release(live, b);
        batches++;
    }
    printf("%s (%s): %d batches equal to the live pool; %d rows equal to the stored crops "
           "replayed and hold their stored features\n",
           tag, tc_cache_dtype_name((tc_cache_dtype)dtype), batches, rows_checked);
    tc_loader_destroy(cached);
    tc_loader_destroy(live);
    tc_source_destroy(src);
    tc_teacher_cache_close(c);
}

static void test_replay_wds(void **state) {
    replay(wds_spec, "wds", 0, "wds-fp32");
}
static void test_replay_wds_bf16(void **state) {
    replay(wds_spec, "wds", 2, "wds-bf16");
}
static void test_replay_folder_fp16(void **state) {
    replay(folder_dir, "folder", 1, "folder-fp16");
}

/* fp16 and bf16 features read back as the rounding of what was stored */
static void test_dtypes_round(void **state) {
    for (int d = 1; d < 3; d++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/round-%d", tmp, d);
        cache_opts o = base;
        o.dtype = d;
        write_cache(dir, wds_spec, "wds", &o);
        tc_teacher_cache *c;
        assert_int_equal(tc_teacher_cache_open(dir, &c), TC_OK);
        tc_source *src = open_source(wds_spec, NULL);
        tc_sample smp;
        memset(&smp, 0, sizeof smp);
        uint64_t uid;
        sample_of(src, 33, &smp, &uid);
        float fi[E], ft[E];
        tc_crop crop;
        int usable;
        tc_image_decoder *dec;
        tc_image img;
        assert_int_equal(tc_image_decoder_create(&dec), TC_OK);
        assert_int_equal(tc_image_decode(dec, smp.image, smp.image_len, "t",
                                         tc_loader_decode_min_side(S, 1), &img),
                         TC_OK);
        assert_int_equal(tc_teacher_cache_get(c, 1, 13, 2, tc_cache_sample_hash(&smp), img.w, img.h,
                                              &usable, &crop, fi, ft),
                         TC_OK);
        for (int e = 0; e < E; e++) {
            assert_true(fi[e] == stored(fake_feature(uid, 2, e), (tc_cache_dtype)d));
            assert_true(ft[e] == stored(fake_feature(uid, 99, e), (tc_cache_dtype)d));
        }
        tc_image_free(&img);
        tc_image_decoder_destroy(dec);
        tc_sample_clear(&smp);
        tc_source_destroy(src);
        tc_teacher_cache_close(c);
    }
}

static void test_resume(void **state) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/cache-resume", tmp);
    write_cache(dir, wds_spec, "wds", &base);
    tc_teacher_cache *c;
    assert_int_equal(tc_teacher_cache_open(dir, &c), TC_OK);
    tc_loader *l = loader(wds_spec, "wds", c, 0, NULL);
    size_t px = (size_t)8 * 3 * S * S;
    float *img = malloc(4 * px * sizeof(float)), *feat = malloc(4 * 8 * E * sizeof(float));
    tc_loader_cursor at;
    for (int i = 0; i < 6; i++) {
        tc_batch *b;
        assert_int_equal(tc_loader_next(l, &b), TC_OK);
        if (i == 1) at = b->cursor;
        if (i >= 2) {
            memcpy(img + (size_t)(i - 2) * px, b->images, px * sizeof(float));
            memcpy(feat + (size_t)(i - 2) * 8 * E, b->teacher_img, 8 * E * sizeof(float));
        }
        tc_loader_release(l, b);
    }
    tc_loader_destroy(l);
    l = loader(wds_spec, "wds", c, 0, &at);
    for (int i = 2; i < 6; i++) {
        tc_batch *b;
        assert_int_equal(tc_loader_next(l, &b), TC_OK);
        assert_memory_equal(img + (size_t)(i - 2) * px, b->images, px * sizeof(float));
        assert_memory_equal(feat + (size_t)(i - 2) * 8 * E, b->teacher_img, 8 * E * sizeof(float));
        tc_loader_release(l, b);
    }
    printf("resumed after batch 2 (epoch 0, crossing into epoch 1): 4 batches identical\n");
    tc_loader_destroy(l);
    free(img);
    free(feat);
    tc_teacher_cache_close(c);
}

/* ---- refusals ---- */

/* a fresh copy of a good cache */
static void good_cache(char *dir, size_t cap, const char *tag) {
    snprintf(dir, cap, "%s/bad-%s", tmp, tag);
    write_cache(dir, wds_spec, "wds", &base);
}

static void expect_open_error(const char *dir, const char *what) {
    tc_teacher_cache *c = NULL;
    tc_status s = tc_teacher_cache_open(dir, &c);
    printf("refused: %s\n", tc_last_error());
    assert_int_not_equal(s, TC_OK);
    assert_null(c);
    assert_non_null(strstr(tc_last_error(), what));
}

/* a good cache with file `name` removed (keep < 0) or cut to keep bytes */
static void break_file(const char *tag, const char *name, long keep, const char *message) {
    char dir[1024], p[1100];
    good_cache(dir, sizeof dir, tag);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (keep < 0) {
        assert_int_equal(remove(p), 0);
    } else {
        size_t n;
        char *d = tc_read_file(p, &n);
        assert_int_equal(tc_write_file(p, d, (size_t)keep), 0);
        free(d);
    }
    expect_open_error(dir, message);
}

static void test_refuse_no_manifest(void **state) {
    break_file("manifest", "manifest.json", -1, "the cache is not complete");
}
static void test_refuse_missing_shard(void **state) {
    break_file("missing", "shard-000001.safetensors", -1,
               "shard shard-000001.safetensors is missing");
}
static void test_refuse_truncated_shard(void **state) {
    break_file("truncated", "shard-000002.safetensors", 4000, "(truncated or replaced)");
}

static void test_refuse_corrupt_shard(void **state) {
    char dir[1024], p[1100];
    good_cache(dir, sizeof dir, "corrupt");
    snprintf(p, sizeof p, "%s/shard-000000.safetensors", dir);
    size_t n;
    char *d = tc_read_file(p, &n);
    d[n - 40] ^= 0x10; /* one bit of a feature: the size and the header still fit */
    assert_int_equal(tc_write_file(p, d, n), 0);
    free(d);
    tc_teacher_cache *c;
    assert_int_equal(tc_teacher_cache_open(dir, &c), TC_OK);
    tc_status s = tc_teacher_cache_verify(c, 0, 1);
    printf("refused: %s\n", tc_last_error());
    assert_int_equal(s, TC_ERR_DATA);
    assert_non_null(strstr(tc_last_error(), "shard-000000.safetensors is damaged"));
    /* another process's share (rank 1 of 2 checks shard 1) does not see it */
    assert_int_equal(tc_teacher_cache_verify(c, 1, 2), TC_OK);
    tc_teacher_cache_close(c);
}

static void test_refuse_other_build_shard(void **state) {
    char dir[1024];
    good_cache(dir, sizeof dir, "otherbuild");
    tc_source *src = open_source(wds_spec, NULL);
    tc_cache_key k;
    cache_opts o = base;
    o.K = 2;
    make_key(&k, src, wds_spec, &o);
    tc_cache_shard_info info;
    char why[1024];
    assert_int_equal(tc_cache_shard_done(dir, 0, &k, &info, why, sizeof why), -1);
    printf("refused: %s\n", why);
    assert_non_null(strstr(why, "belongs to another build"));
    make_key(&k, src, wds_spec, &base);
    assert_int_equal(tc_cache_shard_done(dir, 0, &k, &info, why, sizeof why), 1);
    assert_int_equal(info.rows, PER_SHARD);
    tc_source_destroy(src);
}

/* the check against what a run expects: exactly the named difference */
static void expect_mismatch(const cache_opts *run_o, const char *run_spec, int image_size, int K,
                            int dtype, const char *line) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/mismatch-base", tmp);
    struct stat st;
    if (stat(dir, &st) != 0) write_cache(dir, wds_spec, "wds", &base);
    tc_teacher_cache *c;
    assert_int_equal(tc_teacher_cache_open(dir, &c), TC_OK);
    tc_source *src = open_source(run_spec, NULL);
    tc_cache_key want;
    make_key(&want, src, run_spec, run_o);
    tc_cache_expect w = {&want, &want, &want, image_size, K, dtype};
    tc_status s = tc_teacher_cache_check(c, &w);
    printf("refused: %s\n", tc_last_error());
    assert_int_equal(s, TC_ERR_CONFIG);
    const char *m = tc_last_error();
    assert_non_null(strstr(m, "does not match this run (nothing was trained)"));
    assert_non_null(strstr(m, line));
    /* that line alone */
    const char *lines[] = {"\n  teacher:",    "\n  data:",          "\n  transform:",
                           "\n  image size:", "\n  augmentations:", "\n  dtype:"};
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        if (!strstr(line, lines[i] + 3)) assert_null(strstr(m, lines[i]));
    tc_source_destroy(src);
    tc_teacher_cache_close(c);
}

static void test_refuse_teacher(void **state) {
    cache_opts o = base;
    o.teacher_weights = 0x3333;
    expect_mismatch(&o, wds_spec, S, 3, 0, "teacher: built with 'fake-teacher'");
}
static void test_refuse_data(void **state) {
    char spec[1100];
    snprintf(spec, sizeof spec, "%s/shards/{000000..000001}.tar", tmp);
    expect_mismatch(&base, spec, S, 3, 0, "data: built from wds");
}
static void test_refuse_transform(void **state) {
    cache_opts o = base;
    o.image_size = 32; /* another size decodes to another short side too */
    expect_mismatch(&o, wds_spec, S, 3, 0, "transform: built with scale");
}
static void test_refuse_image_size(void **state) {
    expect_mismatch(&base, wds_spec, 32, 3, 0,
                    "image size: built for 24px images, the student takes 32px");
}
static void test_refuse_augmentations(void **state) {
    expect_mismatch(&base, wds_spec, S, 2, 0,
                    "augmentations: the cache holds 3 per sample, the stage asks for 2");
}
static void test_refuse_dtype(void **state) {
    expect_mismatch(&base, wds_spec, S, 3, 2,
                    "dtype: the cache stores fp32 features, the stage asks for bf16");
}

/* the data changed after the build: the loader stops at that sample */
static void test_refuse_changed_sample(void **state) {
    char dir[1024], shards[1100], spec[1200];
    good_cache(dir, sizeof dir, "changed");
    snprintf(shards, sizeof shards, "%s/changed-shards", tmp);
    write_shards(shards, 1);
    snprintf(spec, sizeof spec, "%s/{000000..000002}.tar", shards);
    tc_teacher_cache *c;
    assert_int_equal(tc_teacher_cache_open(dir, &c), TC_OK);
    tc_loader *l = loader(spec, "wds", c, 0, NULL);
    tc_status s = TC_OK;
    for (int i = 0; i < 20 && s == TC_OK; i++) {
        tc_batch *b = NULL;
        s = tc_loader_next(l, &b);
        if (b) tc_loader_release(l, b);
    }
    printf("refused: %s\n", tc_last_error());
    assert_int_equal(s, TC_ERR_DATA);
    assert_non_null(strstr(tc_last_error(), "shard-000001.safetensors row 5 holds another sample"));
    tc_loader_destroy(l);
    tc_teacher_cache_close(c);
}

/* a row stored as unusable: the loader counts it bad and fills its place */
static void test_unusable_row(void **state) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/cache-unusable", tmp);
    cache_opts o = base;
    o.bad_row = 7;
    write_cache(dir, wds_spec, "wds", &o);
    tc_teacher_cache *c;
    assert_int_equal(tc_teacher_cache_open(dir, &c), TC_OK);
    tc_loader *l = loader(wds_spec, "wds", c, 0, NULL);
    int seen7 = 0;
    for (int i = 0; i < 8; i++) { /* epoch 0: 8 batches, the last from a second pass */
        tc_batch *b;
        assert_int_equal(tc_loader_next(l, &b), TC_OK);
        for (int r = 0; r < b->n; r++)
            seen7 |= b->labels[r] == 7;
        tc_loader_release(l, b);
    }
    int64_t seen, bad;
    tc_loader_stats(l, &seen, &bad, NULL);
    printf("a row without features: %lld of %lld samples counted bad, never in a batch\n",
           (long long)bad, (long long)seen);
    assert_false(seen7);
    assert_true(bad >= 1);
    tc_loader_destroy(l);
    tc_teacher_cache_close(c);
}

static int setup(void **state) {
    (void)state;
    if (tc_tokenizer_create(&tok, NULL) != TC_OK)
        tc_skip_test("no tokenizer vocabulary: %s", tc_last_error());
    tmp = tc_make_tempdir("tcache");
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/shards", tmp);
    write_shards(dir, 0);
    snprintf(wds_spec, sizeof wds_spec, "%s/{000000..000002}.tar", dir);
    snprintf(folder_dir, sizeof folder_dir, "%s/folder", tmp);
    assert_int_equal(mkdir(folder_dir, 0777), 0);
    write_folder();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_tokenizer_destroy(tok);
    tc_rmtree(tmp);
    free(tmp);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_wds),
        cmocka_unit_test(test_replay_wds_bf16),
        cmocka_unit_test(test_replay_folder_fp16),
        cmocka_unit_test(test_dtypes_round),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_refuse_no_manifest),
        cmocka_unit_test(test_refuse_missing_shard),
        cmocka_unit_test(test_refuse_truncated_shard),
        cmocka_unit_test(test_refuse_corrupt_shard),
        cmocka_unit_test(test_refuse_other_build_shard),
        cmocka_unit_test(test_refuse_teacher),
        cmocka_unit_test(test_refuse_data),
        cmocka_unit_test(test_refuse_transform),
        cmocka_unit_test(test_refuse_image_size),
        cmocka_unit_test(test_refuse_augmentations),
        cmocka_unit_test(test_refuse_dtype),
        cmocka_unit_test(test_refuse_changed_sample),
        cmocka_unit_test(test_unusable_row),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
