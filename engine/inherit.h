/* manual weight inheritance (TinyCLIP weight_inherit, "interval_front"):
 * a smaller student takes a slice of a teacher, per tower.
 *
 *   layers:  student layer i <- teacher layer i * (T / max(S, 1))  (integer /)
 *   heads:   in_proj viewed as (3, NH_t, HS, C_t) is cut to [:, :NH_s, :, :C_s],
 *            in_proj_bias (3, NH_t, HS) to [:, :NH_s]: the first heads of Q, K, V
 *            (the student's heads must be as wide as the teacher's)
 *   others:  the leading slice param[:s0, :s1, ...] (out_proj, c_fc, c_proj,
 *            LayerNorms, conv1, class/positional embeddings, proj,
 *            text_projection, token_embedding); a one-element tensor is copied
 *
 * ResNet image towers (TinyCLIP's rule for visual.layer<S>.<I>.): each
 * stage's blocks by interval_front within the stage, every conv and
 * BatchNorm (running statistics and batch count included) and the
 * attention pool's positions and q/k/v/c projections by their leading
 * slice; the stem likewise.
 *
 * works on host fp32 buffers laid out by tc_param_layout_build. only the
 * tensors of the selected towers are written; logit_scale is never touched
 * (the original copies only the tower prefixes). a student dim larger than
 * the teacher's, a student deeper than the teacher, a student layer whose
 * sub-block the mapped teacher layer lacks, or a different image grid or
 * context length (positional rows) is an error naming the tensor. per-layer
 * heads and MLP widths (irregular towers) are handled per layer. */
#ifndef TC_INHERIT_H
#define TC_INHERIT_H

#include "model_config.h"
#include "params.h"
#include "status.h"

typedef struct {
    int vision; /* 1: inherit the vision tower (visual.*) */
    int text;   /* 1: inherit the text tower (transformer.*, token/positional
                 * embedding, ln_final, text_projection) */
    /* explicit teacher layer per student layer instead of interval_front
     * (NULL: interval_front); n must equal the student's depth */
    const int *vision_layers, *text_layers;
    int n_vision_layers, n_text_layers;
} tc_inherit_options;

/* both towers */
tc_inherit_options tc_inherit_defaults(void);

/* idx[i] = i * (teacher_depth / max(student_depth, 1)) for i < student_depth */
tc_status tc_inherit_layer_map(int teacher_depth, int student_depth, int *idx);

/* opt NULL: both towers */
tc_status tc_inherit_manual(const tc_model_config *teacher_cfg, const tc_param_layout *tl,
                            const float *teacher_params, const tc_model_config *student_cfg,
                            const tc_param_layout *sl, float *student_params,
                            const tc_inherit_options *opt);

#endif
