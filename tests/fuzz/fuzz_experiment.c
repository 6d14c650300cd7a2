/* fuzz target: bytes -> experiment YAML parse + overrides + validation.
 * an input whose first line starts with "#set " uses the rest of that line
 * as one --set override, so the override path walker is fuzzed too.
 * it must never crash, leak or read out of bounds; errors are expected. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char ov[256];
    const char *ovs[1] = {ov};
    int n_ov = 0;
    if (size > 5 && !memcmp(data, "#set ", 5)) {
        size_t i = 5;
        while (i < size && data[i] != '\n' && i - 5 < sizeof ov - 1)
            i++;
        memcpy(ov, data + 5, i - 5);
        ov[i - 5] = 0;
        if (!memchr(ov, 0, i - 5)) n_ov = 1;
    }
    tc_experiment *e = NULL;
    tc_exp_errors errs;
    /* a base dir that does not exist: model names must not resolve to real files */
    if (tc_experiment_parse((const char *)data, size, "fuzz.yaml", "/nonexistent", ovs, n_ov, &e,
                            &errs) == TC_OK) {
        /* touch everything a consumer reads */
        for (int i = 0; i < e->n_stages; i++) {
            volatile int64_t s = e->stages[i].steps;
            (void)s;
            (void)tc_exp_stage_lr(&e->stages[i], 0);
        }
        tc_experiment_free(e);
    }
    return 0;
}
