/* the stage loop of `tinyclip train`. per stage:
 *   1. the student: from scratch (open_clip init), from the parent's final
 *      weights, by manual inheritance (engine/inherit) or, for automatic
 *      inheritance, the parent re-expanded to the full shape with L0 masks
 *      (engine/prune tc_expand, engine/l0);
 *   2. the teacher (frozen) when the loss needs one;
 *   3. the steps: data from host/loader, one trainer step, during the mask
 *      phase the mask sample / mask gradient / Lagrangian / mask AdamW on the
 *      host, the prune into an irregular dense model at prune_step;
 *   4. logging, zero-shot evaluation and checkpoints at their intervals;
 *   5. final weights, evaluation, inference speed, summary.json.
 * a checkpoint is a folder written as step-N.tmp and renamed when complete,
 * so a kill at any moment leaves the previous checkpoint usable. */
#include "scheduler.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend_select.h"
#include "caption_templates.h"
#include "checkpoint.h"
#include "comm_mpi.h"
#if defined(TC_HAVE_CUDA) && defined(TC_HAVE_NCCL) && defined(TC_HAVE_MPI)
#include "comm_nccl.h"
#endif
#include "fileio.h"
#include "flops.h"
#include "inherit.h"
#include "l0.h"
#include "loader.h"
#include "metrics_log.h"
#include "model.h"
#include "params.h"
#include "progress.h"
#include "retrieval_eval.h"
#include "prune.h"
#include "run_report.h"
#include "safetensors.h"
#include "tb_events.h"
#include "train.h"
#include "zeroshot.h"
#include "zeroshot_templates.h"
#ifdef TC_HAVE_CUDA
#include "tc_cuda.h"
#endif

#define PATH_CAP 1024

typedef struct {
    int done;
    tc_model_config cfg;      /* final architecture */
    int has_root;             /* the stage was (re)expanded from this uniform shape */
    tc_model_config root;
    char final_dir[PATH_CAP];
} stage_result;

typedef struct {
    const tc_experiment *exp;
    FILE *log;
    int force_tty;
    tc_backend *be;
    tc_tokenizer *tok;
    stage_result *res;
    /* zero-shot templates */
    const char **templates;
    int n_templates;
    char **template_storage;
    /* fault injection for the resume tests:
     * TINYCLIP_FAULT=kill_at_step:N[@stage] | kill_in_checkpoint:N[@stage]
     * | nan_from_step:N[@stage] (the images of every batch from step N on are NaN) */
    long long kill_at_step, kill_in_checkpoint, nan_from_step;
    char kill_stage[64];
    /* data parallel: every rank runs the same stages in lockstep; rank 0
     * alone writes files (run folder, checkpoints, metrics, reports) */
    tc_comm *comm;
    int rank, world;
} run_ctx;

/* one tower's L0 state during a mask phase */
typedef struct {
    int on;
    tc_l0_masks masks;
    tc_l0_adamw opt;
    tc_l0_rng rng;
    float *z, *dz_dloga, *dloss_dz, *grad; /* host: n_loga, n_loga, n_loga, count */
    tc_l0_device_layout dl;                /* the device vectors' aligned rows */
    float *stage;                          /* host: dl.total, z or dz in that layout */
    float *z_dev, *dz_dev;                 /* device: dl.total */
    tc_tower_masks tm;
} tower_l0;

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void logf_run(run_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_run(run_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(c->log, fmt, ap);
    va_end(ap);
    fputc('\n', c->log);
    fflush(c->log);
}

static void stage_path(const run_ctx *c, int i, const char *sub, char *buf) {
    if (sub)
        snprintf(buf, PATH_CAP, "%s/%s/%s", c->exp->out_dir, c->exp->stages[i].name, sub);
    else
        snprintf(buf, PATH_CAP, "%s/%s", c->exp->out_dir, c->exp->stages[i].name);
}

static long long env_fault(const char *what, char *stage, size_t cap) {
    const char *v = getenv("TINYCLIP_FAULT");
    size_t n = strlen(what);
    if (!v || strncmp(v, what, n) != 0 || v[n] != ':') return -1;
    const char *at = strchr(v + n + 1, '@');
    if (at) snprintf(stage, cap, "%s", at + 1);
    return atoll(v + n + 1);
}

/* 1 when the injected fault of this kind is due now */
static int fault_due(const run_ctx *c, long long when, long long step, const char *stage) {
    return when == step && (!c->kill_stage[0] || strcmp(c->kill_stage, stage) == 0);
}

/* ---- templates ---- */

static tc_status load_templates(run_ctx *c) {
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
        for (int i = 0; i < n; i++) c->templates[i] = tc_zeroshot_template(set, i);
        break;
    }
    case TC_EXP_TEMPLATES_FMNIST:
        n = tc_caption_template_count();
        c->templates = calloc((size_t)n, sizeof *c->templates);
        if (!c->templates) return tc_fail(TC_ERR_OOM, "templates: out of memory");
        for (int i = 0; i < n; i++) c->templates[i] = tc_caption_template(i);
        break;
    case TC_EXP_TEMPLATES_FILE: {
        char *data;
        size_t len;
        TC_TRY(tc_read_file_bounded(z->templates_path, 1 << 20, &data, &len));
        int lines = 1;
        for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
        c->templates = calloc((size_t)lines, sizeof *c->templates);
        c->template_storage = calloc((size_t)lines, sizeof *c->template_storage);
        if (!c->templates || !c->template_storage) {
            free(data);
            return tc_fail(TC_ERR_OOM, "templates: out of memory");
        }
        char *save = NULL;
        for (char *line = strtok_r(data, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
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

/* ---- weights on the host ---- */

typedef struct {
    tc_model_config cfg;
    tc_param_layout layout;
    float *params;
} host_model;

static void host_model_free(host_model *h) {
    free(h->params);
    tc_param_layout_free(&h->layout);
    memset(h, 0, sizeof *h);
}

static tc_status host_model_load(const char *path, const char *config, host_model *h) {
    tc_model_config hint;
    memset(h, 0, sizeof *h);
    if (config) TC_TRY(tc_model_config_load(&hint, config));
    return tc_checkpoint_load(path, config ? &hint : NULL, &h->cfg, &h->layout, &h->params);
}

static tc_status host_model_random(tc_backend *be, const tc_model_config *cfg, uint64_t seed,
                                   host_model *h) {
    memset(h, 0, sizeof *h);
    h->cfg = *cfg;
    TC_TRY(tc_param_layout_build(&h->layout, cfg));
    h->params = malloc(h->layout.total * sizeof(float));
    if (!h->params) return tc_fail(TC_ERR_OOM, "model %s: out of memory", cfg->name);
    /* open_clip's init lives in the model; run it on a small inference model */
    tc_model *m;
    tc_model_options o = {.max_batch = 1};
    TC_TRY(tc_model_create(&m, be, cfg, o));
    tc_status s = tc_model_init_random(m, seed);
    if (s == TC_OK) s = tc_model_get_params(m, h->params);
    tc_model_destroy(m);
    return s;
}

/* the parent's final weights: an earlier stage or an external checkpoint */
static tc_status load_parent(run_ctx *c, int i, host_model *h) {
    const tc_exp_stage *st = &c->exp->stages[i];
    if (st->parent >= 0) return host_model_load(c->res[st->parent].final_dir, NULL, h);
    return host_model_load(st->parent_ext.checkpoint, st->parent_ext.model, h);
}

static int has_parent(const tc_exp_stage *st) {
    return st->parent >= 0 || st->parent_ext.checkpoint != NULL;
}

/* ---- train state ---- */

typedef struct {
    long long step;          /* iterations done in this stage */
    long long adam_step;
    long long nonfinite;     /* consecutive skipped steps */
    int masked;              /* still in the mask phase */
    tc_loader_cursor cursor;
} state_meta;

/* rm -rf in process: no fork (a forked child of an MPI rank upsets some
 * interconnects' registered memory) and no shell quoting of the path.
 * symbolic links are removed, never followed; depth is bounded. */
static int remove_tree_depth(const char *path, int depth) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    if (depth > 16) return -1;
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *child = malloc(n);
        if (!child) {
            rc = -1;
            break;
        }
        snprintf(child, n, "%s/%s", path, e->d_name);
        if (remove_tree_depth(child, depth + 1) != 0) rc = -1;
        free(child);
    }
    closedir(d);
    return rc == 0 ? rmdir(path) : rc;
}

static int remove_tree(const char *path) { return remove_tree_depth(path, 0); }

/* every rank's loader cursor (their stream positions differ when ranks skip
 * different bad samples): "c0,...,c4,c0,...": rank-major, malloc'd */
static tc_status gather_cursors(run_ctx *c, const tc_loader_cursor *mine, char **out) {
    *out = NULL;
    size_t W = (size_t)c->world, K = TC_LOADER_CURSOR_INTS;
    double *all = calloc(W * K, sizeof *all);
    char *str = malloc(W * K * 24 + 1);
    if (!all || !str) {
        free(all);
        free(str);
        return tc_fail(TC_ERR_OOM, "checkpoint: out of memory");
    }
    int64_t cv[TC_LOADER_CURSOR_INTS];
    tc_loader_cursor_pack(mine, cv);
    for (size_t k = 0; k < K; k++) all[(size_t)c->rank * K + k] = (double)cv[k]; /* < 2^53 */
    tc_status s = c->comm->host_all_reduce_f64(c->comm, all, W * K, TC_REDUCE_SUM);
    size_t n = 0;
    str[0] = 0;
    for (size_t j = 0; j < W * K && s == TC_OK; j++)
        n += (size_t)snprintf(str + n, 24, j ? ",%lld" : "%lld", (long long)all[j]);
    free(all);
    if (s != TC_OK) {
        free(str);
        return s;
    }
    *out = str;
    return TC_OK;
}

/* rank_cursors: from gather_cursors, NULL in one process (the train state
 * then has exactly the keys it always had) */
static tc_status save_checkpoint(run_ctx *c, int i, tc_model *m, const float *moments,
                                 tower_l0 *l0, const state_meta *meta, const char *rank_cursors) {
    char dir[PATH_CAP], tmp[PATH_CAP + 80], path[PATH_CAP + 128];
    stage_path(c, i, "checkpoints", dir);
    TC_TRY(tc_mkdir_p(dir));
    char name[64];
    snprintf(name, sizeof name, "step-%010lld", meta->step);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    if (tc_path_is_dir(tmp) && remove_tree(tmp) != 0)
        return tc_fail(TC_ERR_IO, "%s: cannot remove a stale folder", tmp);
    TC_TRY(tc_mkdir_p(tmp));
    /* weights first, in open_clip layout */
    const tc_param_layout *L = tc_model_layout(m);
    size_t P = L->packed_total; /* the moments: packed */
    float *buf = malloc(L->total * sizeof(float));
    if (!buf) return tc_fail(TC_ERR_OOM, "checkpoint: out of memory");
    tc_status s = tc_model_get_params(m, buf);
    if (s == TC_OK) s = tc_checkpoint_save(tmp, TC_FORMAT_OPENCLIP, tc_model_cfg(m), L, buf);
    if (s == TC_OK && fault_due(c, c->kill_in_checkpoint, meta->step, c->exp->stages[i].name))
        raise(SIGKILL);
    /* the train state: moments, masks and their optimizer, counters, cursor */
    tc_st_write_tensor t[8];
    int nt = 0;
    t[nt++] = (tc_st_write_tensor){"adam.m", TC_DT_F32, 1, {(int64_t)P}, moments};
    t[nt++] = (tc_st_write_tensor){"adam.v", TC_DT_F32, 1, {(int64_t)P}, moments + P};
    const char *tower_names[2] = {"vision", "text"};
    char tn[6][32];
    char rngv[2][64], optstep[2][32];
    for (int k = 0; k < 2 && meta->masked; k++) {
        if (!l0[k].on) continue;
        snprintf(tn[3 * k], 32, "l0.%s", tower_names[k]);
        snprintf(tn[3 * k + 1], 32, "l0opt.%s.m", tower_names[k]);
        snprintf(tn[3 * k + 2], 32, "l0opt.%s.v", tower_names[k]);
        int64_t n = (int64_t)l0[k].masks.count;
        t[nt++] = (tc_st_write_tensor){tn[3 * k], TC_DT_F32, 1, {n}, l0[k].masks.data};
        t[nt++] = (tc_st_write_tensor){tn[3 * k + 1], TC_DT_F32, 1, {n}, l0[k].opt.m};
        t[nt++] = (tc_st_write_tensor){tn[3 * k + 2], TC_DT_F32, 1, {n}, l0[k].opt.v};
        snprintf(rngv[k], 64, "%llu,%llu", (unsigned long long)l0[k].rng.seed,
                 (unsigned long long)l0[k].rng.counter);
        snprintf(optstep[k], 32, "%lld", l0[k].opt.step);
    }
    char v_step[32], v_adam[32], v_nf[32], v_cursor[160], v_masked[8];
    snprintf(v_step, sizeof v_step, "%lld", meta->step);
    snprintf(v_adam, sizeof v_adam, "%lld", meta->adam_step);
    snprintf(v_nf, sizeof v_nf, "%lld", meta->nonfinite);
    snprintf(v_masked, sizeof v_masked, "%d", meta->masked);
    int64_t cv[TC_LOADER_CURSOR_INTS];
    tc_loader_cursor_pack(&meta->cursor, cv);
    snprintf(v_cursor, sizeof v_cursor, "%lld,%lld,%lld,%lld,%lld", (long long)cv[0],
             (long long)cv[1], (long long)cv[2], (long long)cv[3], (long long)cv[4]);
    char v_world[16];
    snprintf(v_world, sizeof v_world, "%d", c->world);
    const char *keys[] = {"format", "step", "adam_step", "nonfinite", "masked", "cursor",
                          "l0_rng_vision", "l0_rng_text", "l0opt_step_vision", "l0opt_step_text",
                          "world", "rank_cursors"};
    const char *vals[] = {"tinyclip-train-state-1", v_step, v_adam, v_nf, v_masked, v_cursor,
                          meta->masked && l0[0].on ? rngv[0] : "",
                          meta->masked && l0[1].on ? rngv[1] : "",
                          meta->masked && l0[0].on ? optstep[0] : "",
                          meta->masked && l0[1].on ? optstep[1] : "",
                          v_world, rank_cursors ? rank_cursors : ""};
    snprintf(path, sizeof path, "%s/train_state.safetensors", tmp);
    if (s == TC_OK) s = tc_st_write(path, t, nt, keys, vals, rank_cursors ? 12 : 10);
    free(buf);
    /* publish: rename the folder, then drop older checkpoints */
    char final[PATH_CAP + 128];
    snprintf(final, sizeof final, "%s/%s", dir, name);
    if (s == TC_OK && rename(tmp, final) != 0)
        s = tc_fail(TC_ERR_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    if (s != TC_OK) return s;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strncmp(e->d_name, "step-", 5) != 0 || strcmp(e->d_name, name) == 0) continue;
            char old[PATH_CAP + 300];
            snprintf(old, sizeof old, "%s/%s", dir, e->d_name);
            if (remove_tree(old) != 0) logf_run(c, "warning: could not remove %s", old);
        }
        closedir(d);
    }
    return TC_OK;
}

#define CKPT_CAP (PATH_CAP + 320)

/* the newest complete checkpoint folder of a stage, "" when none; out has CKPT_CAP bytes */
static void latest_checkpoint(const run_ctx *c, int i, char *out) {
    char dir[PATH_CAP];
    stage_path(c, i, "checkpoints", dir);
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    long long best = -1;
    while ((e = readdir(d))) {
        long long step;
        char tail[8];
        if (sscanf(e->d_name, "step-%lld%7s", &step, tail) != 1) continue; /* skips *.tmp */
        char st[PATH_CAP + 320];
        snprintf(st, sizeof st, "%s/%s/train_state.safetensors", dir, e->d_name);
        if (!tc_path_is_file(st)) continue;
        if (step > best) {
            best = step;
            snprintf(out, CKPT_CAP, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
}

static tc_status parse_ll_list(const char *v, long long *out, int n, const char *what) {
    const char *p = v;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        out[i] = strtoll(p, &end, 10);
        if (end == p || errno) return tc_fail(TC_ERR_FORMAT, "train state: bad %s '%s'", what, v);
        p = end;
        if (i + 1 < n) {
            if (*p != ',') return tc_fail(TC_ERR_FORMAT, "train state: bad %s '%s'", what, v);
            p++;
        }
    }
    return TC_OK;
}

/* "seed,counter" as saved (%llu: the seed uses all 64 bits) */
static tc_status parse_u64_pair(const char *v, unsigned long long out[2]) {
    const char *p = v;
    for (int i = 0; i < 2; i++) {
        char *end;
        errno = 0;
        if (*p == '-') return tc_fail(TC_ERR_FORMAT, "train state: bad rng state '%s'", v);
        out[i] = strtoull(p, &end, 10);
        if (end == p || errno) return tc_fail(TC_ERR_FORMAT, "train state: bad rng state '%s'", v);
        p = end;
        if (i == 0 && *p++ != ',') return tc_fail(TC_ERR_FORMAT, "train state: bad rng state '%s'", v);
    }
    if (*p) return tc_fail(TC_ERR_FORMAT, "train state: bad rng state '%s'", v);
    return TC_OK;
}

static tc_status read_state_tensor(tc_safetensors *f, const char *name, float *dst, size_t n) {
    int64_t shape[1] = {(int64_t)n};
    return tc_st_read_f32(f, name, 1, shape, dst);
}

/* ---- L0 towers ---- */

static void l0_free(tc_backend *be, tower_l0 *t) {
    if (!t->on) return;
    if (t->z_dev) be->free(be, t->z_dev);
    if (t->dz_dev) be->free(be, t->dz_dev);
    free(t->z);
    free(t->stage);
    free(t->dz_dloga);
    free(t->dloss_dz);
    free(t->grad);
    tc_l0_adamw_free(&t->opt);
    tc_l0_masks_free(&t->masks);
    memset(t, 0, sizeof *t);
}

/* buffers and the tc_tower_masks view for masks already in t->masks */
/* each rank samples its own masks (the original seeds every rank apart):
 * rank r's stream is rank 0's seed moved by r; rank 0's is the one-process one */
static uint64_t l0_rank_seed(uint64_t seed, int rank) {
    return seed + (uint64_t)rank * 0x9E3779B97F4A7C15ull;
}

static tc_status l0_setup(tc_backend *be, tower_l0 *t, uint64_t seed, int rank) {
    size_t n = t->masks.n_loga;
    t->on = 1;
    TC_TRY(tc_l0_adamw_create(&t->opt, &t->masks));
    tc_l0_rng_init(&t->rng, seed);
    t->rng.seed = l0_rank_seed(t->rng.seed, rank);
    t->z = calloc(n, sizeof(float));
    t->dz_dloga = calloc(n, sizeof(float));
    t->dloss_dz = calloc(n, sizeof(float));
    t->grad = calloc(t->masks.count, sizeof(float));
    t->dl = tc_l0_device_layout_of(&t->masks);
    t->stage = calloc(t->dl.total, sizeof(float));
    if (!t->z || !t->dz_dloga || !t->dloss_dz || !t->grad || !t->stage)
        return tc_fail(TC_ERR_OOM, "masks: out of memory");
    TC_TRY(be->alloc(be, t->dl.total * sizeof(float), (void **)&t->z_dev));
    TC_TRY(be->alloc(be, t->dl.total * sizeof(float), (void **)&t->dz_dev));
    t->tm = (tc_tower_masks){.hidden = t->z_dev,
                             .heads = t->z_dev + t->dl.heads,
                             .inter = t->z_dev + t->dl.inter,
                             .dhidden = t->dz_dev,
                             .dheads = t->dz_dev + t->dl.heads,
                             .dinter = t->dz_dev + t->dl.inter,
                             .heads_stride = t->dl.heads_stride,
                             .inter_stride = t->dl.inter_stride};
    return TC_OK;
}

/* t->z (packed) into the device vector */
static tc_status l0_upload_z(tc_backend *be, tower_l0 *t) {
    tc_l0_to_device(&t->masks, &t->dl, t->stage, t->z);
    return be->upload(be, t->z_dev, t->stage, t->dl.total * sizeof(float));
}

/* the deterministic masks (eval, pruning) into the device buffers */
static tc_status l0_install_deterministic(tc_backend *be, tower_l0 *t, int round_to) {
    if (!t->on) return TC_OK;
    TC_TRY(tc_l0_deterministic(&t->masks, round_to, t->z));
    return l0_upload_z(be, t);
}

/* ---- one stage ---- */

typedef struct {
    run_ctx *c;
    int i;
    const tc_exp_stage *st;
    host_model init;          /* the student's starting weights (host) */
    int masked;               /* auto inheritance: the mask phase is to run */
    tower_l0 l0[2];
    tc_model *student, *teacher;
    tc_trainer *trainer;
    tc_loader *loader;
    tc_metrics_log *metrics;
    tc_tb_writer *tb;
    state_meta meta;
    int batch; /* samples per process and step (the stage's batch) */
    int micro; /* samples per micro-batch: batch / accum_steps (the models' max batch) */
    /* the trainer counts skipped steps on the device from its creation:
     * steps since then, and the consecutive skips carried in from before */
    long long trainer_steps, nonfinite_base;
} stage_run;

static tc_loss_config loss_of(const tc_exp_stage *st) {
    tc_loss_config l;
    if (st->kind == TC_EXP_STAGE_SCRATCH) {
        l.w_clip = 1.0f;
        l.w_distill = 0.0f;
    } else {
        l.w_distill = st->loss.alpha * st->loss.distill_weight;
        l.w_clip = (1.0f - st->loss.alpha) * st->loss.distill_weight;
    }
    l.logit_scale = st->loss.learned_logit_scale ? 0.0f : st->loss.logit_scale;
    l.teacher_logit_scale = st->loss.teacher_logit_scale;
    return l;
}

static tc_optim_config optim_of(const tc_exp_stage *st) {
    tc_optim_config o;
    o.lr = st->opt.lr;
    o.weight_decay = st->opt.wd;
    o.beta1 = st->opt.beta1;
    o.beta2 = st->opt.beta2;
    o.eps = st->opt.eps;
    o.grad_clip = st->opt.grad_clip;
    o.total_steps = (int)st->steps;
    o.warmup_steps = (int)st->sched.warmup;
    /* for an auto stage the warm-up is the mask phase; cosine from the base
     * lr after it is the same curve as the original's restart at prune_step */
    o.schedule = st->sched.kind == TC_EXP_SCHED_CONST ? TC_SCHEDULE_CONST : TC_SCHEDULE_COSINE;
    return o;
}

/* the architecture and starting weights of the student */
static tc_status build_student(stage_run *r) {
    run_ctx *c = r->c;
    const tc_exp_stage *st = r->st;
    stage_result *res = &c->res[r->i];
    uint64_t seed = (uint64_t)c->exp->seed * 1000003ull + (uint64_t)r->i;
    switch (st->inherit.kind) {
    case TC_EXP_INHERIT_NONE: {
        if (has_parent(st)) return load_parent(c, r->i, &r->init);
        tc_model_config cfg;
        if (st->model_stage >= 0) cfg = c->res[st->model_stage].cfg;
        else TC_TRY(tc_model_config_load(&cfg, st->model));
        return host_model_random(c->be, &cfg, seed, &r->init);
    }
    case TC_EXP_INHERIT_MANUAL: {
        host_model parent;
        tc_model_config cfg;
        TC_TRY(tc_model_config_load(&cfg, st->model));
        TC_TRY(load_parent(c, r->i, &parent));
        tc_status s = host_model_random(c->be, &cfg, seed, &r->init);
        if (s == TC_OK) {
            tc_inherit_options o = tc_inherit_defaults();
            o.vision = st->inherit.vision.inherit;
            o.text = st->inherit.text.inherit;
            if (st->inherit.vision.layers == TC_EXP_LAYERS_LIST) {
                o.vision_layers = st->inherit.vision.layer_list;
                o.n_vision_layers = st->inherit.vision.n_layers;
            }
            if (st->inherit.text.layers == TC_EXP_LAYERS_LIST) {
                o.text_layers = st->inherit.text.layer_list;
                o.n_text_layers = st->inherit.text.n_layers;
            }
            s = tc_inherit_manual(&parent.cfg, &parent.layout, parent.params, &r->init.cfg,
                                  &r->init.layout, r->init.params, &o);
        }
        host_model_free(&parent);
        return s;
    }
    case TC_EXP_INHERIT_AUTO: {
        host_model parent;
        TC_TRY(load_parent(c, r->i, &parent));
        /* the full shape: where the parent's own auto chain started, else the parent */
        const tc_model_config *root = (st->parent >= 0 && c->res[st->parent].has_root)
                                          ? &c->res[st->parent].root : &parent.cfg;
        res->has_root = 1;
        res->root = *root;
        r->masked = 1;
        const tc_exp_auto *a = &st->inherit.autoc;
        tc_l0_masks *vm = a->vision ? &r->l0[0].masks : NULL, *tm = a->text ? &r->l0[1].masks : NULL;
        tc_status s;
        if (parent.cfg.irregular || memcmp(&parent.cfg.vision, &root->vision, sizeof root->vision) ||
            memcmp(&parent.cfg.text, &root->text, sizeof root->text)) {
            r->init.cfg = *root;
            s = tc_param_layout_build(&r->init.layout, root);
            if (s == TC_OK && !(r->init.params = calloc(r->init.layout.total, sizeof(float))))
                s = tc_fail(TC_ERR_OOM, "expand: out of memory");
            tc_l0_masks full_v = {0}, full_t = {0};
            if (s == TC_OK)
                s = tc_expand(&parent.cfg, &parent.layout, parent.params, root, &r->init.layout,
                              r->init.params, &full_v, &full_t);
            if (s == TC_OK) {
                if (vm) *vm = full_v; else tc_l0_masks_free(&full_v);
                if (tm) *tm = full_t; else tc_l0_masks_free(&full_t);
            }
            host_model_free(&parent);
        } else {
            r->init = parent;
            s = TC_OK;
            if (vm) s = tc_l0_masks_for_tower(vm, &root->vision, "vision");
            if (s == TC_OK && tm) s = tc_l0_masks_for_tower(tm, &root->text, "text");
        }
        for (int k = 0; k < 2 && s == TC_OK; k++) {
            if (k == 0 ? !vm : !tm) continue;
            for (size_t j = 0; j < 2; j++) r->l0[k].masks.lambda[j] = a->lambda_init;
            s = l0_setup(c->be, &r->l0[k], seed * 31u + 17u + (uint64_t)k, c->rank);
        }
        return s;
    }
    }
    return tc_fail(TC_ERR_CONFIG, "stage %s: unknown inheritance", st->name);
}

static tc_status make_student(stage_run *r, const tc_model_config *cfg, const float *params,
                              int masked) {
    tc_model_options o = {.max_batch = r->micro, .train = 1, .masked = masked};
    TC_TRY(tc_model_create(&r->student, r->c->be, cfg, o));
    TC_TRY(tc_model_set_params(r->student, params));
    if (masked)
        TC_TRY(tc_model_set_masks(r->student, r->l0[0].on ? &r->l0[0].tm : NULL,
                                  r->l0[1].on ? &r->l0[1].tm : NULL));
    tc_optim_config o2 = optim_of(r->st);
    tc_loss_config l = loss_of(r->st);
    TC_TRY(tc_trainer_create(&r->trainer, r->student, r->teacher, &o2, &l));
    tc_trainer_set_async_inputs(r->trainer, 1);
    r->trainer_steps = 0;
    r->nonfinite_base = r->meta.nonfinite;
    TC_TRY(tc_trainer_set_comm(r->trainer, r->c->comm));
    tc_parallel_config par = {r->st->accum_steps, r->c->exp->zero1,
                              (size_t)(r->c->exp->bucket_mb * 1048576.0)};
    return tc_trainer_set_parallel(r->trainer, &par);
}

static tc_status make_teacher(stage_run *r) {
    run_ctx *c = r->c;
    if (r->st->kind != TC_EXP_STAGE_DISTILL || loss_of(r->st).w_distill == 0.0f) return TC_OK;
    const tc_exp_teacher *t = &c->exp->teacher;
    host_model h;
    if (t->stage >= 0) TC_TRY(host_model_load(c->res[t->stage].final_dir, NULL, &h));
    else TC_TRY(host_model_load(t->ext.checkpoint, t->ext.model, &h));
    tc_model_options o = {.max_batch = r->micro, .train = 0};
    tc_status s = tc_model_create(&r->teacher, c->be, &h.cfg, o);
    if (s == TC_OK) s = tc_model_set_params(r->teacher, h.params);
    host_model_free(&h);
    return s;
}

static tc_status open_loader(stage_run *r, const tc_loader_cursor *resume) {
    const tc_experiment *e = r->c->exp;
    const tc_model_config *cfg = tc_model_cfg(r->student);
    tc_loader_cfg lc;
    tc_loader_cfg_init(&lc);
    const char *spec = e->train.source == TC_EXP_DATA_FMNIST ? "fmnist:train" : e->train.path;
    lc.data = spec;
    lc.source.kind = e->train.source == TC_EXP_DATA_FMNIST ? "fmnist"
                     : e->train.source == TC_EXP_DATA_CSV  ? "csv"
                                                           : "wds";
    if (e->train.source == TC_EXP_DATA_FMNIST && e->train.path) lc.source.fmnist_dir = e->train.path;
#ifdef TC_HAVE_CUDA
    /* batches in page-locked memory: uploads to the GPU without a staging copy */
    if (strncmp(r->c->be->name, "cuda", 4) == 0 && tc_cuda_pinned_allocator(&lc.allocator) != TC_OK)
        memset(&lc.allocator, 0, sizeof lc.allocator);
#endif
    if (e->train.source == TC_EXP_DATA_CSV) {
        lc.source.csv_sep = e->train.csv_separator;
        lc.source.csv_img_key = e->train.csv_img_key;
        lc.source.csv_caption_key = e->train.csv_caption_key;
    }
    if (e->train.num_samples > 0) lc.source.num_samples = e->train.num_samples;
    lc.batch_size = r->batch;
    lc.rank = r->c->rank;
    lc.world_size = r->c->world;
    lc.image_size = cfg->vision.image_size;
    lc.context_length = cfg->text.context_length;
    lc.train = 1;
    lc.workers = e->train.workers;
    lc.seed = (uint64_t)e->seed * 7919u + (uint64_t)r->i;
    lc.tokenizer = r->c->tok;
    lc.quiet = 0;
    lc.log = r->c->log;
    return tc_loader_create(&lc, resume, &r->loader);
}

/* restores weights, moments, masks and counters from a checkpoint folder */
static tc_status resume_from(stage_run *r, const char *ckpt) {
    run_ctx *c = r->c;
    char path[CKPT_CAP + 64];
    host_model h;
    TC_TRY(host_model_load(ckpt, NULL, &h));
    snprintf(path, sizeof path, "%s/train_state.safetensors", ckpt);
    tc_safetensors *f;
    tc_status s = tc_st_open(&f, path);
    if (s != TC_OK) {
        host_model_free(&h);
        return s;
    }
    const char *v;
    long long x[5];
    if ((v = tc_st_metadata(f, "step")) && parse_ll_list(v, x, 1, "step") == TC_OK) r->meta.step = x[0];
    else s = tc_fail(TC_ERR_FORMAT, "%s: no step", path);
    if (s == TC_OK && (v = tc_st_metadata(f, "adam_step"))) s = parse_ll_list(v, &r->meta.adam_step, 1, "adam_step");
    if (s == TC_OK && (v = tc_st_metadata(f, "nonfinite"))) s = parse_ll_list(v, &r->meta.nonfinite, 1, "nonfinite");
    long long masked = 0;
    if (s == TC_OK && (v = tc_st_metadata(f, "masked"))) s = parse_ll_list(v, &masked, 1, "masked");
    if (s == TC_OK && (v = tc_st_metadata(f, "cursor"))) {
        s = parse_ll_list(v, x, 5, "cursor");
        int64_t cv[5] = {x[0], x[1], x[2], x[3], x[4]};
        tc_loader_cursor_unpack(cv, &r->meta.cursor);
    }
    /* data parallel: this rank's own cursor, when the run had as many ranks */
    long long saved_world = 1;
    if (s == TC_OK && (v = tc_st_metadata(f, "world")) && *v)
        s = parse_ll_list(v, &saved_world, 1, "world");
    if (s == TC_OK && c->world > 1 && saved_world == c->world &&
        (v = tc_st_metadata(f, "rank_cursors")) && *v) {
        size_t K = TC_LOADER_CURSOR_INTS, n = (size_t)c->world * K;
        long long *all = malloc(n * sizeof *all);
        if (!all) s = tc_fail(TC_ERR_OOM, "resume: out of memory");
        if (s == TC_OK) s = parse_ll_list(v, all, (int)n, "rank_cursors");
        if (s == TC_OK) {
            int64_t cv[TC_LOADER_CURSOR_INTS];
            for (size_t k = 0; k < K; k++) cv[k] = all[(size_t)c->rank * K + k];
            tc_loader_cursor_unpack(cv, &r->meta.cursor);
        }
        free(all);
    } else if (s == TC_OK && saved_world != c->world) {
        logf_run(c, "warning: %s was written by %lld processes, this run has %d: the data "
                 "order does not continue exactly",
                 path, saved_world, c->world);
    }
    r->meta.masked = (int)masked;
    if (s == TC_OK && !masked && r->masked) {
        /* the mask phase is over: the checkpoint holds the pruned model */
        for (int k = 0; k < 2; k++) l0_free(c->be, &r->l0[k]);
        r->masked = 0;
    }
    const char *tower_names[2] = {"vision", "text"};
    for (int k = 0; k < 2 && s == TC_OK && r->masked; k++) {
        if (!r->l0[k].on) continue;
        char name[64], key[64];
        tower_l0 *t = &r->l0[k];
        snprintf(name, sizeof name, "l0.%s", tower_names[k]);
        s = read_state_tensor(f, name, t->masks.data, t->masks.count);
        snprintf(name, sizeof name, "l0opt.%s.m", tower_names[k]);
        if (s == TC_OK) s = read_state_tensor(f, name, t->opt.m, t->masks.count);
        snprintf(name, sizeof name, "l0opt.%s.v", tower_names[k]);
        if (s == TC_OK) s = read_state_tensor(f, name, t->opt.v, t->masks.count);
        snprintf(key, sizeof key, "l0_rng_%s", tower_names[k]);
        unsigned long long u[2];
        if (s == TC_OK && (v = tc_st_metadata(f, key)) && parse_u64_pair(v, u) == TC_OK) {
            t->rng.seed = l0_rank_seed((uint64_t)u[0], c->rank); /* rank 0's is saved */
            t->rng.counter = (uint64_t)u[1];
        } else if (s == TC_OK) {
            s = tc_fail(TC_ERR_FORMAT, "%s: %s missing", path, key);
        }
        snprintf(key, sizeof key, "l0opt_step_%s", tower_names[k]);
        if (s == TC_OK && (v = tc_st_metadata(f, key))) s = parse_ll_list(v, &t->opt.step, 1, key);
    }
    if (s == TC_OK) s = make_student(r, &h.cfg, h.params, r->masked);
    if (s == TC_OK) {
        size_t P = tc_model_layout(r->student)->packed_total;
        float *buf = malloc(2 * P * sizeof(float));
        if (!buf) s = tc_fail(TC_ERR_OOM, "resume: out of memory");
        if (s == TC_OK) s = read_state_tensor(f, "adam.m", buf, P);
        if (s == TC_OK) s = read_state_tensor(f, "adam.v", buf + P, P);
        if (s == TC_OK) s = tc_trainer_set_moments(r->trainer, buf, buf + P);
        free(buf);
        tc_trainer_set_step_index(r->trainer, (int)r->meta.step);
        tc_trainer_set_adam_step(r->trainer, (int)r->meta.adam_step);
    }
    tc_st_close(f);
    host_model_free(&h);
    if (s != TC_OK) return tc_fail_context(s, "resuming from %s", ckpt);
    return TC_OK;
}

/* the mask phase ends: deterministic masks, prune, a fresh dense student */
static tc_status prune_student(stage_run *r) {
    run_ctx *c = r->c;
    const tc_param_layout *L = tc_model_layout(r->student);
    float *params = malloc(L->total * sizeof(float));
    if (!params) return tc_fail(TC_ERR_OOM, "prune: out of memory");
    tc_status s = tc_model_get_params(r->student, params);
    float *zv = NULL, *zt = NULL;
    int round_to = r->st->inherit.autoc.round_to;
    for (int k = 0; k < 2 && s == TC_OK; k++) {
        if (!r->l0[k].on) continue;
        s = tc_l0_deterministic(&r->l0[k].masks, round_to, r->l0[k].z);
        if (k == 0) zv = r->l0[k].z; else zt = r->l0[k].z;
    }
    tc_model_config pcfg;
    tc_param_layout playout;
    float *pparams = NULL;
    if (s == TC_OK)
        s = tc_prune_z(tc_model_cfg(r->student), L, params, zv, zt, TC_PRUNE_EXACT, &pcfg, &playout,
                       &pparams);
    free(params);
    if (s != TC_OK) return s;
    snprintf(pcfg.name, sizeof pcfg.name, "%s", r->st->name);
    tc_trainer_destroy(r->trainer);
    tc_model_destroy(r->student);
    r->trainer = NULL;
    r->student = NULL;
    for (int k = 0; k < 2; k++) l0_free(c->be, &r->l0[k]);
    r->masked = 0;
    /* the original rebuilds its optimizers: fresh moments, same schedule */
    s = make_student(r, &pcfg, pparams, 0);
    if (s == TC_OK) tc_trainer_set_step_index(r->trainer, (int)r->meta.step);
    tc_param_counts pc = tc_param_count(&playout);
    logf_run(c, "stage %s: pruned at step %lld to %zu parameters (%zu without the token embedding)",
             r->st->name, r->meta.step, pc.total, pc.total - pc.token_embedding);
    free(pparams);
    tc_param_layout_free(&playout);
    return s;
}

/* x (n, host) = its mean over the ranks */
static tc_status average_host(run_ctx *c, float *x, size_t n) {
    double *d = malloc(n * sizeof *d);
    if (!d) return tc_fail(TC_ERR_OOM, "mask gradients: out of memory");
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    tc_status s = c->comm->host_all_reduce_f64(c->comm, d, n, TC_REDUCE_AVG);
    for (size_t i = 0; i < n && s == TC_OK; i++) x[i] = (float)d[i];
    free(d);
    return s;
}

/* one iteration of the mask phase: sample, step, mask gradients, Lagrangian, mask AdamW */
static tc_status masked_step(stage_run *r, const tc_batch *b, tc_step_result *res, double *lag) {
    tc_backend *be = r->c->be;
    const tc_exp_auto *a = &r->st->inherit.autoc;
    for (int k = 0; k < 2; k++) {
        tower_l0 *t = &r->l0[k];
        if (!t->on) continue;
        tc_l0_sample(&t->masks, &t->rng, t->z, t->dz_dloga);
        TC_TRY(l0_upload_z(be, t));
        be->zero(be, t->dz_dev, t->dl.total * sizeof(float));
    }
    TC_TRY(tc_trainer_compute(r->trainer, b->images, b->tokens, b->n, res));
    tc_l0_masks *towers[2];
    float *grads[2];
    int n = 0;
    for (int k = 0; k < 2; k++) {
        tower_l0 *t = &r->l0[k];
        if (!t->on) continue;
        TC_TRY(be->download(be, t->stage, t->dz_dev, t->dl.total * sizeof(float)));
        tc_l0_from_device(&t->masks, &t->dl, t->dloss_dz, t->stage);
        memset(t->grad, 0, t->masks.count * sizeof(float));
        tc_l0_backward_z(t->grad, t->dloss_dz, t->dz_dloga, t->masks.n_loga);
        towers[n] = &t->masks;
        grads[n++] = t->grad;
    }
    /* data parallel: the mask gradients of every rank's samples, averaged as
     * DDP averages the log-alpha gradients (the Lagrangian below is the same
     * on every rank, computed from the same masks and lambdas) */
    for (int k = 0; k < n && r->c->world > 1; k++)
        TC_TRY(average_host(r->c, grads[k], towers[k]->count));
    double target = tc_l0_target_sparsity(a->start_sparsity, a->target_sparsity, r->meta.step,
                                          a->sparsity_warmup);
    tc_l0_lagrangian_result lr;
    TC_TRY(tc_l0_lagrangian(towers, grads, n, target, &lr));
    *lag = lr.lagrangian;
    res->loss += (float)lr.lagrangian;
    if (res->skipped || !isfinite(lr.lagrangian)) {
        res->skipped = 1;
        return TC_OK;
    }
    double extra = 0.0;
    for (int k = 0; k < n; k++)
        for (size_t j = 0; j < towers[k]->count; j++) extra += (double)grads[k][j] * grads[k][j];
    float coef = tc_trainer_clip_coefficient(r->trainer, extra);
    TC_TRY(tc_trainer_apply(r->trainer, extra));
    tc_l0_adamw_hparams hp = tc_l0_adamw_defaults();
    hp.lr_loga = a->mask_lr;
    hp.lr_lambda = a->lambda_lr;
    for (int k = 0; k < 2; k++) {
        tower_l0 *t = &r->l0[k];
        if (!t->on) continue;
        TC_TRY(tc_l0_adamw_step(&t->opt, &t->masks, t->grad, &hp, coef));
        tc_l0_constrain(&t->masks);
    }
    return TC_OK;
}

/* metrics lines: rank 0 alone has the file open */
static tc_status metrics_write(tc_metrics_log *m, int64_t step, const char *event, int n,
                               const char **keys, const double *vals) {
    return m ? tc_metrics_write(m, step, event, n, keys, vals) : TC_OK;
}

static tc_status metrics_sync(tc_metrics_log *m) { return m ? tc_metrics_sync(m) : TC_OK; }

static tc_status eval_now(stage_run *r, tc_zeroshot_result *zr) {
    run_ctx *c = r->c;
    if (c->exp->zero_shot.dataset == TC_EXP_ZS_NONE) return TC_OK;
    for (int k = 0; k < 2 && r->masked; k++)
        TC_TRY(l0_install_deterministic(c->be, &r->l0[k], r->st->inherit.autoc.round_to));
    return zeroshot(c, r->student, zr);
}

static tc_status log_eval(stage_run *r, const tc_zeroshot_result *zr) {
    const char *keys[] = {"zeroshot_top1", "zeroshot_top5", "mean_per_class_recall"};
    double vals[] = {zr->top1, zr->top5, zr->mean_per_class_recall};
    TC_TRY(metrics_write(r->metrics, r->meta.step, "eval", 3, keys, vals));
    if (r->tb) {
        TC_TRY(tc_tb_scalar(r->tb, "eval/zeroshot_top1", r->meta.step, (float)zr->top1));
        TC_TRY(tc_tb_scalar(r->tb, "eval/zeroshot_top5", r->meta.step, (float)zr->top5));
    }
    return TC_OK;
}

/* images/s of the final model's image tower at the stage batch */
static double inference_speed(run_ctx *c, tc_model *m, int batch) {
    const tc_model_config *cfg = tc_model_cfg(m);
    int S = cfg->vision.image_size;
    float *img = calloc((size_t)batch * 3 * S * S, sizeof *img);
    if (!img) return 0.0;
    for (size_t i = 0; i < (size_t)batch * 3 * S * S; i++) img[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    double best = 0.0;
    if (tc_model_encode_image(m, img, batch) == TC_OK && c->be->synchronize(c->be) == TC_OK) {
        for (int rep = 0; rep < 3; rep++) {
            double t0 = wall_seconds();
            if (tc_model_encode_image(m, img, batch) != TC_OK || c->be->synchronize(c->be) != TC_OK) break;
            double ips = batch / (wall_seconds() - t0);
            if (ips > best) best = ips;
        }
    }
    free(img);
    return best;
}

static tc_status write_summary(stage_run *r, const tc_zeroshot_result *zr, int has_eval,
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

static void stage_free(stage_run *r) {
    run_ctx *c = r->c;
    if (r->tb) tc_tb_close(r->tb);
    if (r->metrics) tc_metrics_close(r->metrics);
    tc_loader_destroy(r->loader);
    tc_trainer_destroy(r->trainer);
    tc_model_destroy(r->student);
    tc_model_destroy(r->teacher);
    for (int k = 0; k < 2; k++) l0_free(c->be, &r->l0[k]);
    host_model_free(&r->init);
}

static tc_status run_stage(run_ctx *c, int i) {
    const tc_exp_stage *st = &c->exp->stages[i];
    stage_result *res = &c->res[i];
    char dir[PATH_CAP], path[PATH_CAP];
    stage_path(c, i, NULL, dir);
    stage_path(c, i, "final", res->final_dir);
    stage_path(c, i, "summary.json", path);

    stage_run r;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.i = i;
    r.st = st;
    if ((long long)st->batch * c->world > (1 << 24))
        return tc_fail(TC_ERR_CONFIG, "stage %s: global batch %d x %d processes is too large",
                       st->name, st->batch, c->world);
    r.batch = st->batch; /* per process (docs/experiments.md); the global batch is world x batch */
    r.micro = st->batch / st->accum_steps;
    /* rank 0's view of the run folder decides for every rank */
    double done_before = c->rank == 0 ? tc_path_is_file(path) : 0;
    if (c->world > 1) TC_TRY(c->comm->host_all_reduce_f64(c->comm, &done_before, 1, TC_REDUCE_SUM));
    if (done_before != 0.0) {
        /* finished before: its final architecture is what later stages need */
        host_model h;
        TC_TRY(host_model_load(res->final_dir, NULL, &h));
        res->cfg = h.cfg;
        host_model_free(&h);
        if (st->inherit.kind == TC_EXP_INHERIT_AUTO) {
            /* the full shape of its chain, for a later auto stage */
            const tc_exp_stage *p = st;
            while (p->parent >= 0 && c->exp->stages[p->parent].inherit.kind == TC_EXP_INHERIT_AUTO)
                p = &c->exp->stages[p->parent];
            host_model root;
            if (p->parent >= 0) TC_TRY(host_model_load(c->res[p->parent].final_dir, NULL, &root));
            else TC_TRY(host_model_load(p->parent_ext.checkpoint, p->parent_ext.model, &root));
            res->has_root = 1;
            res->root = root.cfg;
            host_model_free(&root);
        }
        res->done = 1;
        logf_run(c, "stage %s: done earlier, skipped", st->name);
        return TC_OK;
    }
    if (c->rank == 0) TC_TRY(tc_mkdir_p(dir));
    logf_run(c, "stage %s: %s, %s inheritance, %lld steps of batch %d", st->name,
             tc_exp_stage_kind_name(st->kind), tc_exp_inherit_kind_name(st->inherit.kind),
             (long long)st->steps, st->batch);
    if (c->world > 1)
        logf_run(c, "stage %s: %d processes, global batch %d (%d per process)", st->name, c->world,
                 c->world * r.batch, r.batch);
    if (st->accum_steps > 1)
        logf_run(c, "stage %s: %d micro-batches of %d per step", st->name, st->accum_steps,
                 r.micro);

    tc_status s = build_student(&r);
    if (s == TC_OK) s = make_teacher(&r);
    char ckpt[CKPT_CAP];
    latest_checkpoint(c, i, ckpt);
    /* every rank resumes from the checkpoint rank 0 found */
    if (s == TC_OK && c->world > 1) s = c->comm->host_broadcast(c->comm, ckpt, sizeof ckpt, 0);
    if (s == TC_OK && ckpt[0]) {
        s = resume_from(&r, ckpt);
        if (s == TC_OK) logf_run(c, "stage %s: resumed from %s", st->name, ckpt);
    } else if (s == TC_OK) {
        s = make_student(&r, &r.init.cfg, r.init.params, r.masked);
        r.meta.masked = r.masked;
    }
    host_model_free(&r.init);
    if (s == TC_OK) {
        double mib = 1.0 / (1024.0 * 1024.0);
        size_t opt = tc_trainer_optimizer_bytes(r.trainer);
        logf_run(c, "stage %s: device memory per process: student %.1f MiB, teacher %.1f MiB, "
                 "optimizer state %.1f MiB%s, step buffers %.1f MiB",
                 st->name, tc_model_device_bytes(r.student) * mib,
                 r.teacher ? tc_model_device_bytes(r.teacher) * mib : 0.0, opt * mib,
                 c->world > 1 && c->exp->zero1 ? " (ZeRO-1: this rank's slice)" : "",
                 (tc_trainer_device_bytes(r.trainer) - opt) * mib);
    }
    if (s == TC_OK) s = open_loader(&r, ckpt[0] ? &r.meta.cursor : NULL);
    stage_path(c, i, "metrics.jsonl", path);
    if (s == TC_OK && c->rank == 0) s = tc_metrics_truncate_after(path, r.meta.step);
    if (s == TC_OK && c->rank == 0) s = tc_metrics_open(&r.metrics, path);
    if (s == TC_OK && c->rank == 0 && tc_tb_open(&r.tb, dir) != TC_OK) {
        logf_run(c, "warning: stage %s: no TensorBoard events: %s", st->name, tc_last_error());
        r.tb = NULL;
    }

    tc_progress prog;
    if (s == TC_OK)
        tc_progress_begin(&prog, c->log, st->name, r.meta.step, st->steps, st->log_every,
                          c->force_tty);
    double t_start = wall_seconds(), data_wait = 0.0;
    long long steps_timed = 0;
    tc_batch *prev = NULL; /* the last step's batch, released after the next is queued */
    double last_ips = 0.0, last_loss = 0.0, t_read = t_start;
    long long since_read = 0, skipped_seen = 0;
    const tc_exp_auto *a = &st->inherit.autoc;
    while (s == TC_OK && r.meta.step < st->steps) {
        tc_batch *b;
        double tw = wall_seconds();
        s = tc_loader_next(r.loader, &b);
        data_wait += wall_seconds() - tw;
        if (s != TC_OK) break;
        if (!b) {
            s = tc_fail(TC_ERR_DATA, "stage %s: the training data ran out", st->name);
            break;
        }
        if (c->nan_from_step >= 0 && r.meta.step >= c->nan_from_step &&
            (!c->kill_stage[0] || strcmp(c->kill_stage, st->name) == 0)) {
            const tc_model_config *mc = tc_model_cfg(r.student);
            size_t n_px = (size_t)b->n * 3 * mc->vision.image_size * mc->vision.image_size;
            for (size_t k = 0; k < n_px; k++) b->images[k] = NAN;
        }
        tc_step_result sr;
        double lag = 0.0;
        tc_trainer_set_step_index(r.trainer, (int)r.meta.step);
        long long next = r.meta.step + 1;
        /* the step's result is read back (a host synchronisation) only when
         * something uses it: logging, evaluation, checkpoints, the end */
        int read = r.masked || next % st->log_every == 0 || next == st->steps ||
                   (st->eval_every > 0 && next % st->eval_every == 0) ||
                   (st->checkpoint_every > 0 && next % st->checkpoint_every == 0);
        if (r.masked) s = masked_step(&r, b, &sr, &lag);
        else s = tc_trainer_step(r.trainer, b->images, b->tokens, b->n, read ? &sr : NULL);
        r.meta.cursor = b->cursor;
        /* the previous batch goes back to the loader once the device has
         * read it; this one stays until the next step is queued, so the
         * device always has a step queued behind the one it runs */
        if (prev) {
            tc_status w = tc_trainer_inputs_wait(r.trainer, 1);
            if (s == TC_OK) s = w;
            tc_loader_release(r.loader, prev);
        }
        prev = b;
        if (s != TC_OK) break;
        steps_timed++;
        r.trainer_steps++;
        r.meta.step++;
        since_read++;
        long long skipped_now = 0; /* skipped steps this result tells of */
        if (r.masked) {
            /* the mask phase reads every step and decides skips on the host */
            skipped_now = sr.skipped;
            r.meta.nonfinite = sr.skipped ? r.meta.nonfinite + 1 : 0;
        } else if (read) {
            skipped_now = sr.skipped_total - skipped_seen;
            skipped_seen = sr.skipped_total;
            /* consecutive skips; those before a resume count when every
             * step since has been skipped too */
            r.meta.nonfinite = sr.skipped_in_a_row;
            if (sr.skipped_in_a_row == r.trainer_steps) r.meta.nonfinite += r.nonfinite_base;
        }
        if (skipped_now > 0) {
            const char *k[] = {"loss", "skipped"};
            double v[] = {sr.loss, (double)skipped_now};
            metrics_write(r.metrics, r.meta.step, "skip", 2, k, v);
        }
        if (r.meta.nonfinite > st->max_nonfinite_skips) {
            s = tc_fail(TC_ERR_NONFINITE,
                        "stage %s: %lld consecutive steps with a non-finite loss or gradient (last at step %lld); stopping",
                        st->name, r.meta.nonfinite, r.meta.step);
            break;
        }
        if (read) {
            /* the global batch per second over the steps since the last read */
            double now = wall_seconds();
            last_ips = (double)since_read * r.batch * c->world / (now - t_read);
            last_loss = sr.loss;
            since_read = 0;
        }
        if (read && (r.meta.step % st->log_every == 0 || r.meta.step == st->steps)) {
            /* the share of the stage's wall time spent waiting for batches */
            double waited = data_wait / (wall_seconds() - t_start);
            const char *keys[] = {"loss", "lr", "grad_norm", "images_per_s", "data_wait", "lagrangian"};
            double vals[] = {sr.loss, sr.lr, sr.grad_norm, last_ips, waited, lag};
            s = metrics_write(r.metrics, r.meta.step, NULL, r.masked ? 6 : 5, keys, vals);
            if (s == TC_OK && r.tb) {
                tc_tb_scalar(r.tb, "train/loss", r.meta.step, sr.loss);
                tc_tb_scalar(r.tb, "train/lr", r.meta.step, sr.lr);
                tc_tb_scalar(r.tb, "train/images_per_s", r.meta.step, (float)last_ips);
                tc_tb_flush(r.tb, 0);
            }
        }
        tc_progress_update(&prog, r.meta.step, last_loss, last_ips);
        if (s == TC_OK && fault_due(c, c->kill_at_step, r.meta.step, st->name)) raise(SIGKILL);
        /* the mask phase ends after prune_step iterations */
        if (s == TC_OK && r.masked && r.meta.step == a->prune_step) {
            s = prune_student(&r);
            r.meta.masked = 0;
            r.meta.adam_step = 0;
            const char *k[] = {"params"};
            double v[] = {s == TC_OK ? (double)tc_param_count(tc_model_layout(r.student)).total : 0.0};
            if (s == TC_OK) s = metrics_write(r.metrics, r.meta.step, "prune", 1, k, v);
        }
        if (s == TC_OK && st->eval_every > 0 && r.meta.step % st->eval_every == 0 &&
            r.meta.step < st->steps && c->exp->zero_shot.dataset != TC_EXP_ZS_NONE) {
            tc_zeroshot_result zr;
            s = eval_now(&r, &zr);
            if (s == TC_OK) s = log_eval(&r, &zr);
            if (s == TC_OK) {
                char msg[160];
                snprintf(msg, sizeof msg, "stage %s step %lld: zero-shot top-1 %.2f%%", st->name,
                         r.meta.step, 100.0 * zr.top1);
                tc_progress_message(&prog, msg);
            }
        }
        if (s == TC_OK && st->checkpoint_every > 0 && r.meta.step % st->checkpoint_every == 0 &&
            r.meta.step < st->steps) {
            s = metrics_sync(r.metrics);
            char *cursors = NULL;
            if (s == TC_OK && c->world > 1) s = gather_cursors(c, &r.meta.cursor, &cursors);
            /* the moments of every rank (collective with ZeRO-1) */
            size_t P = tc_model_layout(r.student)->packed_total;
            float *moments = malloc(2 * P * sizeof(float));
            if (s == TC_OK && !moments) s = tc_fail(TC_ERR_OOM, "checkpoint: out of memory");
            if (s == TC_OK) s = tc_trainer_get_moments(r.trainer, moments, moments + P);
            r.meta.adam_step = tc_trainer_adam_step(r.trainer);
            if (s == TC_OK && c->rank == 0)
                s = save_checkpoint(c, i, r.student, moments, r.l0, &r.meta, cursors);
            free(moments);
            free(cursors);
        }
        /* the next rate counts from here: evaluations and checkpoints out */
        if (read) t_read = wall_seconds();
    }
    if (prev) {
        /* the last batch: its upload may still be queued */
        tc_status w = r.trainer ? tc_trainer_inputs_wait(r.trainer, 0) : TC_OK;
        if (s == TC_OK) s = w;
        tc_loader_release(r.loader, prev);
    }
    if (s == TC_OK) tc_progress_end(&prog);
    double train_time = wall_seconds() - t_start;
    double train_ips =
        steps_timed ? (double)steps_timed * st->batch * c->world / train_time : 0.0;
    double wait_fraction = steps_timed ? data_wait / train_time : 0.0;

    /* a stage that ends inside its mask phase is pruned at the end */
    if (s == TC_OK && r.masked) {
        s = prune_student(&r);
        r.meta.masked = 0;
    }
    tc_zeroshot_result zr = {0};
    int has_eval = c->exp->zero_shot.dataset != TC_EXP_ZS_NONE;
    if (s == TC_OK && has_eval) {
        s = eval_now(&r, &zr);
        if (s == TC_OK) s = log_eval(&r, &zr);
        if (s == TC_OK)
            logf_run(c, "stage %s: zero-shot top-1 %.2f%%, top-5 %.2f%%", st->name, 100.0 * zr.top1,
                     100.0 * zr.top5);
    }
    if (s == TC_OK) {
        float *params = malloc(tc_model_layout(r.student)->total * sizeof(float));
        if (!params) s = tc_fail(TC_ERR_OOM, "final weights: out of memory");
        if (s == TC_OK) s = tc_model_get_params(r.student, params);
        tc_model_config fcfg = *tc_model_cfg(r.student);
        snprintf(fcfg.name, sizeof fcfg.name, "%s", st->name);
        if (s == TC_OK && c->rank == 0)
            s = tc_checkpoint_save(res->final_dir, TC_FORMAT_OPENCLIP, &fcfg,
                                   tc_model_layout(r.student), params);
        free(params);
        res->cfg = fcfg;
    }
    tc_retrieval_result rr = {0};
    int has_retrieval = c->exp->retrieval.enabled;
    if (s == TC_OK && has_retrieval) {
        s = tc_retrieval_eval(r.student, c->tok, c->exp->retrieval.path, c->exp->retrieval.num_samples, &rr);
        const char *k[] = {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"};
        double v[] = {rr.i2t_recall[0], rr.i2t_recall[1], rr.i2t_recall[2],
                      rr.t2i_recall[0], rr.t2i_recall[1], rr.t2i_recall[2]};
        if (s == TC_OK) s = metrics_write(r.metrics, r.meta.step, "retrieval", 6, k, v);
        if (s == TC_OK)
            logf_run(c, "stage %s: retrieval image->text R@1 %.2f%%, text->image R@1 %.2f%%", st->name,
                     100.0 * rr.i2t_recall[0], 100.0 * rr.t2i_recall[0]);
    }
    double ips = 0.0;
    if (s == TC_OK) ips = inference_speed(c, r.student, st->batch);
    if (s == TC_OK) s = metrics_sync(r.metrics);
    if (s == TC_OK && c->rank == 0)
        s = write_summary(&r, &zr, has_eval, has_retrieval ? &rr : NULL, ips, train_ips, wait_fraction);
    /* later stages read this stage's final weights that rank 0 wrote */
    if (s == TC_OK && c->world > 1) s = c->comm->barrier(c->comm);
    if (s == TC_OK) res->done = 1;
    stage_free(&r);
    if (s != TC_OK) return tc_fail_context(s, "stage %s", st->name);
    return TC_OK;
}

tc_status tc_run_experiment(const tc_experiment *exp, const tc_run_options *opt) {
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.exp = exp;
    c.log = opt && opt->log ? opt->log : stdout;
    c.force_tty = opt ? opt->force_tty : -1;
    c.kill_at_step = env_fault("kill_at_step", c.kill_stage, sizeof c.kill_stage);
    c.kill_in_checkpoint = env_fault("kill_in_checkpoint", c.kill_stage, sizeof c.kill_stage);
    c.nan_from_step = env_fault("nan_from_step", c.kill_stage, sizeof c.kill_stage);
    c.res = calloc((size_t)exp->n_stages, sizeof *c.res);
    if (!c.res) return tc_fail(TC_ERR_OOM, "run: out of memory");
    /* launched by mpirun or srun: one rank of a data-parallel run */
    tc_comm *mpi = NULL;
    tc_status s = TC_OK;
    c.comm = tc_comm_single();
    if (tc_comm_launched_world() > 1) {
        s = tc_comm_mpi_create(&mpi);
        if (s != TC_OK) {
            free(c.res);
            return s;
        }
        c.comm = mpi;
    }
    c.rank = c.comm->rank;
    c.world = c.comm->world_size;
    FILE *quiet = NULL;
    if (c.rank != 0) {
        /* one voice: the other ranks' progress would repeat rank 0's */
        quiet = fopen("/dev/null", "w");
        if (quiet) c.log = quiet;
    }
    const char *backend = exp->backend == TC_EXP_BACKEND_CUDA
                              ? (exp->precision == TC_EXP_PREC_FP32 ? "cuda-fp32" : "cuda")
                              : "cpu";
    if (c.world > 1 && exp->backend == TC_EXP_BACKEND_CUDA) {
#if defined(TC_HAVE_CUDA) && defined(TC_HAVE_NCCL) && defined(TC_HAVE_MPI)
        /* one GPU per rank, by the rank on its machine; NCCL for the collectives */
        int ndev = tc_cuda_device_count(NULL, 0);
        if (ndev <= 0) s = tc_fail(TC_ERR_UNSUPPORTED, "rank %d: no CUDA device", c.rank);
        if (s == TC_OK)
            s = tc_backend_cuda_create(&c.be, c.comm->local_rank % ndev,
                                       exp->precision == TC_EXP_PREC_FP32);
        if (s == TC_OK) s = tc_comm_nccl_create(&c.comm, mpi, c.be);
#else
        s = tc_fail(TC_ERR_UNSUPPORTED,
                    "%d processes on the CUDA backend need NCCL and MPI in the build", c.world);
#endif
    } else if (s == TC_OK) {
        s = tc_backend_open(backend, exp->threads, &c.be);
    }
    if (s == TC_OK && c.rank == 0) s = tc_mkdir_p(exp->out_dir);
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/experiment.yaml", exp->out_dir);
    if (s == TC_OK && c.rank == 0 && exp->resolved_yaml)
        s = tc_write_file_atomic(path, exp->resolved_yaml, strlen(exp->resolved_yaml));
    if (s == TC_OK) s = tc_tokenizer_create(&c.tok, NULL);
    if (s == TC_OK) s = load_templates(&c);
    for (int i = 0; s == TC_OK && i < exp->n_stages; i++) s = run_stage(&c, i);
    if (s == TC_OK && c.rank == 0) s = tc_run_report_write(exp);
    if (s == TC_OK) logf_run(&c, "run %s: done; report in %s/report.md", exp->name, exp->out_dir);
    if (c.template_storage) {
        for (int i = 0; i < c.n_templates; i++) free(c.template_storage[i]);
        free(c.template_storage);
    }
    free(c.templates);
    if (c.tok) tc_tokenizer_destroy(c.tok);
    if (s != TC_OK && c.world > 1) {
        /* the other ranks wait in a collective: end the job now, with the reason */
        fprintf(stderr, "tinyclip: rank %d of %d: %s\n", c.rank, c.world, tc_last_error());
        fflush(stderr);
        c.comm->abort(c.comm, 1);
    }
    if (c.comm != mpi) c.comm->destroy(c.comm); /* NCCL before its MPI bootstrap */
    if (c.be) c.be->destroy(c.be);
    if (mpi) mpi->destroy(mpi);
    if (quiet) fclose(quiet);
    free(c.res);
    return s;
}
