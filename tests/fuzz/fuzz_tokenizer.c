/* fuzz target: arbitrary bytes through the caption cleaner and the tokenizer
 * at a few context lengths. valid UTF-8 must tokenize; invalid UTF-8 must be
 * refused with TC_ERR_ARG; the ids must be well-formed either way. the
 * vocabulary comes from $TINYCLIP_VOCAB or the scripts/setup copy; without
 * it only the cleaner is exercised. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_clean.h"
#include "tokenizer.h"

static tc_tokenizer *tok;
static int tried;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tried) {
        tried = 1;
        if (tc_tokenizer_create(&tok, NULL) != TC_OK) {
            fprintf(stderr, "fuzz_tokenizer: %s: cleaning only\n", tc_last_error());
            tok = NULL;
        }
    }
    if (size > 1 << 16) return 0;
    /* a copy without slack, so reads past the end are caught */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    int valid = tc_utf8_valid_prefix(text, size) == size;

    char *out = NULL;
    size_t out_len = 0;
    tc_status st = tc_text_clean_lower(text, size, &out, &out_len);
    if ((st == TC_OK) != valid && st != TC_ERR_OOM) abort();
    if (st == TC_OK) {
        if (strlen(out) > out_len) abort();
        free(out);
    }
    if (tc_text_html_unescape(text, size, &out, &out_len) == TC_OK) free(out);

    if (tok) {
        static const int contexts[] = {1, 2, 5, 77};
        int32_t ids[77];
        for (size_t k = 0; k < sizeof contexts / sizeof contexts[0]; k++) {
            int context = contexts[k], n = -1;
            st = tc_tokenize(tok, text, size, ids, context, &n);
            if (st != TC_OK) {
                if (valid && st != TC_ERR_OOM) abort();
                continue;
            }
            if (n < 1 || n > context || ids[n - 1] != TC_EOT) abort();
            if (context > 1 && ids[0] != TC_SOT) abort();
            for (int i = 0; i < context; i++)
                if (ids[i] < 0 || ids[i] >= TC_VOCAB_SIZE || (i >= n && ids[i] != 0)) abort();
        }
    }
    free(text);
    return 0;
}
