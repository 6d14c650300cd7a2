/* a ResNet image tower (open_clip ModifiedResNet in eval mode) as an ONNX
 * graph, computed as engine/model_resnet.c's forward with BatchNorm on its
 * running statistics:
 *
 *   pixel_values (batch, 3, S, S) -> image_embeds (batch, E)
 *   stem    conv1 3x3/2 -> BN -> ReLU -> conv2 3x3 -> BN -> ReLU -> conv3 3x3
 *           -> BN -> ReLU -> AveragePool 2
 *   stages  bottlenecks: conv1 1x1 -> BN -> ReLU -> conv2 3x3 -> BN -> ReLU
 *           -> [AveragePool s when strided] -> conv3 1x1 -> BN, plus the
 *           identity or [AveragePool s] -> downsample 1x1 conv -> BN; ReLU
 *           of the sum
 *   pool    tokens = (mean of the pixels, pixels) + positions (T = g*g + 1,
 *           D = 32 W); q of the mean token, k and v of every token, one
 *           query attention per head, c_proj -> (batch, E)
 *   -> L2-normalised, as open_clip's encode_image(normalize=True)
 *
 * BatchNorm is ONNX's BatchNormalization operator in inference form
 * (running mean and variance, epsilon 1e-5) with the checkpoint's tensors,
 * not folded into the convolutions: the graph holds the model's own
 * numbers, and runtimes fold it themselves. */
#ifndef TC_ONNX_RESNET_H
#define TC_ONNX_RESNET_H

#include "model_config.h"
#include "onnx_graph.h"
#include "params.h"

tc_status tc_onnx_resnet_image(tc_onnx_graph *g, const tc_model_config *cfg,
                               const tc_param_layout *l, const float *params);

#endif
