/* model configs: open_clip JSON (strict: every field open_clip knows is
 * accepted at its default value, fields that would change the architecture
 * to something this engine does not build are rejected by name, unknown
 * fields are rejected), the per-layer extension for irregular models, and
 * Hugging Face CLIPConfig in both directions. */
#include "model_config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "json.h"

/* bounds that keep every product of sizes far from overflow */
#define MAX_WIDTH 65536
#define MAX_HEADS 1024
#define MAX_MLP (1 << 20)
#define MAX_IMAGE 8192
#define MAX_CONTEXT 65536
#define MAX_VOCAB (1 << 24)
#define MAX_CONFIG_BYTES (16u << 20)

typedef struct {
    const char *source;
    const char *prefix; /* "" or "model_cfg." */
} ctx;

static tc_status ferr(const ctx *c, const char *tower, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static tc_status ferr(const ctx *c, const char *tower, const char *field, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tc_fail(TC_ERR_CONFIG, "%s: %s%s%s%s: %s", c->source, c->prefix, tower ? tower : "",
                   tower ? "." : "", field, msg);
}

static void set_name(tc_model_config *cfg, const char *source) {
    const char *base = strrchr(source, '/');
    base = base ? base + 1 : source;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".json") == 0) n -= 5;
    if (n >= sizeof cfg->name) n = sizeof cfg->name - 1;
    memcpy(cfg->name, base, n);
    cfg->name[n] = 0;
}

int tc_tower_is_uniform(const tc_tower_config *t) {
    if (t->resnet) return 1;
    if (t->layers < 1 || t->head_width < 1 || t->width % t->head_width != 0) return 0;
    for (int i = 0; i < t->layers && i < TC_MAX_LAYERS; i++)
        if (t->heads[i] * t->head_width != t->width || t->mlp_width[i] != t->mlp_width[0]) return 0;
    return 1;
}

void tc_tower_set_uniform(tc_tower_config *t, int layers, int width, int heads, int mlp_width) {
    t->layers = layers;
    t->width = width;
    t->head_width = heads > 0 ? width / heads : TC_HEAD_SIZE;
    for (int i = 0; i < TC_MAX_LAYERS; i++) {
        t->heads[i] = i < layers ? heads : 0;
        t->mlp_width[i] = i < layers ? mlp_width : 0;
    }
}

/* a value equal to "not set": null, false, 0, "", {} or [] */
static int defaultish(const tc_json *v) {
    switch (v->type) {
    case TC_JSON_NULL: return 1;
    case TC_JSON_BOOL: return !v->boolean;
    case TC_JSON_NUMBER: return v->number == 0;
    case TC_JSON_STRING: return v->string_len == 0;
    case TC_JSON_ARRAY:
    case TC_JSON_OBJECT: return v->count == 0;
    }
    return 0;
}

static int is_string(const tc_json *v, const char *s) {
    return v->type == TC_JSON_STRING && strcmp(v->string, s) == 0 && strlen(s) == v->string_len;
}

static tc_status get_int(const ctx *c, const char *tower, const char *key, const tc_json *v,
                         int64_t lo, int64_t hi, int *out) {
    if (v->type != TC_JSON_NUMBER || !v->is_int)
        return ferr(c, tower, key, "expected an integer, got %s", tc_json_type_name(v->type));
    if (v->integer < lo || v->integer > hi)
        return ferr(c, tower, key, "%lld is out of range [%lld, %lld]", (long long)v->integer,
                    (long long)lo, (long long)hi);
    *out = (int)v->integer;
    return TC_OK;
}

static tc_status get_bool(const ctx *c, const char *tower, const char *key, const tc_json *v,
                          int *out) {
    if (v->type != TC_JSON_BOOL)
        return ferr(c, tower, key, "expected true or false, got %s", tc_json_type_name(v->type));
    *out = v->boolean;
    return TC_OK;
}

static tc_status get_int_array(const ctx *c, const char *tower, const char *key, const tc_json *v,
                               int hi, int *out, int *count) {
    if (v->type != TC_JSON_ARRAY)
        return ferr(c, tower, key, "expected an array of integers, got %s",
                    tc_json_type_name(v->type));
    if (v->count < 1 || v->count > TC_MAX_LAYERS)
        return ferr(c, tower, key, "expected 1 to %d entries (one per layer), got %zu",
                    TC_MAX_LAYERS, v->count);
    for (size_t i = 0; i < v->count; i++) {
        const tc_json *e = &v->items[i];
        if (e->type != TC_JSON_NUMBER || !e->is_int || e->integer < 0 || e->integer > hi)
            return ferr(c, tower, key, "entry %zu: expected an integer in [0, %d]", i, hi);
        out[i] = (int)e->integer;
    }
    *count = (int)v->count;
    return TC_OK;
}

/* called for key i before it is handled: the keys before it are known and
 * distinct (or parsing would have stopped), so this costs at most the number
 * of known fields, whatever the size of a hostile object */
static tc_status check_duplicate(const ctx *c, const char *tower, const tc_json *obj, size_t i) {
    if (strlen(obj->keys[i]) != obj->key_lens[i])
        return ferr(c, tower, obj->keys[i], "field name contains a NUL character");
    for (size_t j = 0; j < i; j++)
        if (strcmp(obj->keys[i], obj->keys[j]) == 0)
            return ferr(c, tower, obj->keys[i], "given twice");
    return TC_OK;
}

/* fields open_clip accepts that this engine ignores or only accepts at their
 * defaults; `want` is the accepted value besides null/false/0 */
static tc_status accept_default(const ctx *c, const char *tower, const char *key, const tc_json *v,
                                const char *what) {
    if (defaultish(v)) return TC_OK;
    return ferr(c, tower, key, "unsupported: %s", what);
}

tc_status tc_check_head_size(int hs, const char *source, const char *field) {
    if (hs < TC_MIN_HEAD_SIZE || hs > TC_MAX_HEAD_SIZE || hs % 8 != 0)
        return tc_fail(TC_ERR_CONFIG,
                       "%s: %s: a head size of %d is not supported: heads must be a multiple of 8 "
                       "from %d to %d wide",
                       source ? source : "model config", field, hs, TC_MIN_HEAD_SIZE,
                       TC_MAX_HEAD_SIZE);
    return TC_OK;
}

/* per-tower fields that both towers share */
typedef struct {
    int layers, width;
    int have_ratio;
    double mlp_ratio;
    int heads_arr[TC_MAX_LAYERS], n_heads_arr;
    int mlp_arr[TC_MAX_LAYERS], n_mlp_arr;
    int heads;      /* text: explicit; vision: derived */
    int head_width; /* vision: open_clip's field; text: the extension (per-layer heads) */
    int have_head_width;
    int stages[TC_RESNET_STAGES], resnet; /* vision: a list of stage depths */
} tower_fields;

/* the head size `field` names, as a config error */
static tc_status head_size_ok(const ctx *c, const char *tower, const char *field, int hs) {
    char name[160];
    snprintf(name, sizeof name, "%s%s.%s", c->prefix, tower, field);
    return tc_check_head_size(hs, c->source, name);
}

/* open_clip's rule: heads = width // head_width, each width / heads wide
 * (torch's MultiheadAttention needs the split to be exact) */
static tc_status derive_heads(const ctx *c, const char *tower, int width, int head_width,
                              const char *what, int *heads, int *hs) {
    *heads = width / head_width;
    if (*heads < 1)
        return ferr(c, tower, "head_width", "%d is wider than the %s (%d): no head fits",
                    head_width, what, width);
    if (width % *heads != 0)
        return ferr(c, tower, "head_width",
                    "%d gives %d heads (%d // %d), which cannot split the %s of %d evenly",
                    head_width, *heads, width, head_width, what, width);
    *hs = width / *heads;
    return head_size_ok(c, tower, "head_width", *hs);
}

/* the ResNet form: stage depths, stem width, the attention pool's heads */
static tc_status finish_resnet(const ctx *c, const char *tower, const tower_fields *f,
                               tc_tower_config *t) {
    if (f->n_heads_arr || f->n_mlp_arr || f->have_ratio)
        return ferr(c, tower,
                    f->n_heads_arr ? "heads"
                    : f->n_mlp_arr ? "mlp_width"
                                   : "mlp_ratio",
                    "does not apply to a ResNet tower (layers is a list of stage depths)");
    t->resnet = 1;
    t->width = f->width;
    t->layers = 0;
    for (int i = 0; i < TC_RESNET_STAGES; i++) {
        t->stages[i] = f->stages[i];
        t->layers += f->stages[i];
    }
    if (t->layers > TC_MAX_LAYERS)
        return ferr(c, tower, "layers", "%d bottleneck blocks in all; at most %d are supported",
                    t->layers, TC_MAX_LAYERS);
    if (f->width < 2)
        return ferr(c, tower, "width", "%d: a ResNet's stem needs a width of at least 2", f->width);
    if (t->image_size % 32 != 0)
        return ferr(c, tower, "image_size",
                    "%d is not a multiple of 32, the ResNet's total stride (the attention pool's "
                    "positions are (image_size / 32)^2 + 1)",
                    t->image_size);
    int heads;
    char what[64];
    snprintf(what, sizeof what, "attention pool's width (width * 32)");
    TC_TRY(derive_heads(c, tower, tc_resnet_pool_width(t), f->head_width, what, &heads,
                        &t->head_width));
    for (int i = 0; i < TC_MAX_LAYERS; i++)
        t->heads[i] = t->mlp_width[i] = 0;
    return TC_OK;
}

static tc_status finish_tower(const ctx *c, const char *tower, tower_fields *f, tc_tower_config *t,
                              int vision) {
    if (f->resnet) return finish_resnet(c, tower, f, t);
    t->layers = f->layers;
    t->width = f->width;
    if (f->n_heads_arr && f->n_heads_arr != f->layers)
        return ferr(c, tower, "heads", "has %d entries but layers is %d", f->n_heads_arr,
                    f->layers);
    if (f->n_mlp_arr && f->n_mlp_arr != f->layers)
        return ferr(c, tower, "mlp_width", "has %d entries but layers is %d", f->n_mlp_arr,
                    f->layers);
    if (f->n_mlp_arr && f->have_ratio)
        return ferr(c, tower, "mlp_ratio", "cannot be combined with the per-layer mlp_width");
    int mlp = 0;
    if (!f->n_mlp_arr) {
        double m = floor((double)f->width * f->mlp_ratio);
        if (!(m >= 0 && m <= MAX_MLP))
            return ferr(c, tower, "mlp_ratio", "width * mlp_ratio = %g is out of range [0, %d]", m,
                        MAX_MLP);
        mlp = (int)m;
    }
    int heads = f->heads;
    if (f->n_heads_arr) {
        /* per-layer heads of a pruned width: their size is given, default 64 */
        t->head_width = f->head_width;
        TC_TRY(head_size_ok(c, tower, "head_width", t->head_width));
    } else if (vision) {
        TC_TRY(derive_heads(c, tower, f->width, f->head_width, "width", &heads, &t->head_width));
    } else {
        if (f->width % heads != 0)
            return ferr(c, tower, "heads",
                        "%d heads over width %d gives a head size of %g; heads must split the "
                        "width evenly (use a per-layer \"heads\" array for a pruned width)",
                        heads, f->width, (double)f->width / heads);
        t->head_width = f->width / heads;
        if (f->have_head_width && f->head_width != t->head_width)
            return ferr(c, tower, "head_width", "%d contradicts width / heads = %d", f->head_width,
                        t->head_width);
        TC_TRY(head_size_ok(c, tower, "heads", t->head_width));
    }
    for (int i = 0; i < TC_MAX_LAYERS; i++) {
        t->heads[i] = i < f->layers ? (f->n_heads_arr ? f->heads_arr[i] : heads) : 0;
        t->mlp_width[i] = i < f->layers ? (f->n_mlp_arr ? f->mlp_arr[i] : mlp) : 0;
    }
    return TC_OK;
}

static tc_status parse_common(const ctx *c, const char *tower, const char *k, const tc_json *v,
                              tower_fields *f, int *handled) {
    *handled = 1;
    if (strcmp(k, "layers") == 0) {
        if (v->type != TC_JSON_ARRAY) return get_int(c, tower, k, v, 1, TC_MAX_LAYERS, &f->layers);
        if (strcmp(tower, "vision_cfg") != 0)
            return ferr(c, tower, k,
                        "expected an integer (stage depths describe a ResNet image "
                        "tower)");
        /* counted before the entries are read: f->stages holds exactly four */
        if (v->count != TC_RESNET_STAGES)
            return ferr(c, tower, k, "a ResNet tower has %d stages, got %zu stage depths",
                        TC_RESNET_STAGES, v->count);
        int n = 0;
        TC_TRY(get_int_array(c, tower, k, v, TC_MAX_LAYERS, f->stages, &n));
        for (int i = 0; i < n; i++)
            if (f->stages[i] < 1)
                return ferr(c, tower, k, "stage %d has %d blocks; every stage needs at least one",
                            i + 1, f->stages[i]);
        f->resnet = 1;
        return TC_OK;
    }
    if (strcmp(k, "width") == 0) return get_int(c, tower, k, v, 1, MAX_WIDTH, &f->width);
    if (strcmp(k, "mlp_ratio") == 0) {
        if (v->type != TC_JSON_NUMBER)
            return ferr(c, tower, k, "expected a number, got %s", tc_json_type_name(v->type));
        if (!(v->number > 0 && v->number <= 1024))
            return ferr(c, tower, k, "%g is out of range (0, 1024]", v->number);
        f->mlp_ratio = v->number;
        f->have_ratio = 1;
        return TC_OK;
    }
    if (strcmp(k, "mlp_width") == 0)
        return get_int_array(c, tower, k, v, MAX_MLP, f->mlp_arr, &f->n_mlp_arr);
    if (strcmp(k, "ls_init_value") == 0) {
        if (v->type == TC_JSON_NULL) return TC_OK;
        return ferr(c, tower, k,
                    "unsupported: LayerScale (ls_1/ls_2 gammas) is not implemented; "
                    "only null is accepted");
    }
    if (strcmp(k, "output_tokens") == 0) {
        int b = 0;
        return get_bool(c, tower, k, v, &b);
    }
    if (strcmp(k, "act_kwargs") == 0 || strcmp(k, "norm_kwargs") == 0) {
        if (v->type == TC_JSON_NULL || (v->type == TC_JSON_OBJECT && v->count == 0)) return TC_OK;
        return ferr(c, tower, k,
                    "unsupported: activation/LayerNorm arguments other than the defaults "
                    "(LayerNorm eps 1e-5)");
    }
    *handled = 0;
    return TC_OK;
}

static tc_status parse_vision(const ctx *c, const tc_json *o, tc_tower_config *t) {
    const char *tw = "vision_cfg";
    if (o->type != TC_JSON_OBJECT) return ferr(c, NULL, tw, "expected an object");
    tower_fields f = {.layers = 12, .width = 768, .mlp_ratio = 4.0, .head_width = TC_HEAD_SIZE};
    t->image_size = 224;
    t->patch_size = 16;
    t->pool = TC_POOL_TOKEN;
    int pool_set = 0, gap = 0, patch_null = 0;
    for (size_t i = 0; i < o->count; i++) {
        const char *k = o->keys[i];
        const tc_json *v = &o->items[i];
        TC_TRY(check_duplicate(c, tw, o, i));
        int handled;
        TC_TRY(parse_common(c, tw, k, v, &f, &handled));
        if (handled) continue;
        if (strcmp(k, "head_width") == 0) {
            TC_TRY(get_int(c, tw, k, v, 1, MAX_WIDTH, &f.head_width));
            f.have_head_width = 1;
        } else if (strcmp(k, "heads") == 0) {
            TC_TRY(get_int_array(c, tw, k, v, MAX_HEADS, f.heads_arr, &f.n_heads_arr));
        } else if (strcmp(k, "patch_size") == 0) {
            if (v->type == TC_JSON_NULL)
                patch_null = 1; /* open_clip's ResNet configs */
            else if (v->type == TC_JSON_ARRAY && v->count == 2 && v->items[0].is_int &&
                     v->items[1].is_int && v->items[0].integer == v->items[1].integer)
                TC_TRY(get_int(c, tw, k, &v->items[0], 1, MAX_IMAGE, &t->patch_size));
            else
                TC_TRY(get_int(c, tw, k, v, 1, MAX_IMAGE, &t->patch_size));
        } else if (strcmp(k, "image_size") == 0) {
            if (v->type == TC_JSON_ARRAY) {
                if (v->count != 2) return ferr(c, tw, k, "expected an integer or [height, width]");
                int h, w;
                TC_TRY(get_int(c, tw, "image_size[0]", &v->items[0], 1, MAX_IMAGE, &h));
                TC_TRY(get_int(c, tw, "image_size[1]", &v->items[1], 1, MAX_IMAGE, &w));
                if (h != w)
                    return ferr(c, tw, k, "non-square images (%d x %d) are not supported", h, w);
                t->image_size = h;
            } else {
                TC_TRY(get_int(c, tw, k, v, 1, MAX_IMAGE, &t->image_size));
            }
        } else if (strcmp(k, "pool_type") == 0) {
            if (is_string(v, "tok"))
                t->pool = TC_POOL_TOKEN;
            else if (is_string(v, "avg"))
                t->pool = TC_POOL_MEAN;
            else
                return ferr(c, tw, k, "expected \"tok\" or \"avg\"%s",
                            v->type == TC_JSON_STRING ? " (other pooling is not supported)" : "");
            pool_set = 1;
        } else if (strcmp(k, "global_average_pool") == 0) {
            TC_TRY(get_bool(c, tw, k, v, &gap));
        } else if (strcmp(k, "no_ln_pre") == 0) {
            TC_TRY(get_bool(c, tw, k, v, &t->no_ln_pre));
        } else if (strcmp(k, "final_ln_after_pool") == 0) {
            TC_TRY(get_bool(c, tw, k, v, &t->final_ln_after_pool));
        } else if (strcmp(k, "patch_dropout") == 0) {
            if (v->type != TC_JSON_NUMBER)
                return ferr(c, tw, k, "expected a number, got %s", tc_json_type_name(v->type));
            if (v->number != 0)
                return ferr(c, tw, k,
                            "%g: unsupported: patch dropout is training-time token dropping, "
                            "not implemented; use 0",
                            v->number);
        } else if (strcmp(k, "attentional_pool") == 0) {
            int b = 0;
            TC_TRY(get_bool(c, tw, k, v, &b));
            if (b) return ferr(c, tw, k, "unsupported: CoCa attentional pooling");
        } else if (strcmp(k, "attn_pooler_queries") == 0 || strcmp(k, "n_queries") == 0 ||
                   strcmp(k, "attn_pooler_heads") == 0) {
            int n = 0;
            TC_TRY(get_int(c, tw, k, v, 0, 1 << 20, &n)); /* unused without attentional_pool */
        } else if (strcmp(k, "pos_embed_type") == 0) {
            if (!is_string(v, "learnable"))
                return ferr(c, tw, k, "only \"learnable\" positional embeddings are supported");
        } else if (strcmp(k, "input_patchnorm") == 0 || strcmp(k, "qk_norm") == 0 ||
                   strcmp(k, "scaled_cosine_attn") == 0 || strcmp(k, "scale_heads") == 0 ||
                   strcmp(k, "scale_attn_inner") == 0 || strcmp(k, "scale_attn") == 0 ||
                   strcmp(k, "scale_fc") == 0 || strcmp(k, "image_seq_len") == 0 ||
                   strcmp(k, "block_type") == 0) {
            TC_TRY(accept_default(c, tw, k, v, "a custom block variant"));
        } else if (strncmp(k, "timm_", 5) == 0) {
            /* timm defaults: pool "avg", proj "linear" are inert without a model name */
            if ((strcmp(k, "timm_pool") == 0 && is_string(v, "avg")) ||
                (strcmp(k, "timm_proj") == 0 && is_string(v, "linear")))
                continue;
            TC_TRY(accept_default(c, tw, k, v, "timm image towers are not supported"));
        } else if (strncmp(k, "hf_", 3) == 0) {
            TC_TRY(accept_default(c, tw, k, v, "Hugging Face towers are not supported"));
        } else {
            return ferr(c, tw, k, "unknown field");
        }
    }
    if (gap) {
        if (pool_set && t->pool != TC_POOL_MEAN)
            return ferr(c, tw, "global_average_pool", "true contradicts pool_type \"tok\"");
        t->pool = TC_POOL_MEAN;
    }
    if (f.resnet) {
        /* the ViT-only fields keep their defaults: nothing reads them */
        if (pool_set || gap || t->no_ln_pre || t->final_ln_after_pool)
            return ferr(c, tw,
                        pool_set || gap ? "pool_type"
                        : t->no_ln_pre  ? "no_ln_pre"
                                        : "final_ln_after_pool",
                        "does not apply to a ResNet tower (its pooling is the attention pool)");
        t->patch_size = 32;
        return finish_tower(c, tw, &f, t, 1);
    }
    if (patch_null) return ferr(c, tw, "patch_size", "null is only valid for a ResNet tower");
    if (t->patch_size > t->image_size || t->image_size % t->patch_size != 0)
        return ferr(c, tw, "image_size", "%d is not a multiple of patch_size %d", t->image_size,
                    t->patch_size);
    TC_TRY(finish_tower(c, tw, &f, t, 1));
    return TC_OK;
}

static tc_status parse_text(const ctx *c, const tc_json *o, tc_tower_config *t) {
    const char *tw = "text_cfg";
    if (o->type != TC_JSON_OBJECT) return ferr(c, NULL, tw, "expected an object");
    tower_fields f = {
        .layers = 12, .width = 512, .mlp_ratio = 4.0, .heads = 8, .head_width = TC_HEAD_SIZE};
    t->context_length = 77;
    t->vocab_size = 49408;
    t->pool = TC_POOL_ARGMAX;
    for (size_t i = 0; i < o->count; i++) {
        const char *k = o->keys[i];
        const tc_json *v = &o->items[i];
        TC_TRY(check_duplicate(c, tw, o, i));
        int handled;
        TC_TRY(parse_common(c, tw, k, v, &f, &handled));
        if (handled) continue;
        if (strcmp(k, "heads") == 0) {
            if (v->type == TC_JSON_ARRAY)
                TC_TRY(get_int_array(c, tw, k, v, MAX_HEADS, f.heads_arr, &f.n_heads_arr));
            else
                TC_TRY(get_int(c, tw, k, v, 1, MAX_HEADS, &f.heads));
        } else if (strcmp(k, "head_width") == 0) {
            /* tinyclip's extension: the size of the per-layer heads */
            TC_TRY(get_int(c, tw, k, v, 1, MAX_WIDTH, &f.head_width));
            f.have_head_width = 1;
        } else if (strcmp(k, "context_length") == 0) {
            TC_TRY(get_int(c, tw, k, v, 1, MAX_CONTEXT, &t->context_length));
        } else if (strcmp(k, "vocab_size") == 0) {
            TC_TRY(get_int(c, tw, k, v, 1, MAX_VOCAB, &t->vocab_size));
        } else if (strcmp(k, "pool_type") == 0) {
            if (!is_string(v, "argmax"))
                return ferr(c, tw, k, "only \"argmax\" (end-of-text token) pooling is supported%s",
                            v->type == TC_JSON_STRING ? "" : " (expected a string)");
        } else if (strcmp(k, "final_ln_after_pool") == 0) {
            TC_TRY(get_bool(c, tw, k, v, &t->final_ln_after_pool));
        } else if (strcmp(k, "proj_bias") == 0) {
            int b = 0;
            TC_TRY(get_bool(c, tw, k, v, &b));
            if (b) return ferr(c, tw, k, "unsupported: a text projection with bias");
        } else if (strcmp(k, "proj_type") == 0) {
            if (!is_string(v, "linear")) return ferr(c, tw, k, "only \"linear\" is supported");
        } else if (strcmp(k, "embed_cls") == 0) {
            int b = 0;
            TC_TRY(get_bool(c, tw, k, v, &b));
            if (b) return ferr(c, tw, k, "unsupported: CoCa class embedding");
        } else if (strcmp(k, "no_causal_mask") == 0) {
            int b = 0;
            TC_TRY(get_bool(c, tw, k, v, &b));
            if (b) return ferr(c, tw, k, "unsupported: bidirectional text attention");
        } else if (strcmp(k, "pad_id") == 0) {
            int n = 0;
            TC_TRY(get_int(c, tw, k, v, 0, MAX_VOCAB, &n)); /* only used with no_causal_mask */
        } else if (strcmp(k, "bos_id") == 0 || strcmp(k, "eos_id") == 0) {
            TC_TRY(accept_default(c, tw, k, v, "only used by \"eos\" pooling"));
        } else if (strcmp(k, "text_arch") == 0) {
            if (!is_string(v, "clip")) return ferr(c, tw, k, "only \"clip\" is supported");
        } else if (strcmp(k, "hf_model_pretrained") == 0) {
            int b = 0;
            TC_TRY(get_bool(c, tw, k, v, &b)); /* inert without hf_model_name */
        } else if ((strcmp(k, "hf_proj_type") == 0 && is_string(v, "mlp")) ||
                   (strcmp(k, "hf_pooler_type") == 0 && is_string(v, "mean_pooler"))) {
            /* open_clip defaults, inert without hf_model_name */
        } else if (strncmp(k, "hf_", 3) == 0 || strcmp(k, "tokenizer_kwargs") == 0) {
            TC_TRY(accept_default(c, tw, k, v, "Hugging Face text towers are not supported"));
        } else {
            return ferr(c, tw, k, "unknown field");
        }
    }
    TC_TRY(finish_tower(c, tw, &f, t, 0));
    return TC_OK;
}

static tc_status parse_root(tc_model_config *cfg, const tc_json *root, const char *source) {
    ctx c = {source, ""};
    if (root->type != TC_JSON_OBJECT)
        return tc_fail(TC_ERR_CONFIG,
                       "%s: expected a JSON object with embed_dim, vision_cfg, "
                       "text_cfg",
                       source);
    const tc_json *mc = tc_json_get(root, "model_cfg");
    if (mc && !tc_json_get(root, "embed_dim")) {
        /* open_clip_config.json: {"model_cfg": ..., "preprocess_cfg": ...} */
        if (mc->type != TC_JSON_OBJECT) return ferr(&c, NULL, "model_cfg", "expected an object");
        root = mc;
        c.prefix = "model_cfg.";
    }
    const tc_json *vis = NULL, *txt = NULL;
    int have_embed = 0, quick = 0;
    for (size_t i = 0; i < root->count; i++) {
        const char *k = root->keys[i];
        const tc_json *v = &root->items[i];
        TC_TRY(check_duplicate(&c, NULL, root, i));
        if (strcmp(k, "embed_dim") == 0) {
            TC_TRY(get_int(&c, NULL, k, v, 1, MAX_WIDTH, &cfg->embed_dim));
            have_embed = 1;
        } else if (strcmp(k, "vision_cfg") == 0) {
            vis = v;
        } else if (strcmp(k, "text_cfg") == 0) {
            txt = v;
        } else if (strcmp(k, "quick_gelu") == 0) {
            TC_TRY(get_bool(&c, NULL, k, v, &quick));
        } else if (strcmp(k, "custom_text") == 0) {
            int b = 0;
            TC_TRY(get_bool(&c, NULL, k, v, &b)); /* changes only the key layout */
        } else if (strcmp(k, "init_logit_bias") == 0) {
            TC_TRY(accept_default(&c, NULL, k, v, "SigLIP logit bias"));
            if (v->type != TC_JSON_NULL) return ferr(&c, NULL, k, "unsupported: SigLIP logit bias");
        } else if (strcmp(k, "multimodal_cfg") == 0 || strcmp(k, "audio_cfg") == 0) {
            return ferr(&c, NULL, k, "unsupported: only two-tower CLIP models are supported");
        } else if (strcmp(k, "cast_dtype") == 0) {
            TC_TRY(accept_default(&c, NULL, k, v, "a cast dtype"));
        } else {
            return ferr(&c, NULL, k, "unknown field");
        }
    }
    if (!have_embed) return ferr(&c, NULL, "embed_dim", "missing");
    if (!vis) return ferr(&c, NULL, "vision_cfg", "missing");
    if (!txt) return ferr(&c, NULL, "text_cfg", "missing");
    cfg->activation = quick ? TC_QUICK_GELU : TC_GELU;
    TC_TRY(parse_vision(&c, vis, &cfg->vision));
    TC_TRY(parse_text(&c, txt, &cfg->text));
    cfg->irregular = !tc_tower_is_uniform(&cfg->vision) || !tc_tower_is_uniform(&cfg->text);
    return TC_OK;
}

/* ---- Hugging Face CLIPConfig ---- */

static tc_status hf_int(const ctx *c, const tc_json *o, const char *tower, const char *key, int def,
                        int lo, int hi, int *out) {
    const tc_json *v = tc_json_get(o, key);
    if (!v || v->type == TC_JSON_NULL) {
        *out = def;
        return TC_OK;
    }
    return get_int(c, tower, key, v, lo, hi, out);
}

static tc_status hf_act(const ctx *c, const tc_json *o, const char *tower, tc_activation *out) {
    const tc_json *v = tc_json_get(o, "hidden_act");
    if (!v || is_string(v, "quick_gelu"))
        *out = TC_QUICK_GELU;
    else if (is_string(v, "gelu"))
        *out = TC_GELU;
    else
        return ferr(c, tower, "hidden_act", "only \"gelu\" and \"quick_gelu\" are supported");
    const tc_json *eps = tc_json_get(o, "layer_norm_eps");
    if (eps && eps->type != TC_JSON_NULL &&
        (eps->type != TC_JSON_NUMBER || fabs(eps->number - 1e-5) > 1e-12))
        return ferr(c, tower, "layer_norm_eps", "only 1e-05 is supported");
    return TC_OK;
}

/* heads that split hidden_size evenly into a supported head size */
static tc_status hf_heads(const ctx *c, const char *tower, int heads, int width) {
    if (width % heads != 0)
        return ferr(c, tower, "num_attention_heads", "%d heads cannot split hidden_size %d evenly",
                    heads, width);
    return head_size_ok(c, tower, "num_attention_heads", width / heads);
}

static tc_status parse_hf_root(tc_model_config *cfg, const tc_json *root, const char *source) {
    ctx c = {source, ""};
    if (root->type != TC_JSON_OBJECT)
        return tc_fail(TC_ERR_CONFIG, "%s: expected an object", source);
    const tc_json *tc = tc_json_get(root, "text_config"), *vc = tc_json_get(root, "vision_config");
    const tc_json *mt = tc_json_get(root, "model_type");
    if (mt && !is_string(mt, "clip"))
        return ferr(&c, NULL, "model_type", "only \"clip\" (CLIPModel) is supported");
    if (!tc || tc->type != TC_JSON_OBJECT)
        return ferr(&c, NULL, "text_config", "missing or not an object");
    if (!vc || vc->type != TC_JSON_OBJECT)
        return ferr(&c, NULL, "vision_config", "missing or not an object");
    TC_TRY(hf_int(&c, root, NULL, "projection_dim", 512, 1, MAX_WIDTH, &cfg->embed_dim));
    tc_activation ta, va;
    TC_TRY(hf_act(&c, tc, "text_config", &ta));
    TC_TRY(hf_act(&c, vc, "vision_config", &va));
    if (ta != va)
        return ferr(&c, "vision_config", "hidden_act",
                    "differs from text_config.hidden_act; one activation for both towers is "
                    "supported");
    cfg->activation = ta;

    int layers, width, heads, mlp;
    tc_tower_config *t = &cfg->text;
    const char *tw = "text_config";
    TC_TRY(hf_int(&c, tc, tw, "hidden_size", 512, 1, MAX_WIDTH, &width));
    TC_TRY(hf_int(&c, tc, tw, "intermediate_size", 2048, 0, MAX_MLP, &mlp));
    TC_TRY(hf_int(&c, tc, tw, "num_hidden_layers", 12, 1, TC_MAX_LAYERS, &layers));
    TC_TRY(hf_int(&c, tc, tw, "num_attention_heads", 8, 1, MAX_HEADS, &heads));
    TC_TRY(hf_int(&c, tc, tw, "max_position_embeddings", 77, 1, MAX_CONTEXT, &t->context_length));
    TC_TRY(hf_int(&c, tc, tw, "vocab_size", 49408, 1, MAX_VOCAB, &t->vocab_size));
    TC_TRY(hf_heads(&c, tw, heads, width));
    tc_tower_set_uniform(t, layers, width, heads, mlp);
    t->pool = TC_POOL_ARGMAX;

    tc_tower_config *v = &cfg->vision;
    tw = "vision_config";
    int channels;
    TC_TRY(hf_int(&c, vc, tw, "hidden_size", 768, 1, MAX_WIDTH, &width));
    TC_TRY(hf_int(&c, vc, tw, "intermediate_size", 3072, 0, MAX_MLP, &mlp));
    TC_TRY(hf_int(&c, vc, tw, "num_hidden_layers", 12, 1, TC_MAX_LAYERS, &layers));
    TC_TRY(hf_int(&c, vc, tw, "num_attention_heads", 12, 1, MAX_HEADS, &heads));
    TC_TRY(hf_int(&c, vc, tw, "image_size", 224, 1, MAX_IMAGE, &v->image_size));
    TC_TRY(hf_int(&c, vc, tw, "patch_size", 32, 1, MAX_IMAGE, &v->patch_size));
    TC_TRY(hf_int(&c, vc, tw, "num_channels", 3, 3, 3, &channels));
    TC_TRY(hf_heads(&c, tw, heads, width));
    if (v->image_size % v->patch_size != 0)
        return ferr(&c, tw, "image_size", "%d is not a multiple of patch_size %d", v->image_size,
                    v->patch_size);
    tc_tower_set_uniform(v, layers, width, heads, mlp);
    v->pool = TC_POOL_TOKEN;
    cfg->irregular = 0;
    return TC_OK;
}

static tc_status parse_any(tc_model_config *cfg, const char *json, size_t len, const char *source,
                           int hf_only) {
    memset(cfg, 0, sizeof *cfg);
    if (!source) source = "model config";
    set_name(cfg, source);
    tc_json *root = NULL;
    TC_TRY(tc_json_parse(json, len, source, &root));
    tc_status st;
    int hf = hf_only || (root->type == TC_JSON_OBJECT &&
                         (tc_json_get(root, "vision_config") || tc_json_get(root, "text_config")));
    st = hf ? parse_hf_root(cfg, root, source) : parse_root(cfg, root, source);
    tc_json_free(root);
    if (st == TC_OK) st = tc_model_config_validate(cfg, source);
    return st;
}

tc_status tc_model_config_parse(tc_model_config *cfg, const char *json, size_t len,
                                const char *source) {
    return parse_any(cfg, json, len, source, 0);
}

tc_status tc_model_config_parse_hf(tc_model_config *cfg, const char *json, size_t len,
                                   const char *source) {
    return parse_any(cfg, json, len, source, 1);
}

tc_status tc_model_config_load(tc_model_config *cfg, const char *path) {
    char *text;
    size_t len;
    memset(cfg, 0, sizeof *cfg);
    TC_TRY(tc_read_file_bounded(path, MAX_CONFIG_BYTES, &text, &len));
    tc_status st = tc_model_config_parse(cfg, text, len, path);
    free(text);
    return st;
}

static tc_status verr(const char *source, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static tc_status verr(const char *source, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tc_fail(TC_ERR_CONFIG, "%s: %s", source ? source : "model config", msg);
}

/* the ResNet tower: stage depths, stem width, the attention pool's heads */
static tc_status validate_resnet(const tc_tower_config *t, const char *tw, const char *source) {
    int blocks = 0;
    for (int i = 0; i < TC_RESNET_STAGES; i++) {
        if (t->stages[i] < 1 || t->stages[i] > TC_MAX_LAYERS)
            return verr(source, "%s.layers[%d]: %d blocks is out of range [1, %d]", tw, i,
                        t->stages[i], TC_MAX_LAYERS);
        blocks += t->stages[i];
    }
    if (blocks != t->layers || blocks > TC_MAX_LAYERS)
        return verr(source, "%s.layers: %d blocks in all (at most %d)", tw, blocks, TC_MAX_LAYERS);
    if (t->width < 2 || t->width > MAX_WIDTH / 32)
        return verr(source, "%s.width: %d is out of range [2, %d] for a ResNet", tw, t->width,
                    MAX_WIDTH / 32);
    if (t->image_size % 32 != 0)
        return verr(source, "%s.image_size: %d is not a multiple of 32 (a ResNet's stride)", tw,
                    t->image_size);
    char field[64];
    snprintf(field, sizeof field, "%s.head_width", tw);
    TC_TRY(tc_check_head_size(t->head_width, source, field));
    if (tc_resnet_pool_width(t) % t->head_width != 0)
        return verr(source, "%s.head_width: %d does not split the attention pool's %d channels", tw,
                    t->head_width, tc_resnet_pool_width(t));
    return TC_OK;
}

static tc_status validate_tower(const tc_tower_config *t, const char *tw, const char *source) {
    if (t->resnet) return validate_resnet(t, tw, source);
    char field[64];
    snprintf(field, sizeof field, "%s.head_width", tw);
    TC_TRY(tc_check_head_size(t->head_width, source, field));
    if (t->layers < 1 || t->layers > TC_MAX_LAYERS)
        return verr(source, "%s.layers: %d is out of range [1, %d]", tw, t->layers, TC_MAX_LAYERS);
    if (t->width < 1 || t->width > MAX_WIDTH)
        return verr(source, "%s.width: %d is out of range [1, %d]", tw, t->width, MAX_WIDTH);
    for (int i = 0; i < t->layers; i++) {
        if (t->heads[i] < 0 || t->heads[i] > MAX_HEADS)
            return verr(source, "%s.heads[%d]: %d is out of range [0, %d]", tw, i, t->heads[i],
                        MAX_HEADS);
        if (t->mlp_width[i] < 0 || t->mlp_width[i] > MAX_MLP)
            return verr(source, "%s.mlp_width[%d]: %d is out of range [0, %d]", tw, i,
                        t->mlp_width[i], MAX_MLP);
    }
    return TC_OK;
}

tc_status tc_model_config_validate(const tc_model_config *cfg, const char *source) {
    if (cfg->embed_dim < 1 || cfg->embed_dim > MAX_WIDTH)
        return verr(source, "embed_dim: %d is out of range [1, %d]", cfg->embed_dim, MAX_WIDTH);
    if (cfg->activation != TC_GELU && cfg->activation != TC_QUICK_GELU)
        return verr(source, "activation: not GELU or QuickGELU");
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    if (t->resnet) return verr(source, "text_cfg.layers: a ResNet is an image tower");
    TC_TRY(validate_tower(v, "vision_cfg", source));
    TC_TRY(validate_tower(t, "text_cfg", source));
    if (v->image_size < 1 || v->image_size > MAX_IMAGE)
        return verr(source, "vision_cfg.image_size: %d is out of range [1, %d]", v->image_size,
                    MAX_IMAGE);
    if (!v->resnet &&
        (v->patch_size < 1 || v->patch_size > v->image_size || v->image_size % v->patch_size != 0))
        return verr(source, "vision_cfg.image_size: %d is not a multiple of patch_size %d",
                    v->image_size, v->patch_size);
    if (v->pool != TC_POOL_TOKEN && v->pool != TC_POOL_MEAN)
        return verr(source, "vision_cfg.pool_type: only \"tok\" and \"avg\" are supported");
    if (t->context_length < 1 || t->context_length > MAX_CONTEXT)
        return verr(source, "text_cfg.context_length: %d is out of range [1, %d]",
                    t->context_length, MAX_CONTEXT);
    if (t->vocab_size < 1 || t->vocab_size > MAX_VOCAB)
        return verr(source, "text_cfg.vocab_size: %d is out of range [1, %d]", t->vocab_size,
                    MAX_VOCAB);
    if (t->pool != TC_POOL_ARGMAX)
        return verr(source, "text_cfg.pool_type: only \"argmax\" is supported");
    return TC_OK;
}
