/* tinyclip convert --to onnx without a runtime, and the honesty of the other
 * exports:
 *  - the written graphs read back with protobuf-c: IR version and opset,
 *    inputs and outputs with a dynamic batch, every node input defined
 *    before use, fp16 initializers in fp16, external data that points inside
 *    its file; the files written beside the graphs;
 *  - hostile checkpoints (a missing tensor, a wrong shape, a NaN) and bad
 *    options fail with a message naming the problem, and an existing export
 *    stays byte for byte as it was, with no temporary file left;
 *  - --to open_clip / hf refuse an irregular model, naming the reason and
 *    the ONNX route, and take a regular one; tinyclip inspect says which. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "onnx/onnx.pb-c.h"
#include "onnx_graph.h"
#include "safetensors.h"
#include "testutil.h"

static char *work;
static char regular_dir[1200], irregular_dir[1200];
static tc_model_config regular_cfg, irregular_cfg;

static int setup(void **state) {
    (void)state;
    work = tc_make_tempdir("onnx-export");
    snprintf(regular_dir, sizeof regular_dir, "%s/regular", work);
    snprintf(irregular_dir, sizeof irregular_dir, "%s/irregular", work);
    tc_test_pruned_student(regular_dir, 1, TC_GELU, &regular_cfg);
    tc_test_pruned_student(irregular_dir, 0, TC_QUICK_GELU, &irregular_cfg);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_rmtree(work);
    free(work);
    return 0;
}

static int cli(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *cli_out;
/* runs tinyclip with the formatted arguments; output in cli_out */
static int cli(const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    free(cli_out);
    cli_out = NULL;
    return tc_run_cli(args, &cli_out);
}

static Onnx__ModelProto *read_model(const char *path) {
    size_t len;
    char *bytes = tc_read_file(path, &len);
    if (!bytes) fail_msg("cannot read %s", path);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, (const uint8_t *)bytes);
    free(bytes);
    if (!m) fail_msg("%s does not parse as an ONNX ModelProto", path);
    return m;
}

static int defined(char **names, size_t n, const char *x) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], x)) return 1;
    return 0;
}

/* the structure of one written graph */
static void check_graph(const char *path, const char *input, const char *output, int opset,
                        int fp16, int external) {
    Onnx__ModelProto *m = read_model(path);
    assert_true(m->has_ir_version && m->ir_version >= 7);
    assert_int_equal(m->n_opset_import, 1);
    assert_int_equal(m->opset_import[0]->version, opset);
    const Onnx__GraphProto *g = m->graph;
    assert_int_equal(g->n_input, 1);
    assert_string_equal(g->input[0]->name, input);
    assert_int_equal(g->n_output, 1);
    assert_string_equal(g->output[0]->name, output);
    const Onnx__TensorShapeProto__Dimension *d0 = g->input[0]->type->tensor_type->shape->dim[0];
    assert_int_equal(d0->value_case, ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM);
    assert_string_equal(d0->dim_param, "batch");
    /* names known so far: the input, the initializers, then every node output */
    size_t cap = 1 + g->n_initializer + g->n_node, n = 0;
    char **known = malloc(cap * sizeof *known);
    known[n++] = g->input[0]->name;
    size_t data_end = 0;
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        known[n++] = t->name;
        if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ||
            t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16)
            assert_int_equal(t->data_type, fp16 ? ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16
                                                : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
        size_t bytes = 1;
        for (size_t k = 0; k < t->n_dims; k++)
            bytes *= (size_t)t->dims[k];
        bytes *= t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ? 2
                 : t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ? 4
                                                                        : 8;
        if (external && bytes >= TC_ONNX_EXTERNAL_MIN_BYTES) {
            assert_int_equal(t->data_location, ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL);
            assert_int_equal(t->n_external_data, 3);
            size_t off = strtoull(t->external_data[1]->value, NULL, 10);
            size_t len = strtoull(t->external_data[2]->value, NULL, 10);
            if (off + len > data_end) data_end = off + len;
        } else {
            assert_true(t->has_raw_data && t->raw_data.len == bytes);
        }
    }
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *nd = g->node[i];
        for (size_t k = 0; k < nd->n_input; k++)
            if (!defined(known, n, nd->input[k]))
                fail_msg("%s: node %s (%s) reads %s before it is made", path, nd->name, nd->op_type,
                         nd->input[k]);
        known[n++] = nd->output[0];
    }
    assert_true(defined(known, n, output));
    if (external) {
        char dp[1300];
        snprintf(dp, sizeof dp, "%s.data", path);
        size_t len;
        char *data = tc_read_file(dp, &len);
        assert_non_null(data);
        assert_true(data_end <= len && data_end + 16 > len);
        free(data);
    }
    free(known);
    onnx__model_proto__free_unpacked(m, NULL);
}

static void test_structure(void **state) {
    (void)state;
    char out[1300], p[1400];
    snprintf(out, sizeof out, "%s/out-structure", work);
    const struct {
        const char *precision;
        int opset, external;
    } cases[] = {{"fp32", 17, 0}, {"fp16", 17, 0}, {"fp32", 13, 0}, {"fp32", 21, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rc =
            cli("convert '%s' '%s' --to onnx --precision %s --opset %d%s", irregular_dir, out,
                cases[c].precision, cases[c].opset, cases[c].external ? " --external-data" : "");
        if (rc != 0) fail_msg("exit %d: %s", rc, cli_out);
        int fp16 = !strcmp(cases[c].precision, "fp16");
        snprintf(p, sizeof p, "%s/image_encoder.onnx", out);
        check_graph(p, "pixel_values", "image_embeds", cases[c].opset, fp16, cases[c].external);
        snprintf(p, sizeof p, "%s/text_encoder.onnx", out);
        check_graph(p, "input_ids", "text_embeds", cases[c].opset, fp16, cases[c].external);
    }
    const char *files[] = {
        "onnx_config.json", "preprocess_cfg.json",   "bpe_simple_vocab_16e6.txt.gz", "vocab.json",
        "merges.txt",       "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", out, files[i]);
        if (!tc_file_exists(p)) fail_msg("the export has no %s", files[i]);
    }
    snprintf(p, sizeof p, "%s/preprocess_cfg.json", out);
    char *pp = tc_read_file(p, NULL);
    assert_non_null(strstr(pp, "\"size\": 32"));
    assert_non_null(strstr(pp, "\"interpolation\": \"bicubic\""));
    assert_non_null(strstr(pp, "\"resize_mode\": \"shortest\""));
    free(pp);
    snprintf(p, sizeof p, "%s/onnx_config.json", out);
    char *mf = tc_read_file(p, NULL);
    assert_non_null(strstr(mf, "\"open_clip_regular\": false"));
    assert_non_null(strstr(mf, "\"context_length\": 12"));
    free(mf);
}

/* ---- hostile checkpoints ---- */

/* every file of dir and its bytes, to compare before and after */
typedef struct {
    int n;
    char names[32][256];
    char *bytes[32];
    size_t len[32];
} snapshot;

static void take(snapshot *s, const char *dir) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) && s->n < 32) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        char p[1600];
        snprintf(s->names[s->n], sizeof s->names[0], "%s", e->d_name);
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        s->bytes[s->n] = tc_read_file(p, &s->len[s->n]);
        s->n++;
    }
    closedir(d);
}

static void same(const snapshot *a, const snapshot *b, const char *what) {
    if (a->n != b->n) fail_msg("%s: %d files before, %d after", what, a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        int j = 0;
        while (j < b->n && strcmp(a->names[i], b->names[j]))
            j++;
        if (j == b->n) fail_msg("%s: %s is gone", what, a->names[i]);
        if (a->len[i] != b->len[j] || memcmp(a->bytes[i], b->bytes[j], a->len[i]))
            fail_msg("%s: %s changed", what, a->names[i]);
    }
}

static void drop(snapshot *s) {
    for (int i = 0; i < s->n; i++)
        free(s->bytes[i]);
}

/* the regular student rewritten with one tensor changed: skip it (wrong
 * shape 0), give it one more row (1), or put a NaN in it (2) */
static void broken_copy(const char *dst, const char *tensor, int how) {
    tc_model_config cfg;
    tc_param_layout l;
    float *p;
    assert_int_equal(tc_checkpoint_load(regular_dir, NULL, &cfg, &l, &p), TC_OK);
    assert_int_equal(tc_checkpoint_save(dst, TC_FORMAT_OPENCLIP, &cfg, &l, p), TC_OK);
    tc_st_write_tensor *w = calloc((size_t)l.count, sizeof *w);
    float *bigger = NULL;
    int n = 0;
    for (int i = 0; i < l.count; i++) {
        const tc_param_info *t = &l.params[i];
        int hit = !strcmp(t->name, tensor);
        if (hit && how == 0) continue;
        w[n] = (tc_st_write_tensor){t->name, TC_DT_F32, t->ndim, {0}, p + t->offset};
        memcpy(w[n].shape, t->shape, sizeof t->shape);
        if (hit && how == 1) {
            size_t row = t->count / (size_t)t->shape[0];
            bigger = calloc(t->count + row, sizeof *bigger);
            memcpy(bigger, p + t->offset, t->count * sizeof *bigger);
            w[n].data = bigger;
            w[n].shape[0]++;
        }
        if (hit && how == 2) p[t->offset + 3] = NAN;
        n++;
    }
    char path[1400];
    snprintf(path, sizeof path, "%s/open_clip_model.safetensors", dst);
    assert_int_equal(tc_st_write(path, w, n, NULL, NULL, 0), TC_OK);
    free(w);
    free(bigger);
    free(p);
    tc_param_layout_free(&l);
}

static void test_hostile(void **state) {
    (void)state;
    char out[1300], bad[1300];
    snprintf(out, sizeof out, "%s/out-hostile", work);
    int rc = cli("convert '%s' '%s' --to onnx", regular_dir, out);
    if (rc != 0) fail_msg("exit %d: %s", rc, cli_out);
    snapshot before, after;
    take(&before, out);
    const char *tensor = "visual.transformer.resblocks.1.mlp.c_fc.weight";
    const char *what[3] = {"missing tensor", "wrong shape", "non-finite value"};
    for (int how = 0; how < 3; how++) {
        snprintf(bad, sizeof bad, "%s/broken-%d", work, how);
        broken_copy(bad, tensor, how);
        rc = cli("convert '%s' '%s' --to onnx", bad, out);
        print_message("%s: exit %d: %s", what[how], rc, cli_out);
        if (rc == 0) fail_msg("%s: the export succeeded", what[how]);
        if (!strstr(cli_out, tensor))
            fail_msg("%s: the message does not name %s", what[how], tensor);
        take(&after, out);
        same(&before, &after, what[how]);
        drop(&after);
    }
    /* options */
    const char *opts[] = {"--precision fp8", "--opset 12", "--opset 22", "--opset x"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        rc = cli("convert '%s' '%s' --to onnx %s", regular_dir, out, opts[i]);
        assert_int_equal(rc, 2);
        print_message("%s: %s", opts[i], cli_out);
    }
    rc = cli("convert '%s' '%s' --to open_clip --precision fp16", regular_dir, out);
    assert_int_equal(rc, 2);
    print_message("--to open_clip --precision fp16: %s", cli_out);
    take(&after, out);
    same(&before, &after, "bad options");
    drop(&after);
    drop(&before);
    /* an output path that is a file */
    char file[1300];
    snprintf(file, sizeof file, "%s/a-file", work);
    assert_int_equal(tc_write_file(file, "x", 1), 0);
    rc = cli("convert '%s' '%s' --to onnx", regular_dir, file);
    assert_true(rc != 0);
    print_message("output is a file: exit %d: %s", rc, cli_out);
}

/* ---- what loads where ---- */

static void test_open_clip_refuses_irregular(void **state) {
    (void)state;
    char out[1300];
    const char *to[] = {"open_clip", "openclip", "hf"};
    for (int i = 0; i < 3; i++) {
        snprintf(out, sizeof out, "%s/out-refused-%d", work, i);
        int rc = cli("convert '%s' '%s' --to %s", irregular_dir, out, to[i]);
        print_message("--to %s of an irregular model: exit %d: %s", to[i], rc, cli_out);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(cli_out, "not open_clip-regular"));
        assert_non_null(strstr(cli_out, "--to onnx"));
        assert_non_null(strstr(cli_out, "shape: regular"));
        assert_false(tc_file_exists(out));
        snprintf(out, sizeof out, "%s/out-regular-%d", work, i);
        rc = cli("convert '%s' '%s' --to %s", regular_dir, out, to[i]);
        if (rc != 0) fail_msg("--to %s of a regular model: exit %d: %s", to[i], rc, cli_out);
    }
}

static void test_inspect(void **state) {
    (void)state;
    int rc = cli("inspect '%s'", irregular_dir);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(cli_out, "open_clip-regular: no"));
    rc = cli("inspect '%s'", regular_dir);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(cli_out, "open_clip-regular: yes"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_open_clip_refuses_irregular),
        cmocka_unit_test(test_inspect),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    free(cli_out);
    return rc;
}
