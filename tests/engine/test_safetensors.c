/* safetensors: round trips with known values in F32/F16/BF16 (and raw
 * I32/I64), the writer's layout, and one test per hostile-file rule of the
 * format, each checked for a non-zero status and a message that says what
 * is wrong. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "testutil.h"

static char *tmpdir;

static int setup(void **state) {
    (void)state;
    tmpdir = tc_make_tempdir("st");
    return tmpdir ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tc_rmtree(tmpdir);
    free(tmpdir);
    return 0;
}

static const char *tmp_path(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", tmpdir, name);
    return buf;
}

/* a safetensors image: 8-byte length (n_override when non-zero), header, data */
static unsigned char *make_image(const char *header, uint64_t n_override, size_t data_len,
                                 size_t *len_out) {
    size_t h = strlen(header);
    size_t len = 8 + h + data_len;
    unsigned char *buf = calloc(1, len + 1);
    uint64_t n = n_override ? n_override : h;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(n >> (8 * i));
    memcpy(buf + 8, header, h);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + h + i] = (unsigned char)(i * 7 + 1);
    *len_out = len;
    return buf;
}

static void expect_bad(const char *header, uint64_t n_override, size_t data_len,
                       const char *needle) {
    size_t len;
    unsigned char *img = make_image(header, n_override, data_len, &len);
    tc_safetensors *f = NULL;
    tc_status st = tc_st_open_memory(&f, img, len, "hostile.safetensors");
    if (st == TC_OK) fail_msg("accepted header %s", header);
    assert_null(f);
    assert_int_equal(st, TC_ERR_FORMAT);
    const char *m = tc_last_error();
    if (!strstr(m, "hostile.safetensors") || !strstr(m, needle))
        fail_msg("header %s: message '%s' lacks '%s'", header, m, needle);
    /* the same bytes through a file */
    char path[512];
    tmp_path("hostile.safetensors", path, sizeof path);
    assert_int_equal(tc_write_file(path, img, len), 0);
    assert_int_not_equal(tc_st_open(&f, path), TC_OK);
    assert_non_null(strstr(tc_last_error(), needle));
    free(img);
}

static void test_round_trip_known_values(void **state) {
    (void)state;
    const float vals[6] = {1.0f, -2.5f, 0.0f, 65504.0f, 6.103515625e-05f, 5.9604644775390625e-08f};
    uint16_t f16[6], bf16[6];
    for (int i = 0; i < 6; i++) {
        f16[i] = tc_float_to_half(vals[i]);
        bf16[i] = tc_float_to_bfloat(vals[i]);
    }
    /* bit patterns from IEEE 754 binary16 and bfloat16 */
    assert_int_equal(f16[0], 0x3C00);
    assert_int_equal(f16[1], 0xC100);
    assert_int_equal(f16[3], 0x7BFF);
    assert_int_equal(f16[4], 0x0400); /* smallest normal */
    assert_int_equal(f16[5], 0x0001); /* smallest subnormal */
    assert_int_equal(bf16[0], 0x3F80);
    assert_int_equal(bf16[1], 0xC020);
    assert_int_equal(tc_float_to_half(1e6f), 0x7C00);               /* overflow to inf */
    assert_int_equal(tc_float_to_half(1.0f + 1.0f / 2048), 0x3C00); /* tie to even (down) */
    assert_int_equal(tc_float_to_half(1.0f + 3.0f / 2048), 0x3C02); /* tie to even (up) */
    assert_int_equal(tc_float_to_bfloat(1.00390625f), 0x3F80);
    int32_t ids[4] = {49406, 320, 49407, 0};
    int64_t big[2] = {-5, 1LL << 40};
    float scalar = 4.6052f;
    const float m[2][3] = {{1, 2, 3}, {4, 5, 6}};
    tc_st_write_tensor w[7] = {
        {"a.f32", TC_DT_F32, 2, {2, 3}, m},      {"b.f16", TC_DT_F16, 1, {6}, f16},
        {"c.bf16", TC_DT_BF16, 2, {3, 2}, bf16}, {"ids", TC_DT_I32, 2, {2, 2}, ids},
        {"big", TC_DT_I64, 1, {2}, big},         {"logit_scale", TC_DT_F32, 0, {0}, &scalar},
        {"empty", TC_DT_F32, 2, {0, 5}, NULL},
    };
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "quote \" and \\ and \xc3\xa9"};
    char path[512];
    tmp_path("rt.safetensors", path, sizeof path);
    assert_int_equal(tc_st_write(path, w, 7, mk, mv, 2), TC_OK);

    /* layout: header padded with spaces to a multiple of 8, metadata first */
    size_t len;
    char *raw = tc_read_file(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | (unsigned char)raw[i];
    assert_int_equal(n % 8, 0);
    assert_int_equal(strncmp(raw + 8, "{\"__metadata__\":", 16), 0);
    assert_int_equal(len, 8 + n + 6 * 4 + 6 * 2 + 6 * 2 + 4 * 4 + 2 * 8 + 4);
    free(raw);

    tc_safetensors *f;
    assert_int_equal(tc_st_open(&f, path), TC_OK);
    assert_int_equal(tc_st_count(f), 7);
    assert_string_equal(tc_st_tensor_at(f, 0)->name, "a.f32"); /* header order kept */
    assert_string_equal(tc_st_metadata(f, "format"), "pt");
    assert_string_equal(tc_st_metadata(f, "note"), mv[1]);
    assert_null(tc_st_metadata(f, "absent"));
    assert_int_equal(tc_st_metadata_count(f), 2);
    float out[6];
    int64_t s23[2] = {2, 3}, s6[1] = {6}, s32[2] = {3, 2}, s22_ids[2] = {2, 2};
    assert_int_equal(tc_st_read_f32(f, "a.f32", 2, s23, out), TC_OK);
    assert_memory_equal(out, m, sizeof m);
    assert_int_equal(tc_st_read_f32(f, "b.f16", 1, s6, out), TC_OK);
    assert_memory_equal(out, vals, sizeof vals); /* every value is exact in fp16 */
    assert_int_equal(tc_st_read_f32(f, "c.bf16", 2, s32, out), TC_OK);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == tc_bfloat_to_float(bf16[i]));
    assert_true(out[0] == 1.0f && out[1] == -2.5f &&
                out[3] == 65536.0f); /* 65504 rounds up in bf16 */
    assert_int_equal(tc_st_read_f32(f, "logit_scale", 0, NULL, out), TC_OK);
    assert_true(out[0] == scalar);
    const tc_st_tensor *t = tc_st_find(f, "ids");
    assert_non_null(t);
    assert_int_equal(t->dtype, TC_DT_I32);
    assert_int_equal(t->numel, 4);
    int32_t ids_back[4];
    memcpy(ids_back, t->data, sizeof ids_back);
    assert_memory_equal(ids_back, ids, sizeof ids);
    int32_t ids32[4];
    assert_int_equal(tc_st_read_i32(f, "ids", 2, s22_ids, ids32), TC_OK);
    assert_memory_equal(ids32, ids, sizeof ids);
    int64_t s2[1] = {2};
    assert_int_equal(tc_st_read_i32(f, "big", 1, s2, ids32), TC_ERR_FORMAT); /* 2^40 */
    assert_non_null(strstr(tc_last_error(), "'big': element 1"));
    assert_int_equal(tc_st_read_i32(f, "b.f16", 1, s6, ids32), TC_ERR_FORMAT);
    t = tc_st_find(f, "big");
    int64_t big_back[2];
    memcpy(big_back, t->data, sizeof big_back);
    assert_memory_equal(big_back, big, sizeof big);
    t = tc_st_find(f, "empty");
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->ndim, 2);

    /* wrong expected shape and a non-float dtype name the tensor */
    int64_t wrong[2] = {3, 2};
    assert_int_equal(tc_st_read_f32(f, "a.f32", 2, wrong, out), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "'a.f32' has shape [2, 3], expected [3, 2]"));
    int64_t s22[2] = {2, 2};
    assert_int_not_equal(tc_st_read_f32(f, "ids", 2, s22, out), TC_OK);
    assert_non_null(strstr(tc_last_error(), "'ids': dtype I32"));
    /* missing tensor */
    assert_int_equal(tc_st_read_f32(f, "nope", 1, s6, out), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "tensor 'nope' is missing"));
    tc_st_close(f);
}

static void test_f16_all_values(void **state) {
    (void)state;
    /* every finite fp16 value converts to fp32 and back to the same bits */
    for (unsigned h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00) continue;
        float x = tc_half_to_float((uint16_t)h);
        if (tc_float_to_half(x) != h)
            fail_msg("fp16 0x%04x -> %g -> 0x%04x", h, x, tc_float_to_half(x));
    }
    assert_true(tc_half_to_float(0x7C00) > 3e38f);
    assert_true(tc_half_to_float(0x7E00) != tc_half_to_float(0x7E00)); /* NaN */
}

static void test_header_length(void **state) {
    (void)state;
    expect_bad("{}", 1000, 0, "runs past the end of the file");
    expect_bad("{}", 100000001, 0, "exceeds the limit of 100000000");
    expect_bad("{}", UINT64_MAX, 0, "exceeds the limit");
    expect_bad(" {}", 0, 0, "does not start with '{'");
    expect_bad("[]", 0, 0, "does not start with '{'");
    expect_bad("{\"a\": ", 0, 0, "invalid JSON");
    expect_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}} x", 0, 4,
               "trailing characters");
}

static void test_offsets(void **state) {
    (void)state;
    /* overlapping */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               0, 12, "overlapping");
    /* a hole */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               0, 12, "a hole");
    /* not starting at 0 */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 8, "a hole");
    /* out of range: consistent sizes, but far past the end of the file */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[250000],\"data_offsets\":[0,1000000]}}", 0, 16,
               "truncated file or offsets out of range");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551614,"
               "18446744073709551615]}}",
               0, 1, "data_offsets must be non-negative integers");
    /* trailing bytes after the last tensor */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 12,
               "trailing bytes");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 0, 4,
               "END < BEGIN");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 4,
               "data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 0, 4,
               "non-negative");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 0, 4,
               "non-negative integers");
}

static void test_entries(void **state) {
    (void)state;
    expect_bad("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
               "unknown dtype \"F33\"");
    expect_bad("{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, "dtype");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
               "tensor 'a': size mismatch: 12 bytes");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
               "\"data_offsets\":[0,4]}}",
               0, 4, "overflows");
    expect_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],\"data_offsets\":[0,8]}}",
               0, 8, "overflows");
    expect_bad(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 0, 4,
        "shape entries must be non-negative integers");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4,
               "non-negative");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               0, 4, "more than 8 dimensions");
    expect_bad("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 0, 1,
               "multiple of 8");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 0, 4, "shape");
    expect_bad("{\"a\":[1]}", 0, 0, "not an object");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               0, 8, "duplicate tensor name 'a'");
    /* the same name twice at the same offsets: a duplicate, not an overlap */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               0, 4, "duplicate tensor name 'a'");
    expect_bad("{\"__metadata__\":{\"k\":1}}", 0, 0, "not a string");
    expect_bad("{\"__metadata__\":[]}", 0, 0, "not an object");
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, "duplicate");
    expect_bad("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
               "NUL");
    /* legal corner cases: no tensors at all, a zero-size tensor, an F4 pair */
    const char *ok[] = {
        "{}",
        "{\"__metadata__\":{}}      ",
        ("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[0,0]},"
         "\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}"),
    };
    size_t data[] = {0, 0, 1};
    for (int i = 0; i < 3; i++) {
        size_t len;
        unsigned char *img = make_image(ok[i], 0, data[i], &len);
        tc_safetensors *f;
        if (tc_st_open_memory(&f, img, len, "ok") != TC_OK)
            fail_msg("%s: %s", ok[i], tc_last_error());
        tc_st_close(f);
        free(img);
    }
}

static void test_short_and_truncated_files(void **state) {
    (void)state;
    char path[512];
    tmp_path("short.safetensors", path, sizeof path);
    tc_safetensors *f;
    /* empty and 7-byte files */
    assert_int_equal(tc_write_file(path, "", 0), 0);
    assert_int_equal(tc_st_open(&f, path), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "0 bytes, shorter than the 8-byte header length"));
    assert_int_equal(tc_write_file(path, "\x02\0\0\0\0\0\0", 7), 0);
    assert_int_equal(tc_st_open(&f, path), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "7 bytes"));
    /* a missing file */
    assert_int_equal(tc_st_open(&f, "/nonexistent/x.safetensors"), TC_ERR_IO);
    assert_non_null(strstr(tc_last_error(), "/nonexistent/x.safetensors"));
    /* every truncation of a valid file is refused */
    float v[16];
    for (int i = 0; i < 16; i++)
        v[i] = (float)i;
    tc_st_write_tensor w[2] = {{"x", TC_DT_F32, 2, {2, 4}, v}, {"y", TC_DT_F32, 1, {8}, v + 8}};
    const char *k[] = {"format"}, *val[] = {"pt"};
    assert_int_equal(tc_st_write(path, w, 2, k, val, 1), TC_OK);
    size_t len;
    char *raw = tc_read_file(path, &len);
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(tc_st_open_memory(&f, raw, cut, "cut"), TC_ERR_FORMAT);
        assert_null(f);
    }
    assert_int_equal(tc_st_open_memory(&f, raw, len, "whole"), TC_OK);
    tc_st_close(f);
    /* truncated on disk */
    assert_int_equal(truncate(path, (off_t)len - 5), 0);
    assert_int_equal(tc_st_open(&f, path), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "truncated file"));
    free(raw);
}

static void test_writer_refuses_bad_input(void **state) {
    (void)state;
    char path[512];
    tmp_path("w.safetensors", path, sizeof path);
    float x = 0;
    tc_st_write_tensor w = {"x", TC_DT_F32, 9, {1}, &x};
    assert_int_equal(tc_st_write(path, &w, 1, NULL, NULL, 0), TC_ERR_ARG);
    w.ndim = 1;
    w.shape[0] = -3;
    assert_int_equal(tc_st_write(path, &w, 1, NULL, NULL, 0), TC_ERR_ARG);
    /* nothing is left behind by a refused or failed write */
    assert_false(tc_file_exists(path));
    assert_int_not_equal(tc_st_write("/nonexistent/dir/w.safetensors", &w, 0, NULL, NULL, 0),
                         TC_OK);
}

/* a file from the reference writer (safetensors.torch.save_file, see
 * tests/fuzz/corpus/make_safetensors_seeds.py): its own tensor order and
 * alignment, F32/F16/BF16/I64 and a 0-dim tensor */
static void test_reads_reference_writer_file(void **state) {
    (void)state;
    char path[1024];
    const char *src = getenv("TC_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/fuzz/corpus/fuzz_safetensors/mixed.safetensors",
             src ? src : TC_SOURCE_DIR);
    tc_safetensors *f;
    if (tc_st_open(&f, path) != TC_OK) fail_msg("%s", tc_last_error());
    assert_int_equal(tc_st_count(f), 5);
    assert_string_equal(tc_st_metadata(f, "format"), "pt");
    const tc_st_tensor *t = tc_st_find(f, "s");
    assert_int_equal(t->ndim, 0);
    float x;
    assert_int_equal(tc_st_read_f32(f, "s", 0, NULL, &x), TC_OK);
    assert_true(x == 4.6f);
    t = tc_st_find(f, "ids");
    assert_int_equal(t->dtype, TC_DT_I64);
    int64_t ids[6];
    memcpy(ids, t->data, sizeof ids);
    for (int i = 0; i < 6; i++)
        assert_int_equal(ids[i], i);
    int32_t ids32[6];
    int64_t s23[2] = {2, 3};
    assert_int_equal(tc_st_read_i32(f, "ids", 2, s23, ids32), TC_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(ids32[i], i);
    assert_int_equal(tc_st_find(f, "b")->dtype, TC_DT_F16);
    assert_int_equal(tc_st_find(f, "c")->dtype, TC_DT_BF16);
    float c[4];
    int64_t s22[2] = {2, 2};
    assert_int_equal(tc_st_read_f32(f, "c", 2, s22, c), TC_OK);
    for (int i = 0; i < 4; i++)
        assert_true(c[i] == c[i] && c[i] > -10 && c[i] < 10);
    tc_st_close(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_known_values),
        cmocka_unit_test(test_f16_all_values),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_short_and_truncated_files),
        cmocka_unit_test(test_writer_refuses_bad_input),
        cmocka_unit_test(test_reads_reference_writer_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
