#include "onnx_export.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "fileio.h"
#include "json.h"
#include "onnx_clip.h"

/* readers of ONNX files parse them as one protobuf message, limited to 2 GiB */
#define PROTOBUF_LIMIT ((size_t)2 << 30)
#define MAX_VOCAB_BYTES (64u << 20)

tc_onnx_options tc_onnx_defaults(void) {
    tc_onnx_options o = {TC_ONNX_FP32, TC_ONNX_OPSET_DEFAULT, 0};
    return o;
}

int tc_onnx_parse_precision(const char *s) {
    if (!strcmp(s, "fp32")) return TC_ONNX_FP32;
    if (!strcmp(s, "fp16")) return TC_ONNX_FP16;
    return -1;
}

/* open_clip's PreprocessCfg for eval: shortest-side bicubic resize to S,
 * centre crop, OpenAI mean and std */
static void preprocess_json(tc_sbuf *b, int S, const char *indent) {
    tc_sbuf_printf(b,
                   "{\n%s  \"size\": %d,\n%s  \"mode\": \"RGB\",\n%s  \"mean\": %s,\n"
                   "%s  \"std\": %s,\n%s  \"interpolation\": \"bicubic\",\n"
                   "%s  \"resize_mode\": \"shortest\",\n%s  \"fill_color\": 0\n%s}",
                   indent, S, indent, indent, TC_CLIP_MEAN_JSON, indent, TC_CLIP_STD_JSON, indent,
                   indent, indent, indent);
}

static tc_status manifest_json(const tc_model_config *cfg, const tc_param_layout *l,
                               const float *params, const tc_onnx_options *o, char **out) {
    char *model_json;
    TC_TRY(tc_model_config_to_json(cfg, &model_json));
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    double ls = params[l->logit_scale];
    tc_sbuf b = {0};
    tc_sbuf_puts(&b, "{\n  \"format\": \"tinyclip-onnx\",\n  \"model_cfg\": ");
    tc_sbuf_indented(&b, model_json, "  ");
    free(model_json);
    tc_sbuf_printf(&b,
                   ",\n  \"open_clip_regular\": %s,\n  \"precision\": \"%s\",\n  \"opset\": %d,\n"
                   "  \"logit_scale\": ",
                   cfg->irregular ? "false" : "true",
                   o->precision == TC_ONNX_FP16 ? "fp16" : "fp32", o->opset);
    tc_sbuf_json_number(&b, exp(ls));
    tc_sbuf_puts(&b, ",\n  \"logit_scale_log\": ");
    tc_sbuf_json_number(&b, ls);
    const char *ft = o->precision == TC_ONNX_FP16 ? "float16" : "float32";
    tc_sbuf_printf(&b,
                   ",\n  \"image_encoder\": {\"file\": \"image_encoder.onnx\", "
                   "\"input\": \"pixel_values\", \"input_shape\": [\"batch\", 3, %d, %d], "
                   "\"input_dtype\": \"%s\", \"output\": \"image_embeds\", "
                   "\"output_shape\": [\"batch\", %d], \"output_dtype\": \"%s\"},\n",
                   v->image_size, v->image_size, ft, cfg->embed_dim, ft);
    tc_sbuf_printf(&b,
                   "  \"text_encoder\": {\"file\": \"text_encoder.onnx\", "
                   "\"input\": \"input_ids\", \"input_shape\": [\"batch\", %d], "
                   "\"input_dtype\": \"int64\", \"output\": \"text_embeds\", "
                   "\"output_shape\": [\"batch\", %d], \"output_dtype\": \"%s\"},\n",
                   t->context_length, cfg->embed_dim, ft);
    tc_sbuf_puts(&b, "  \"preprocess_cfg\": ");
    preprocess_json(&b, v->image_size, "  ");
    tc_sbuf_printf(&b,
                   ",\n  \"tokenizer\": {\"kind\": \"open_clip SimpleTokenizer\", "
                   "\"vocab\": \"bpe_simple_vocab_16e6.txt.gz\", \"context_length\": %d, "
                   "\"start_of_text\": 49406, \"end_of_text\": 49407, \"pad\": 0}\n}\n",
                   t->context_length);
    return tc_sbuf_finish(&b, out);
}

static tc_status build(tc_onnx_graph **out, const char *name, const tc_model_config *cfg,
                       const tc_param_layout *l, const float *params, const tc_onnx_options *o,
                       int image, const char *manifest) {
    tc_onnx_graph *g;
    TC_TRY(tc_onnx_graph_create(&g, name, o->precision, o->opset));
    tc_status s =
        image ? tc_onnx_clip_image(g, cfg, l, params) : tc_onnx_clip_text(g, cfg, l, params);
    if (s == TC_OK) {
        tc_onnx_metadata(g, "tinyclip_onnx_config", manifest);
        s = tc_onnx_status(g);
    }
    if (s != TC_OK) {
        tc_onnx_graph_free(g);
        return s;
    }
    *out = g;
    return TC_OK;
}

static tc_status write_graph(tc_onnx_graph *g, const char *dir, const char *file,
                             const tc_onnx_options *o) {
    char *p = tc_path_join(dir, file);
    if (!p) return tc_fail(TC_ERR_OOM, "out of memory");
    /* the graph's own messages are small next to its weights: keep a margin */
    int external = o->external_data || tc_onnx_weight_bytes(g) + (64u << 20) > PROTOBUF_LIMIT;
    tc_status s = tc_onnx_write(g, p, external);
    free(p);
    return s;
}

tc_status tc_export_onnx(const char *dir, const tc_model_config *cfg, const tc_param_layout *l,
                         const float *params, const tc_onnx_options *opt) {
    tc_onnx_options o = opt ? *opt : tc_onnx_defaults();
    if (o.opset == 0) o.opset = TC_ONNX_OPSET_DEFAULT;
    if (o.opset < TC_ONNX_OPSET_MIN || o.opset > TC_ONNX_OPSET_MAX)
        return tc_fail(TC_ERR_ARG, "onnx export: opset %d is outside the supported %d..%d", o.opset,
                       TC_ONNX_OPSET_MIN, TC_ONNX_OPSET_MAX);
    TC_TRY(tc_model_config_validate(cfg, cfg->name[0] ? cfg->name : "model config"));
    TC_TRY(tc_param_layout_check(cfg, l, "onnx export"));
    for (size_t i = 0; i < l->total; i++)
        if (!isfinite(params[i])) {
            for (int k = 0; k < l->count; k++)
                if (i >= l->params[k].offset && i < l->params[k].offset + l->params[k].count)
                    return tc_fail(TC_ERR_NONFINITE,
                                   "onnx export: tensor %s holds a non-finite value",
                                   l->params[k].name);
            return tc_fail(TC_ERR_NONFINITE, "onnx export: a non-finite parameter");
        }
    /* everything that can fail on the model or the vocabulary, before any write */
    const char *vocab_path = tc_checkpoint_vocab_path();
    char *vocab = NULL, *manifest = NULL;
    size_t vocab_len = 0;
    tc_status s = tc_read_file_bounded(vocab_path, MAX_VOCAB_BYTES, &vocab, &vocab_len);
    if (s != TC_OK) {
        return tc_fail_context(s, "onnx export: the CLIP vocabulary written beside the graphs "
                                  "(scripts/setup fetches it; TINYCLIP_VOCAB names another)");
    }
    tc_onnx_graph *gi = NULL, *gt = NULL;
    s = manifest_json(cfg, l, params, &o, &manifest);
    if (s == TC_OK) s = build(&gi, "tinyclip image encoder", cfg, l, params, &o, 1, manifest);
    if (s == TC_OK) s = build(&gt, "tinyclip text encoder", cfg, l, params, &o, 0, manifest);
    if (s == TC_OK) s = tc_mkdir_p(dir);
    if (s == TC_OK) s = write_graph(gi, dir, "image_encoder.onnx", &o);
    if (s == TC_OK) s = write_graph(gt, dir, "text_encoder.onnx", &o);
    if (s == TC_OK)
        s = tc_write_file_atomic_in(dir, "onnx_config.json", manifest, strlen(manifest));
    if (s == TC_OK) {
        tc_sbuf b = {0};
        char *pp = NULL;
        preprocess_json(&b, cfg->vision.image_size, "");
        tc_sbuf_puts(&b, "\n");
        s = tc_sbuf_finish(&b, &pp);
        if (s == TC_OK) s = tc_write_file_atomic_in(dir, "preprocess_cfg.json", pp, strlen(pp));
        free(pp);
    }
    if (s == TC_OK)
        s = tc_write_file_atomic_in(dir, "bpe_simple_vocab_16e6.txt.gz", vocab, vocab_len);
    if (s == TC_OK) s = tc_checkpoint_save_tokenizer(dir, cfg->text.context_length);
    tc_onnx_graph_free(gi);
    tc_onnx_graph_free(gt);
    free(vocab);
    free(manifest);
    return s;
}
