/* tinyclip bench --data: single-thread throughput of the per-sample data work
 * (JPEG decode + RandomResizedCrop(S) + normalise + tokenize), the work
 * scripts/bench_data_torch.py times for PIL + torchvision + open_clip.
 * images: the JPEGs in --images DIR (as bench_data_torch.py writes them), or
 * 500x375 JPEGs made in memory from the fixture photos. captions are
 * template sentences. the timed loop touches memory only (no file I/O) and
 * counts the thread's CPU time, so other load on the machine does not
 * inflate it (bench_data_torch.py does the same with time.thread_time).
 * with --path (or --make) the whole loader over shards is timed instead
 * (bench_loader.c). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caption_templates.h"
#include "cli.h"
#include "image_decode.h"
#include "image_transform.h"
#include "tokenizer.h"

typedef struct {
    uint8_t *data;
    size_t len;
} blob;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint8_t *slurp(const char *p, size_t *len) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = b ? (size_t)n : 0;
    return b;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_dir(const char *dir, blob **out, int *n) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char *names[4096];
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d)) && k < 4096) {
        size_t l = strlen(e->d_name);
        if (l > 4 && (strcmp(e->d_name + l - 4, ".jpg") == 0)) names[k++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)k, sizeof(char *), cmp_str);
    *out = calloc((size_t)k + 1, sizeof(blob));
    *n = 0;
    for (int i = 0; i < k; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        (*out)[*n].data = slurp(p, &(*out)[*n].len);
        if ((*out)[*n].data) (*n)++;
        free(names[i]);
    }
    return 0;
}

/* 500x375 JPEGs (quality 90) from crops of the fixture photos */
static tc_status make_jpegs(tc_image_decoder *dec, blob **out, int *n) {
    static const char *const photos[] = {"coffee_500x375.jpg", "chelsea_451x300.jpg",
                                         "astronaut_301x403.jpg", "astronaut_rgb_255x199.png"};
    *out = calloc(16, sizeof(blob));
    *n = 0;
    for (int p = 0; p < 4; p++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/fixtures/images/%s", TC_SOURCE_DIR, photos[p]);
        size_t len = 0;
        uint8_t *data = slurp(path, &len);
        if (!data) return tc_fail(TC_ERR_IO, "%s: cannot read (run from a source checkout)", path);
        tc_image img;
        tc_status st = tc_image_decode(dec, data, len, path, 0, &img);
        free(data);
        if (st != TC_OK) return st;
        for (int v = 0; v < 4; v++) {
            /* four 4:3 crops of each photo, upscaled or downscaled to 500x375 */
            int cw = img.w * (10 - v) / 10, ch = cw * 3 / 4;
            if (ch > img.h) ch = img.h, cw = ch * 4 / 3;
            tc_crop c = {(img.h - ch) * v / 4, (img.w - cw) * (3 - v) / 4, ch, cw};
            tc_image o = {500, 375, malloc(500 * 375 * 3)};
            st = tc_resized_crop_u8(&img, c, 500, 375, o.px);
            if (st == TC_OK) st = tc_jpeg_encode(dec, &o, 90, &(*out)[*n].data, &(*out)[*n].len);
            free(o.px);
            if (st != TC_OK) {
                tc_image_free(&img);
                return st;
            }
            (*n)++;
        }
        tc_image_free(&img);
    }
    return TC_OK;
}

static const char *const words[] = {"dog",     "cat",           "coffee cup",   "astronaut",
                                    "red car", "mountain lake", "bowl of soup", "street at night"};

int tc_cmd_bench_data(int argc, char **argv) {
    const char *dir = NULL;
    int n = 2000, size = 224, dct = 1;
    for (int i = 1; i < argc; i++) /* the whole loader over shards: bench_loader.c */
        if (strcmp(argv[i], "--path") == 0 || strcmp(argv[i], "--make") == 0)
            return tc_cmd_bench_loader(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0) continue;
        if (strcmp(argv[i], "--images") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            size = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-dct-scale") == 0)
            dct = 0;
        else {
            fprintf(stderr, "usage: tinyclip bench --data [--images DIR] [--n N] [--size S] "
                            "[--no-dct-scale]\n"
                            "       tinyclip bench --data --path SPEC ... (the whole loader over "
                            "shards; --path --help)\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (n <= 0 || size <= 0 || size > 4096) {
        fprintf(stderr, "tinyclip bench --data: bad --n or --size\n");
        return 2;
    }
    tc_image_decoder *dec = NULL;
    tc_tokenizer *tok = NULL;
    blob *imgs = NULL;
    int nimg = 0;
    if (tc_image_decoder_create(&dec) != TC_OK) return tc_cli_report("bench --data");
    tc_status st = TC_OK;
    if (dir) {
        if (load_dir(dir, &imgs, &nimg) != 0 || nimg == 0)
            st = tc_fail(TC_ERR_IO, "%s: no .jpg files", dir);
    } else {
        st = make_jpegs(dec, &imgs, &nimg);
    }
    if (st == TC_OK) st = tc_tokenizer_create(&tok, NULL);
    if (st != TC_OK) {
        tc_image_decoder_destroy(dec);
        for (int i = 0; i < nimg; i++)
            free(imgs[i].data);
        free(imgs);
        return tc_cli_report("bench --data");
    }
    tc_transform_cfg cfg = tc_transform_default(size, 1);
    float *out = malloc(sizeof(float) * 3 * (size_t)size * size);
    uint8_t *scratch = malloc(3 * (size_t)size * size);
    int32_t ids[77];
    int min_side = dct ? (int)(size * 1.22 + 0.999) : 0;
    double t_dec = 0, t_aug = 0, t_tok = 0;
    /* warm-up pass over the images, untimed */
    for (int pass = 0; pass < 2 && st == TC_OK; pass++) {
        int count = pass == 0 ? nimg : n;
        t_dec = t_aug = t_tok = 0;
        for (int i = 0; i < count && st == TC_OK; i++) {
            const blob *b = &imgs[i % nimg];
            char cap[256];
            tc_caption_format(cap, sizeof cap, tc_caption_pick(0, (uint64_t)i),
                              words[i % (int)(sizeof words / sizeof words[0])]);
            double t0 = now_s();
            tc_image img;
            st = tc_image_decode(dec, b->data, b->len, "bench image", min_side, &img);
            if (st != TC_OK) break;
            double t1 = now_s();
            tc_rng r = tc_rng_for(0, 0, 0, (uint64_t)i);
            st = tc_transform_apply(&cfg, &img, &r, scratch, out, NULL);
            tc_image_free(&img);
            double t2 = now_s();
            int nid = 0;
            if (st == TC_OK) st = tc_tokenize(tok, cap, strlen(cap), ids, 77, &nid);
            double t3 = now_s();
            t_dec += t1 - t0;
            t_aug += t2 - t1;
            t_tok += t3 - t2;
        }
    }
    if (st == TC_OK) {
        double total = t_dec + t_aug + t_tok;
        printf("data bench: %d samples, %d distinct JPEGs (%s), RandomResizedCrop %d, 1 thread "
               "(CPU time), "
               "DCT scaling %s\n",
               n, nimg, dir ? dir : "500x375 from fixtures", size, dct ? "on" : "off");
        printf("  decode    %8.1f us/sample\n", 1e6 * t_dec / n);
        printf("  augment   %8.1f us/sample\n", 1e6 * t_aug / n);
        printf("  tokenize  %8.1f us/sample\n", 1e6 * t_tok / n);
        printf("  total     %8.1f samples/s per core\n", n / total);
    }
    free(out);
    free(scratch);
    for (int i = 0; i < nimg; i++)
        free(imgs[i].data);
    free(imgs);
    tc_tokenizer_destroy(tok);
    tc_image_decoder_destroy(dec);
    if (st != TC_OK) return tc_cli_report("bench --data");
    return 0;
}
