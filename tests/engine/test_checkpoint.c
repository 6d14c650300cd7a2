/* checkpoints: bit-exact round trips through the open_clip and Hugging Face
 * layouts, import of the OpenAI / DDP / TinyCLIP-native / CustomText layouts
 * (written here from a known model), errors that name the tensor, irregular
 * models, single-file weights with metadata, the convert command, and a
 * ResNet model's BatchNorm buffers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "fileio.h"
#include "json.h"
#include "safetensors.h"
#include "testutil.h"

static char *tmpdir;
static tc_model_config cfg;
static tc_param_layout layout;
static float *params;

/* a tiny uniform model; QuickGELU so that a lost activation shows */
static const char *const MODEL_JSON =
    "{\"embed_dim\": 32, \"quick_gelu\": true,"
    " \"vision_cfg\": {\"image_size\": 16, \"patch_size\": 8, \"layers\": 2, \"width\": 64,"
    " \"mlp_ratio\": 2.0},"
    " \"text_cfg\": {\"context_length\": 8, \"vocab_size\": 100, \"width\": 64, \"heads\": 1,"
    " \"layers\": 2, \"mlp_ratio\": 3.0}}";

static int setup(void **state) {
    (void)state;
    tmpdir = tc_make_tempdir("ckpt");
    if (!tmpdir) return -1;
    if (tc_model_config_parse(&cfg, MODEL_JSON, strlen(MODEL_JSON), "tiny.json") != TC_OK)
        return -1;
    if (tc_param_layout_build(&layout, &cfg) != TC_OK) return -1;
    params = malloc(layout.total * sizeof *params);
    uint64_t seed = 42;
    tc_fill_uniform(params, layout.total, &seed, 1.0f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(params);
    tc_param_layout_free(&layout);
    tc_rmtree(tmpdir);
    free(tmpdir);
    return 0;
}

static const char *path_in(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", tmpdir, name);
    return buf;
}

static void load_and_compare(const char *path, const tc_model_config *hint) {
    tc_model_config c;
    tc_param_layout l;
    float *p;
    if (tc_checkpoint_load(path, hint, &c, &l, &p) != TC_OK)
        fail_msg("%s: %s", path, tc_last_error());
    assert_int_equal(c.activation, TC_QUICK_GELU);
    assert_int_equal(c.embed_dim, cfg.embed_dim);
    assert_memory_equal(&c.vision, &cfg.vision, sizeof c.vision);
    assert_memory_equal(&c.text, &cfg.text, sizeof c.text);
    assert_int_equal(l.total, layout.total);
    assert_memory_equal(p, params, layout.total * sizeof *p); /* identical bits */
    free(p);
    tc_param_layout_free(&l);
}

/* writes the model under other key names; rename returns 0 to skip a tensor */
typedef int (*rename_fn)(const char *canon, char *out, size_t cap);

static void write_renamed(const char *path, rename_fn rename, tc_dtype dtype, int scalar_as_1,
                          const tc_st_write_tensor *extra, int n_extra) {
    int n = layout.count + n_extra;
    tc_st_write_tensor *w = calloc((size_t)n, sizeof *w);
    char(*names)[160] = calloc((size_t)n, sizeof *names);
    uint16_t *half = NULL;
    if (dtype != TC_DT_F32) {
        half = malloc(layout.total * sizeof *half);
        for (size_t i = 0; i < layout.total; i++)
            half[i] =
                dtype == TC_DT_F16 ? tc_float_to_half(params[i]) : tc_float_to_bfloat(params[i]);
    }
    int k = 0;
    for (int i = 0; i < layout.count; i++) {
        const tc_param_info *p = &layout.params[i];
        if (!rename(p->name, names[k], sizeof names[k])) continue;
        w[k].name = names[k];
        w[k].dtype = dtype;
        w[k].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++)
            w[k].shape[d] = p->shape[d];
        if (p->ndim == 0 && scalar_as_1) {
            w[k].ndim = 1;
            w[k].shape[0] = 1;
        }
        w[k].data = half ? (const void *)(half + p->offset) : (const void *)(params + p->offset);
        k++;
    }
    for (int i = 0; i < n_extra; i++)
        w[k++] = extra[i];
    assert_int_equal(tc_st_write(path, w, k, NULL, NULL, 0), TC_OK);
    free(w);
    free(names);
    free(half);
}

static int same_name(const char *c, char *out, size_t cap) {
    snprintf(out, cap, "%s", c);
    return 1;
}
static int ddp_name(const char *c, char *out, size_t cap) {
    snprintf(out, cap, "module.%s", c);
    return 1;
}
static int state_dict_name(const char *c, char *out, size_t cap) {
    snprintf(out, cap, "state_dict.module.%s", c);
    return 1;
}
static int tinyclip_name(const char *c, char *out, size_t cap) {
    if (strncmp(c, "visual.", 7) == 0)
        snprintf(out, cap, "_image_encoder.module.%s", c);
    else if (strcmp(c, "logit_scale") == 0)
        snprintf(out, cap, "_logit_scale.logit_scale");
    else
        snprintf(out, cap, "_text_encoder.%s", c);
    return 1;
}
static int custom_text_name(const char *c, char *out, size_t cap) {
    if (strncmp(c, "visual.", 7) == 0 || strcmp(c, "logit_scale") == 0)
        snprintf(out, cap, "%s", c);
    else
        snprintf(out, cap, "text.%s", c);
    return 1;
}
static const char *skip_name;
static int all_but_one(const char *c, char *out, size_t cap) {
    snprintf(out, cap, "%s", c);
    return strcmp(c, skip_name) != 0;
}

static void test_openclip_round_trip(void **state) {
    (void)state;
    char dir[512], p[600];
    path_in("oc", dir, sizeof dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &cfg, &layout, params), TC_OK);
    snprintf(p, sizeof p, "%s/open_clip_config.json", dir);
    size_t len;
    char *text = tc_read_file(p, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"model_cfg\""));
    assert_non_null(strstr(text, "\"quick_gelu\": true"));
    assert_non_null(strstr(text, "\"interpolation\": \"bicubic\""));
    assert_non_null(strstr(text, "\"resize_mode\": \"shortest\""));
    assert_non_null(strstr(text, "0.48145466"));
    free(text);
    /* memory order = open_clip key order, F32, logit_scale 0-dim */
    snprintf(p, sizeof p, "%s/open_clip_model.safetensors", dir);
    tc_safetensors *f;
    assert_int_equal(tc_st_open(&f, p), TC_OK);
    assert_int_equal(tc_st_count(f), layout.count);
    for (int i = 0; i < layout.count; i++) {
        const tc_st_tensor *t = tc_st_tensor_at(f, i);
        assert_string_equal(t->name, layout.params[i].name);
        assert_int_equal(t->begin, layout.params[i].offset * 4);
        assert_int_equal(t->dtype, TC_DT_F32);
    }
    assert_string_equal(tc_st_tensor_at(f, 0)->name, "positional_embedding");
    assert_int_equal(tc_st_find(f, "logit_scale")->ndim, 0);
    assert_string_equal(tc_st_metadata(f, "format"), "pt");
    tc_st_close(f);
    load_and_compare(dir, NULL); /* directory */
    load_and_compare(p, NULL);   /* the weights file: config from its metadata */
}

static void test_hf_round_trip(void **state) {
    (void)state;
    if (!tc_file_exists(tc_checkpoint_vocab_path())) {
        printf("SKIP: CLIP vocabulary missing at %s (run scripts/setup)\n",
               tc_checkpoint_vocab_path());
        skip();
    }
    char dir[512], p[600];
    path_in("hf", dir, sizeof dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_HF, &cfg, &layout, params), TC_OK);
    load_and_compare(dir, NULL); /* open_clip -> engine -> HF -> engine, losslessly */

    /* the two transposes and the q/k/v split, checked element by element */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    tc_safetensors *f;
    assert_int_equal(tc_st_open(&f, p), TC_OK);
    assert_string_equal(tc_st_metadata(f, "format"), "pt");
    const tc_param_info *vp = tc_param_find(&layout, "visual.proj");
    const tc_st_tensor *t = tc_st_find(f, "visual_projection.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 64);
    float *buf = malloc(64 * 64 * sizeof *buf);
    assert_int_equal(tc_st_tensor_to_f32(f, t, buf), TC_OK);
    for (int r = 0; r < 64; r++)
        for (int c = 0; c < 32; c++)
            assert_true(buf[c * 64 + r] == params[vp->offset + r * 32 + c]);
    const tc_param_info *tp = tc_param_find(&layout, "text_projection");
    t = tc_st_find(f, "text_projection.weight");
    assert_int_equal(tc_st_tensor_to_f32(f, t, buf), TC_OK);
    for (int r = 0; r < 64; r++)
        for (int c = 0; c < 32; c++)
            assert_true(buf[c * 64 + r] == params[tp->offset + r * 32 + c]);
    const tc_param_info *qkv =
        tc_param_find(&layout, "transformer.resblocks.1.attn.in_proj_weight");
    t = tc_st_find(f, "text_model.encoder.layers.1.self_attn.k_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(tc_st_tensor_to_f32(f, t, buf), TC_OK);
    assert_memory_equal(buf, params + qkv->offset + 64 * 64, 64 * 64 * sizeof *buf);
    assert_non_null(tc_st_find(f, "vision_model.pre_layrnorm.weight"));
    assert_null(tc_st_find(f, "vision_model.embeddings.position_ids"));
    free(buf);
    tc_st_close(f);

    /* config, preprocessing and tokenizer files */
    size_t len;
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *text = tc_read_file(p, &len);
    assert_non_null(strstr(text, "\"hidden_act\": \"quick_gelu\""));
    assert_non_null(strstr(text, "\"intermediate_size\": 192")); /* text mlp 3.0 x 64 */
    free(text);
    snprintf(p, sizeof p, "%s/preprocessor_config.json", dir);
    text = tc_read_file(p, &len);
    assert_non_null(strstr(text, "\"shortest_edge\": 16"));
    free(text);
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    text = tc_read_file(p, &len);
    assert_int_equal(strncmp(text, "#version: 0.2\ni n\nt h\n", 22), 0);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, 48895);
    assert_non_null(strstr(text, "\njeky ll</w>\n")); /* the last merge used */
    free(text);
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    text = tc_read_file(p, &len);
    tc_json *v;
    assert_int_equal(tc_json_parse(text, len, p, &v), TC_OK);
    assert_int_equal(v->count, 49408);
    assert_int_equal(tc_json_get(v, "!")->integer, 0);
    assert_int_equal(tc_json_get(v, "!</w>")->integer, 256);
    assert_int_equal(tc_json_get(v, "in")->integer, 512);
    assert_int_equal(tc_json_get(v, "\xc4\xa0")->integer, 220); /* byte 32 -> U+0120 */
    assert_int_equal(tc_json_get(v, "a</w>")->integer, 320);    /* "a" in "a photo" */
    assert_int_equal(tc_json_get(v, "photo</w>")->integer, 1125);
    assert_int_equal(tc_json_get(v, "<|startoftext|>")->integer, 49406);
    assert_int_equal(tc_json_get(v, "<|endoftext|>")->integer, 49407);
    tc_json_free(v);
    free(text);
    const char *names[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        text = tc_read_file(p, &len);
        assert_non_null(text);
        assert_int_equal(tc_json_parse(text, len, p, &v), TC_OK);
        assert_string_equal(tc_json_get(v, "eos_token")->string, "<|endoftext|>");
        tc_json_free(v);
        free(text);
    }
}

static void test_foreign_layouts(void **state) {
    (void)state;
    char p[600];
    /* OpenAI: module. prefix, integer extras, logit_scale [1] */
    int64_t res = 16, ctx = 8, vocab = 100;
    tc_st_write_tensor extras[3] = {{"input_resolution", TC_DT_I64, 0, {0}, &res},
                                    {"context_length", TC_DT_I64, 0, {0}, &ctx},
                                    {"vocab_size", TC_DT_I64, 0, {0}, &vocab}};
    write_renamed(path_in("openai.safetensors", p, sizeof p), same_name, TC_DT_F32, 1, extras, 3);
    load_and_compare(p, &cfg);
    write_renamed(path_in("ddp.safetensors", p, sizeof p), ddp_name, TC_DT_F32, 0, NULL, 0);
    load_and_compare(p, &cfg);
    write_renamed(path_in("sd.safetensors", p, sizeof p), state_dict_name, TC_DT_F32, 0, NULL, 0);
    load_and_compare(p, &cfg);
    write_renamed(path_in("tinyclip.safetensors", p, sizeof p), tinyclip_name, TC_DT_F32, 1, NULL,
                  0);
    load_and_compare(p, &cfg);
    write_renamed(path_in("custom.safetensors", p, sizeof p), custom_text_name, TC_DT_F32, 0, NULL,
                  0);
    load_and_compare(p, &cfg);

    /* F16 and BF16 weights are widened to fp32 */
    const tc_dtype dts[2] = {TC_DT_F16, TC_DT_BF16};
    for (int d = 0; d < 2; d++) {
        write_renamed(path_in("half.safetensors", p, sizeof p), tinyclip_name, dts[d], 0, NULL, 0);
        tc_model_config c;
        tc_param_layout l;
        float *q;
        assert_int_equal(tc_checkpoint_load(p, &cfg, &c, &l, &q), TC_OK);
        for (size_t i = 0; i < layout.total; i++) {
            float want = dts[d] == TC_DT_F16 ? tc_half_to_float(tc_float_to_half(params[i]))
                                             : tc_bfloat_to_float(tc_float_to_bfloat(params[i]));
            if (q[i] != want) fail_msg("element %zu: %g != %g", i, q[i], want);
        }
        free(q);
        tc_param_layout_free(&l);
    }
}

static void expect_load_error(const char *path, const tc_model_config *hint, const char *needle) {
    tc_model_config c;
    tc_param_layout l;
    float *q = (float *)1;
    tc_status st = tc_checkpoint_load(path, hint, &c, &l, &q);
    if (st == TC_OK) fail_msg("%s loaded", path);
    assert_null(q);
    if (!strstr(tc_last_error(), needle))
        fail_msg("message '%s' lacks '%s'", tc_last_error(), needle);
    /* the header-only check fails the same way, without reading a tensor */
    char first[1024];
    snprintf(first, sizeof first, "%s", tc_last_error());
    if (tc_checkpoint_check(path, hint, &c) == TC_OK) fail_msg("%s passed the check", path);
    if (strcmp(tc_last_error(), first) != 0)
        fail_msg("check: '%s', load: '%s'", tc_last_error(), first);
}

static void test_errors_name_the_tensor(void **state) {
    (void)state;
    char p[600];
    path_in("bad.safetensors", p, sizeof p);
    skip_name = "visual.ln_post.bias";
    write_renamed(p, all_but_one, TC_DT_F32, 0, NULL, 0);
    expect_load_error(p, &cfg, "tensor 'visual.ln_post.bias' is missing");

    float junk[4] = {0};
    tc_st_write_tensor extra = {"visual.extra_head.weight", TC_DT_F32, 1, {4}, junk};
    write_renamed(p, same_name, TC_DT_F32, 0, &extra, 1);
    expect_load_error(p, &cfg, "unexpected tensor 'visual.extra_head.weight'");

    /* the wrong shape: a model with a different text width */
    tc_model_config other = cfg;
    tc_tower_set_uniform(&other.text, 2, 128, 2, 384);
    expect_load_error(p, &other, "has shape [8, 64], the model config expects [8, 128]");

    /* an integer tensor where a weight belongs */
    int32_t ints[64] = {0};
    skip_name = "visual.ln_pre.weight";
    tc_st_write_tensor iw = {"visual.ln_pre.weight", TC_DT_I32, 1, {64}, ints};
    write_renamed(p, all_but_one, TC_DT_F32, 0, &iw, 1);
    expect_load_error(p, &cfg, "tensor 'visual.ln_pre.weight' has dtype I32");

    /* two keys that map to the same tensor */
    skip_name = "";
    float ls = 0;
    tc_st_write_tensor dup = {"module.logit_scale", TC_DT_F32, 0, {0}, &ls};
    write_renamed(p, same_name, TC_DT_F32, 0, &dup, 1);
    expect_load_error(p, &cfg, "both map to 'logit_scale'");

    /* no config anywhere: ask for --model */
    write_renamed(p, same_name, TC_DT_F32, 0, NULL, 0);
    expect_load_error(p, NULL, "--model");

    /* not a safetensors file, missing paths, pickles */
    path_in("garbage.safetensors", p, sizeof p);
    assert_int_equal(tc_write_file(p, "PK\3\4 this is a zip", 18), 0);
    expect_load_error(p, &cfg, "invalid safetensors file");
    expect_load_error("/nonexistent/ckpt", &cfg, "no such file or directory");
    char dir[512];
    path_in("pickle", dir, sizeof dir);
    assert_int_equal(tc_mkdir_p(dir), TC_OK);
    snprintf(p, sizeof p, "%s/open_clip_pytorch_model.bin", dir);
    assert_int_equal(tc_write_file(p, "x", 1), 0);
    expect_load_error(dir, &cfg, "torch pickle");

    /* HF layout: a missing q part names the HF key */
    path_in("hf", dir, sizeof dir);
    if (tc_file_exists(dir)) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        tc_safetensors *f;
        assert_int_equal(tc_st_open(&f, p), TC_OK);
        int n = tc_st_count(f), k = 0;
        tc_st_write_tensor *w = calloc((size_t)n, sizeof *w);
        for (int i = 0; i < n; i++) {
            const tc_st_tensor *t = tc_st_tensor_at(f, i);
            if (strcmp(t->name, "vision_model.encoder.layers.0.self_attn.v_proj.bias") == 0)
                continue;
            w[k].name = t->name;
            w[k].dtype = t->dtype;
            w[k].ndim = t->ndim;
            memcpy(w[k].shape, t->shape, sizeof t->shape);
            w[k].data = t->data;
            k++;
        }
        char q[600];
        path_in("model.safetensors", q, sizeof q);
        assert_int_equal(tc_st_write(q, w, k, NULL, NULL, 0), TC_OK);
        free(w);
        tc_st_close(f);
        expect_load_error(q, &cfg,
                          "'vision_model.encoder.layers.0.self_attn.v_proj.bias' is missing");
    }
}

/* a tensor named "" is an unknown name like any other; a FIFO where the
 * weights belong is said to be one (never opened: it would block) */
static void test_empty_name_and_fifo(void **state) {
    (void)state;
    char p[700], dir[600];
    path_in("empty_name.safetensors", p, sizeof p);
    float junk[4] = {0};
    tc_st_write_tensor extra = {"", TC_DT_F32, 1, {4}, junk};
    write_renamed(p, same_name, TC_DT_F32, 0, &extra, 1);
    expect_load_error(p, &cfg, "unexpected tensor ''");

    path_in("fifo.safetensors", p, sizeof p);
    assert_int_equal(mkfifo(p, 0600), 0);
    expect_load_error(p, &cfg, "fifo.safetensors: is not a regular file (a FIFO)");
    path_in("fifo_dir", dir, sizeof dir);
    assert_int_equal(tc_mkdir_p(dir), TC_OK);
    snprintf(p, sizeof p, "%s/open_clip_model.safetensors", dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    expect_load_error(dir, &cfg, "open_clip_model.safetensors: is not a regular file (a FIFO)");
    /* a FIFO given as a model config: refused at once, not waited on */
    path_in("fifo.json", p, sizeof p);
    assert_int_equal(mkfifo(p, 0600), 0);
    tc_model_config fc;
    assert_int_not_equal(tc_model_config_load(&fc, p), TC_OK);
    if (!strstr(tc_last_error(), "fifo.json: is not a regular file (a FIFO)"))
        fail_msg("%s", tc_last_error());

    /* a good file passes the check and gives the config the load gives */
    path_in("good.safetensors", p, sizeof p);
    write_renamed(p, same_name, TC_DT_F32, 0, NULL, 0);
    tc_model_config c;
    assert_int_equal(tc_checkpoint_check(p, &cfg, &c), TC_OK);
    assert_int_equal(c.vision.width, cfg.vision.width);
}

/* tinyclip embed refuses what would give garbage or destroy its input:
 * --out naming the model's own weights, NaN weights, NaN pixels */
static void test_cli_embed_refusals(void **state) {
    (void)state;
    char dir[512], w[700], px[700], cmd[2400], *out = NULL;
    path_in("embed-oc", dir, sizeof dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &cfg, &layout, params), TC_OK);
    snprintf(w, sizeof w, "%s/open_clip_model.safetensors", dir);
    size_t n0;
    char *before = tc_read_file(w, &n0);
    /* pixels (2,3,16,16), the second image with one NaN */
    size_t per = 3 * 16 * 16;
    float *pix = calloc(2 * per, sizeof *pix);
    path_in("pixels.safetensors", px, sizeof px);
    tc_st_write_tensor t = {"pixels", TC_DT_F32, 4, {2, 3, 16, 16}, pix};
    assert_int_equal(tc_st_write(px, &t, 1, NULL, NULL, 0), TC_OK);

    snprintf(cmd, sizeof cmd, "embed %s --pixels %s --out %s", dir, px, w);
    assert_int_not_equal(tc_run_cli(cmd, &out), 0);
    if (!strstr(out, "is the model's weights; writing it would replace its own input"))
        fail_msg("%s", out);
    free(out);
    size_t n1;
    char *after = tc_read_file(w, &n1);
    assert_true(n0 == n1 && memcmp(before, after, n0) == 0);
    free(after);
    snprintf(cmd, sizeof cmd, "embed %s --pixels %s --out %s", dir, px, px);
    assert_int_not_equal(tc_run_cli(cmd, &out), 0);
    if (!strstr(out, "is the --pixels input")) fail_msg("%s", out);
    free(out);

    pix[per + 77] = NAN;
    assert_int_equal(tc_st_write(px, &t, 1, NULL, NULL, 0), TC_OK);
    char feats[700];
    path_in("features.safetensors", feats, sizeof feats);
    snprintf(cmd, sizeof cmd, "embed %s --pixels %s --out %s", dir, px, feats);
    assert_int_not_equal(tc_run_cli(cmd, &out), 0);
    if (!strstr(
            out,
            "pixels.safetensors: the pixels of row 1 hold a non-finite value (nan at element 77)"))
        fail_msg("%s", out);
    assert_false(tc_file_exists(feats));
    free(out);

    /* a NaN in one weight: named by its tensor */
    pix[per + 77] = 0;
    assert_int_equal(tc_st_write(px, &t, 1, NULL, NULL, 0), TC_OK);
    const tc_param_info *p = tc_param_find(&layout, "visual.ln_post.weight");
    assert_non_null(p);
    float keep = params[p->offset + 3];
    params[p->offset + 3] = NAN;
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &cfg, &layout, params), TC_OK);
    params[p->offset + 3] = keep;
    assert_int_not_equal(tc_run_cli(cmd, &out), 0);
    if (!strstr(out, "tensor 'visual.ln_post.weight' holds a non-finite value (nan at element 3)"))
        fail_msg("%s", out);
    assert_false(tc_file_exists(feats));
    free(out);
    free(before);
    free(pix);
}

static void test_irregular_model(void **state) {
    (void)state;
    const char *json =
        "{\"embed_dim\": 16, \"vision_cfg\": {\"image_size\": 8, \"patch_size\": 4,"
        " \"layers\": 3, \"width\": 40, \"heads\": [1, 0, 2], \"mlp_width\": [7, 9, 0]},"
        " \"text_cfg\": {\"context_length\": 5, \"vocab_size\": 30, \"width\": 24,"
        " \"heads\": [0, 1], \"layers\": 2, \"mlp_width\": [0, 0]}}";
    tc_model_config ic;
    assert_int_equal(tc_model_config_parse(&ic, json, strlen(json), "pruned.json"), TC_OK);
    assert_true(ic.irregular);
    tc_param_layout il;
    assert_int_equal(tc_param_layout_build(&il, &ic), TC_OK);
    float *ip = malloc(il.total * sizeof *ip);
    uint64_t seed = 7;
    tc_fill_uniform(ip, il.total, &seed, 1.0f);
    char dir[512];
    path_in("pruned", dir, sizeof dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &ic, &il, ip), TC_OK);
    tc_model_config c;
    tc_param_layout l;
    float *q;
    assert_int_equal(tc_checkpoint_load(dir, NULL, &c, &l, &q), TC_OK);
    assert_memory_equal(&c.vision, &ic.vision, sizeof c.vision);
    assert_memory_equal(&c.text, &ic.text, sizeof c.text);
    assert_int_equal(l.total, il.total);
    assert_memory_equal(q, ip, il.total * sizeof *q);
    free(q);
    tc_param_layout_free(&l);
    /* Hugging Face cannot express it: refused before anything is written */
    path_in("pruned-hf", dir, sizeof dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_HF, &ic, &il, ip), TC_ERR_UNSUPPORTED);
    assert_non_null(strstr(tc_last_error(), "irregular"));
    assert_false(tc_file_exists(dir));
    /* a layout that does not belong to the config is refused */
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &cfg, &il, ip), TC_ERR_ARG);
    free(ip);
    tc_param_layout_free(&il);
}

static void test_single_file_with_metadata(void **state) {
    (void)state;
    char p[600];
    path_in("stage/weights.safetensors", p, sizeof p);
    char dir[512];
    path_in("stage", dir, sizeof dir);
    assert_int_equal(tc_mkdir_p(dir), TC_OK);
    assert_int_equal(tc_checkpoint_save_file(p, &cfg, &layout, params,
                                             "{\"step\": \"1200\", \"stage\": \"s1\"}"),
                     TC_OK);
    tc_safetensors *f;
    assert_int_equal(tc_st_open(&f, p), TC_OK);
    assert_string_equal(tc_st_metadata(f, "step"), "1200");
    assert_string_equal(tc_st_metadata(f, "format"), "pt");
    assert_non_null(tc_st_metadata(f, "tinyclip_model_cfg"));
    tc_st_close(f);
    load_and_compare(p, NULL);
    assert_int_equal(tc_checkpoint_save_file(p, &cfg, &layout, params, "{\"step\": 3}"),
                     TC_ERR_ARG);
    assert_int_equal(tc_checkpoint_save_file(p, &cfg, &layout, params, "[1"), TC_ERR_FORMAT);
    /* no temp files are left in the directory */
    char cmd[700], *out;
    snprintf(cmd, sizeof cmd, "ls -A %s", dir);
    FILE *ls = popen(cmd, "r");
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, ls)) {
        n++;
        if (strstr(line, ".tmp.")) fail_msg("temp file left: %s", line);
    }
    pclose(ls);
    assert_int_equal(n, 1);
    (void)out;
}

static void test_cli_convert(void **state) {
    (void)state;
    char oc[512], hf[512], back[512], cmd[2400], *out = NULL;
    path_in("cli-oc", oc, sizeof oc);
    path_in("cli-hf", hf, sizeof hf);
    path_in("cli-back", back, sizeof back);
    assert_int_equal(tc_checkpoint_save(oc, TC_FORMAT_OPENCLIP, &cfg, &layout, params), TC_OK);
    int have_vocab = tc_file_exists(tc_checkpoint_vocab_path());
    if (have_vocab) {
        snprintf(cmd, sizeof cmd, "convert %s %s --to hf", oc, hf);
        int rc = tc_run_cli(cmd, &out);
        if (rc != 0) fail_msg("rc %d: %s", rc, out);
        free(out);
        snprintf(cmd, sizeof cmd, "convert %s %s --to openclip", hf, back);
    } else {
        snprintf(cmd, sizeof cmd, "convert %s %s --to openclip", oc, back);
    }
    int rc = tc_run_cli(cmd, &out);
    if (rc != 0) fail_msg("rc %d: %s", rc, out);
    free(out);
    load_and_compare(back, NULL);
    snprintf(cmd, sizeof cmd, "inspect %s", back);
    rc = tc_run_cli(cmd, &out);
    if (rc != 0 || !strstr(out, "activation: quick_gelu")) fail_msg("rc %d: %s", rc, out);
    free(out);

    /* a bare weights file needs --model */
    char bare[600], cfgpath[600];
    path_in("bare.safetensors", bare, sizeof bare);
    write_renamed(bare, tinyclip_name, TC_DT_F32, 0, NULL, 0);
    snprintf(cmd, sizeof cmd, "convert %s %s/x --to openclip", bare, tmpdir);
    rc = tc_run_cli(cmd, &out);
    if (rc == 0 || !strstr(out, "--model")) fail_msg("rc %d: %s", rc, out);
    free(out);
    path_in("tiny.json", cfgpath, sizeof cfgpath);
    assert_int_equal(tc_write_file(cfgpath, MODEL_JSON, strlen(MODEL_JSON)), 0);
    path_in("bare-out", back, sizeof back);
    snprintf(cmd, sizeof cmd, "convert %s %s --to openclip --model %s", bare, back, cfgpath);
    rc = tc_run_cli(cmd, &out);
    if (rc != 0) fail_msg("rc %d: %s", rc, out);
    free(out);
    load_and_compare(back, NULL);

    /* malformed checkpoint and bad arguments */
    path_in("garbage2.safetensors", bare, sizeof bare);
    assert_int_equal(tc_write_file(bare, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10), 0);
    snprintf(cmd, sizeof cmd, "convert %s %s/y --to hf --model %s", bare, tmpdir, cfgpath);
    rc = tc_run_cli(cmd, &out);
    if (rc != 1 || !strstr(out, "exceeds the limit")) fail_msg("rc %d: %s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "inspect %s --model %s", bare, cfgpath);
    rc = tc_run_cli(cmd, &out);
    if (rc != 1 || !strstr(out, "invalid safetensors file")) fail_msg("rc %d: %s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "convert %s %s/z --to tflite", oc, tmpdir);
    rc = tc_run_cli(cmd, &out);
    assert_int_equal(rc, 2);
    free(out);
}

/* every tensor of `ref` is in `ours` under the same name, dtype, shape and bytes,
 * and the two files hold the same number of tensors */
static void same_tensors(const char *ref_path, const char *our_path) {
    tc_safetensors *ref, *ours;
    if (tc_st_open(&ref, ref_path) != TC_OK) fail_msg("%s", tc_last_error());
    if (tc_st_open(&ours, our_path) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(tc_st_count(ref), tc_st_count(ours));
    for (int i = 0; i < tc_st_count(ref); i++) {
        const tc_st_tensor *a = tc_st_tensor_at(ref, i), *b = tc_st_find(ours, a->name);
        if (!b) fail_msg("%s: tensor '%s' not written", our_path, a->name);
        assert_int_equal(a->dtype, b->dtype);
        assert_int_equal(a->ndim, b->ndim);
        assert_memory_equal(a->shape, b->shape, sizeof a->shape[0] * (size_t)a->ndim);
        if (a->end - a->begin != b->end - b->begin ||
            memcmp(a->data, b->data, (size_t)(a->end - a->begin)) != 0)
            fail_msg("tensor '%s' differs from %s", a->name, ref_path);
    }
    tc_st_close(ref);
    tc_st_close(ours);
}

/* the parity fixtures (scripts/fixtures_model.py): an open_clip model and the
 * copy transformers wrote of it. both load to the same bits, and our exports
 * reproduce both files tensor for tensor. */
static void test_reference_fixtures(void **state) {
    (void)state;
    const char *names[] = {"tiny_gelu", "tiny_quickgelu"};
    for (int n = 0; n < 2; n++) {
        char cfgp[512], oc[512], hf[512], hfw[600], out[512], outw[600];
        char rel[128];
        snprintf(rel, sizeof rel, "parity/%s.json", names[n]);
        tc_fixture(rel, cfgp, sizeof cfgp);
        snprintf(rel, sizeof rel, "parity/%s_model.safetensors", names[n]);
        tc_fixture(rel, oc, sizeof oc);
        snprintf(rel, sizeof rel, "parity/%s_hf", names[n]);
        tc_fixture(rel, hf, sizeof hf);
        if (!tc_file_exists(oc) || !tc_file_exists(hf)) {
            printf("SKIP: parity fixture %s missing\n", names[n]);
            skip();
        }
        tc_model_config hint, ca, cb;
        if (tc_model_config_load(&hint, cfgp) != TC_OK) fail_msg("%s", tc_last_error());
        tc_param_layout la, lb;
        float *pa, *pb;
        if (tc_checkpoint_load(oc, &hint, &ca, &la, &pa) != TC_OK) fail_msg("%s", tc_last_error());
        if (tc_checkpoint_load(hf, NULL, &cb, &lb, &pb) != TC_OK) fail_msg("%s", tc_last_error());
        assert_int_equal(ca.activation, n == 0 ? TC_GELU : TC_QUICK_GELU);
        assert_int_equal(cb.activation, ca.activation); /* from config.json hidden_act */
        assert_memory_equal(&ca.vision, &cb.vision, sizeof ca.vision);
        assert_memory_equal(&ca.text, &cb.text, sizeof ca.text);
        assert_int_equal(la.total, lb.total);
        assert_memory_equal(pa, pb, la.total * sizeof *pa);

        snprintf(rel, sizeof rel, "fixture-oc-%d", n);
        path_in(rel, out, sizeof out);
        assert_int_equal(tc_checkpoint_save(out, TC_FORMAT_OPENCLIP, &ca, &la, pa), TC_OK);
        snprintf(outw, sizeof outw, "%s/open_clip_model.safetensors", out);
        same_tensors(oc, outw);
        if (tc_file_exists(tc_checkpoint_vocab_path())) {
            snprintf(rel, sizeof rel, "fixture-hf-%d", n);
            path_in(rel, out, sizeof out);
            assert_int_equal(tc_checkpoint_save(out, TC_FORMAT_HF, &ca, &la, pa), TC_OK);
            snprintf(outw, sizeof outw, "%s/model.safetensors", out);
            snprintf(hfw, sizeof hfw, "%s/model.safetensors", hf);
            same_tensors(hfw, outw);
        }
        free(pa);
        free(pb);
        tc_param_layout_free(&la);
        tc_param_layout_free(&lb);
    }
}

/* a ResNet model's BatchNorm buffers: written as torch writes them
 * (num_batches_tracked I64), read back exactly, a missing batch count taken
 * as 0 (older state dicts), a missing running variance or a negative count
 * refused by name; Hugging Face export refused with the reason */
static void test_resnet_buffers(void **state) {
    (void)state;
    const char *json =
        "{\"embed_dim\": 16, \"vision_cfg\": {\"image_size\": 32, \"layers\": [1, 1, 1, 1], "
        "\"width\": 4, \"head_width\": 32, \"patch_size\": null}, \"text_cfg\": "
        "{\"context_length\": 8, \"vocab_size\": 100, \"width\": 64, \"heads\": 1, \"layers\": 1}}";
    tc_model_config rc;
    if (tc_model_config_parse(&rc, json, strlen(json), "rn.json") != TC_OK)
        fail_msg("%s", tc_last_error());
    tc_param_layout rl;
    assert_int_equal(tc_param_layout_build(&rl, &rc), TC_OK);
    float *rp = malloc(rl.total * sizeof *rp);
    uint64_t seed = 7;
    tc_fill_uniform(rp, rl.total, &seed, 1.0f);
    const tc_param_info *nbt =
        tc_param_find(&rl, "visual.layer2.0.downsample.1.num_batches_tracked");
    const tc_param_info *rv = tc_param_find(&rl, "visual.bn2.running_var");
    assert_non_null(nbt);
    assert_non_null(rv);
    for (int i = 0; i < rl.count; i++)
        if (rl.params[i].buffer && rl.params[i].ndim == 0) rp[rl.params[i].offset] = 12.0f;
    rp[nbt->offset] = 1234.0f;
    char dir[1100], file[1200];
    path_in("rn", dir, sizeof dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &rc, &rl, rp), TC_OK);
    snprintf(file, sizeof file, "%s/open_clip_model.safetensors", dir);
    tc_safetensors *st;
    assert_int_equal(tc_st_open(&st, file), TC_OK);
    const tc_st_tensor *t = tc_st_find(st, nbt->name);
    assert_non_null(t);
    assert_int_equal(t->dtype, TC_DT_I64);
    assert_int_equal(t->ndim, 0);
    int64_t v;
    memcpy(&v, t->data, 8);
    assert_int_equal(v, 1234);
    /* the same tensors without the batch counts, then without a running variance */
    tc_st_write_tensor *w = calloc((size_t)tc_st_count(st), sizeof *w);
    int n = 0, n_rv = -1;
    for (int i = 0; i < tc_st_count(st); i++) {
        const tc_st_tensor *x = tc_st_tensor_at(st, i);
        if (strstr(x->name, "num_batches_tracked")) continue;
        if (strcmp(x->name, rv->name) == 0) n_rv = n;
        w[n] = (tc_st_write_tensor){x->name, x->dtype, x->ndim, {0}, x->data};
        for (int d = 0; d < x->ndim; d++)
            w[n].shape[d] = x->shape[d];
        n++;
    }
    char nobt[1200], norv[1200];
    path_in("rn-no-count.safetensors", nobt, sizeof nobt);
    path_in("rn-no-var.safetensors", norv, sizeof norv);
    assert_int_equal(tc_st_write(nobt, w, n, NULL, NULL, 0), TC_OK);
    memmove(&w[n_rv], &w[n_rv + 1], (size_t)(n - n_rv - 1) * sizeof *w);
    assert_int_equal(tc_st_write(norv, w, n - 1, NULL, NULL, 0), TC_OK);
    free(w);
    tc_st_close(st);

    tc_model_config c;
    tc_param_layout l;
    float *p;
    if (tc_checkpoint_load(dir, NULL, &c, &l, &p) != TC_OK) fail_msg("%s", tc_last_error());
    assert_memory_equal(p, rp, rl.total * sizeof *p);
    free(p);
    tc_param_layout_free(&l);
    if (tc_checkpoint_load(nobt, &rc, &c, &l, &p) != TC_OK) fail_msg("%s", tc_last_error());
    assert_true(p[nbt->offset] == 0.0f);
    p[nbt->offset] = rp[nbt->offset];
    for (int i = 0; i < rl.count; i++)
        if (rl.params[i].buffer && rl.params[i].ndim == 0)
            p[rl.params[i].offset] = rp[rl.params[i].offset];
    assert_memory_equal(p, rp, rl.total * sizeof *p);
    free(p);
    tc_param_layout_free(&l);
    assert_int_equal(tc_checkpoint_load(norv, &rc, &c, &l, &p), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "'visual.bn2.running_var' is missing"));
    /* a count that is no count */
    rp[nbt->offset] = -3.0f;
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &rc, &rl, rp), TC_OK);
    assert_int_equal(tc_checkpoint_load(dir, NULL, &c, &l, &p), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), nbt->name));
    /* Hugging Face has no ResNet CLIP */
    path_in("rn-hf", dir, sizeof dir);
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_HF, &rc, &rl, rp), TC_ERR_UNSUPPORTED);
    assert_non_null(strstr(tc_last_error(), "no ResNet image tower"));
    free(rp);
    tc_param_layout_free(&rl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resnet_buffers),
        cmocka_unit_test(test_openclip_round_trip),
        cmocka_unit_test(test_hf_round_trip),
        cmocka_unit_test(test_foreign_layouts),
        cmocka_unit_test(test_errors_name_the_tensor),
        cmocka_unit_test(test_empty_name_and_fifo),
        cmocka_unit_test(test_irregular_model),
        cmocka_unit_test(test_single_file_with_metadata),
        cmocka_unit_test(test_cli_convert),
        cmocka_unit_test(test_cli_embed_refusals),
        cmocka_unit_test(test_reference_fixtures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
