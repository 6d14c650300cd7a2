/* teacher-feature caches in a run (host/data/teacher_cache.h): a
 * teacher_cache stage builds one (cache_build.c) and writes its
 * summary.json; a distill stage that names one opens it instead of loading
 * the teacher onto the device, after checking it against the run (the
 * teacher's config and weights, the data, the transform, the image size,
 * the augmentations and the dtype) and verifying every shard's checksum, so
 * nothing is trained on a cache that does not fit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "json.h"
#include "scheduler_internal.h"

void teacher_label(const run_ctx *c, char *buf, size_t cap) {
    const tc_exp_teacher *t = &c->exp->teacher;
    if (t->stage >= 0)
        snprintf(buf, cap, "stage %s", c->exp->stages[t->stage].name);
    else
        snprintf(buf, cap, "%s", t->ext.checkpoint ? t->ext.checkpoint : "?");
}

/* the run teacher's key part, once per run (its weights read on the host) */
static tc_status run_teacher_key(run_ctx *c, const tc_cache_key **out) {
    if (!c->teacher_key_ready) {
        host_model h;
        char label[PATH_CAP];
        teacher_label(c, label, sizeof label);
        TC_TRY(load_teacher(c, &h));
        tc_status s = cache_key_teacher(&c->teacher_key, label, &h.cfg, h.params, h.layout.total);
        host_model_free(&h);
        TC_TRY(s);
        c->teacher_key_ready = 1;
    }
    *out = &c->teacher_key;
    return TC_OK;
}

static tc_status write_cache_summary(run_ctx *c, int i, const char *dir, int64_t rows,
                                     uint64_t bytes, double wall, const tc_cache_build_stats *t) {
    const tc_exp_stage *st = &c->exp->stages[i];
    tc_sbuf b = {0};
    tc_sbuf_printf(
        &b, "{\n  \"stage\": \"%s\",\n  \"kind\": \"teacher_cache\",\n  \"dir\": ", st->name);
    tc_sbuf_json_string(&b, dir, strlen(dir));
    tc_sbuf_printf(&b,
                   ",\n  \"samples\": %lld,\n  \"augmentations\": %d,\n  \"dtype\": \"%s\",\n"
                   "  \"bytes\": %llu,\n  \"wall_seconds\": %.3f,\n  \"process_seconds\": %.3f,\n"
                   "  \"processes\": %d,\n  \"teacher_image_s\": %.9f,\n  \"teacher_text_s\": "
                   "%.9f\n}\n",
                   (long long)rows, st->augmentations,
                   tc_cache_dtype_name((tc_cache_dtype)st->cache_dtype), (unsigned long long)bytes,
                   wall, t->process_seconds, t->processes, t->teacher_image_s, t->teacher_text_s);
    char *text;
    TC_TRY(tc_sbuf_finish(&b, &text));
    char path[PATH_CAP];
    stage_path(c, i, "summary.json", path);
    tc_status s = tc_write_file_atomic(path, text, strlen(text));
    free(text);
    return s;
}

tc_status run_cache_stage(run_ctx *c, int i) {
    const tc_experiment *e = c->exp;
    const tc_exp_stage *st = &e->stages[i];
    char sdir[PATH_CAP], path[PATH_CAP], dir[PATH_CAP];
    stage_path(c, i, NULL, sdir);
    stage_path(c, i, "summary.json", path);
    tc_exp_cache_dir(e, i, dir, sizeof dir);
    double done_before = c->rank == 0 ? tc_path_is_file(path) : 0;
    if (c->world > 1) TC_TRY(c->comm->host_all_reduce_f64(c->comm, &done_before, 1, TC_REDUCE_SUM));
    if (done_before != 0.0) {
        logf_run(c, "stage %s: done earlier, skipped", st->name);
        c->res[i].done = 1;
        return TC_OK;
    }
    if (c->rank == 0) TC_TRY(tc_mkdir_p(sdir));
    /* what the cache is made from, before it is made */
    if (c->rank == 0) TC_TRY(write_stage_inputs(c, i));
    logf_run(c, "stage %s: teacher_cache, %d augmentation%s of every training sample, %s, into %s",
             st->name, st->augmentations, st->augmentations == 1 ? "" : "s",
             tc_cache_dtype_name((tc_cache_dtype)st->cache_dtype), dir);
    host_model h;
    TC_TRY(load_teacher(c, &h));
    tc_source_opts so;
    char label[PATH_CAP];
    teacher_label(c, label, sizeof label);
    cache_build_args a = {.name = st->name,
                          .dir = dir,
                          .teacher_label = label,
                          .teacher_cfg = &h.cfg,
                          .teacher_params = h.params,
                          .teacher_nparams = h.layout.total,
                          .data = train_source(e, &so),
                          .source = &so,
                          .max_image_pixels = e->train.max_image_pixels,
                          .augmentations = st->augmentations,
                          .dtype = st->cache_dtype,
                          .rows_per_shard = st->shard_samples,
                          .batch = st->batch,
                          .aug_seed = tc_cache_aug_seed((uint64_t)e->seed),
                          .be = c->be,
                          .comm = c->comm,
                          .rank = c->rank,
                          .world = c->world,
                          .tok = c->tok,
                          .log = c->log,
                          .faults = &c->faults};
    so.log = c->log;
    tc_cache_build_stats t;
    uint64_t bytes = 0;
    int64_t rows = 0;
    double t0 = wall_seconds();
    tc_status s = cache_build(&a, &t, &bytes, &rows);
    double wall = wall_seconds() - t0;
    host_model_free(&h);
    if (s == TC_OK && c->rank == 0) s = write_cache_summary(c, i, dir, rows, bytes, wall, &t);
    if (s == TC_OK && c->world > 1) s = c->comm->barrier(c->comm);
    if (s != TC_OK) return tc_fail_context(s, "stage %s", st->name);
    logf_run(c,
             "stage %s: %lld samples x %d augmentations, %.1f MiB, built in %.1f s here (%.1f "
             "process-seconds in all; teacher %.3f ms per image, %.3f ms per caption)",
             st->name, (long long)rows, st->augmentations, (double)bytes / 1048576.0, wall,
             t.process_seconds, 1e3 * t.teacher_image_s, 1e3 * t.teacher_text_s);
    c->res[i].done = 1;
    return TC_OK;
}

tc_status open_stage_cache(stage_run *r) {
    run_ctx *c = r->c;
    const tc_experiment *e = c->exp;
    const tc_exp_stage *st = r->st;
    char dir[PATH_CAP];
    tc_exp_cache_dir(e, r->i, dir, sizeof dir);
    /* what the run would compute live: its teacher, data and transform */
    const tc_cache_key *teacher;
    TC_TRY(run_teacher_key(c, &teacher));
    tc_cache_key data, transform;
    memset(&data, 0, sizeof data);
    memset(&transform, 0, sizeof transform);
    tc_source_opts so;
    const char *spec = train_source(e, &so);
    so.log = c->log;
    tc_source *src;
    TC_TRY(tc_source_open(spec, &so, &src));
    tc_cache_key_data(&data, src, spec);
    tc_source_destroy(src);
    int S = r->init.cfg.vision.image_size;
    cache_key_transform(&transform, S, r->init.cfg.text.context_length);
    int dtype =
        st->cache_stage >= 0 ? e->stages[st->cache_stage].cache_dtype : st->cache_expect_dtype;
    tc_cache_expect want = {teacher, &data, &transform, S, st->augmentations, dtype};
    TC_TRY(tc_teacher_cache_open(dir, &r->cache));
    tc_status s = tc_teacher_cache_check(r->cache, &want);
    /* every shard's checksum before the first step: each process its share */
    if (s == TC_OK) s = tc_teacher_cache_verify(r->cache, c->rank, c->world);
    if (s == TC_OK && c->world > 1) s = c->comm->barrier(c->comm);
    if (s != TC_OK) return s; /* run_stage names the stage */
    const tc_cache_key *k = tc_teacher_cache_key(r->cache);
    logf_run(c,
             "stage %s: teacher features from the cache %s (%lld samples x %d augmentations, %s, "
             "%.1f MiB, checksums verified); the teacher is not loaded",
             st->name, dir, (long long)k->samples, k->augmentations, tc_cache_dtype_name(k->dtype),
             (double)tc_teacher_cache_bytes(r->cache) / 1048576.0);
    return TC_OK;
}
