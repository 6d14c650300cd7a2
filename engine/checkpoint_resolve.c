/* finding a checkpoint's weights and config: a directory in one of the
 * known layouts, or a weights file with its config beside it */
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_keys.h"
#include "fileio.h"

tc_status tc_checkpoint_resolve(const char *path, char **weights_path, char **config_path) {
    *weights_path = *config_path = NULL;
    static const char *const pairs[][2] = {
        {"open_clip_model.safetensors", "open_clip_config.json"},
        {"open_clip_pytorch_model.safetensors", "open_clip_config.json"},
        {"model.safetensors", "config.json"},
    };
    if (tc_path_is_dir(path)) {
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
            char *w = tc_path_join(path, pairs[i][0]);
            if (!w) return tc_fail(TC_ERR_OOM, "out of memory");
            const char *why = tc_path_not_regular(w);
            if (why && strcmp(why, "no such file or directory") != 0) {
                /* there, but a FIFO, a folder, ...: said as what it is */
                tc_status s = tc_fail(TC_ERR_IO, "%s: %s", w, why);
                free(w);
                return s;
            }
            if (!why) {
                char *c = tc_path_join(path, pairs[i][1]);
                if (c && !tc_path_is_file(c)) {
                    free(c);
                    c = NULL;
                }
                *weights_path = w;
                *config_path = c;
                return TC_OK;
            }
            free(w);
        }
        static const char *const others[] = {
            "model.safetensors.index.json", "open_clip_pytorch_model.bin", "pytorch_model.bin",
            "open_clip_pytorch_model.pth",  "pytorch_model.pth",           "model.pth"};
        for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
            char *o = tc_path_join(path, others[i]);
            int exists = o && tc_path_is_file(o);
            free(o);
            if (exists && i == 0)
                return tc_fail(TC_ERR_UNSUPPORTED,
                               "%s: sharded Hugging Face checkpoints (%s) are not supported; "
                               "merge the shards into one model.safetensors",
                               path, others[i]);
            if (exists)
                return tc_fail(TC_ERR_UNSUPPORTED,
                               "%s: holds only a torch pickle (%s); this program reads "
                               "safetensors: convert it first (safetensors.torch.save_file)",
                               path, others[i]);
        }
        return tc_fail(TC_ERR_IO,
                       "%s: no weights found (expected open_clip_model.safetensors or "
                       "model.safetensors)",
                       path);
    }
    const char *why = tc_path_not_regular(path);
    if (why) return tc_fail(TC_ERR_IO, "%s: %s", path, why);
    *weights_path = strdup(path);
    if (!*weights_path) return tc_fail(TC_ERR_OOM, "out of memory");
    /* a config beside the file: <stem>.json, then the two standard names */
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) : 0;
    char *dir = slash ? strndup(path, dir_len ? dir_len : 1) : strdup(".");
    if (!dir) return tc_fail(TC_ERR_OOM, "out of memory");
    char *cands[3] = {NULL, NULL, NULL};
    if (tc_ckpt_ends_with(path, ".safetensors")) {
        size_t n = strlen(path) - strlen(".safetensors");
        cands[0] = malloc(n + 6);
        if (cands[0]) {
            memcpy(cands[0], path, n);
            memcpy(cands[0] + n, ".json", 6);
        }
    }
    const char *base = slash ? slash + 1 : path;
    if (tc_ckpt_starts_with(base, "open_clip"))
        cands[1] = tc_path_join(dir, "open_clip_config.json");
    else if (strcmp(base, "model.safetensors") == 0)
        cands[1] = tc_path_join(dir, "config.json");
    free(dir);
    for (int i = 0; i < 3; i++) {
        if (cands[i] && !*config_path && tc_path_is_file(cands[i])) {
            *config_path = cands[i];
            cands[i] = NULL;
        }
        free(cands[i]);
    }
    return TC_OK;
}
