/* model configs: every shipped config parses and validates; parameter counts
 * against numbers computed here from the shapes (not through params.c) and
 * against the published figures; every unsupported field is rejected by
 * name; JSON and HF round trips; the inspect command. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flops.h"
#include "model_config.h"
#include "params.h"
#include "testutil.h"

static const char *source_dir(void) {
    const char *s = getenv("TC_SOURCE_DIR");
    return s ? s : TC_SOURCE_DIR;
}

static void load_shipped(const char *name, tc_model_config *cfg) {
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/models/%s.json", source_dir(), name);
    if (tc_model_config_load(cfg, path) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
}

/* parameters of a uniform CLIP, counted from open_clip's module shapes */
typedef struct {
    long long vision, text, token_emb, total;
} counts;

static long long block_params(long long C, long long M) {
    return 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (M * C + M) + (C * M + C);
}

static counts expected_counts(long long E, long long vl, long long vw, long long patch,
                              long long image, long long tl, long long tw, long long ctx,
                              long long vocab, double ratio) {
    counts c;
    long long grid = image / patch;
    long long vm = (long long)(vw * ratio), tm = (long long)(tw * ratio);
    c.vision = vw /* class_embedding */ + (grid * grid + 1) * vw /* positional */ +
               vw * E /* proj */ + vw * 3 * patch * patch /* conv1 */ + 2 * vw /* ln_pre */ +
               vl * block_params(vw, vm) + 2 * vw /* ln_post */;
    c.token_emb = vocab * tw;
    c.text = ctx * tw + tw * E + tl * block_params(tw, tm) + c.token_emb + 2 * tw;
    c.total = c.vision + c.text + 1;
    return c;
}

static void check_counts(const char *name, counts want) {
    tc_model_config cfg;
    load_shipped(name, &cfg);
    tc_param_layout l;
    assert_int_equal(tc_param_layout_build(&l, &cfg), TC_OK);
    tc_param_counts c = tc_param_count(&l);
    if ((long long)c.vision != want.vision || (long long)c.text != want.text ||
        (long long)c.total != want.total || (long long)c.token_embedding != want.token_emb)
        fail_msg("%s: vision %zu/%lld text %zu/%lld total %zu/%lld", name, c.vision, want.vision,
                 c.text, want.text, c.total, want.total);
    tc_param_layout_free(&l);
}

static void test_shipped_configs_parse(void **state) {
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/configs/models", source_dir());
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        tc_model_config cfg;
        if (tc_model_config_load(&cfg, path) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
        assert_int_equal(tc_model_config_validate(&cfg, path), TC_OK);
        assert_false(cfg.irregular);
        assert_int_equal(strncmp(cfg.name, e->d_name, len - 5), 0);
        n++;
    }
    closedir(d);
    assert_true(n >= 10);
}

static void test_param_counts(void **state) {
    (void)state;
    counts b32 = expected_counts(512, 12, 768, 32, 224, 12, 512, 77, 49408, 4.0);
    assert_true(b32.total == 151277313LL); /* open_clip model_profile.csv: 151.28 M */
    assert_true(b32.vision == 87849216LL);
    check_counts("ViT-B-32", b32);
    check_counts("ViT-B-32-quickgelu", b32);
    check_counts("ViT-B-16", expected_counts(512, 12, 768, 16, 224, 12, 512, 77, 49408, 4.0));
    check_counts("TinyCLIP-ViT-8M-16-Text-3M",
                 expected_counts(512, 10, 256, 16, 224, 3, 256, 77, 49408, 4.0));
    check_counts("TinyCLIP-ViT-39M-16-Text-19M",
                 expected_counts(512, 12, 512, 16, 224, 6, 512, 77, 49408, 4.0));
    check_counts("TinyCLIP-ViT-40M-32-Text-19M",
                 expected_counts(512, 12, 512, 32, 224, 6, 512, 77, 49408, 4.0));
    check_counts("TinyCLIP-ViT-61M-32-Text-29M",
                 expected_counts(512, 12, 640, 32, 224, 9, 512, 77, 49408, 4.0));
    check_counts("fmnist-teacher", expected_counts(128, 4, 128, 4, 28, 3, 128, 24, 49408, 4.0));
    check_counts("fmnist-student-half",
                 expected_counts(128, 2, 128, 4, 28, 2, 128, 24, 49408, 4.0));
    check_counts("fmnist-student-quarter",
                 expected_counts(128, 2, 128, 4, 28, 1, 128, 24, 49408, 1.5));

    /* the TinyCLIP naming (docs/method.md §4): millions without the token embedding */
    counts t8 = expected_counts(512, 10, 256, 16, 224, 3, 256, 77, 49408, 4.0);
    assert_int_equal((long long)(t8.vision / 1e4 + 0.5), 828);                /* 8.28M */
    assert_int_equal((long long)((t8.text - t8.token_emb) / 1e4 + 0.5), 252); /* 2.52M */
    counts t40 = expected_counts(512, 12, 512, 32, 224, 6, 512, 77, 49408, 4.0);
    assert_int_equal((long long)(t40.vision / 1e4 + 0.5), 3969);                 /* 39.69M */
    assert_int_equal((long long)((t40.text - t40.token_emb) / 1e4 + 0.5), 1922); /* 19.22M */
    assert_int_equal((long long)((b32.text - b32.token_emb) / 1e4 + 0.5), 3813); /* 38.13M */
    counts t61 = expected_counts(512, 12, 640, 32, 224, 9, 512, 77, 49408, 4.0);
    assert_int_equal((long long)(t61.vision / 1e4 + 0.5), 6141); /* 61.41M */

    /* the students are about half and a quarter of the teacher without embeddings */
    counts te = expected_counts(128, 6, 128, 4, 28, 4, 128, 32, 49408, 4.0);
    counts h = expected_counts(128, 3, 128, 4, 28, 2, 128, 32, 49408, 4.0);
    counts q = expected_counts(128, 3, 128, 4, 28, 2, 128, 32, 49408, 0.75);
    double tne = (double)(te.total - te.token_emb);
    double rh = (h.total - h.token_emb) / tne, rq = (q.total - q.token_emb) / tne;
    assert_true(rh > 0.45 && rh < 0.55);
    assert_true(rq > 0.22 && rq < 0.28);
}

static void test_activation_and_fields(void **state) {
    (void)state;
    tc_model_config a, b;
    load_shipped("ViT-B-32", &a);
    load_shipped("ViT-B-32-quickgelu", &b);
    assert_int_equal(a.activation, TC_GELU);
    assert_int_equal(b.activation, TC_QUICK_GELU);
    assert_int_equal(a.vision.heads[0], 12);
    assert_int_equal(a.vision.mlp_width[11], 3072);
    assert_int_equal(a.vision.heads[12], 0);
    assert_int_equal(a.text.heads[0], 8);
    assert_int_equal(a.text.mlp_width[0], 2048);
    assert_int_equal(tc_vision_tokens(&a.vision), 50);
    assert_int_equal(a.vision.pool, TC_POOL_TOKEN);
    assert_int_equal(a.text.pool, TC_POOL_ARGMAX);
    assert_string_equal(a.name, "ViT-B-32");
}

/* base fields, each left out when the extra text sets the same key */
static void add_fields(char *dst, size_t cap, const char *const *base, size_t n,
                       const char *extra) {
    for (size_t i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(strchr(base[i], ':') - base[i]), base[i]);
        if (strstr(extra, key)) continue;
        size_t len = strlen(dst);
        snprintf(dst + len, cap - len, "%s%s", len && dst[len - 1] != '{' ? ", " : "", base[i]);
    }
    size_t len = strlen(dst);
    snprintf(dst + len, cap - len, "%s", extra);
}

/* a small valid config with extra text spliced into the top level and each
 * tower; extra text starts with ", " inside towers */
static tc_status parse_with(const char *top, const char *vis, const char *txt,
                            tc_model_config *cfg) {
    static const char *const vbase[] = {"\"image_size\": 32", "\"patch_size\": 8", "\"layers\": 2",
                                        "\"width\": 128"};
    static const char *const tbase[] = {"\"context_length\": 16", "\"vocab_size\": 1000",
                                        "\"width\": 64", "\"heads\": 1", "\"layers\": 2"};
    char v[2048] = "{", t[2048] = "{", json[8192];
    add_fields(v, sizeof v, vbase, 4, vis);
    add_fields(t, sizeof t, tbase, 5, txt);
    /* an extra starting with ", " after an empty base would leave "{, " */
    const char *vv = v, *tt = t;
    char vfix[2048], tfix[2048];
    if (strncmp(v, "{, ", 3) == 0) {
        snprintf(vfix, sizeof vfix, "{%s", v + 3);
        vv = vfix;
    }
    if (strncmp(t, "{, ", 3) == 0) {
        snprintf(tfix, sizeof tfix, "{%s", t + 3);
        tt = tfix;
    }
    snprintf(json, sizeof json, "{\"embed_dim\": 64, %s \"vision_cfg\": %s}, \"text_cfg\": %s}}",
             top, vv, tt);
    return tc_model_config_parse(cfg, json, strlen(json), "case.json");
}

static void expect_error(const char *top, const char *vis, const char *txt, const char *needle) {
    tc_model_config cfg;
    tc_status st = parse_with(top, vis, txt, &cfg);
    if (st == TC_OK) fail_msg("accepted: top '%s' vision '%s' text '%s'", top, vis, txt);
    const char *m = tc_last_error();
    if (!strstr(m, "case.json") || !strstr(m, needle))
        fail_msg("message '%s' does not name '%s'", m, needle);
}

static void expect_ok(const char *top, const char *vis, const char *txt) {
    tc_model_config cfg;
    if (parse_with(top, vis, txt, &cfg) != TC_OK)
        fail_msg("rejected: top '%s' vision '%s' text '%s': %s", top, vis, txt, tc_last_error());
}

static void test_defaults_accepted(void **state) {
    (void)state;
    expect_ok("", "", "");
    expect_ok("\"quick_gelu\": false, \"custom_text\": true, \"init_logit_bias\": null,", "", "");
    expect_ok("",
              ", \"head_width\": 64, \"mlp_ratio\": 4.0, \"patch_dropout\": 0.0, "
              "\"ls_init_value\": null, \"attentional_pool\": false, \"attn_pooler_queries\": 256, "
              "\"attn_pooler_heads\": 8, \"no_ln_pre\": false, \"pos_embed_type\": \"learnable\", "
              "\"final_ln_after_pool\": false, \"pool_type\": \"tok\", \"output_tokens\": false, "
              "\"act_kwargs\": null, \"norm_kwargs\": {}, \"timm_model_name\": null, "
              "\"timm_model_pretrained\": false, \"timm_pool\": \"avg\", \"timm_proj\": "
              "\"linear\", \"timm_proj_bias\": false, \"timm_drop\": 0.0, \"timm_drop_path\": "
              "null, \"global_average_pool\": false, \"input_patchnorm\": false, \"image_size\": "
              "[32, 32]",
              ", \"mlp_ratio\": 4, \"ls_init_value\": null, \"embed_cls\": false, \"pad_id\": 0, "
              "\"no_causal_mask\": false, \"final_ln_after_pool\": false, \"pool_type\": "
              "\"argmax\", \"proj_bias\": false, \"output_tokens\": false, \"act_kwargs\": {}, "
              "\"norm_kwargs\": null, \"hf_model_name\": null, \"hf_model_pretrained\": true, "
              "\"hf_proj_type\": \"mlp\", \"hf_pooler_type\": \"mean_pooler\", "
              "\"hf_tokenizer_name\": null, \"tokenizer_kwargs\": null");
    /* {"model_cfg": ...} wrapper of open_clip_config.json */
    const char *wrapped = "{\"model_cfg\": {\"embed_dim\": 64, \"vision_cfg\": {\"image_size\": "
                          "32, \"patch_size\": 8, \"layers\": 1, \"width\": 64}, \"text_cfg\": "
                          "{\"width\": 64, \"heads\": 1, \"layers\": 1}}, \"preprocess_cfg\": "
                          "{\"mean\": [0.5, 0.5, 0.5]}}";
    tc_model_config cfg;
    assert_int_equal(tc_model_config_parse(&cfg, wrapped, strlen(wrapped), "w.json"), TC_OK);
    assert_int_equal(cfg.embed_dim, 64);
    assert_int_equal(cfg.text.context_length, 77); /* open_clip default */
    assert_int_equal(cfg.text.mlp_width[0], 256);
    /* global_average_pool maps to average pooling */
    assert_int_equal(parse_with("", ", \"global_average_pool\": true", "", &cfg), TC_OK);
    assert_int_equal(cfg.vision.pool, TC_POOL_MEAN);
    assert_int_equal(parse_with("", ", \"pool_type\": \"avg\"", "", &cfg), TC_OK);
    assert_int_equal(cfg.vision.pool, TC_POOL_MEAN);
    /* mlp = int(width * mlp_ratio), truncated as Python's int() */
    assert_int_equal(parse_with("", ", \"mlp_ratio\": 2.6667", "", &cfg), TC_OK);
    assert_int_equal(cfg.vision.mlp_width[0], 341);
}

static void test_unsupported_fields_named(void **state) {
    (void)state;
    expect_error("", ", \"layers\": [3, 4]", "", "vision_cfg.layers: a ResNet tower has 4 stages");
    expect_error("", ", \"layers\": 2.5", "", "vision_cfg.layers: expected an integer");
    expect_error("", ", \"head_width\": 36", "", "vision_cfg.head_width: 36 gives 3 heads (128 // 36), which cannot split");
    expect_error("", ", \"patch_dropout\": 0.5", "", "vision_cfg.patch_dropout");
    expect_error("", ", \"ls_init_value\": 1e-5", "", "vision_cfg.ls_init_value");
    expect_error("", "", ", \"ls_init_value\": 0.1", "text_cfg.ls_init_value");
    expect_error("", ", \"attentional_pool\": true", "", "vision_cfg.attentional_pool");
    expect_error("", ", \"pos_embed_type\": \"sin_cos_2d\"", "", "vision_cfg.pos_embed_type");
    expect_error("", ", \"act_kwargs\": {\"approximate\": \"tanh\"}", "", "vision_cfg.act_kwargs");
    expect_error("", ", \"norm_kwargs\": {\"eps\": 1e-6}", "", "vision_cfg.norm_kwargs");
    expect_error("", ", \"timm_model_name\": \"vit_base\"", "", "vision_cfg.timm_model_name");
    expect_error("", ", \"timm_proj_bias\": true", "", "vision_cfg.timm_proj_bias");
    expect_error("", ", \"pool_type\": \"none\"", "", "vision_cfg.pool_type");
    expect_error("", ", \"image_size\": [32, 64]", "", "vision_cfg.image_size");
    expect_error("", ", \"qk_norm\": true", "", "vision_cfg.qk_norm");
    expect_error("", ", \"wat\": 1", "", "vision_cfg.wat: unknown field");
    expect_error("", ", \"width\": 100", "", "vision_cfg.head_width: a head size of 100 is not");
    expect_error("", ", \"image_size\": 30", "", "vision_cfg.image_size: 30 is not a multiple");
    expect_error("", "", ", \"pool_type\": \"first\"", "text_cfg.pool_type");
    expect_error("", "", ", \"proj_bias\": true", "text_cfg.proj_bias");
    expect_error("", "", ", \"embed_cls\": true", "text_cfg.embed_cls");
    expect_error("", "", ", \"no_causal_mask\": true", "text_cfg.no_causal_mask");
    expect_error("", "", ", \"hf_model_name\": \"roberta-base\"", "text_cfg.hf_model_name");
    expect_error("", "", ", \"tokenizer_kwargs\": {\"clean\": \"canonicalize\"}",
                 "text_cfg.tokenizer_kwargs");
    expect_error("", "", ", \"heads\": 3", "text_cfg.heads: 3 heads over width 64");
    expect_error("", "", ", \"mystery\": null", "text_cfg.mystery: unknown field");
    expect_error("\"multimodal_cfg\": {},", "", "", "multimodal_cfg");
    expect_error("\"init_logit_bias\": -10,", "", "", "init_logit_bias");
    expect_error("\"quick_gelu\": 1,", "", "", "quick_gelu: expected true or false");
    expect_error("\"extra\": 1,", "", "", "extra: unknown field");
    /* ranges: sizes that would overflow products are refused before use */
    expect_error("", ", \"width\": 4294967296", "", "vision_cfg.width");
    expect_error("", ", \"layers\": 65", "", "vision_cfg.layers: 65 is out of range");
    expect_error("", ", \"layers\": 0", "", "vision_cfg.layers: 0 is out of range");
    expect_error("", "", ", \"vocab_size\": -1", "text_cfg.vocab_size");
    expect_error("", "", ", \"context_length\": 1e9",
                 "text_cfg.context_length: expected an integer");
    expect_error("", ", \"mlp_ratio\": 1e30", "", "vision_cfg.mlp_ratio");
    expect_error("", ", \"mlp_ratio\": 0", "", "vision_cfg.mlp_ratio");
    expect_error("", ", \"patch_size\": 0", "", "vision_cfg.patch_size");
    /* the irregular extension */
    expect_error("", ", \"heads\": [2, 2, 2]", "",
                 "vision_cfg.heads: has 3 entries but layers is 2");
    expect_error("", ", \"heads\": [2, -1]", "", "vision_cfg.heads");
    expect_error("", ", \"mlp_width\": [5]", "", "vision_cfg.mlp_width: has 1 entries");
    expect_error("", ", \"mlp_width\": [5, 6], \"mlp_ratio\": 2", "", "vision_cfg.mlp_ratio");
}

static void test_missing_and_malformed(void **state) {
    (void)state;
    tc_model_config cfg;
    const char *cases[][2] = {
        {"{\"vision_cfg\": {}, \"text_cfg\": {}}", "embed_dim: missing"},
        {"{\"embed_dim\": 8, \"text_cfg\": {}}", "vision_cfg: missing"},
        {"{\"embed_dim\": 8, \"vision_cfg\": {}}", "text_cfg: missing"},
        {"{\"embed_dim\": 8, \"vision_cfg\": 3, \"text_cfg\": {}}",
         "vision_cfg: expected an object"},
        {"[1, 2]", "expected a JSON object"},
        {"{\"embed_dim\": 8, ", "invalid JSON"},
        {"{\"embed_dim\": 8,, }", "invalid JSON"},
        {"", "invalid JSON"},
        {"{\"embed_dim\": 8, \"embed_dim\": 9, \"vision_cfg\": {}, \"text_cfg\": {}}",
         "embed_dim: given twice"},
        {"{\"embed_dim\": 8, \"vision_cfg\": {}, \"text_cfg\": {\"layers\": 1, \"layers\": 2}}",
         "text_cfg.layers: given twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_status st = tc_model_config_parse(&cfg, cases[i][0], strlen(cases[i][0]), "bad.json");
        assert_int_not_equal(st, TC_OK);
        if (!strstr(tc_last_error(), "bad.json") || !strstr(tc_last_error(), cases[i][1]))
            fail_msg("case %zu: '%s' lacks '%s'", i, tc_last_error(), cases[i][1]);
    }
    assert_int_equal(tc_model_config_load(&cfg, "/nonexistent/x.json"), TC_ERR_IO);
    assert_non_null(strstr(tc_last_error(), "/nonexistent/x.json"));
}

static void test_json_round_trip(void **state) {
    (void)state;
    const char *names[] = {"ViT-B-32", "ViT-B-32-quickgelu", "TinyCLIP-ViT-8M-16-Text-3M",
                           "fmnist-student-quarter"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tc_model_config a, b;
        load_shipped(names[i], &a);
        char *json;
        assert_int_equal(tc_model_config_to_json(&a, &json), TC_OK);
        /* quick_gelu is always written explicitly */
        assert_non_null(strstr(json, a.activation == TC_QUICK_GELU ? "\"quick_gelu\": true"
                                                                   : "\"quick_gelu\": false"));
        char src[160];
        snprintf(src, sizeof src, "%s.json", names[i]);
        if (tc_model_config_parse(&b, json, strlen(json), src) != TC_OK)
            fail_msg("%s: %s\n%s", names[i], tc_last_error(), json);
        assert_memory_equal(&a, &b, sizeof a);
        free(json);
    }
    /* irregular: per-layer heads and MLP widths survive, including empty sub-blocks */
    tc_model_config cfg;
    assert_int_equal(parse_with("", ", \"width\": 100, \"heads\": [2, 0], \"mlp_width\": [77, 0]",
                                ", \"heads\": [1, 3], \"mlp_width\": [10, 300]", &cfg),
                     TC_OK);
    assert_true(cfg.irregular);
    assert_int_equal(cfg.vision.heads[1], 0);
    assert_int_equal(cfg.text.heads[1], 3);
    assert_int_equal(cfg.vision.mlp_width[0], 77);
    char *json;
    assert_int_equal(tc_model_config_to_json(&cfg, &json), TC_OK);
    tc_model_config back;
    assert_int_equal(tc_model_config_parse(&back, json, strlen(json), "case.json"), TC_OK);
    assert_memory_equal(&cfg, &back, sizeof cfg);
    free(json);
    /* HF cannot express it */
    assert_int_equal(tc_model_config_to_hf_json(&cfg, &json), TC_ERR_UNSUPPORTED);
    assert_non_null(strstr(tc_last_error(), "irregular"));
}

static void test_hf_config(void **state) {
    (void)state;
    tc_model_config a, b;
    load_shipped("TinyCLIP-ViT-8M-16-Text-3M", &a);
    char *json;
    assert_int_equal(tc_model_config_to_hf_json(&a, &json), TC_OK);
    assert_non_null(strstr(json, "\"hidden_act\": \"gelu\""));
    assert_non_null(strstr(json, "\"intermediate_size\": 1024"));
    assert_non_null(strstr(json, "\"num_attention_heads\": 4"));
    assert_int_equal(tc_model_config_parse(&b, json, strlen(json), "config.json"), TC_OK);
    snprintf(b.name, sizeof b.name, "%s", a.name);
    assert_memory_equal(&a, &b, sizeof a);
    free(json);
    load_shipped("ViT-B-32-quickgelu", &a);
    assert_int_equal(tc_model_config_to_hf_json(&a, &json), TC_OK);
    assert_non_null(strstr(json, "\"hidden_act\": \"quick_gelu\""));
    free(json);
    /* HF defaults: an almost empty config is ViT-B/32 with QuickGELU */
    const char *minimal = "{\"text_config\": {}, \"vision_config\": {}}";
    assert_int_equal(tc_model_config_parse_hf(&b, minimal, strlen(minimal), "hf.json"), TC_OK);
    load_shipped("ViT-B-32-quickgelu", &a);
    snprintf(b.name, sizeof b.name, "%s", a.name);
    assert_memory_equal(&a, &b, sizeof a);
    const char *bad = "{\"text_config\": {\"hidden_act\": \"relu\"}, \"vision_config\": {}}";
    assert_int_not_equal(tc_model_config_parse(&b, bad, strlen(bad), "hf.json"), TC_OK);
    assert_non_null(strstr(tc_last_error(), "text_config.hidden_act"));
}

static void test_validate(void **state) {
    (void)state;
    tc_model_config cfg;
    load_shipped("ViT-B-32", &cfg);
    assert_int_equal(tc_model_config_validate(&cfg, "x"), TC_OK);
    tc_model_config c = cfg;
    c.vision.layers = TC_MAX_LAYERS + 1;
    assert_int_equal(tc_model_config_validate(&c, "x"), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "vision_cfg.layers"));
    c = cfg;
    c.vision.patch_size = 33;
    assert_int_equal(tc_model_config_validate(&c, "x"), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "patch_size"));
    c = cfg;
    c.text.heads[3] = -1;
    assert_int_equal(tc_model_config_validate(&c, "x"), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "text_cfg.heads[3]"));
    c = cfg;
    c.embed_dim = 0;
    assert_int_equal(tc_model_config_validate(&c, "x"), TC_ERR_CONFIG);
    c = cfg;
    c.text.vocab_size = 0x7fffffff;
    assert_int_equal(tc_model_config_validate(&c, "x"), TC_ERR_CONFIG);
}

static void test_flops(void **state) {
    (void)state;
    tc_model_config cfg;
    load_shipped("ViT-B-32", &cfg);
    double gi, gt;
    tc_model_flops(&cfg, &gi, &gt);
    /* independent count: 50 tokens, width 768, 12 layers, MLP 3072 */
    double T = 50, C = 768, img = 49 * 3 * 32 * 32 * C + C * 512;
    img += 12 * (T * C * 3 * C + 2 * T * T * C + T * C * C + 2 * T * C * 4 * C);
    double Tt = 77, Ct = 512, txt = Ct * 512;
    txt += 12 * (Tt * Ct * 3 * Ct + 2 * Tt * Tt * Ct + Tt * Ct * Ct + 2 * Tt * Ct * 4 * Ct);
    assert_true(fabs(gi - 2 * img / 1e9) < 1e-9);
    assert_true(fabs(gt - 2 * txt / 1e9) < 1e-9);
    /* open_clip's profile lists ViT-B-32 at 4.41 image GMACs: 8.8 GFLOPs */
    assert_true(gi > 8.7 && gi < 8.9);
}

static void test_cli_inspect(void **state) {
    (void)state;
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd, "inspect %s/configs/models/ViT-B-32.json", source_dir());
    int rc = tc_run_cli(cmd, &out);
    if (rc != 0 || !strstr(out, "total params: 151,277,313") ||
        !strstr(out, "ViT 87.85M + Text 38.13M") || !strstr(out, "GFLOPs per image"))
        fail_msg("rc %d output:\n%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "inspect %s/configs/models/TinyCLIP-ViT-8M-16-Text-3M.json",
             source_dir());
    rc = tc_run_cli(cmd, &out);
    if (rc != 0 || !strstr(out, "ViT 8.28M + Text 2.52M")) fail_msg("rc %d output:\n%s", rc, out);
    free(out);
    /* a malformed config: non-zero exit and a message naming the field */
    char *dir = tc_make_tempdir("inspect");
    char path[512];
    snprintf(path, sizeof path, "%s/bad.json", dir);
    const char *bad = "{\"embed_dim\": 8, \"vision_cfg\": {\"layers\": [3, 4]}, \"text_cfg\": {}}";
    assert_int_equal(tc_write_file(path, bad, strlen(bad)), 0);
    snprintf(cmd, sizeof cmd, "inspect %s", path);
    rc = tc_run_cli(cmd, &out);
    if (rc == 0 || !strstr(out, "bad.json: vision_cfg.layers"))
        fail_msg("rc %d output:\n%s", rc, out);
    free(out);
    snprintf(path, sizeof path, "%s/trunc.json", dir);
    assert_int_equal(tc_write_file(path, "{\"embed_dim\": ", 14), 0);
    snprintf(cmd, sizeof cmd, "inspect %s", path);
    rc = tc_run_cli(cmd, &out);
    if (rc == 0 || !strstr(out, "invalid JSON")) fail_msg("rc %d output:\n%s", rc, out);
    free(out);
    rc = tc_run_cli("inspect", &out);
    assert_int_equal(rc, 2);
    free(out);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_configs_parse),
        cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_activation_and_fields),
        cmocka_unit_test(test_defaults_accepted),
        cmocka_unit_test(test_unsupported_fields_named),
        cmocka_unit_test(test_missing_and_malformed),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_hf_config),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_flops),
        cmocka_unit_test(test_cli_inspect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
