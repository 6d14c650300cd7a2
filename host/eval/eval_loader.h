/* the loader of an evaluation: every sample of a data set once, in order,
 * without augmentation, at the model's image size and context length and its
 * largest batch */
#ifndef TC_EVAL_LOADER_H
#define TC_EVAL_LOADER_H

#include "loader.h"
#include "model.h"
#include "tokenizer.h"

void tc_eval_loader_cfg(tc_loader_cfg *lc, tc_model *m, const char *data, tc_tokenizer *tok);

#endif
