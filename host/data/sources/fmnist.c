/* Fashion-MNIST from Debian's dataset-fashion-mnist package: the idx files
 * (gzip) are read whole with zlib at open; a sample is the 28x28 grayscale
 * image replicated to RGB (as PIL's convert('RGB')), its label, and a
 * caption built from the class name with a template picked per sample
 * (caption_templates.h, seeded by the split so train and test differ). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "caption_templates.h"
#include "data_file.h"
#include "source.h"

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define FMNIST_SIDE 28

static const char *const fmnist_classes[10] = {
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot",
};

typedef struct {
    int64_t n;
    uint8_t *pixels; /* (n, 28, 28) */
    uint8_t *labels; /* (n) */
    uint64_t caption_seed;
    char where[600];
} fmnist;

static tc_status read_gz(const char *path, uint8_t **data, size_t *len, size_t limit) {
    *data = NULL;
    *len = 0;
    char why[160];
    int fd = tc_data_open_regular(path, why, sizeof why);
    if (fd < 0) return tc_fail(TC_ERR_IO, "%s: %s", path, why);
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    tc_status st = TC_OK;
    while (buf) {
        if (n == cap) {
            if (cap >= limit) {
                st = tc_fail(TC_ERR_FORMAT, "%s: larger than %zu bytes", path, limit);
                break;
            }
            cap *= 2;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        int k = gzread(f, buf + n, (unsigned)(cap - n));
        if (k < 0) {
            int e;
            st = tc_fail(TC_ERR_FORMAT, "%s: corrupt gzip: %s", path, gzerror(f, &e));
            break;
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    gzclose(f);
    if (!buf) return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    if (st != TC_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    *len = n;
    return TC_OK;
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static tc_status fm_get(tc_source *s, int64_t index, tc_sample *out) {
    fmnist *f = s->impl;
    memset(out, 0, sizeof *out);
    out->label = -1;
    if (index < 0 || index >= f->n)
        return tc_fail(TC_ERR_ARG, "fashion-mnist: index %lld out of range", (long long)index);
    snprintf(out->key, sizeof out->key, "%06lld", (long long)index);
    snprintf(out->where, sizeof out->where, "%.511s", f->where);
    int label = f->labels[index];
    out->label = label;
    out->raw.px = malloc(FMNIST_SIDE * FMNIST_SIDE * 3);
    char cap[128];
    size_t n = tc_caption_format(cap, sizeof cap, tc_caption_pick(f->caption_seed, (uint64_t)index),
                                 fmnist_classes[label]);
    out->caption = malloc(n + 1);
    if (!out->raw.px || !out->caption) {
        tc_sample_clear(out);
        return tc_fail(TC_ERR_OOM, "fashion-mnist: out of memory");
    }
    memcpy(out->caption, cap, n + 1);
    out->caption_len = n;
    out->raw.w = out->raw.h = FMNIST_SIDE;
    const uint8_t *g = f->pixels + (size_t)index * FMNIST_SIDE * FMNIST_SIDE;
    for (int i = 0; i < FMNIST_SIDE * FMNIST_SIDE; i++)
        out->raw.px[3 * i] = out->raw.px[3 * i + 1] = out->raw.px[3 * i + 2] = g[i];
    return TC_OK;
}

static void fm_destroy(tc_source *s) {
    fmnist *f = s->impl;
    if (f) {
        free(f->pixels);
        free(f->labels);
        free(f);
    }
    free(s->class_names);
    free(s);
}

tc_status tc_source_fmnist_open(const char *split, const tc_source_opts *opts, tc_source **out) {
    *out = NULL;
    const char *dir = opts && opts->fmnist_dir ? opts->fmnist_dir : FMNIST_DEFAULT_DIR;
    const char *prefix;
    int64_t expect;
    if (!split || !split[0] || strcmp(split, "train") == 0)
        prefix = "train", expect = 60000;
    else if (strcmp(split, "test") == 0 || strcmp(split, "t10k") == 0)
        prefix = "t10k", expect = 10000;
    else
        return tc_fail(TC_ERR_ARG, "fashion-mnist: unknown split '%s' (train or test)", split);
    char ip[1024], lp[1024];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    uint8_t *img = NULL, *lab = NULL;
    size_t ni = 0, nl = 0;
    tc_status st = read_gz(ip, &img, &ni, (size_t)256 << 20);
    if (st == TC_OK) st = read_gz(lp, &lab, &nl, (size_t)16 << 20);
    if (st != TC_OK) {
        free(img);
        free(lab);
        return tc_fail_context(st, "fashion-mnist (install dataset-fashion-mnist)");
    }
    int64_t n = 0;
    if (ni < 16 || be32(img) != 0x803 || be32(img + 8) != FMNIST_SIDE ||
        be32(img + 12) != FMNIST_SIDE)
        st = tc_fail(TC_ERR_FORMAT, "%s: not an idx3 file of 28x28 images", ip);
    else if (nl < 8 || be32(lab) != 0x801)
        st = tc_fail(TC_ERR_FORMAT, "%s: not an idx1 label file", lp);
    else {
        n = be32(img + 4);
        if ((int64_t)be32(lab + 4) != n)
            st = tc_fail(TC_ERR_FORMAT, "%s: %u labels for %lld images", lp, be32(lab + 4),
                         (long long)n);
        else if (ni - 16 < (size_t)n * FMNIST_SIDE * FMNIST_SIDE || nl - 8 < (size_t)n)
            st = tc_fail(TC_ERR_FORMAT, "%s: truncated (%lld images declared)", ip, (long long)n);
    }
    for (int64_t i = 0; st == TC_OK && i < n; i++)
        if (lab[8 + i] > 9)
            st = tc_fail(TC_ERR_FORMAT, "%s: label %d at %lld", lp, lab[8 + i], (long long)i);
    if (st == TC_OK && n != expect)
        fprintf(stderr, "tinyclip: fashion-mnist %s has %lld samples (expected %lld)\n", prefix,
                (long long)n, (long long)expect);
    tc_source *s = NULL;
    fmnist *f = NULL;
    if (st == TC_OK) {
        s = calloc(1, sizeof *s);
        f = calloc(1, sizeof *f);
        if (s) s->class_names = calloc(10, sizeof(char *));
        if (!s || !f || !s->class_names) st = tc_fail(TC_ERR_OOM, "fashion-mnist: out of memory");
    }
    if (st == TC_OK) {
        f->pixels = malloc((size_t)n * FMNIST_SIDE * FMNIST_SIDE + 1);
        f->labels = malloc((size_t)n + 1);
        if (!f->pixels || !f->labels) st = tc_fail(TC_ERR_OOM, "fashion-mnist: out of memory");
    }
    if (st != TC_OK) {
        free(img);
        free(lab);
        if (f) {
            free(f->pixels);
            free(f->labels);
        }
        free(f);
        if (s) free(s->class_names);
        free(s);
        return st;
    }
    memcpy(f->pixels, img + 16, (size_t)n * FMNIST_SIDE * FMNIST_SIDE);
    memcpy(f->labels, lab + 8, (size_t)n);
    free(img);
    free(lab);
    f->n = n;
    f->caption_seed = strcmp(prefix, "train") == 0 ? 1 : 2;
    snprintf(f->where, sizeof f->where, "%s/%s", dir, prefix);
    for (int c = 0; c < 10; c++)
        s->class_names[c] = (char *)fmnist_classes[c];
    s->kind = "fmnist";
    s->num_samples = n;
    s->indexable = 1;
    s->num_classes = 10;
    s->impl = f;
    s->get = fm_get;
    s->destroy = fm_destroy;
    *out = s;
    return TC_OK;
}
