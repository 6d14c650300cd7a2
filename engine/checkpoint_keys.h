/* the tensor names of the checkpoint formats, shared by loading and saving
 * (internal to engine/): open_clip's names are the canonical ones; Hugging
 * Face CLIPModel names map to them, q/k/v split out of in_proj_* and the two
 * projections transposed. */
#ifndef TC_CHECKPOINT_KEYS_H
#define TC_CHECKPOINT_KEYS_H

#include <stddef.h>
#include <string.h>

#define TC_CKPT_NAME_MAX 160 /* the longest canonical name, with room */

static inline int tc_ckpt_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static inline int tc_ckpt_starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* k without a leading prefix, when it has it */
static inline const char *tc_ckpt_strip(const char *k, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(k, prefix, n) == 0 ? k + n : k;
}

/* HF CLIPModel name -> open_clip name; returns 0 for an ignored entry
 * (position_ids) and -1 for a name that is not CLIPModel's. *part: -1 for a
 * whole tensor, 0/1/2 for the q/k/v rows of in_proj_*; *transpose: stored as
 * the transpose of the open_clip tensor. out holds TC_CKPT_NAME_MAX bytes. */
int tc_ckpt_hf_to_canon(const char *k, char *out, int *part, int *transpose);

/* open_clip name (and q/k/v part, -1 for none) -> HF CLIPModel name; returns
 * 0 when CLIPModel has no such tensor */
int tc_ckpt_canon_to_hf(const char *c, int part, char *out, size_t cap);

/* source key -> open_clip name for the non-HF layouts (state_dict. / module.
 * prefixes, the text tower's "text." prefix, the original's _image_encoder /
 * _text_encoder / _logit_scale wrappers); returns 1 for an entry to ignore
 * (OpenAI's integer entries). out holds TC_CKPT_NAME_MAX bytes. */
int tc_ckpt_openclip_canon(const char *k, char *out);

#endif
