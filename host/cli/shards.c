/* tinyclip shards: writes webdataset shards (and sizes.json) from an open_clip
 * csv/tsv, an image folder or Fashion-MNIST. csv and folder images are copied
 * byte for byte after a header check; Fashion-MNIST images are PNG-encoded
 * (8-bit grayscale, 28x28) and keep their label as <key>.cls. samples that
 * cannot be used are skipped and named, as the loader would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image_decode.h"
#include "shard_writer.h"
#include "source.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tinyclip shards --from csv FILE --out DIR [--per-shard N] [--csv-sep C]\n"
        "                       [--csv-img-key NAME] [--csv-caption-key NAME]\n"
        "       tinyclip shards --from folder DIR --out DIR [--per-shard N] [--classnames FILE]\n"
        "       tinyclip shards --from fmnist [--split train|test] [--fmnist-dir DIR]\n"
        "                       --out DIR [--per-shard N] [--limit N]\n"
        "writes DIR/000000.tar ... and DIR/sizes.json (default 10000 samples per shard).\n"
        "csv: tab-separated by default (open_clip's --csv-separator); relative image\n"
        "paths are looked up in the current directory, then beside the csv file.\n");
}

static int is_gray(const tc_image *im) {
    size_t n = (size_t)im->w * im->h;
    for (size_t i = 0; i < n; i++)
        if (im->px[3 * i] != im->px[3 * i + 1] || im->px[3 * i] != im->px[3 * i + 2]) return 0;
    return 1;
}

static tc_status write_sample(tc_shard_writer *w, tc_image_decoder *dec, const tc_sample *s,
                              int64_t out_index, int *skipped) {
    char key[32];
    snprintf(key, sizeof key, "%09lld", (long long)out_index);
    *skipped = 0;
    if (s->raw.px) {
        int gray = is_gray(&s->raw);
        size_t n = (size_t)s->raw.w * s->raw.h;
        uint8_t *g = NULL;
        if (gray) {
            g = malloc(n);
            if (!g) return tc_fail(TC_ERR_OOM, "shards: out of memory");
            for (size_t i = 0; i < n; i++)
                g[i] = s->raw.px[3 * i];
        }
        uint8_t *png = NULL;
        size_t len = 0;
        tc_status st =
            tc_png_encode(gray ? g : s->raw.px, s->raw.w, s->raw.h, gray ? 1 : 3, &png, &len);
        free(g);
        if (st != TC_OK) return st;
        st = tc_shard_writer_add(w, key, "png", png, len, s->caption, s->caption_len, s->label,
                                 s->json);
        free(png);
        return st;
    }
    int iw, ih;
    char name[800];
    snprintf(name, sizeof name, "%.500s: sample %.250s", s->where, s->key);
    if (tc_image_probe(dec, s->image, s->image_len, name, &iw, &ih) != TC_OK) {
        fprintf(stderr, "tinyclip: shards: %s\n", tc_last_error());
        *skipped = 1;
        return TC_OK;
    }
    const char *ext = tc_image_sniff(s->image, s->image_len) == TC_IMG_PNG ? "png" : "jpg";
    return tc_shard_writer_add(w, key, ext, s->image, s->image_len, s->caption, s->caption_len,
                               s->label, s->json);
}

int tc_cmd_shards(int argc, char **argv) {
    const char *from = NULL, *input = NULL, *outdir = NULL, *split = "train";
    int64_t per_shard = 10000, limit = -1;
    tc_source_opts o;
    tc_source_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "tinyclip shards: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--from") == 0) {
            from = v;
            if ((strcmp(v, "csv") == 0 || strcmp(v, "folder") == 0) && i + 1 < argc &&
                strncmp(argv[i + 1], "--", 2) != 0)
                input = argv[++i];
        } else if (strcmp(a, "--out") == 0)
            outdir = v;
        else if (strcmp(a, "--per-shard") == 0)
            per_shard = atoll(v);
        else if (strcmp(a, "--limit") == 0)
            limit = atoll(v);
        else if (strcmp(a, "--split") == 0)
            split = v;
        else if (strcmp(a, "--fmnist-dir") == 0)
            o.fmnist_dir = v;
        else if (strcmp(a, "--classnames") == 0)
            o.classnames = v;
        else if (strcmp(a, "--csv-img-key") == 0)
            o.csv_img_key = v;
        else if (strcmp(a, "--csv-caption-key") == 0)
            o.csv_caption_key = v;
        else if (strcmp(a, "--csv-sep") == 0 || strcmp(a, "--csv-separator") == 0) {
            if (strcmp(v, "\\t") == 0 || strcmp(v, "tab") == 0)
                o.csv_sep = '\t';
            else if (strlen(v) == 1)
                o.csv_sep = v[0];
            else {
                fprintf(stderr, "tinyclip shards: --csv-sep takes one character\n");
                return 2;
            }
        } else {
            fprintf(stderr, "tinyclip shards: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!from || !outdir || per_shard <= 0 ||
        ((strcmp(from, "csv") == 0 || strcmp(from, "folder") == 0) && !input) ||
        (strcmp(from, "csv") != 0 && strcmp(from, "folder") != 0 && strcmp(from, "fmnist") != 0)) {
        usage(stderr);
        return 2;
    }
    char spec[4200];
    if (strcmp(from, "fmnist") == 0)
        snprintf(spec, sizeof spec, "fmnist:%s", split);
    else
        snprintf(spec, sizeof spec, "%s", input);
    o.kind = from;
    tc_source *src = NULL;
    if (tc_source_open(spec, &o, &src) != TC_OK) return tc_cli_report("shards");
    if (!src->indexable) {
        tc_source_destroy(src);
        fprintf(stderr, "tinyclip shards: source is not indexable\n");
        return 1;
    }
    tc_shard_writer *w = NULL;
    tc_image_decoder *dec = NULL;
    tc_status st = tc_shard_writer_create(outdir, per_shard, &w);
    if (st == TC_OK) st = tc_image_decoder_create(&dec);
    int64_t n = src->num_samples, written = 0, skipped = 0;
    if (limit >= 0 && limit < n) n = limit;
    for (int64_t i = 0; st == TC_OK && i < n; i++) {
        tc_sample s;
        st = src->get(src, i, &s);
        if (st != TC_OK) break;
        if (s.bad[0]) {
            fprintf(stderr, "tinyclip: shards: %s: sample %s: %s\n", s.where, s.key, s.bad);
            skipped++;
        } else {
            int sk = 0;
            st = write_sample(w, dec, &s, written, &sk);
            if (sk)
                skipped++;
            else if (st == TC_OK)
                written++;
        }
        tc_sample_clear(&s);
    }
    int nshards = 0;
    if (st == TC_OK) st = tc_shard_writer_close(w, &nshards, &written);
    tc_shard_writer_destroy(w);
    tc_image_decoder_destroy(dec);
    tc_source_destroy(src);
    if (st != TC_OK) return tc_cli_report("shards");
    if (nshards > 0)
        printf("wrote %lld samples in %d shards: %s/{%06d..%06d}.tar (%lld skipped)\n",
               (long long)written, nshards, outdir, 0, nshards - 1, (long long)skipped);
    else
        printf("wrote no samples (%lld skipped)\n", (long long)skipped);
    return written > 0 ? 0 : 1;
}
