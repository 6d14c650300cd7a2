/* TensorBoard event files: CRC32C against the standard test vectors, the
 * TFRecord masking, events written then parsed back (file_version first,
 * tags, steps, values bit for bit), and corrupt files rejected by offset. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb_events.h"
#include "testutil.h"

static void test_crc32c_vectors(void **state) {
    /* RFC 3720 B.4 / the usual check value */
    assert_int_equal(tc_crc32c("123456789", 9), 0xE3069283u);
    assert_int_equal(tc_crc32c("", 0), 0x00000000u);
    uint8_t zeros[32], ones[32], inc[32];
    for (int i = 0; i < 32; i++) {
        zeros[i] = 0;
        ones[i] = 0xFF;
        inc[i] = (uint8_t)i;
    }
    assert_int_equal(tc_crc32c(zeros, 32), 0x8A9136AAu);
    assert_int_equal(tc_crc32c(ones, 32), 0x62A8AB43u);
    assert_int_equal(tc_crc32c(inc, 32), 0x46DD794Eu);
    /* mask: rotate right by 15, add 0xa282ead8 */
    uint32_t c = 0xE3069283u;
    assert_int_equal(tc_crc32c_mask(c), (uint32_t)(((c >> 15) | (c << 17)) + 0xa282ead8u));
    assert_int_equal(tc_crc32c_mask(0), 0xa282ead8u);
}

typedef struct {
    tc_tb_event ev[16];
    int n;
} collected;

static int collect(void *user, const tc_tb_event *ev) {
    collected *c = user;
    if (c->n < 16) c->ev[c->n++] = *ev;
    return 0;
}

static char *write_sample(char **dir_out, size_t *len) {
    char *dir = tc_make_tempdir("tb");
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/runs/stage1", dir);
    tc_tb_writer *w;
    assert_int_equal(tc_tb_open(&w, sub), TC_OK);
    assert_non_null(strstr(tc_tb_path(w), "/events.out.tfevents."));
    assert_int_equal(tc_tb_scalar_at(w, "train/loss", 0, 2.5f, 1000.25), TC_OK);
    assert_int_equal(tc_tb_scalar_at(w, "train/loss", 10, 1.125f, 1001.5), TC_OK);
    assert_int_equal(tc_tb_scalar_at(w, "eval/zero_shot_top1", 1234567890123ll, 0.8125f, 1002.0),
                     TC_OK);
    assert_int_equal(tc_tb_scalar(w, "nan", 11, NAN), TC_OK);
    assert_int_equal(tc_tb_scalar(w, "", 11, 1.0f), TC_ERR_ARG);
    char path[1100];
    snprintf(path, sizeof path, "%s", tc_tb_path(w));
    assert_int_equal(tc_tb_close(w), TC_OK);
    char *data = tc_read_file(path, len);
    assert_non_null(data);
    *dir_out = dir;
    return data;
}

static void test_write_parse(void **state) {
    char *dir;
    size_t len;
    char *data = write_sample(&dir, &len);
    collected c = {.n = 0};
    assert_int_equal(tc_tb_parse((const uint8_t *)data, len, collect, &c), TC_OK);
    assert_int_equal(c.n, 5);
    assert_true(c.ev[0].has_file_version);
    assert_string_equal(c.ev[0].file_version, "brain.Event:2");
    assert_true(c.ev[0].wall_time > 1.5e9); /* now */
    assert_false(c.ev[0].has_scalar);
    assert_true(c.ev[1].has_scalar);
    assert_string_equal(c.ev[1].tag, "train/loss");
    assert_int_equal(c.ev[1].step, 0);
    assert_true(c.ev[1].value == 2.5f);
    assert_true(c.ev[1].wall_time == 1000.25);
    assert_int_equal(c.ev[2].step, 10);
    assert_true(c.ev[2].value == 1.125f);
    assert_string_equal(c.ev[3].tag, "eval/zero_shot_top1");
    assert_int_equal(c.ev[3].step, 1234567890123ll);
    assert_true(c.ev[3].value == 0.8125f);
    assert_true(isnan(c.ev[4].value));

    /* the bytes of the first scalar record, by hand: Event{1: 1000.25 (fixed64),
     * 2: 0 (varint), 5: Summary{1: Value{1: "train/loss", 2: 2.5f}}} */
    const uint8_t *rec = (const uint8_t *)data;
    uint64_t n0 = 0;
    for (int i = 0; i < 8; i++)
        n0 |= (uint64_t)rec[i] << (8 * i);
    const uint8_t *r1 = rec + 12 + n0 + 4;
    uint64_t n1 = 0;
    for (int i = 0; i < 8; i++)
        n1 |= (uint64_t)r1[i] << (8 * i);
    static const uint8_t expect[] = {
        0x09, 0,    0,    0,    0,    0,    0x42, 0x8f, 0x40, /* 1000.25 */
        0x10, 0x00,                                           /* step 0 */
        0x2a, 0x13, 0x0a, 0x11,                               /* summary (19 bytes), value (17) */
        0x0a, 0x0a, 't',  'r',  'a',  'i',  'n',  '/',  'l',
        'o',  's',  's',  0x15, 0x00, 0x00, 0x20, 0x40}; /* 2.5f */
    assert_int_equal(n1, sizeof expect);
    assert_memory_equal(r1 + 12, expect, sizeof expect);
    free(data);
    tc_rmtree(dir);
    free(dir);
}

static void test_corrupt(void **state) {
    char *dir;
    size_t len;
    char *data = write_sample(&dir, &len);
    collected c;
    /* a flipped payload byte: the data CRC of the second record fails */
    uint64_t n0 = 0;
    for (int i = 0; i < 8; i++)
        n0 |= (uint64_t)(uint8_t)data[i] << (8 * i);
    size_t second = 12 + n0 + 4;
    data[second + 14] ^= 0x40;
    c.n = 0;
    assert_int_equal(tc_tb_parse((const uint8_t *)data, len, collect, &c), TC_ERR_FORMAT);
    char want[64];
    snprintf(want, sizeof want, "bad data CRC in the record at byte %zu", second);
    assert_non_null(strstr(tc_last_error(), want));
    assert_int_equal(c.n, 1);
    data[second + 14] ^= 0x40;
    /* a flipped length byte */
    data[second] ^= 1;
    assert_int_equal(tc_tb_parse((const uint8_t *)data, len, collect, &c), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), "bad length CRC"));
    data[second] ^= 1;
    /* truncation at every length: never a crash, an error unless on a record boundary */
    for (size_t cut = 0; cut < len; cut++) {
        c.n = 0;
        tc_status s = tc_tb_parse((const uint8_t *)data, cut, collect, &c);
        if (cut == 0 || cut == second)
            assert_int_equal(s, TC_OK);
        else if (cut < second)
            assert_int_equal(s, TC_ERR_FORMAT);
    }
    assert_int_equal(tc_tb_parse((const uint8_t *)data, len, NULL, NULL), TC_OK);
    free(data);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_write_parse),
        cmocka_unit_test(test_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
