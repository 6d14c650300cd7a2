/* the Hugging Face CLIPTokenizer files made from the CLIP BPE vocabulary:
 * their shape (48,894 merges, 49,408 vocabulary entries, the special tokens),
 * and agreement with the tokenizer: every id the tokenizer gives for a set of
 * captions, looked up in vocab.json and decoded through the byte table,
 * spells the caption's words again. a missing or short vocabulary is an
 * error naming the file, with nothing written. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bpe_vocab.h"
#include "fileio.h"
#include "hf_tokenizer.h"
#include "json.h"
#include "tokenizer.h"

static char *dir;

static int setup(void **state) {
    (void)state;
    dir = tc_make_tempdir("hf-tokenizer");
    if (!dir) return -1;
    return tc_hf_tokenizer_write(dir, NULL, 77) == TC_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    if (dir) tc_rmtree(dir);
    free(dir);
    return 0;
}

static char *read_in(const char *name, size_t *len) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *text = tc_read_file(p, len);
    assert_non_null(text);
    return text;
}

static void test_merges(void **state) {
    (void)state;
    size_t len;
    char *text = read_in("merges.txt", &len);
    assert_int_equal(strncmp(text, "#version: 0.2\ni n\nt h\n", 22), 0);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, TC_BPE_MERGES + 1);
    assert_non_null(strstr(text, "\njeky ll</w>\n")); /* the last merge used */
    free(text);
}

static void test_configs(void **state) {
    (void)state;
    const char *names[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 2; i++) {
        size_t len;
        char *text = read_in(names[i], &len);
        tc_json *v;
        assert_int_equal(tc_json_parse(text, len, names[i], &v), TC_OK);
        assert_string_equal(tc_json_get(v, "eos_token")->string, "<|endoftext|>");
        assert_string_equal(tc_json_get(v, "bos_token")->string, "<|startoftext|>");
        if (i == 0) assert_int_equal(tc_json_get(v, "model_max_length")->integer, 77);
        tc_json_free(v);
        free(text);
    }
}

/* one UTF-8 code point below U+0800 at *s; advances *s */
static uint32_t next_cp(const char **s) {
    const unsigned char *u = (const unsigned char *)*s;
    if (u[0] < 0x80) {
        *s += 1;
        return u[0];
    }
    assert_true((u[0] & 0xE0) == 0xC0);
    *s += 2;
    return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
}

static void test_vocab_spells_the_tokens(void **state) {
    (void)state;
    size_t len;
    char *text = read_in("vocab.json", &len);
    tc_json *v;
    assert_int_equal(tc_json_parse(text, len, "vocab.json", &v), TC_OK);
    assert_int_equal(v->count, TC_VOCAB_SIZE);
    assert_int_equal(tc_json_get(v, "!")->integer, 0);
    assert_int_equal(tc_json_get(v, "!</w>")->integer, 256);
    assert_int_equal(tc_json_get(v, "in")->integer, 512);
    assert_int_equal(tc_json_get(v, "\xc4\xa0")->integer, 220); /* byte 32 -> U+0120 */
    assert_int_equal(tc_json_get(v, "<|startoftext|>")->integer, TC_SOT);
    assert_int_equal(tc_json_get(v, "<|endoftext|>")->integer, TC_EOT);
    /* id -> entry, and code point -> byte */
    const char **by_id = calloc(TC_VOCAB_SIZE, sizeof *by_id);
    assert_non_null(by_id);
    for (size_t i = 0; i < v->count; i++) {
        int64_t id = v->items[i].integer;
        assert_true(id >= 0 && id < TC_VOCAB_SIZE && !by_id[id]);
        by_id[id] = v->keys[i];
    }
    int order[256], byte_of[512];
    uint32_t cp[256];
    tc_bpe_byte_table(order, cp);
    for (int b = 0; b < 256; b++) {
        assert_true(cp[b] < 512);
        byte_of[cp[b]] = b;
    }
    tc_tokenizer *tok;
    assert_int_equal(tc_tokenizer_create(&tok, NULL), TC_OK);
    const char *captions[] = {"a photo of a cat", "naïve café über straße", "x86-64 rocks!!",
                              "ТЕКСТ на русском", "emoji \xf0\x9f\x98\x80 ok"};
    for (size_t c = 0; c < sizeof captions / sizeof captions[0]; c++) {
        int32_t ids[77];
        int n;
        assert_int_equal(tc_tokenize(tok, captions[c], strlen(captions[c]), ids, 77, &n), TC_OK);
        assert_int_equal(ids[0], TC_SOT);
        assert_int_equal(ids[n - 1], TC_EOT);
        /* the entries' bytes, "</w>" read as a space, give the cleaned caption */
        char spelled[512] = {0};
        size_t k = 0;
        for (int i = 1; i < n - 1; i++) {
            const char *e = by_id[ids[i]];
            assert_non_null(e);
            while (*e) {
                if (strcmp(e, "</w>") == 0) {
                    spelled[k++] = ' ';
                    break;
                }
                spelled[k++] = (char)byte_of[next_cp(&e)];
                assert_true(k < sizeof spelled - 1);
            }
        }
        if (k && spelled[k - 1] == ' ') spelled[--k] = 0;
        printf("%-28s -> %s\n", captions[c], spelled);
        /* compare with spaces removed and ASCII lower-cased: the split
         * points are the pre-tokenizer's, checked by test_tokenizer */
        char a[512], b[512];
        size_t na = 0, nb = 0;
        for (const char *s = spelled; *s; s++)
            if (*s != ' ') a[na++] = *s;
        for (const char *s = captions[c]; *s; s++)
            if (*s != ' ') b[nb++] = (*s >= 'A' && *s <= 'Z') ? (char)(*s + 32) : *s;
        a[na] = b[nb] = 0;
        if (c == 3) {
            /* Cyrillic lower-cases outside ASCII: compare the lower-case form */
            assert_string_equal(a, "текстнарусском");
        } else {
            assert_string_equal(a, b);
        }
    }
    tc_tokenizer_destroy(tok);
    free(by_id);
    tc_json_free(v);
    free(text);
}

/* a vocabulary with too few merges: an error naming it, and no file made */
static void test_short_vocabulary(void **state) {
    (void)state;
    char *d = tc_make_tempdir("hf-tokenizer-bad");
    assert_non_null(d);
    char vp[1024], out[900];
    snprintf(vp, sizeof vp, "%s/short.txt.gz", d);
    gzFile g = gzopen(vp, "wb");
    assert_non_null(g);
    gzputs(g, "#version: 0.2\ni n\nt h\n");
    gzclose(g);
    snprintf(out, sizeof out, "%s/out", d);
    assert_int_equal(tc_mkdir_p(out), TC_OK);
    assert_int_equal(tc_hf_tokenizer_write(out, vp, 77), TC_ERR_FORMAT);
    assert_non_null(strstr(tc_last_error(), vp));
    snprintf(vp, sizeof vp, "%s/vocab.json", out);
    assert_false(tc_file_exists(vp));
    /* a missing one */
    snprintf(vp, sizeof vp, "%s/missing.txt.gz", d);
    assert_int_equal(tc_hf_tokenizer_write(out, vp, 77), TC_ERR_IO);
    assert_non_null(strstr(tc_last_error(), "missing.txt.gz"));
    tc_rmtree(d);
    free(d);
}

int main(void) {
    if (!tc_file_exists(tc_bpe_vocab_default_path())) {
        printf("SKIP: CLIP vocabulary missing at %s (run scripts/setup)\n",
               tc_bpe_vocab_default_path());
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merges),
        cmocka_unit_test(test_configs),
        cmocka_unit_test(test_vocab_spells_the_tokens),
        cmocka_unit_test(test_short_vocabulary),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
