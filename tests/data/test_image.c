/* image decoding: exact agreement with PIL's Image.open(p).convert('RGB') on
 * the fixtures (gray, CMYK, RGBA, LA, palette, 16-bit PNG), DCT-domain
 * scaling choices, PNG/JPEG encoders, and clean errors on corrupt input:
 * a JPEG without a frame header, decompression bombs refused from the
 * header by the pixel limit, and `tinyclip embed` naming an image that is
 * a FIFO, a directory, headerless or over the limit, without hanging. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

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

/* FF D8 FF D9: a start and an end of image, nothing between. libjpeg-turbo
 * 2.1 reports success for its header without setting the sizes */
static const uint8_t soi_eoi[] = {0xFF, 0xD8, 0xFF, 0xD9};

static void test_no_frame_header(void **state) {
    (void)state;
    tc_image img = {7, 7, NULL};
    assert_int_equal(tc_image_decode(NULL, soi_eoi, 4, "t.jpg", 0, &img), TC_ERR_FORMAT);
    printf("decode: %s\n", tc_last_error());
    assert_non_null(strstr(tc_last_error(), "t.jpg: corrupt JPEG: no frame header"));
    assert_null(img.px);
    tc_image_decoder *d;
    assert_int_equal(tc_image_decoder_create(&d), TC_OK);
    int w = 5, h = 5;
    assert_int_equal(tc_image_probe(d, soi_eoi, 4, "t.jpg", &w, &h), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "no frame header"));
    assert_int_equal(w, 0);
    assert_int_equal(h, 0);
    /* the same handle decodes a good JPEG afterwards */
    size_t n;
    uint8_t *jpg = fixture_bytes("chelsea_451x300.jpg", &n);
    assert_int_equal(tc_image_decode(d, jpg, n, "good", 0, &img), TC_OK);
    assert_int_equal(img.w, 451);
    tc_image_free(&img);
    free(jpg);
    tc_image_decoder_destroy(d);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

/* a PNG whose signature and IHDR (w x h, 8-bit RGB) are valid, followed by
 * a tiny IDAT that could never hold those pixels: only a decoder that reads
 * the header first can refuse it without allocating w*h*3 bytes */
static uint8_t *png_bomb(uint32_t w, uint32_t h, size_t *n) {
    static const uint8_t idat[] = {0x78, 0x9C, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01};
    uint8_t *p = calloc(1, 8 + 25 + 12 + sizeof idat + 12);
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    size_t at = 8;
    uint8_t *chunks[3] = {NULL, NULL, NULL};
    const char *types[3] = {"IHDR", "IDAT", "IEND"};
    uint32_t lens[3] = {13, sizeof idat, 0};
    for (int c = 0; c < 3; c++) {
        put_be32(p + at, lens[c]);
        memcpy(p + at + 4, types[c], 4);
        chunks[c] = p + at + 8;
        if (c == 0) {
            put_be32(chunks[0], w);
            put_be32(chunks[0] + 4, h);
            chunks[0][8] = 8; /* bit depth */
            chunks[0][9] = 2; /* RGB */
        } else if (c == 1) {
            memcpy(chunks[1], idat, sizeof idat);
        }
        put_be32(p + at + 8 + lens[c], (uint32_t)crc32(0, p + at + 4, 4 + lens[c]));
        at += 12 + lens[c];
    }
    *n = at;
    return p;
}

static void test_pixel_limit(void **state) {
    (void)state;
    /* 13000 x 13000 = 169 Mpx: under the old hard bound, over Pillow's limit */
    size_t n;
    uint8_t *bomb = png_bomb(13000, 13000, &n);
    tc_image img = {0, 0, NULL};
    assert_int_equal(tc_image_decode(NULL, bomb, n, "bomb.png", 0, &img), TC_ERR_DATA);
    printf("decode: %s\n", tc_last_error());
    assert_non_null(strstr(tc_last_error(),
                           "bomb.png: image of 13000x13000 = 169000000 pixels is over the "
                           "limit of 89478485"));
    int w, h;
    assert_int_equal(tc_image_probe(NULL, bomb, n, "bomb.png", &w, &h), TC_ERR_DATA);
    /* a JPEG frame header of 10000 x 10000 */
    uint8_t big[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x27, 0x10, 0x27, 0x10,
                     0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, /* SOF0 */
                     0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11,
                     0x00, 0x3F, 0x00, /* SOS: the header ends here */
                     0xFF, 0xD9};
    tc_status bst = tc_image_decode(NULL, big, sizeof big, "big.jpg", 0, &img);
    printf("decode: %s\n", tc_last_error());
    assert_int_equal(bst, TC_ERR_DATA);
    assert_non_null(strstr(tc_last_error(), "100000000 pixels is over the limit of 89478485"));
    /* the limit is the decoder's: 192 pixels pass a limit of 192, not of 191 */
    uint8_t px[16 * 12 * 3] = {0};
    uint8_t *png;
    size_t pn;
    assert_int_equal(tc_png_encode(px, 16, 12, 3, &png, &pn), TC_OK);
    tc_image_decoder *d;
    assert_int_equal(tc_image_decoder_create(&d), TC_OK);
    tc_image_decoder_set_max_pixels(d, 192);
    assert_int_equal(tc_image_decode(d, png, pn, "small", 0, &img), TC_OK);
    tc_image_free(&img);
    tc_image_decoder_set_max_pixels(d, 191);
    assert_int_equal(tc_image_decode(d, png, pn, "small", 0, &img), TC_ERR_DATA);
    assert_non_null(strstr(tc_last_error(), "over the limit of 191"));
    tc_image_decoder_destroy(d);
    free(png);
    free(bomb);
}

/* `tinyclip embed` on bad image files: a clear message naming the file and
 * a non-zero exit, within seconds (a FIFO must not be waited on) */
static void test_cli_embed_bad_images(void **state) {
    (void)state;
    char model[1024], cfg[1024];
    tc_fixture("parity/tiny_gelu_model.safetensors", model, sizeof model);
    tc_fixture("parity/tiny_gelu.json", cfg, sizeof cfg);
    if (!tc_file_exists(model)) tc_skip_test("missing fixture %s", model);
    char *dir = tc_make_tempdir("embed-img");
    char p[4][1200], cmd[8192];
    const char *names[4] = {"t.jpg", "bomb.png", "fifo.png", "folder.png"};
    for (int i = 0; i < 4; i++)
        snprintf(p[i], sizeof p[i], "%s/%s", dir, names[i]);
    size_t n;
    uint8_t *bomb = png_bomb(13000, 13000, &n);
    assert_int_equal(tc_write_file(p[0], soi_eoi, sizeof soi_eoi), 0);
    assert_int_equal(tc_write_file(p[1], bomb, n), 0);
    assert_int_equal(mkfifo(p[2], 0600), 0);
    assert_int_equal(mkdir(p[3], 0700), 0);
    free(bomb);
    const char *expect[4] = {"t.jpg: corrupt JPEG: no frame header",
                             "bomb.png: image of 13000x13000 = 169000000 pixels is over the limit",
                             "fifo.png: is not a regular file (a FIFO)",
                             "folder.png: is a directory"};
    const char *bin = getenv("TINYCLIP_BIN");
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd,
                 "timeout 60 '%s' embed '%s' --model '%s' --images '%s' --out '%s/x.safetensors' "
                 "2>&1",
                 bin ? bin : TC_BINARY_DIR "/tinyclip", model, cfg, p[i], dir);
        char *out = NULL;
        int rc = tc_run_capture(cmd, &out);
        printf("embed %s: exit %d: %s", names[i], rc, out);
        assert_true(rc != 0 && rc != 124); /* failed by itself, not killed by the timeout */
        if (!strstr(out, expect[i])) fail_msg("embed %s does not say '%s'", names[i], expect[i]);
        free(out);
    }
    /* --max-pixels: a 16x12 PNG is refused under a limit of 100, taken without one */
    uint8_t px[16 * 12 * 3] = {0};
    uint8_t *png;
    size_t pn;
    assert_int_equal(tc_png_encode(px, 16, 12, 3, &png, &pn), TC_OK);
    snprintf(p[0], sizeof p[0], "%s/small.png", dir);
    assert_int_equal(tc_write_file(p[0], png, pn), 0);
    free(png);
    for (int lim = 0; lim < 2; lim++) {
        snprintf(cmd, sizeof cmd,
                 "timeout 60 '%s' embed '%s' --model '%s' --images '%s' --out '%s/x.safetensors' "
                 "%s 2>&1",
                 bin ? bin : TC_BINARY_DIR "/tinyclip", model, cfg, p[0], dir,
                 lim ? "--max-pixels 100" : "");
        char *out = NULL;
        int rc = tc_run_capture(cmd, &out);
        printf("embed small.png%s: exit %d: %s", lim ? " --max-pixels 100" : "", rc, out);
        if (lim) {
            assert_int_not_equal(rc, 0);
            assert_non_null(
                strstr(out, "small.png: image of 16x12 = 192 pixels is over the limit of 100"));
        } else {
            assert_int_equal(rc, 0);
        }
        free(out);
    }
    tc_rmtree(dir);
    free(dir);
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
        cmocka_unit_test(test_decode_matches_pil),  cmocka_unit_test(test_dct_scaling),
        cmocka_unit_test(test_corrupt_images),      cmocka_unit_test(test_no_frame_header),
        cmocka_unit_test(test_pixel_limit),         cmocka_unit_test(test_cli_embed_bad_images),
        cmocka_unit_test(test_encoders_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
