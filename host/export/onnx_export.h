/* ONNX export of any model the engine builds (uniform or irregular towers,
 * per-layer heads and MLP widths, layers without attention or MLP, GELU or
 * QuickGELU), into a folder:
 *
 *   image_encoder.onnx    pixel_values (batch, 3, S, S) -> image_embeds (batch, E)
 *   text_encoder.onnx     input_ids (batch, T) int64   -> text_embeds (batch, E)
 *                         both L2-normalised, as open_clip's
 *                         encode_image / encode_text(normalize=True)
 *   onnx_config.json      the model config, inputs and outputs, precision,
 *                         opset, logit scale, preprocessing and tokenizer
 *   preprocess_cfg.json   open_clip's preprocess config (size, mode, mean,
 *                         std, interpolation, resize_mode, fill_color)
 *   bpe_simple_vocab_16e6.txt.gz   the vocabulary of open_clip's tokenizer
 *   vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
 *                         the same vocabulary for transformers' CLIPTokenizer
 *
 * image preprocessing and tokenization stay outside the graphs. the graphs
 * are ModelProto messages of the onnx.proto that Debian's libonnx-dev ships,
 * packed by protobuf-c. everything that can fail on the model (a missing or
 * misshapen tensor, an unsupported option, the vocabulary) fails before the
 * first file is written; every file is written to a temporary file and
 * renamed over its target, so an existing export is never half-overwritten. */
#ifndef TC_ONNX_EXPORT_H
#define TC_ONNX_EXPORT_H

#include "model_config.h"
#include "onnx_graph.h"
#include "params.h"

typedef struct {
    tc_onnx_precision precision; /* fp32 [default] or fp16 (weights, activations, I/O) */
    int opset;                   /* TC_ONNX_OPSET_MIN..MAX [17] */
    int external_data;           /* 1: weights in <graph>.onnx.data; 0: only when a graph
                                  * would pass the 2 GiB protobuf limit */
} tc_onnx_options;

tc_onnx_options tc_onnx_defaults(void);

/* "fp32" / "fp16" -> precision; -1 for anything else */
int tc_onnx_parse_precision(const char *s);

tc_status tc_export_onnx(const char *dir, const tc_model_config *cfg, const tc_param_layout *l,
                         const float *params, const tc_onnx_options *opt);

#endif
