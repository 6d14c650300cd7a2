/* the loader's orders across processes (loader.h):
 *   - training order does not depend on the number of processes: for W = 1,
 *     2, 4 with the same global batch G = 16, rank r's batch k is rows
 *     [r*G/W, (r+1)*G/W) of the one-process batch k, byte for byte (images,
 *     tokens, labels), on webdataset shards with unusable samples among them
 *     (replaced W-independently) and on an indexable source;
 *   - a run of unusable samples longer than a rank's reach still gives
 *     full batches of usable samples;
 *   - a cursor saved by one number of processes resumes on another and
 *     continues the same global batches (2 -> 1, 1 -> 4);
 *   - resampled order: two ranks draw different shard sequences, the same
 *     seed gives the same sequence, a kill and resume continues it exactly
 *     (bit-identical batches), and a cursor rebased for another number of
 *     processes starts new draws;
 *   - upsampling factors 1:3 over two sources give per-source sample counts
 *     within 5% of 1:3 over 10,000 samples.
 * samples carry their identity in the label (.cls). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_decode.h"
#include "loader.h"
#include "shard_writer.h"
#include "testutil.h"

enum { MAXB = 64, MAXROWS = 16 };

static tc_tokenizer *tok;
static char *tmp;
static char spec_bad[2048];  /* 6 shards of 40, every 9th image unusable */
static char spec_two[4096];  /* source A (labels 0..199) :: source B (1000..1199) */
static char spec_ones[4096]; /* the same, one sample per shard */
static char spec_run[2048];  /* 240 samples, 60..159 unusable */

/* n samples labelled id0.., per_shard each; every `bad_every`-th image (0:
 * none), or with bad_every < 0 the images -bad_every .. -bad_every + 99, are
 * bytes that do not decode */
static void write_shards(const char *dir, int n, int per_shard, int id0, int bad_every) {
    tc_shard_writer *w;
    assert_int_equal(tc_shard_writer_create(dir, per_shard, &w), TC_OK);
    uint64_t rs = (uint64_t)id0 + 7;
    for (int i = 0; i < n; i++) {
        int W = 12 + (int)(tc_test_rand(&rs) % 12), H = 12 + (int)(tc_test_rand(&rs) % 12);
        uint8_t *px = malloc((size_t)W * H * 3);
        for (int k = 0; k < W * H * 3; k++)
            px[k] = (uint8_t)(tc_test_rand(&rs) >> 13);
        uint8_t *png;
        size_t len;
        assert_int_equal(tc_png_encode(px, W, H, 3, &png, &len), TC_OK);
        int bad = bad_every > 0 ? i % bad_every == 4
                                : bad_every < 0 && i >= -bad_every && i < -bad_every + 100;
        if (bad) memset(png + 8, 0x5A, len - 8); /* header and data broken */
        char key[32], cap[64];
        snprintf(key, sizeof key, "%06d", i);
        int cl = snprintf(cap, sizeof cap, "sample %d", id0 + i);
        assert_int_equal(
            tc_shard_writer_add(w, key, "png", png, len, cap, (size_t)cl, id0 + i, NULL), TC_OK);
        free(png);
        free(px);
    }
    assert_int_equal(tc_shard_writer_close(w, NULL, NULL), TC_OK);
    tc_shard_writer_destroy(w);
}

static int setup(void **state) {
    (void)state;
    if (tc_tokenizer_create(&tok, NULL) != TC_OK)
        tc_skip_test("no tokenizer vocabulary: %s", tc_last_error());
    tmp = tc_make_tempdir("order");
    char d[1024], a[1024], b[1024];
    snprintf(d, sizeof d, "%s/bad", tmp);
    write_shards(d, 240, 40, 0, 9);
    snprintf(spec_bad, sizeof spec_bad, "%s/{000000..000005}.tar", d);
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    write_shards(a, 200, 50, 0, 0);
    write_shards(b, 200, 50, 1000, 0);
    snprintf(spec_two, sizeof spec_two, "%s/{000000..000003}.tar::%s/{000000..000003}.tar", a, b);
    snprintf(d, sizeof d, "%s/run", tmp);
    write_shards(d, 240, 40, 0, -60);
    snprintf(spec_run, sizeof spec_run, "%s/{000000..000005}.tar", d);
    snprintf(a, sizeof a, "%s/a1", tmp);
    snprintf(b, sizeof b, "%s/b1", tmp);
    write_shards(a, 200, 1, 0, 0);
    write_shards(b, 200, 1, 1000, 0);
    snprintf(spec_ones, sizeof spec_ones, "%s/{000000..000199}.tar::%s/{000000..000199}.tar", a, b);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_tokenizer_destroy(tok);
    tc_rmtree(tmp);
    free(tmp);
    return 0;
}

/* one batch as delivered: rows of pixels, tokens, labels, and the cursor */
typedef struct {
    int n;
    float *img;
    int32_t tok[MAXROWS * 16];
    int32_t labels[MAXROWS];
    tc_loader_cursor cursor;
} rec;

static tc_loader_cfg base_cfg(const char *data) {
    tc_loader_cfg c;
    tc_loader_cfg_init(&c);
    c.data = data;
    c.image_size = 16;
    c.context_length = 16;
    c.train = 1;
    c.seed = 77;
    c.shuffle_buffer = 30;
    c.shuffle_initial = 10;
    c.epochs = 2;
    c.workers = 2;
    c.tokenizer = tok;
    c.quiet = 1;
    c.max_bad_fraction = 0.5;
    return c;
}

static int run(const tc_loader_cfg *c, const tc_loader_cursor *resume, rec *out, int max) {
    tc_loader *l;
    if (tc_loader_create(c, resume, &l) != TC_OK) fail_msg("loader: %s", tc_last_error());
    size_t px = 3 * (size_t)c->image_size * c->image_size;
    int n = 0;
    for (;;) {
        tc_batch *b;
        if (tc_loader_next(l, &b) != TC_OK) fail_msg("loader next: %s", tc_last_error());
        if (!b || n >= max) {
            if (b) tc_loader_release(l, b);
            break;
        }
        rec *r = &out[n++];
        r->n = b->n;
        r->img = malloc(px * (size_t)b->n * sizeof(float));
        memcpy(r->img, b->images, px * (size_t)b->n * sizeof(float));
        memcpy(r->tok, b->tokens, sizeof(int32_t) * (size_t)b->n * c->context_length);
        memcpy(r->labels, b->labels, sizeof(int32_t) * (size_t)b->n);
        r->cursor = b->cursor;
        tc_loader_release(l, b);
    }
    tc_loader_destroy(l);
    return n;
}

static void free_recs(rec *r, int n) {
    for (int i = 0; i < n; i++)
        free(r[i].img);
}

/* rank `rank` of W's batches equal rows [rank*B, (rank+1)*B) of the
 * one-process batches, byte for byte */
static void same_slices(const rec *one, int n1, const rec *part, int np, int rank, int B,
                        const tc_loader_cfg *c, const char *what) {
    size_t px = 3 * (size_t)c->image_size * c->image_size, T = (size_t)c->context_length;
    if (np != n1) fail_msg("%s: %d batches, one process %d", what, np, n1);
    for (int k = 0; k < n1; k++) {
        if (part[k].n != B) fail_msg("%s: batch %d has %d rows", what, k, part[k].n);
        if (memcmp(part[k].labels, one[k].labels + rank * B, sizeof(int32_t) * (size_t)B) ||
            memcmp(part[k].tok, one[k].tok + (size_t)rank * B * T, sizeof(int32_t) * B * T) ||
            memcmp(part[k].img, one[k].img + (size_t)rank * B * px, sizeof(float) * B * px))
            fail_msg("%s: rank %d batch %d differs from the one-process rows %d..%d", what, rank, k,
                     rank * B, rank * B + B - 1);
    }
}

static void world_independent(const char *data, int image_size, const char *what) {
    enum { G = 16 };
    static rec one[MAXB], part[MAXB];
    tc_loader_cfg c = base_cfg(data);
    c.image_size = image_size;
    c.batch_size = G;
    int n1 = run(&c, NULL, one, MAXB);
    assert_true(n1 >= 4);
    int worlds[] = {2, 4};
    for (int wi = 0; wi < 2; wi++) {
        int W = worlds[wi];
        for (int r = 0; r < W; r++) {
            tc_loader_cfg p = c;
            p.world_size = W;
            p.rank = r;
            p.batch_size = G / W;
            p.workers = 1 + r % 3;
            int np = run(&p, NULL, part, MAXB);
            char w[200];
            snprintf(w, sizeof w, "%s, %d processes", what, W);
            same_slices(one, n1, part, np, r, G / W, &c, w);
            free_recs(part, np);
        }
        printf("%s: %d batches of 16, identical slices on %d processes\n", what, n1, W);
    }
    free_recs(one, n1);
}

static void test_world_size_independent(void **state) {
    (void)state;
    /* 240 samples, 27 unusable: replaced by their neighbours, the same for any W */
    world_independent(spec_bad, 16, "webdataset with unusable samples");
    if (tc_file_exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")) {
        /* 10000 samples: 625 batches per epoch; the first 64 are compared */
        world_independent("fmnist:test", 28, "Fashion-MNIST");
    }
}

/* 100 unusable samples in a row, more than the reach of a rank's window:
 * every batch still full of usable samples, the rank's last usable sample
 * repeated (and said); whatever the number of processes */
static void test_long_unusable_run(void **state) {
    (void)state;
    static rec out[MAXB];
    for (int W = 1; W <= 2; W++) {
        FILE *log = tmpfile();
        tc_loader_cfg c = base_cfg(spec_run);
        c.batch_size = 16 / W;
        c.world_size = W;
        c.shuffle_buffer = 0; /* the run stays a run */
        c.epochs = 1;
        c.max_bad_fraction = 0.9;
        c.quiet = 0;
        c.log = log;
        int n = run(&c, NULL, out, MAXB);
        assert_int_equal(n, 15); /* 240 / 16 */
        for (int k = 0; k < n; k++) {
            assert_int_equal(out[k].n, 16 / W);
            for (int i = 0; i < out[k].n; i++) /* only usable samples in the batches */
                assert_true(out[k].labels[i] < 60 || out[k].labels[i] >= 160);
        }
        fflush(log);
        rewind(log);
        static char text[1 << 18];
        size_t got = fread(text, 1, sizeof text - 1, log);
        text[got] = 0;
        fclose(log);
        printf("%d process(es): 15 full batches of usable samples\n", W);
        assert_non_null(strstr(text, "its last usable sample is repeated"));
        free_recs(out, n);
    }
}

static void test_resume_other_world(void **state) {
    (void)state;
    static rec one[MAXB], two[MAXB], cont[MAXB];
    tc_loader_cfg c = base_cfg(spec_bad);
    c.batch_size = 16;
    int n1 = run(&c, NULL, one, MAXB);
    /* 2 processes of 8 stop after batch 4; one process of 16 goes on */
    tc_loader_cfg p = c;
    p.world_size = 2;
    p.batch_size = 8;
    int n2 = run(&p, NULL, two, 5);
    assert_int_equal(n2, 5);
    int64_t v[TC_LOADER_CURSOR_INTS];
    tc_loader_cursor cur;
    tc_loader_cursor_pack(&two[4].cursor, v);
    tc_loader_cursor_unpack(v, TC_LOADER_CURSOR_INTS, &cur);
    tc_loader_cursor_rebase(&cur, 0);
    int nc = run(&c, &cur, cont, MAXB);
    assert_int_equal(nc, n1 - 5);
    same_slices(one + 5, n1 - 5, cont, nc, 0, 16, &c, "2 -> 1 processes");
    free_recs(cont, nc);
    /* and one process's cursor taken up by 4 */
    for (int r = 0; r < 4; r++) {
        tc_loader_cfg q = c;
        q.world_size = 4;
        q.rank = r;
        q.batch_size = 4;
        nc = run(&q, &one[7].cursor, cont, MAXB);
        same_slices(one + 8, n1 - 8, cont, nc, r, 4, &c, "1 -> 4 processes");
        free_recs(cont, nc);
    }
    printf("resumed across process counts: %d and %d batches continue the one-process run\n",
           n1 - 5, n1 - 8);
    free_recs(one, n1);
    free_recs(two, n2);
}

static int same_recs(const rec *a, const rec *b, int n, const tc_loader_cfg *c) {
    size_t px = 3 * (size_t)c->image_size * c->image_size;
    for (int k = 0; k < n; k++)
        if (a[k].n != b[k].n || memcmp(a[k].labels, b[k].labels, sizeof(int32_t) * a[k].n) ||
            memcmp(a[k].img, b[k].img, sizeof(float) * px * a[k].n))
            return 0;
    return 1;
}

static void test_resampled(void **state) {
    (void)state;
    static rec r0[MAXB], r1[MAXB], again[MAXB], other[MAXB], cont[MAXB];
    tc_loader_cfg c = base_cfg(spec_two);
    c.resampled = 1;
    c.batch_size = 10;
    c.world_size = 2;
    c.source.num_samples = 400;
    c.epochs = 2; /* ceil(400 / 20) = 20 batches per epoch */
    c.rank = 0;
    int n0 = run(&c, NULL, r0, MAXB);
    assert_int_equal(n0, 40);
    int na = run(&c, NULL, again, MAXB);
    assert_int_equal(na, n0);
    assert_true(same_recs(r0, again, n0, &c)); /* same seed, same sequence */
    c.rank = 1;
    int n1 = run(&c, NULL, r1, MAXB);
    assert_int_equal(n1, n0);
    int differ = 0;
    for (int k = 0; k < n0; k++)
        differ += memcmp(r0[k].labels, r1[k].labels, sizeof(int32_t) * 10) != 0;
    printf("resampled: ranks 0 and 1 differ in %d of %d batches\n", differ, n0);
    assert_true(differ >= n0 - 2);
    /* drawn with replacement: some sample comes twice within rank 0's 400 */
    int count[1200] = {0}, twice = 0;
    for (int k = 0; k < 20; k++)
        for (int i = 0; i < 10; i++)
            twice += ++count[r0[k].labels[i]] == 2;
    assert_true(twice > 0);
    /* another seed, another sequence */
    c.rank = 0;
    c.seed = 78;
    int no = run(&c, NULL, other, MAXB);
    assert_false(same_recs(r0, other, no < n0 ? no : n0, &c));
    c.seed = 77;
    /* killed after batch k, resumed from its cursor: the same batches, bit for bit */
    int cuts[] = {0, 2, 7, 19, 25};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        int k = cuts[i];
        int m = run(&c, &r0[k].cursor, cont, MAXB);
        if (m != n0 - k - 1 || !same_recs(r0 + k + 1, cont, m, &c))
            fail_msg("resampled resume after batch %d: not the uninterrupted batches", k);
        free_recs(cont, m);
    }
    printf("resampled: resumed after batches 0, 2, 7, 19, 25: bit-identical continuations\n");
    /* another number of processes: new draws from the cursor's batch on */
    tc_loader_cursor cur = r0[7].cursor;
    tc_loader_cursor_rebase(&cur, 1);
    c.world_size = 1;
    c.batch_size = 20;
    int m = run(&c, &cur, cont, MAXB);
    assert_int_equal(m, 40 - 8);
    free_recs(cont, m);
    free_recs(r0, n0);
    free_recs(r1, n1);
    free_recs(again, na);
    free_recs(other, no);
}

static void test_upsampling(void **state) {
    (void)state;
    /* two sources of 200 shards of one sample each; factors 1 and 3; 10,000
     * samples. shards are drawn (as open_clip draws them), so the counts
     * vary with the draws of whole shards: one-sample shards keep that
     * spread at about 1.7% of the smaller source's count (5% is ~3 sigma) */
    double f[2] = {1.0, 3.0};
    tc_loader_cfg c = base_cfg(spec_ones);
    c.resampled = 1;
    c.batch_size = 100;
    c.source.num_samples = 10000;
    c.source.upsampling = f;
    c.source.num_upsampling = 2;
    c.epochs = 1;
    c.image_size = 8;
    c.shuffle_buffer = 100;
    tc_loader *l;
    assert_int_equal(tc_loader_create(&c, NULL, &l), TC_OK);
    int64_t by_label[2] = {0, 0}, total = 0;
    tc_batch *b;
    while (tc_loader_next(l, &b) == TC_OK && b) {
        for (int i = 0; i < b->n; i++)
            by_label[b->labels[i] >= 1000]++;
        total += b->n;
        tc_loader_release(l, b);
    }
    int64_t parts[4] = {0};
    assert_int_equal(tc_loader_part_counts(l, parts, 4), 2);
    tc_loader_destroy(l);
    printf("upsampling 1:3 over %lld samples: %lld and %lld (%.3f : 3)\n", (long long)total,
           (long long)parts[0], (long long)parts[1], 3.0 * (double)parts[0] / (double)parts[1]);
    assert_int_equal(total, 10000);
    assert_int_equal(parts[0], by_label[0]);
    assert_int_equal(parts[1], by_label[1]);
    /* each source's count within 5% of its 1:3 share: 2500 and 7500 */
    assert_true(parts[0] > 2500 * 0.95 && parts[0] < 2500 * 1.05);
    assert_true(parts[1] > 7500 * 0.95 && parts[1] < 7500 * 1.05);
    /* factors must match the sources */
    c.source.num_upsampling = 1;
    assert_int_not_equal(tc_loader_create(&c, NULL, &l), TC_OK);
    assert_non_null(strstr(tc_last_error(), "1 upsampling factors for 2 sources"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_world_size_independent),
        cmocka_unit_test(test_long_unusable_run),
        cmocka_unit_test(test_resume_other_world),
        cmocka_unit_test(test_resampled),
        cmocka_unit_test(test_upsampling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
