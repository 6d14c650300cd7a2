/* tinyclip bench --data --path SPEC: the whole loader over webdataset shards
 * (reading, tar parsing, JPEG/PNG decode, RandomResizedCrop, normalise,
 * tokenize, batching) with N worker threads, training order, one process.
 * SPEC is any shard spec the loader takes: local files or pipe:/http(s)
 * commands. every run reads --n samples (the shards are read again when they
 * run out) and reports wall samples/s and samples per CPU second: the
 * process's user + system time, and its finished children's (pipe:
 * commands), so the per-core figure holds on a loaded machine too. the
 * median of --runs runs is printed last.
 *
 * tinyclip bench --data --make DIR --side S --n N writes N JPEGs (quality
 * 90, shortest side S, 4:3) made from the fixture photos into shards in DIR,
 * 1000 per shard, to have something to measure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "caption_templates.h"
#include "cli.h"
#include "fileio.h"
#include "image_decode.h"
#include "image_transform.h"
#include "loader.h"
#include "shard_writer.h"
#include "tokenizer.h"

static double wall_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_s(void) {
    double s = 0;
    int who[2] = {RUSAGE_SELF, RUSAGE_CHILDREN};
    for (int i = 0; i < 2; i++) {
        struct rusage u;
        if (getrusage(who[i], &u) != 0) continue;
        s += (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec;
        s += (double)u.ru_stime.tv_sec + 1e-6 * (double)u.ru_stime.tv_usec;
    }
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char *const words[] = {"dog", "cat", "coffee cup", "astronaut", "red car"};

/* N JPEGs of shortest side `side` from the fixture photos, into shards */
static tc_status make_shards(const char *dir, int side, int n) {
    static const char *const photos[] = {"coffee_500x375.jpg", "chelsea_451x300.jpg",
                                         "astronaut_301x403.jpg"};
    tc_image src[3] = {{0, 0, NULL}, {0, 0, NULL}, {0, 0, NULL}};
    tc_image_decoder *dec = NULL;
    tc_shard_writer *w = NULL;
    tc_status st = tc_image_decoder_create(&dec);
    for (int p = 0; st == TC_OK && p < 3; p++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/fixtures/images/%s", TC_SOURCE_DIR, photos[p]);
        char *data = NULL;
        size_t len = 0;
        st = tc_read_file_bounded(path, (size_t)16 << 20, &data, &len);
        if (st == TC_OK) st = tc_image_decode(dec, (uint8_t *)data, len, path, 0, &src[p]);
        free(data);
    }
    if (st == TC_OK) st = tc_shard_writer_create(dir, 1000, &w);
    int W = side * 4 / 3, H = side;
    uint8_t *px = st == TC_OK ? malloc((size_t)W * H * 3) : NULL;
    if (st == TC_OK && !px) st = tc_fail(TC_ERR_OOM, "bench: out of memory");
    for (int i = 0; st == TC_OK && i < n; i++) {
        /* a different 4:3 crop of a photo per image, resized to W x H */
        const tc_image *s = &src[i % 3];
        int cw = s->w * (70 + i % 31) / 100, ch = cw * 3 / 4;
        if (ch > s->h) ch = s->h, cw = ch * 4 / 3;
        tc_crop c = {(s->h - ch) * (i % 7) / 6, (s->w - cw) * (i % 5) / 4, ch, cw};
        tc_image o = {W, H, px};
        st = tc_resized_crop_u8(s, c, W, H, px);
        uint8_t *jpg = NULL;
        size_t jl = 0;
        if (st == TC_OK) st = tc_jpeg_encode(dec, &o, 90, &jpg, &jl);
        char key[32], cap[256];
        snprintf(key, sizeof key, "%09d", i);
        size_t cl =
            tc_caption_format(cap, sizeof cap, tc_caption_pick(0, (uint64_t)i), words[i % 5]);
        if (st == TC_OK) st = tc_shard_writer_add(w, key, "jpg", jpg, jl, cap, cl, -1, NULL);
        free(jpg);
    }
    int shards = 0;
    int64_t written = 0;
    if (st == TC_OK) st = tc_shard_writer_close(w, &shards, &written);
    if (st == TC_OK)
        printf("wrote %lld JPEGs of %dx%d in %d shards: %s/{%06d..%06d}.tar\n", (long long)written,
               W, H, shards, dir, 0, shards - 1);
    free(px);
    tc_shard_writer_destroy(w);
    for (int p = 0; p < 3; p++)
        tc_image_free(&src[p]);
    tc_image_decoder_destroy(dec);
    return st;
}

/* one run: n samples through the loader; wall and CPU seconds */
static tc_status one_run(const tc_loader_cfg *cfg, int64_t n, double *wall, double *cpu,
                         int64_t *got) {
    tc_loader *l;
    double w0 = wall_s(), c0 = cpu_s();
    TC_TRY(tc_loader_create(cfg, NULL, &l));
    tc_status st = TC_OK;
    *got = 0;
    while (*got < n) {
        tc_batch *b;
        if ((st = tc_loader_next(l, &b)) != TC_OK || !b) break;
        *got += b->n;
        tc_loader_release(l, b);
    }
    tc_loader_destroy(l);
    *wall = wall_s() - w0;
    *cpu = cpu_s() - c0;
    return st;
}

static int usage(int rc) {
    fprintf(
        rc ? stderr : stdout,
        "usage: tinyclip bench --data --path SPEC [--workers N] [--n N] [--size S]\n"
        "                      [--batch B] [--runs R]\n"
        "       tinyclip bench --data --make DIR [--side S] [--n N]\n"
        "  --path SPEC   webdataset shards: dir/{000000..000009}.tar, pipe:cat dir/..., http...\n"
        "  --workers N   decode threads (default 1: one core's throughput)\n"
        "  --n N         samples per run (default 2000), --runs R runs (default 3)\n"
        "  --size S      RandomResizedCrop output (default 224); --batch B (default 64)\n"
        "  --make DIR    write --n JPEGs of shortest side --side (default 256) into shards\n");
    return rc;
}

int tc_cmd_bench_loader(int argc, char **argv) {
    const char *path = NULL, *make = NULL;
    int workers = 1, size = 224, batch = 64, runs = 3, side = 256;
    long long n = 2000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--data") == 0) continue;
        if (strcmp(a, "--help") == 0) return usage(0);
        if (!v) return usage(2);
        i++;
        if (strcmp(a, "--path") == 0)
            path = v;
        else if (strcmp(a, "--make") == 0)
            make = v;
        else if (strcmp(a, "--workers") == 0)
            workers = atoi(v);
        else if (strcmp(a, "--n") == 0)
            n = atoll(v);
        else if (strcmp(a, "--size") == 0)
            size = atoi(v);
        else if (strcmp(a, "--batch") == 0)
            batch = atoi(v);
        else if (strcmp(a, "--runs") == 0)
            runs = atoi(v);
        else if (strcmp(a, "--side") == 0)
            side = atoi(v);
        else
            return usage(2);
    }
    if (n <= 0 || n > 100000000 || workers <= 0 || workers > 256 || size <= 0 || size > 4096 ||
        batch <= 0 || runs <= 0 || runs > 100 || side < 8 || side > 8192) {
        fprintf(stderr, "tinyclip bench --data: an option is out of range\n");
        return 2;
    }
    if (make) return make_shards(make, side, (int)n) == TC_OK ? 0 : tc_cli_report("bench --data");
    tc_tokenizer *tok;
    if (tc_tokenizer_create(&tok, NULL) != TC_OK) return tc_cli_report("bench --data");
    tc_loader_cfg c;
    tc_loader_cfg_init(&c);
    c.data = path;
    c.source.kind = "wds";
    c.source.num_samples = n;
    c.batch_size = batch;
    c.image_size = size;
    c.train = 1;
    c.workers = workers;
    c.epochs = 1;
    c.tokenizer = tok;
    double *per_cpu = calloc((size_t)runs, sizeof(double)),
           *per_wall = calloc((size_t)runs, sizeof(double));
    tc_status st = per_cpu && per_wall ? TC_OK : tc_fail(TC_ERR_OOM, "bench: out of memory");
    printf("data bench: %s, %d worker thread(s), RandomResizedCrop %d, batch %d, %lld samples per "
           "run\n",
           path, workers, size, batch, n);
    for (int r = 0; st == TC_OK && r < runs; r++) {
        double wall, cpu;
        int64_t got;
        st = one_run(&c, n, &wall, &cpu, &got);
        if (st != TC_OK) break;
        per_wall[r] = (double)got / wall;
        per_cpu[r] = cpu > 0 ? (double)got / cpu : 0;
        printf("  run %d: %lld samples, %.2f s wall, %.2f s CPU: %.1f samples/s, %.1f samples per "
               "CPU second\n",
               r + 1, (long long)got, wall, cpu, per_wall[r], per_cpu[r]);
    }
    if (st == TC_OK) {
        qsort(per_wall, (size_t)runs, sizeof(double), cmp_double);
        qsort(per_cpu, (size_t)runs, sizeof(double), cmp_double);
        printf("  median of %d: %.1f samples/s, %.1f samples per CPU second (per core)\n", runs,
               per_wall[runs / 2], per_cpu[runs / 2]);
    }
    free(per_cpu);
    free(per_wall);
    tc_tokenizer_destroy(tok);
    return st == TC_OK ? 0 : tc_cli_report("bench --data");
}
