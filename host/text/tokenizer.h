/* open_clip's SimpleTokenizer, id for id: ftfy-style fixes, html unescape
 * (twice), whitespace collapse, NFC, Unicode lower-case, the CLIP
 * pre-tokenizer regex (PCRE2, \p{L} / \p{N}), byte-level BPE over the first
 * 48,894 merges of bpe_simple_vocab_16e6.txt.gz; <start_of_text> 49406,
 * <end_of_text> 49407; truncation keeps a final EOT; zero padding.
 * a tokenizer is safe to use from several threads at once: the vocabulary is
 * read-only after creation and finished words go to a lock-striped cache. */
#ifndef TC_TOKENIZER_H
#define TC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "bpe_vocab.h"
#include "status.h"

#define TC_SOT 49406
#define TC_EOT 49407
#define TC_VOCAB_SIZE 49408

typedef struct tc_tokenizer tc_tokenizer;

/* path NULL: tc_bpe_vocab_default_path() ($TINYCLIP_VOCAB, else the copy
 * fetched by scripts/setup) */
tc_status tc_tokenizer_create(tc_tokenizer **out, const char *vocab_path);
void tc_tokenizer_destroy(tc_tokenizer *t);

/* ids[0..context) = SOT, tokens, EOT, zeros (context >= 1); *n_ids (may be
 * NULL) is the number of ids before the padding (<= context). text must be
 * valid UTF-8 as Python's strict decoder reads it: anything else is
 * TC_ERR_ARG naming the byte offset (the data loader skips such captions).
 * the one known difference from open_clip: ftfy's mojibake repair
 * (fix_encoding) is not done, see text_clean.h. */
tc_status tc_tokenize(tc_tokenizer *t, const char *text, size_t len, int32_t *ids, int context,
                      int *n_ids);

#endif
