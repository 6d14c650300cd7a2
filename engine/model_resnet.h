/* a ResNet image tower (open_clip ModifiedResNet) on a backend: the part of
 * engine/model.c's model that a ResNet vision config replaces. internal to
 * the engine; tc_model (engine/model.h) is the public face.
 *
 *   stem      conv1 3x3/2 -> BN+ReLU -> conv2 3x3 -> BN+ReLU -> conv3 3x3 ->
 *             BN+ReLU -> AvgPool2d(2)                      (W/2, W/2, W channels)
 *   stages    bottlenecks: conv1 1x1 -> BN+ReLU -> conv2 3x3 -> BN+ReLU ->
 *             [AvgPool(2) when strided] -> conv3 1x1 -> BN, plus the identity
 *             or [AvgPool(2)] -> 1x1 conv -> BN; ReLU of the sum
 *   pool      tokens = (mean, pixels) + positions; q of the mean token, k and
 *             v of every token; one-query attention; c_proj -> (B, E)
 *   features  L2-normalised
 *
 * BatchNorm follows the model's mode (tc_model_set_bn_mode): batch
 * statistics in training (running statistics updated once per TC_BN_TRAIN
 * forward), running statistics in eval. the backward needs a batch-statistics
 * forward. activations are NCHW; in an inference tower they share one buffer
 * per role across blocks. nothing is allocated after creation. */
#ifndef TC_MODEL_RESNET_H
#define TC_MODEL_RESNET_H

#include <stddef.h>

#include "backend.h"
#include "model_config.h"
#include "params.h"
#include "rng.h"

typedef struct tc_rn_tower tc_rn_tower;

/* what the tower uses of its model: the backend, the parameter buffers
 * (fp32 masters, compute copy, gradients or NULL) and the model's allocator,
 * whose buffers the model frees */
typedef struct {
    tc_backend *be;
    const tc_param_layout *layout;
    float *params;
    tc_act *weights;
    float *grads;
    tc_status (*alloc)(void *ctx, size_t bytes, void **out);
    void *alloc_ctx;
} tc_rn_env;

tc_status tc_rn_create(tc_rn_tower **out, const tc_rn_env *env, const tc_model_config *cfg,
                       int max_batch, int train);
void tc_rn_destroy(tc_rn_tower *t);

/* images: device (B,3,S,S); features: device (B,E), L2-normalised */
void tc_rn_forward(tc_rn_tower *t, const float *images, int B, tc_bn_mode mode);
float *tc_rn_features(tc_rn_tower *t);
float *tc_rn_images(tc_rn_tower *t);
/* parameter gradients += from d(features) of the last forward (batch statistics) */
tc_status tc_rn_backward(tc_rn_tower *t, const float *dfeatures);

/* open_clip's initialisation of the tower's tensors in a host buffer */
void tc_rn_init(float *params, const tc_param_layout *layout, const tc_model_config *cfg,
                tc_prng *r);

#endif
