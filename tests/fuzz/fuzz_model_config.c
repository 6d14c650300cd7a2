/* fuzz target: arbitrary bytes as a model config (open_clip or Hugging Face
 * JSON). an accepted config must validate, build a parameter table, count
 * FLOPs, and survive a round trip through tc_model_config_to_json. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flops.h"
#include "model_config.h"
#include "params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tc_model_config cfg, back;
    if (tc_model_config_parse(&cfg, (const char *)data, size, "fuzz.json") != TC_OK) {
        if (!tc_last_error()[0]) abort();
        return 0;
    }
    if (tc_model_config_validate(&cfg, "fuzz.json") != TC_OK) abort();
    tc_param_layout layout;
    if (tc_param_layout_build(&layout, &cfg) == TC_OK) {
        tc_param_counts c = tc_param_count(&layout);
        if (c.total + c.buffers != layout.total) abort();
        tc_param_layout_free(&layout);
    }
    double gi, gt;
    tc_model_flops(&cfg, &gi, &gt);
    if (!(gi >= 0) || !(gt >= 0)) abort();
    char *json = NULL;
    if (tc_model_config_to_json(&cfg, &json) != TC_OK) abort();
    if (tc_model_config_parse(&back, json, strlen(json), "fuzz.json") != TC_OK) abort();
    /* the name comes from the source; everything else must survive */
    if (memcmp(&back.vision, &cfg.vision, sizeof cfg.vision) != 0 ||
        memcmp(&back.text, &cfg.text, sizeof cfg.text) != 0 || back.embed_dim != cfg.embed_dim ||
        back.activation != cfg.activation)
        abort();
    free(json);
    char *hf = NULL;
    if (tc_model_config_to_hf_json(&cfg, &hf) == TC_OK) free(hf);
    return 0;
}
