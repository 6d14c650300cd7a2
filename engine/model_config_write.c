/* model configs, writing: open_clip JSON (the per-layer extension for
 * irregular towers) and Hugging Face CLIPConfig. the parser
 * (model_config.c) reads back what is written here. */
#include "model_config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

/* mlp_ratio that open_clip's int(width * mlp_ratio) turns back into mlp */
static double ratio_for(int width, int mlp) {
    double r = (double)mlp / width;
    for (int i = 0; i < 4 && (int)floor(width * r) != mlp; i++)
        r = nextafter(r, (int)floor(width * r) < mlp ? INFINITY : -INFINITY);
    return r;
}

static void write_int_array(tc_sbuf *b, const int *a, int n) {
    tc_sbuf_puts(b, "[");
    for (int i = 0; i < n; i++)
        tc_sbuf_printf(b, "%s%d", i ? ", " : "", a[i]);
    tc_sbuf_puts(b, "]");
}

static void write_tower_shape(tc_sbuf *b, const tc_tower_config *t, int vision) {
    if (t->resnet) {
        tc_sbuf_puts(b, "        \"layers\": ");
        write_int_array(b, t->stages, TC_RESNET_STAGES);
        tc_sbuf_printf(b, ",\n        \"width\": %d,\n        \"head_width\": %d,\n", t->width,
                       t->head_width);
        return;
    }
    tc_sbuf_printf(b, "        \"layers\": %d,\n        \"width\": %d,\n", t->layers, t->width);
    int hs = t->head_width, uniform_mlp = 1;
    for (int i = 0; i < t->layers; i++)
        if (t->mlp_width[i] != t->mlp_width[0]) uniform_mlp = 0;
    int uniform_heads = 1;
    for (int i = 0; i < t->layers; i++)
        if (t->heads[i] * hs != t->width) uniform_heads = 0;
    if (uniform_heads) {
        if (vision)
            tc_sbuf_printf(b, "        \"head_width\": %d,\n", hs);
        else
            tc_sbuf_printf(b, "        \"heads\": %d,\n", t->width / hs);
    } else {
        /* the extension; head_width in text_cfg only when not open_clip's 64 */
        tc_sbuf_puts(b, "        \"heads\": ");
        write_int_array(b, t->heads, t->layers);
        tc_sbuf_puts(b, ",\n");
        if (vision || hs != TC_HEAD_SIZE) tc_sbuf_printf(b, "        \"head_width\": %d,\n", hs);
    }
    double ratio = t->mlp_width[0] > 0 ? ratio_for(t->width, t->mlp_width[0]) : 0;
    /* the ratio form only when it is in range and reads back exactly */
    if (uniform_mlp && ratio > 0 && ratio <= 1024 &&
        (int)floor((double)t->width * ratio) == t->mlp_width[0]) {
        tc_sbuf_puts(b, "        \"mlp_ratio\": ");
        tc_sbuf_json_number(b, ratio);
        tc_sbuf_puts(b, ",\n");
    } else {
        tc_sbuf_puts(b, "        \"mlp_width\": ");
        write_int_array(b, t->mlp_width, t->layers);
        tc_sbuf_puts(b, ",\n");
    }
}

tc_status tc_model_config_to_json(const tc_model_config *cfg, char **out) {
    *out = NULL;
    TC_TRY(tc_model_config_validate(cfg, cfg->name[0] ? cfg->name : NULL));
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    tc_sbuf b = {0};
    tc_sbuf_printf(&b, "{\n    \"embed_dim\": %d,\n    \"quick_gelu\": %s,\n", cfg->embed_dim,
                   cfg->activation == TC_QUICK_GELU ? "true" : "false");
    tc_sbuf_printf(&b, "    \"vision_cfg\": {\n        \"image_size\": %d,\n", v->image_size);
    write_tower_shape(&b, v, 1);
    if (v->pool == TC_POOL_MEAN) tc_sbuf_puts(&b, "        \"pool_type\": \"avg\",\n");
    if (v->no_ln_pre) tc_sbuf_puts(&b, "        \"no_ln_pre\": true,\n");
    if (v->final_ln_after_pool) tc_sbuf_puts(&b, "        \"final_ln_after_pool\": true,\n");
    if (v->resnet)
        tc_sbuf_puts(&b, "        \"patch_size\": null\n    },\n");
    else
        tc_sbuf_printf(&b, "        \"patch_size\": %d\n    },\n", v->patch_size);
    tc_sbuf_printf(&b,
                   "    \"text_cfg\": {\n        \"context_length\": %d,\n"
                   "        \"vocab_size\": %d,\n",
                   t->context_length, t->vocab_size);
    write_tower_shape(&b, t, 0);
    if (t->final_ln_after_pool) tc_sbuf_puts(&b, "        \"final_ln_after_pool\": true,\n");
    /* drop the trailing ",\n" of the last field */
    if (b.len >= 2 && !b.oom) b.len -= 2, b.data[b.len] = 0;
    tc_sbuf_puts(&b, "\n    }\n}\n");
    return tc_sbuf_finish(&b, out);
}

tc_status tc_model_config_to_hf_json(const tc_model_config *cfg, char **out) {
    *out = NULL;
    const char *src = cfg->name[0] ? cfg->name : "model config";
    TC_TRY(tc_model_config_validate(cfg, src));
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    if (v->resnet)
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "%s: Hugging Face CLIPModel has no ResNet image tower (ModifiedResNet is "
                       "open_clip/OpenAI only); export it in open_clip layout (--to open_clip)",
                       src);
    if (!tc_tower_is_uniform(v) || !tc_tower_is_uniform(t))
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "%s: an irregular model (per-layer heads or MLP widths) cannot be expressed "
                       "as a Hugging Face CLIPConfig; export it as ONNX (tinyclip convert "
                       "--to onnx)",
                       src);
    if (v->no_ln_pre)
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "%s: vision_cfg.no_ln_pre cannot be expressed in Hugging Face CLIP", src);
    if (v->pool != TC_POOL_TOKEN)
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "%s: vision_cfg.pool_type \"avg\" cannot be expressed in Hugging Face CLIP",
                       src);
    const char *act = cfg->activation == TC_QUICK_GELU ? "quick_gelu" : "gelu";
    /* the end of text is the largest id, where open_clip's argmax pools and
     * where transformers looks for eos_token_id: 49407 for the CLIP
     * vocabulary (49406 starts a text), vocab_size - 1 for any other */
    tc_sbuf b = {0};
    tc_sbuf_printf(&b,
                   "{\n  \"architectures\": [\"CLIPModel\"],\n  \"model_type\": \"clip\",\n"
                   "  \"projection_dim\": %d,\n  \"logit_scale_init_value\": 2.6592,\n",
                   cfg->embed_dim);
    tc_sbuf_printf(&b,
                   "  \"text_config\": {\n    \"model_type\": \"clip_text_model\",\n"
                   "    \"vocab_size\": %d,\n    \"hidden_size\": %d,\n"
                   "    \"intermediate_size\": %d,\n    \"num_hidden_layers\": %d,\n"
                   "    \"num_attention_heads\": %d,\n    \"max_position_embeddings\": %d,\n"
                   "    \"hidden_act\": \"%s\",\n    \"layer_norm_eps\": 1e-05,\n"
                   "    \"projection_dim\": %d,\n    \"bos_token_id\": %d,\n"
                   "    \"eos_token_id\": %d,\n    \"pad_token_id\": %d\n  },\n",
                   t->vocab_size, t->width, t->mlp_width[0], t->layers, t->heads[0],
                   t->context_length, act, cfg->embed_dim, t->vocab_size - 2, t->vocab_size - 1,
                   t->vocab_size - 1);
    tc_sbuf_printf(&b,
                   "  \"vision_config\": {\n    \"model_type\": \"clip_vision_model\",\n"
                   "    \"hidden_size\": %d,\n    \"intermediate_size\": %d,\n"
                   "    \"num_hidden_layers\": %d,\n    \"num_attention_heads\": %d,\n"
                   "    \"num_channels\": 3,\n    \"image_size\": %d,\n    \"patch_size\": %d,\n"
                   "    \"hidden_act\": \"%s\",\n    \"layer_norm_eps\": 1e-05,\n"
                   "    \"projection_dim\": %d\n  },\n  \"torch_dtype\": \"float32\"\n}\n",
                   v->width, v->mlp_width[0], v->layers, v->heads[0], v->image_size, v->patch_size,
                   act, cfg->embed_dim);
    return tc_sbuf_finish(&b, out);
}
