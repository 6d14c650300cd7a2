/* tinyclip inspect MODEL: architecture, parameter counts per tower (total
 * as open_clip counts them, and without the token embedding as the TinyCLIP
 * model names count them) and forward GFLOPs per image and per text.
 * MODEL is a model config JSON or a checkpoint (file or directory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "fileio.h"
#include "flops.h"
#include "model_config.h"
#include "params.h"

static void usage(FILE *f) {
    fprintf(f, "usage: tinyclip inspect MODEL [--model CONFIG]\n\n"
               "MODEL is a model config (.json, open_clip schema or Hugging Face CLIPConfig) or a\n"
               "checkpoint: a .safetensors file or an open_clip / Hugging Face directory.\n"
               "--model CONFIG gives the config of a checkpoint that has none beside it.\n");
}

/* 151277313 -> "151,277,313" */
static const char *commas(size_t v, char *buf, size_t cap) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%zu", v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

static void print_ints(const int *a, int n) {
    printf("[");
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", a[i]);
    printf("]");
}

static void print_tower(const char *label, const tc_tower_config *t) {
    if (t->resnet) {
        int g = tc_vision_grid(t);
        printf("%s: ResNet, stages ", label);
        print_ints(t->stages, TC_RESNET_STAGES);
        printf(", width %d, attention pool %d channels in %d heads of %d", t->width,
               tc_resnet_pool_width(t), tc_resnet_pool_heads(t), t->head_width);
        printf(", image %d (%dx%d map, %d tokens)\n", t->image_size, g, g, tc_vision_tokens(t));
        return;
    }
    printf("%s: %d layers, width %d, ", label, t->layers, t->width);
    if (tc_tower_is_uniform(t)) {
        printf("%d heads of %d, mlp %d", t->heads[0], t->head_width, t->mlp_width[0]);
    } else {
        printf("heads of %d per layer ", t->head_width);
        print_ints(t->heads, t->layers);
        printf(", mlp per layer ");
        print_ints(t->mlp_width, t->layers);
    }
}

static int is_json_path(const char *p) {
    size_t n = strlen(p);
    return n > 5 && strcmp(p + n - 5, ".json") == 0 && tc_path_is_file(p);
}

int tc_cmd_inspect(int argc, char **argv) {
    const char *model = NULL, *hint_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            hint_path = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tinyclip inspect: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!model) {
            model = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    tc_model_config cfg, hint;
    tc_param_layout layout;
    float *params = NULL;
    const char *kind;
    if (hint_path && tc_model_config_load(&hint, hint_path) != TC_OK)
        return tc_cli_report("inspect");
    if (is_json_path(model)) {
        if (tc_model_config_load(&cfg, model) != TC_OK) return tc_cli_report("inspect");
        if (tc_param_layout_build(&layout, &cfg) != TC_OK) return tc_cli_report("inspect");
        kind = "config";
    } else {
        if (tc_checkpoint_load(model, hint_path ? &hint : NULL, &cfg, &layout, &params) != TC_OK)
            return tc_cli_report("inspect");
        kind = "checkpoint";
    }
    free(params);
    const tc_tower_config *v = &cfg.vision, *t = &cfg.text;
    tc_param_counts c = tc_param_count(&layout);
    char b1[32], b2[32], b3[32];
    printf("model: %s (%s %s)\n", cfg.name, kind, model);
    printf("activation: %s\n", cfg.activation == TC_QUICK_GELU ? "quick_gelu" : "gelu");
    printf("embed_dim: %d\n", cfg.embed_dim);
    /* what loads it elsewhere (tinyclip convert) */
    if (cfg.irregular)
        printf("open_clip-regular: no (per-layer heads or MLP widths, or a width that is not "
               "heads x %d): open_clip and Hugging Face cannot load it; tinyclip convert --to "
               "onnx exports it\n",
               TC_HEAD_SIZE);
    else if (cfg.vision.no_ln_pre || cfg.vision.pool != TC_POOL_TOKEN)
        printf("open_clip-regular: yes (loads in open_clip; Hugging Face CLIP has no "
               "no_ln_pre / average pooling; tinyclip convert --to onnx exports it)\n");
    else
        printf("open_clip-regular: yes (loads in open_clip; tinyclip convert --to hf or --to "
               "onnx for Hugging Face or ONNX)\n");
    print_tower("vision", v);
    if (!v->resnet)
        printf(", patch %d, image %d (%d tokens), pool %s%s\n", v->patch_size, v->image_size,
               tc_vision_tokens(v), v->pool == TC_POOL_MEAN ? "avg" : "tok",
               v->no_ln_pre ? ", no ln_pre" : "");
    print_tower("text", t);
    printf(", context %d, vocab %d\n", t->context_length, t->vocab_size);
    printf("tensors: %d\n", layout.count);
    printf("params vision: %s\n", commas(c.vision, b1, sizeof b1));
    printf("params text: %s (token embedding %s)\n", commas(c.text, b1, sizeof b1),
           commas(c.token_embedding, b2, sizeof b2));
    printf("params shared (logit_scale): %s\n", commas(c.shared, b1, sizeof b1));
    printf("total params: %s\n", commas(c.total, b1, sizeof b1));
    size_t text_ne = c.text - c.token_embedding;
    printf("without token embedding: %s (%s %.2fM + Text %.2fM)\n",
           commas(c.vision + text_ne, b3, sizeof b3), v->resnet ? "ResNet" : "ViT", c.vision / 1e6,
           text_ne / 1e6);
    double gi, gt;
    tc_model_flops(&cfg, &gi, &gt);
    printf("GFLOPs per image: %.3f\n", gi);
    printf("GFLOPs per text: %.3f\n", gt);
    tc_param_layout_free(&layout);
    return 0;
}
