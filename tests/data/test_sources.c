/* data sources: Fashion-MNIST counts and labels (checked against the idx
 * files read independently here), webdataset grouping rules, brace
 * expansion, '::'-joined sources and sizes.json, csv/tsv parsing and path
 * resolution, image folders with a class-name file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "caption_templates.h"
#include "source.h"
#include "image_decode.h"
#include "shard_writer.h"
#include "testutil.h"

#define FM_DIR "/usr/share/datasets/fashion-mnist"

/* ---- a minimal ustar writer, so the test controls member order and types ---- */

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

static void tar_member(buf *b, const char *name, char type, const void *data, size_t len) {
    uint8_t h[512];
    memset(h, 0, sizeof h);
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)len);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = (uint8_t)type;
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

static void tar_file(buf *b, const char *name, const char *text) {
    tar_member(b, name, '0', text, strlen(text));
}

/* ---- Fashion-MNIST ---- */

static uint8_t *gunzip_all(const char *path, size_t *n) {
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, len = 0;
    uint8_t *d = malloc(cap);
    int k;
    while ((k = gzread(f, d + len, (unsigned)(cap - len))) > 0) {
        len += (size_t)k;
        if (len == cap) d = realloc(d, cap *= 2);
    }
    gzclose(f);
    *n = len;
    return d;
}

static void test_fmnist(void **state) {
    (void)state;
    if (!tc_file_exists(FM_DIR "/train-labels-idx1-ubyte.gz"))
        tc_skip_test("dataset-fashion-mnist is not installed");
    tc_source *tr, *te;
    assert_int_equal(tc_source_open("fmnist", NULL, &tr), TC_OK);
    assert_int_equal(tc_source_open("fmnist:test", NULL, &te), TC_OK);
    assert_int_equal(tr->num_samples, 60000);
    assert_int_equal(te->num_samples, 10000);
    assert_true(tr->indexable);
    assert_int_equal(tr->num_classes, 10);
    assert_string_equal(tr->class_names[0], "t-shirt/top");
    assert_string_equal(tr->class_names[9], "ankle boot");
    /* labels and pixels against the files, read here without the source */
    size_t nl, ni;
    uint8_t *lab = gunzip_all(FM_DIR "/train-labels-idx1-ubyte.gz", &nl);
    uint8_t *img = gunzip_all(FM_DIR "/train-images-idx3-ubyte.gz", &ni);
    assert_non_null(lab);
    assert_non_null(img);
    assert_int_equal(nl, 8 + 60000);
    const int first[5] = {9, 0, 0, 3, 0}; /* known head of the train labels */
    for (int i = 0; i < 5; i++)
        assert_int_equal(lab[8 + i], first[i]);
    int64_t idx[] = {0, 1, 2, 3, 4, 12345, 59999};
    for (size_t k = 0; k < sizeof idx / sizeof idx[0]; k++) {
        tc_sample s;
        assert_int_equal(tr->get(tr, idx[k], &s), TC_OK);
        assert_int_equal(s.bad[0], 0);
        assert_int_equal(s.label, lab[8 + idx[k]]);
        assert_int_equal(s.raw.w, 28);
        assert_int_equal(s.raw.h, 28);
        const uint8_t *g = img + 16 + (size_t)idx[k] * 784;
        for (int p = 0; p < 784; p++) {
            assert_int_equal(s.raw.px[3 * p], g[p]);
            assert_int_equal(s.raw.px[3 * p + 1], g[p]);
        }
        assert_non_null(strstr(s.caption, tr->class_names[s.label]));
        assert_int_equal(strlen(s.caption), s.caption_len);
        tc_sample_clear(&s);
    }
    /* captions vary over the templates */
    int seen_t[64] = {0}, distinct = 0;
    for (int64_t i = 0; i < 500; i++) {
        int t = tc_caption_pick(1, (uint64_t)i);
        if (!seen_t[t]++) distinct++;
    }
    assert_true(tc_caption_template_count() >= 20);
    assert_true(distinct >= 20);
    tc_sample s;
    assert_int_equal(te->get(te, 9999, &s), TC_OK);
    tc_sample_clear(&s);
    assert_int_not_equal(te->get(te, 10000, &s), TC_OK);
    free(lab);
    free(img);
    tc_source_destroy(tr);
    tc_source_destroy(te);
}

/* ---- brace expansion ---- */

static void expect_expand(const char *pat, int n, const char *first, const char *last) {
    char **v;
    int k;
    assert_int_equal(tc_brace_expand(pat, &v, &k), TC_OK);
    if (k != n) fail_msg("'%s': %d names, expected %d", pat, k, n);
    assert_string_equal(v[0], first);
    assert_string_equal(v[k - 1], last);
    tc_strlist_free(v, k);
}

static void test_brace_expand(void **state) {
    (void)state;
    expect_expand("a/{000..009}.tar", 10, "a/000.tar", "a/009.tar");
    expect_expand("s-{000000..012345}.tar", 12346, "s-000000.tar", "s-012345.tar");
    expect_expand("x{0..12}", 13, "x0", "x12");
    expect_expand("x{8..10}", 3, "x8", "x10");
    expect_expand("x{08..10}", 3, "x08", "x10");
    expect_expand("x{10..8}", 3, "x10", "x8");
    expect_expand("x{1..10..3}", 4, "x1", "x10");
    expect_expand("{a,b}{1..2}", 4, "a1", "b2");
    expect_expand("p/{a,b{0..1}}/q", 3, "p/a/q", "p/b1/q");
    expect_expand("{a..c}", 3, "a", "c");
    expect_expand("plain.tar", 1, "plain.tar", "plain.tar");
    expect_expand("odd{}.tar", 1, "odd{}.tar", "odd{}.tar");
    expect_expand("open{1..2", 1, "open{1..2", "open{1..2");
    char **v;
    int k;
    assert_int_equal(tc_brace_expand("{0..99999999}", &v, &k), TC_ERR_ARG);
}

/* ---- webdataset grouping ---- */

typedef struct {
    char key[256];
    int has_image, label;
    char caption[64];
    char bad[200];
} got_sample;

static int read_all(const buf *b, got_sample *out, int max, tc_status *end) {
    tc_shard_reader *r;
    *end = tc_wds_reader_open_memory(b->d, b->n, "mem.tar", &r);
    if (*end != TC_OK) return 0;
    int n = 0;
    for (;;) {
        tc_sample s;
        int eof = 0;
        tc_status st = tc_wds_reader_next(r, &s, &eof);
        if (st != TC_OK) {
            *end = st;
            break;
        }
        if (eof) break;
        if (n < max) {
            snprintf(out[n].key, sizeof out[n].key, "%s", s.key);
            out[n].has_image = s.image != NULL;
            out[n].label = s.label;
            snprintf(out[n].caption, sizeof out[n].caption, "%s", s.caption ? s.caption : "");
            snprintf(out[n].bad, sizeof out[n].bad, "%s", s.bad);
        }
        n++;
        tc_sample_clear(&s);
    }
    tc_wds_reader_close(r);
    return n;
}

static void test_wds_grouping(void **state) {
    (void)state;
    buf b = {0};
    tar_member(&b, "dir/", '5', NULL, 0); /* directories are skipped */
    tar_file(&b, "__index__", "meta");    /* __*__ metadata skipped */
    tar_file(&b, "a/k1.jpg", "\xff\xd8\xff jpeg bytes");
    tar_file(&b, "a/k1.txt", "first caption");
    tar_file(&b, "a/k1.json", "{\"x\": 1}");
    tar_file(&b, "a/k1.cls", "7");
    tar_file(&b, "k2.TXT", "upper case suffixes"); /* extensions lower-cased */
    tar_file(&b, "k2.PNG", "\x89PNG....");
    tar_file(&b, "k3.seg.jpg", "x"); /* key k3, suffix seg.jpg: no image */
    tar_file(&b, "k3.seg.txt", "y");
    tar_file(&b, "k4.jpg", "img");
    tar_file(&b, "k4.txt", "one");
    tar_file(&b, "k4.txt", "two"); /* repeated suffix: new sample */
    tar_file(&b, "k5.jpg", "img");
    tar_file(&b, "k6.txt", "between"); /* k5's files are not adjacent */
    tar_file(&b, "k5.txt", "late");
    tar_member(&b, "k7.lnk", '2', NULL, 0); /* symlink: skipped */
    tar_file(&b, ".hidden", "no key");      /* no key before the dot: skipped */
    tar_file(&b, "noext", "no extension");  /* skipped */
    tar_file(&b, "k8.png", "img");
    tar_file(&b, "k8.txt", "bad utf8 \xC3\x28 here");
    tar_file(&b, "k9.jpeg", "img");
    tar_file(&b, "k9.jpg", "img2"); /* both: jpg is used */
    tar_file(&b, "k9.txt", "ok");
    tar_end(&b);
    got_sample g[32];
    tc_status end;
    int n = read_all(&b, g, 32, &end);
    assert_int_equal(end, TC_OK);
    const char *keys[] = {"a/k1", "k2", "k3", "k4", "k4", "k5", "k6", "k5", "k8", "k9"};
    assert_int_equal(n, 10);
    for (int i = 0; i < n; i++)
        assert_string_equal(g[i].key, keys[i]);
    assert_string_equal(g[0].bad, "");
    assert_true(g[0].has_image);
    assert_string_equal(g[0].caption, "first caption");
    assert_int_equal(g[0].label, 7);
    assert_string_equal(g[1].bad, "");
    assert_string_equal(g[1].caption, "upper case suffixes");
    assert_int_equal(g[1].label, -1);
    assert_non_null(strstr(g[2].bad, "no caption"));
    assert_string_equal(g[3].bad, "");
    assert_string_equal(g[3].caption, "one");
    assert_non_null(strstr(g[4].bad, "no image"));
    assert_non_null(strstr(g[5].bad, "no caption"));
    assert_non_null(strstr(g[6].bad, "no image"));
    assert_non_null(strstr(g[7].bad, "no image"));
    assert_non_null(strstr(g[8].bad, "UTF-8"));
    assert_string_equal(g[9].bad, "");
    free(b.d);
}

static void test_utf8(void **state) {
    (void)state;
    assert_true(tc_utf8_valid("plain", 5));
    assert_true(tc_utf8_valid("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 14));
    assert_false(tc_utf8_valid("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 13)); /* cut emoji */
    assert_false(tc_utf8_valid("\xC3", 1));                                       /* truncated */
    assert_false(tc_utf8_valid("\xC0\xAF", 2));                                   /* overlong */
    assert_false(tc_utf8_valid("\xED\xA0\x80", 3));                               /* surrogate */
    assert_false(tc_utf8_valid("\xF4\x90\x80\x80", 4));                           /* > U+10FFFF */
    assert_false(tc_utf8_valid("\xFF", 1));
}

/* ---- shards on disk: sizes.json and '::' ---- */

static void write_shards(const char *dir, int nsamples, int per_shard, int id0) {
    tc_shard_writer *w;
    assert_int_equal(tc_shard_writer_create(dir, per_shard, &w), TC_OK);
    uint8_t px[4 * 4];
    for (int i = 0; i < nsamples; i++) {
        memset(px, i, sizeof px);
        uint8_t *png;
        size_t len;
        assert_int_equal(tc_png_encode(px, 4, 4, 1, &png, &len), TC_OK);
        char key[32], cap[64];
        snprintf(key, sizeof key, "s%05d", id0 + i);
        int cl = snprintf(cap, sizeof cap, "sample %d", id0 + i);
        assert_int_equal(
            tc_shard_writer_add(w, key, "png", png, len, cap, (size_t)cl, id0 + i, NULL), TC_OK);
        free(png);
    }
    assert_int_equal(tc_shard_writer_close(w, NULL, NULL), TC_OK);
    tc_shard_writer_destroy(w);
}

static void test_wds_sources(void **state) {
    (void)state;
    char *tmp = tc_make_tempdir("sources");
    char a[1024], b2[1024], spec[4096];
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b2, sizeof b2, "%s/b", tmp);
    write_shards(a, 25, 10, 0);  /* 10 + 10 + 5 */
    write_shards(b2, 7, 4, 100); /* 4 + 3 */
    snprintf(spec, sizeof spec, "%s/{000000..000002}.tar::%s/{000000..000001}.tar", a, b2);
    tc_source *s;
    assert_int_equal(tc_source_open(spec, NULL, &s), TC_OK);
    assert_string_equal(s->kind, "wds");
    assert_int_equal(s->num_shards, 5);
    assert_int_equal(s->num_samples, 32);
    /* read every shard: the samples, in order, with their labels */
    int total = 0;
    for (int i = 0; i < s->num_shards; i++) {
        tc_shard_reader *r;
        assert_int_equal(s->open_shard(s, i, &r), TC_OK);
        for (;;) {
            tc_sample smp;
            int eof;
            assert_int_equal(s->next(r, &smp, &eof), TC_OK);
            if (eof) break;
            int id = i < 3 ? total : 100 + (total - 25);
            char key[32];
            snprintf(key, sizeof key, "s%05d", id);
            assert_string_equal(smp.key, key);
            assert_int_equal(smp.label, id);
            assert_string_equal(smp.bad, "");
            tc_sample_clear(&smp);
            total++;
        }
        s->close_shard(r);
    }
    assert_int_equal(total, 32);
    tc_source_destroy(s);
    /* a shard missing from sizes.json: size unknown, unless given */
    snprintf(spec, sizeof spec, "%s/{000000..000003}.tar", a);
    assert_int_equal(tc_source_open(spec, NULL, &s), TC_OK);
    assert_int_equal(s->num_samples, -1);
    tc_shard_reader *r;
    assert_int_equal(s->open_shard(s, 3, &r), TC_ERR_IO); /* missing shard: named */
    assert_non_null(strstr(tc_last_error(), "000003.tar"));
    tc_source_destroy(s);
    tc_source_opts o;
    tc_source_opts_init(&o);
    o.num_samples = 1234;
    assert_int_equal(tc_source_open(spec, &o, &s), TC_OK);
    assert_int_equal(s->num_samples, 1234);
    tc_source_destroy(s);
    tc_rmtree(tmp);
    free(tmp);
}

/* ---- csv / tsv ---- */

static void test_csv(void **state) {
    (void)state;
    char *tmp = tc_make_tempdir("csv");
    char p[1024], sub[1024];
    snprintf(sub, sizeof sub, "%s/img", tmp);
    mkdir(sub, 0755);
    uint8_t px[3 * 3 * 3] = {1, 2, 3};
    uint8_t *png;
    size_t len;
    assert_int_equal(tc_png_encode(px, 3, 3, 3, &png, &len), TC_OK);
    snprintf(p, sizeof p, "%s/img/a.png", tmp);
    assert_int_equal(tc_write_file(p, png, len), 0);
    snprintf(p, sizeof p, "%s/img/b c.png", tmp);
    assert_int_equal(tc_write_file(p, png, len), 0);
    free(png);
    /* tab-separated, relative paths beside the csv, a quoted caption with a
     * tab, a quote and a newline, a CRLF line, a short row, a missing file */
    const char *tsv = "id\tfilepath\ttitle\n"
                      "1\timg/a.png\ta plain caption\n"
                      "2\timg/b c.png\t\"quoted\tcaption with \"\"quotes\"\"\nand a newline\"\r\n"
                      "3\timg/missing.png\tno file\n"
                      "4\timg/a.png\n"
                      "\n"
                      "5\t%s/img/a.png\tabsolute path\n";
    char body[2048];
    snprintf(body, sizeof body, tsv, tmp);
    snprintf(p, sizeof p, "%s/train.tsv", tmp);
    assert_int_equal(tc_write_file(p, body, strlen(body)), 0);
    tc_source *s;
    assert_int_equal(tc_source_open(p, NULL, &s), TC_OK);
    assert_string_equal(s->kind, "csv");
    assert_int_equal(s->num_samples, 5);
    tc_sample m;
    assert_int_equal(s->get(s, 0, &m), TC_OK);
    assert_string_equal(m.bad, "");
    assert_string_equal(m.caption, "a plain caption");
    assert_int_equal(m.image_len, len);
    tc_sample_clear(&m);
    assert_int_equal(s->get(s, 1, &m), TC_OK);
    assert_string_equal(m.bad, "");
    assert_string_equal(m.caption, "quoted\tcaption with \"quotes\"\nand a newline");
    tc_sample_clear(&m);
    assert_int_equal(s->get(s, 2, &m), TC_OK);
    assert_non_null(strstr(m.bad, "cannot be opened"));
    assert_non_null(strstr(m.key, "row 3"));
    assert_non_null(strstr(m.key, "missing.png"));
    tc_sample_clear(&m);
    assert_int_equal(s->get(s, 3, &m), TC_OK);
    assert_non_null(strstr(m.bad, "too few columns"));
    tc_sample_clear(&m);
    assert_int_equal(s->get(s, 4, &m), TC_OK);
    assert_string_equal(m.bad, "");
    tc_sample_clear(&m);
    tc_source_destroy(s);
    /* comma separator and other column names */
    snprintf(body, sizeof body, "path,text\nimg/a.png,\"comma, inside\"\n");
    snprintf(p, sizeof p, "%s/other.csv", tmp);
    assert_int_equal(tc_write_file(p, body, strlen(body)), 0);
    tc_source_opts o;
    tc_source_opts_init(&o);
    assert_int_equal(tc_source_open(p, &o, &s), TC_ERR_FORMAT); /* tab default: no columns */
    o.csv_sep = ',';
    o.csv_img_key = "path";
    o.csv_caption_key = "text";
    assert_int_equal(tc_source_open(p, &o, &s), TC_OK);
    assert_int_equal(s->get(s, 0, &m), TC_OK);
    assert_string_equal(m.caption, "comma, inside");
    assert_string_equal(m.bad, "");
    tc_sample_clear(&m);
    tc_source_destroy(s);
    tc_rmtree(tmp);
    free(tmp);
}

/* ---- image folders ---- */

static void test_folder(void **state) {
    (void)state;
    char *tmp = tc_make_tempdir("folder");
    char p[1024];
    const char *classes[] = {"b_cat", "a_dog", "c_fox"};
    uint8_t px[2 * 2];
    uint8_t *png;
    size_t len;
    memset(px, 9, sizeof px);
    assert_int_equal(tc_png_encode(px, 2, 2, 1, &png, &len), TC_OK);
    for (int c = 0; c < 3; c++) {
        snprintf(p, sizeof p, "%s/%s", tmp, classes[c]);
        mkdir(p, 0755);
        for (int i = 0; i < 2; i++) {
            snprintf(p, sizeof p, "%s/%s/img%d.PNG", tmp, classes[c], i);
            assert_int_equal(tc_write_file(p, png, len), 0);
        }
    }
    snprintf(p, sizeof p, "%s/a_dog/img1.txt", tmp);
    assert_int_equal(tc_write_file(p, "my own caption\n", 15), 0);
    snprintf(p, sizeof p, "%s/a_dog/notes.md", tmp); /* not an image: ignored */
    assert_int_equal(tc_write_file(p, "x", 1), 0);
    free(png);
    tc_source *s;
    assert_int_equal(tc_source_open(tmp, NULL, &s), TC_OK);
    assert_string_equal(s->kind, "folder");
    assert_int_equal(s->num_samples, 6);
    assert_int_equal(s->num_classes, 3);
    assert_string_equal(s->class_names[0], "a dog"); /* sorted folders, '_' as space */
    assert_string_equal(s->class_names[2], "c fox");
    tc_sample m;
    assert_int_equal(s->get(s, 1, &m), TC_OK);
    assert_int_equal(m.label, 0);
    assert_string_equal(m.key, "a_dog/img1.PNG");
    assert_string_equal(m.caption, "my own caption");
    tc_sample_clear(&m);
    assert_int_equal(s->get(s, 4, &m), TC_OK);
    assert_int_equal(m.label, 2);
    assert_non_null(strstr(m.caption, "c fox"));
    tc_sample_clear(&m);
    tc_source_destroy(s);
    /* a class-name file gives the prompt names */
    snprintf(p, sizeof p, "%s/classnames.txt", tmp);
    assert_int_equal(tc_write_file(p, "dog\ncat\narctic fox\n", 19), 0);
    assert_int_equal(tc_source_open(tmp, NULL, &s), TC_OK);
    assert_string_equal(s->class_names[2], "arctic fox");
    tc_source_destroy(s);
    assert_int_equal(tc_write_file(p, "dog\ncat\n", 8), 0);
    assert_int_equal(tc_source_open(tmp, NULL, &s), TC_ERR_FORMAT); /* count mismatch */
    tc_rmtree(tmp);
    free(tmp);
}

/* ---- tinyclip shards ---- */

static void test_cli_shards(void **state) {
    (void)state;
    const char *bin = getenv("TINYCLIP_BIN");
    if (!bin || !tc_file_exists(bin))
        tc_skip_test("tinyclip binary not available (run under ctest)");
    char *tmp = tc_make_tempdir("cli-shards");
    char args[4096], spec[2048];
    char *out = NULL;
    /* from an image folder with sidecar captions and a class-name file */
    char p[1024];
    const char *classes[] = {"cat", "dog"};
    uint8_t px[5 * 5 * 3];
    memset(px, 77, sizeof px);
    uint8_t *png;
    size_t len;
    assert_int_equal(tc_png_encode(px, 5, 5, 3, &png, &len), TC_OK);
    snprintf(p, sizeof p, "%s/in", tmp);
    mkdir(p, 0755);
    for (int c = 0; c < 2; c++) {
        snprintf(p, sizeof p, "%s/in/%s", tmp, classes[c]);
        mkdir(p, 0755);
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/in/%s/%d.png", tmp, classes[c], i);
            assert_int_equal(tc_write_file(p, png, len), 0);
        }
    }
    snprintf(p, sizeof p, "%s/in/dog/2.png", tmp); /* one broken image: skipped */
    assert_int_equal(tc_write_file(p, "not a png", 9), 0);
    free(png);
    snprintf(args, sizeof args, "shards --from folder %s/in --out %s/out --per-shard 2", tmp, tmp);
    int rc = tc_run_cli(args, &out);
    printf("%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "wrote 5 samples in 3 shards"));
    assert_non_null(strstr(out, "dog/2.png"));
    free(out);
    snprintf(spec, sizeof spec, "%s/out/{000000..000002}.tar", tmp);
    tc_source *s;
    assert_int_equal(tc_source_open(spec, NULL, &s), TC_OK);
    assert_int_equal(s->num_samples, 5);
    tc_shard_reader *r;
    assert_int_equal(s->open_shard(s, 2, &r), TC_OK);
    tc_sample m;
    int eof;
    assert_int_equal(s->next(r, &m, &eof), TC_OK);
    assert_false(eof);
    assert_int_equal(m.label, 1); /* dog */
    assert_non_null(strstr(m.caption, "dog"));
    tc_sample_clear(&m);
    s->close_shard(r);
    tc_source_destroy(s);
    /* from Fashion-MNIST: PNG-encoded 28x28 with labels */
    if (tc_file_exists(FM_DIR "/t10k-images-idx3-ubyte.gz")) {
        snprintf(args, sizeof args,
                 "shards --from fmnist --split test --limit 30 --out %s/fm --per-shard 16", tmp);
        rc = tc_run_cli(args, &out);
        assert_int_equal(rc, 0);
        free(out);
        snprintf(spec, sizeof spec, "%s/fm/000000.tar::%s/fm/000001.tar", tmp, tmp);
        assert_int_equal(tc_source_open(spec, NULL, &s), TC_OK);
        assert_int_equal(s->num_samples, 30);
        tc_source *fm;
        assert_int_equal(tc_source_open("fmnist:test", NULL, &fm), TC_OK);
        assert_int_equal(s->open_shard(s, 0, &r), TC_OK);
        for (int i = 0; i < 16; i++) {
            tc_sample a, b;
            assert_int_equal(s->next(r, &a, &eof), TC_OK);
            assert_false(eof);
            assert_int_equal(fm->get(fm, i, &b), TC_OK);
            tc_image img;
            assert_int_equal(tc_image_decode(NULL, a.image, a.image_len, a.key, 0, &img), TC_OK);
            assert_memory_equal(img.px, b.raw.px, 28 * 28 * 3); /* lossless */
            assert_int_equal(a.label, b.label);
            assert_string_equal(a.caption, b.caption);
            tc_image_free(&img);
            tc_sample_clear(&a);
            tc_sample_clear(&b);
        }
        s->close_shard(r);
        tc_source_destroy(fm);
        tc_source_destroy(s);
    }
    /* from a comma-separated csv with a missing file; usage errors exit 2 */
    char csv[2048];
    int cl = snprintf(
        csv, sizeof csv,
        "filepath,title\nin/cat/0.png,a cat\nin/cat/9.png,gone\nin/dog/1.png,\"a dog, sitting\"\n");
    snprintf(p, sizeof p, "%s/list.csv", tmp);
    assert_int_equal(tc_write_file(p, csv, (size_t)cl), 0);
    snprintf(args, sizeof args, "shards --from csv %s --csv-sep , --out %s/c", p, tmp);
    rc = tc_run_cli(args, &out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "wrote 2 samples in 1 shards"));
    assert_non_null(strstr(out, "9.png"));
    free(out);
    snprintf(spec, sizeof spec, "%s/c/000000.tar", tmp);
    assert_int_equal(tc_source_open(spec, NULL, &s), TC_OK);
    assert_int_equal(s->open_shard(s, 0, &r), TC_OK);
    assert_int_equal(s->next(r, &m, &eof), TC_OK);
    assert_string_equal(m.caption, "a cat");
    tc_sample_clear(&m);
    assert_int_equal(s->next(r, &m, &eof), TC_OK);
    assert_string_equal(m.caption, "a dog, sitting");
    tc_sample_clear(&m);
    s->close_shard(r);
    tc_source_destroy(s);
    snprintf(args, sizeof args, "shards --from csv --out %s/x", tmp);
    assert_int_equal(tc_run_cli(args, NULL), 2);
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_brace_expand), cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_wds_grouping), cmocka_unit_test(test_wds_sources),
        cmocka_unit_test(test_csv),          cmocka_unit_test(test_folder),
        cmocka_unit_test(test_fmnist),       cmocka_unit_test(test_cli_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
