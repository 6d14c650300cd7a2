/* saving a model in the open_clip layout (open_clip_model.safetensors +
 * open_clip_config.json) or the Hugging Face CLIPModel layout (model.safetensors,
 * config.json, preprocessor_config.json; the tokenizer files are the host's:
 * host/text/hf_tokenizer.h) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_keys.h"
#include "fileio.h"
#include "json.h"
#include "safetensors.h"

static const char *const MEAN_JSON = TC_CLIP_MEAN_JSON;
static const char *const STD_JSON = TC_CLIP_STD_JSON;

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

static tc_status save_hf(const char *dir, const tc_model_config *cfg, const tc_param_layout *layout,
                         const float *params) {
    char *config_json;
    TC_TRY(tc_model_config_to_hf_json(cfg, &config_json)); /* refuses what HF cannot express */
    int cap = layout->count + 2 * (cfg->vision.layers + cfg->text.layers) * 2 + 4;
    tc_st_write_tensor *w = calloc((size_t)cap, sizeof *w);
    char(*names)[TC_CKPT_NAME_MAX] = calloc((size_t)cap, sizeof *names);
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
                tc_ckpt_canon_to_hf(p->name, q, names[n], TC_CKPT_NAME_MAX);
                fill_write(&w[n], names[n], p, data + (size_t)q * third);
                w[n].shape[0] = p->shape[0] / 3;
                n++;
            }
            continue;
        }
        if (!tc_ckpt_canon_to_hf(p->name, -1, names[n], TC_CKPT_NAME_MAX)) {
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
    return write_string_file(dir, "preprocessor_config.json", buf);
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
