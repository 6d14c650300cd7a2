/* stage plan: architectures, parameter counts and memory per stage
 * (contract and the memory formula in stage_plan.h). */
#include "stage_plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "flops.h"

/* a failure named by where the experiment gave the value */
static tc_status at(const tc_experiment *exp, tc_exp_loc loc, const char *what, tc_status s) {
    if (loc.from_set) return tc_fail_context(s, "--set #%d: %s", loc.from_set, what);
    if (loc.line > 0)
        return tc_fail_context(s, "%s:%d:%d: %s", exp->source, loc.line, loc.column, what);
    return tc_fail_context(s, "%s: %s", exp->source, what);
}

static tc_status load_cfg(const tc_experiment *exp, const char *path, tc_exp_loc loc, const char *what,
                          tc_model_config *cfg) {
    tc_status s = tc_model_config_load(cfg, path);
    if (s == TC_OK) s = tc_model_config_validate(cfg, path);
    return s == TC_OK ? TC_OK : at(exp, loc, what, s);
}

/* an outside checkpoint against its model config, without reading its weights */
static tc_status check_external(const tc_experiment *exp, const tc_exp_external *x,
                                const char *what) {
    tc_model_config hint, got;
    tc_status s = tc_model_config_load(&hint, x->model);
    if (s != TC_OK) return at(exp, x->model_loc, what, s);
    s = tc_checkpoint_check(x->checkpoint, &hint, &got);
    return s == TC_OK ? TC_OK : at(exp, x->checkpoint_loc, what, s);
}

tc_status tc_stage_plan_check_checkpoints(const tc_stage_plan *p) {
    const tc_experiment *exp = p->exp;
    if (exp->teacher.present && exp->teacher.stage < 0 && exp->teacher.ext.checkpoint)
        TC_TRY(check_external(exp, &exp->teacher.ext, "teacher.checkpoint"));
    for (int i = 0; i < exp->n_stages; i++) {
        const tc_exp_stage *st = &exp->stages[i];
        char what[128];
        snprintf(what, sizeof what, "stages.%d (%s).parent.checkpoint", i, st->name);
        if (st->parent_ext.checkpoint) TC_TRY(check_external(exp, &st->parent_ext, what));
    }
    return TC_OK;
}

static tc_status count_params(const tc_model_config *cfg, tc_param_counts *out, const char *what) {
    tc_param_layout layout;
    memset(&layout, 0, sizeof layout);
    tc_status s = tc_param_layout_build(&layout, cfg);
    if (s != TC_OK) return tc_fail_context(s, "%s", what);
    *out = tc_param_count(&layout);
    tc_param_layout_free(&layout);
    return TC_OK;
}

/* attention + MLP parameters of a tower (the auto-inheritance denominator) */
static size_t tower_prunable(const tc_tower_config *t) {
    size_t n = 0, c = (size_t)t->width;
    for (int l = 0; l < t->layers; l++) {
        size_t a = (size_t)t->heads[l] * t->head_width, m = (size_t)t->mlp_width[l];
        if (a) n += 4 * c * a + 3 * a + c;
        if (m) n += 2 * c * m + m + c;
    }
    return n;
}

static double tower_acts(const tc_tower_config *t, int tokens, double a, double b) {
    double sum = 4.0 * t->width, heads = 0;
    for (int l = 0; l < t->layers; l++) {
        sum += 4.0 * t->heads[l] * t->head_width + 2.0 * t->mlp_width[l];
        heads += t->heads[l];
    }
    return a * b * tokens * sum + a * b * (double)tokens * tokens * heads;
}

static double tower_layer_acts(const tc_tower_config *t, int tokens, double a, double b) {
    int maxh = 0, maxm = 0;
    for (int l = 0; l < t->layers; l++) {
        if (t->heads[l] > maxh) maxh = t->heads[l];
        if (t->mlp_width[l] > maxm) maxm = t->mlp_width[l];
    }
    return a * b * tokens * (4.0 * t->width + 4.0 * maxh * t->head_width + 2.0 * maxm) +
           a * b * (double)tokens * tokens * maxh;
}

static double total_params(const tc_model_config *cfg) {
    tc_param_counts c;
    if (count_params(cfg, &c, "memory estimate") != TC_OK) return 0;
    return (double)c.total;
}

tc_stage_memory tc_stage_memory_estimate(const tc_model_config *s, const tc_model_config *t, int batch,
                                         int cuda_bf16) {
    tc_stage_memory m;
    memset(&m, 0, sizeof m);
    double c = cuda_bf16 ? 2 : 0, a = cuda_bf16 ? 2 : 4, b = batch;
    m.student = (16 + c) * total_params(s);
    m.activations = (s->vision.resnet ? a * b * tc_resnet_activations(&s->vision, 1)
                                      : tower_acts(&s->vision, tc_vision_tokens(&s->vision), a, b)) +
                    tower_acts(&s->text, s->text.context_length, a, b);
    if (t) {
        m.teacher = (4 + c) * total_params(t) +
                    (t->vision.resnet
                         ? a * b * tc_resnet_activations(&t->vision, 0)
                         : tower_layer_acts(&t->vision, tc_vision_tokens(&t->vision), a, b)) +
                    tower_layer_acts(&t->text, t->text.context_length, a, b);
    }
    m.logits = 4.0 * 4.0 * b * b;
    m.total = m.student + m.teacher + m.activations + m.logits;
    return m;
}

void tc_stage_plan_free(tc_stage_plan *p) {
    if (!p) return;
    free(p->entries);
    free(p);
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

tc_status tc_stage_plan_build(const tc_experiment *exp, tc_stage_plan **out) {
    *out = NULL;
    tc_stage_plan *p = calloc(1, sizeof *p);
    if (!p) return tc_fail(TC_ERR_OOM, "stage plan: out of memory");
    p->exp = exp;
    p->n = exp->n_stages;
    p->entries = calloc((size_t)(exp->n_stages ? exp->n_stages : 1), sizeof *p->entries);
    if (!p->entries) {
        free(p);
        return tc_fail(TC_ERR_OOM, "stage plan: out of memory");
    }
    tc_status s = TC_OK;
    /* the external teacher, loaded once */
    tc_model_config ext_teacher;
    int have_ext_teacher = 0;
    if (exp->teacher.present && exp->teacher.stage < 0 && exp->teacher.ext.model) {
        s = load_cfg(exp, exp->teacher.ext.model, exp->teacher.ext.model_loc, "teacher.model", &ext_teacher);
        if (s != TC_OK) goto fail;
        have_ext_teacher = 1;
    }
    for (int i = 0; i < exp->n_stages; i++) {
        const tc_exp_stage *st = &exp->stages[i];
        tc_stage_plan_entry *e = &p->entries[i];
        e->index = i;
        e->stage = st;
        char what[128];
        snprintf(what, sizeof what, "stages.%d (%s).model", i, st->name);
        int is_auto = st->kind == TC_EXP_STAGE_DISTILL && st->inherit.kind == TC_EXP_INHERIT_AUTO;
        if (st->parent >= 0) e->deps[e->n_deps++] = st->parent;
        if (st->kind == TC_EXP_STAGE_DISTILL && exp->teacher.stage >= 0) e->deps[e->n_deps++] = exp->teacher.stage;
        if (st->model_stage >= 0) e->deps[e->n_deps++] = st->model_stage;

        if (st->model) {
            s = load_cfg(exp, st->model, st->model_loc, what, &e->model);
            if (s != TC_OK) goto fail;
            snprintf(e->model_source, sizeof e->model_source, "%s", base_name(st->model));
        } else if (st->model_stage >= 0) {
            const tc_stage_plan_entry *k = &p->entries[st->model_stage];
            e->model = k->model;
            e->estimated = k->estimated || k->stage->inherit.kind == TC_EXP_INHERIT_AUTO;
            snprintf(e->model_source, sizeof e->model_source, "the final architecture of '%s'%s", k->stage->name,
                     e->estimated ? " (known after its pruning; planned at full size)" : "");
        } else if (st->parent >= 0) {
            const tc_stage_plan_entry *k = &p->entries[st->parent];
            int parent_auto = k->stage->inherit.kind == TC_EXP_INHERIT_AUTO;
            e->model = k->model;
            if (is_auto) {
                e->estimated = k->estimated;
                snprintf(e->model_source, sizeof e->model_source, "masks over '%s'%s", k->stage->name,
                         parent_auto ? " re-expanded to its full size" : "");
            } else {
                e->estimated = k->estimated || parent_auto;
                snprintf(e->model_source, sizeof e->model_source, "a copy of '%s'%s", k->stage->name,
                         parent_auto ? " (pruned at run time; planned at full size)" : "");
            }
        } else if (st->parent_ext.model) {
            snprintf(what, sizeof what, "stages.%d (%s).parent.model", i, st->name);
            s = load_cfg(exp, st->parent_ext.model, st->parent_ext.model_loc, what, &e->model);
            if (s != TC_OK) goto fail;
            snprintf(e->model_source, sizeof e->model_source, "%s %s", is_auto ? "masks over" : "a copy of",
                     base_name(st->parent_ext.model));
        } else {
            s = tc_fail(TC_ERR_CONFIG, "%s: stages.%d (%s): no architecture", exp->source, i, st->name);
            goto fail;
        }
        snprintf(what, sizeof what, "stages.%d (%s)", i, st->name);
        s = count_params(&e->model, &e->params, what);
        if (s != TC_OK) goto fail;
        e->params_after = (double)e->params.total;
        if (is_auto && st->inherit.autoc.vision && e->model.vision.resnet) {
            s = tc_fail(TC_ERR_CONFIG,
                        "%s: stages.%d (%s).inheritance: automatic inheritance masks transformer "
                        "heads, MLP units and hidden dims; a ResNet image tower has none (set "
                        "vision: false, or use manual inheritance)",
                        exp->source, i, st->name);
            goto fail;
        }
        if (is_auto) {
            const tc_exp_auto *a = &st->inherit.autoc;
            e->prunable = (a->vision ? tower_prunable(&e->model.vision) : 0) +
                          (a->text ? tower_prunable(&e->model.text) : 0);
            e->params_after = (double)e->params.total - (double)a->target_sparsity * (double)e->prunable;
        }
        if (st->kind == TC_EXP_STAGE_DISTILL) {
            if (exp->teacher.stage >= 0) {
                e->teacher = p->entries[exp->teacher.stage].model;
                e->has_teacher = 1;
            } else if (have_ext_teacher) {
                e->teacher = ext_teacher;
                e->has_teacher = 1;
            }
            if (e->has_teacher) {
                s = count_params(&e->teacher, &e->teacher_params, "teacher");
                if (s != TC_OK) goto fail;
            }
        }
        e->memory = tc_stage_memory_estimate(&e->model, e->has_teacher ? &e->teacher : NULL, st->batch,
                                             exp->backend == TC_EXP_BACKEND_CUDA && exp->precision == TC_EXP_PREC_BF16);
    }
    *out = p;
    return TC_OK;
fail:
    tc_stage_plan_free(p);
    return s;
}

/* ---------------------------------------------------------------- printing */

static void human(char *buf, size_t cap, double n) {
    if (n >= 1e9) snprintf(buf, cap, "%.2fG", n / 1e9);
    else if (n >= 1e6) snprintf(buf, cap, "%.2fM", n / 1e6);
    else if (n >= 1e3) snprintf(buf, cap, "%.1fk", n / 1e3);
    else snprintf(buf, cap, "%.0f", n);
}

static void bytes_h(char *buf, size_t cap, double n) {
    if (n >= 1024.0 * 1024 * 1024) snprintf(buf, cap, "%.2f GiB", n / (1024.0 * 1024 * 1024));
    else snprintf(buf, cap, "%.1f MiB", n / (1024.0 * 1024));
}

static void tower_summary(char *buf, size_t cap, const tc_tower_config *t, int vision) {
    if (t->resnet) {
        snprintf(buf, cap, "ResNet [%d, %d, %d, %d] w%d, attention pool %d (%d heads of %d) on %d",
                 t->stages[0], t->stages[1], t->stages[2], t->stages[3], t->width,
                 tc_resnet_pool_width(t), tc_resnet_pool_heads(t), t->head_width, t->image_size);
        return;
    }
    int hmin = t->heads[0], hmax = t->heads[0], mmin = t->mlp_width[0], mmax = t->mlp_width[0];
    for (int l = 1; l < t->layers; l++) {
        if (t->heads[l] < hmin) hmin = t->heads[l];
        if (t->heads[l] > hmax) hmax = t->heads[l];
        if (t->mlp_width[l] < mmin) mmin = t->mlp_width[l];
        if (t->mlp_width[l] > mmax) mmax = t->mlp_width[l];
    }
    char h[32], m[32];
    if (hmin == hmax) snprintf(h, sizeof h, "%d", hmin); else snprintf(h, sizeof h, "%d-%d", hmin, hmax);
    if (mmin == mmax) snprintf(m, sizeof m, "%d", mmin); else snprintf(m, sizeof m, "%d-%d", mmin, mmax);
    if (vision)
        snprintf(buf, cap, "%dL w%d heads %s mlp %s, patch %d on %d (%d tokens)", t->layers, t->width, h, m,
                 t->patch_size, t->image_size, tc_vision_tokens(t));
    else
        snprintf(buf, cap, "%dL w%d heads %s mlp %s, context %d, vocab %d", t->layers, t->width, h, m,
                 t->context_length, t->vocab_size);
}

static void print_inheritance(FILE *f, const tc_exp_stage *st) {
    const tc_exp_inheritance *in = &st->inherit;
    if (in->kind == TC_EXP_INHERIT_NONE) {
        fprintf(f, "    inheritance  none\n");
        return;
    }
    if (in->kind == TC_EXP_INHERIT_MANUAL) {
        fprintf(f, "    inheritance  manual:");
        const tc_exp_manual_tower *tw[2] = {&in->vision, &in->text};
        for (int k = 0; k < 2; k++) {
            fprintf(f, " %s ", k ? "text" : "vision");
            if (!tw[k]->inherit) fprintf(f, "none (random init)");
            else if (tw[k]->layers == TC_EXP_LAYERS_INTERVAL_FRONT) fprintf(f, "interval_front/leading");
            else {
                fprintf(f, "layers [");
                for (int i = 0; i < tw[k]->n_layers; i++) fprintf(f, "%s%d", i ? "," : "", tw[k]->layer_list[i]);
                fprintf(f, "]/leading");
            }
            if (!k) fprintf(f, ";");
        }
        fprintf(f, "\n");
        return;
    }
    const tc_exp_auto *a = &in->autoc;
    fprintf(f, "    inheritance  auto: sparsity %.3g -> %.3g (warm-up %lld), prune at step %lld, masks on %s%s%s\n",
            (double)a->start_sparsity, (double)a->target_sparsity, (long long)a->sparsity_warmup,
            (long long)a->prune_step, a->vision ? "vision" : "", a->vision && a->text ? "+" : "", a->text ? "text" : "");
    fprintf(f,
            "                 lambda init %g lr %g, mask lr %g, round kept units to %s, shape %s\n",
            (double)a->lambda_init, (double)a->lambda_lr, (double)a->mask_lr,
            a->round_to ? (a->round_to == 8 ? "8" : "64") : "1 (no rounding)",
            a->regular ? "regular (open_clip ViT)" : "irregular");
}

void tc_stage_plan_print(FILE *f, const tc_stage_plan *p) {
    const tc_experiment *x = p->exp;
    fprintf(f, "experiment %s (%s): %d stage%s, backend %s %s, seed %lld, out %s\n", x->name, x->source, p->n,
            p->n == 1 ? "" : "s", x->backend == TC_EXP_BACKEND_CUDA ? "cuda" : "cpu",
            x->precision == TC_EXP_PREC_BF16 ? "bf16" : "fp32", (long long)x->seed, x->out_dir);
    fprintf(f, "data: %s%s%s", tc_exp_data_source_name(x->train.source), x->train.path ? " " : "",
            x->train.path ? x->train.path : "");
    if (x->train.num_samples > 0) fprintf(f, ", %lld samples/epoch", (long long)x->train.num_samples);
    fprintf(f, "\n");
    if (x->zero_shot.dataset != TC_EXP_ZS_NONE)
        fprintf(f, "eval: zero-shot %s%s%s\n", x->zero_shot.dataset == TC_EXP_ZS_FMNIST ? "fmnist" : "folder ",
                x->zero_shot.dataset == TC_EXP_ZS_FOLDER ? x->zero_shot.path : "",
                x->retrieval.enabled ? ", retrieval" : "");
    if (x->teacher.present) {
        if (x->teacher.stage >= 0)
            fprintf(f, "teacher: stage '%s', logit scale %g\n", x->stages[x->teacher.stage].name,
                    (double)x->teacher.logit_scale);
        else
            fprintf(f, "teacher: %s (%s), logit scale %g\n", x->teacher.ext.checkpoint ? x->teacher.ext.checkpoint : "?",
                    x->teacher.ext.model ? base_name(x->teacher.ext.model) : "?", (double)x->teacher.logit_scale);
    }
    double total_steps = 0;
    for (int i = 0; i < p->n; i++) {
        const tc_stage_plan_entry *e = &p->entries[i];
        const tc_exp_stage *st = e->stage;
        char a[64], b[64], c[64], d[64], line[256];
        fprintf(f, "\n[%d] %s  %s\n", i, st->name, tc_exp_stage_kind_name(st->kind));
        if (st->parent >= 0) fprintf(f, "    parent       stage '%s'\n", x->stages[st->parent].name);
        else if (st->parent_ext.checkpoint) fprintf(f, "    parent       checkpoint %s\n", st->parent_ext.checkpoint);
        else fprintf(f, "    parent       none (random init)\n");
        print_inheritance(f, st);
        fprintf(f, "    model        %s%s\n", e->model_source, e->estimated ? " [estimated]" : "");
        tower_summary(line, sizeof line, &e->model.vision, 1);
        fprintf(f, "      vision     %s\n", line);
        tower_summary(line, sizeof line, &e->model.text, 0);
        fprintf(f, "      text       %s\n", line);
        fprintf(f, "      embed %d, %s\n", e->model.embed_dim, e->model.activation == TC_QUICK_GELU ? "quick_gelu" : "gelu");
        human(a, sizeof a, (double)e->params.total);
        human(b, sizeof b, (double)e->params.vision);
        human(c, sizeof c, (double)(e->params.text + e->params.shared));
        human(d, sizeof d, (double)(e->params.total - e->params.token_embedding));
        fprintf(f, "    parameters   %s (vision %s, text %s; %s without the token embedding)\n", a, b, c, d);
        if (st->inherit.kind == TC_EXP_INHERIT_AUTO && st->kind == TC_EXP_STAGE_DISTILL) {
            human(a, sizeof a, e->params_after);
            human(b, sizeof b, (double)e->prunable);
            fprintf(f, "    after prune  ~%s (target sparsity %.3g of %s prunable attention+MLP parameters)\n", a,
                    (double)st->inherit.autoc.target_sparsity, b);
        }
        if (e->has_teacher) {
            human(a, sizeof a, (double)e->teacher_params.total);
            fprintf(f, "    teacher      %s parameters, logit scale %g\n", a, (double)st->loss.teacher_logit_scale);
        }
        double samples = (double)st->steps * st->batch;
        fprintf(f, "    steps        %lld at batch %d per process (%.0f samples", (long long)st->steps, st->batch, samples);
        if (x->train.num_samples > 0) fprintf(f, ", %.2f epochs", samples / (double)x->train.num_samples);
        fprintf(f, ")\n");
        total_steps += (double)st->steps;
        fprintf(f, "    optimizer    AdamW lr %g wd %g betas (%g, %g) eps %g clip %g; %s, warm-up %lld\n",
                (double)st->opt.lr, (double)st->opt.wd, (double)st->opt.beta1, (double)st->opt.beta2,
                (double)st->opt.eps, (double)st->opt.grad_clip,
                st->sched.kind == TC_EXP_SCHED_COSINE ? "cosine" : "constant", (long long)st->sched.warmup);
        if (st->kind == TC_EXP_STAGE_SCRATCH)
            fprintf(f, "    loss         CLIP contrastive, logit scale %s\n", st->loss.learned_logit_scale ? "learned" : "fixed");
        else {
            if (st->loss.learned_logit_scale) snprintf(a, sizeof a, "learned");
            else snprintf(a, sizeof a, "%g", (double)st->loss.logit_scale);
            fprintf(f, "    loss         affinity mimicking x%g", (double)st->loss.distill_weight);
            if (st->loss.alpha < 1) fprintf(f, " (alpha %g, CLIP term x%g)", (double)st->loss.alpha, (double)(1 - st->loss.alpha));
            fprintf(f, ", logit scale %s\n", a);
        }
        fprintf(f, "    intervals    eval %lld, checkpoint %lld, log %lld; stop after %d non-finite steps in a row\n",
                (long long)st->eval_every, (long long)st->checkpoint_every, (long long)st->log_every,
                st->max_nonfinite_skips);
        bytes_h(a, sizeof a, e->memory.total);
        bytes_h(b, sizeof b, e->memory.student);
        bytes_h(c, sizeof c, e->memory.activations);
        bytes_h(d, sizeof d, e->memory.teacher);
        fprintf(f, "    memory       ~%s (weights+grads+AdamW %s, activations %s, teacher %s)\n", a, b, c, d);
    }
    fprintf(f, "\n%d stages, %.0f steps in all\n", p->n, total_steps);
}
