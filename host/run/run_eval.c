/* evaluation and reporting during a stage: the zero-shot templates and the
 * zero-shot evaluation (with the deterministic masks in the mask phase),
 * metrics lines (rank 0 alone writes them), the inference speed of the final
 * model and the stage's summary.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caption_templates.h"
#include "fileio.h"
#include "flops.h"
#include "scheduler_internal.h"
#include "zeroshot_templates.h"

/* ---- zero-shot ---- */

tc_status load_templates(run_ctx *c) {
    const tc_exp_zeroshot *z = &c->exp->zero_shot;
    if (z->dataset == TC_EXP_ZS_NONE) return TC_OK;
    int n = 0;
    switch (z->templates) {
    case TC_EXP_TEMPLATES_OPENAI:
    case TC_EXP_TEMPLATES_SIMPLE: {
        tc_zeroshot_template_set set =
            z->templates == TC_EXP_TEMPLATES_OPENAI ? TC_TEMPLATES_OPENAI : TC_TEMPLATES_SIMPLE;
        n = tc_zeroshot_template_count(set);
        c->templates = calloc((size_t)n, sizeof *c->templates);
        if (!c->templates) return tc_fail(TC_ERR_OOM, "templates: out of memory");
        for (int i = 0; i < n; i++)
            c->templates[i] = tc_zeroshot_template(set, i);
        break;
    }
    case TC_EXP_TEMPLATES_FMNIST:
        n = tc_caption_template_count();
        c->templates = calloc((size_t)n, sizeof *c->templates);
        if (!c->templates) return tc_fail(TC_ERR_OOM, "templates: out of memory");
        for (int i = 0; i < n; i++)
            c->templates[i] = tc_caption_template(i);
        break;
    case TC_EXP_TEMPLATES_FILE: {
        char *data;
        size_t len;
        TC_TRY(tc_read_file_bounded(z->templates_path, 1 << 20, &data, &len));
        int lines = 1;
        for (size_t i = 0; i < len; i++)
            lines += data[i] == '\n';
        c->templates = calloc((size_t)lines, sizeof *c->templates);
        c->template_storage = calloc((size_t)lines, sizeof *c->template_storage);
        if (!c->templates || !c->template_storage) {
            free(data);
            return tc_fail(TC_ERR_OOM, "templates: out of memory");
        }
        char *save = NULL;
        for (char *line = strtok_r(data, "\r\n", &save); line;
             line = strtok_r(NULL, "\r\n", &save)) {
            if (!*line) continue;
            /* a template names the class as {c} or {} */
            char *t = malloc(strlen(line) + 1);
            if (!t) break;
            size_t k = 0;
            for (const char *p = line; *p; p++) {
                if (p[0] == '{' && p[1] == 'c' && p[2] == '}') {
                    t[k++] = '{';
                    t[k++] = '}';
                    p += 2;
                } else {
                    t[k++] = *p;
                }
            }
            t[k] = 0;
            c->template_storage[n] = t;
            c->templates[n++] = t;
        }
        free(data);
        if (n == 0) return tc_fail(TC_ERR_CONFIG, "%s: no templates", z->templates_path);
        break;
    }
    }
    c->n_templates = n;
    return TC_OK;
}

void free_templates(run_ctx *c) {
    if (c->template_storage) {
        for (int i = 0; i < c->n_templates; i++)
            free(c->template_storage[i]);
        free(c->template_storage);
    }
    free(c->templates);
}

static tc_status zeroshot(run_ctx *c, tc_model *m, tc_zeroshot_result *r) {
    const tc_exp_zeroshot *z = &c->exp->zero_shot;
    tc_zeroshot_cfg zc = {0};
    if (z->dataset == TC_EXP_ZS_FMNIST) {
        zc.data = "fmnist:test";
        zc.kind = "fmnist";
        zc.fmnist_dir = z->path;
    } else {
        zc.data = z->path;
        zc.kind = "folder";
        zc.classnames = z->classnames;
    }
    zc.templates = c->templates;
    zc.n_templates = c->n_templates;
    zc.max_images = z->max_images;
    zc.workers = c->exp->train.workers;
    return tc_zeroshot_eval(m, c->tok, &zc, r);
}

/* ---- metrics, speed, summary ---- */

/* metrics lines: rank 0 alone has the file open */
tc_status metrics_write(tc_metrics_log *m, int64_t step, const char *event, int n,
                        const char **keys, const double *vals) {
    return m ? tc_metrics_write(m, step, event, n, keys, vals) : TC_OK;
}

tc_status metrics_sync(tc_metrics_log *m) {
    return m ? tc_metrics_sync(m) : TC_OK;
}

tc_status eval_now(stage_run *r, tc_zeroshot_result *zr) {
    run_ctx *c = r->c;
    if (c->exp->zero_shot.dataset == TC_EXP_ZS_NONE) return TC_OK;
    if (r->masked) TC_TRY(l0_deterministic(r));
    for (int k = 0; k < 2 && r->masked; k++)
        TC_TRY(l0_upload_z(c->be, &r->l0[k]));
    return zeroshot(c, r->student, zr);
}

tc_status log_eval(stage_run *r, const tc_zeroshot_result *zr) {
    const char *keys[] = {"zeroshot_top1", "zeroshot_top5", "mean_per_class_recall"};
    double vals[] = {zr->top1, zr->top5, zr->mean_per_class_recall};
    TC_TRY(metrics_write(r->metrics, r->meta.step, "eval", 3, keys, vals));
    if (r->tb) {
        TC_TRY(tc_tb_scalar(r->tb, "eval/zeroshot_top1", r->meta.step, (float)zr->top1));
        TC_TRY(tc_tb_scalar(r->tb, "eval/zeroshot_top5", r->meta.step, (float)zr->top5));
    }
    return TC_OK;
}

double inference_speed(run_ctx *c, tc_model *m, int batch) {
    const tc_model_config *cfg = tc_model_cfg(m);
    int S = cfg->vision.image_size;
    float *img = calloc((size_t)batch * 3 * S * S, sizeof *img);
    if (!img) return 0.0;
    for (size_t i = 0; i < (size_t)batch * 3 * S * S; i++)
        img[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    double best = 0.0;
    if (tc_model_encode_image(m, img, batch) == TC_OK && c->be->synchronize(c->be) == TC_OK) {
        for (int rep = 0; rep < 3; rep++) {
            double t0 = wall_seconds();
            if (tc_model_encode_image(m, img, batch) != TC_OK || c->be->synchronize(c->be) != TC_OK)
                break;
            double ips = batch / (wall_seconds() - t0);
            if (ips > best) best = ips;
        }
    }
    free(img);
    return best;
}

tc_status write_summary(stage_run *r, const tc_zeroshot_result *zr, int has_eval,
                        const tc_retrieval_result *rr, double ips, double train_ips,
                        double wait_fraction) {
    char path[PATH_CAP];
    stage_path(r->c, r->i, "summary.json", path);
    const tc_model_config *cfg = tc_model_cfg(r->student);
    tc_param_counts pc = tc_param_count(tc_model_layout(r->student));
    double gi, gt;
    tc_model_flops(cfg, &gi, &gt);
    /* a training step's FLOPs per sample (engine/flops.h), of the final
     * model (a stage pruned midway ran a larger one before the pruning) */
    double train_gflop = tc_step_gflops(r->teacher ? TC_STEP_DISTILL : TC_STEP_TRAIN, cfg,
                                        r->teacher ? tc_model_cfg(r->teacher) : NULL);
    /* -1: not evaluated */
    double top1 = has_eval ? zr->top1 : -1.0, top5 = has_eval ? zr->top5 : -1.0;
    char buf[2048];
    int n = snprintf(
        buf, sizeof buf,
        "{\n  \"stage\": \"%s\",\n  \"kind\": \"%s\",\n  \"inheritance\": \"%s\",\n"
        "  \"params\": %zu,\n  \"params_without_token_embedding\": %zu,\n"
        "  \"params_vision\": %zu,\n  \"params_text\": %zu,\n"
        "  \"gflops_image\": %.6f,\n  \"gflops_text\": %.6f,\n  \"steps\": %lld,\n"
        "  \"zeroshot_top1\": %.6f,\n  \"zeroshot_top5\": %.6f,\n"
        "  \"inference_images_per_s\": %.3f,\n  \"train_images_per_s\": %.3f,\n"
        "  \"train_gflop_per_sample\": %.6f,\n  \"train_gflops_per_s\": %.3f,\n"
        "  \"data_wait_fraction\": %.4f,\n"
        "  \"retrieval\": [%.6f, %.6f, %.6f, %.6f, %.6f, %.6f]\n}\n",
        r->st->name, tc_exp_stage_kind_name(r->st->kind),
        tc_exp_inherit_kind_name(r->st->inherit.kind), pc.total, pc.total - pc.token_embedding,
        pc.vision, pc.text, gi, gt, (long long)r->st->steps, top1, top5, ips, train_ips,
        train_gflop, train_ips * train_gflop, wait_fraction, rr ? rr->i2t_recall[0] : -1.0,
        rr ? rr->i2t_recall[1] : -1.0, rr ? rr->i2t_recall[2] : -1.0, rr ? rr->t2i_recall[0] : -1.0,
        rr ? rr->t2i_recall[1] : -1.0, rr ? rr->t2i_recall[2] : -1.0);
    if (n < 0 || (size_t)n >= sizeof buf) return tc_fail(TC_ERR_IO, "%s: summary too long", path);
    return tc_write_file_atomic(path, buf, (size_t)n);
}
