/* hostile and broken data through the whole loader: corrupt and truncated
 * JPEG/PNG, samples without caption or image, non-UTF-8 captions, a truncated
 * tar, a file that is not a tar, a missing shard, an empty dataset, csv rows
 * with bad paths, the error-rate bound, and files that are not regular (a
 * FIFO, a directory) or are decompression bombs. bad samples are skipped, counted
 * and named in the log; bad shards are named; nothing crashes. every bad
 * file is built in a temporary directory here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_decode.h"
#include "loader.h"
#include "shard_writer.h"
#include "testutil.h"

static tc_tokenizer *tok;
static char *tmp;

typedef struct {
    uint8_t *d;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void tar_member(buf *b, const char *name, const void *data, size_t len) {
    uint8_t h[512];
    memset(h, 0, sizeof h);
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)len);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    put(b, h, 512);
    if (len) put(b, data, len);
    uint8_t zero[512] = {0};
    if (len % 512) put(b, zero, 512 - len % 512);
}

static void tar_end(buf *b) {
    uint8_t zero[1024] = {0};
    put(b, zero, sizeof zero);
}

static void make_png(int seed, uint8_t **png, size_t *len) {
    uint8_t px[16 * 12 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * (size_t)seed + 7);
    assert_int_equal(tc_png_encode(px, 16, 12, 3, png, len), TC_OK);
}

static void make_jpg(uint8_t **jpg, size_t *len) {
    static uint8_t px[64 * 48 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 13);
    tc_image img = {64, 48, px};
    tc_image_decoder *d;
    assert_int_equal(tc_image_decoder_create(&d), TC_OK);
    assert_int_equal(tc_jpeg_encode(d, &img, 90, jpg, len), TC_OK);
    tc_image_decoder_destroy(d);
}

static char *path_in(const char *name) {
    char *p = malloc(2048);
    snprintf(p, 2048, "%s/%s", tmp, name);
    return p;
}

static int setup(void **state) {
    (void)state;
    if (tc_tokenizer_create(&tok, NULL) != TC_OK)
        tc_skip_test("no tokenizer vocabulary: %s", tc_last_error());
    tmp = tc_make_tempdir("baddata");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_tokenizer_destroy(tok);
    tc_rmtree(tmp);
    free(tmp);
    return 0;
}

static tc_loader_cfg cfg_for(const char *data, FILE *log) {
    tc_loader_cfg c;
    tc_loader_cfg_init(&c);
    c.data = data;
    c.batch_size = 4;
    c.image_size = 16;
    c.context_length = 12;
    c.epochs = 1;
    c.tokenizer = tok;
    c.log = log;
    c.max_bad_fraction = 1.0; /* count, never stop (the bound has its own test) */
    return c;
}

/* runs one epoch; returns the samples delivered, or -1 with *err set */
static int drain(const tc_loader_cfg *c, tc_status *err, int64_t *bad, int64_t *bad_shards) {
    tc_loader *l;
    *err = tc_loader_create(c, NULL, &l);
    if (*err != TC_OK) return -1;
    int samples = 0;
    for (;;) {
        tc_batch *b;
        *err = tc_loader_next(l, &b);
        if (*err != TC_OK) {
            samples = -1;
            break;
        }
        if (!b) break;
        samples += b->n;
        tc_loader_release(l, b);
    }
    tc_loader_stats(l, NULL, bad, bad_shards);
    tc_loader_destroy(l);
    return samples;
}

static char *log_text(FILE *f) {
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    return s;
}

static void test_bad_samples_in_shard(void **state) {
    (void)state;
    uint8_t *png, *jpg;
    size_t pn, jn;
    make_png(3, &png, &pn);
    make_jpg(&jpg, &jn);
    buf b = {0};
    char key[32];
    for (int i = 0; i < 10; i++) { /* good samples */
        snprintf(key, sizeof key, "good%02d.png", i);
        tar_member(&b, key, png, pn);
        snprintf(key, sizeof key, "good%02d.txt", i);
        tar_member(&b, key, "a fine caption", 14);
    }
    uint8_t junk[300];
    memset(junk, 0x5a, sizeof junk);
    junk[0] = 0xFF, junk[1] = 0xD8, junk[2] = 0xFF;
    tar_member(&b, "corruptjpg.jpg", junk, sizeof junk);
    tar_member(&b, "corruptjpg.txt", "x", 1);
    tar_member(&b, "truncjpg.jpg", jpg, jn / 2);
    tar_member(&b, "truncjpg.txt", "x", 1);
    tar_member(&b, "truncpng.png", png, pn - 20);
    tar_member(&b, "truncpng.txt", "x", 1);
    tar_member(&b, "nocaption.jpg", jpg, jn);
    tar_member(&b, "nocaption.json", "{}", 2);
    tar_member(&b, "noimage.txt", "only words", 10);
    tar_member(&b, "badutf8.png", png, pn);
    tar_member(&b, "badutf8.txt", "caf\xE9 latin-1", 12);
    tar_member(&b, "goodjpg.jpg", jpg, jn);
    tar_member(&b, "goodjpg.txt", "a jpeg", 6);
    tar_end(&b);
    char *shard = path_in("bad-000.tar");
    assert_int_equal(tc_write_file(shard, b.d, b.n), 0);
    FILE *log = tmpfile();
    tc_loader_cfg c = cfg_for(shard, log);
    tc_status err;
    int64_t bad = 0, bad_shards = 0;
    int got = drain(&c, &err, &bad, &bad_shards);
    if (err != TC_OK) fail_msg("%s", tc_last_error());
    char *text = log_text(log);
    printf("%s", text);
    assert_int_equal(got, 11);
    assert_int_equal(bad, 6);
    assert_int_equal(bad_shards, 0);
    const char *expect[] = {
        "sample corruptjpg: ",      "sample truncjpg: ",
        "sample truncpng: ",        "sample nocaption: no caption",
        "sample noimage: no image", "sample badutf8: caption is not valid UTF-8"};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        if (!strstr(text, expect[i])) fail_msg("log lacks '%s'", expect[i]);
    }
    assert_non_null(strstr(text, "bad-000.tar: sample truncjpg"));
    free(text);
    fclose(log);
    free(shard);
    free(b.d);
    free(png);
    free(jpg);
}

static void write_good_shards(const char *dir, int n, int per) {
    tc_shard_writer *w;
    assert_int_equal(tc_shard_writer_create(dir, per, &w), TC_OK);
    uint8_t *png;
    size_t pn;
    make_png(5, &png, &pn);
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%04d", i);
        assert_int_equal(tc_shard_writer_add(w, key, "png", png, pn, "caption", 7, i, NULL), TC_OK);
    }
    assert_int_equal(tc_shard_writer_close(w, NULL, NULL), TC_OK);
    tc_shard_writer_destroy(w);
    free(png);
}

static void test_bad_shards(void **state) {
    (void)state;
    char *dir = path_in("shards");
    write_good_shards(dir, 40, 20); /* 000000.tar, 000001.tar */
    char p[2400], spec[8000];
    /* truncate the second shard in the middle of a member */
    snprintf(p, sizeof p, "%s/000001.tar", dir);
    size_t n;
    char *whole = tc_read_file(p, &n);
    assert_non_null(whole);
    assert_int_equal(tc_write_file(p, whole, n * 6 / 10 + 100), 0);
    free(whole);
    /* a file that is not a tar at all */
    snprintf(p, sizeof p, "%s/000002.tar", dir);
    assert_int_equal(tc_write_file(p, "this is not a tar archive, just text\n", 37), 0);
    /* and one that does not exist */
    snprintf(spec, sizeof spec, "%s/{000000..000003}.tar", dir);
    FILE *log = tmpfile();
    tc_loader_cfg c = cfg_for(spec, log);
    tc_status err;
    int64_t bad = 0, bad_shards = 0;
    int got = drain(&c, &err, &bad, &bad_shards);
    if (err != TC_OK) fail_msg("%s", tc_last_error());
    char *text = log_text(log);
    printf("%s", text);
    /* the first shard whole, the samples of the truncated one before the cut */
    assert_true(got >= 28 && got < 40);
    assert_int_equal(bad_shards, 3);
    assert_non_null(strstr(text, "000001.tar"));
    assert_non_null(strstr(text, "000002.tar"));
    assert_non_null(strstr(text, "000003.tar"));
    free(text);
    fclose(log);
    /* nothing usable at all: a clear error, not a hang */
    snprintf(spec, sizeof spec, "%s/{000002..000005}.tar", dir);
    log = tmpfile();
    c = cfg_for(spec, log);
    got = drain(&c, &err, &bad, &bad_shards);
    assert_int_equal(got, -1);
    assert_int_equal(err, TC_ERR_DATA);
    assert_non_null(strstr(tc_last_error(), "no usable samples"));
    fclose(log);
    /* an empty tar, in train mode with a size (the stream must not spin) */
    buf b = {0};
    tar_end(&b);
    char *empty = path_in("empty.tar");
    assert_int_equal(tc_write_file(empty, b.d, b.n), 0);
    log = tmpfile();
    c = cfg_for(empty, log);
    c.train = 1;
    c.source.num_samples = 100;
    got = drain(&c, &err, &bad, &bad_shards);
    assert_int_equal(err, TC_ERR_DATA);
    fclose(log);
    free(empty);
    free(b.d);
    free(dir);
}

static void test_csv_bad_rows_and_bound(void **state) {
    (void)state;
    uint8_t *png;
    size_t pn;
    make_png(9, &png, &pn);
    char *img = path_in("one.png");
    assert_int_equal(tc_write_file(img, png, pn), 0);
    free(png);
    /* 150 rows, every 5th names a missing file: 20% bad */
    size_t cap = 64 * 1024, len = 0;
    char *csv = malloc(cap);
    len += (size_t)snprintf(csv + len, cap - len, "filepath\ttitle\n");
    for (int i = 0; i < 150; i++) {
        if (i % 5 == 3)
            len += (size_t)snprintf(csv + len, cap - len, "missing/%d.png\trow %d\n", i, i);
        else
            len += (size_t)snprintf(csv + len, cap - len, "one.png\trow %d\n", i);
    }
    char *path = path_in("rows.tsv");
    assert_int_equal(tc_write_file(path, csv, len), 0);
    FILE *log = tmpfile();
    tc_loader_cfg c = cfg_for(path, log);
    tc_status err;
    int64_t bad = 0, bad_shards = 0;
    int got = drain(&c, &err, &bad, &bad_shards);
    if (err != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(got, 120);
    assert_int_equal(bad, 30);
    char *text = log_text(log);
    assert_non_null(
        strstr(text, "rows.tsv: sample row 4 (missing/3.png): image file cannot be opened"));
    free(text);
    fclose(log);
    /* the default bound (5% after 100 samples) stops the run */
    log = tmpfile();
    c = cfg_for(path, log);
    c.max_bad_fraction = 0.05;
    c.min_samples = 100;
    got = drain(&c, &err, &bad, &bad_shards);
    assert_int_equal(got, -1);
    assert_int_equal(err, TC_ERR_DATA);
    printf("bound: %s\n", tc_last_error());
    assert_non_null(strstr(tc_last_error(), "samples were bad"));
    assert_non_null(strstr(tc_last_error(), "missing/"));
    fclose(log);
    /* a csv with a header and no rows */
    char *empty = path_in("empty.csv");
    assert_int_equal(tc_write_file(empty, "filepath\ttitle\n", 15), 0);
    c = cfg_for(empty, NULL);
    got = drain(&c, &err, &bad, &bad_shards);
    assert_int_equal(err, TC_ERR_DATA);
    free(empty);
    free(csv);
    free(path);
    free(img);
}

/* a FIFO, a directory and a decompression bomb among the images of a csv,
 * and a FIFO among the shards: each is skipped and named with what it is,
 * nothing waits on the FIFOs (an alarm fails the test instead of a hang) */
static void test_special_files(void **state) {
    (void)state;
    alarm(120);
    uint8_t *png;
    size_t pn;
    make_png(3, &png, &pn);
    char *good = path_in("good.png"), *fifo = path_in("fifo.png"), *dir = path_in("dir.png");
    assert_int_equal(tc_write_file(good, png, pn), 0);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(mkdir(dir, 0700), 0);
    /* 16x12 = 192 pixels: over a limit of 150 set through the loader */
    char *csv = path_in("special.tsv");
    const char *rows = "filepath\ttitle\ngood.png\ta\nfifo.png\tb\ngood.png\tc\ndir.png\td\n"
                       "good.png\te\ngood.png\tf\ngood.png\tg\ngood.png\th\n";
    assert_int_equal(tc_write_file(csv, rows, strlen(rows)), 0);
    FILE *log = tmpfile();
    tc_loader_cfg c = cfg_for(csv, log);
    c.batch_size = 2;
    tc_status err;
    int64_t bad = 0, bad_shards = 0;
    int got = drain(&c, &err, &bad, &bad_shards);
    if (err != TC_OK) fail_msg("%s", tc_last_error());
    char *text = log_text(log);
    printf("%s", text);
    assert_int_equal(bad, 2);
    assert_non_null(strstr(text, "special.tsv: sample row 2 (fifo.png): image file is not a "
                                 "regular file (a FIFO)"));
    assert_non_null(strstr(text, "special.tsv: sample row 4 (dir.png): image file is a directory"));
    assert_null(strstr(text, "9223372036854775807"));
    assert_true(got >= 4);
    free(text);
    fclose(log);
    /* the same rows under a pixel limit of 150: every image is named as over it */
    log = tmpfile();
    c = cfg_for(csv, log);
    c.batch_size = 2;
    c.max_image_pixels = 150;
    got = drain(&c, &err, &bad, &bad_shards);
    assert_int_equal(err, TC_ERR_DATA); /* no usable sample left */
    text = log_text(log);
    assert_non_null(strstr(text, "sample row 1 (good.png): image of 16x12 = 192 pixels is over "
                                 "the limit of 150"));
    free(text);
    fclose(log);
    /* the command line of the report: tinyclip shards from that csv */
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "shards --from csv '%s' --out '%s/special-shards'", csv, tmp);
    int rc = tc_run_cli(cmd, &out);
    printf("shards: exit %d\n%s", rc, out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "fifo.png): image file is not a regular file (a FIFO)"));
    assert_non_null(strstr(out, "dir.png): image file is a directory"));
    assert_non_null(strstr(out, "wrote 6 samples"));
    free(out);
    /* a FIFO where a shard should be */
    char *sdir = path_in("fifo-shards");
    write_good_shards(sdir, 20, 10);
    char p[2400], spec[2600];
    snprintf(p, sizeof p, "%s/000002.tar", sdir);
    assert_int_equal(mkfifo(p, 0600), 0);
    snprintf(spec, sizeof spec, "%s/{000000..000002}.tar", sdir);
    log = tmpfile();
    c = cfg_for(spec, log);
    got = drain(&c, &err, &bad, &bad_shards);
    if (err != TC_OK) fail_msg("%s", tc_last_error());
    text = log_text(log);
    printf("%s", text);
    assert_int_equal(got, 20);
    assert_int_equal(bad_shards, 1);
    assert_non_null(strstr(text, "000002.tar: is not a regular file (a FIFO)"));
    free(text);
    fclose(log);
    alarm(0);
    free(sdir);
    free(csv);
    free(good);
    free(fifo);
    free(dir);
    free(png);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_samples_in_shard),
        cmocka_unit_test(test_bad_shards),
        cmocka_unit_test(test_csv_bad_rows_and_bound),
        cmocka_unit_test(test_special_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
