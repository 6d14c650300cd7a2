/* forward FLOPs of one image and one text, counted as 2 x multiply-adds of
 * every matrix product (bias adds, LayerNorm, softmax, activations and
 * embedding gathers are left out; they are a few percent at CLIP sizes):
 *   image, T = grid^2 + 1 tokens, C width, per layer A = HS*heads, M mlp:
 *     patch embedding  (T-1) * 3*P*P * C
 *     qkv              T * C * 3A
 *     scores QK^T      T * T * A
 *     weighted sum AV  T * T * A
 *     out proj         T * A * C
 *     mlp              2 * T * C * M
 *     projection       C * E        (the pooled token only)
 *   text, T = context_length (the full causal square is counted, as a dense
 *   attention kernel computes it): the same per-layer terms, plus C * E.
 *   ResNet image tower: every convolution (Ho*Wo*Cout*Cin*k*k) and the
 *   attention pool (D = 32 W channels, T = (S/32)^2 + 1 tokens): the mean
 *   token's query D*D, keys and values 2*T*D*D, scores and sum 2*T*D, c_proj
 *   D*E.
 * used by `inspect` and by the benchmarks for MFU (training ~ 3x forward). */
#ifndef TC_FLOPS_H
#define TC_FLOPS_H

#include "model_config.h"

void tc_model_flops(const tc_model_config *cfg, double *gflops_image, double *gflops_text);

/* activation elements per image a ResNet image tower holds (engine/
 * model_resnet.c): train, every saved tensor plus the backward's scratch;
 * inference, one buffer per role shared by the blocks. for memory estimates */
double tc_resnet_activations(const tc_tower_config *v, int train);

#endif
