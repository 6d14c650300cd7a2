/* manual weight inheritance: ViT-B-32 -> TinyCLIP-ViT-40M-32-Text-19M and
 * RN50 -> TinyCLIP-ResNet-30M-Text-29M with the real shapes, every element of every student tensor checked against an
 * independently written mapping (teacher values are a hash of tensor and
 * element index, so a wrong source element shows); the interval_front layer
 * maps; tower selection; the errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inherit.h"
#include "model_config.h"
#include "params.h"
#include "testutil.h"

static void vit_b32(tc_model_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "ViT-B-32");
    c->embed_dim = 512;
    c->activation = TC_GELU;
    tc_tower_set_uniform(&c->vision, 12, 768, 12, 3072);
    c->vision.image_size = 224;
    c->vision.patch_size = 32;
    c->vision.pool = TC_POOL_TOKEN;
    tc_tower_set_uniform(&c->text, 12, 512, 8, 2048);
    c->text.context_length = 77;
    c->text.vocab_size = 49408;
    c->text.pool = TC_POOL_ARGMAX;
}

/* TinyCLIP-ViT-40M-32-Text-19M: vision 12L w512 (8 heads), text 6L w512 8h */
static void tinyclip_40m(tc_model_config *c) {
    vit_b32(c);
    snprintf(c->name, sizeof c->name, "TinyCLIP-ViT-40M-32-Text-19M");
    tc_tower_set_uniform(&c->vision, 12, 512, 8, 2048);
    tc_tower_set_uniform(&c->text, 6, 512, 8, 2048);
}

/* teacher element value: a hash of (tensor index, element index) */
static float tval(uint64_t ti, uint64_t e) {
    uint64_t x = (ti << 40) ^ e ^ 0x5bd1e995ULL;
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (float)((double)(x >> 40) / 16777216.0 * 2.0 - 1.0);
}

static float *teacher_buffer(const tc_param_layout *tl) {
    float *p = malloc(tl->total * sizeof *p);
    assert_non_null(p);
    for (int i = 0; i < tl->count; i++)
        for (size_t e = 0; e < tl->params[i].count; e++)
            p[tl->params[i].offset + e] = tval((uint64_t)i, e);
    return p;
}

static int tensor_index(const tc_param_layout *l, const char *name) {
    for (int i = 0; i < l->count; i++)
        if (strcmp(l->params[i].name, name) == 0) return i;
    return -1;
}

/* ResNet towers: block i of stage s -> g_smap[s][i] */
static int g_smap[TC_RESNET_STAGES][TC_MAX_LAYERS];

/* the teacher tensor a student tensor comes from, by the original's rule,
 * written out for this test: layer i of a tower -> vmap/tmap[i] */
static void teacher_name(const char *sname, const int *vmap, const int *tmap, char *out,
                         size_t cap) {
    int layer, stage;
    char rest[96];
    if (sscanf(sname, "visual.layer%d.%d.%95s", &stage, &layer, rest) == 3)
        snprintf(out, cap, "visual.layer%d.%d.%s", stage, g_smap[stage - 1][layer], rest);
    else if (sscanf(sname, "visual.transformer.resblocks.%d.%95s", &layer, rest) == 2)
        snprintf(out, cap, "visual.transformer.resblocks.%d.%s", vmap[layer], rest);
    else if (sscanf(sname, "transformer.resblocks.%d.%95s", &layer, rest) == 2)
        snprintf(out, cap, "transformer.resblocks.%d.%s", tmap[layer], rest);
    else snprintf(out, cap, "%s", sname);
}

/* checks every element of every student tensor of the selected towers */
static void check_inherited(const tc_param_layout *tl, const tc_param_layout *sl,
                            const float *student, const int *vmap, const int *tmap, int vision,
                            int text, float sentinel) {
    size_t checked = 0;
    for (int i = 0; i < sl->count; i++) {
        const tc_param_info *sp = &sl->params[i];
        const float *s = student + sp->offset;
        if (sp->tower == TC_TOWER_SHARED) continue; /* logit_scale: checked by the caller */
        int want = sp->tower == TC_TOWER_VISION ? vision : sp->tower == TC_TOWER_TEXT ? text : 0;
        if (!want) {
            for (size_t e = 0; e < sp->count; e++)
                if (memcmp(&s[e], &sentinel, sizeof sentinel) != 0)
                    fail_msg("%s[%zu] was written but its tower was not selected", sp->name, e);
            continue;
        }
        char tname[128];
        teacher_name(sp->name, vmap, tmap, tname, sizeof tname);
        int ti = tensor_index(tl, tname);
        if (ti < 0) fail_msg("%s: no teacher tensor %s", sp->name, tname);
        const tc_param_info *tp = &tl->params[ti];
        int qkv = strstr(sp->name, "attn.in_proj_") != NULL;
        for (size_t e = 0; e < sp->count; e++) {
            size_t te;
            if (qkv) {
                /* rows (3, NH, 64): q/k/v block b, head-major row r within it */
                size_t cols_s = sp->ndim == 2 ? (size_t)sp->shape[1] : 1;
                size_t cols_t = tp->ndim == 2 ? (size_t)tp->shape[1] : 1;
                size_t row = e / cols_s, col = e % cols_s;
                size_t as = (size_t)sp->shape[0] / 3, at = (size_t)tp->shape[0] / 3;
                size_t b = row / as, r = row % as;
                te = (b * at + r) * cols_t + col;
            } else {
                /* leading slice: same multi-index in the teacher's strides */
                size_t rem = e, stride_s = sp->count, off = 0, stride_t = tp->count;
                for (int d = 0; d < sp->ndim; d++) {
                    stride_s /= (size_t)sp->shape[d];
                    stride_t /= (size_t)tp->shape[d];
                    size_t k = rem / stride_s;
                    rem %= stride_s;
                    off += k * stride_t;
                }
                te = off;
            }
            float want_v = tval((uint64_t)ti, te);
            if (s[e] != want_v)
                fail_msg("%s[%zu]: %g, want %s[%zu] = %g", sp->name, e, (double)s[e], tname, te,
                         (double)want_v);
            checked++;
        }
    }
    print_message("checked %zu inherited elements\n", checked);
}

static void load_or_build(tc_model_config *c, const char *file, void (*build)(tc_model_config *)) {
    build(c);
    char path[1024];
    const char *src = getenv("TC_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/configs/models/%s", src ? src : TC_SOURCE_DIR, file);
    if (!tc_file_exists(path)) return;
    tc_model_config f;
    if (tc_model_config_load(&f, path) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
    /* the in-code shapes must be the file's */
    const tc_tower_config *a[2] = {&c->vision, &c->text}, *b[2] = {&f.vision, &f.text};
    assert_int_equal(c->embed_dim, f.embed_dim);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(a[k]->layers, b[k]->layers);
        assert_int_equal(a[k]->width, b[k]->width);
        for (int l = 0; l < a[k]->layers; l++) {
            assert_int_equal(a[k]->heads[l], b[k]->heads[l]);
            assert_int_equal(a[k]->mlp_width[l], b[k]->mlp_width[l]);
        }
    }
    assert_int_equal(c->vision.patch_size, f.vision.patch_size);
    assert_int_equal(c->vision.image_size, f.vision.image_size);
    assert_int_equal(c->text.context_length, f.text.context_length);
    assert_int_equal(c->text.vocab_size, f.text.vocab_size);
    *c = f;
}

static void test_vit_b32_to_40m(void **state) {
    (void)state;
    tc_model_config tc, sc;
    load_or_build(&tc, "ViT-B-32.json", vit_b32);
    tinyclip_40m(&sc);
    tc_param_layout tl, sl;
    assert_int_equal(tc_param_layout_build(&tl, &tc), TC_OK);
    assert_int_equal(tc_param_layout_build(&sl, &sc), TC_OK);
    float *teacher = teacher_buffer(&tl);
    float *student = malloc(sl.total * sizeof *student);
    assert_non_null(student);
    const float sentinel = -12345.0f;
    for (size_t i = 0; i < sl.total; i++) student[i] = sentinel;
    student[sl.logit_scale] = 2.6592600f;

    int vmap[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    int tmap[6] = {0, 2, 4, 6, 8, 10};
    tc_status st = tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, NULL);
    if (st != TC_OK) fail_msg("%s", tc_last_error());
    check_inherited(&tl, &sl, student, vmap, tmap, 1, 1, sentinel);
    /* the student's own logit scale is kept */
    assert_true(student[sl.logit_scale] == 2.6592600f);
    /* every tensor was written: the student's tensor list is 12 vision blocks,
     * 6 text blocks and the stems, all checked above */
    tc_param_counts cnt = tc_param_count(&sl);
    print_message("student: vision %zu, text %zu (+ token embedding %zu)\n", cnt.vision,
                  cnt.text - cnt.token_embedding, cnt.token_embedding);
    assert_int_equal(sl.count, 3 + 6 + 12 * 12 + 2 + 6 * 12 + 3);

    /* only one tower */
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < sl.total; i++) student[i] = sentinel;
        tc_inherit_options o = {.vision = k == 0, .text = k == 1};
        assert_int_equal(tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, &o), TC_OK);
        check_inherited(&tl, &sl, student, vmap, tmap, k == 0, k == 1, sentinel);
        assert_true(student[sl.logit_scale] == sentinel);
    }
    free(student);
    free(teacher);
    tc_param_layout_free(&tl);
    tc_param_layout_free(&sl);
}

static void test_layer_maps(void **state) {
    (void)state;
    int idx[TC_MAX_LAYERS];
    int want9[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8}, want6[6] = {0, 2, 4, 6, 8, 10};
    int want3[3] = {0, 4, 8}, want10[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, want96[6] = {0, 1, 2, 3, 4, 5};
    assert_int_equal(tc_inherit_layer_map(12, 9, idx), TC_OK);
    assert_memory_equal(idx, want9, sizeof want9);
    assert_int_equal(tc_inherit_layer_map(12, 6, idx), TC_OK);
    assert_memory_equal(idx, want6, sizeof want6);
    assert_int_equal(tc_inherit_layer_map(12, 3, idx), TC_OK);
    assert_memory_equal(idx, want3, sizeof want3);
    assert_int_equal(tc_inherit_layer_map(12, 10, idx), TC_OK);
    assert_memory_equal(idx, want10, sizeof want10);
    assert_int_equal(tc_inherit_layer_map(9, 6, idx), TC_OK);
    assert_memory_equal(idx, want96, sizeof want96);
    assert_int_equal(tc_inherit_layer_map(12, 12, idx), TC_OK);
    for (int i = 0; i < 12; i++) assert_int_equal(idx[i], i);
    assert_int_equal(tc_inherit_layer_map(6, 12, idx), TC_ERR_CONFIG);
}

/* a small teacher with 12 text layers into 9- and 3-layer students: the
 * copied layers are the first 9 and [0, 4, 8] */
static void small_pair(tc_model_config *t, tc_model_config *s, int student_text_layers) {
    memset(t, 0, sizeof *t);
    t->embed_dim = 32;
    t->activation = TC_GELU;
    tc_tower_set_uniform(&t->vision, 4, 192, 3, 256);
    t->vision.image_size = 16;
    t->vision.patch_size = 8;
    tc_tower_set_uniform(&t->text, 12, 128, 2, 512);
    t->text.context_length = 9;
    t->text.vocab_size = 50;
    t->text.pool = TC_POOL_ARGMAX;
    *s = *t;
    tc_tower_set_uniform(&s->vision, 2, 128, 2, 200);
    tc_tower_set_uniform(&s->text, student_text_layers, 64, 1, 256);
    s->embed_dim = 24;
}

static void run_small_with(int student_layers, const int *tmap, const tc_inherit_options *opt) {
    tc_model_config tc, sc;
    small_pair(&tc, &sc, student_layers);
    tc_param_layout tl, sl;
    assert_int_equal(tc_param_layout_build(&tl, &tc), TC_OK);
    assert_int_equal(tc_param_layout_build(&sl, &sc), TC_OK);
    float *teacher = teacher_buffer(&tl);
    float *student = malloc(sl.total * sizeof *student);
    for (size_t i = 0; i < sl.total; i++) student[i] = 0.5f;
    assert_int_equal(tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, opt), TC_OK);
    int vmap[2] = {0, 2};
    check_inherited(&tl, &sl, student, vmap, tmap, 1, 1, 0.5f);
    free(student);
    free(teacher);
    tc_param_layout_free(&tl);
    tc_param_layout_free(&sl);
}

static void run_small(int student_layers, const int *tmap) { run_small_with(student_layers, tmap, NULL); }

/* an explicit teacher layer per student layer instead of interval_front */
static void test_explicit_layer_list(void **state) {
    (void)state;
    int list[3] = {11, 5, 2};
    tc_inherit_options o = tc_inherit_defaults();
    o.text_layers = list;
    o.n_text_layers = 3;
    run_small_with(3, list, &o);
    /* wrong length and out-of-range entries are errors */
    tc_model_config tc, sc;
    small_pair(&tc, &sc, 3);
    tc_param_layout tl, sl;
    assert_int_equal(tc_param_layout_build(&tl, &tc), TC_OK);
    assert_int_equal(tc_param_layout_build(&sl, &sc), TC_OK);
    float *teacher = teacher_buffer(&tl), *student = calloc(sl.total, sizeof(float));
    o.n_text_layers = 2;
    assert_int_equal(tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, &o), TC_ERR_CONFIG);
    int bad[3] = {0, 12, 1};
    o.text_layers = bad;
    o.n_text_layers = 3;
    assert_int_equal(tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, &o), TC_ERR_CONFIG);
    free(student);
    free(teacher);
    tc_param_layout_free(&tl);
    tc_param_layout_free(&sl);
}

static void test_small_12_to_9_and_3(void **state) {
    (void)state;
    int m9[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8}, m3[3] = {0, 4, 8};
    run_small(9, m9);
    run_small(3, m3);
}

/* irregular teacher (a pruned model) into a smaller uniform student */
static void test_irregular_teacher(void **state) {
    (void)state;
    tc_model_config tc, sc;
    small_pair(&tc, &sc, 3);
    tc.vision.heads[2] = 1; /* layer 2 (student layer 1) keeps one head of 64 */
    tc.vision.mlp_width[2] = 150;
    tc.irregular = 1;
    sc.vision.heads[0] = sc.vision.heads[1] = 1;
    sc.vision.mlp_width[0] = sc.vision.mlp_width[1] = 100;
    sc.irregular = 1;
    tc_param_layout tl, sl;
    assert_int_equal(tc_param_layout_build(&tl, &tc), TC_OK);
    assert_int_equal(tc_param_layout_build(&sl, &sc), TC_OK);
    float *teacher = teacher_buffer(&tl);
    float *student = calloc(sl.total, sizeof *student);
    assert_int_equal(tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, NULL), TC_OK);
    int vmap[2] = {0, 2}, tmap[3] = {0, 4, 8};
    check_inherited(&tl, &sl, student, vmap, tmap, 1, 1, 0.0f);
    /* a student layer with more heads than its teacher layer is an error */
    sc.vision.heads[1] = 2;
    tc_param_layout_free(&sl);
    assert_int_equal(tc_param_layout_build(&sl, &sc), TC_OK);
    free(student);
    student = calloc(sl.total, sizeof *student);
    assert_int_equal(tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, NULL), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "visual.transformer.resblocks.1.attn.in_proj"));
    free(student);
    free(teacher);
    tc_param_layout_free(&tl);
    tc_param_layout_free(&sl);
}

static tc_status try_pair(tc_model_config *tc, tc_model_config *sc) {
    tc_param_layout tl, sl;
    assert_int_equal(tc_param_layout_build(&tl, tc), TC_OK);
    assert_int_equal(tc_param_layout_build(&sl, sc), TC_OK);
    float *teacher = calloc(tl.total, sizeof *teacher);
    float *student = calloc(sl.total, sizeof *student);
    tc_status st = tc_inherit_manual(tc, &tl, teacher, sc, &sl, student, NULL);
    free(student);
    free(teacher);
    tc_param_layout_free(&tl);
    tc_param_layout_free(&sl);
    return st;
}

static void test_errors(void **state) {
    (void)state;
    tc_model_config tc, sc;
    /* wider student */
    small_pair(&tc, &sc, 3);
    tc_tower_set_uniform(&sc.vision, 2, 256, 4, 256);
    assert_int_equal(try_pair(&tc, &sc), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "visual."));
    /* larger embed dim */
    small_pair(&tc, &sc, 3);
    sc.embed_dim = 40;
    assert_int_equal(try_pair(&tc, &sc), TC_ERR_CONFIG);
    /* different context length */
    small_pair(&tc, &sc, 3);
    sc.text.context_length = 8;
    assert_int_equal(try_pair(&tc, &sc), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "context length"));
    assert_non_null(strstr(tc_last_error(), "positional_embedding"));
    /* different image grid */
    small_pair(&tc, &sc, 3);
    sc.vision.image_size = 24;
    assert_int_equal(try_pair(&tc, &sc), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "image grid"));
    /* deeper student */
    small_pair(&tc, &sc, 3);
    tc_tower_set_uniform(&sc.vision, 5, 128, 2, 200);
    assert_int_equal(try_pair(&tc, &sc), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "vision"));
}

/* ---- ResNet towers ---- */

static void load_shipped(const char *name, tc_model_config *c) {
    char path[1024];
    const char *src = getenv("TC_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/configs/models/%s.json", src ? src : TC_SOURCE_DIR, name);
    if (tc_model_config_load(c, path) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
}

/* interval_front per stage, written out for this test */
static void stage_maps(const tc_model_config *t, const tc_model_config *s) {
    for (int k = 0; k < TC_RESNET_STAGES; k++) {
        int ns = s->vision.stages[k], step = t->vision.stages[k] / (ns > 1 ? ns : 1);
        for (int i = 0; i < ns; i++) g_smap[k][i] = i * step;
    }
}

static void run_resnet(const tc_model_config *tc, const tc_model_config *sc, const int *tmap) {
    tc_param_layout tl, sl;
    assert_int_equal(tc_param_layout_build(&tl, tc), TC_OK);
    assert_int_equal(tc_param_layout_build(&sl, sc), TC_OK);
    float *teacher = teacher_buffer(&tl);
    float *student = malloc(sl.total * sizeof *student);
    assert_non_null(student);
    for (size_t i = 0; i < sl.total; i++) student[i] = -7.0f;
    stage_maps(tc, sc);
    tc_status st = tc_inherit_manual(tc, &tl, teacher, sc, &sl, student, NULL);
    if (st != TC_OK) fail_msg("%s", tc_last_error());
    check_inherited(&tl, &sl, student, NULL, tmap, 1, 1, -7.0f);
    /* BatchNorm buffers come along: a running variance and a batch count */
    const tc_param_info *rv = tc_param_find(&sl, "visual.layer1.0.bn1.running_var");
    const tc_param_info *nb = tc_param_find(&sl, "visual.bn1.num_batches_tracked");
    assert_non_null(rv);
    assert_non_null(nb);
    assert_true(student[rv->offset] != -7.0f && student[nb->offset] != -7.0f);
    free(student);
    free(teacher);
    tc_param_layout_free(&tl);
    tc_param_layout_free(&sl);
}

/* RN50 -> TinyCLIP-ResNet-30M-Text-29M, the shipped configs: stages kept,
 * width 64 -> 56 (every conv, BatchNorm and the pool's projections cut to
 * their leading channels), text 12 -> 9 layers */
static void test_rn50_to_resnet30m(void **state) {
    (void)state;
    tc_model_config tc, sc;
    load_shipped("RN50", &tc);
    load_shipped("TinyCLIP-ResNet-30M-Text-29M", &sc);
    int tmap[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    run_resnet(&tc, &sc, tmap);
}

static void small_resnet(tc_model_config *c, const char *stages, int width, int text_layers) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"embed_dim\": 24, \"vision_cfg\": {\"image_size\": 64, \"layers\": %s, "
             "\"width\": %d, \"patch_size\": null}, \"text_cfg\": {\"context_length\": 8, "
             "\"vocab_size\": 40, \"width\": 64, \"heads\": 1, \"layers\": %d}}",
             stages, width, text_layers);
    if (tc_model_config_parse(c, json, strlen(json), "small") != TC_OK) fail_msg("%s", tc_last_error());
}

/* stage depths that shrink differently: [2,3,4,2] -> [1,3,2,1] takes blocks
 * [0], [0,1,2], [0,2], [0] */
static void test_resnet_stage_maps(void **state) {
    (void)state;
    tc_model_config tc, sc;
    small_resnet(&tc, "[2, 3, 4, 2]", 8, 4);
    small_resnet(&sc, "[1, 3, 2, 1]", 6, 2);
    int tmap[2] = {0, 2};
    run_resnet(&tc, &sc, tmap);
    assert_int_equal(g_smap[2][1], 2);
    /* the errors: a deeper stage, a ViT from a ResNet, an explicit layer list */
    small_resnet(&sc, "[3, 3, 2, 1]", 6, 2);
    assert_int_equal(try_pair(&tc, &sc), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "stage 1"));
    tc_model_config vit;
    vit_b32(&vit);
    assert_int_equal(try_pair(&vit, &tc), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "a ResNet student cannot inherit from a ViT teacher"));
    small_resnet(&sc, "[1, 3, 2, 1]", 6, 2);
    tc_param_layout tl, sl;
    assert_int_equal(tc_param_layout_build(&tl, &tc), TC_OK);
    assert_int_equal(tc_param_layout_build(&sl, &sc), TC_OK);
    float *teacher = calloc(tl.total, sizeof(float)), *student = calloc(sl.total, sizeof(float));
    int list[2] = {0, 1};
    tc_inherit_options o = tc_inherit_defaults();
    o.vision_layers = list;
    o.n_vision_layers = 2;
    assert_int_equal(tc_inherit_manual(&tc, &tl, teacher, &sc, &sl, student, &o), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "per stage"));
    free(teacher);
    free(student);
    tc_param_layout_free(&tl);
    tc_param_layout_free(&sl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rn50_to_resnet30m),
        cmocka_unit_test(test_resnet_stage_maps),
        cmocka_unit_test(test_layer_maps),
        cmocka_unit_test(test_small_12_to_9_and_3),
        cmocka_unit_test(test_explicit_layer_list),
        cmocka_unit_test(test_irregular_teacher),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_vit_b32_to_40m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
