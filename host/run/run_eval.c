/* evaluation and reporting during a stage: the zero-shot templates and the
 * zero-shot evaluation (with the deterministic masks in the mask phase; on
 * a fixed subset during a stage, on the whole set at its end), metrics lines
 * (rank 0 alone writes them), the inference speed of the final model and the
 * stage's summary.json (with its training compute and the machine). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caption_templates.h"
#include "fileio.h"
#include "flops.h"
#include "json.h"
#include "scheduler_internal.h"
#include "world.h"
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

static tc_status zeroshot(run_ctx *c, tc_model *m, int64_t max_images, tc_zeroshot_result *r) {
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
    zc.max_images = max_images;
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

int64_t eval_images_during(const run_ctx *c) {
    const tc_exp_zeroshot *z = &c->exp->zero_shot;
    if (z->subset <= 0) return z->max_images;
    return z->max_images > 0 && z->max_images < z->subset ? z->max_images : z->subset;
}

tc_status eval_now(stage_run *r, int64_t max_images, tc_zeroshot_result *zr) {
    run_ctx *c = r->c;
    if (c->exp->zero_shot.dataset == TC_EXP_ZS_NONE) return TC_OK;
    if (r->masked) TC_TRY(l0_deterministic(r));
    for (int k = 0; k < 2 && r->masked; k++)
        TC_TRY(l0_upload_z(c->be, &r->l0[k]));
    return zeroshot(c, r->student, max_images, zr);
}

tc_status log_eval(stage_run *r, const char *event, const tc_zeroshot_result *zr) {
    const char *keys[] = {"zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "images"};
    double vals[] = {zr->top1, zr->top5, zr->mean_per_class_recall, (double)zr->n};
    TC_TRY(metrics_write(r->metrics, r->meta.step, event, 4, keys, vals));
    if (r->tb) {
        char tag[64];
        snprintf(tag, sizeof tag, "%s/zeroshot_top1", event);
        TC_TRY(tc_tb_scalar(r->tb, tag, r->meta.step, (float)zr->top1));
        snprintf(tag, sizeof tag, "%s/zeroshot_top5", event);
        TC_TRY(tc_tb_scalar(r->tb, tag, r->meta.step, (float)zr->top5));
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

/* model FLOPs of the stage's training steps (engine/flops.h): a mask phase
 * at the masked model's full size, the rest at the final size */
static double stage_train_gflop(const stage_run *r, long long *mask_steps) {
    const tc_exp_stage *st = r->st;
    const tc_model_config *teacher = r->teacher ? tc_model_cfg(r->teacher) : NULL;
    tc_step_kind kind = teacher ? TC_STEP_DISTILL : TC_STEP_TRAIN;
    double after = tc_step_gflops(kind, tc_model_cfg(r->student), teacher);
    double during = after;
    *mask_steps = 0;
    if (st->inherit.kind == TC_EXP_INHERIT_AUTO && r->c->res[r->i].has_root) {
        *mask_steps =
            st->inherit.autoc.prune_step < st->steps ? st->inherit.autoc.prune_step : st->steps;
        during = tc_step_gflops(kind, &r->c->res[r->i].root, teacher);
    }
    double images = (double)r->batch * r->c->world;
    return images * ((double)*mask_steps * during + (double)(st->steps - *mask_steps) * after);
}

static void json_field(tc_sbuf *b, const char *key, double v) {
    tc_sbuf_printf(b, ",\n  \"%s\": ", key);
    tc_sbuf_json_number(b, v);
}

tc_status write_summary(stage_run *r, const tc_zeroshot_result *zr, int has_eval,
                        const tc_retrieval_result *rr, double ips, const stage_timing *t) {
    run_ctx *c = r->c;
    char path[PATH_CAP];
    stage_path(c, r->i, "summary.json", path);
    const tc_model_config *cfg = tc_model_cfg(r->student);
    tc_param_counts pc = tc_param_count(tc_model_layout(r->student));
    double gi, gt;
    tc_model_flops(cfg, &gi, &gt);
    long long mask_steps;
    double gflop = stage_train_gflop(r, &mask_steps);
    char cpu[256];
    tc_cpu_model(cpu, sizeof cpu);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    tc_sbuf b = {0};
    tc_sbuf_puts(&b, "{\n  \"stage\": ");
    tc_sbuf_json_string(&b, r->st->name, strlen(r->st->name));
    tc_sbuf_printf(&b, ",\n  \"kind\": \"%s\",\n  \"inheritance\": \"%s\"",
                   tc_exp_stage_kind_name(r->st->kind),
                   tc_exp_inherit_kind_name(r->st->inherit.kind));
    json_field(&b, "params", (double)pc.total);
    json_field(&b, "params_without_token_embedding", (double)(pc.total - pc.token_embedding));
    json_field(&b, "params_vision", (double)pc.vision);
    json_field(&b, "params_text", (double)pc.text);
    json_field(&b, "gflops_image", gi);
    json_field(&b, "gflops_text", gt);
    json_field(&b, "steps", (double)r->st->steps);
    json_field(&b, "images_per_step", (double)r->batch * c->world);
    json_field(&b, "mask_steps", (double)mask_steps);
    json_field(&b, "train_gflop", gflop);
    /* -1: not evaluated */
    json_field(&b, "zeroshot_top1", has_eval ? zr->top1 : -1.0);
    json_field(&b, "zeroshot_top5", has_eval ? zr->top5 : -1.0);
    json_field(&b, "zeroshot_images", has_eval ? (double)zr->n : 0.0);
    json_field(&b, "inference_images_per_s", ips);
    json_field(&b, "train_images_per_s", t->train_ips);
    json_field(&b, "data_wait_fraction", t->wait_fraction);
    json_field(&b, "stage_seconds", t->stage_seconds);
    json_field(&b, "train_seconds", t->train_seconds);
    json_field(&b, "eval_seconds", t->eval_seconds);
    json_field(&b, "resumed_at_step", (double)t->resumed_at);
    tc_sbuf_puts(&b, ",\n  \"cpu\": ");
    tc_sbuf_json_string(&b, cpu, strlen(cpu));
    json_field(&b, "threads", c->exp->threads > 0 ? (double)c->exp->threads : (double)cores);
    const char *core = c->exp->backend == TC_EXP_BACKEND_CPU ? tc_backend_cpu_blas_core() : "";
    tc_sbuf_puts(&b, ",\n  \"blas_core\": ");
    tc_sbuf_json_string(&b, core, strlen(core));
    tc_sbuf_printf(&b, ",\n  \"processes\": %d,\n  \"retrieval\": [", c->world);
    const double *rec[2] = {rr ? rr->i2t_recall : NULL, rr ? rr->t2i_recall : NULL};
    for (int k = 0; k < 6; k++) {
        if (k) tc_sbuf_puts(&b, ", ");
        tc_sbuf_json_number(&b, rec[k / 3] ? rec[k / 3][k % 3] : -1.0);
    }
    tc_sbuf_puts(&b, "]\n}\n");
    char *text;
    TC_TRY(tc_sbuf_finish(&b, &text));
    tc_status s = tc_write_file_atomic(path, text, strlen(text));
    free(text);
    return s;
}
