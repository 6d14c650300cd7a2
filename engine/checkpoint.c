#include "checkpoint.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fileio.h"
#include "json.h"
#include "safetensors.h"

#define MAX_CONFIG_BYTES (16u << 20)
#define CANON_MAX 160

static const char *const MEAN_JSON = TC_CLIP_MEAN_JSON;
static const char *const STD_JSON = TC_CLIP_STD_JSON;

const char *tc_checkpoint_vocab_path(void) {
    const char *env = getenv("TINYCLIP_VOCAB");
    if (env && env[0]) return env;
#ifdef TC_SOURCE_DIR
    return TC_SOURCE_DIR "/third_party/vocab/bpe_simple_vocab_16e6.txt.gz";
#else
    return "third_party/vocab/bpe_simple_vocab_16e6.txt.gz";
#endif
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- locating files ---- */

tc_status tc_checkpoint_resolve(const char *path, char **weights_path, char **config_path) {
    *weights_path = *config_path = NULL;
    static const char *const pairs[][2] = {
        {"open_clip_model.safetensors", "open_clip_config.json"},
        {"open_clip_pytorch_model.safetensors", "open_clip_config.json"},
        {"model.safetensors", "config.json"},
    };
    if (tc_path_is_dir(path)) {
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
            char *w = tc_path_join(path, pairs[i][0]);
            if (!w) return tc_fail(TC_ERR_OOM, "out of memory");
            const char *why = tc_path_not_regular(w);
            if (why && strcmp(why, "no such file or directory") != 0) {
                /* there, but a FIFO, a folder, ...: said as what it is */
                tc_status s = tc_fail(TC_ERR_IO, "%s: %s", w, why);
                free(w);
                return s;
            }
            if (!why) {
                char *c = tc_path_join(path, pairs[i][1]);
                if (c && !tc_path_is_file(c)) {
                    free(c);
                    c = NULL;
                }
                *weights_path = w;
                *config_path = c;
                return TC_OK;
            }
            free(w);
        }
        static const char *const others[] = {
            "model.safetensors.index.json", "open_clip_pytorch_model.bin", "pytorch_model.bin",
            "open_clip_pytorch_model.pth",  "pytorch_model.pth",           "model.pth"};
        for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
            char *o = tc_path_join(path, others[i]);
            int exists = o && tc_path_is_file(o);
            free(o);
            if (exists && i == 0)
                return tc_fail(TC_ERR_UNSUPPORTED,
                               "%s: sharded Hugging Face checkpoints (%s) are not supported; "
                               "merge the shards into one model.safetensors",
                               path, others[i]);
            if (exists)
                return tc_fail(TC_ERR_UNSUPPORTED,
                               "%s: holds only a torch pickle (%s); this program reads "
                               "safetensors: convert it first (safetensors.torch.save_file)",
                               path, others[i]);
        }
        return tc_fail(TC_ERR_IO,
                       "%s: no weights found (expected open_clip_model.safetensors or "
                       "model.safetensors)",
                       path);
    }
    const char *why = tc_path_not_regular(path);
    if (why) return tc_fail(TC_ERR_IO, "%s: %s", path, why);
    *weights_path = strdup(path);
    if (!*weights_path) return tc_fail(TC_ERR_OOM, "out of memory");
    /* a config beside the file: <stem>.json, then the two standard names */
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) : 0;
    char *dir = slash ? strndup(path, dir_len ? dir_len : 1) : strdup(".");
    if (!dir) return tc_fail(TC_ERR_OOM, "out of memory");
    char *cands[3] = {NULL, NULL, NULL};
    if (ends_with(path, ".safetensors")) {
        size_t n = strlen(path) - strlen(".safetensors");
        cands[0] = malloc(n + 6);
        if (cands[0]) {
            memcpy(cands[0], path, n);
            memcpy(cands[0] + n, ".json", 6);
        }
    }
    const char *base = slash ? slash + 1 : path;
    if (starts_with(base, "open_clip"))
        cands[1] = tc_path_join(dir, "open_clip_config.json");
    else if (strcmp(base, "model.safetensors") == 0)
        cands[1] = tc_path_join(dir, "config.json");
    free(dir);
    for (int i = 0; i < 3; i++) {
        if (cands[i] && !*config_path && tc_path_is_file(cands[i])) {
            *config_path = cands[i];
            cands[i] = NULL;
        }
        free(cands[i]);
    }
    return TC_OK;
}

/* ---- key layouts ---- */

typedef enum { LAYOUT_OPENCLIP, LAYOUT_HF } key_layout;

typedef struct {
    char canon[CANON_MAX]; /* open_clip name */
    int ignored;           /* an entry the model has no use for (position_ids, OpenAI's ints) */
    int part;              /* -1 whole tensor; 0,1,2 = q,k,v rows of in_proj_* (HF) */
    int transpose;         /* stored as the transpose of the open_clip tensor (HF) */
    int used;
    const tc_st_tensor *t;
} src_entry;

static const char *strip(const char *k, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(k, prefix, n) == 0 ? k + n : k;
}

/* HF CLIPModel name -> open_clip name; returns 0 for an ignored entry
 * (position_ids) and -1 for a name that is not CLIPModel's */
static int hf_to_canon(const char *k, char *out, int *part, int *transpose) {
    *part = -1;
    *transpose = 0;
    static const char *const fixed[][2] = {
        {"vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"},
        {"vision_model.embeddings.class_embedding", "visual.class_embedding"},
        {"vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"},
        {"vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"},
        {"vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"},
        {"vision_model.post_layernorm.weight", "visual.ln_post.weight"},
        {"vision_model.post_layernorm.bias", "visual.ln_post.bias"},
        {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
        {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
        {"text_model.final_layer_norm.weight", "ln_final.weight"},
        {"text_model.final_layer_norm.bias", "ln_final.bias"},
        {"logit_scale", "logit_scale"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(k, fixed[i][0]) == 0) {
            snprintf(out, CANON_MAX, "%s", fixed[i][1]);
            return 1;
        }
    if (strcmp(k, "visual_projection.weight") == 0 || strcmp(k, "text_projection.weight") == 0) {
        snprintf(out, CANON_MAX, "%s", k[0] == 'v' ? "visual.proj" : "text_projection");
        *transpose = 1;
        return 1;
    }
    if (strcmp(k, "vision_model.embeddings.position_ids") == 0 ||
        strcmp(k, "text_model.embeddings.position_ids") == 0)
        return 0;
    const char *rest, *tower;
    if (starts_with(k, "vision_model.encoder.layers.")) {
        rest = k + strlen("vision_model.encoder.layers.");
        tower = "visual.transformer.resblocks.";
    } else if (starts_with(k, "text_model.encoder.layers.")) {
        rest = k + strlen("text_model.encoder.layers.");
        tower = "transformer.resblocks.";
    } else {
        return -1;
    }
    int layer = 0, digits = 0;
    while (isdigit((unsigned char)rest[digits]) && digits < 4)
        layer = layer * 10 + (rest[digits++] - '0');
    if (digits == 0 || rest[digits] != '.') return -1;
    rest += digits + 1;
    static const char *const sub[][2] = {
        {"self_attn.out_proj.weight", "attn.out_proj.weight"},
        {"self_attn.out_proj.bias", "attn.out_proj.bias"},
        {"layer_norm1.weight", "ln_1.weight"},
        {"layer_norm1.bias", "ln_1.bias"},
        {"layer_norm2.weight", "ln_2.weight"},
        {"layer_norm2.bias", "ln_2.bias"},
        {"mlp.fc1.weight", "mlp.c_fc.weight"},
        {"mlp.fc1.bias", "mlp.c_fc.bias"},
        {"mlp.fc2.weight", "mlp.c_proj.weight"},
        {"mlp.fc2.bias", "mlp.c_proj.bias"},
    };
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++)
        if (strcmp(rest, sub[i][0]) == 0) {
            snprintf(out, CANON_MAX, "%s%d.%s", tower, layer, sub[i][1]);
            return 1;
        }
    static const char qkv[3] = {'q', 'k', 'v'};
    for (int p = 0; p < 3; p++) {
        char w[32], b[32];
        snprintf(w, sizeof w, "self_attn.%c_proj.weight", qkv[p]);
        snprintf(b, sizeof b, "self_attn.%c_proj.bias", qkv[p]);
        if (strcmp(rest, w) == 0 || strcmp(rest, b) == 0) {
            snprintf(out, CANON_MAX, "%s%d.attn.in_proj_%s", tower, layer,
                     strcmp(rest, w) == 0 ? "weight" : "bias");
            *part = p;
            return 1;
        }
    }
    return -1;
}

/* open_clip name (and q/k/v part) -> HF CLIPModel name */
static int canon_to_hf(const char *c, int part, char *out, size_t cap) {
    static const char *const fixed[][2] = {
        {"visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"},
        {"visual.class_embedding", "vision_model.embeddings.class_embedding"},
        {"visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"},
        {"visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"},
        {"visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"},
        {"visual.ln_post.weight", "vision_model.post_layernorm.weight"},
        {"visual.ln_post.bias", "vision_model.post_layernorm.bias"},
        {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
        {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
        {"ln_final.weight", "text_model.final_layer_norm.weight"},
        {"ln_final.bias", "text_model.final_layer_norm.bias"},
        {"logit_scale", "logit_scale"},
        {"visual.proj", "visual_projection.weight"},
        {"text_projection", "text_projection.weight"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(c, fixed[i][0]) == 0) {
            snprintf(out, cap, "%s", fixed[i][1]);
            return 1;
        }
    const char *rest, *tower;
    if (starts_with(c, "visual.transformer.resblocks.")) {
        rest = c + strlen("visual.transformer.resblocks.");
        tower = "vision_model.encoder.layers.";
    } else if (starts_with(c, "transformer.resblocks.")) {
        rest = c + strlen("transformer.resblocks.");
        tower = "text_model.encoder.layers.";
    } else {
        return 0;
    }
    int layer = atoi(rest);
    const char *dot = strchr(rest, '.');
    if (!dot) return 0;
    rest = dot + 1;
    static const char *const sub[][2] = {
        {"attn.out_proj.weight", "self_attn.out_proj.weight"},
        {"attn.out_proj.bias", "self_attn.out_proj.bias"},
        {"ln_1.weight", "layer_norm1.weight"},
        {"ln_1.bias", "layer_norm1.bias"},
        {"ln_2.weight", "layer_norm2.weight"},
        {"ln_2.bias", "layer_norm2.bias"},
        {"mlp.c_fc.weight", "mlp.fc1.weight"},
        {"mlp.c_fc.bias", "mlp.fc1.bias"},
        {"mlp.c_proj.weight", "mlp.fc2.weight"},
        {"mlp.c_proj.bias", "mlp.fc2.bias"},
    };
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++)
        if (strcmp(rest, sub[i][0]) == 0) {
            snprintf(out, cap, "%s%d.%s", tower, layer, sub[i][1]);
            return 1;
        }
    if ((strcmp(rest, "attn.in_proj_weight") == 0 || strcmp(rest, "attn.in_proj_bias") == 0) &&
        part >= 0 && part < 3) {
        snprintf(out, cap, "%s%d.self_attn.%c_proj.%s", tower, layer, "qkv"[part],
                 ends_with(rest, "weight") ? "weight" : "bias");
        return 1;
    }
    return 0;
}

/* source key -> open_clip name for the non-HF layouts; returns 1 for an
 * entry to ignore. any other name that is no parameter (the empty name too)
 * is reported as unexpected */
static int openclip_canon(const char *k, char *out) {
    k = strip(k, "state_dict.");
    k = strip(k, "module.");
    if (starts_with(k, "_image_encoder.")) {
        k = strip(strip(k, "_image_encoder."), "module.");
    } else if (starts_with(k, "_text_encoder.")) {
        k = strip(strip(k, "_text_encoder."), "module.");
    } else if (starts_with(k, "_logit_scale.")) {
        k = strip(strip(k, "_logit_scale."), "module.");
    } else if (starts_with(k, "text.")) {
        static const char *const roots[] = {"token_embedding.", "positional_embedding",
                                            "transformer.", "ln_final.", "text_projection"};
        for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++)
            if (starts_with(k + 5, roots[i])) {
                k += 5;
                break;
            }
    }
    if (strcmp(k, "input_resolution") == 0 || strcmp(k, "context_length") == 0 ||
        strcmp(k, "vocab_size") == 0) {
        out[0] = 0;
        return 1;
    }
    snprintf(out, CANON_MAX, "%s", k);
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    const src_entry *x = a, *y = b;
    int c = strcmp(x->canon, y->canon);
    if (c) return c;
    return (x->part > y->part) - (x->part < y->part);
}

static const src_entry *find_entry(const src_entry *e, int n, const char *canon, int part) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(canon, e[mid].canon);
        if (c == 0) c = (part > e[mid].part) - (part < e[mid].part);
        if (c == 0) return &e[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static int same_shape(const tc_st_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

static tc_status shape_error(const char *file, const tc_st_tensor *t, const char *canon, int ndim,
                             const int64_t *want) {
    char a[96], b[96];
    shape_str(a, sizeof a, t->ndim, t->shape);
    shape_str(b, sizeof b, ndim, want);
    if (strcmp(t->name, canon) == 0)
        return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' has shape %s, the model config expects %s",
                       file, t->name, a, b);
    return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' (%s) has shape %s, the model config expects %s",
                   file, t->name, canon, a, b);
}

/* a BatchNorm buffer stored as integers (num_batches_tracked is int64 in
 * torch): the count as fp32, exact up to 2^24 */
static tc_status read_int_buffer(const tc_safetensors *st, const tc_st_tensor *t, float *dst) {
    for (uint64_t i = 0; i < t->numel; i++) {
        int64_t v;
        if (t->dtype == TC_DT_I64) {
            memcpy(&v, (const char *)t->data + 8 * i, 8);
        } else {
            int32_t w;
            memcpy(&w, (const char *)t->data + 4 * i, 4);
            v = w;
        }
        if (v < 0 || v > (1 << 24))
            return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' holds %lld, outside [0, 2^24]",
                           tc_st_source(st), t->name, (long long)v);
        dst[i] = (float)v;
    }
    return TC_OK;
}

/* dst NULL: the dtype is checked, nothing is read (tc_checkpoint_check) */
static tc_status read_tensor(const tc_safetensors *st, const tc_st_tensor *t, float *dst,
                             int buffer) {
    if (buffer && (t->dtype == TC_DT_I64 || t->dtype == TC_DT_I32))
        return dst ? read_int_buffer(st, t, dst) : TC_OK;
    if (!tc_dtype_is_float_readable(t->dtype))
        return tc_fail(TC_ERR_FORMAT,
                       "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                       tc_st_source(st), t->name, tc_dtype_name(t->dtype));
    return dst ? tc_st_tensor_to_f32(st, t, dst) : TC_OK;
}

/* fills params (layout order) from the file through the key mapping;
 * params NULL: names, shapes and dtypes are checked, no tensor is read */
static tc_status load_params(const tc_safetensors *st, src_entry *e, int n, key_layout kl,
                             const tc_param_layout *layout, float *params) {
    const char *file = tc_st_source(st);
    for (int i = 0; i < layout->count; i++) {
        const tc_param_info *p = &layout->params[i];
        float *dst = params ? params + p->offset : NULL;
        const src_entry *s = find_entry(e, n, p->name, -1);
        if (!s && kl == LAYOUT_HF && strstr(p->name, "attn.in_proj_")) {
            /* q, k, v stacked on dim 0: each is a third of the rows */
            int64_t part_shape[2] = {p->shape[0] / 3, p->ndim > 1 ? p->shape[1] : 0};
            size_t part_count = p->count / 3;
            for (int q = 0; q < 3; q++) {
                const src_entry *sq = find_entry(e, n, p->name, q);
                char hf[CANON_MAX];
                if (!sq) {
                    canon_to_hf(p->name, q, hf, sizeof hf);
                    return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' is missing (part of %s)", file,
                                   hf, p->name);
                }
                if (!same_shape(sq->t, p->ndim, part_shape))
                    return shape_error(file, sq->t, p->name, p->ndim, part_shape);
                TC_TRY(read_tensor(st, sq->t, dst ? dst + (size_t)q * part_count : NULL, 0));
                ((src_entry *)sq)->used = 1;
            }
            continue;
        }
        if (!s && p->buffer && p->ndim == 0) {
            /* a BatchNorm's batch count, absent from older state dicts (torch
             * itself fills it in then); the running statistics are required */
            dst[0] = 0.0f;
            continue;
        }
        if (!s) {
            char hf[CANON_MAX];
            if (kl == LAYOUT_HF && canon_to_hf(p->name, -1, hf, sizeof hf))
                return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' (%s) is missing", file, hf, p->name);
            return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' is missing", file, p->name);
        }
        const tc_st_tensor *t = s->t;
        if (p->ndim == 0) {
            /* logit_scale is [] in open_clip and HF, [1] in some exports */
            if (!(t->ndim == 0 || (t->ndim == 1 && t->shape[0] == 1)))
                return shape_error(file, t, p->name, 0, p->shape);
            TC_TRY(read_tensor(st, t, dst, p->buffer));
        } else if (s->transpose) {
            int64_t want[2] = {p->shape[1], p->shape[0]};
            if (p->ndim != 2 || !same_shape(t, 2, want))
                return shape_error(file, t, p->name, 2, want);
            if (!dst) {
                TC_TRY(read_tensor(st, t, NULL, 0));
                ((src_entry *)s)->used = 1;
                continue;
            }
            float *tmp = malloc(p->count * sizeof *tmp);
            if (!tmp) return tc_fail(TC_ERR_OOM, "%s: out of memory", file);
            tc_status rs = read_tensor(st, t, tmp, 0);
            if (rs != TC_OK) {
                free(tmp);
                return rs;
            }
            size_t R = (size_t)p->shape[0], C = (size_t)p->shape[1];
            for (size_t r = 0; r < R; r++)
                for (size_t c = 0; c < C; c++)
                    dst[r * C + c] = tmp[c * R + r];
            free(tmp);
        } else {
            if (!same_shape(t, p->ndim, p->shape))
                return shape_error(file, t, p->name, p->ndim, p->shape);
            TC_TRY(read_tensor(st, t, dst, p->buffer));
        }
        ((src_entry *)s)->used = 1;
    }
    for (int i = 0; i < n; i++) {
        if (!e[i].ignored && !e[i].used) {
            if (strcmp(e[i].t->name, e[i].canon) == 0)
                return tc_fail(TC_ERR_FORMAT,
                               "%s: unexpected tensor '%s': not part of the model the config "
                               "describes",
                               file, e[i].t->name);
            return tc_fail(TC_ERR_FORMAT,
                           "%s: unexpected tensor '%s' (%s): not part of the model the config "
                           "describes",
                           file, e[i].t->name, e[i].canon);
        }
    }
    return TC_OK;
}

static tc_status build_entries(const tc_safetensors *st, src_entry **out, int *n_out,
                               key_layout *kl) {
    int n = tc_st_count(st);
    src_entry *e = calloc(n > 0 ? (size_t)n : 1, sizeof *e);
    if (!e) return tc_fail(TC_ERR_OOM, "out of memory");
    *kl = LAYOUT_OPENCLIP;
    for (int i = 0; i < n; i++) {
        const char *k = strip(strip(tc_st_tensor_at(st, i)->name, "state_dict."), "module.");
        if (starts_with(k, "vision_model.") || starts_with(k, "text_model.")) *kl = LAYOUT_HF;
    }
    for (int i = 0; i < n; i++) {
        const tc_st_tensor *t = tc_st_tensor_at(st, i);
        e[i].t = t;
        e[i].part = -1;
        if (strlen(t->name) >= CANON_MAX - 8) {
            /* cannot be a model key; reported as unexpected unless it matches nothing */
            snprintf(e[i].canon, CANON_MAX, "%.100s...", t->name);
            continue;
        }
        if (*kl == LAYOUT_HF) {
            const char *k = strip(strip(t->name, "state_dict."), "module.");
            int r = hf_to_canon(k, e[i].canon, &e[i].part, &e[i].transpose);
            if (r == 0)
                e[i].ignored = 1;
            else if (r < 0)
                snprintf(e[i].canon, CANON_MAX, "%s", k);
        } else {
            e[i].ignored = openclip_canon(t->name, e[i].canon);
        }
    }
    qsort(e, (size_t)n, sizeof *e, cmp_entry);
    for (int i = 1; i < n; i++)
        if (!e[i].ignored && !e[i - 1].ignored && cmp_entry(&e[i], &e[i - 1]) == 0) {
            tc_status s = tc_fail(TC_ERR_FORMAT, "%s: tensors '%s' and '%s' both map to '%s'",
                                  tc_st_source(st), e[i - 1].t->name, e[i].t->name, e[i].canon);
            free(e);
            return s;
        }
    *out = e;
    *n_out = n;
    return TC_OK;
}

/* params_out NULL: everything but reading the tensors (tc_checkpoint_check) */
static tc_status load(const char *path, const tc_model_config *hint, tc_model_config *cfg_out,
                      tc_param_layout *layout_out, float **params_out) {
    if (params_out) *params_out = NULL;
    memset(layout_out, 0, sizeof *layout_out);
    char *wpath = NULL, *cpath = NULL;
    tc_safetensors *st = NULL;
    src_entry *entries = NULL;
    float *params = NULL;
    int n = 0;
    key_layout kl = LAYOUT_OPENCLIP;
    tc_model_config cfg;
    tc_status s = tc_checkpoint_resolve(path, &wpath, &cpath);
    if (s != TC_OK) goto fail;
    s = tc_st_open(&st, wpath);
    if (s != TC_OK) goto fail;
    const char *meta_cfg = tc_st_metadata(st, "tinyclip_model_cfg");
    if (meta_cfg) {
        char src[1200];
        snprintf(src, sizeof src, "%s (__metadata__ tinyclip_model_cfg)", wpath);
        s = tc_model_config_parse(&cfg, meta_cfg, strlen(meta_cfg), src);
        if (s != TC_OK) goto fail;
        cfg.name[0] = 0; /* named after the checkpoint below */
    } else if (cpath) {
        s = tc_model_config_load(&cfg, cpath);
        if (s != TC_OK) goto fail;
    } else if (hint) {
        cfg = *hint;
        s = tc_model_config_validate(&cfg, hint->name[0] ? hint->name : "--model");
        if (s != TC_OK) goto fail;
    } else {
        s = tc_fail(TC_ERR_CONFIG,
                    "%s: no model config found beside the weights; pass --model CONFIG.json "
                    "(the activation, GELU or QuickGELU, cannot be inferred from weights)",
                    wpath);
        goto fail;
    }
    /* name the model after the checkpoint when the config has no useful name */
    if (!cfg.name[0] || strcmp(cfg.name, "open_clip_config") == 0 ||
        strcmp(cfg.name, "config") == 0) {
        if (hint && hint->name[0])
            snprintf(cfg.name, sizeof cfg.name, "%s", hint->name);
        else {
            /* the directory or file name, without a trailing slash or .safetensors */
            char tmp[1024];
            snprintf(tmp, sizeof tmp, "%s", path);
            size_t n = strlen(tmp);
            while (n > 1 && tmp[n - 1] == '/')
                tmp[--n] = 0;
            if (n > 12 && strcmp(tmp + n - 12, ".safetensors") == 0) tmp[n - 12] = 0;
            const char *b = strrchr(tmp, '/');
            snprintf(cfg.name, sizeof cfg.name, "%s", b ? b + 1 : tmp);
        }
    }
    s = build_entries(st, &entries, &n, &kl);
    if (s != TC_OK) goto fail;
    s = tc_param_layout_build(layout_out, &cfg);
    if (s != TC_OK) goto fail;
    if (params_out) params = malloc((layout_out->total ? layout_out->total : 1) * sizeof *params);
    if (params_out && !params) {
        s = tc_fail(TC_ERR_OOM, "%s: out of memory for %zu parameters", wpath, layout_out->total);
        goto fail;
    }
    s = load_params(st, entries, n, kl, layout_out, params);
    if (s != TC_OK) goto fail;
    *cfg_out = cfg;
    if (params_out) *params_out = params;
    free(entries);
    tc_st_close(st);
    free(wpath);
    free(cpath);
    return TC_OK;
fail:
    free(params);
    tc_param_layout_free(layout_out);
    free(entries);
    tc_st_close(st);
    free(wpath);
    free(cpath);
    return s;
}

tc_status tc_checkpoint_load(const char *path, const tc_model_config *hint,
                             tc_model_config *cfg_out, tc_param_layout *layout_out,
                             float **params_out) {
    return load(path, hint, cfg_out, layout_out, params_out);
}

tc_status tc_checkpoint_check(const char *path, const tc_model_config *hint,
                              tc_model_config *cfg_out) {
    tc_param_layout layout;
    tc_status s = load(path, hint, cfg_out, &layout, NULL);
    if (s == TC_OK) tc_param_layout_free(&layout);
    return s;
}

/* ---- saving ---- */

static tc_status write_string_file(const char *dir, const char *name, const char *text) {
    return tc_write_file_atomic_in(dir, name, text, strlen(text));
}

static void fill_write(tc_st_write_tensor *w, const char *name, const tc_param_info *p,
                       const float *data) {
    memset(w, 0, sizeof *w);
    w->name = name;
    w->dtype = TC_DT_F32;
    w->ndim = p->ndim;
    for (int d = 0; d < p->ndim; d++)
        w->shape[d] = p->shape[d];
    w->data = data;
}

/* num_batches_tracked is an int64 buffer in torch: written as I64 (a
 * load_state_dict into the model copies whatever dtype it gets, but the
 * file then reads as torch's own) */
static tc_status int_buffers(const tc_param_layout *layout, const float *params,
                             tc_st_write_tensor *w, int64_t **out) {
    int n = 0;
    for (int i = 0; i < layout->count; i++)
        if (layout->params[i].buffer && layout->params[i].ndim == 0) n++;
    *out = NULL;
    if (n == 0) return TC_OK;
    int64_t *v = calloc((size_t)n, sizeof *v);
    if (!v) return tc_fail(TC_ERR_OOM, "out of memory");
    for (int i = 0, k = 0; i < layout->count; i++) {
        const tc_param_info *p = &layout->params[i];
        if (!p->buffer || p->ndim != 0) continue;
        v[k] = (int64_t)llroundf(params[p->offset]);
        w[i].dtype = TC_DT_I64;
        w[i].data = &v[k++];
    }
    *out = v;
    return TC_OK;
}

static tc_status parse_extra_metadata(const char *json, tc_json **out) {
    *out = NULL;
    if (!json) return TC_OK;
    TC_TRY(tc_json_parse(json, strlen(json), "checkpoint metadata", out));
    tc_json *m = *out;
    if (m->type != TC_JSON_OBJECT) {
        tc_json_free(m);
        *out = NULL;
        return tc_fail(TC_ERR_ARG, "checkpoint metadata: expected a JSON object of strings");
    }
    for (size_t i = 0; i < m->count; i++)
        if (m->items[i].type != TC_JSON_STRING || strlen(m->keys[i]) != m->key_lens[i] ||
            strlen(m->items[i].string) != m->items[i].string_len) {
            tc_status s = tc_fail(TC_ERR_ARG, "checkpoint metadata: value of '%s' is not a string",
                                  m->keys[i]);
            tc_json_free(m);
            *out = NULL;
            return s;
        }
    return TC_OK;
}

static tc_status save_openclip_weights(const char *path, const tc_model_config *cfg,
                                       const tc_param_layout *layout, const float *params,
                                       const char *extra_json, int embed_config) {
    tc_json *extra = NULL;
    TC_TRY(parse_extra_metadata(extra_json, &extra));
    char *cfg_json = NULL;
    tc_status s = TC_OK;
    if (embed_config) s = tc_model_config_to_json(cfg, &cfg_json);
    size_t n_extra = extra ? extra->count : 0;
    int64_t *counts = NULL;
    const char **keys = calloc(n_extra + 2, sizeof *keys);
    const char **vals = calloc(n_extra + 2, sizeof *vals);
    tc_st_write_tensor *w = calloc((size_t)layout->count + 1, sizeof *w);
    if (s == TC_OK && (!keys || !vals || !w)) s = tc_fail(TC_ERR_OOM, "out of memory");
    if (s == TC_OK) {
        int nm = 0;
        keys[nm] = "format";
        vals[nm++] = "pt";
        if (cfg_json) {
            keys[nm] = "tinyclip_model_cfg";
            vals[nm++] = cfg_json;
        }
        for (size_t i = 0; i < n_extra; i++) {
            if (strcmp(extra->keys[i], "format") == 0 ||
                strcmp(extra->keys[i], "tinyclip_model_cfg") == 0)
                continue;
            keys[nm] = extra->keys[i];
            vals[nm++] = extra->items[i].string;
        }
        for (int i = 0; i < layout->count; i++)
            fill_write(&w[i], layout->params[i].name, &layout->params[i],
                       params + layout->params[i].offset);
        s = int_buffers(layout, params, w, &counts);
        if (s == TC_OK) s = tc_st_write(path, w, layout->count, keys, vals, nm);
    }
    free(counts);
    free(w);
    free(keys);
    free(vals);
    free(cfg_json);
    tc_json_free(extra);
    return s;
}

tc_status tc_checkpoint_save_file(const char *path, const tc_model_config *cfg,
                                  const tc_param_layout *layout, const float *params,
                                  const char *metadata_json_or_null) {
    TC_TRY(tc_param_layout_check(cfg, layout, "checkpoint save"));
    return save_openclip_weights(path, cfg, layout, params, metadata_json_or_null, 1);
}

static tc_status save_openclip(const char *dir, const tc_model_config *cfg,
                               const tc_param_layout *layout, const float *params) {
    char *wpath = tc_path_join(dir, "open_clip_model.safetensors");
    if (!wpath) return tc_fail(TC_ERR_OOM, "out of memory");
    tc_status s = save_openclip_weights(wpath, cfg, layout, params, NULL, 1);
    free(wpath);
    TC_TRY(s);
    char *model_json;
    TC_TRY(tc_model_config_to_json(cfg, &model_json));
    /* indent the model config one level inside the wrapper */
    tc_sbuf b = {0};
    tc_sbuf_puts(&b, "{\n    \"model_cfg\": ");
    tc_sbuf_indented(&b, model_json, "    ");
    free(model_json);
    tc_sbuf_printf(
        &b,
        ",\n    \"preprocess_cfg\": {\n        \"mean\": %s,\n        \"std\": %s,\n"
        "        \"interpolation\": \"bicubic\",\n        \"resize_mode\": \"shortest\"\n"
        "    }\n}\n",
        MEAN_JSON, STD_JSON);
    char *text;
    TC_TRY(tc_sbuf_finish(&b, &text));
    s = write_string_file(dir, "open_clip_config.json", text);
    free(text);
    return s;
}

/* ---- Hugging Face tokenizer files from the CLIP BPE vocabulary ---- */

#define N_MERGES 48894

static tc_status read_gz(const char *path, char **out, size_t *len) {
    *out = NULL;
    gzFile g = gzopen(path, "rb");
    if (!g)
        return tc_fail(TC_ERR_IO,
                       "%s: cannot open the CLIP vocabulary (run scripts/setup or set "
                       "TINYCLIP_VOCAB)",
                       path);
    size_t cap = 4u << 20, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            gzclose(g);
            return tc_fail(TC_ERR_OOM, "out of memory");
        }
        if (cap - n < (1u << 20)) {
            if (cap > (64u << 20)) {
                free(buf);
                gzclose(g);
                return tc_fail(TC_ERR_FORMAT, "%s: vocabulary larger than 64 MiB", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
            continue;
        }
        int r = gzread(g, buf + n, (unsigned)(cap - n - 1));
        if (r < 0) {
            free(buf);
            gzclose(g);
            return tc_fail(TC_ERR_FORMAT, "%s: corrupt gzip data", path);
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(g);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return TC_OK;
}

/* bytes_to_unicode (docs/design.md §9): byte -> code point, and the byte order of
 * the first 256 vocabulary entries */
static void byte_table(unsigned cp[256], int order[256]) {
    int n = 0, k = 0;
    int printable[256] = {0};
    for (int b = 33; b <= 126; b++)
        printable[b] = 1;
    for (int b = 161; b <= 172; b++)
        printable[b] = 1;
    for (int b = 174; b <= 255; b++)
        printable[b] = 1;
    for (int b = 0; b < 256; b++)
        if (printable[b]) {
            cp[b] = (unsigned)b;
            order[k++] = b;
        }
    for (int b = 0; b < 256; b++)
        if (!printable[b]) {
            cp[b] = 256u + (unsigned)n++;
            order[k++] = b;
        }
}

static void put_cp(tc_sbuf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    }
    tc_sbuf_append(b, u, n);
}

static tc_status write_tokenizer_files(const char *dir, int context_length) {
    const char *vpath = tc_checkpoint_vocab_path();
    char *text;
    size_t len = 0;
    TC_TRY(read_gz(vpath, &text, &len));
    /* lines 1..N_MERGES are the merges used (line 0 is a header) */
    const char **lines = malloc(N_MERGES * sizeof *lines);
    size_t *lens = malloc(N_MERGES * sizeof *lens);
    if (!lines || !lens) {
        free(lines);
        free(lens);
        free(text);
        return tc_fail(TC_ERR_OOM, "out of memory");
    }
    const char *p = text, *end = text + len;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    int got = 0;
    if (nl) {
        p = nl + 1;
        while (got < N_MERGES && p < end) {
            nl = memchr(p, '\n', (size_t)(end - p));
            const char *e = nl ? nl : end;
            const char *sp = memchr(p, ' ', (size_t)(e - p));
            if (!sp || sp == p || sp + 1 >= e || memchr(sp + 1, ' ', (size_t)(e - sp - 1))) break;
            lines[got] = p;
            lens[got] = (size_t)(e - p);
            got++;
            p = nl ? nl + 1 : end;
        }
    }
    if (got != N_MERGES) {
        free(lines);
        free(lens);
        free(text);
        return tc_fail(TC_ERR_FORMAT, "%s: expected at least %d merge lines after the header",
                       vpath, N_MERGES);
    }
    tc_sbuf merges = {0}, vocab = {0};
    tc_sbuf_puts(&merges, "#version: 0.2\n");
    unsigned cp[256];
    int order[256];
    byte_table(cp, order);
    tc_sbuf_puts(&vocab, "{");
    int id = 0;
    for (int suffix = 0; suffix < 2; suffix++)
        for (int i = 0; i < 256; i++) {
            tc_sbuf tok = {0};
            put_cp(&tok, cp[order[i]]);
            if (suffix) tc_sbuf_puts(&tok, "</w>");
            tc_sbuf_puts(&vocab, id ? ",\n" : "\n");
            tc_sbuf_json_string(&vocab, tok.data ? tok.data : "", tok.len);
            tc_sbuf_printf(&vocab, ": %d", id++);
            if (tok.oom) vocab.oom = 1;
            tc_sbuf_free(&tok);
        }
    for (int i = 0; i < N_MERGES; i++) {
        tc_sbuf_append(&merges, lines[i], lens[i]);
        tc_sbuf_puts(&merges, "\n");
        const char *sp = memchr(lines[i], ' ', lens[i]);
        size_t a = (size_t)(sp - lines[i]);
        tc_sbuf tok = {0};
        tc_sbuf_append(&tok, lines[i], a);
        tc_sbuf_append(&tok, sp + 1, lens[i] - a - 1);
        tc_sbuf_puts(&vocab, ",\n");
        tc_sbuf_json_string(&vocab, tok.data ? tok.data : "", tok.len);
        tc_sbuf_printf(&vocab, ": %d", id++);
        if (tok.oom) vocab.oom = 1;
        tc_sbuf_free(&tok);
    }
    tc_sbuf_printf(&vocab, ",\n\"<|startoftext|>\": %d,\n\"<|endoftext|>\": %d\n}\n", id, id + 1);
    free(lines);
    free(lens);
    free(text);
    char *vj = NULL, *mt = NULL;
    tc_status s = tc_sbuf_finish(&vocab, &vj);
    if (s == TC_OK)
        s = tc_sbuf_finish(&merges, &mt);
    else
        tc_sbuf_free(&merges);
    if (s == TC_OK) s = write_string_file(dir, "vocab.json", vj);
    if (s == TC_OK) s = write_string_file(dir, "merges.txt", mt);
    free(vj);
    free(mt);
    TC_TRY(s);
    static const char *const specials =
        "  \"bos_token\": \"<|startoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
        "  \"pad_token\": \"<|endoftext|>\",\n  \"unk_token\": \"<|endoftext|>\"";
    char buf[1024];
    snprintf(buf, sizeof buf, "{\n%s\n}\n", specials);
    TC_TRY(write_string_file(dir, "special_tokens_map.json", buf));
    snprintf(buf, sizeof buf,
             "{\n%s,\n  \"tokenizer_class\": \"CLIPTokenizer\",\n  \"model_max_length\": %d,\n"
             "  \"do_lower_case\": true,\n  \"errors\": \"replace\",\n"
             "  \"add_prefix_space\": false,\n  \"clean_up_tokenization_spaces\": false\n}\n",
             specials, context_length);
    return write_string_file(dir, "tokenizer_config.json", buf);
}

tc_status tc_checkpoint_save_tokenizer(const char *dir, int context_length) {
    return write_tokenizer_files(dir, context_length);
}

static tc_status save_hf(const char *dir, const tc_model_config *cfg, const tc_param_layout *layout,
                         const float *params) {
    char *config_json;
    TC_TRY(tc_model_config_to_hf_json(cfg, &config_json)); /* refuses what HF cannot express */
    int cap = layout->count + 2 * (cfg->vision.layers + cfg->text.layers) * 2 + 4;
    tc_st_write_tensor *w = calloc((size_t)cap, sizeof *w);
    char(*names)[CANON_MAX] = calloc((size_t)cap, sizeof *names);
    float *tv = NULL, *tt = NULL;
    tc_status s = TC_OK;
    if (!w || !names) s = tc_fail(TC_ERR_OOM, "out of memory");
    int n = 0;
    for (int i = 0; s == TC_OK && i < layout->count; i++) {
        const tc_param_info *p = &layout->params[i];
        const float *data = params + p->offset;
        if (strstr(p->name, "attn.in_proj_")) {
            size_t third = p->count / 3;
            for (int q = 0; q < 3; q++) {
                canon_to_hf(p->name, q, names[n], CANON_MAX);
                fill_write(&w[n], names[n], p, data + (size_t)q * third);
                w[n].shape[0] = p->shape[0] / 3;
                n++;
            }
            continue;
        }
        if (!canon_to_hf(p->name, -1, names[n], CANON_MAX)) {
            s = tc_fail(TC_ERR_UNSUPPORTED, "%s: tensor '%s' has no Hugging Face CLIP name", dir,
                        p->name);
            break;
        }
        fill_write(&w[n], names[n], p, data);
        if (strcmp(p->name, "visual.proj") == 0 || strcmp(p->name, "text_projection") == 0) {
            size_t R = (size_t)p->shape[0], C = (size_t)p->shape[1];
            float *t = malloc(p->count * sizeof *t);
            if (!t) {
                s = tc_fail(TC_ERR_OOM, "out of memory");
                break;
            }
            for (size_t r = 0; r < R; r++)
                for (size_t c = 0; c < C; c++)
                    t[c * R + r] = data[r * C + c];
            if (p->name[0] == 'v')
                tv = t;
            else
                tt = t;
            w[n].data = t;
            w[n].shape[0] = p->shape[1];
            w[n].shape[1] = p->shape[0];
        }
        n++;
    }
    char *wpath = tc_path_join(dir, "model.safetensors");
    if (s == TC_OK && !wpath) s = tc_fail(TC_ERR_OOM, "out of memory");
    if (s == TC_OK) {
        const char *k[] = {"format"}, *v[] = {"pt"};
        s = tc_st_write(wpath, w, n, k, v, 1);
    }
    free(wpath);
    free(tv);
    free(tt);
    free(w);
    free(names);
    if (s == TC_OK) s = write_string_file(dir, "config.json", config_json);
    free(config_json);
    TC_TRY(s);
    int px = cfg->vision.image_size;
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\n  \"image_processor_type\": \"CLIPImageProcessor\",\n  \"do_resize\": true,\n"
             "  \"size\": {\"shortest_edge\": %d},\n  \"resample\": 3,\n"
             "  \"do_center_crop\": true,\n  \"crop_size\": {\"height\": %d, \"width\": %d},\n"
             "  \"do_rescale\": true,\n  \"rescale_factor\": 0.00392156862745098,\n"
             "  \"do_normalize\": true,\n  \"image_mean\": %s,\n  \"image_std\": %s,\n"
             "  \"do_convert_rgb\": true\n}\n",
             px, px, px, MEAN_JSON, STD_JSON);
    TC_TRY(write_string_file(dir, "preprocessor_config.json", buf));
    return write_tokenizer_files(dir, cfg->text.context_length);
}

tc_status tc_checkpoint_save(const char *dir, tc_checkpoint_format fmt, const tc_model_config *cfg,
                             const tc_param_layout *layout, const float *params) {
    TC_TRY(tc_model_config_validate(cfg, cfg->name[0] ? cfg->name : "model config"));
    TC_TRY(tc_param_layout_check(cfg, layout, "checkpoint save"));
    if (fmt == TC_FORMAT_HF) {
        /* check what HF can express before creating anything */
        char *probe;
        TC_TRY(tc_model_config_to_hf_json(cfg, &probe));
        free(probe);
    }
    TC_TRY(tc_mkdir_p(dir));
    if (fmt == TC_FORMAT_OPENCLIP) return save_openclip(dir, cfg, layout, params);
    if (fmt == TC_FORMAT_HF) return save_hf(dir, cfg, layout, params);
    return tc_fail(TC_ERR_ARG, "checkpoint save: unknown format %d", (int)fmt);
}
