/* transform parity with open_clip (PIL + torchvision): the fixtures written by
 * scripts/fixtures_images.py hold the eval transform's uint8 output (before
 * ToTensor) for sizes 224 and 97, and resized crops with fixed boxes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_decode.h"
#include "image_transform.h"
#include "testutil.h"

static int load_image(const char *name, tc_image *img) {
    char p[1024], rel[512];
    snprintf(rel, sizeof rel, "images/%s", name);
    size_t n = 0;
    uint8_t *data = (uint8_t *)tc_read_file(tc_fixture(rel, p, sizeof p), &n);
    if (!data) return -1;
    tc_status st = tc_image_decode(NULL, data, n, name, 0, img);
    free(data);
    if (st != TC_OK) fail_msg("%s: %s", name, tc_last_error());
    return 0;
}

static uint8_t *load_expected(const char *name, size_t want) {
    char p[1024], rel[512];
    snprintf(rel, sizeof rel, "images/%s", name);
    size_t n = 0;
    uint8_t *d = (uint8_t *)tc_read_file(tc_fixture(rel, p, sizeof p), &n);
    if (!d) fail_msg("missing fixture %s", name);
    if (n != want) fail_msg("%s: %zu bytes, expected %zu", name, n, want);
    return d;
}

static void test_parity(void **state) {
    (void)state;
    char p[1024];
    FILE *f = fopen(tc_fixture("images/manifest.txt", p, sizeof p), "r");
    if (!f) tc_skip_test("no transform fixtures (run scripts/fixtures_images.py)");
    char line[1024];
    int cases = 0, exact = 0, worst = 0;
    while (fgets(line, sizeof line, f)) {
        char kind[16], img_name[256], out_name[256];
        int S, t, l, h, w;
        if (line[0] == '#') continue;
        if (sscanf(line, "%15s", kind) != 1) continue;
        tc_image img;
        uint8_t *got = NULL, *want = NULL;
        if (strcmp(kind, "eval") == 0) {
            assert_int_equal(sscanf(line, "%*s %255s %d %255s", img_name, &S, out_name), 3);
            assert_int_equal(load_image(img_name, &img), 0);
            got = malloc((size_t)S * S * 3);
            assert_int_equal(tc_eval_resize_crop_u8(&img, S, got), TC_OK);
        } else if (strcmp(kind, "crop") == 0) {
            assert_int_equal(sscanf(line, "%*s %255s %d %d %d %d %d %255s", img_name, &t, &l, &h,
                                    &w, &S, out_name),
                             7);
            assert_int_equal(load_image(img_name, &img), 0);
            got = malloc((size_t)S * S * 3);
            tc_crop c = {t, l, h, w};
            assert_int_equal(tc_resized_crop_u8(&img, c, S, S, got), TC_OK);
        } else {
            continue;
        }
        want = load_expected(out_name, (size_t)S * S * 3);
        int maxd = 0;
        for (size_t i = 0; i < (size_t)S * S * 3; i++) {
            int d = abs((int)got[i] - (int)want[i]);
            if (d > maxd) maxd = d;
        }
        printf("%-44s max |diff| = %d/255\n", out_name, maxd);
        if (maxd > worst) worst = maxd;
        if (maxd == 0) exact++;
        cases++;
        assert_true(maxd <= 2);
        free(got);
        free(want);
        tc_image_free(&img);
    }
    fclose(f);
    printf("transform parity: %d cases, %d bit-exact, worst %d/255\n", cases, exact, worst);
    assert_true(cases >= 20);
}

static void test_normalize(void **state) {
    (void)state;
    tc_transform_cfg cfg = tc_transform_default(2, 0);
    uint8_t px[12] = {0, 128, 255, 1, 2, 3, 250, 100, 7, 64, 32, 16};
    float out[12];
    uint16_t ob[12];
    tc_normalize_planar(&cfg, px, 2, 2, out);
    tc_normalize_planar_bf16(&cfg, px, 2, 2, ob);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 3; c++) {
            float want = ((float)px[3 * i + c] / 255.0f - cfg.mean[c]) / cfg.std[c];
            assert_true(fabsf(out[c * 4 + i] - want) < 1e-6f);
            uint32_t u = (uint32_t)ob[c * 4 + i] << 16;
            float b;
            memcpy(&b, &u, 4);
            assert_true(fabsf(b - want) <= fabsf(want) * (1.0f / 256) + 1e-7f);
        }
    /* first value: (0 - 0.48145466) / 0.26862954 */
    assert_true(fabsf(out[0] + 1.7922626f) < 1e-5f);
    assert_int_equal(tc_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(tc_f32_to_bf16(1.00390625f), 0x3F80); /* tie to even */
    assert_int_equal(tc_f32_to_bf16(1.01171875f), 0x3F82); /* tie to even, up */
}

static void test_shortest_dims_and_identity(void **state) {
    (void)state;
    int rw, rh;
    tc_resize_shortest_dims(500, 375, 224, &rw, &rh);
    assert_int_equal(rw, 298); /* int(224*500/375) = int(298.67) */
    assert_int_equal(rh, 224);
    tc_resize_shortest_dims(301, 403, 97, &rw, &rh);
    assert_int_equal(rw, 97);
    assert_int_equal(rh, 129);
    /* 28x28 at S=28 is a copy (the Fashion-MNIST demo path) */
    uint8_t src[28 * 28 * 3], dst[28 * 28 * 3];
    for (int i = 0; i < 28 * 28 * 3; i++)
        src[i] = (uint8_t)(i * 7);
    tc_image img = {28, 28, src};
    assert_int_equal(tc_eval_resize_crop_u8(&img, 28, dst), TC_OK);
    assert_memory_equal(src, dst, sizeof src);
}

static void test_rrc_params(void **state) {
    (void)state;
    int fallback = 0;
    for (int trial = 0; trial < 2000; trial++) {
        tc_rng r = tc_rng_for(42, 1, 0, (uint64_t)trial);
        int w = 20 + trial % 600, h = 20 + (trial * 7) % 500;
        tc_crop c = tc_rrc_params(w, h, 0.9, 1.0, 3.0 / 4, 4.0 / 3, &r);
        assert_true(c.width > 0 && c.height > 0);
        assert_true(c.left >= 0 && c.top >= 0 && c.left + c.width <= w && c.top + c.height <= h);
        double area = (double)c.width * c.height / ((double)w * h);
        double ratio = (double)c.width / c.height;
        int in_range = area >= 0.88 && area <= 1.02 && ratio > 0.74 && ratio < 1.36;
        if (!in_range) fallback++;
        /* same seed, same crop */
        tc_rng r2 = tc_rng_for(42, 1, 0, (uint64_t)trial);
        tc_crop c2 = tc_rrc_params(w, h, 0.9, 1.0, 3.0 / 4, 4.0 / 3, &r2);
        assert_memory_equal(&c, &c2, sizeof c);
    }
    /* very wide image: every try fails, central-crop fallback with ratio 4/3 */
    tc_rng r = tc_rng_for(1, 0, 0, 0);
    tc_crop c = tc_rrc_params(1000, 100, 0.9, 1.0, 3.0 / 4, 4.0 / 3, &r);
    assert_int_equal(c.height, 100);
    assert_int_equal(c.width, 133);
    assert_int_equal(c.left, (1000 - 133) / 2);
    printf("rrc: %d of 2000 crops outside [0.88,1.02] area x [0.74,1.36] ratio (images of extreme "
           "aspect)\n",
           fallback);
}

static void test_apply_train_deterministic(void **state) {
    (void)state;
    tc_image img;
    if (load_image("coffee_500x375.jpg", &img) != 0) tc_skip_test("no image fixtures");
    tc_transform_cfg cfg = tc_transform_default(64, 1);
    float *a = malloc(3 * 64 * 64 * sizeof(float)), *b = malloc(3 * 64 * 64 * sizeof(float));
    tc_rng r1 = tc_rng_for(7, 2, 0, 11), r2 = tc_rng_for(7, 2, 0, 11), r3 = tc_rng_for(7, 2, 0, 12);
    assert_int_equal(tc_transform_apply(&cfg, &img, &r1, NULL, a, NULL), TC_OK);
    assert_int_equal(tc_transform_apply(&cfg, &img, &r2, NULL, b, NULL), TC_OK);
    assert_memory_equal(a, b, 3 * 64 * 64 * sizeof(float));
    assert_int_equal(tc_transform_apply(&cfg, &img, &r3, NULL, b, NULL), TC_OK);
    assert_true(memcmp(a, b, 3 * 64 * 64 * sizeof(float)) != 0);
    free(a);
    free(b);
    tc_image_free(&img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_shortest_dims_and_identity),
        cmocka_unit_test(test_rrc_params),
        cmocka_unit_test(test_apply_train_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
