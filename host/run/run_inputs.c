/* the inputs of a stage: every value of the experiment that shapes the
 * stage's results, as "key value" lines, and a fingerprint of them (XXH3-64)
 * that the stages depending on it include; plus the values that cannot
 * change its results (intervals, workers, threads, evaluation), kept so that
 * a change is seen and recorded. written to <stage>/inputs.txt when the
 * stage starts; a rerun compares (run_folder.c).
 *
 *   # inputs of stage 'teacher' ...
 *   fingerprint 9c1f00d2a6b7e311
 *   result stages.teacher.steps 6
 *   free stages.teacher.log_every 1
 *
 * paths are canonical (realpath) and model configs are named with the
 * checksum of their content, so the same experiment started from another
 * working directory has the same inputs. */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "fileio.h"
#include "manifest.h"
#include "scheduler_internal.h"

#define MAX_INPUTS_BYTES (1u << 20)

void stage_inputs_free(stage_inputs *in) {
    for (int i = 0; i < in->n; i++) {
        free(in->key[i]);
        free(in->value[i]);
    }
    free(in->key);
    free(in->value);
    free(in->result);
    memset(in, 0, sizeof *in);
}

/* one line; a value is one line of text (newlines become spaces) */
static void add_text(stage_inputs *in, int result, const char *key, const char *value) {
    if (in->oom) return;
    if (in->n == in->cap) {
        int cap = in->cap ? 2 * in->cap : 64;
        char **k = realloc(in->key, (size_t)cap * sizeof *k);
        if (k) in->key = k;
        char **v = realloc(in->value, (size_t)cap * sizeof *v);
        if (v) in->value = v;
        unsigned char *r = realloc(in->result, (size_t)cap);
        if (r) in->result = r;
        if (!k || !v || !r) {
            in->oom = 1;
            return;
        }
        in->cap = cap;
    }
    in->key[in->n] = strdup(key);
    in->value[in->n] = strdup(value);
    in->result[in->n] = (unsigned char)result;
    if (!in->key[in->n] || !in->value[in->n]) {
        free(in->key[in->n]);
        free(in->value[in->n]);
        in->oom = 1;
        return;
    }
    for (char *p = in->value[in->n]; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    in->n++;
}

static void add(stage_inputs *in, int result, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(stage_inputs *in, int result, const char *key, const char *fmt, ...) {
    char v[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    add_text(in, result, key, v);
}

/* a float in the fewest digits that read back as the same float */
static const char *float_text(float x, char *buf) {
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, 32, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    return buf;
}
#define F(x) float_text((x), (char[32]){0})

/* "stages.NAME.sub" */
static const char *skey(char *buf, size_t cap, const tc_exp_stage *st, const char *sub) {
    snprintf(buf, cap, "stages.%s.%s", st->name, sub);
    return buf;
}

/* the canonical path (the same file from any working directory); for a
 * name that is not a file (a shard pattern "dir/{000..099}.tar") its folder's */
static void canon_path(const char *p, char *out, size_t cap) {
    char real[PATH_MAX], dir[PATH_MAX];
    const char *slash = p ? strrchr(p, '/') : NULL;
    if (p && realpath(p, real)) {
        snprintf(out, cap, "%s", real);
    } else if (slash && slash > p && (size_t)(slash - p) < sizeof dir) {
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - p), p);
        if (realpath(dir, real))
            snprintf(out, cap, "%s%s", real, slash);
        else
            snprintf(out, cap, "%s", p);
    } else {
        snprintf(out, cap, "%s", p ? p : "(default)");
    }
}

/* a model config by its name and content */
static void config_text(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    uint64_t h, size;
    if (tc_file_xxh3(path, &h, &size) == TC_OK)
        snprintf(out, cap, "%s (xxh3 %016" PRIx64 ")", base, h);
    else
        snprintf(out, cap, "%s (unreadable)", base);
}

/* a checkpoint outside the run: where it is and its size */
static void external_text(const tc_exp_external *x, char *out, size_t cap) {
    char ck[PATH_MAX + 8], model[300];
    canon_path(x->checkpoint, ck, sizeof ck);
    struct stat st;
    long long size = x->checkpoint && stat(x->checkpoint, &st) == 0 ? (long long)st.st_size : -1;
    config_text(x->model ? x->model : "", model, sizeof model);
    snprintf(out, cap, "checkpoint %.700s (%lld bytes), model %s", ck, size, model);
}

/* a data spec: each "::" part canonical, pipe: commands and URLs as given */
static void canon_spec(const char *spec, char *out, size_t cap) {
    if (!spec) {
        snprintf(out, cap, "(default)");
        return;
    }
    size_t used = 0;
    out[0] = 0;
    for (const char *p = spec; p && used < cap;) {
        const char *sep = strstr(p, "::");
        size_t n = sep ? (size_t)(sep - p) : strlen(p);
        char part[PATH_MAX], canon[PATH_MAX + 8];
        snprintf(part, sizeof part, "%.*s", (int)(n < sizeof part ? n : sizeof part - 1), p);
        if (!strncmp(part, "pipe:", 5) || strstr(part, "://"))
            snprintf(canon, sizeof canon, "%s", part);
        else
            canon_path(part, canon, sizeof canon);
        used += (size_t)snprintf(out + used, cap - used, "%s%s", canon, sep ? "::" : "");
        p = sep ? sep + 2 : NULL;
    }
}

static void add_data(stage_inputs *in, const tc_experiment *e) {
    char p[3 * PATH_MAX];
    const tc_exp_train_data *t = &e->train;
    add(in, 1, "seed", "%lld", (long long)e->seed);
    add(in, 1, "backend", "%s", e->backend == TC_EXP_BACKEND_CUDA ? "cuda" : "cpu");
    add(in, 1, "precision", "%s", e->precision == TC_EXP_PREC_BF16 ? "bf16" : "fp32");
    add(in, 1, "data.train.source", "%s", tc_exp_data_source_name(t->source));
    canon_spec(t->path, p, sizeof p);
    add_text(in, 1, "data.train.path", p);
    add(in, 1, "data.train.num_samples", "%lld", (long long)t->num_samples);
    /* the order of the samples and which are used */
    add(in, 1, "data.train.resampled", "%d", t->resampled);
    add(in, 1, "data.train.shuffle_buffer", "%d", t->shuffle_buffer);
    size_t n = 0;
    p[0] = 0;
    for (int k = 0; k < t->n_upsampling && n < 1000; k++)
        n += (size_t)snprintf(p + n, sizeof p - n, "%s%.17g", k ? "::" : "", t->upsampling[k]);
    add_text(in, 1, "data.train.upsampling_factors", n ? p : "none");
    add(in, 1, "data.train.max_image_pixels", "%lld", (long long)t->max_image_pixels);
    if (t->source == TC_EXP_DATA_CSV) {
        add(in, 1, "data.train.csv_img_key", "%s", t->csv_img_key);
        add(in, 1, "data.train.csv_caption_key", "%s", t->csv_caption_key);
        add(in, 1, "data.train.csv_separator", "%d", t->csv_separator);
    }
}

static void add_tower(stage_inputs *in, const tc_exp_stage *st, const char *tower,
                      const tc_exp_manual_tower *t) {
    char k[200], v[600] = "";
    snprintf(k, sizeof k, "stages.%s.inheritance.%s", st->name, tower);
    if (!t->inherit) {
        add(in, 1, k, "none");
        return;
    }
    if (t->layers == TC_EXP_LAYERS_INTERVAL_FRONT) {
        add(in, 1, k, "layers interval_front, width leading");
        return;
    }
    size_t n = 0;
    for (int l = 0; l < t->n_layers && n < sizeof v - 8; l++)
        n += (size_t)snprintf(v + n, sizeof v - n, "%s%d", l ? "," : "", t->layer_list[l]);
    add(in, 1, k, "layers [%s], width leading", v);
}

static void add_inheritance(stage_inputs *in, const tc_exp_stage *st) {
    char k[200];
    const tc_exp_inheritance *h = &st->inherit;
    add(in, 1, skey(k, sizeof k, st, "inheritance.kind"), "%s", tc_exp_inherit_kind_name(h->kind));
    if (h->kind == TC_EXP_INHERIT_MANUAL) {
        add_tower(in, st, "vision", &h->vision);
        add_tower(in, st, "text", &h->text);
    } else if (h->kind == TC_EXP_INHERIT_AUTO) {
        const tc_exp_auto *a = &h->autoc;
        add(in, 1, skey(k, sizeof k, st, "inheritance.start_sparsity"), "%s", F(a->start_sparsity));
        add(in, 1, skey(k, sizeof k, st, "inheritance.target_sparsity"), "%s",
            F(a->target_sparsity));
        add(in, 1, skey(k, sizeof k, st, "inheritance.sparsity_warmup"), "%lld",
            (long long)a->sparsity_warmup);
        add(in, 1, skey(k, sizeof k, st, "inheritance.prune_step"), "%lld",
            (long long)a->prune_step);
        add(in, 1, skey(k, sizeof k, st, "inheritance.lambda_init"), "%s", F(a->lambda_init));
        add(in, 1, skey(k, sizeof k, st, "inheritance.mask_lr"), "%s", F(a->mask_lr));
        add(in, 1, skey(k, sizeof k, st, "inheritance.lambda_lr"), "%s", F(a->lambda_lr));
        add(in, 1, skey(k, sizeof k, st, "inheritance.round_to"), "%d", a->round_to);
        add(in, 1, skey(k, sizeof k, st, "inheritance.shape"), "%s",
            a->regular ? "regular" : "irregular");
        add(in, 1, skey(k, sizeof k, st, "inheritance.vision"), "%d", a->vision);
        add(in, 1, skey(k, sizeof k, st, "inheritance.text"), "%d", a->text);
    }
}

/* where the stage starts from and what it is distilled from, with the
 * fingerprints of the stages it depends on */
static void add_sources(stage_inputs *in, const tc_experiment *e, int i, const uint64_t *fps) {
    const tc_exp_stage *st = &e->stages[i];
    char k[200], v[1200];
    skey(k, sizeof k, st, "parent");
    if (st->parent >= 0) {
        add(in, 1, k, "stage %s", e->stages[st->parent].name);
        add(in, 1, skey(k, sizeof k, st, "parent.inputs"), "stage %s, inputs %016" PRIx64,
            e->stages[st->parent].name, fps[st->parent]);
    } else if (st->parent_ext.checkpoint) {
        external_text(&st->parent_ext, v, sizeof v);
        add(in, 1, k, "%s", v);
    } else {
        add(in, 1, k, "none");
    }
    skey(k, sizeof k, st, "model");
    if (st->model_stage >= 0) {
        add(in, 1, k, "stage %s", e->stages[st->model_stage].name);
        add(in, 1, skey(k, sizeof k, st, "model.inputs"), "stage %s, inputs %016" PRIx64,
            e->stages[st->model_stage].name, fps[st->model_stage]);
    } else if (st->model) {
        config_text(st->model, v, sizeof v);
        add(in, 1, k, "%s", v);
    } else {
        add(in, 1, k, "from the parent");
    }
    if (st->kind != TC_EXP_STAGE_DISTILL) return;
    if (e->teacher.stage >= 0) {
        add(in, 1, "teacher", "stage %s", e->stages[e->teacher.stage].name);
        add(in, 1, "teacher.inputs", "stage %s, inputs %016" PRIx64,
            e->stages[e->teacher.stage].name, fps[e->teacher.stage]);
    } else {
        external_text(&e->teacher.ext, v, sizeof v);
        add(in, 1, "teacher", "%s", v);
    }
}

static void add_training(stage_inputs *in, const tc_exp_stage *st) {
    char k[200];
    add(in, 1, skey(k, sizeof k, st, "loss.distill_weight"), "%s", F(st->loss.distill_weight));
    add(in, 1, skey(k, sizeof k, st, "loss.alpha"), "%s", F(st->loss.alpha));
    if (st->loss.learned_logit_scale)
        add(in, 1, skey(k, sizeof k, st, "loss.logit_scale"), "learned");
    else
        add(in, 1, skey(k, sizeof k, st, "loss.logit_scale"), "%s", F(st->loss.logit_scale));
    add(in, 1, skey(k, sizeof k, st, "loss.teacher_logit_scale"), "%s",
        F(st->loss.teacher_logit_scale));
    add(in, 1, skey(k, sizeof k, st, "batch"), "%d", st->batch);
    add(in, 1, skey(k, sizeof k, st, "accum_steps"), "%d", st->accum_steps);
    add(in, 1, skey(k, sizeof k, st, "steps"), "%lld", (long long)st->steps);
    add(in, 1, skey(k, sizeof k, st, "optimizer.lr"), "%s", F(st->opt.lr));
    add(in, 1, skey(k, sizeof k, st, "optimizer.wd"), "%s", F(st->opt.wd));
    add(in, 1, skey(k, sizeof k, st, "optimizer.beta1"), "%s", F(st->opt.beta1));
    add(in, 1, skey(k, sizeof k, st, "optimizer.beta2"), "%s", F(st->opt.beta2));
    add(in, 1, skey(k, sizeof k, st, "optimizer.eps"), "%s", F(st->opt.eps));
    add(in, 1, skey(k, sizeof k, st, "optimizer.grad_clip"), "%s", F(st->opt.grad_clip));
    add(in, 1, skey(k, sizeof k, st, "schedule.kind"), "%s",
        st->sched.kind == TC_EXP_SCHED_CONST ? "const" : "cosine");
    add(in, 1, skey(k, sizeof k, st, "schedule.warmup"), "%lld", (long long)st->sched.warmup);
}

/* what cannot change the weights: recorded when it changes */
static void add_free(stage_inputs *in, const tc_experiment *e, const tc_exp_stage *st) {
    char k[200], p[PATH_MAX + 8];
    add(in, 0, "threads", "%d", e->threads);
    add(in, 0, "data.train.workers", "%d", e->train.workers);
    /* how pipe:/http(s) shards are retried: a shard read to its end is the same */
    add(in, 0, "data.train.pipe_retries", "%d", e->train.pipe_retries);
    add(in, 0, "data.train.pipe_backoff", "%.17g", e->train.pipe_backoff);
    add(in, 0, "data.train.pipe_timeout", "%.17g", e->train.pipe_timeout);
    add(in, 0, "distributed.zero1", "%d", e->zero1);
    add(in, 0, "distributed.bucket_mb", "%.17g", e->bucket_mb);
    const tc_exp_zeroshot *z = &e->zero_shot;
    char tp[PATH_MAX + 8], cn[PATH_MAX + 8];
    canon_path(z->path, p, sizeof p);
    canon_path(z->templates_path, tp, sizeof tp);
    canon_path(z->classnames, cn, sizeof cn);
    add(in, 0, "data.eval.zero_shot",
        "dataset %d, path %.500s, classnames %.500s, templates %d %.500s, max_images %lld, batch "
        "%d",
        (int)z->dataset, p, cn, (int)z->templates, tp, (long long)z->max_images, z->batch);
    const tc_exp_retrieval *r = &e->retrieval;
    canon_path(r->path, p, sizeof p);
    add(in, 0, "data.eval.retrieval",
        "enabled %d, source %d, path %.600s, num_samples %lld, batch %d", r->enabled,
        (int)r->source, p, (long long)r->num_samples, r->batch);
    add(in, 0, skey(k, sizeof k, st, "eval_every"), "%lld", (long long)st->eval_every);
    add(in, 0, skey(k, sizeof k, st, "checkpoint_every"), "%lld", (long long)st->checkpoint_every);
    add(in, 0, skey(k, sizeof k, st, "log_every"), "%lld", (long long)st->log_every);
    add(in, 0, skey(k, sizeof k, st, "keep_checkpoints"), "%d", st->keep_checkpoints);
    add(in, 0, skey(k, sizeof k, st, "max_nonfinite_skips"), "%d", st->max_nonfinite_skips);
}

tc_status stage_inputs_build(const tc_experiment *e, int i, const uint64_t *fps, stage_inputs *in) {
    memset(in, 0, sizeof *in);
    const tc_exp_stage *st = &e->stages[i];
    char k[200];
    add(in, 1, skey(k, sizeof k, st, "kind"), "%s", tc_exp_stage_kind_name(st->kind));
    /* the position seeds the stage's initialisation and data order */
    add(in, 1, skey(k, sizeof k, st, "index"), "%d", i);
    add_data(in, e);
    add_sources(in, e, i, fps);
    add_inheritance(in, st);
    add_training(in, st);
    add_free(in, e, st);
    if (in->oom) {
        stage_inputs_free(in);
        return tc_fail(TC_ERR_OOM, "stage %s: out of memory", st->name);
    }
    XXH3_state_t *x = XXH3_createState();
    if (!x || XXH3_64bits_reset(x) != XXH_OK) {
        if (x) XXH3_freeState(x);
        stage_inputs_free(in);
        return tc_fail(TC_ERR_OOM, "stage %s: out of memory", st->name);
    }
    for (int j = 0; j < in->n; j++) {
        if (!in->result[j]) continue;
        XXH3_64bits_update(x, in->key[j], strlen(in->key[j]) + 1);
        XXH3_64bits_update(x, in->value[j], strlen(in->value[j]) + 1);
    }
    in->fingerprint = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    return TC_OK;
}

tc_status stage_inputs_write(const stage_inputs *in, const char *stage, const char *path) {
    size_t cap = 256, used = 0;
    for (int j = 0; j < in->n; j++)
        cap += strlen(in->key[j]) + strlen(in->value[j]) + 16;
    char *t = malloc(cap);
    if (!t) return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    used += (size_t)snprintf(t, cap,
                             "# inputs of stage '%s': a rerun in this folder that changes a "
                             "'result' line is refused;\n# a 'free' line cannot change the "
                             "results and may change (the change is recorded)\n"
                             "fingerprint %016" PRIx64 "\n",
                             stage, in->fingerprint);
    for (int j = 0; j < in->n; j++)
        used += (size_t)snprintf(t + used, cap - used, "%s %s %s\n",
                                 in->result[j] ? "result" : "free", in->key[j], in->value[j]);
    tc_status s = tc_write_file_atomic(path, t, used);
    free(t);
    return s;
}

tc_status stage_inputs_read(const char *path, stage_inputs *in) {
    memset(in, 0, sizeof *in);
    char *text;
    size_t len;
    TC_TRY(tc_read_file_bounded(path, MAX_INPUTS_BYTES, &text, &len));
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        int result = strncmp(line, "result ", 7) == 0;
        if (result || strncmp(line, "free ", 5) == 0) {
            char *key = line + (result ? 7 : 5), *sp = strchr(key, ' ');
            if (sp) {
                *sp = 0;
                add_text(in, result, key, sp + 1);
            }
        } else if (strncmp(line, "fingerprint ", 12) == 0) {
            in->fingerprint = strtoull(line + 12, NULL, 16);
        }
        line = next;
    }
    free(text);
    if (in->oom) {
        stage_inputs_free(in);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    return TC_OK;
}

static int find_key(const stage_inputs *in, const char *key) {
    for (int j = 0; j < in->n; j++)
        if (strcmp(in->key[j], key) == 0) return j;
    return -1;
}

int stage_inputs_diff(const stage_inputs *old, const stage_inputs *now, stage_inputs_diff_fn fn,
                      void *ctx) {
    int n = 0;
    for (int j = 0; j < now->n; j++) {
        int o = find_key(old, now->key[j]);
        const char *was = o >= 0 ? old->value[o] : "(not set)";
        if (o >= 0 && strcmp(was, now->value[j]) == 0) continue;
        fn(ctx, now->key[j], was, now->value[j], now->result[j] || (o >= 0 && old->result[o]));
        n++;
    }
    for (int o = 0; o < old->n; o++) {
        if (find_key(now, old->key[o]) >= 0) continue;
        fn(ctx, old->key[o], old->value[o], "(not set)", old->result[o]);
        n++;
    }
    return n;
}
