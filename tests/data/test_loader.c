/* the loader: batches identical whatever the number of worker threads,
 * resume from a saved cursor (mid-epoch, at an epoch boundary) gives the
 * batches an uninterrupted run gives, ranks take their slices of the
 * one-process global batches (tests/data/test_loader_order.c goes further),
 * epochs are counted as documented in loader.h, eval keeps the partial last
 * batch, bf16 matches fp32, and the allocator hook is used.
 * samples carry their identity in the label (.cls), so the checks can see
 * which sample went where. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_decode.h"
#include "loader.h"
#include "shard_writer.h"
#include "testutil.h"

static tc_tokenizer *tok;
static char *tmp;
static char spec[2048]; /* 4 shards, 50 samples each, sizes.json */

static void make_shards(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/shards", tmp);
    tc_shard_writer *w;
    assert_int_equal(tc_shard_writer_create(dir, 50, &w), TC_OK);
    uint64_t rs = 1;
    for (int i = 0; i < 200; i++) {
        /* small photos of different sizes, so the crops and resizes vary */
        int W = 20 + (int)(tc_test_rand(&rs) % 30), H = 20 + (int)(tc_test_rand(&rs) % 30);
        uint8_t *px = malloc((size_t)W * H * 3);
        for (int k = 0; k < W * H * 3; k++)
            px[k] = (uint8_t)(tc_test_rand(&rs) >> 13);
        uint8_t *png;
        size_t len;
        assert_int_equal(tc_png_encode(px, W, H, 3, &png, &len), TC_OK);
        char key[32], cap[64];
        snprintf(key, sizeof key, "%06d", i);
        int cl = snprintf(cap, sizeof cap, "picture number %d of a thing", i);
        assert_int_equal(tc_shard_writer_add(w, key, "png", png, len, cap, (size_t)cl, i, NULL),
                         TC_OK);
        free(png);
        free(px);
    }
    assert_int_equal(tc_shard_writer_close(w, NULL, NULL), TC_OK);
    tc_shard_writer_destroy(w);
    snprintf(spec, sizeof spec, "%s/{000000..000003}.tar", dir);
}

static int setup(void **state) {
    (void)state;
    if (tc_tokenizer_create(&tok, NULL) != TC_OK)
        tc_skip_test("no tokenizer vocabulary: %s", tc_last_error());
    tmp = tc_make_tempdir("loader");
    make_shards();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_tokenizer_destroy(tok);
    tc_rmtree(tmp);
    free(tmp);
    return 0;
}

typedef struct {
    uint64_t hash;
    int n;
    int64_t epoch, index;
    int last;
    tc_loader_cursor cursor;
    int32_t labels[64];
} rec;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static tc_loader_cfg base_cfg(const char *data, int train) {
    tc_loader_cfg c;
    tc_loader_cfg_init(&c);
    c.data = data;
    c.batch_size = 16;
    c.image_size = 24;
    c.context_length = 16;
    c.train = train;
    c.seed = 1234;
    c.shuffle_buffer = 40;
    c.shuffle_initial = 10;
    c.epochs = 2;
    c.tokenizer = tok;
    c.quiet = 1;
    return c;
}

/* runs a loader to its end (or max batches), recording each batch */
static int run(const tc_loader_cfg *c, const tc_loader_cursor *resume, rec *out, int max) {
    tc_loader *l;
    tc_status st = tc_loader_create(c, resume, &l);
    if (st != TC_OK) fail_msg("loader: %s", tc_last_error());
    int n = 0;
    size_t px = 3 * (size_t)c->image_size * c->image_size;
    for (;;) {
        tc_batch *b;
        st = tc_loader_next(l, &b);
        if (st != TC_OK) fail_msg("loader next: %s", tc_last_error());
        if (!b) break;
        if (n < max) {
            rec *r = &out[n];
            uint64_t h = 1469598103934665603ull;
            if (b->images)
                h = fnv(h, b->images, px * (size_t)b->n * sizeof(float));
            else
                h = fnv(h, b->images_bf16, px * (size_t)b->n * 2);
            h = fnv(h, b->tokens, (size_t)b->n * c->context_length * sizeof(int32_t));
            h = fnv(h, b->labels, (size_t)b->n * sizeof(int32_t));
            r->hash = h;
            r->n = b->n;
            r->epoch = b->epoch;
            r->index = b->index;
            r->last = b->last_in_epoch;
            r->cursor = b->cursor;
            for (int i = 0; i < b->n && i < 64; i++)
                r->labels[i] = b->labels[i];
        }
        n++;
        tc_loader_release(l, b);
    }
    tc_loader_destroy(l);
    return n;
}

static void same_batches(const rec *a, const rec *b, int n) {
    for (int i = 0; i < n; i++) {
        if (a[i].hash != b[i].hash || a[i].n != b[i].n || a[i].epoch != b[i].epoch ||
            a[i].index != b[i].index)
            fail_msg("batch %d differs (epoch %lld index %lld vs epoch %lld index %lld)", i,
                     (long long)a[i].epoch, (long long)a[i].index, (long long)b[i].epoch,
                     (long long)b[i].index);
    }
}

static void test_threads_deterministic(void **state) {
    (void)state;
    rec a[64], b[64], d[64];
    tc_loader_cfg c = base_cfg(spec, 1);
    c.workers = 1;
    int na = run(&c, NULL, a, 64);
    c.workers = 4;
    c.prefetch = 3;
    int nb = run(&c, NULL, b, 64);
    assert_int_equal(na, nb);
    same_batches(a, b, na);
    /* 200 samples, B=16, one rank: ceil(200/16) = 13 batches per epoch */
    assert_int_equal(na, 26);
    assert_int_equal(a[12].epoch, 0);
    assert_true(a[12].last);
    assert_int_equal(a[13].epoch, 1);
    assert_int_equal(a[13].index, 0);
    /* shuffled: epoch 0 and 1 differ, and the order is not the shard order */
    assert_true(a[0].hash != a[13].hash);
    int in_order = 1;
    for (int i = 0; i < 16; i++)
        if (a[0].labels[i] != i) in_order = 0;
    assert_false(in_order);
    /* another seed, other batches */
    c.seed = 99;
    run(&c, NULL, d, 64);
    assert_true(d[0].hash != a[0].hash);
    /* indexable source too (Fashion-MNIST test split, 28x28) */
    if (tc_file_exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")) {
        rec *x = calloc(700, sizeof(rec)), *y = calloc(700, sizeof(rec));
        tc_loader_cfg f = base_cfg("fmnist:test", 1);
        f.image_size = 28;
        f.batch_size = 32;
        f.epochs = 1;
        f.workers = 1;
        int nx = run(&f, NULL, x, 700);
        f.workers = 3;
        int ny = run(&f, NULL, y, 700);
        assert_int_equal(nx, 312); /* floor(10000 / 32), drop_last */
        assert_int_equal(ny, nx);
        same_batches(x, y, nx);
        free(x);
        free(y);
    }
}

static void test_resume(void **state) {
    (void)state;
    rec full[64], part[64];
    tc_loader_cfg c = base_cfg(spec, 1);
    c.workers = 3;
    int n = run(&c, NULL, full, 64);
    assert_int_equal(n, 26);
    /* resume after batch k: mid-epoch, the last batch of epoch 0, early in epoch 1 */
    int cuts[] = {0, 4, 11, 12, 13, 20, 24};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        int k = cuts[i];
        /* the cursor travels as plain int64 values, as in the train state */
        int64_t v[TC_LOADER_CURSOR_INTS];
        tc_loader_cursor cur;
        tc_loader_cursor_pack(&full[k].cursor, v);
        tc_loader_cursor_unpack(v, TC_LOADER_CURSOR_INTS, &cur);
        int m = run(&c, &cur, part, 64);
        if (m != n - k - 1)
            fail_msg("resume after batch %d: %d batches, expected %d", k, m, n - k - 1);
        same_batches(full + k + 1, part, m);
    }
    /* indexable source, resume mid-epoch */
    if (tc_file_exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")) {
        rec *x = calloc(700, sizeof(rec)), *y = calloc(700, sizeof(rec));
        tc_loader_cfg f = base_cfg("fmnist:test", 1);
        f.image_size = 28;
        f.batch_size = 64;
        f.epochs = 2;
        int nx = run(&f, NULL, x, 700);
        assert_int_equal(nx, 2 * 156);
        int m = run(&f, &x[100].cursor, y, 700);
        assert_int_equal(m, nx - 101);
        same_batches(x + 101, y, m);
        free(x);
        free(y);
    }
}

static void test_rank_split(void **state) {
    (void)state;
    /* webdataset, 2 ranks, one epoch: rank r's batch k is rows [r*B, (r+1)*B)
     * of the one-process global batch k (B*W samples); disjoint, complete */
    rec r0[64], r1[64], one[64];
    tc_loader_cfg c = base_cfg(spec, 1);
    c.world_size = 2;
    c.epochs = 1;
    c.batch_size = 10;
    c.rank = 0;
    int n0 = run(&c, NULL, r0, 64);
    c.rank = 1;
    int n1 = run(&c, NULL, r1, 64);
    c.world_size = 1;
    c.rank = 0;
    c.batch_size = 20;
    int n = run(&c, NULL, one, 64);
    /* ceil(200 / (10 * 2)) = 10 global batches */
    assert_int_equal(n0, 10);
    assert_int_equal(n1, 10);
    assert_int_equal(n, 10);
    int count[200] = {0};
    for (int i = 0; i < n0; i++)
        for (int k = 0; k < 10; k++) {
            assert_int_equal(r0[i].labels[k], one[i].labels[k]);
            assert_int_equal(r1[i].labels[k], one[i].labels[10 + k]);
            count[r0[i].labels[k]]++;
            count[r1[i].labels[k]] += 100;
        }
    for (int s = 0; s < 200; s++)
        if (count[s] != 1 && count[s] != 100)
            fail_msg("sample %d seen %d times (x100 = rank 1)", s, count[s]);
    /* indexable eval: rank r takes r, r+W, ...; every sample exactly once */
    if (tc_file_exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")) {
        rec *x = calloc(200, sizeof(rec));
        tc_loader_cfg f = base_cfg("fmnist:test", 0);
        f.image_size = 28;
        f.batch_size = 64;
        f.world_size = 3;
        f.rank = 1;
        f.epochs = 1;
        int nx = run(&f, NULL, x, 200);
        /* 3333 samples: 52 full batches and one of 5 (eval keeps it) */
        assert_int_equal(nx, 53);
        assert_int_equal(x[52].n, 5);
        assert_true(x[52].last);
        /* labels follow the file order 1, 4, 7, ... */
        tc_source *s;
        assert_int_equal(tc_source_open("fmnist:test", NULL, &s), TC_OK);
        for (int k = 0; k < 64; k++) {
            tc_sample m;
            assert_int_equal(s->get(s, 1 + 3 * k, &m), TC_OK);
            assert_int_equal(x[0].labels[k], m.label);
            tc_sample_clear(&m);
        }
        tc_source_destroy(s);
        free(x);
    }
}

static void test_eval_partial_and_order(void **state) {
    (void)state;
    rec r[64];
    tc_loader_cfg c = base_cfg(spec, 0);
    c.epochs = 1;
    c.batch_size = 16;
    int n = run(&c, NULL, r, 64);
    /* eval: one pass in shard order, 12 full batches + one of 8 */
    assert_int_equal(n, 13);
    assert_int_equal(r[12].n, 8);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < r[i].n; k++)
            assert_int_equal(r[i].labels[k], 16 * i + k);
}

/* two loaders' threads call these at once: atomic counts */
static int allocs, frees;
static void *count_alloc(size_t n, void *ctx) {
    (void)ctx;
    __atomic_fetch_add(&allocs, 1, __ATOMIC_RELAXED);
    return malloc(n);
}
static void count_free(void *p, void *ctx) {
    (void)ctx;
    __atomic_fetch_add(&frees, 1, __ATOMIC_RELAXED);
    free(p);
}

static void test_bf16_and_allocator(void **state) {
    (void)state;
    tc_loader_cfg c = base_cfg(spec, 0);
    c.epochs = 1;
    c.allocator.alloc = count_alloc;
    c.allocator.free = count_free;
    tc_loader *l32, *l16;
    assert_int_equal(tc_loader_create(&c, NULL, &l32), TC_OK);
    c.bf16 = 1;
    assert_int_equal(tc_loader_create(&c, NULL, &l16), TC_OK);
    tc_batch *a, *b;
    assert_int_equal(tc_loader_next(l32, &a), TC_OK);
    assert_int_equal(tc_loader_next(l16, &b), TC_OK);
    assert_non_null(a->images);
    assert_null(a->images_bf16);
    assert_non_null(b->images_bf16);
    size_t n = (size_t)a->n * 3 * 24 * 24;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(b->images_bf16[i], tc_f32_to_bf16(a->images[i]));
    assert_memory_equal(a->tokens, b->tokens, (size_t)a->n * 16 * sizeof(int32_t));
    /* normalised values stay in the range of (0..1 - mean) / std */
    for (size_t i = 0; i < n; i++)
        assert_true(a->images[i] > -1.85f && a->images[i] < 2.15f);
    /* token rows: SOT first, EOT present, zero padding */
    assert_int_equal(a->tokens[0], TC_SOT);
    tc_loader_release(l32, a);
    tc_loader_release(l16, b);
    tc_loader_destroy(l32);
    tc_loader_destroy(l16);
    assert_true(allocs > 0);
    assert_int_equal(allocs, frees);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_rank_split),
        cmocka_unit_test(test_eval_partial_and_order),
        cmocka_unit_test(test_bf16_and_allocator),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
