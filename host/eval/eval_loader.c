#include "eval_loader.h"

void tc_eval_loader_cfg(tc_loader_cfg *lc, tc_model *m, const char *data, tc_tokenizer *tok) {
    const tc_model_config *c = tc_model_cfg(m);
    tc_loader_cfg_init(lc);
    lc->data = data;
    lc->batch_size = tc_model_max_batch(m);
    lc->image_size = c->vision.image_size;
    lc->context_length = c->text.context_length;
    lc->train = 0;
    lc->epochs = 1;
    lc->tokenizer = tok;
}
