/* model architecture: open_clip's JSON schema (embed_dim, vision_cfg,
 * text_cfg, quick_gelu) plus an extension for irregular (pruned) models:
 * per-layer "heads" and "mlp_width" arrays in either tower (and "head_width"
 * in text_cfg when that tower's heads are not 64 wide). a layer with 0 heads
 * has no attention sub-block, a layer with 0 mlp units no MLP sub-block.
 *
 * heads are any multiple of 8 wide from 8 to 256 (TC_MIN/MAX_HEAD_SIZE), as
 * open_clip derives them: vision heads = width // head_width (head_width
 * default 64), text heads given; the head size is width / heads, which must
 * divide exactly (torch's MultiheadAttention refuses otherwise).
 *
 * a vision_cfg whose "layers" is a list of four stage depths is open_clip's
 * ModifiedResNet (RN50 and the TinyCLIP ResNets): "width" is the stem width,
 * the attention pool has width * 32 channels in width * 32 // head_width
 * heads, and image_size must be a multiple of 32. the ViT-only fields
 * (heads, mlp_width, patch_size, ...) do not apply to it.
 *
 * fields of open_clip that shape a tower but are not supported (timm/hf
 * towers, attentional_pool, layer scale, sin-cos positions, ...) are
 * rejected by the parser with an error naming the field. */
#ifndef TC_MODEL_CONFIG_H
#define TC_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "status.h"

#define TC_MAX_LAYERS 64
#define TC_HEAD_SIZE 64 /* open_clip's default head_width */
#define TC_MIN_HEAD_SIZE 8
#define TC_MAX_HEAD_SIZE 256
#define TC_RESNET_STAGES 4

typedef enum { TC_POOL_TOKEN = 0, TC_POOL_MEAN = 1, TC_POOL_ARGMAX = 2 } tc_pool_type;

typedef struct {
    int layers;                  /* ViT: residual blocks; ResNet: bottlenecks of all stages */
    int width;                   /* ViT: residual stream width C; ResNet: stem width */
    int head_width;              /* HS of every head (ResNet: of the attention pool) */
    int heads[TC_MAX_LAYERS];    /* per layer, each HS wide (0 for a ResNet) */
    int mlp_width[TC_MAX_LAYERS];/* per layer (0 for a ResNet) */
    tc_pool_type pool;
    int final_ln_after_pool;     /* identical result for token pooling */
    /* vision */
    int image_size, patch_size;  /* grid = image_size / patch_size */
    int no_ln_pre;
    /* text */
    int context_length, vocab_size;
    /* vision, ModifiedResNet: stage depths (layers is their sum) */
    int resnet;
    int stages[TC_RESNET_STAGES];
} tc_tower_config;

typedef struct {
    char name[128];              /* file stem, e.g. "ViT-B-32" */
    int embed_dim;
    tc_activation activation;    /* always explicit; from "quick_gelu" */
    tc_tower_config vision;
    tc_tower_config text;
    int irregular;               /* per-layer arrays differ from the uniform form */
} tc_model_config;

/* parses open_clip JSON text (also accepts {"model_cfg": {...}} from an
 * open_clip_config.json); `source` names the file in error messages */
tc_status tc_model_config_parse(tc_model_config *cfg, const char *json, size_t len,
                                const char *source);
tc_status tc_model_config_load(tc_model_config *cfg, const char *path);
/* writes open_clip JSON (the per-layer extension only when irregular);
 * returns a malloc'd string */
tc_status tc_model_config_to_json(const tc_model_config *cfg, char **out);
/* Hugging Face CLIPConfig config.json for export (uniform towers only) */
tc_status tc_model_config_to_hf_json(const tc_model_config *cfg, char **out);

/* grid size and sequence lengths: the ViT's patch grid, or the ResNet's
 * final feature map (image_size / 32) that the attention pool reads; one
 * token more for the class token or the pool's mean token */
static inline int tc_vision_grid(const tc_tower_config *v) {
    return v->resnet ? v->image_size / 32 : v->image_size / v->patch_size;
}
static inline int tc_vision_tokens(const tc_tower_config *v) {
    int g = tc_vision_grid(v);
    return g * g + 1;
}

/* the ResNet's attention pool: width * 32 channels in heads of head_width */
static inline int tc_resnet_pool_width(const tc_tower_config *v) { return v->width * 32; }
static inline int tc_resnet_pool_heads(const tc_tower_config *v) {
    return v->head_width > 0 ? v->width * 32 / v->head_width : 0;
}

/* parses a Hugging Face CLIPConfig config.json (text_config, vision_config,
 * projection_dim, hidden_act); tc_model_config_parse also detects this form */
tc_status tc_model_config_parse_hf(tc_model_config *cfg, const char *json, size_t len,
                                   const char *source);

/* 1 when a tower is expressible in open_clip's uniform form: every layer has
 * width/head_width heads and the same MLP width (a ResNet tower always is) */
int tc_tower_is_uniform(const tc_tower_config *t);
/* fills every layer with the same heads and MLP width; head_width = width / heads */
void tc_tower_set_uniform(tc_tower_config *t, int layers, int width, int heads, int mlp_width);

/* an error naming `field` (e.g. "vision_cfg.head_width") when HS cannot be
 * a head size here: a multiple of 8 from 8 to 256 */
tc_status tc_check_head_size(int head_size, const char *source, const char *field);

/* checks internal consistency (positive sizes, layers <= TC_MAX_LAYERS, ...) */
tc_status tc_model_config_validate(const tc_model_config *cfg, const char *source);

#endif
