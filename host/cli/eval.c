/* tinyclip eval --model CKPT: zero-shot classification (and, with
 * --retrieval, image<->text retrieval) of a checkpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_select.h"
#include "caption_templates.h"
#include "checkpoint.h"
#include "cli.h"
#include "eval_metrics.h"
#include "model.h"
#include "retrieval.h"
#include "tokenizer.h"
#include "zeroshot.h"
#include "zeroshot_templates.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tinyclip eval --model CKPT [--config CFG] [--zeroshot fmnist|DIR]\n"
        "                     [--classnames FILE] [--templates openai|simple|fmnist]\n"
        "                     [--retrieval DATA] [--batch N] [--max-images N] [--backend NAME]\n"
        "  --model CKPT      checkpoint (.safetensors, open_clip or Hugging Face folder)\n"
        "  --config CFG      model config when the checkpoint carries none\n"
        "  --zeroshot SET    fmnist (the 10,000 test images) or an image folder with one\n"
        "                    sub-folder per class (class names from --classnames or the folders)\n"
        "  --templates T     prompt set: openai (80), simple (7), fmnist (caption templates)\n"
        "  --retrieval DATA  image-text pairs (webdataset shards or csv): R@1/5/10 both ways\n");
}

int tc_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *config = NULL, *zs = NULL, *classnames = NULL, *templates = NULL,
               *retr = NULL, *backend = "cpu";
    int batch = 256;
    long long max_images = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tinyclip eval: %s needs a value\n", o);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(o, "--model") == 0)
            model = v;
        else if (strcmp(o, "--config") == 0)
            config = v;
        else if (strcmp(o, "--zeroshot") == 0)
            zs = v;
        else if (strcmp(o, "--classnames") == 0)
            classnames = v;
        else if (strcmp(o, "--templates") == 0)
            templates = v;
        else if (strcmp(o, "--retrieval") == 0)
            retr = v;
        else if (strcmp(o, "--batch") == 0)
            batch = atoi(v);
        else if (strcmp(o, "--max-images") == 0)
            max_images = atoll(v);
        else if (strcmp(o, "--backend") == 0)
            backend = v;
        else {
            fprintf(stderr, "tinyclip eval: unknown option %s\n", o);
            usage(stderr);
            return 2;
        }
    }
    if (!model || (!zs && !retr) || batch < 1) {
        usage(stderr);
        return 2;
    }
    int is_fmnist = zs && strcmp(zs, "fmnist") == 0;
    if (!templates) templates = is_fmnist ? "fmnist" : "openai";
    const char **tmpl = NULL;
    int n_tmpl = 0;
    if (strcmp(templates, "fmnist") == 0) {
        n_tmpl = tc_caption_template_count();
        tmpl = calloc((size_t)n_tmpl, sizeof *tmpl);
        for (int i = 0; tmpl && i < n_tmpl; i++)
            tmpl[i] = tc_caption_template(i);
    } else if (strcmp(templates, "openai") == 0 || strcmp(templates, "simple") == 0) {
        tc_zeroshot_template_set set =
            templates[0] == 'o' ? TC_TEMPLATES_OPENAI : TC_TEMPLATES_SIMPLE;
        n_tmpl = tc_zeroshot_template_count(set);
        tmpl = calloc((size_t)n_tmpl, sizeof *tmpl);
        for (int i = 0; tmpl && i < n_tmpl; i++)
            tmpl[i] = tc_zeroshot_template(set, i);
    } else {
        fprintf(stderr, "tinyclip eval: --templates must be openai, simple or fmnist\n");
        return 2;
    }
    tc_model_config hint, cfg;
    tc_param_layout layout = {0};
    float *params = NULL;
    tc_backend *be = NULL;
    tc_tokenizer *tok = NULL;
    tc_model *m = NULL;
    int rc = 1;
    if (!tmpl) {
        tc_fail(TC_ERR_OOM, "out of memory");
        goto done;
    }
    if (config && tc_model_config_load(&hint, config) != TC_OK) goto done;
    if (tc_checkpoint_load(model, config ? &hint : NULL, &cfg, &layout, &params) != TC_OK)
        goto done;
    if (tc_backend_open(backend, 0, &be) != TC_OK) goto done;
    if (tc_tokenizer_create(&tok, NULL) != TC_OK) goto done;
    tc_model_options o = {.max_batch = batch};
    if (tc_model_create(&m, be, &cfg, o) != TC_OK || tc_model_set_params(m, params) != TC_OK)
        goto done;
    if (zs) {
        tc_zeroshot_cfg zc = {.data = is_fmnist ? "fmnist:test" : zs,
                              .kind = is_fmnist ? "fmnist" : "folder",
                              .classnames = classnames,
                              .templates = tmpl,
                              .n_templates = n_tmpl,
                              .max_images = max_images};
        tc_zeroshot_result r;
        if (tc_zeroshot_eval(m, tok, &zc, &r) != TC_OK) goto done;
        printf(
            "zero-shot %s: %lld images, top-1 %.2f%%, top-5 %.2f%%, mean per-class recall %.2f%%\n",
            zs, (long long)r.n, 100.0 * r.top1, 100.0 * r.top5, 100.0 * r.mean_per_class_recall);
    }
    if (retr) {
        tc_retrieval_result r;
        if (tc_retrieval_eval(m, tok, retr, max_images, &r) != TC_OK) goto done;
        printf("retrieval %s: image->text R@1 %.2f%% R@5 %.2f%% R@10 %.2f%%; text->image R@1 "
               "%.2f%% R@5 %.2f%% R@10 %.2f%%\n",
               retr, 100 * r.i2t_recall[0], 100 * r.i2t_recall[1], 100 * r.i2t_recall[2],
               100 * r.t2i_recall[0], 100 * r.t2i_recall[1], 100 * r.t2i_recall[2]);
    }
    rc = 0;
done:
    if (rc) tc_cli_report("eval");
    tc_model_destroy(m);
    if (tok) tc_tokenizer_destroy(tok);
    if (be) be->destroy(be);
    free(params);
    tc_param_layout_free(&layout);
    free(tmpl);
    return rc;
}
