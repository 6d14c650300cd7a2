/* the environment's kernel choices (host/dist/backend_select.c): each value
 * of TINYCLIP_ATTENTION and TINYCLIP_PATCH_EMBED, the defaults when unset or
 * empty, and an unknown value refused with the variable and the choices named. */
#include <stdlib.h>
#include <string.h>

#include "backend_select.h"
#include "testutil.h"

static tc_backend_options parse_ok(void) {
    tc_backend_options o;
    if (tc_backend_options_from_env(&o) != TC_OK) fail_msg("refused: %s", tc_last_error());
    return o;
}

static void test_attention_values(void **state) {
    (void)state;
    static const struct {
        const char *value;
        tc_attention_kernel kernel;
    } cases[] = {{"fma", TC_ATTENTION_FMA},
                 {"mma", TC_ATTENTION_MMA},
                 {"wgmma", TC_ATTENTION_WGMMA},
                 {"tma", TC_ATTENTION_TMA},
                 {"", TC_ATTENTION_FMA}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        setenv("TINYCLIP_ATTENTION", cases[i].value, 1);
        assert_int_equal(parse_ok().attention, cases[i].kernel);
    }
    unsetenv("TINYCLIP_ATTENTION");
    assert_int_equal(parse_ok().attention, TC_ATTENTION_FMA);
}

static void test_patch_embed_values(void **state) {
    (void)state;
    unsetenv("TINYCLIP_ATTENTION");
    setenv("TINYCLIP_PATCH_EMBED", "cudnn", 1);
    assert_int_equal(parse_ok().patch_embed, TC_PATCH_EMBED_CONV);
    setenv("TINYCLIP_PATCH_EMBED", "gemm", 1);
    assert_int_equal(parse_ok().patch_embed, TC_PATCH_EMBED_GEMM);
    unsetenv("TINYCLIP_PATCH_EMBED");
    assert_int_equal(parse_ok().patch_embed, TC_PATCH_EMBED_GEMM);
}

static void test_unknown_value(void **state) {
    (void)state;
    tc_backend_options o;
    setenv("TINYCLIP_ATTENTION", "wgmma2", 1);
    assert_int_equal(tc_backend_options_from_env(&o), TC_ERR_ARG);
    const char *m = tc_last_error();
    if (!strstr(m, "TINYCLIP_ATTENTION=wgmma2") || !strstr(m, "fma, mma, wgmma, tma"))
        fail_msg("message '%s' lacks the variable or the choices", m);
    unsetenv("TINYCLIP_ATTENTION");
    setenv("TINYCLIP_PATCH_EMBED", "conv", 1);
    assert_int_equal(tc_backend_options_from_env(&o), TC_ERR_ARG);
    if (!strstr(tc_last_error(), "gemm, cudnn")) fail_msg("message '%s'", tc_last_error());
    unsetenv("TINYCLIP_PATCH_EMBED");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_values),
        cmocka_unit_test(test_patch_embed_values),
        cmocka_unit_test(test_unknown_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
