/* `tinyclip cache`: a teacher-feature cache of a checkpoint over a data
 * source, outside any experiment (cache_build.h). it makes the world as
 * `tinyclip train` does, so it runs data-parallel under mpirun. */
#include <stdio.h>
#include <string.h>

#include "cache_build.h"
#include "checkpoint.h"
#include "scheduler_internal.h"
#include "world.h"

void tc_cache_command_init(tc_cache_command *o) {
    memset(o, 0, sizeof *o);
    o->augmentations = 1;
    o->batch = 256;
    o->shard_samples = 8192;
    o->backend = "cpu";
}

/* everything but the world: the tokenizer, the teacher's weights, the build */
static tc_status build_in(const tc_cache_command *o, tc_world *w, FILE *log, tc_faults *faults) {
    host_model h;
    TC_TRY(host_model_load(o->teacher, o->teacher_model, &h));
    tc_tokenizer *tok = NULL;
    tc_status s = tc_tokenizer_create(&tok, NULL);
    tc_source_opts so;
    tc_source_opts_init(&so);
    so.kind = o->source_kind;
    so.num_samples = o->num_samples;
    so.log = log;
    int fmnist = strcmp(o->data, "fmnist") == 0;
    cache_build_args a = {.name = "cache",
                          .dir = o->out,
                          .teacher_label = o->teacher,
                          .teacher_cfg = &h.cfg,
                          .teacher_params = h.params,
                          .teacher_nparams = h.layout.total,
                          .data = fmnist ? "fmnist:train" : o->data,
                          .source = &so,
                          .augmentations = o->augmentations,
                          .dtype = o->dtype,
                          .rows_per_shard = o->shard_samples,
                          .batch = o->batch,
                          .aug_seed = tc_cache_aug_seed(o->seed),
                          .be = w->backend,
                          .comm = w->comm,
                          .rank = w->rank,
                          .world = w->world_size,
                          .tok = tok,
                          .log = log,
                          .faults = faults};
    tc_cache_build_stats t;
    uint64_t bytes = 0;
    int64_t rows = 0;
    double t0 = wall_seconds();
    if (s == TC_OK) s = cache_build(&a, &t, &bytes, &rows);
    if (s == TC_OK)
        fprintf(log,
                "cache: %s: %lld samples x %d augmentations, %s, %.1f MiB; %.1f s here (teacher "
                "%.3f ms per image, %.3f ms per caption)\n",
                o->out, (long long)rows, o->augmentations,
                tc_cache_dtype_name((tc_cache_dtype)o->dtype), (double)bytes / 1048576.0,
                wall_seconds() - t0, 1e3 * t.teacher_image_s, 1e3 * t.teacher_text_s);
    if (tok) tc_tokenizer_destroy(tok);
    host_model_free(&h);
    return s;
}

tc_status tc_cache_command_run(const tc_cache_command *o) {
    FILE *log = o->log ? o->log : stdout;
    tc_faults faults;
    tc_faults_from_env(&faults);
    tc_world w;
    tc_world_options wo = {.backend = o->backend,
                           .fp32 = 1,
                           .threads = o->threads,
                           .comm_timeout_s = tc_comm_timeout_from_env()};
    tc_status s = tc_world_create(&w, &wo);
    if (!w.comm) return s;
    FILE *quiet = NULL;
    if (w.rank != 0 && (quiet = fopen("/dev/null", "w"))) log = quiet; /* one voice */
    if (s == TC_OK) s = build_in(o, &w, log, &faults);
    if (s != TC_OK && w.world_size > 1) {
        fprintf(stderr, "tinyclip: rank %d of %d: %s\n", w.rank, w.world_size, tc_last_error());
        fflush(stderr);
        w.comm->abort(w.comm, 1);
    }
    tc_world_destroy(&w);
    if (quiet) fclose(quiet);
    return s;
}
