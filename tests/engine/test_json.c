/* JSON reader: values, escapes, UTF-8, numbers, nesting bound, and the
 * error messages for malformed input; writer escaping and number round trip. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "testutil.h"

static tc_json *parse_ok(const char *s) {
    tc_json *v = NULL;
    tc_status st = tc_json_parse(s, strlen(s), "t.json", &v);
    if (st != TC_OK) fail_msg("parse of %s failed: %s", s, tc_last_error());
    return v;
}

static void parse_bad(const char *s, size_t len, const char *msg_part) {
    tc_json *v = NULL;
    tc_status st = tc_json_parse(s, len, "t.json", &v);
    if (st == TC_OK) fail_msg("parse of '%.*s' should fail", (int)len, s);
    assert_null(v);
    assert_int_equal(st, TC_ERR_FORMAT);
    const char *m = tc_last_error();
    if (!strstr(m, "t.json") || !strstr(m, msg_part))
        fail_msg("message '%s' lacks 't.json' or '%s'", m, msg_part);
}

static void test_values(void **state) {
    (void)state;
    tc_json *v = parse_ok(" {\"a\": [1, -2.5, 1e3, true, false, null, \"x\"], \"b\": {}} ");
    assert_int_equal(v->type, TC_JSON_OBJECT);
    assert_int_equal(v->count, 2);
    const tc_json *a = tc_json_get(v, "a");
    assert_non_null(a);
    assert_int_equal(a->type, TC_JSON_ARRAY);
    assert_int_equal(a->count, 7);
    assert_true(a->items[0].is_int);
    assert_int_equal(a->items[0].integer, 1);
    assert_false(a->items[1].is_int);
    assert_true(a->items[1].number == -2.5);
    assert_false(a->items[2].is_int); /* exponent form is not an integer literal */
    assert_true(a->items[2].number == 1000.0);
    assert_int_equal(a->items[3].type, TC_JSON_BOOL);
    assert_int_equal(a->items[3].boolean, 1);
    assert_int_equal(a->items[4].boolean, 0);
    assert_int_equal(a->items[5].type, TC_JSON_NULL);
    assert_string_equal(a->items[6].string, "x");
    assert_int_equal(tc_json_get(v, "b")->type, TC_JSON_OBJECT);
    assert_null(tc_json_get(v, "c"));
    tc_json_free(v);
}

static void test_escapes(void **state) {
    (void)state;
    tc_json *v = parse_ok("\"q\\\"b\\\\s\\/n\\nt\\tu\\u00e9\\ud83d\\ude00\"");
    const char want[] = "q\"b\\s/n\nt\tu\xc3\xa9\xf0\x9f\x98\x80";
    assert_int_equal(v->string_len, strlen(want));
    assert_memory_equal(v->string, want, strlen(want));
    tc_json_free(v);
    /* an escaped NUL is kept with its length */
    v = parse_ok("\"a\\u0000b\"");
    assert_int_equal(v->string_len, 3);
    assert_int_equal(v->string[1], 0);
    tc_json_free(v);
    parse_bad("\"\\x\"", 4, "bad escape");
    parse_bad("\"\\u12g4\"", 8, "bad \\u escape");
    parse_bad("\"\\ud83d\"", 8, "surrogate");
    parse_bad("\"\\ude00\"", 8, "surrogate");
    parse_bad("\"\\ud83d\\u0041\"", 14, "surrogate");
    parse_bad("\"a\nb\"", 5, "control character");
    parse_bad("\"\xc3\"", 3, "UTF-8");
    parse_bad("\"\xc0\xaf\"", 4, "UTF-8");     /* overlong */
    parse_bad("\"\xed\xa0\x80\"", 5, "UTF-8"); /* encoded surrogate */
    parse_bad("\"\\", 2, "unterminated string");
}

static void test_numbers(void **state) {
    (void)state;
    tc_json *v = parse_ok("[9223372036854775807, -9223372036854775808, 92233720368547758070, 0.1, "
                          "-0, 1E-2, 1e308]");
    assert_true(v->items[0].is_int);
    assert_true(v->items[0].integer == INT64_MAX);
    assert_true(v->items[1].is_int);
    assert_true(v->items[1].integer == INT64_MIN);
    assert_false(v->items[2].is_int); /* too big for int64: a double only */
    assert_true(v->items[2].number > 9.2e19);
    assert_true(v->items[3].number == 0.1);
    assert_true(v->items[5].number == 0.01);
    tc_json_free(v);
    parse_bad("1e400", 5, "out of range");
    parse_bad("-1e999", 6, "out of range");
    parse_bad("01", 2, "trailing");
    parse_bad("1.", 2, "digits expected");
    parse_bad("1e", 2, "exponent");
    parse_bad("-", 1, "truncated number");
    parse_bad("+1", 2, "unexpected character");
    parse_bad(".5", 2, "unexpected character");
    parse_bad("NaN", 3, "unexpected");
    char big[700];
    memset(big, '1', sizeof big);
    parse_bad(big, sizeof big, "too long");
}

static void test_structure_errors(void **state) {
    (void)state;
    parse_bad("", 0, "unexpected end");
    parse_bad("   ", 3, "unexpected end");
    parse_bad("{", 1, "unterminated object");
    parse_bad("[1, 2", 5, "unterminated array");
    parse_bad("[1 2]", 5, "expected ','");
    parse_bad("{\"a\" 1}", 7, "expected ':'");
    parse_bad("{\"a\": 1,}", 9, "expected a string key");
    parse_bad("{1: 2}", 6, "expected a string key");
    parse_bad("[1,]", 4, "unexpected character");
    parse_bad("tru", 3, "unexpected token");
    parse_bad("nul", 3, "unexpected token");
    parse_bad("{} {}", 5, "trailing");
    parse_bad("{\"a\": \"b", 8, "unterminated string");
    /* the position is reported */
    parse_bad("{\n  \"a\": x\n}", 12, "line 2 column 8");
}

static void test_depth_bound(void **state) {
    (void)state;
    char buf[400];
    /* 64 levels parse, 65 do not, and a very deep input fails cleanly */
    for (int depth = 64; depth <= 65; depth++) {
        int n = 0;
        for (int i = 0; i < depth; i++)
            buf[n++] = '[';
        for (int i = 0; i < depth; i++)
            buf[n++] = ']';
        tc_json *v = NULL;
        tc_status st = tc_json_parse(buf, (size_t)n, "deep", &v);
        if (depth == 64) {
            assert_int_equal(st, TC_OK);
            tc_json_free(v);
        } else {
            assert_int_equal(st, TC_ERR_FORMAT);
            assert_non_null(strstr(tc_last_error(), "nesting"));
        }
    }
    size_t huge = 1 << 20;
    char *deep = malloc(huge);
    memset(deep, '[', huge);
    parse_bad(deep, huge, "nesting");
    memset(deep, '{', huge);
    parse_bad(deep, huge, "expected a string key");
    free(deep);
}

static void test_truncations_never_crash(void **state) {
    (void)state;
    const char *doc = "{\"k\": [1, 2.5e-3, \"s\\u00e9\\n\", {\"x\": null, \"y\": [true, false]}]}";
    size_t n = strlen(doc);
    for (size_t i = 0; i < n; i++) {
        tc_json *v = NULL;
        assert_int_not_equal(tc_json_parse(doc, i, "cut", &v), TC_OK);
        assert_null(v);
    }
    tc_json *v = parse_ok(doc);
    tc_json_free(v);
}

static void test_value_count_bound(void **state) {
    (void)state;
    /* 4,000,000 numbers in an array are 4,000,001 values: refused before the
     * tree grows past its budget */
    size_t n = 4000000, len = 2 * n + 1;
    char *s = malloc(len + 1);
    s[0] = '[';
    for (size_t i = 0; i < n; i++) {
        s[1 + 2 * i] = '0';
        s[2 + 2 * i] = i + 1 < n ? ',' : ']';
    }
    parse_bad(s, len, "more than 4000000 values");
    /* one number fewer parses */
    s[2 * (n - 1)] = ']';
    tc_json *v = NULL;
    assert_int_equal(tc_json_parse(s, 2 * (n - 1) + 1, "ok", &v), TC_OK);
    assert_int_equal(v->count, n - 1);
    tc_json_free(v);
    free(s);
}

static void test_duplicate_keys_kept(void **state) {
    (void)state;
    tc_json *v = parse_ok("{\"a\": 1, \"a\": 2}");
    assert_int_equal(v->count, 2);
    assert_int_equal(tc_json_get(v, "a")->integer, 1); /* first wins; callers reject duplicates */
    tc_json_free(v);
}

static void test_writer(void **state) {
    (void)state;
    tc_sbuf b = {0};
    const char raw[] = "a\"b\\c\n\t\x01\x7f\xc3\xa9";
    tc_sbuf_json_string(&b, raw, sizeof raw - 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f\xc3\xa9\"");
    tc_json *v = NULL;
    assert_int_equal(tc_json_parse(b.data, b.len, "w", &v), TC_OK);
    assert_int_equal(v->string_len, sizeof raw - 1);
    assert_memory_equal(v->string, raw, sizeof raw - 1);
    tc_json_free(v);
    tc_sbuf_free(&b);

    const double xs[] = {0.0, 1.0, -3.0, 0.1, 1.0 / 3.0, 4.0, 2.6592, 1e-5, 123456789.125, 1e300};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        tc_sbuf nb = {0};
        tc_sbuf_json_number(&nb, xs[i]);
        tc_json *nv = NULL;
        assert_int_equal(tc_json_parse(nb.data, nb.len, "n", &nv), TC_OK);
        if (nv->number != xs[i]) fail_msg("%.17g written as %s", xs[i], nb.data);
        tc_json_free(nv);
        tc_sbuf_free(&nb);
    }
    char *out;
    tc_sbuf e = {0};
    assert_int_equal(tc_sbuf_finish(&e, &out), TC_OK);
    assert_string_equal(out, "");
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_depth_bound),
        cmocka_unit_test(test_truncations_never_crash),
        cmocka_unit_test(test_value_count_bound),
        cmocka_unit_test(test_duplicate_keys_kept),
        cmocka_unit_test(test_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
