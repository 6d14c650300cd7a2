/* fuzz target: arbitrary bytes as a safetensors file. validation must either
 * refuse the input with a message or accept it, and then every tensor of a
 * float dtype must be readable as fp32 within the buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tc_safetensors *f = NULL;
    if (tc_st_open_memory(&f, data, size, "fuzz") != TC_OK) {
        if (!tc_last_error()[0]) abort(); /* a refusal always says why */
        return 0;
    }
    for (int i = 0; i < tc_st_count(f); i++) {
        const tc_st_tensor *t = tc_st_tensor_at(f, i);
        if (tc_st_find(f, t->name) != t) abort(); /* names are unique and findable */
        const uint8_t *p = t->data;
        if (t->end < t->begin || p < data || p + (t->end - t->begin) > data + size) abort();
        if (t->dtype == TC_DT_I32 || t->dtype == TC_DT_I64) {
            int32_t *ids = malloc(t->numel ? (size_t)t->numel * sizeof *ids : 1);
            if (ids)
                (void)tc_st_read_i32(f, t->name, t->ndim, t->shape, ids); /* may refuse range */
            free(ids);
            continue;
        }
        if (!tc_dtype_is_float_readable(t->dtype)) continue;
        float *dst = malloc(t->numel ? (size_t)t->numel * sizeof *dst : 1);
        if (!dst) continue;
        if (tc_st_read_f32(f, t->name, t->ndim, t->shape, dst) != TC_OK) abort();
        free(dst);
    }
    for (int i = 0; i < tc_st_metadata_count(f); i++) {
        const char *k, *v;
        tc_st_metadata_at(f, i, &k, &v);
        if (!k || !v || tc_st_metadata(f, k) == NULL) abort();
    }
    tc_st_close(f);
    return 0;
}
