/* model checkpoints: weights in safetensors plus the model config, in the
 * layouts the CLIP ecosystem uses.
 *
 * load accepts a .safetensors file or a directory:
 *   open_clip dir   open_clip_model.safetensors (or open_clip_pytorch_model.
 *                   safetensors) + open_clip_config.json {"model_cfg": ...};
 *                   a run-folder stage dir is the same
 *   HF dir          model.safetensors + config.json (CLIPConfig)
 *   single file     config from its __metadata__ "tinyclip_model_cfg" (our own
 *                   files), else <stem>.json, open_clip_config.json or
 *                   config.json beside it
 * and, in any of them, these key layouts (docs/design.md §8.3): open_clip / OpenAI
 * (the OpenAI integer entries input_resolution, context_length, vocab_size
 * are dropped), a "state_dict." and/or "module." prefix, TinyCLIP native
 * (_image_encoder. / _text_encoder. / _logit_scale., each optionally followed
 * by module.), CustomTextCLIP ("text." prefix), Hugging Face CLIPModel (q/k/v
 * concatenated, visual_projection and text_projection transposed,
 * position_ids ignored). F32, F16, BF16 and F64 tensors are converted to fp32.
 * without a config beside the weights the hint is used; without either the
 * load fails and asks for --model (the activation cannot be read from weights).
 *
 * a missing tensor, an unexpected extra one, a wrong shape or an unreadable
 * dtype fails with a message naming the tensor and the file; the one
 * exception is a BatchNorm's num_batches_tracked, which older state dicts
 * lack (taken as 0, as torch does). integer buffers (num_batches_tracked is
 * I64 in torch) are read as counts and written back as I64.
 *
 * every file is written atomically. */
#ifndef TC_CHECKPOINT_H
#define TC_CHECKPOINT_H

#include "model_config.h"
#include "params.h"
#include "status.h"

typedef enum {
    TC_FORMAT_OPENCLIP = 0, /* open_clip_model.safetensors + open_clip_config.json */
    TC_FORMAT_HF = 1,       /* model.safetensors + config.json + preprocessor + tokenizer files */
} tc_checkpoint_format;

/* on success *cfg_out is the model config, *layout_out its parameter table
 * (free with tc_param_layout_free) and *params_out a malloc'd fp32 buffer of
 * layout_out->total elements in layout order (free with free()). hint may be
 * NULL. */
tc_status tc_checkpoint_load(const char *path, const tc_model_config *hint,
                             tc_model_config *cfg_out, tc_param_layout *layout_out,
                             float **params_out);

/* what tc_checkpoint_load checks, without reading the weights: the file's
 * header and size, the config, every tensor's name, shape and dtype against
 * it. fails with the message the load would give. */
tc_status tc_checkpoint_check(const char *path, const tc_model_config *hint,
                              tc_model_config *cfg_out);

/* creates dir if needed and writes the checkpoint in the given layout.
 * TC_FORMAT_HF fails for models HF CLIPConfig cannot express (irregular
 * towers, no_ln_pre, average pooling) and needs the CLIP vocabulary
 * (tc_checkpoint_vocab_path) for vocab.json / merges.txt. */
tc_status tc_checkpoint_save(const char *dir, tc_checkpoint_format fmt, const tc_model_config *cfg,
                             const tc_param_layout *layout, const float *params);

/* one .safetensors file with open_clip keys in memory order. __metadata__
 * holds {"format": "pt", "tinyclip_model_cfg": <model config JSON>} plus the
 * string entries of metadata_json_or_null (a JSON object of strings). */
tc_status tc_checkpoint_save_file(const char *path, const tc_model_config *cfg,
                                  const tc_param_layout *layout, const float *params,
                                  const char *metadata_json_or_null);

/* the weights file and config file a load of `path` would read; both
 * malloc'd, *config_path NULL when no config file is found */
tc_status tc_checkpoint_resolve(const char *path, char **weights_path, char **config_path);

/* Hugging Face CLIPTokenizer files (vocab.json, merges.txt,
 * tokenizer_config.json, special_tokens_map.json) made from the CLIP
 * vocabulary (tc_checkpoint_vocab_path), written into dir */
tc_status tc_checkpoint_save_tokenizer(const char *dir, int context_length);

/* OpenAI CLIP image normalisation (open_clip's constants), as JSON arrays */
#define TC_CLIP_MEAN_JSON "[0.48145466, 0.4578275, 0.40821073]"
#define TC_CLIP_STD_JSON "[0.26862954, 0.26130258, 0.27577711]"

/* the CLIP BPE vocabulary used for Hugging Face tokenizer files:
 * $TINYCLIP_VOCAB, else third_party/vocab/bpe_simple_vocab_16e6.txt.gz in the
 * source tree */
const char *tc_checkpoint_vocab_path(void);

#endif
