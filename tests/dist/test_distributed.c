/* data-parallel training over MPI on the CPU backend against one process.
 *
 * the test binary is also the MPI program: launched by mpirun with
 * TC_DIST_DRIVER set, every rank builds the same tiny student and teacher,
 * generates the same global batches of N = W * n samples and trains on its
 * slice (rows rank*n...) through the comm, while rank 0 also trains a
 * one-process reference on the whole global batch. rank 0 compares the
 * per-step losses (10 steps, relative 1e-5) and grad norms (1e-4), the
 * reduced parameter gradients of the gathered loss against the one-process
 * gradients (1e-5), the mask-phase mask gradients averaged over ranks, and
 * the final weights, and prints "dist-check: ok".
 *
 * TC_DIST_MODE picks the data-parallel trainer's configuration: "buckets"
 * (gradients all-reduced in 16 KiB buckets started by the backward's
 * per-block events), "zero1-accum" (AdamW moments sharded over the ranks,
 * and each rank's 3 samples in 3 micro-batches of 1), "zero1" (sharded, no
 * micro-batches). every mode must equal the one process with the whole
 * global batch in one piece; the sharded modes also compare the gathered
 * moments with the reference's.
 *
 * fault cases (TC_DIST_FAULT): rank 1 hangs (sleeps) or dies (SIGKILL) at
 * step 3; the other ranks must stop well within 60 s with a message naming
 * the lost rank. and `tinyclip train` under mpirun -np 2, killed in the mask
 * phase and run again, ends with the uninterrupted run's weights; the same
 * with ZeRO-1 and 2 micro-batches per step, killed after the pruning.
 * the cmocka tests launch mpirun -np 2 and -np 4 (Open MPI: oversubscribed,
 * as root allowed; OMP_NUM_THREADS=1) and skip (77) when mpirun or MPI is
 * missing. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "comm_mpi.h"
#include "model.h"
#include "testutil.h"
#include "train.h"
#include "world.h"

enum { LOCAL_B = 3, STEPS = 10 };

typedef struct {
    tc_model *student, *teacher;
    tc_trainer *trainer;
} run;

static int make_run(run *r, tc_backend *be, const tc_model_config *sc, const tc_model_config *tc,
                    int batch, tc_comm *comm, const tc_parallel_config *par) {
    memset(r, 0, sizeof *r);
    int micro = par ? batch / par->accum_steps : batch;
    tc_model_options so = {.max_batch = micro, .train = 1};
    tc_model_options to = {.max_batch = micro, .train = 0};
    if (tc_model_create(&r->student, be, sc, so) != TC_OK ||
        tc_model_init_random(r->student, 11) != TC_OK ||
        tc_model_create(&r->teacher, be, tc, to) != TC_OK ||
        tc_model_init_random(r->teacher, 12) != TC_OK)
        return -1;
    tc_optim_config o = tc_optim_default();
    o.lr = 2e-3f;
    o.warmup_steps = 2;
    o.total_steps = STEPS;
    o.grad_clip = 0.5f; /* small enough to clip: the norm must be the reduced one */
    tc_loss_config l = {0.5f, 0.5f, 0.0f, 50.0f};
    if (tc_trainer_create(&r->trainer, r->student, r->teacher, &o, &l) != TC_OK) return -1;
    if (tc_trainer_set_comm(r->trainer, comm) != TC_OK) return -1;
    if (par && tc_trainer_set_parallel(r->trainer, par) != TC_OK) return -1;
    return 0;
}

/* the data-parallel configuration of TC_DIST_MODE */
static tc_parallel_config mode_config(const char *mode) {
    tc_parallel_config p = {1, 0, 16 << 10};
    if (mode && strncmp(mode, "zero1", 5) == 0) p.zero1 = 1;
    if (mode && strstr(mode, "accum")) p.accum_steps = LOCAL_B;
    return p;
}

static void free_run(run *r) {
    tc_trainer_destroy(r->trainer);
    tc_model_destroy(r->student);
    tc_model_destroy(r->teacher);
}

static double rel(double a, double b) {
    return fabs(a - b) / fmax(fabs(b), 1e-12);
}

/* structured masks (automatic inheritance's mask phase): the same soft masks
 * on every rank; the mask gradients of the gathered loss, averaged over the
 * ranks as the scheduler does, against one process's. returns 1 on mismatch */
static int mask_check(tc_backend *be, tc_comm *comm, const tc_model_config *sc,
                      const tc_model_config *tcfg, const float *images, const int32_t *ids, int n,
                      int N) {
    int rank = comm->rank, bad = 0;
    size_t img_per = (size_t)3 * sc->vision.image_size * sc->vision.image_size;
    int T = sc->text.context_length;
    const tc_tower_config *tw[2] = {&sc->vision, &sc->text};
    int total = 0, off[2];
    for (int k = 0; k < 2; k++) {
        off[k] = total;
        total += tw[k]->width + tw[k]->layers * (tw[k]->heads[0] + tw[k]->mlp_width[0]);
    }
    float *host = malloc((size_t)total * sizeof *host), *g[2] = {NULL, NULL};
    uint64_t rng = 99;
    for (int i = 0; i < total; i++) {
        uint64_t r = tc_test_rand(&rng);
        host[i] = (r % 8 == 0) ? 0.0f : 0.3f + 0.7f * (float)((r >> 8) % 1000) / 1000.0f;
    }
    for (int who = 0; who < 2; who++) { /* 0: data parallel, 1: the one-process reference */
        if (who == 1 && rank != 0) break;
        float *dev, *grad;
        be->alloc(be, (size_t)total * sizeof(float), (void **)&dev);
        be->alloc(be, (size_t)total * sizeof(float), (void **)&grad);
        be->upload(be, dev, host, (size_t)total * sizeof(float));
        tc_tower_masks tm[2];
        for (int k = 0; k < 2; k++) {
            int C = tw[k]->width, L = tw[k]->layers, H = tw[k]->heads[0];
            tm[k] = (tc_tower_masks){.hidden = dev + off[k],
                                     .heads = dev + off[k] + C,
                                     .inter = dev + off[k] + C + L * H,
                                     .dhidden = grad + off[k],
                                     .dheads = grad + off[k] + C,
                                     .dinter = grad + off[k] + C + L * H,
                                     .heads_stride = H,
                                     .inter_stride = tw[k]->mlp_width[0]};
        }
        int B = who == 0 ? n : N;
        run r;
        memset(&r, 0, sizeof r);
        tc_model_options so = {.max_batch = B, .train = 1, .masked = 1};
        tc_model_options to = {.max_batch = B, .train = 0};
        tc_optim_config o = tc_optim_default();
        tc_loss_config l = {0.5f, 0.5f, 0.0f, 50.0f};
        float loss;
        if (tc_model_create(&r.student, be, sc, so) != TC_OK ||
            tc_model_init_random(r.student, 11) != TC_OK ||
            tc_model_set_masks(r.student, &tm[0], &tm[1]) != TC_OK ||
            tc_model_create(&r.teacher, be, tcfg, to) != TC_OK ||
            tc_model_init_random(r.teacher, 12) != TC_OK ||
            tc_trainer_create(&r.trainer, r.student, r.teacher, &o, &l) != TC_OK ||
            tc_trainer_set_comm(r.trainer, who == 0 ? comm : NULL) != TC_OK ||
            tc_trainer_loss(r.trainer, images + (who == 0 ? (size_t)rank * n * img_per : 0),
                            ids + (who == 0 ? (size_t)rank * n * T : 0), B, 1, &loss) != TC_OK) {
            fprintf(stderr, "rank %d: masks: %s\n", rank, tc_last_error());
            comm->abort(comm, 3);
        }
        g[who] = malloc((size_t)total * sizeof(float));
        be->download(be, g[who], grad, (size_t)total * sizeof(float));
        if (who == 0) {
            double *d = malloc((size_t)total * sizeof *d);
            for (int i = 0; i < total; i++)
                d[i] = g[0][i];
            if (comm->host_all_reduce_f64(comm, d, (size_t)total, TC_REDUCE_AVG) != TC_OK)
                comm->abort(comm, 3);
            for (int i = 0; i < total; i++)
                g[0][i] = (float)d[i];
            free(d);
        }
        free_run(&r);
        be->free(be, grad);
        be->free(be, dev);
    }
    if (rank == 0) {
        double e = tc_rel_err(g[0], g[1], (size_t)total);
        printf("mask gradients (averaged over ranks) vs one process: rel err %.2e over %d\n", e,
               total);
        if (!(e <= 1e-5)) bad = 1;
    }
    free(g[0]);
    free(g[1]);
    free(host);
    return bad;
}

/* the MPI program; returns the process exit status */
static int driver(void) {
    tc_comm *comm;
    /* TINYCLIP_COMM_TIMEOUT=10 from launch(): a lost rank is noticed in seconds */
    if (tc_comm_mpi_create(&comm, tc_comm_timeout_from_env()) != TC_OK) {
        fprintf(stderr, "driver: %s\n", tc_last_error());
        return 2;
    }
    int W = comm->world_size, rank = comm->rank, n = LOCAL_B, N = W * n;
    const char *fault = getenv("TC_DIST_FAULT");
    tc_backend *be;
    if (tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}) != TC_OK) return 2;
    tc_model_config sc, tcfg;
    tc_test_tiny_clip(&sc, "dist-student", 64, 16);
    tc_test_tiny_clip(&tcfg, "dist-teacher", 128, 24);
    run dp, ref;
    const char *mode = getenv("TC_DIST_MODE");
    tc_parallel_config par = mode_config(mode);
    if (rank == 0)
        printf("mode %s: accum_steps %d, zero1 %d, buckets of %zu bytes\n", mode ? mode : "-",
               par.accum_steps, par.zero1, par.bucket_bytes);
    if (make_run(&dp, be, &sc, &tcfg, n, comm, &par) != 0) {
        fprintf(stderr, "rank %d: %s\n", rank, tc_last_error());
        return 2;
    }
    if (rank == 0 && make_run(&ref, be, &sc, &tcfg, N, NULL, NULL) != 0) {
        fprintf(stderr, "reference: %s\n", tc_last_error());
        return 2;
    }
    int S = sc.vision.image_size, T = sc.text.context_length;
    size_t img_per = (size_t)3 * S * S;
    float *images = malloc((size_t)N * img_per * sizeof *images);
    int32_t *ids = malloc((size_t)N * T * sizeof *ids);
    size_t P = tc_model_layout(dp.student)->total;
    float *g_dp = malloc(P * sizeof *g_dp), *g_ref = malloc(P * sizeof *g_ref);
    int bad = 0;
    double worst_loss = 0, worst_norm = 0;

    /* the gradients of the gathered loss (no update) against one process */
    tc_test_clip_batch(images, ids, N, &sc, -1);
    float l_dp, l_ref = 0;
    if (tc_trainer_loss(dp.trainer, images + (size_t)rank * n * img_per, ids + (size_t)rank * n * T,
                        n, 1, &l_dp) != TC_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, tc_last_error());
        comm->abort(comm, 3);
    }
    if (rank == 0) {
        if (tc_trainer_loss(ref.trainer, images, ids, N, 1, &l_ref) != TC_OK) return 2;
        be->download(be, g_dp, tc_model_grads(dp.student), P * sizeof(float));
        be->download(be, g_ref, tc_model_grads(ref.student), P * sizeof(float));
        double ge = tc_rel_err(g_dp, g_ref, P);
        printf(
            "gradients: loss %.8f vs %.8f (rel %.2e), parameter gradients rel err %.2e over %zu\n",
            l_dp, l_ref, rel(l_dp, l_ref), ge, P);
        if (!(ge <= 1e-5) || !(rel(l_dp, l_ref) <= 1e-5)) bad = 1;
    }
    bad |= mask_check(be, comm, &sc, &tcfg, images, ids, n, N);

    for (int step = 0; step < STEPS; step++) {
        if (fault && rank == 1 && step == 3) {
            if (strcmp(fault, "hang") == 0) {
                fprintf(stderr, "rank 1: hanging (fault injection)\n");
                for (;;)
                    sleep(100);
            }
            if (strcmp(fault, "die") == 0) {
                fprintf(stderr, "rank 1: dying (fault injection)\n");
                fflush(stderr);
                raise(SIGKILL);
            }
        }
        tc_test_clip_batch(images, ids, N, &sc, step);
        tc_step_result r_dp, r_ref;
        if (tc_trainer_step(dp.trainer, images + (size_t)rank * n * img_per,
                            ids + (size_t)rank * n * T, n, &r_dp) != TC_OK) {
            fprintf(stderr, "%s\n", tc_last_error());
            fflush(stderr);
            comm->abort(comm, 3);
        }
        if (rank != 0) continue;
        if (tc_trainer_step(ref.trainer, images, ids, N, &r_ref) != TC_OK) return 2;
        double el = rel(r_dp.loss, r_ref.loss), en = rel(r_dp.grad_norm, r_ref.grad_norm);
        printf("step %d: loss %.8f vs %.8f (rel %.2e), grad norm %.6f vs %.6f (rel %.2e)\n", step,
               r_dp.loss, r_ref.loss, el, r_dp.grad_norm, r_ref.grad_norm, en);
        worst_loss = fmax(worst_loss, el);
        worst_norm = fmax(worst_norm, en);
        if (!(el <= 1e-5) || !(en <= 1e-4) || r_dp.skipped != r_ref.skipped) bad = 1;
    }
    if (rank == 0) {
        int early, nb = tc_trainer_buckets(dp.trainer, &early);
        printf("gradient buckets: %d, %d started by the backward's events\n", nb, early);
        /* per-block buckets, every one started while the backward ran */
        if (!par.zero1 && (nb < 8 || early != nb)) bad = 1;
        tc_model_get_params(dp.student, g_dp);
        tc_model_get_params(ref.student, g_ref);
        double pe = tc_rel_err(g_dp, g_ref, P);
        printf("world %d, global batch %d: worst loss rel %.2e, worst grad-norm rel %.2e, final "
               "weights rel err %.2e\n",
               W, N, worst_loss, worst_norm, pe);
        if (!(pe <= 1e-5)) bad = 1;
        /* every rank holds the same weights: compare a checksum */
    }
    /* the moments, gathered from the shards (collective) */
    const tc_param_layout *L = tc_model_layout(dp.student);
    size_t PP = L->packed_total; /* the moments are packed */
    float *m_dp = malloc(2 * PP * sizeof *m_dp), *m_ref = malloc(2 * PP * sizeof *m_ref);
    if (tc_trainer_get_moments(dp.trainer, m_dp, m_dp + PP) != TC_OK) comm->abort(comm, 3);
    if (rank == 0) {
        if (tc_trainer_get_moments(ref.trainer, m_ref, m_ref + PP) != TC_OK) return 2;
        double e1 = tc_rel_err(m_dp, m_ref, PP), e2 = tc_rel_err(m_dp + PP, m_ref + PP, PP);
        int steps_dp = tc_trainer_adam_step(dp.trainer),
            steps_ref = tc_trainer_adam_step(ref.trainer);
        printf("moments vs one process: m rel err %.2e, v rel err %.2e; updates %d vs %d; "
               "optimizer state per rank %zu bytes vs %zu\n",
               e1, e2, steps_dp, steps_ref, tc_trainer_optimizer_bytes(dp.trainer),
               tc_trainer_optimizer_bytes(ref.trainer));
        if (!(e1 <= 1e-4) || !(e2 <= 1e-4) || steps_dp != steps_ref) bad = 1;
        /* a slice: its packed elements (P/W rounded up to 64), at most all
         * the padding, and the alignment head of its buffers */
        size_t slice = PP / W + 64 + (L->total - PP) + TC_PARAM_ALIGN;
        size_t expect =
            par.zero1 ? 2 * slice * sizeof(float) : tc_trainer_optimizer_bytes(ref.trainer);
        if (tc_trainer_optimizer_bytes(dp.trainer) > expect) bad = 1;
    }
    free(m_dp);
    free(m_ref);
    double sum = 0;
    tc_model_get_params(dp.student, g_dp);
    for (size_t i = 0; i < P; i++)
        sum += g_dp[i];
    double sums[2] = {sum, (double)bad};
    double mine = sum;
    if (comm->host_all_reduce_f64(comm, sums, 2, TC_REDUCE_AVG) != TC_OK) comm->abort(comm, 3);
    if (mine != sums[0] * 1.0 && fabs(mine - sums[0]) > 1e-9 * fmax(1.0, fabs(mine))) {
        printf("rank %d: weights differ from the other ranks' (%.17g vs mean %.17g)\n", rank, mine,
               sums[0]);
        bad = 1;
    }
    if (rank == 0) printf(bad ? "dist-check: FAILED\n" : "dist-check: ok\n");
    fflush(stdout);
    double flag = bad;
    comm->host_all_reduce_f64(comm, &flag, 1, TC_REDUCE_SUM);
    free(images);
    free(ids);
    free(g_dp);
    free(g_ref);
    if (rank == 0) free_run(&ref);
    free_run(&dp);
    be->destroy(be);
    comm->destroy(comm);
    return flag != 0 ? 1 : 0;
}

/* ---- the cmocka side: launches the driver ---- */

/* Open MPI's mpirun needs these to run more ranks than cores, and as root (CI) */
static const char *mpirun_flags = "";

static void need_mpirun(void) {
    if (!tc_comm_mpi_available()) tc_skip_test("this build has no MPI");
    if (system("command -v mpirun >/dev/null 2>&1") != 0) tc_skip_test("mpirun not found");
    if (system("mpirun --version 2>&1 | grep -q 'Open MPI'") == 0)
        mpirun_flags = "--oversubscribe --allow-run-as-root";
}

static int launch(int np, const char *fault, const char *mode, char **out, double *seconds) {
    char self[1024];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(k > 0);
    self[k] = 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "env OMP_NUM_THREADS=1 TC_DIST_DRIVER=1 TC_DIST_FAULT=%s TC_DIST_MODE=%s "
             "TINYCLIP_COMM_TIMEOUT=10 timeout 120 mpirun %s -np %d '%s' 2>&1",
             fault ? fault : "", mode ? mode : "", mpirun_flags, np, self);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *out = NULL;
    int rc = tc_run_capture(cmd, out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    assert_non_null(*out);
    return rc;
}

static void matches_one_process(int np, const char *mode) {
    need_mpirun();
    char *out;
    double sec;
    int rc = launch(np, NULL, mode, &out, &sec);
    printf("mpirun -np %d, mode %s (%.1f s):\n%s", np, mode, sec, out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "dist-check: ok"));
    free(out);
}

static void test_np2(void **state) {
    matches_one_process(2, "buckets");
}
static void test_np4(void **state) {
    matches_one_process(4, "buckets");
}
static void test_np2_zero1_accum(void **state) {
    matches_one_process(2, "zero1-accum");
}
static void test_np4_zero1(void **state) {
    matches_one_process(4, "zero1");
}

static void lost_rank(int np, const char *fault, const char *expect) {
    need_mpirun();
    char *out;
    double sec;
    int rc = launch(np, fault, "buckets", &out, &sec);
    printf("mpirun -np %d, rank 1 %s (%.1f s, exit %d):\n%s", np, fault, sec, rc, out);
    assert_int_not_equal(rc, 0);
    assert_true(rc != 124); /* not the outer timeout: the job stopped itself */
    assert_true(sec < 60.0);
    assert_null(strstr(out, "dist-check: ok"));
    if (!strstr(out, expect)) fail_msg("the output does not say '%s'", expect);
    free(out);
}

static void test_rank_hangs(void **state) {
    lost_rank(4, "hang", "lost rank(s) 1 (dead or hung");
}
static void test_rank_dies(void **state) {
    lost_rank(2, "die", "rank 1");
}

/* `tinyclip train` under mpirun: killed inside the mask phase and run again,
 * it resumes and ends with the weights of an uninterrupted 2-process run */
static const char *model_json =
    "{\"embed_dim\": 32, \"quick_gelu\": false,\n"
    " \"vision_cfg\": {\"image_size\": 28, \"patch_size\": 7, \"layers\": 2, \"width\": 64, "
    "\"head_width\": 64},\n"
    " \"text_cfg\": {\"context_length\": 16, \"vocab_size\": 49408, \"width\": 64, \"heads\": 1, "
    "\"layers\": 2}}\n";

static const char *experiment_yaml =
    "name: dist\n"
    "seed: 5\n"
    "threads: 1\n"
    "data:\n"
    "  train: {source: fmnist, batch: 8, workers: 1}\n"
    "teacher: {stage: teacher}\n"
    "stages:\n"
    "  - name: teacher\n"
    "    kind: train_scratch_clip\n"
    "    model: tiny.json\n"
    "    steps: 4\n"
    "    schedule: {warmup: 1}\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n"
    "  - name: auto\n"
    "    kind: distill\n"
    "    parent: teacher\n"
    "    inheritance: {kind: auto, target_sparsity: 0.5, sparsity_warmup: 2, prune_step: 4}\n"
    "    steps: 6\n"
    "    checkpoint_every: 2\n"
    "    log_every: 1\n";

/* fault: tinyclip_faults with TINYCLIP_FAULT=fault; NULL: the released tinyclip */
static int train_np(const char *dir, const char *run, const char *fault, char **out) {
    const char *bin = fault ? tc_faults_bin() : getenv("TINYCLIP_BIN");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && env OMP_NUM_THREADS=1 %s%s timeout 300 mpirun %s -np 2 '%s' train "
             "exp.yaml --out %s --plain 2>&1",
             dir, fault ? "TINYCLIP_FAULT=" : "", fault ? fault : "", mpirun_flags,
             bin ? bin : TC_BINARY_DIR "/tinyclip", run);
    *out = NULL;
    int rc = tc_run_capture(cmd, out);
    assert_non_null(*out);
    return rc;
}

/* extra: lines inserted into the experiment (options under test); kill:
 * the fault that cuts the second run */
static void kill_resume(const char *extra, const char *accum, const char *kill,
                        const char *expect) {
    need_mpirun();
    char *dir = tc_make_tempdir("dist");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny.json", dir);
    assert_int_equal(tc_write_file(path, model_json, strlen(model_json)), 0);
    snprintf(path, sizeof path, "%s/exp.yaml", dir);
    /* the experiment with the options spliced in: top-level lines after
     * the name, a stage key after each "kind:" line */
    char yaml[4096];
    size_t at = 0;
    for (const char *l = experiment_yaml; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = (size_t)(e - l) + 1;
        at += (size_t)snprintf(yaml + at, sizeof yaml - at, "%.*s", (int)n, l);
        if (strncmp(l, "name:", 5) == 0)
            at += (size_t)snprintf(yaml + at, sizeof yaml - at, "%s", extra);
        if (strncmp(l, "    kind:", 9) == 0)
            at += (size_t)snprintf(yaml + at, sizeof yaml - at, "%s", accum);
        l = e + 1;
    }
    assert_int_equal(tc_write_file(path, yaml, strlen(yaml)), 0);
    char *out;
    int rc = train_np(dir, "whole", NULL, &out);
    printf("uninterrupted:\n%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "2 processes, global batch 16 (8 per process)"));
    if (expect && !strstr(out, expect)) fail_msg("the log does not say '%s'", expect);
    free(out);
    rc = train_np(dir, "cut", kill, &out);
    printf("killed (%s, exit %d)\n", kill, rc);
    assert_int_not_equal(rc, 0);
    free(out);
    rc = train_np(dir, "cut", NULL, &out);
    printf("run again:\n%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "resumed from"));
    free(out);
    const char *stages[] = {"teacher", "auto"};
    for (int k = 0; k < 2; k++) {
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/whole/%s/final/open_clip_model.safetensors", dir, stages[k]);
        snprintf(pb, sizeof pb, "%s/cut/%s/final/open_clip_model.safetensors", dir, stages[k]);
        size_t na, nb;
        char *a = tc_read_file(pa, &na), *b = tc_read_file(pb, &nb);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(na, nb);
        if (memcmp(a, b, na) != 0) fail_msg("stage %s: resumed weights differ", stages[k]);
        printf("stage %s: resumed final weights bit-identical (%zu bytes)\n", stages[k], na);
        free(a);
        free(b);
    }
    tc_rmtree(dir);
    free(dir);
}

static void test_train_kill_resume(void **state) {
    kill_resume("", "", "kill_at_step:3@auto", NULL);
}

/* sharded moments and micro-batches: killed after the pruning (the
 * checkpoint holds the pruned student's moments, gathered from the shards) */
static void test_train_kill_resume_zero1_accum(void **state) {
    kill_resume("distributed: {zero1: true}\n", "    accum_steps: 2\n", "kill_at_step:5@auto",
                "(ZeRO-1: this rank's slice)");
}

int main(void) {
    if (getenv("TC_DIST_DRIVER")) return driver();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_np2),
        cmocka_unit_test(test_np4),
        cmocka_unit_test(test_np2_zero1_accum),
        cmocka_unit_test(test_np4_zero1),
        cmocka_unit_test(test_rank_hangs),
        cmocka_unit_test(test_rank_dies),
        cmocka_unit_test(test_train_kill_resume),
        cmocka_unit_test(test_train_kill_resume_zero1_accum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
