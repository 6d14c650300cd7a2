/* tinyclip convert IN OUT --to openclip|hf|onnx [--model CONFIG]: loads a
 * checkpoint in any supported key layout (open_clip, OpenAI, TinyCLIP
 * native, CustomText, Hugging Face CLIPModel) and writes it as an open_clip
 * directory, a Hugging Face directory or ONNX graphs (host/export). open_clip
 * and Hugging Face take only open_clip-regular models; an irregular (pruned)
 * one is refused with the reason and the ONNX route. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "onnx_export.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tinyclip convert IN OUT --to openclip|hf|onnx [--model CONFIG]\n"
            "                        [--precision fp32|fp16] [--opset N] [--external-data]\n\n"
            "IN   a .safetensors file or an open_clip / Hugging Face checkpoint directory\n"
            "OUT  the directory to write (created if needed)\n"
            "--to openclip  open_clip_model.safetensors + open_clip_config.json\n"
            "               (open_clip-regular models only)\n"
            "--to hf        model.safetensors + config.json + preprocessor and tokenizer files\n"
            "               (open_clip-regular models only)\n"
            "--to onnx      image_encoder.onnx + text_encoder.onnx (normalised features,\n"
            "               dynamic batch), onnx_config.json, preprocess_cfg.json and the\n"
            "               tokenizer vocabulary; any model, irregular ones included\n"
            "--precision    onnx: fp32 (default) or fp16\n"
            "--opset N      onnx: operator set %d..%d (default %d)\n"
            "--external-data  onnx: weights in <graph>.onnx.data files (automatic above 2 GiB)\n"
            "--model CONFIG the model config when IN has none beside its weights\n",
            TC_ONNX_OPSET_MIN, TC_ONNX_OPSET_MAX, TC_ONNX_OPSET_DEFAULT);
}

/* open_clip and Hugging Face hold one width of whole 64-wide heads and one
 * MLP width per tower: say so, and where an irregular model can go */
static int refuse_irregular(const char *in, const tc_model_config *cfg, const char *to) {
    if (!cfg->irregular) return 0;
    fprintf(stderr,
            "tinyclip convert: %s is not open_clip-regular (a tower has per-layer head counts or "
            "MLP widths, or a width that is not heads x 64, as automatic inheritance leaves by "
            "default): %s cannot express it. export it with --to onnx (any model), or train the "
            "stage with inheritance: {kind: auto, shape: regular} for a model open_clip and "
            "Hugging Face load\n",
            in, to);
    return 1;
}

int tc_cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *to = NULL, *hint_path = NULL;
    tc_onnx_options onnx = tc_onnx_defaults();
    const char *onnx_only = NULL; /* an option that means something for --to onnx alone */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
            to = argv[++i];
        } else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc) {
            int p = tc_onnx_parse_precision(argv[++i]);
            if (p < 0) {
                fprintf(stderr, "tinyclip convert: --precision must be fp32 or fp16, not '%s'\n",
                        argv[i]);
                return 2;
            }
            onnx.precision = (tc_onnx_precision)p;
            onnx_only = argv[i - 1];
        } else if (strcmp(argv[i], "--opset") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < TC_ONNX_OPSET_MIN || v > TC_ONNX_OPSET_MAX) {
                fprintf(stderr, "tinyclip convert: --opset must be %d..%d, not '%s'\n",
                        TC_ONNX_OPSET_MIN, TC_ONNX_OPSET_MAX, argv[i]);
                return 2;
            }
            onnx.opset = (int)v;
            onnx_only = argv[i - 1];
        } else if (strcmp(argv[i], "--external-data") == 0) {
            onnx.external_data = 1;
            onnx_only = argv[i];
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
    tc_checkpoint_format fmt = TC_FORMAT_OPENCLIP;
    int to_onnx = strcmp(to, "onnx") == 0;
    if (onnx_only && !to_onnx) {
        fprintf(stderr, "tinyclip convert: %s is an option of --to onnx\n", onnx_only);
        return 2;
    }
    if (strcmp(to, "openclip") == 0 || strcmp(to, "open_clip") == 0)
        fmt = TC_FORMAT_OPENCLIP;
    else if (strcmp(to, "hf") == 0)
        fmt = TC_FORMAT_HF;
    else if (!to_onnx) {
        fprintf(stderr, "tinyclip convert: --to must be openclip, hf or onnx, not '%s'\n", to);
        return 2;
    }
    tc_model_config hint, cfg;
    tc_param_layout layout;
    float *params = NULL;
    if (hint_path && tc_model_config_load(&hint, hint_path) != TC_OK)
        return tc_cli_report("convert");
    if (tc_checkpoint_load(in, hint_path ? &hint : NULL, &cfg, &layout, &params) != TC_OK)
        return tc_cli_report("convert");
    if (!to_onnx &&
        refuse_irregular(in, &cfg, fmt == TC_FORMAT_HF ? "Hugging Face CLIP" : "open_clip")) {
        free(params);
        tc_param_layout_free(&layout);
        return 1;
    }
    tc_status st = to_onnx ? tc_export_onnx(out, &cfg, &layout, params, &onnx)
                           : tc_checkpoint_save(out, fmt, &cfg, &layout, params);
    free(params);
    size_t total = layout.total;
    tc_param_layout_free(&layout);
    if (st != TC_OK) return tc_cli_report("convert");
    if (to_onnx)
        printf("wrote %s (ONNX opset %d, %s, %zu parameters)\n", out, onnx.opset,
               onnx.precision == TC_ONNX_FP16 ? "fp16" : "fp32", total);
    else
        printf("wrote %s (%s layout, %zu parameters)\n", out,
               fmt == TC_FORMAT_HF ? "Hugging Face" : "open_clip", total);
    return 0;
}
