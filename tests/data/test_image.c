/* image decoding: exact agreement with PIL's Image.open(p).convert('RGB') on
 * the fixtures (gray, CMYK, RGBA, LA, palette, 16-bit PNG), DCT-domain
 * scaling choices, PNG/JPEG encoders, and clean errors on corrupt input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_decode.h"
#include "testutil.h"

static uint8_t *fixture_bytes(const char *name, size_t *n) {
    char p[1024], rel[512];
    snprintf(rel, sizeof rel, "images/%s", name);
    uint8_t *d = (uint8_t *)tc_read_file(tc_fixture(rel, p, sizeof p), n);
    if (!d) tc_skip_test("missing fixture %s (run scripts/fixtures_images.py)", name);
    return d;
}

static void test_decode_matches_pil(void **state) {
    (void)state;
    char p[1024];
    FILE *f = fopen(tc_fixture("images/manifest.txt", p, sizeof p), "r");
    if (!f) tc_skip_test("no image fixtures");
    char line[1024];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char img_name[256], ref_name[256];
        int w, h;
        if (sscanf(line, "decode %255s %d %d %255s", img_name, &w, &h, ref_name) != 4) continue;
        size_t n = 0, rn = 0;
        uint8_t *data = fixture_bytes(img_name, &n);
        uint8_t *ref = fixture_bytes(ref_name, &rn);
        tc_image img;
        assert_int_equal(tc_image_decode(NULL, data, n, img_name, 0, &img), TC_OK);
        assert_int_equal(img.w, w);
        assert_int_equal(img.h, h);
        assert_int_equal(rn, (size_t)w * h * 3);
        int maxd = 0;
        for (size_t i = 0; i < rn; i++) {
            int d = abs((int)img.px[i] - (int)ref[i]);
            if (d > maxd) maxd = d;
        }
        printf("%-32s decode max |diff| vs PIL = %d\n", img_name, maxd);
        assert_int_equal(maxd, 0);
        int pw, ph;
        assert_int_equal(tc_image_probe(NULL, data, n, img_name, &pw, &ph), TC_OK);
        assert_int_equal(pw, w);
        assert_int_equal(ph, h);
        tc_image_free(&img);
        free(data);
        free(ref);
        cases++;
    }
    fclose(f);
    assert_true(cases >= 6);
}

static void test_dct_scaling(void **state) {
    (void)state;
    size_t n;
    uint8_t *data = fixture_bytes("coffee_500x375.jpg", &n);
    tc_image_decoder *dec;
    assert_int_equal(tc_image_decoder_create(&dec), TC_OK);
    struct {
        int min_side, w, h;
    } cases[] = {
        {0, 500, 375},   /* full decode */
        {224, 313, 235}, /* 5/8: 235 >= 224, 1/2 would give 188 */
        {274, 375, 282}, /* 3/4 */
        {100, 188, 141}, /* 3/8 */
        {40, 63, 47},    /* 1/8 */
        {400, 500, 375}, /* no scale can keep 400: full size */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_image img;
        assert_int_equal(tc_image_decode(dec, data, n, "coffee", cases[i].min_side, &img), TC_OK);
        assert_int_equal(img.w, cases[i].w);
        assert_int_equal(img.h, cases[i].h);
        tc_image_free(&img);
    }
    /* PNG ignores min_side */
    size_t pn;
    uint8_t *png = fixture_bytes("astronaut_rgb_255x199.png", &pn);
    tc_image img;
    assert_int_equal(tc_image_decode(dec, png, pn, "png", 50, &img), TC_OK);
    assert_int_equal(img.w, 255);
    tc_image_free(&img);
    free(png);
    tc_image_decoder_destroy(dec);
    free(data);
}

static void expect_fail(const uint8_t *d, size_t n, const char *name, tc_status want) {
    tc_image img = {1, 1, NULL};
    tc_status st = tc_image_decode(NULL, d, n, name, 0, &img);
    assert_int_equal(st, want);
    assert_null(img.px);
    assert_non_null(strstr(tc_last_error(), name));
}

static void test_corrupt_images(void **state) {
    (void)state;
    size_t n, pn;
    uint8_t *jpg = fixture_bytes("chelsea_451x300.jpg", &n);
    uint8_t *png = fixture_bytes("chelsea_rgba_173x131.png", &pn);
    expect_fail(jpg, n / 2, "shard.tar: sample trunc-jpg", TC_ERR_FORMAT);
    expect_fail(jpg, 200, "sample header-only", TC_ERR_FORMAT);
    expect_fail(png, pn / 2, "sample trunc-png", TC_ERR_FORMAT);
    expect_fail(png, 30, "sample png-header", TC_ERR_FORMAT);
    expect_fail((const uint8_t *)"hello world", 11, "sample text", TC_ERR_FORMAT);
    expect_fail(NULL, 0, "sample empty", TC_ERR_FORMAT);
    expect_fail((const uint8_t *)"RIFF\0\0\0\0WEBPVP8 ", 16, "sample webp", TC_ERR_UNSUPPORTED);
    /* flipped bytes inside the entropy-coded data and the PNG IDAT: an error
     * or a picture, never a crash */
    uint64_t rs = 5;
    for (int t = 0; t < 200; t++) {
        uint8_t *j2 = malloc(n), *p2 = malloc(pn);
        memcpy(j2, jpg, n);
        memcpy(p2, png, pn);
        for (int k = 0; k < 4; k++) {
            j2[600 + tc_test_rand(&rs) % (n - 600)] ^= (uint8_t)(1 + tc_test_rand(&rs) % 255);
            p2[8 + tc_test_rand(&rs) % (pn - 8)] ^= (uint8_t)(1 + tc_test_rand(&rs) % 255);
        }
        tc_image a, b;
        if (tc_image_decode(NULL, j2, n, "flipped", 0, &a) == TC_OK) tc_image_free(&a);
        if (tc_image_decode(NULL, p2, pn, "flipped", 0, &b) == TC_OK) tc_image_free(&b);
        free(j2);
        free(p2);
    }
    /* a JPEG header claiming a huge image is refused before allocating */
    uint8_t big[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFF, 0xF0, 0xFF, 0xF0, 0x03,
                     0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9};
    expect_fail(big, sizeof big, "sample huge", TC_ERR_FORMAT);
    free(jpg);
    free(png);
}

static void test_encoders_round_trip(void **state) {
    (void)state;
    uint8_t gray[13 * 7], rgb[13 * 7 * 3];
    for (int i = 0; i < 13 * 7; i++)
        gray[i] = (uint8_t)(i * 5);
    for (int i = 0; i < 13 * 7 * 3; i++)
        rgb[i] = (uint8_t)(i * 7 + 3);
    uint8_t *png;
    size_t len;
    tc_image img;
    assert_int_equal(tc_png_encode(gray, 13, 7, 1, &png, &len), TC_OK);
    assert_int_equal(tc_image_decode(NULL, png, len, "gray png", 0, &img), TC_OK);
    assert_int_equal(img.w, 13);
    assert_int_equal(img.h, 7);
    for (int i = 0; i < 13 * 7; i++) {
        assert_int_equal(img.px[3 * i], gray[i]);
        assert_int_equal(img.px[3 * i + 2], gray[i]);
    }
    tc_image_free(&img);
    free(png);
    assert_int_equal(tc_png_encode(rgb, 13, 7, 3, &png, &len), TC_OK);
    assert_int_equal(tc_image_decode(NULL, png, len, "rgb png", 0, &img), TC_OK);
    assert_memory_equal(img.px, rgb, sizeof rgb);
    tc_image_free(&img);
    free(png);
    assert_int_equal(tc_png_encode(rgb, 0, 7, 3, &png, &len), TC_ERR_ARG);
    /* JPEG: lossy, so only close */
    tc_image_decoder *dec;
    assert_int_equal(tc_image_decoder_create(&dec), TC_OK);
    uint8_t flat[32 * 24 * 3];
    for (int i = 0; i < 32 * 24; i++)
        flat[3 * i] = 200, flat[3 * i + 1] = 120, flat[3 * i + 2] = 40;
    tc_image src = {32, 24, flat};
    uint8_t *jpg;
    assert_int_equal(tc_jpeg_encode(dec, &src, 95, &jpg, &len), TC_OK);
    assert_int_equal(tc_image_sniff(jpg, len), TC_IMG_JPEG);
    assert_int_equal(tc_image_decode(dec, jpg, len, "jpg", 0, &img), TC_OK);
    for (int i = 0; i < 32 * 24 * 3; i++)
        assert_true(abs((int)img.px[i] - (int)flat[i]) <= 3);
    tc_image_free(&img);
    free(jpg);
    tc_image_decoder_destroy(dec);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_matches_pil),
        cmocka_unit_test(test_dct_scaling),
        cmocka_unit_test(test_corrupt_images),
        cmocka_unit_test(test_encoders_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
