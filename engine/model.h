/* a CLIP model on a backend: both towers, forward and backward, written once
 * against engine/backend.h as a straight list of operations per layer (a
 * ResNet image tower in engine/model_resnet.c).
 *
 * memory: parameters (fp32 master), the compute copy of the weights, gradients
 * and every activation are allocated at creation for at most max_batch
 * samples per tower; nothing is allocated in a step. an inference-only model
 * (train = 0) keeps one layer's activations and reuses them for every layer.
 *
 * use: create, set or load parameters, then per step
 *   tc_model_encode_image / tc_model_encode_text   (features: L2-normalised, fp32, device)
 *   tc_model_backward_image / tc_model_backward_text (accumulate parameter gradients)
 * the caller (engine/train.c) computes the loss and the feature gradients. */
#ifndef TC_MODEL_H
#define TC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "model_config.h"
#include "params.h"

typedef struct tc_model tc_model;

typedef struct {
    int max_batch; /* largest batch either tower will see */
    int train;     /* allocate gradients and keep every layer's activations */
    int masked;    /* allocate what the structured masks of automatic inheritance need */
} tc_model_options;

/* structured masks of one tower (docs/method.md §3.1), device fp32 buffers:
 *   hidden (C)                  residual-stream dims, shared by all layers
 *   heads  (layers, heads_stride)   per-head gates of each layer
 *   inter  (layers, inter_stride)   MLP units of each layer
 * the forward multiplies embeddings and attention and MLP outputs by hidden,
 * head outputs by heads, MLP activations by inter, and runs every LayerNorm
 * over the dims where hidden != 0 (zero elsewhere), as the original. the backward adds the
 * mask gradients into dhidden / dheads / dinter when those are not NULL. */
typedef struct {
    float *hidden, *heads, *inter;
    float *dhidden, *dheads, *dinter;
    int heads_stride, inter_stride;
} tc_tower_masks;

tc_status tc_model_create(tc_model **out, tc_backend *be, const tc_model_config *cfg,
                          tc_model_options opt);
void tc_model_destroy(tc_model *m);

const tc_model_config *tc_model_cfg(const tc_model *m);
const tc_param_layout *tc_model_layout(const tc_model *m);
tc_backend *tc_model_backend(const tc_model *m);
int tc_model_max_batch(const tc_model *m);

/* device buffers, in layout order */
float *tc_model_params(tc_model *m);
float *tc_model_grads(tc_model *m); /* NULL for an inference model */
/* the weights as the forward reads them (== params on fp32 backends) */
tc_act *tc_model_compute_weights(tc_model *m);

/* host <-> device, whole parameter buffer in layout order; set refreshes the
 * compute copy */
tc_status tc_model_set_params(tc_model *m, const float *host);
tc_status tc_model_get_params(tc_model *m, float *host);
/* after the master weights changed on the device (optimizer, inheritance) */
void tc_model_refresh_compute(tc_model *m);

/* open_clip's initialisation for training from scratch, seeded */
tc_status tc_model_init_random(tc_model *m, uint64_t seed);

/* every id of host_ids (B, context) inside the vocabulary: encode_text
 * checks it; callers of encode_text_device check it themselves */
tc_status tc_model_check_ids(const tc_model *m, const int32_t *host_ids, int B);

/* images: host (B,3,S,S) fp32 normalised planar; ids: host (B,context) */
tc_status tc_model_encode_image(tc_model *m, const float *host_images, int B);
tc_status tc_model_encode_text(tc_model *m, const int32_t *host_ids, int B);
/* same, from inputs already on the device */
tc_status tc_model_encode_image_device(tc_model *m, const float *images, int B);
tc_status tc_model_encode_text_device(tc_model *m, const int32_t *ids, int B);

/* features of the last encode: device (B,E), L2-normalised */
float *tc_model_image_features(tc_model *m);
float *tc_model_text_features(tc_model *m);
/* device input buffers the encode_*_device functions may be given */
float *tc_model_image_input(tc_model *m);
int32_t *tc_model_text_input(tc_model *m);

/* dfeatures: device (B,E) gradient of the loss w.r.t. the normalised features
 * of the last encode of that tower; parameter gradients accumulate (+=) */
tc_status tc_model_backward_image(tc_model *m, const float *dfeatures);
tc_status tc_model_backward_text(tc_model *m, const float *dfeatures);
void tc_model_zero_grads(tc_model *m);

/* called during a backward as soon as a part of a tower has its final
 * parameter gradients: layer == that tower's layer count after the head
 * (final LayerNorm, projection), layer l after residual block l (the blocks
 * run from the last to the first). the embeddings' gradients are final when
 * tc_model_backward_* returns. the data-parallel trainer starts the
 * all-reduce of every gradient bucket that became complete (engine/train.c). */
typedef void (*tc_backward_hook)(void *ctx, tc_tower_id tower, int layer);
void tc_model_set_backward_hook(tc_model *m, tc_backward_hook fn, void *ctx);

/* BatchNorm statistics of the following image forwards (ResNet towers;
 * a transformer tower ignores it): TC_BN_EVAL (the default: running
 * statistics, as model.eval()), TC_BN_TRAIN (the batch's, and the running
 * statistics take a momentum step, as model.train()), TC_BN_REPLAY (the
 * batch's, running statistics untouched: a forward run again for its
 * activations). a backward needs a batch-statistics forward. the trainer
 * sets TRAIN/REPLAY around the student's forwards and EVAL after them. */
void tc_model_set_bn_mode(tc_model *m, tc_bn_mode mode);

/* installs masks for the following forwards and backwards (NULL: none); the
 * model must have been created with options.masked. the model keeps the
 * pointers, not copies. */
tc_status tc_model_set_masks(tc_model *m, const tc_tower_masks *vision, const tc_tower_masks *text);

/* bytes the model holds on its backend */
size_t tc_model_device_bytes(const tc_model *m);

#endif
