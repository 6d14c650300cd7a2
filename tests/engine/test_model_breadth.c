/* model breadth at the config level: heads of any multiple-of-8 width from 8
 * to 256 (derived as open_clip derives them), ResNet image towers (stage
 * depths, stem width, attention-pool heads), the errors of bad configs (each
 * naming its field), and the parameter counts of the big configs against
 * open_clip's own (tests/fixtures/breadth/param_counts.json), through the
 * parameter layout and through `tinyclip inspect`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model_config.h"
#include "params.h"
#include "testutil.h"

static const char *source_dir(void) {
    const char *s = getenv("TC_SOURCE_DIR");
    return s ? s : TC_SOURCE_DIR;
}

/* a config of the given vision_cfg and text_cfg bodies */
static tc_status parse(const char *vision, const char *text, tc_model_config *cfg) {
    char json[2048];
    snprintf(json, sizeof json, "{\"embed_dim\": 64, \"vision_cfg\": {%s}, \"text_cfg\": {%s}}",
             vision, text);
    return tc_model_config_parse(cfg, json, strlen(json), "case.json");
}

static void expect_ok(const char *vision, const char *text, tc_model_config *cfg) {
    if (parse(vision, text, cfg) != TC_OK)
        fail_msg("rejected: vision {%s} text {%s}: %s", vision, text, tc_last_error());
    /* and what is written reads back to the same config */
    char *json;
    assert_int_equal(tc_model_config_to_json(cfg, &json), TC_OK);
    tc_model_config back;
    if (tc_model_config_parse(&back, json, strlen(json), "case.json") != TC_OK)
        fail_msg("%s\n%s", tc_last_error(), json);
    assert_memory_equal(cfg, &back, sizeof back);
    free(json);
}

static void expect_error(const char *vision, const char *text, const char *needle) {
    tc_model_config cfg;
    if (parse(vision, text, &cfg) == TC_OK)
        fail_msg("accepted: vision {%s} text {%s}", vision, text);
    const char *m = tc_last_error();
    if (!strstr(m, "case.json") || !strstr(m, needle))
        fail_msg("message '%s' does not name '%s'", m, needle);
}

#define TEXT64                                                                                     \
    "\"width\": 64, \"heads\": 1, \"layers\": 1, \"context_length\": 8, \"vocab_size\": 50"
#define VIT(rest) "\"image_size\": 32, \"patch_size\": 16, \"layers\": 1, " rest

static void test_head_widths(void **state) {
    (void)state;
    tc_model_config c;
    /* open_clip's big teachers: heads = width // head_width */
    const int cases[][3] = {{1024, 64, 16}, {1280, 80, 16}, {1408, 88, 16}, {1664, 104, 16},
                            {256, 8, 32},   {512, 256, 2},  {96, 32, 3}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char v[256];
        snprintf(v, sizeof v, VIT("\"width\": %d, \"head_width\": %d"), cases[i][0], cases[i][1]);
        expect_ok(v, TEXT64, &c);
        assert_int_equal(c.vision.head_width, cases[i][1]);
        assert_int_equal(c.vision.heads[0], cases[i][2]);
        assert_false(c.irregular);
    }
    /* text heads are given; their size is width / heads */
    expect_ok(VIT("\"width\": 64"), "\"width\": 1280, \"heads\": 20, \"layers\": 1", &c);
    assert_int_equal(c.text.head_width, 64);
    expect_ok(VIT("\"width\": 64"), "\"width\": 160, \"heads\": 2, \"layers\": 2", &c);
    assert_int_equal(c.text.head_width, 80);
    assert_int_equal(c.text.heads[1], 2);
    /* width // head_width heads, each width / heads wide (torch's rule) */
    expect_ok(VIT("\"width\": 120, \"head_width\": 64"), TEXT64, &c);
    assert_int_equal(c.vision.heads[0], 1);
    assert_int_equal(c.vision.head_width, 120);
    /* a pruned tower: per-layer heads of a given size, in both towers */
    expect_ok(VIT("\"width\": 160, \"head_width\": 80, \"heads\": [1]"),
              "\"width\": 96, \"heads\": [2, 0], \"head_width\": 40, \"layers\": 2", &c);
    assert_true(c.irregular);
    assert_int_equal(c.vision.head_width, 80);
    assert_int_equal(c.text.head_width, 40);
    assert_int_equal(c.text.heads[0], 2);

    /* sizes the kernels do not cover, or splits torch refuses */
    expect_error(VIT("\"width\": 72, \"head_width\": 36"), TEXT64,
                 "vision_cfg.head_width: a head size of 36 is not supported");
    expect_error(VIT("\"width\": 1024, \"head_width\": 512"), TEXT64,
                 "vision_cfg.head_width: a head size of 512");
    expect_error(VIT("\"width\": 100"), TEXT64, "vision_cfg.head_width: a head size of 100");
    expect_error(VIT("\"width\": 1000, \"head_width\": 64"), TEXT64,
                 "vision_cfg.head_width: 64 gives 15 heads (1000 // 64), which cannot split");
    expect_error(VIT("\"width\": 32, \"head_width\": 64"), TEXT64,
                 "vision_cfg.head_width: 64 is wider than the width (32)");
    expect_error(VIT("\"width\": 64, \"head_width\": 0"), TEXT64, "vision_cfg.head_width: 0");
    expect_error(VIT("\"width\": 64, \"head_width\": \"64\""), TEXT64,
                 "vision_cfg.head_width: expected an integer");
    expect_error(VIT("\"width\": 64"), "\"width\": 100, \"heads\": 5, \"layers\": 1",
                 "text_cfg.heads: a head size of 20");
    expect_error(VIT("\"width\": 64"), "\"width\": 64, \"heads\": 3, \"layers\": 1",
                 "text_cfg.heads: 3 heads over width 64");
    expect_error(VIT("\"width\": 64"), "\"width\": 64, \"heads\": 2, \"head_width\": 64",
                 "text_cfg.head_width: 64 contradicts width / heads = 32");
    expect_error(VIT("\"width\": 64, \"heads\": [1], \"head_width\": 12"), TEXT64,
                 "vision_cfg.head_width: a head size of 12");
}

#define RN(rest) "\"image_size\": 64, \"patch_size\": null, " rest

static void test_resnet_configs(void **state) {
    (void)state;
    char path[1024];
    const struct {
        const char *name;
        int width, layers_text;
    } shipped[] = {{"RN50", 64, 12},
                   {"TinyCLIP-ResNet-30M-Text-29M", 56, 9},
                   {"TinyCLIP-ResNet-19M-Text-19M", 44, 6}};
    for (size_t i = 0; i < sizeof shipped / sizeof shipped[0]; i++) {
        tc_model_config c, back;
        snprintf(path, sizeof path, "%s/configs/models/%s.json", source_dir(), shipped[i].name);
        if (tc_model_config_load(&c, path) != TC_OK) fail_msg("%s", tc_last_error());
        assert_true(c.vision.resnet);
        const int stages[4] = {3, 4, 6, 3};
        assert_memory_equal(c.vision.stages, stages, sizeof stages);
        assert_int_equal(c.vision.layers, 16);
        assert_int_equal(c.vision.width, shipped[i].width);
        assert_int_equal(c.vision.head_width, 64);
        assert_int_equal(tc_resnet_pool_heads(&c.vision), shipped[i].width / 2);
        assert_int_equal(tc_vision_tokens(&c.vision), 50);
        assert_int_equal(c.text.layers, shipped[i].layers_text);
        assert_int_equal(c.embed_dim, 1024);
        assert_false(c.irregular);
        char *json;
        assert_int_equal(tc_model_config_to_json(&c, &json), TC_OK);
        assert_non_null(strstr(json, "\"patch_size\": null"));
        assert_int_equal(tc_model_config_parse(&back, json, strlen(json), path), TC_OK);
        assert_memory_equal(&c, &back, sizeof c);
        free(json);
        /* Hugging Face has no ResNet CLIP: said so, not half-written */
        assert_int_equal(tc_model_config_to_hf_json(&c, &json), TC_ERR_UNSUPPORTED);
        assert_non_null(strstr(tc_last_error(), "no ResNet image tower"));
    }
    tc_model_config c;
    /* an odd width whose pool still splits: 5 * 32 = 160 channels, 2 heads of 80 */
    expect_ok(RN("\"layers\": [1, 1, 1, 1], \"width\": 5"), TEXT64, &c);
    assert_int_equal(c.vision.head_width, 80);
    assert_int_equal(tc_resnet_pool_heads(&c.vision), 2);
    expect_ok(RN("\"layers\": [1, 2, 1, 1], \"width\": 8, \"head_width\": 32"), TEXT64, &c);
    assert_int_equal(tc_resnet_pool_heads(&c.vision), 8);

    expect_error(RN("\"layers\": [3, 4, 6, 3], \"width\": 45"), TEXT64,
                 "vision_cfg.head_width: 64 gives 22 heads (1440 // 64), which cannot split the "
                 "attention pool's width");
    expect_error(RN("\"layers\": [3, 4, 6, 3], \"width\": 7"), TEXT64,
                 "vision_cfg.head_width: 64 gives 3 heads (224 // 64), which cannot split");
    expect_error(RN("\"layers\": [1, 1, 1, 1], \"width\": 64, \"head_width\": 512"), TEXT64,
                 "vision_cfg.head_width: a head size of 512");
    expect_error("\"image_size\": 200, \"layers\": [1, 1, 1, 1], \"width\": 8", TEXT64,
                 "vision_cfg.image_size: 200 is not a multiple of 32");
    expect_error(RN("\"layers\": [3, 4, 6], \"width\": 64"), TEXT64,
                 "vision_cfg.layers: a ResNet tower has 4 stages, got 3");
    /* more depths than stages: refused before any is stored */
    expect_error(RN("\"layers\": [3, 4, 3, 4, 7, 3], \"width\": 64"), TEXT64,
                 "vision_cfg.layers: a ResNet tower has 4 stages, got 6");
    expect_error(RN("\"layers\": [3, 0, 6, 3], \"width\": 64"), TEXT64,
                 "vision_cfg.layers: stage 2 has 0 blocks");
    expect_error(RN("\"layers\": [30, 30, 30, 30], \"width\": 64"), TEXT64,
                 "vision_cfg.layers: 120 bottleneck blocks");
    expect_error(RN("\"layers\": [1, 1, 1, 1], \"width\": 1"), TEXT64, "vision_cfg.width: 1");
    expect_error(RN("\"layers\": [1, 1, 1, 1], \"width\": 8, \"mlp_ratio\": 2"), TEXT64,
                 "vision_cfg.mlp_ratio: does not apply to a ResNet tower");
    expect_error(RN("\"layers\": [1, 1, 1, 1], \"width\": 8, \"pool_type\": \"avg\""), TEXT64,
                 "vision_cfg.pool_type: does not apply to a ResNet tower");
    expect_error(RN("\"layers\": [1, \"2\", 1, 1], \"width\": 8"), TEXT64,
                 "vision_cfg.layers: entry 1");
    expect_error(VIT("\"width\": 64"), "\"width\": 64, \"heads\": 1, \"layers\": [1, 1, 1, 1]",
                 "text_cfg.layers: expected an integer");
    expect_error("\"image_size\": 32, \"patch_size\": null, \"layers\": 2, \"width\": 64", TEXT64,
                 "vision_cfg.patch_size: null is only valid for a ResNet tower");
}

/* "83816869" -> "83,816,869" */
static void commas(long long v, char *out) {
    char d[32];
    int n = snprintf(d, sizeof d, "%lld", v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) out[o++] = ',';
        out[o++] = d[i];
    }
    out[o] = 0;
}

static void test_param_counts_open_clip(void **state) {
    (void)state;
    char path[1024], cmd[1400];
    snprintf(path, sizeof path, "%s/breadth/param_counts.json", TC_FIXTURES);
    size_t len;
    char *text = tc_read_file(path, &len);
    if (!text) fail_msg("fixture %s missing: run scripts/make_fixtures.py", path);
    tc_json *root;
    assert_int_equal(tc_json_parse(text, len, path, &root), TC_OK);
    assert_true(root->count >= 7);
    for (size_t i = 0; i < root->count; i++) {
        const char *name = root->keys[i];
        const tc_json *want = &root->items[i];
        long long total = tc_json_get(want, "total")->integer;
        long long vision = tc_json_get(want, "vision")->integer;
        long long textc = tc_json_get(want, "text")->integer;
        tc_model_config c;
        snprintf(path, sizeof path, "%s/configs/models/%s.json", source_dir(), name);
        if (tc_model_config_load(&c, path) != TC_OK) fail_msg("%s", tc_last_error());
        tc_param_layout l;
        assert_int_equal(tc_param_layout_build(&l, &c), TC_OK);
        tc_param_counts n = tc_param_count(&l);
        if ((long long)n.total != total || (long long)n.vision != vision ||
            (long long)n.text != textc)
            fail_msg("%s: total %zu vision %zu text %zu, open_clip %lld %lld %lld", name, n.total,
                     n.vision, n.text, total, vision, textc);
        tc_param_layout_free(&l);
        /* and the command users run */
        char *out = NULL, want_line[96], num[40];
        snprintf(cmd, sizeof cmd, "inspect %s", path);
        int rc = tc_run_cli(cmd, &out);
        commas(total, num);
        snprintf(want_line, sizeof want_line, "total params: %s\n", num);
        if (rc != 0 || !strstr(out, want_line))
            fail_msg("%s: want '%s', got:\n%s", name, want_line, out);
        print_message("%-30s %s parameters, as open_clip\n", name, num);
        free(out);
    }
    tc_json_free(root);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_widths),
        cmocka_unit_test(test_resnet_configs),
        cmocka_unit_test(test_param_counts_open_clip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
