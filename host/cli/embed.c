/* tinyclip embed MODEL: L2-normalised image and text features of a
 * checkpoint, written as safetensors ("image_features" (N,E),
 * "text_features" (M,E)). images come as files (--images, the model's eval
 * preprocessing) or as preprocessed tensors (--pixels, safetensors with one
 * F32 tensor (N,3,S,S)); texts as strings (--texts, the CLIP tokenizer) or
 * as ids (--tokens, safetensors with one integer tensor (M,context), or a
 * text file with one row of ids per line). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend_select.h"
#include "checkpoint.h"
#include "cli.h"
#include "data_file.h"
#include "fileio.h"
#include "image_decode.h"
#include "image_transform.h"
#include "model.h"
#include "safetensors.h"
#include "tokenizer.h"

#define EMBED_CHUNK 64

typedef struct {
    const char *model, *config, *out, *pixels, *tokens, *backend;
    const char **texts, **images;
    int n_texts, n_images, threads;
    long long max_pixels;
} embed_args;

static void usage(FILE *f) {
    fprintf(f, "usage: tinyclip embed MODEL [--model CONFIG] (--images FILE... | --pixels FILE)\n"
               "                      (--texts TEXT... | --tokens FILE) --out FILE [--backend NAME]\n"
               "  MODEL           checkpoint: .safetensors file or open_clip / Hugging Face directory\n"
               "  --model CONFIG  model config JSON when the checkpoint carries none\n"
               "  --images FILE.. JPEG/PNG files, eval preprocessing of the model\n"
               "  --max-pixels N  refuse an image of more than N pixels, read from its header\n"
               "                  before decoding (default 89478485, Pillow's limit)\n"
               "  --pixels FILE   safetensors with one F32 tensor (N,3,S,S), already preprocessed\n"
               "  --texts TEXT..  captions, tokenized with the CLIP tokenizer\n"
               "  --tokens FILE   safetensors with one integer tensor (M,context), or a text file of ids\n"
               "  --out FILE      output safetensors (image_features, text_features)\n");
}

/* a list option takes every following argument up to the next --option */
static int take_list(int argc, char **argv, int *i, const char ***list, int *n) {
    int start = *i + 1, end = start;
    while (end < argc && strncmp(argv[end], "--", 2) != 0) end++;
    *list = (const char **)argv + start;
    *n = end - start;
    *i = end - 1;
    return *n > 0;
}

static int parse(int argc, char **argv, embed_args *a) {
    memset(a, 0, sizeof *a);
    a->backend = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(o, "--texts") == 0) {
            if (!take_list(argc, argv, &i, &a->texts, &a->n_texts)) goto missing;
            continue;
        }
        if (strcmp(o, "--images") == 0) {
            if (!take_list(argc, argv, &i, &a->images, &a->n_images)) goto missing;
            continue;
        }
        if (strncmp(o, "--", 2) != 0) {
            if (a->model) {
                fprintf(stderr, "tinyclip embed: unexpected argument %s\n", o);
                return 2;
            }
            a->model = o;
            continue;
        }
        if (i + 1 >= argc) goto missing;
        const char *v = argv[++i];
        if (strcmp(o, "--model") == 0) a->config = v;
        else if (strcmp(o, "--out") == 0) a->out = v;
        else if (strcmp(o, "--pixels") == 0) a->pixels = v;
        else if (strcmp(o, "--tokens") == 0) a->tokens = v;
        else if (strcmp(o, "--backend") == 0) a->backend = v;
        else if (strcmp(o, "--threads") == 0) a->threads = atoi(v);
        else if (strcmp(o, "--max-pixels") == 0) {
            char *end = NULL;
            a->max_pixels = strtoll(v, &end, 10);
            if (!end || *end || a->max_pixels <= 0) {
                fprintf(stderr, "tinyclip embed: --max-pixels takes a positive integer, got '%s'\n", v);
                return 2;
            }
        }
        else {
            fprintf(stderr, "tinyclip embed: unknown option %s\n", o);
            usage(stderr);
            return 2;
        }
        continue;
    missing:
        fprintf(stderr, "tinyclip embed: %s needs a value\n", o);
        return 2;
    }
    if (!a->model || !a->out || (!a->pixels && !a->images && !a->tokens && !a->texts)) {
        usage(stderr);
        return 2;
    }
    if ((a->pixels && a->images) || (a->tokens && a->texts)) {
        fprintf(stderr, "tinyclip embed: give images either as --images or --pixels, texts as --texts or --tokens\n");
        return 2;
    }
    return -1;
}

/* (n,3,S,S) preprocessed images from --pixels or --images */
static tc_status load_images(const embed_args *a, const tc_model_config *c, float **out, int *n) {
    int S = c->vision.image_size;
    size_t per = (size_t)3 * S * S;
    *out = NULL;
    *n = 0;
    if (a->pixels) {
        tc_safetensors *f;
        TC_TRY(tc_st_open(&f, a->pixels));
        tc_status s = TC_OK;
        if (tc_st_count(f) != 1) {
            s = tc_fail(TC_ERR_FORMAT, "%s: expected one tensor (N,3,%d,%d), found %d", a->pixels, S, S,
                        tc_st_count(f));
        } else {
            const tc_st_tensor *t = tc_st_tensor_at(f, 0);
            if (t->ndim != 4 || t->shape[1] != 3 || t->shape[2] != S || t->shape[3] != S || t->shape[0] < 1)
                s = tc_fail(TC_ERR_FORMAT, "%s: tensor %s must have shape (N,3,%d,%d) for this model", a->pixels,
                            t->name, S, S);
            else if (!(*out = malloc(t->numel * sizeof(float))))
                s = tc_fail(TC_ERR_OOM, "%s: out of memory", a->pixels);
            else if ((s = tc_st_tensor_to_f32(f, t, *out)) == TC_OK)
                *n = (int)t->shape[0];
        }
        tc_st_close(f);
        return s;
    }
    if (!(*out = malloc(per * (size_t)a->n_images * sizeof(float))))
        return tc_fail(TC_ERR_OOM, "embed: out of memory for %d images", a->n_images);
    tc_image_decoder *dec;
    TC_TRY(tc_image_decoder_create(&dec));
    if (a->max_pixels > 0) tc_image_decoder_set_max_pixels(dec, a->max_pixels);
    tc_transform_cfg tcfg = tc_transform_default(S, 0);
    tc_status s = TC_OK;
    for (int i = 0; i < a->n_images && s == TC_OK; i++) {
        uint8_t *data = NULL;
        size_t len = 0;
        tc_image img = {0};
        char why[160];
        /* only regular files: a FIFO or a directory is named, never waited on */
        if (tc_data_read_file(a->images[i], (size_t)1 << 30, &data, &len, why, sizeof why) != 0)
            s = tc_fail(TC_ERR_IO, "%s: %s", a->images[i], why);
        if (s == TC_OK) s = tc_image_decode(dec, data, len, a->images[i], 0, &img); /* full decode: open_clip parity */
        if (s == TC_OK) s = tc_transform_apply(&tcfg, &img, NULL, NULL, *out + per * i, NULL);
        tc_image_free(&img);
        free(data);
    }
    tc_image_decoder_destroy(dec);
    if (s == TC_OK) *n = a->n_images;
    return s;
}

/* a text file of ids: one text per line, ids separated by spaces, padded with 0 */
static tc_status read_id_lines(const char *path, int T, int32_t **out, int *n) {
    char *data;
    size_t len;
    TC_TRY(tc_read_file_bounded(path, (size_t)1 << 30, &data, &len));
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        if (data[i] == '\n' || i + 1 == len) lines++;
    int32_t *ids = calloc((size_t)(lines ? lines : 1) * T, sizeof *ids);
    if (!ids) {
        free(data);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    int row = 0;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int col = 0;
        char *end;
        for (char *p = line;;) {
            while (*p == ' ' || *p == '\t' || *p == '\r') p++;
            if (!*p) break;
            long v = strtol(p, &end, 10);
            if (end == p || col >= T || v < 0 || v > 0x7fffffff) {
                free(ids);
                free(data);
                return tc_fail(TC_ERR_FORMAT, "%s: line %d: %s", path, row + 1,
                               end == p ? "not an integer id" : col >= T ? "more ids than the context length" : "id out of range");
            }
            ids[(size_t)row * T + col++] = (int32_t)v;
            p = end;
        }
        if (col > 0) row++;
    }
    free(data);
    if (row == 0) {
        free(ids);
        return tc_fail(TC_ERR_FORMAT, "%s: no token ids", path);
    }
    *out = ids;
    *n = row;
    return TC_OK;
}

static tc_status load_tokens(const embed_args *a, const tc_model_config *c, int32_t **out, int *n) {
    int T = c->text.context_length;
    *out = NULL;
    *n = 0;
    if (a->texts) {
        tc_tokenizer *tok;
        TC_TRY(tc_tokenizer_create(&tok, NULL));
        int32_t *ids = calloc((size_t)a->n_texts * T, sizeof *ids);
        tc_status s = ids ? TC_OK : tc_fail(TC_ERR_OOM, "embed: out of memory");
        for (int i = 0; i < a->n_texts && s == TC_OK; i++) {
            int used;
            s = tc_tokenize(tok, a->texts[i], strlen(a->texts[i]), ids + (size_t)i * T, T, &used);
        }
        tc_tokenizer_destroy(tok);
        if (s != TC_OK) {
            free(ids);
            return s;
        }
        *out = ids;
        *n = a->n_texts;
        return TC_OK;
    }
    tc_safetensors *f;
    if (tc_st_open(&f, a->tokens) != TC_OK) return read_id_lines(a->tokens, T, out, n);
    tc_status s = TC_OK;
    const tc_st_tensor *t = tc_st_count(f) == 1 ? tc_st_tensor_at(f, 0) : NULL;
    if (!t || t->ndim != 2 || t->shape[1] != T || t->shape[0] < 1 ||
        (t->dtype != TC_DT_I32 && t->dtype != TC_DT_I64)) {
        s = tc_fail(TC_ERR_FORMAT, "%s: expected one I32/I64 tensor of shape (M,%d)", a->tokens, T);
    } else {
        int32_t *ids = malloc(t->numel * sizeof *ids);
        if (!ids) s = tc_fail(TC_ERR_OOM, "%s: out of memory", a->tokens);
        for (uint64_t i = 0; ids && i < t->numel; i++) {
            int64_t v;
            if (t->dtype == TC_DT_I32) {
                int32_t x;
                memcpy(&x, (const char *)t->data + 4 * i, 4);
                v = x;
            } else {
                memcpy(&v, (const char *)t->data + 8 * i, 8);
            }
            if (v < 0 || v >= c->text.vocab_size) {
                s = tc_fail(TC_ERR_FORMAT, "%s: id %lld at index %llu is outside the vocabulary", a->tokens,
                            (long long)v, (unsigned long long)i);
                break;
            }
            ids[i] = (int32_t)v;
        }
        if (s == TC_OK) {
            *out = ids;
            *n = (int)t->shape[0];
        } else {
            free(ids);
        }
    }
    tc_st_close(f);
    return s;
}

/* runs a tower over n inputs in chunks; features (n,E) on the host */
static tc_status encode_all(tc_model *m, int is_text, const void *inputs, int n, float *features) {
    const tc_model_config *c = tc_model_cfg(m);
    tc_backend *be = tc_model_backend(m);
    int E = c->embed_dim, S = c->vision.image_size, T = c->text.context_length;
    for (int at = 0; at < n; at += EMBED_CHUNK) {
        int b = n - at < EMBED_CHUNK ? n - at : EMBED_CHUNK;
        if (is_text)
            TC_TRY(tc_model_encode_text(m, (const int32_t *)inputs + (size_t)at * T, b));
        else
            TC_TRY(tc_model_encode_image(m, (const float *)inputs + (size_t)at * 3 * S * S, b));
        float *dev = is_text ? tc_model_text_features(m) : tc_model_image_features(m);
        TC_TRY(be->download(be, features + (size_t)at * E, dev, (size_t)b * E * sizeof(float)));
    }
    return TC_OK;
}

/* 1 when a and b are the same file (b may not exist) */
static int same_file(const struct stat *a, const char *b) {
    struct stat sb;
    return b && stat(b, &sb) == 0 && sb.st_dev == a->st_dev && sb.st_ino == a->st_ino;
}

/* --out must not be one of the inputs: writing it would replace them */
static tc_status check_out(const embed_args *a) {
    struct stat so;
    if (stat(a->out, &so) != 0) return TC_OK; /* a new file */
    if (S_ISDIR(so.st_mode))
        return tc_fail(TC_ERR_ARG, "--out %s is a folder; give a file name", a->out);
    char *weights = NULL, *config = NULL;
    tc_status s = tc_checkpoint_resolve(a->model, &weights, &config);
    const char *what = NULL;
    if (s == TC_OK && same_file(&so, weights))
        what = "the model's weights";
    else if (s == TC_OK && same_file(&so, config))
        what = "the model's config";
    else if (same_file(&so, a->config))
        what = "the --model config";
    else if (same_file(&so, a->pixels))
        what = "the --pixels input";
    else if (same_file(&so, a->tokens))
        what = "the --tokens input";
    for (int i = 0; !what && i < a->n_images; i++)
        if (same_file(&so, a->images[i])) what = "one of the --images";
    free(weights);
    free(config);
    if (what)
        return tc_fail(TC_ERR_ARG,
                       "--out %s is %s; writing it would replace its own input: give another file",
                       a->out, what);
    return TC_OK;
}

/* NaN or inf in the weights gives NaN features without a word: named */
static tc_status check_params_finite(const char *model, const tc_param_layout *l, const float *p) {
    for (int i = 0; i < l->count; i++) {
        const tc_param_info *t = &l->params[i];
        for (size_t k = 0; k < t->count; k++)
            if (!isfinite(p[t->offset + k]))
                return tc_fail(TC_ERR_NONFINITE,
                               "%s: tensor '%s' holds a non-finite value (%g at element %zu)",
                               model, t->name, (double)p[t->offset + k], k);
    }
    return TC_OK;
}

/* rows (n of `per` floats: inputs or features), the first non-finite one
 * named by its input (names[i], else the file they came from) */
static tc_status check_rows_finite(const float *x, int n, size_t per, const char *what,
                                   const char **names, const char *file) {
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < per; k++) {
            if (isfinite(x[(size_t)i * per + k])) continue;
            if (names)
                return tc_fail(TC_ERR_NONFINITE,
                               "%s of '%s' hold a non-finite value (%g at element %zu)", what,
                               names[i], (double)x[(size_t)i * per + k], k);
            return tc_fail(TC_ERR_NONFINITE,
                           "%s: %s of row %d hold a non-finite value (%g at element %zu)",
                           file ? file : "?", what, i, (double)x[(size_t)i * per + k], k);
        }
    return TC_OK;
}

int tc_cmd_embed(int argc, char **argv) {
    embed_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0) return rc;
    tc_model_config hint, cfg;
    tc_param_layout layout = {0};
    float *params = NULL, *images = NULL, *img_feat = NULL, *txt_feat = NULL;
    int32_t *ids = NULL;
    int n_img = 0, n_txt = 0;
    tc_backend *be = NULL;
    tc_model *m = NULL;
    rc = 1;
    if (check_out(&a) != TC_OK) goto fail;
    if (a.config && tc_model_config_load(&hint, a.config) != TC_OK) goto fail;
    if (tc_checkpoint_load(a.model, a.config ? &hint : NULL, &cfg, &layout, &params) != TC_OK) goto fail;
    if (check_params_finite(a.model, &layout, params) != TC_OK) goto fail;
    if ((a.pixels || a.images) && load_images(&a, &cfg, &images, &n_img) != TC_OK) goto fail;
    size_t per_image = (size_t)3 * cfg.vision.image_size * cfg.vision.image_size;
    if (n_img &&
        check_rows_finite(images, n_img, per_image, "the pixels", a.images, a.pixels) != TC_OK)
        goto fail;
    if ((a.tokens || a.texts) && load_tokens(&a, &cfg, &ids, &n_txt) != TC_OK) goto fail;
    if (tc_backend_open(a.backend, a.threads, &be) != TC_OK) goto fail;
    tc_model_options opt = {.max_batch = EMBED_CHUNK, .train = 0};
    if (tc_model_create(&m, be, &cfg, opt) != TC_OK || tc_model_set_params(m, params) != TC_OK) goto fail;
    int E = cfg.embed_dim;
    tc_st_write_tensor out[2];
    int n_out = 0;
    if (n_img) {
        if (!(img_feat = malloc((size_t)n_img * E * sizeof *img_feat))) goto oom;
        if (encode_all(m, 0, images, n_img, img_feat) != TC_OK) goto fail;
        if (check_rows_finite(img_feat, n_img, (size_t)E, "the image features", a.images,
                              a.pixels) != TC_OK)
            goto fail;
        out[n_out++] = (tc_st_write_tensor){"image_features", TC_DT_F32, 2, {n_img, E}, img_feat};
    }
    if (n_txt) {
        if (!(txt_feat = malloc((size_t)n_txt * E * sizeof *txt_feat))) goto oom;
        if (encode_all(m, 1, ids, n_txt, txt_feat) != TC_OK) goto fail;
        if (check_rows_finite(txt_feat, n_txt, (size_t)E, "the text features", a.texts, a.tokens) !=
            TC_OK)
            goto fail;
        out[n_out++] = (tc_st_write_tensor){"text_features", TC_DT_F32, 2, {n_txt, E}, txt_feat};
    }
    const char *keys[] = {"format", "model"}, *values[] = {"pt", cfg.name};
    if (tc_st_write(a.out, out, n_out, keys, values, 2) != TC_OK) goto fail;
    printf("wrote %s: %d image and %d text features of dimension %d\n", a.out, n_img, n_txt, E);
    rc = 0;
    goto done;
oom:
    tc_fail(TC_ERR_OOM, "embed: out of memory");
fail:
    tc_cli_report("embed");
done:
    tc_model_destroy(m);
    if (be) be->destroy(be);
    free(txt_feat);
    free(img_feat);
    free(ids);
    free(images);
    free(params);
    tc_param_layout_free(&layout);
    return rc;
}
