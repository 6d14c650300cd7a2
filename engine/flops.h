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
 * used by `inspect`, the run report and the benchmarks. */
#ifndef TC_FLOPS_H
#define TC_FLOPS_H

#include "model_config.h"

void tc_model_flops(const tc_model_config *cfg, double *gflops_image, double *gflops_text);

/* activation elements per image a ResNet image tower holds (engine/
 * model_resnet.c): train, every saved tensor plus the backward's scratch;
 * inference, one buffer per role shared by the blocks. for memory estimates */
double tc_resnet_activations(const tc_tower_config *v, int train);

/* what one sample (an image and its caption) of an iteration costs, the
 * model FLOPs that MFU divides by; F = the forward of both towers above:
 *   TC_STEP_INFER    the image tower's forward                  Fi
 *   TC_STEP_TRAIN    forward and backward of both towers        3 F
 *   TC_STEP_DISTILL  the teacher's forward of both towers, then
 *                    the student's forward and backward        F(teacher) + 3 F(student)
 * a backward is counted as twice its forward (the products for the inputs'
 * and for the weights' gradients), the common convention. left out: the
 * similarity matrix and loss (B x B per sample pair, small), the optimizer,
 * and recomputation (micro-batches encode the student twice: executed, not
 * model FLOPs). one function for `tinyclip bench`, the run report and
 * scripts/gpu_check.sh (through the bench's output). teacher is used by
 * TC_STEP_DISTILL only. */
typedef enum { TC_STEP_INFER = 0, TC_STEP_TRAIN = 1, TC_STEP_DISTILL = 2 } tc_step_kind;
double tc_step_gflops(tc_step_kind kind, const tc_model_config *student,
                      const tc_model_config *teacher);

#endif
