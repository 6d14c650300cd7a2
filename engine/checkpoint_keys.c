#include "checkpoint_keys.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

/* HF CLIPModel name -> open_clip name; returns 0 for an ignored entry
 * (position_ids) and -1 for a name that is not CLIPModel's */
int tc_ckpt_hf_to_canon(const char *k, char *out, int *part, int *transpose) {
    *part = -1;
    *transpose = 0;
    static const char *const fixed[][2] = {
        {"vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"},
        {"vision_model.embeddings.class_embedding", "visual.class_embedding"},
        {"vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"},
        {"vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"},
        {"vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"},
        {"vision_model.post_layernorm.weight", "visual.ln_post.weight"},
        {"vision_model.post_layernorm.bias", "visual.ln_post.bias"},
        {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
        {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
        {"text_model.final_layer_norm.weight", "ln_final.weight"},
        {"text_model.final_layer_norm.bias", "ln_final.bias"},
        {"logit_scale", "logit_scale"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(k, fixed[i][0]) == 0) {
            snprintf(out, TC_CKPT_NAME_MAX, "%s", fixed[i][1]);
            return 1;
        }
    if (strcmp(k, "visual_projection.weight") == 0 || strcmp(k, "text_projection.weight") == 0) {
        snprintf(out, TC_CKPT_NAME_MAX, "%s", k[0] == 'v' ? "visual.proj" : "text_projection");
        *transpose = 1;
        return 1;
    }
    if (strcmp(k, "vision_model.embeddings.position_ids") == 0 ||
        strcmp(k, "text_model.embeddings.position_ids") == 0)
        return 0;
    const char *rest, *tower;
    if (tc_ckpt_starts_with(k, "vision_model.encoder.layers.")) {
        rest = k + strlen("vision_model.encoder.layers.");
        tower = "visual.transformer.resblocks.";
    } else if (tc_ckpt_starts_with(k, "text_model.encoder.layers.")) {
        rest = k + strlen("text_model.encoder.layers.");
        tower = "transformer.resblocks.";
    } else {
        return -1;
    }
    int layer = 0, digits = 0;
    while (isdigit((unsigned char)rest[digits]) && digits < 4)
        layer = layer * 10 + (rest[digits++] - '0');
    if (digits == 0 || rest[digits] != '.') return -1;
    rest += digits + 1;
    static const char *const sub[][2] = {
        {"self_attn.out_proj.weight", "attn.out_proj.weight"},
        {"self_attn.out_proj.bias", "attn.out_proj.bias"},
        {"layer_norm1.weight", "ln_1.weight"},
        {"layer_norm1.bias", "ln_1.bias"},
        {"layer_norm2.weight", "ln_2.weight"},
        {"layer_norm2.bias", "ln_2.bias"},
        {"mlp.fc1.weight", "mlp.c_fc.weight"},
        {"mlp.fc1.bias", "mlp.c_fc.bias"},
        {"mlp.fc2.weight", "mlp.c_proj.weight"},
        {"mlp.fc2.bias", "mlp.c_proj.bias"},
    };
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++)
        if (strcmp(rest, sub[i][0]) == 0) {
            snprintf(out, TC_CKPT_NAME_MAX, "%s%d.%s", tower, layer, sub[i][1]);
            return 1;
        }
    static const char qkv[3] = {'q', 'k', 'v'};
    for (int p = 0; p < 3; p++) {
        char w[32], b[32];
        snprintf(w, sizeof w, "self_attn.%c_proj.weight", qkv[p]);
        snprintf(b, sizeof b, "self_attn.%c_proj.bias", qkv[p]);
        if (strcmp(rest, w) == 0 || strcmp(rest, b) == 0) {
            snprintf(out, TC_CKPT_NAME_MAX, "%s%d.attn.in_proj_%s", tower, layer,
                     strcmp(rest, w) == 0 ? "weight" : "bias");
            *part = p;
            return 1;
        }
    }
    return -1;
}

/* open_clip name (and q/k/v part) -> HF CLIPModel name */
int tc_ckpt_canon_to_hf(const char *c, int part, char *out, size_t cap) {
    static const char *const fixed[][2] = {
        {"visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"},
        {"visual.class_embedding", "vision_model.embeddings.class_embedding"},
        {"visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"},
        {"visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"},
        {"visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"},
        {"visual.ln_post.weight", "vision_model.post_layernorm.weight"},
        {"visual.ln_post.bias", "vision_model.post_layernorm.bias"},
        {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
        {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
        {"ln_final.weight", "text_model.final_layer_norm.weight"},
        {"ln_final.bias", "text_model.final_layer_norm.bias"},
        {"logit_scale", "logit_scale"},
        {"visual.proj", "visual_projection.weight"},
        {"text_projection", "text_projection.weight"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(c, fixed[i][0]) == 0) {
            snprintf(out, cap, "%s", fixed[i][1]);
            return 1;
        }
    const char *rest, *tower;
    if (tc_ckpt_starts_with(c, "visual.transformer.resblocks.")) {
        rest = c + strlen("visual.transformer.resblocks.");
        tower = "vision_model.encoder.layers.";
    } else if (tc_ckpt_starts_with(c, "transformer.resblocks.")) {
        rest = c + strlen("transformer.resblocks.");
        tower = "text_model.encoder.layers.";
    } else {
        return 0;
    }
    int layer = atoi(rest);
    const char *dot = strchr(rest, '.');
    if (!dot) return 0;
    rest = dot + 1;
    static const char *const sub[][2] = {
        {"attn.out_proj.weight", "self_attn.out_proj.weight"},
        {"attn.out_proj.bias", "self_attn.out_proj.bias"},
        {"ln_1.weight", "layer_norm1.weight"},
        {"ln_1.bias", "layer_norm1.bias"},
        {"ln_2.weight", "layer_norm2.weight"},
        {"ln_2.bias", "layer_norm2.bias"},
        {"mlp.c_fc.weight", "mlp.fc1.weight"},
        {"mlp.c_fc.bias", "mlp.fc1.bias"},
        {"mlp.c_proj.weight", "mlp.fc2.weight"},
        {"mlp.c_proj.bias", "mlp.fc2.bias"},
    };
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++)
        if (strcmp(rest, sub[i][0]) == 0) {
            snprintf(out, cap, "%s%d.%s", tower, layer, sub[i][1]);
            return 1;
        }
    if ((strcmp(rest, "attn.in_proj_weight") == 0 || strcmp(rest, "attn.in_proj_bias") == 0) &&
        part >= 0 && part < 3) {
        snprintf(out, cap, "%s%d.self_attn.%c_proj.%s", tower, layer, "qkv"[part],
                 tc_ckpt_ends_with(rest, "weight") ? "weight" : "bias");
        return 1;
    }
    return 0;
}

/* source key -> open_clip name for the non-HF layouts; returns 1 for an
 * entry to ignore. any other name that is no parameter (the empty name too)
 * is reported as unexpected */
int tc_ckpt_openclip_canon(const char *k, char *out) {
    k = tc_ckpt_strip(k, "state_dict.");
    k = tc_ckpt_strip(k, "module.");
    if (tc_ckpt_starts_with(k, "_image_encoder.")) {
        k = tc_ckpt_strip(tc_ckpt_strip(k, "_image_encoder."), "module.");
    } else if (tc_ckpt_starts_with(k, "_text_encoder.")) {
        k = tc_ckpt_strip(tc_ckpt_strip(k, "_text_encoder."), "module.");
    } else if (tc_ckpt_starts_with(k, "_logit_scale.")) {
        k = tc_ckpt_strip(tc_ckpt_strip(k, "_logit_scale."), "module.");
    } else if (tc_ckpt_starts_with(k, "text.")) {
        static const char *const roots[] = {"token_embedding.", "positional_embedding",
                                            "transformer.", "ln_final.", "text_projection"};
        for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++)
            if (tc_ckpt_starts_with(k + 5, roots[i])) {
                k += 5;
                break;
            }
    }
    if (strcmp(k, "input_resolution") == 0 || strcmp(k, "context_length") == 0 ||
        strcmp(k, "vocab_size") == 0) {
        out[0] = 0;
        return 1;
    }
    snprintf(out, TC_CKPT_NAME_MAX, "%s", k);
    return 0;
}
