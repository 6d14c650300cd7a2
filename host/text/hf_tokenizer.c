#include "hf_tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_vocab.h"
#include "fileio.h"
#include "json.h"

static tc_status write_text(const char *dir, const char *name, const char *text) {
    return tc_write_file_atomic_in(dir, name, text, strlen(text));
}

/* a code point below U+0800 as UTF-8 (the byte table's range) */
static void put_cp(tc_sbuf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    }
    tc_sbuf_append(b, u, n);
}

tc_status tc_hf_tokenizer_write(const char *dir, const char *vocab_path, int context_length) {
    const char *vpath = vocab_path ? vocab_path : tc_bpe_vocab_default_path();
    char *text;
    size_t len = 0;
    TC_TRY(tc_bpe_vocab_read(vpath, &text, &len));
    /* lines 1..TC_BPE_MERGES are the merges used (line 0 is a header) */
    const char **lines = malloc(TC_BPE_MERGES * sizeof *lines);
    size_t *lens = malloc(TC_BPE_MERGES * sizeof *lens);
    if (!lines || !lens) {
        free(lines);
        free(lens);
        free(text);
        return tc_fail(TC_ERR_OOM, "out of memory");
    }
    const char *p = text, *end = text + len;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    int got = 0;
    if (nl) {
        p = nl + 1;
        while (got < TC_BPE_MERGES && p < end) {
            nl = memchr(p, '\n', (size_t)(end - p));
            const char *e = nl ? nl : end;
            const char *sp = memchr(p, ' ', (size_t)(e - p));
            if (!sp || sp == p || sp + 1 >= e || memchr(sp + 1, ' ', (size_t)(e - sp - 1))) break;
            lines[got] = p;
            lens[got] = (size_t)(e - p);
            got++;
            p = nl ? nl + 1 : end;
        }
    }
    if (got != TC_BPE_MERGES) {
        free(lines);
        free(lens);
        free(text);
        return tc_fail(TC_ERR_FORMAT, "%s: expected at least %d merge lines after the header",
                       vpath, TC_BPE_MERGES);
    }
    tc_sbuf merges = {0}, vocab = {0};
    tc_sbuf_puts(&merges, "#version: 0.2\n");
    uint32_t cp[256];
    int order[256];
    tc_bpe_byte_table(order, cp);
    tc_sbuf_puts(&vocab, "{");
    int id = 0;
    for (int suffix = 0; suffix < 2; suffix++)
        for (int i = 0; i < 256; i++) {
            tc_sbuf tok = {0};
            put_cp(&tok, cp[order[i]]);
            if (suffix) tc_sbuf_puts(&tok, "</w>");
            tc_sbuf_puts(&vocab, id ? ",\n" : "\n");
            tc_sbuf_json_string(&vocab, tok.data ? tok.data : "", tok.len);
            tc_sbuf_printf(&vocab, ": %d", id++);
            if (tok.oom) vocab.oom = 1;
            tc_sbuf_free(&tok);
        }
    for (int i = 0; i < TC_BPE_MERGES; i++) {
        tc_sbuf_append(&merges, lines[i], lens[i]);
        tc_sbuf_puts(&merges, "\n");
        const char *sp = memchr(lines[i], ' ', lens[i]);
        size_t a = (size_t)(sp - lines[i]);
        tc_sbuf tok = {0};
        tc_sbuf_append(&tok, lines[i], a);
        tc_sbuf_append(&tok, sp + 1, lens[i] - a - 1);
        tc_sbuf_puts(&vocab, ",\n");
        tc_sbuf_json_string(&vocab, tok.data ? tok.data : "", tok.len);
        tc_sbuf_printf(&vocab, ": %d", id++);
        if (tok.oom) vocab.oom = 1;
        tc_sbuf_free(&tok);
    }
    tc_sbuf_printf(&vocab, ",\n\"<|startoftext|>\": %d,\n\"<|endoftext|>\": %d\n}\n", id, id + 1);
    free(lines);
    free(lens);
    free(text);
    char *vj = NULL, *mt = NULL;
    tc_status s = tc_sbuf_finish(&vocab, &vj);
    if (s == TC_OK)
        s = tc_sbuf_finish(&merges, &mt);
    else
        tc_sbuf_free(&merges);
    if (s == TC_OK) s = write_text(dir, "vocab.json", vj);
    if (s == TC_OK) s = write_text(dir, "merges.txt", mt);
    free(vj);
    free(mt);
    TC_TRY(s);
    static const char *const specials =
        "  \"bos_token\": \"<|startoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
        "  \"pad_token\": \"<|endoftext|>\",\n  \"unk_token\": \"<|endoftext|>\"";
    char buf[1024];
    snprintf(buf, sizeof buf, "{\n%s\n}\n", specials);
    TC_TRY(write_text(dir, "special_tokens_map.json", buf));
    snprintf(buf, sizeof buf,
             "{\n%s,\n  \"tokenizer_class\": \"CLIPTokenizer\",\n  \"model_max_length\": %d,\n"
             "  \"do_lower_case\": true,\n  \"errors\": \"replace\",\n"
             "  \"add_prefix_space\": false,\n  \"clean_up_tokenization_spaces\": false\n}\n",
             specials, context_length);
    return write_text(dir, "tokenizer_config.json", buf);
}
