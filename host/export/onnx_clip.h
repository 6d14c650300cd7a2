/* the two towers of a CLIP model as ONNX graphs, computed as open_clip's
 * encode_image / encode_text(normalize=True) and as the engine's forward:
 *
 *   image: pixel_values (batch, 3, S, S) -> image_embeds (batch, E)
 *     conv1 (stride P, no bias) -> tokens, CLS first -> + positions
 *     -> [ln_pre] -> blocks -> pool (CLS token, or the mean of the patch
 *     tokens) with ln_post -> @ proj -> L2-normalised
 *   text: input_ids (batch, T) int64 -> text_embeds (batch, E)
 *     token embedding + positions -> causal blocks -> the row at the first
 *     largest id (EOT; 0- or EOT-padded rows alike) -> ln_final
 *     -> @ text_projection -> L2-normalised
 *
 * every layer as its config has it: its own head count (a layer without
 * heads has no attention sub-block) and MLP width (none without units); the
 * head size is read from the attention weights, not assumed. GELU is the
 * erf form, QuickGELU x * sigmoid(1.702 x). LayerNorm (eps 1e-5) is the
 * LayerNormalization operator from opset 17, its mean/variance form below. */
#ifndef TC_ONNX_CLIP_H
#define TC_ONNX_CLIP_H

#include "model_config.h"
#include "onnx_graph.h"
#include "params.h"

tc_status tc_onnx_clip_image(tc_onnx_graph *g, const tc_model_config *cfg, const tc_param_layout *l,
                             const float *params);
tc_status tc_onnx_clip_text(tc_onnx_graph *g, const tc_model_config *cfg, const tc_param_layout *l,
                            const float *params);

#endif
