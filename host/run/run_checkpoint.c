/* checkpoints of a stage: a folder written as step-N.tmp and renamed when
 * complete (so a kill at any moment leaves the previous checkpoint usable)
 * holding the open_clip weights and train_state.safetensors (AdamW moments,
 * the mask phase's masks, their optimizer and RNG, the counters, every
 * rank's loader cursor); finding the newest complete one; resuming from it.
 * the result of a resumed run is bit-identical to one that never stopped. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fileio.h"
#include "manifest.h"
#include "safetensors.h"
#include "scheduler_internal.h"

/* every rank's loader cursor (resampled streams differ per rank):
 * "c0,...,c7,c0,...": rank-major, malloc'd */
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
    for (size_t k = 0; k < K; k++)
        all[(size_t)c->rank * K + k] = (double)cv[k]; /* < 2^53 */
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
 * then has no world and rank_cursors) */
static tc_status save_checkpoint(run_ctx *c, int i, tc_model *m, const float *moments, tower_l0 *l0,
                                 const state_meta *meta, const char *rank_cursors) {
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
    size_t P = L->total;
    float *buf = malloc(P * sizeof(float));
    if (!buf) return tc_fail(TC_ERR_OOM, "checkpoint: out of memory");
    tc_status s = tc_model_get_params(m, buf);
    if (s == TC_OK) s = tc_checkpoint_save(tmp, TC_FORMAT_OPENCLIP, tc_model_cfg(m), L, buf);
    if (s == TC_OK) tc_fault_in_checkpoint(&c->faults, c->exp->stages[i].name, meta->step);
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
    char v_step[32], v_adam[32], v_nf[32], v_cursor[240], v_masked[8], v_global[32];
    snprintf(v_step, sizeof v_step, "%lld", meta->step);
    snprintf(v_adam, sizeof v_adam, "%lld", meta->adam_step);
    snprintf(v_nf, sizeof v_nf, "%lld", meta->nonfinite);
    snprintf(v_masked, sizeof v_masked, "%d", meta->masked);
    int64_t cv[TC_LOADER_CURSOR_INTS];
    tc_loader_cursor_pack(&meta->cursor, cv);
    for (int k = 0, at = 0; k < TC_LOADER_CURSOR_INTS; k++)
        at += snprintf(v_cursor + at, sizeof v_cursor - (size_t)at, k ? ",%lld" : "%lld",
                       (long long)cv[k]);
    snprintf(v_global, sizeof v_global, "%lld", meta->global_batch);
    char v_world[16], v_threads[16];
    snprintf(v_world, sizeof v_world, "%d", c->world);
    snprintf(v_threads, sizeof v_threads, "%d", c->threads);
    const char *keys[] = {"format",        "step",          "adam_step",   "nonfinite",
                          "masked",        "cursor",        "l0_rng_vision", "l0_rng_text",
                          "l0opt_step_vision", "l0opt_step_text", "global_batch", "threads",
                          "device",        "build",         "world",       "rank_cursors"};
    const char *vals[] = {"tinyclip-train-state-1",
                          v_step,
                          v_adam,
                          v_nf,
                          v_masked,
                          v_cursor,
                          meta->masked && l0[0].on ? rngv[0] : "",
                          meta->masked && l0[1].on ? rngv[1] : "",
                          meta->masked && l0[0].on ? optstep[0] : "",
                          meta->masked && l0[1].on ? optstep[1] : "",
                          v_global,
                          v_threads,
                          c->device ? c->device : "",
                          c->build ? c->build : "",
                          v_world,
                          rank_cursors ? rank_cursors : ""};
    snprintf(path, sizeof path, "%s/train_state.safetensors", tmp);
    if (s == TC_OK) s = tc_st_write(path, t, nt, keys, vals, rank_cursors ? 16 : 14);
    free(buf);
    /* the manifest last, then the folder is published under its name */
    if (s == TC_OK) s = tc_manifest_write(tmp);
    if (s == TC_OK) s = publish_checkpoint(c, i, tmp, name);
    return s;
}

/* ---- finding and resuming ---- */

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
        if (i == 0 && *p++ != ',')
            return tc_fail(TC_ERR_FORMAT, "train state: bad rng state '%s'", v);
    }
    if (*p) return tc_fail(TC_ERR_FORMAT, "train state: bad rng state '%s'", v);
    return TC_OK;
}

/* a resume is bit-identical only on the same thread count, CPU or GPU and
 * build: say which differ from the checkpoint's (older ones have no record) */
static void warn_environment(stage_run *r, tc_safetensors *f, const char *path) {
    run_ctx *c = r->c;
    char now_threads[16], diff[900] = "";
    snprintf(now_threads, sizeof now_threads, "%d", c->threads);
    const char *keys[3] = {"threads", "device", "build"};
    const char *now[3] = {now_threads, c->device ? c->device : "", c->build ? c->build : ""};
    size_t n = 0;
    for (int k = 0; k < 3; k++) {
        const char *was = tc_st_metadata(f, keys[k]);
        if (!was || !was[0] || strcmp(was, now[k]) == 0) continue;
        n += (size_t)snprintf(diff + n, sizeof diff - n, "; %s '%.200s' then, '%.200s' now",
                              keys[k], was, now[k]);
        if (n >= sizeof diff) break;
    }
    if (diff[0])
        logf_run(c,
                 "warning: stage %s: %s was written elsewhere%s. the run continues, but a "
                 "resume is bit-identical only with the same thread count, CPU or GPU and build",
                 r->st->name, path, diff);
}

static tc_status read_state_tensor(tc_safetensors *f, const char *name, float *dst, size_t n) {
    int64_t shape[1] = {(int64_t)n};
    return tc_st_read_f32(f, name, 1, shape, dst);
}

tc_status keep_global_batch(stage_run *r, const char *ckpt) {
    run_ctx *c = r->c;
    char path[CKPT_CAP + 64];
    snprintf(path, sizeof path, "%s/train_state.safetensors", ckpt);
    tc_safetensors *f;
    TC_TRY(tc_st_open(&f, path));
    long long world = 1, global = 0;
    const char *v;
    tc_status s = TC_OK;
    if ((v = tc_st_metadata(f, "world")) && *v) s = parse_ll_list(v, &world, 1, "world");
    if (s == TC_OK && (v = tc_st_metadata(f, "global_batch")) && *v)
        s = parse_ll_list(v, &global, 1, "global_batch");
    tc_st_close(f);
    if (s != TC_OK || world == c->world) return s;
    if (global <= 0) global = world * r->st->batch; /* saved before global_batch was kept */
    int accum = r->st->accum_steps;
    if (global % c->world != 0 || (global / c->world) % accum != 0)
        return tc_fail(TC_ERR_CONFIG,
                       "stage %s: %s holds global batch %lld of %lld processes, which %d "
                       "processes cannot split into equal batches of %d micro-batches",
                       r->st->name, ckpt, global, world, c->world, accum);
    r->batch = (int)(global / c->world);
    r->micro = r->batch / accum;
    logf_run(c,
             "stage %s: resuming %lld processes' run on %d: global batch %lld kept, %d per process",
             r->st->name, world, c->world, global, r->batch);
    return TC_OK;
}

tc_status resume_from(stage_run *r, const char *ckpt) {
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
    if ((v = tc_st_metadata(f, "step")) && parse_ll_list(v, x, 1, "step") == TC_OK)
        r->meta.step = x[0];
    else
        s = tc_fail(TC_ERR_FORMAT, "%s: no step", path);
    if (s == TC_OK && (v = tc_st_metadata(f, "adam_step")))
        s = parse_ll_list(v, &r->meta.adam_step, 1, "adam_step");
    if (s == TC_OK && (v = tc_st_metadata(f, "nonfinite")))
        s = parse_ll_list(v, &r->meta.nonfinite, 1, "nonfinite");
    long long masked = 0;
    if (s == TC_OK && (v = tc_st_metadata(f, "masked"))) s = parse_ll_list(v, &masked, 1, "masked");
    if (s == TC_OK && (v = tc_st_metadata(f, "cursor"))) {
        /* 5 values before the resampled order's, 8 since */
        int nc = 1;
        for (const char *q = v; *q; q++)
            nc += *q == ',';
        long long xc[TC_LOADER_CURSOR_INTS];
        if (nc != 5 && nc != TC_LOADER_CURSOR_INTS)
            s = tc_fail(TC_ERR_FORMAT, "%s: bad cursor '%s'", path, v);
        if (s == TC_OK) s = parse_ll_list(v, xc, nc, "cursor");
        int64_t cv[TC_LOADER_CURSOR_INTS];
        for (int k = 0; k < nc && s == TC_OK; k++)
            cv[k] = xc[k];
        if (s == TC_OK) tc_loader_cursor_unpack(cv, nc, &r->meta.cursor);
    }
    /* data parallel: this rank's own cursor, when the run had as many ranks */
    long long saved_world = 1;
    if (s == TC_OK && (v = tc_st_metadata(f, "world")) && *v)
        s = parse_ll_list(v, &saved_world, 1, "world");
    if (s == TC_OK && c->world > 1 && saved_world == c->world &&
        (v = tc_st_metadata(f, "rank_cursors")) && *v) {
        size_t n = 1;
        for (const char *q = v; *q; q++)
            n += *q == ',';
        size_t K = n / (size_t)c->world; /* 5 or 8 values per rank, as saved */
        if (K != 5 && K != TC_LOADER_CURSOR_INTS)
            s = tc_fail(TC_ERR_FORMAT, "%s: bad rank_cursors", path);
        long long *all = malloc(n * sizeof *all);
        if (!all) s = tc_fail(TC_ERR_OOM, "resume: out of memory");
        if (s == TC_OK) s = parse_ll_list(v, all, (int)n, "rank_cursors");
        if (s == TC_OK) {
            int64_t cv[TC_LOADER_CURSOR_INTS];
            for (size_t k = 0; k < K; k++)
                cv[k] = all[(size_t)c->rank * K + k];
            tc_loader_cursor_unpack(cv, (int)K, &r->meta.cursor);
        }
        free(all);
    } else if (s == TC_OK && saved_world != c->world) {
        /* rank 0's cursor: the training order is the same on any number of
         * processes; resampled streams are per rank and start again */
        int rs = c->exp->train.resampled;
        tc_loader_cursor_rebase(&r->meta.cursor, rs);
        logf_run(c, "%s was written by %lld processes, this run has %d: %s", path, saved_world,
                 c->world,
                 rs ? "the resampled streams start again with new draws"
                    : "the same sequence of global batches continues");
    }
    if (s == TC_OK) warn_environment(r, f, path);
    r->meta.masked = (int)masked;
    if (s == TC_OK && !masked && r->masked) {
        /* the mask phase is over: the checkpoint holds the pruned model */
        for (int k = 0; k < 2; k++)
            l0_free(c->be, &r->l0[k]);
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
        size_t P = tc_model_layout(r->student)->total;
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

tc_status checkpoint_stage(stage_run *r) {
    run_ctx *c = r->c;
    tc_status s = metrics_sync(r->metrics);
    char *cursors = NULL;
    if (s == TC_OK && c->world > 1) s = gather_cursors(c, &r->meta.cursor, &cursors);
    /* the moments of every rank (collective with ZeRO-1) */
    size_t P = tc_model_layout(r->student)->total;
    float *moments = malloc(2 * P * sizeof(float));
    if (s == TC_OK && !moments) s = tc_fail(TC_ERR_OOM, "checkpoint: out of memory");
    if (s == TC_OK) s = tc_trainer_get_moments(r->trainer, moments, moments + P);
    r->meta.adam_step = tc_trainer_adam_step(r->trainer);
    r->meta.global_batch = (long long)c->world * r->batch;
    if (s == TC_OK && c->rank == 0)
        s = save_checkpoint(c, r->i, r->student, moments, r->l0, &r->meta, cursors);
    free(moments);
    free(cursors);
    return s;
}
