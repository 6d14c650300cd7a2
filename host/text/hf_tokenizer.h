/* the Hugging Face CLIPTokenizer files of the CLIP BPE vocabulary:
 * vocab.json (the 512 byte symbols, then one entry per merge, then
 * <|startoftext|> and <|endoftext|>), merges.txt, special_tokens_map.json and
 * tokenizer_config.json (model_max_length = the model's context length). what
 * `tinyclip convert --to hf` and `--to onnx` put beside the weights. */
#ifndef TC_HF_TOKENIZER_H
#define TC_HF_TOKENIZER_H

#include "status.h"

/* vocab_path NULL: tc_bpe_vocab_default_path(); the files are written into
 * dir (which must exist), each atomically */
tc_status tc_hf_tokenizer_write(const char *dir, const char *vocab_path, int context_length);

#endif
