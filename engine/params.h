/* parameter layout: every tensor of a CLIP model as a named view into one
 * contiguous fp32 buffer, in open_clip state_dict order, so that a checkpoint
 * written in memory order loads with one read. gradients, optimizer moments
 * and the compute copy of the weights mirror this layout element for element. */
#ifndef TC_PARAMS_H
#define TC_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "model_config.h"

#define TC_ABSENT ((size_t)-1)

typedef enum { TC_TOWER_SHARED = 0, TC_TOWER_VISION = 1, TC_TOWER_TEXT = 2 } tc_tower_id;

typedef struct {
    char name[96];      /* open_clip key, e.g. "visual.transformer.resblocks.0.attn.in_proj_weight" */
    int ndim;           /* 0 for logit_scale */
    int64_t shape[4];
    size_t offset;      /* elements from the start of the buffer */
    size_t count;       /* elements */
    int decay;          /* 1 when AdamW weight decay applies (open_clip rule) */
    int buffer;         /* 1 for a BatchNorm buffer (running statistics): a checkpoint
                         * tensor the optimizer never updates, not counted as a parameter */
    tc_tower_id tower;
} tc_param_info;

/* element offsets of one residual block; TC_ABSENT for a sub-block that a
 * pruned layer does not have */
typedef struct {
    size_t ln1_w, ln1_b;  /* (C) */
    size_t qkv_w, qkv_b;  /* (3A, C), (3A) */
    size_t out_w, out_b;  /* (C, A), (C) */
    size_t ln2_w, ln2_b;  /* (C) */
    size_t fc_w, fc_b;    /* (M, C), (M) */
    size_t proj_w, proj_b;/* (C, M), (C) */
} tc_block_offsets;

/* a ResNet bottleneck (open_clip Bottleneck, expansion 4). a BatchNorm's
 * five tensors are contiguous from its offset: weight, bias, running_mean,
 * running_var (C each), num_batches_tracked (1) */
typedef struct {
    size_t conv1, bn1;     /* (P, Cin, 1, 1), BatchNorm(P) */
    size_t conv2, bn2;     /* (P, P, 3, 3), BatchNorm(P) */
    size_t conv3, bn3;     /* (4P, P, 1, 1), BatchNorm(4P) */
    size_t ds_conv, ds_bn; /* downsample.0 (4P, Cin, 1, 1), .1 BatchNorm(4P); TC_ABSENT without */
    int cin, planes, stride; /* Cin, P; stride 2: average pools before conv3 and the downsample */
} tc_rn_block;

/* a ResNet image tower (open_clip ModifiedResNet) */
typedef struct {
    size_t stem_conv[3], stem_bn[3]; /* conv1 (W/2,3,3,3), conv2 (W/2,W/2,3,3), conv3 (W,W/2,3,3) */
    tc_rn_block blocks[TC_MAX_LAYERS]; /* every stage's blocks in order */
    int nblocks;
    size_t pool_pos;                 /* attnpool.positional_embedding (g*g+1, D), D = 32 W */
    size_t k_w, k_b, q_w, q_b, v_w, v_b; /* (D, D), (D) */
    size_t c_w, c_b;                 /* c_proj (E, D), (E) */
} tc_rn_layout;

typedef struct {
    tc_param_info *params;
    int count;
    size_t total;         /* elements */
    /* shared / text */
    size_t text_pos;      /* positional_embedding (T, Ct) */
    size_t text_proj;     /* text_projection (Ct, E) */
    size_t logit_scale;   /* logit_scale () */
    size_t token_emb;     /* token_embedding.weight (V, Ct) */
    size_t ln_final_w, ln_final_b;
    /* vision */
    /* vision, ViT (TC_ABSENT for a ResNet tower) */
    size_t v_cls;         /* visual.class_embedding (Cv) */
    size_t v_pos;         /* visual.positional_embedding (Tv, Cv) */
    size_t v_proj;        /* visual.proj (Cv, E) */
    size_t v_conv1;       /* visual.conv1.weight (Cv, 3, P, P) */
    size_t v_ln_pre_w, v_ln_pre_b; /* TC_ABSENT when no_ln_pre */
    size_t v_ln_post_w, v_ln_post_b;
    tc_block_offsets vblocks[TC_MAX_LAYERS];
    tc_rn_layout rn;      /* vision, ResNet */
    tc_block_offsets tblocks[TC_MAX_LAYERS];
    size_t vision_begin, vision_end; /* element range of the visual.* tensors */
} tc_param_layout;

tc_status tc_param_layout_build(tc_param_layout *layout, const tc_model_config *cfg);
void tc_param_layout_free(tc_param_layout *layout);
/* TC_OK when layout is the one tc_param_layout_build makes for cfg (the same
 * tensors at the same offsets); else an error that names `what` */
tc_status tc_param_layout_check(const tc_model_config *cfg, const tc_param_layout *layout,
                                const char *what);
/* NULL when absent */
const tc_param_info *tc_param_find(const tc_param_layout *layout, const char *name);

/* parameter counts as open_clip counts them (BatchNorm buffers excluded) */
typedef struct {
    size_t vision, text, shared, total;
    size_t token_embedding; /* the TinyCLIP names exclude it from the text count */
    size_t buffers;         /* batch-norm running stats: in the layout, not in total */
} tc_param_counts;
tc_param_counts tc_param_count(const tc_param_layout *layout);

#endif
