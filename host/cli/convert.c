/* tinyclip convert IN OUT --to openclip|hf [--model CONFIG]: loads a
 * checkpoint in any supported key layout (open_clip, OpenAI, TinyCLIP
 * native, CustomText, Hugging Face CLIPModel) and writes it as an open_clip
 * directory or a Hugging Face directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"

static void usage(FILE *f) {
    fprintf(f, "usage: tinyclip convert IN OUT --to openclip|hf [--model CONFIG]\n\n"
               "IN   a .safetensors file or an open_clip / Hugging Face checkpoint directory\n"
               "OUT  the directory to write (created if needed)\n"
               "--to openclip  open_clip_model.safetensors + open_clip_config.json\n"
               "--to hf        model.safetensors + config.json + preprocessor and tokenizer files\n"
               "--model CONFIG the model config when IN has none beside its weights\n");
}

int tc_cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *to = NULL, *hint_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
            to = argv[++i];
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            hint_path = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tinyclip convert: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out || !to) {
        usage(stderr);
        return 2;
    }
    tc_checkpoint_format fmt;
    if (strcmp(to, "openclip") == 0 || strcmp(to, "open_clip") == 0)
        fmt = TC_FORMAT_OPENCLIP;
    else if (strcmp(to, "hf") == 0)
        fmt = TC_FORMAT_HF;
    else {
        fprintf(stderr, "tinyclip convert: --to must be openclip or hf, not '%s'\n", to);
        return 2;
    }
    tc_model_config hint, cfg;
    tc_param_layout layout;
    float *params = NULL;
    if (hint_path && tc_model_config_load(&hint, hint_path) != TC_OK)
        return tc_cli_report("convert");
    if (tc_checkpoint_load(in, hint_path ? &hint : NULL, &cfg, &layout, &params) != TC_OK)
        return tc_cli_report("convert");
    tc_status st = tc_checkpoint_save(out, fmt, &cfg, &layout, params);
    free(params);
    size_t total = layout.packed_total;
    tc_param_layout_free(&layout);
    if (st != TC_OK) return tc_cli_report("convert");
    printf("wrote %s (%s layout, %zu parameters)\n", out,
           fmt == TC_FORMAT_HF ? "Hugging Face" : "open_clip", total);
    return 0;
}
