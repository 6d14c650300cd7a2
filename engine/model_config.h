/* model architecture: open_clip's JSON schema (embed_dim, vision_cfg,
 * text_cfg, quick_gelu) plus an extension for irregular (pruned) models:
 * per-layer "heads" and "mlp_width" arrays in either tower. head size is
 * always 64; a layer with 0 heads has no attention sub-block, a layer with
 * 0 mlp units no MLP sub-block.
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
#define TC_HEAD_SIZE 64

typedef enum { TC_POOL_TOKEN = 0, TC_POOL_MEAN = 1, TC_POOL_ARGMAX = 2 } tc_pool_type;

typedef struct {
    int layers;
    int width;                   /* residual stream width C */
    int heads[TC_MAX_LAYERS];    /* per layer, head size TC_HEAD_SIZE */
    int mlp_width[TC_MAX_LAYERS];/* per layer */
    tc_pool_type pool;
    int final_ln_after_pool;     /* identical result for token pooling */
    /* vision */
    int image_size, patch_size;  /* grid = image_size / patch_size */
    int no_ln_pre;
    /* text */
    int context_length, vocab_size;
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

/* grid size and sequence lengths */
static inline int tc_vision_grid(const tc_tower_config *v) { return v->image_size / v->patch_size; }
static inline int tc_vision_tokens(const tc_tower_config *v) {
    int g = tc_vision_grid(v);
    return g * g + 1;
}

/* parses a Hugging Face CLIPConfig config.json (text_config, vision_config,
 * projection_dim, hidden_act); tc_model_config_parse also detects this form */
tc_status tc_model_config_parse_hf(tc_model_config *cfg, const char *json, size_t len,
                                   const char *source);

/* 1 when a tower is expressible in open_clip's uniform form: every layer has
 * width/64 heads and the same MLP width */
int tc_tower_is_uniform(const tc_tower_config *t);
/* fills every layer with the same heads and MLP width */
void tc_tower_set_uniform(tc_tower_config *t, int layers, int width, int heads, int mlp_width);

/* checks internal consistency (positive sizes, layers <= TC_MAX_LAYERS, ...) */
tc_status tc_model_config_validate(const tc_model_config *cfg, const char *source);

#endif
