/* reading the open_clip parity fixtures (tests/fixtures/parity, .../breadth):
 * a model config and state_dict loaded through the checkpoint code, its io
 * file, and a CPU model made from them. */
#ifndef TC_TEST_PARITY_H
#define TC_TEST_PARITY_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "model.h"
#include "safetensors.h"
#include "train.h"

typedef struct {
    const char *name;
    tc_model_config cfg;
    tc_param_layout layout;
    float *params;
    tc_safetensors *io;
    tc_backend *be;
    tc_model *model; /* a training model of batch B, the fixture's weights set */
    int B;           /* rows of the io batch ("tokens") */
} parity;

/* tests/fixtures/<dir>/<name>.json, _model.safetensors, _io.safetensors */
void parity_setup(parity *p, const char *dir, const char *name);
void parity_teardown(parity *p);

/* io tensors (malloc'd; fails the test when absent); numel may be NULL */
float *parity_f32(parity *p, const char *name, size_t *numel);
int32_t *parity_i32(parity *p, const char *name, size_t *numel);
/* 1 when the io file has the tensor */
int parity_has(parity *p, const char *name);
float parity_meta_float(parity *p, const char *key);

/* the training trace's recipe from the io metadata (lr, wd, betas, eps,
 * warm-up + cosine over `steps`, grad_clip) */
tc_optim_config parity_recipe(parity *p);
/* open_clip's ClipLoss: the contrastive loss alone, learned logit scale */
tc_loss_config parity_clip_loss(void);

#endif
