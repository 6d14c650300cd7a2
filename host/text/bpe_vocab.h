/* the CLIP BPE vocabulary file (bpe_simple_vocab_16e6.txt.gz): where it is,
 * reading it whole, and the byte-to-character table of byte-level BPE. one
 * place for what the tokenizer and the Hugging Face tokenizer files share. */
#ifndef TC_BPE_VOCAB_H
#define TC_BPE_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* lines 1..48894 of the file are the merges used (line 0 is a header):
 * merges[1 : 49152 - 256 - 2 + 1] */
#define TC_BPE_MERGES 48894

/* $TINYCLIP_VOCAB, else the copy scripts/setup puts in third_party/vocab */
const char *tc_bpe_vocab_default_path(void);

/* the whole file (gzip or plain), NUL-terminated in *data (free with free());
 * a missing, corrupt or over-64 MiB file is an error naming the path */
tc_status tc_bpe_vocab_read(const char *path, char **data, size_t *len);

/* bytes_to_unicode(): the printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF)
 * map to themselves, in this order, then the others to U+0100.. in increasing
 * byte order. order[i] is the byte of vocabulary entry i (i < 256), cp[b] the
 * code point byte b is written as. */
void tc_bpe_byte_table(int order[256], uint32_t cp[256]);

#endif
