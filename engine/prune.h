/* pruning a masked model into an irregular dense model (TinyCLIP's .prune()
 * after the mask phase), folding masks into a full-shape copy, and
 * re-expanding a pruned model to the teacher shape for the next stage.
 *
 * host fp32 buffers laid out by tc_param_layout_build. a tower's z vector is
 * (C + L*NH + L*M) floats in the order hidden | heads (L, NH) | intermediate
 * (L, M), as tc_l0_deterministic writes it; a masked tower must be uniform
 * and teacher-shaped (see tc_l0_masks_match). a NULL z leaves a tower as it is.
 *
 * what a kept unit becomes (hz = hidden z, head_z, int_z; "sliced" keeps the
 * z != 0 entries):
 *   LayerNorms                       weight, bias sliced, NOT scaled
 *   in_proj (3, NH, HS, C)           [:, kept heads][..., kept hidden]; bias likewise
 *   out_proj.weight (C, NH*HS)       (w * hz rows) * head_z column blocks, sliced
 *   out_proj.bias                    * hz, sliced
 *   c_fc (M, C), bias (M)            sliced
 *   c_proj.weight (C, M)             (w * int_z columns) * hz rows, sliced
 *   c_proj.bias                      * hz, sliced
 *   conv1, class_embedding, visual.positional_embedding,
 *   token_embedding, positional_embedding   * hz, sliced
 *   visual.proj, text_projection     rows * hz (TC_PRUNE_ORIGINAL) or
 *                                    rows unscaled (TC_PRUNE_EXACT), sliced
 * a layer whose heads are all 0 loses its attention sub-block (heads[l] = 0),
 * one whose MLP units are all 0 its MLP (mlp_width[l] = 0).
 *
 * dropped sub-blocks and their biases: in the masked model a dropped
 * sub-block still adds its output bias (out_proj.bias * hz or
 * c_proj.bias * hz) to the residual stream. the original keeps an MLP of
 * width 0, so that bias survives; here an MLP of width 0 has no tensors, so
 * the bias is moved to the nearest earlier point of the residual stream that
 * no LayerNorm reads in between: the output bias of the previous present
 * sub-block, else ln_pre.bias (vision), else every row of the positional
 * embedding. the original drops a head-less attention block together with
 * its bias (TC_PRUNE_ORIGINAL); TC_PRUNE_EXACT moves that bias too.
 *
 * so: TC_PRUNE_EXACT computes exactly what the masked forward computes with
 * the same z; TC_PRUNE_ORIGINAL is the original's .prune(), which differs
 * from its own masked forward by hz on the projected dims (its masked forward
 * does not scale the final LN output by hz, its prune scales proj) and by
 * the out_proj bias of head-less layers. */
#ifndef TC_PRUNE_H
#define TC_PRUNE_H

#include "l0.h"
#include "model_config.h"
#include "params.h"
#include "status.h"

typedef enum { TC_PRUNE_ORIGINAL = 0, TC_PRUNE_EXACT = 1 } tc_prune_mode;

/* the original's prune with deterministic masks (tc_l0_deterministic with
 * round_to: 0 none; 8 or 64 round the kept hidden dims and every layer's
 * kept MLP units up to that multiple, reviving the highest-scoring pruned
 * units with their soft value). vision/text NULL: tower kept as it is.
 * out_cfg is the irregular config (per-layer heads and mlp_width), out_l its
 * layout (free with tc_param_layout_free), *out_params malloc'd (free()). */
tc_status tc_prune(const tc_model_config *cfg, const tc_param_layout *l, const float *params,
                   const tc_l0_masks *vision, const tc_l0_masks *text, int round_to,
                   tc_model_config *out_cfg, tc_param_layout *out_l, float **out_params);

/* the same from given z vectors */
tc_status tc_prune_z(const tc_model_config *cfg, const tc_param_layout *l, const float *params,
                     const float *vision_z, const float *text_z, tc_prune_mode mode,
                     tc_model_config *out_cfg, tc_param_layout *out_l, float **out_params);

/* in place on a full-shape copy: every tensor multiplied by the factors the
 * prune applies, entries a prune would remove set to 0 (in ORIGINAL mode the
 * out_proj bias of a head-less layer too). slicing the result at the kept
 * units gives tc_prune_z's tensors (before bias moves). with TC_PRUNE_EXACT,
 * the masked forward of the folded weights with z replaced by (z != 0)
 * equals the masked forward of the original weights with z. */
tc_status tc_prune_fold(const tc_model_config *cfg, const tc_param_layout *l, float *params,
                        const float *vision_z, const float *text_z, tc_prune_mode mode);

/* re-expansion (the original's load_pruned_model): full is zeroed, then every
 * compact tensor goes to the leading slice of its full-shape tensor (in_proj
 * in its (3, NH, 64, C) view); blocks the compact model lacks stay 0;
 * logit_scale is copied. the full config must be uniform, with the same
 * depth, image grid, context length, vocabulary and embed_dim, and no
 * compact dim larger than the full one. vision_masks / text_masks (may be
 * NULL) are created for the full towers: kept units log alpha 10, pruned
 * -10, lambda 10 (irregular masks; tc_expand_masks for either shape). */
tc_status tc_expand(const tc_model_config *compact_cfg, const tc_param_layout *cl,
                    const float *compact, const tc_model_config *full_cfg,
                    const tc_param_layout *fl, float *full, tc_l0_masks *vision_masks,
                    tc_l0_masks *text_masks);

/* masks of the given shape for the full tower f after a re-expansion of the
 * compact tower c: kept units log alpha 10, pruned -10, lambda 10. regular
 * masks keep the width units that cover c's leading width and the MLP units
 * of c's widest layer (exact when c is itself regular). */
tc_status tc_expand_masks(tc_l0_masks *m, const tc_tower_config *c, const tc_tower_config *f,
                          tc_l0_shape shape, const char *what);

#endif
