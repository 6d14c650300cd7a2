/* tinyclip bench: images/s of the training step and of inference for one or
 * more model configs on a backend, with random inputs. the training step is
 * the whole step (both towers forward and backward, loss, clipping, AdamW);
 * with --teacher it is a distillation step (teacher forward + affinity loss).
 * --run DIR measures every stage's final model of a run, then prints the
 * run's speedup, training compute and goals (host/run/run_report.h).
 * `tinyclip bench --data ...` benchmarks the data pipeline instead. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_select.h"
#include "checkpoint.h"
#include "fileio.h"
#include "cli.h"
#include "flops.h"
#include "model.h"
#include "model_config.h"
#include "params.h"
#include "rng.h"
#include "run_report.h"
#include "train.h"

#define MAX_MODELS 16

typedef struct {
    const char *models[MAX_MODELS];
    int n_models;
    const char *teacher;
    const char *run;
    const char *backend;
    int batch, threads, steps, warmup, accum;
    int train, infer, json;
} bench_args;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: tinyclip bench --model CONFIG [--model CONFIG ...] [options]\n"
            "       tinyclip bench --data ...   (data pipeline; see tinyclip bench --data --help)\n"
            "  --model CONFIG     model config JSON (repeat to compare models)\n"
            "  --run DIR          every model of a training run (its stages' final weights),\n"
            "                     then the run's speedup, training compute and goals\n"
            "  --teacher CONFIG   benchmark a distillation step with this teacher\n"
            "  --backend NAME     cpu (default), cuda, cuda-fp32\n"
            "  --batch N          batch size (default 32)\n"
            "  --accum-steps K    train in K micro-batches of batch/K (default 1)\n"
            "  --threads N        CPU threads (default: all)\n"
            "  --steps N          timed iterations (default 5)\n"
            "  --warmup N         untimed iterations first (default 1)\n"
            "  --mode M           train, infer or both (default both)\n"
            "  --json             one JSON line per measurement\n");
}

static int parse_args(int argc, char **argv, bench_args *a) {
    memset(a, 0, sizeof *a);
    a->backend = "cpu";
    a->batch = 32;
    a->accum = 1;
    a->steps = 5;
    a->warmup = 1;
    a->train = a->infer = 1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(o, "--json") == 0) {
            a->json = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tinyclip bench: %s needs a value\n", o);
            return 2;
        }
        i++;
        if (strcmp(o, "--model") == 0) {
            if (a->n_models == MAX_MODELS) {
                fprintf(stderr, "tinyclip bench: at most %d models\n", MAX_MODELS);
                return 2;
            }
            a->models[a->n_models++] = v;
        } else if (strcmp(o, "--teacher") == 0) a->teacher = v;
        else if (strcmp(o, "--run") == 0) a->run = v;
        else if (strcmp(o, "--backend") == 0) a->backend = v;
        else if (strcmp(o, "--batch") == 0) a->batch = atoi(v);
        else if (strcmp(o, "--accum-steps") == 0) a->accum = atoi(v);
        else if (strcmp(o, "--threads") == 0) a->threads = atoi(v);
        else if (strcmp(o, "--steps") == 0) a->steps = atoi(v);
        else if (strcmp(o, "--warmup") == 0) a->warmup = atoi(v);
        else if (strcmp(o, "--mode") == 0) {
            a->train = strcmp(v, "train") == 0 || strcmp(v, "both") == 0;
            a->infer = strcmp(v, "infer") == 0 || strcmp(v, "both") == 0;
            if (!a->train && !a->infer) {
                fprintf(stderr, "tinyclip bench: --mode must be train, infer or both\n");
                return 2;
            }
        } else {
            fprintf(stderr, "tinyclip bench: unknown option %s\n", o);
            usage(stderr);
            return 2;
        }
    }
    if (a->n_models == 0 && !a->run) {
        fprintf(stderr, "tinyclip bench: --model or --run is required\n");
        usage(stderr);
        return 2;
    }
    if (a->batch < 1 || a->steps < 1 || a->warmup < 0) {
        fprintf(stderr, "tinyclip bench: --batch and --steps must be positive\n");
        return 2;
    }
    if (a->accum < 1 || a->batch % a->accum != 0) {
        fprintf(stderr, "tinyclip bench: --accum-steps must divide --batch\n");
        return 2;
    }
    return -1;
}

/* random normalised-looking images and token rows ending in EOT */
static void random_inputs(const tc_model_config *c, int B, float *images, int32_t *ids,
                          uint64_t seed) {
    tc_prng r;
    tc_prng_seed(&r, seed, 1);
    int S = c->vision.image_size, T = c->text.context_length, V = c->text.vocab_size;
    for (size_t i = 0; i < (size_t)B * 3 * S * S; i++) images[i] = tc_prng_normal(&r);
    for (int b = 0; b < B; b++) {
        int eot = 1 + (int)tc_prng_below(&r, (uint64_t)(T - 1));
        ids[(size_t)b * T] = V > 49406 ? 49406 : 0;
        for (int j = 1; j < T; j++)
            ids[(size_t)b * T + j] = j < eot ? 1 + (int)tc_prng_below(&r, (uint64_t)(V > 49406 ? 49405 : V - 2))
                                   : j == eot ? V - 1 : 0;
    }
}

static void report(const bench_args *a, const tc_model_config *c, const char *mode,
                   double seconds, int steps, size_t bytes, tc_backend *be) {
    double ips = (double)a->batch * steps / seconds;
    double gi, gt;
    tc_model_flops(c, &gi, &gt);
    /* training: forward + backward ~ 3x forward, both towers */
    int train = strncmp(mode, "train", 5) == 0;
    double flops_per_sample = (train ? 3.0 : 1.0) * (gi + (train ? gt : 0.0)) * 1e9;
    double gflops_s = ips * flops_per_sample / 1e9;
    /* device_mb: the engine's buffers; peak_mb: what the process holds at
     * its peak (backend memory_peak: the whole device's use on CUDA) */
    double peak_mb = be->memory_peak(be) / 1048576.0;
    if (a->json)
        printf("{\"framework\":\"tinyclip\",\"model\":\"%s\",\"mode\":\"%s\",\"backend\":\"%s\","
               "\"batch\":%d,\"threads\":%d,\"images_per_s\":%.3f,\"step_ms\":%.3f,"
               "\"gflops_per_s\":%.2f,\"device_mb\":%.1f,\"peak_mb\":%.1f%s%s%s}\n",
               c->name, mode, be->name, a->batch, a->threads, ips, 1e3 * seconds / steps, gflops_s,
               bytes / 1048576.0, peak_mb, a->teacher ? ",\"teacher\":\"" : "",
               a->teacher ? a->teacher : "", a->teacher ? "\"" : "");
    else
        printf("%-34s %-6s %-5s batch %4d  %9.2f images/s  %9.2f ms/step  %8.2f GFLOP/s  %8.1f MB"
               " (peak %.1f MB)  %.3f GFLOPs/image\n",
               c->name, mode, be->name, a->batch, ips, 1e3 * seconds / steps, gflops_s,
               bytes / 1048576.0, peak_mb, gi);
    fflush(stdout);
}

static int bench_train(const bench_args *a, tc_backend *be, const tc_model_config *c,
                       const tc_model_config *teacher_cfg) {
    tc_model *m = NULL, *teacher = NULL;
    tc_trainer *tr = NULL;
    float *images = NULL;
    int32_t *ids = NULL;
    int rc = 1;
    int micro = a->batch / a->accum;
    tc_model_options opt = {.max_batch = micro, .train = 1};
    if (tc_model_create(&m, be, c, opt) != TC_OK || tc_model_init_random(m, 1) != TC_OK) goto done;
    if (teacher_cfg) {
        tc_model_options topt = {.max_batch = micro, .train = 0};
        if (tc_model_create(&teacher, be, teacher_cfg, topt) != TC_OK ||
            tc_model_init_random(teacher, 2) != TC_OK)
            goto done;
    }
    tc_optim_config o = tc_optim_default();
    o.warmup_steps = 10;
    o.grad_clip = 5.0f;
    tc_loss_config l = {teacher ? 0.0f : 1.0f, teacher ? 1.0f : 0.0f, teacher ? 50.0f : 0.0f, 50.0f};
    tc_parallel_config par = {a->accum, 0, 0};
    if (tc_trainer_create(&tr, m, teacher, &o, &l) != TC_OK ||
        tc_trainer_set_parallel(tr, &par) != TC_OK)
        goto done;
    int S = c->vision.image_size, T = c->text.context_length;
    images = malloc((size_t)a->batch * 3 * S * S * sizeof *images);
    ids = malloc((size_t)a->batch * T * sizeof *ids);
    if (!images || !ids) {
        tc_fail(TC_ERR_OOM, "bench: out of host memory");
        goto done;
    }
    random_inputs(c, a->batch, images, ids, 3);
    tc_step_result r;
    for (int i = 0; i < a->warmup; i++)
        if (tc_trainer_step(tr, images, ids, a->batch, &r) != TC_OK) goto done;
    if (be->synchronize(be) != TC_OK) goto done;
    double t0 = now_seconds();
    /* as training runs: no result read back inside the timed steps */
    for (int i = 0; i < a->steps; i++)
        if (tc_trainer_step(tr, images, ids, a->batch, NULL) != TC_OK) goto done;
    if (be->synchronize(be) != TC_OK) goto done;
    double seconds = now_seconds() - t0;
    if (tc_trainer_read_result(tr, &r) != TC_OK) goto done;
    if (r.skipped_total > 0) {
        tc_fail(TC_ERR_NONFINITE, "bench: %lld steps had a non-finite loss or gradient",
                r.skipped_total);
        goto done;
    }
    size_t bytes = tc_model_device_bytes(m) + (teacher ? tc_model_device_bytes(teacher) : 0) +
                   tc_trainer_device_bytes(tr);
    /* "distill/4": four micro-batches per step */
    const char *kind = teacher ? "distill" : "train";
    char mode[32];
    if (a->accum > 1) snprintf(mode, sizeof mode, "%s/%d", kind, a->accum);
    else snprintf(mode, sizeof mode, "%s", kind);
    report(a, c, mode, seconds, a->steps, bytes, be);
    rc = 0;
done:
    if (rc) tc_cli_report("bench");
    free(ids);
    free(images);
    tc_trainer_destroy(tr);
    tc_model_destroy(teacher);
    tc_model_destroy(m);
    return rc;
}

static int bench_infer(const bench_args *a, tc_backend *be, const tc_model_config *c) {
    tc_model *m = NULL;
    float *images = NULL;
    int32_t *ids = NULL;
    int rc = 1;
    tc_model_options opt = {.max_batch = a->batch, .train = 0};
    if (tc_model_create(&m, be, c, opt) != TC_OK || tc_model_init_random(m, 1) != TC_OK) goto done;
    int S = c->vision.image_size, T = c->text.context_length;
    images = malloc((size_t)a->batch * 3 * S * S * sizeof *images);
    ids = malloc((size_t)a->batch * T * sizeof *ids);
    if (!images || !ids) {
        tc_fail(TC_ERR_OOM, "bench: out of host memory");
        goto done;
    }
    random_inputs(c, a->batch, images, ids, 3);
    for (int i = 0; i < a->warmup; i++)
        if (tc_model_encode_image(m, images, a->batch) != TC_OK) goto done;
    if (be->synchronize(be) != TC_OK) goto done;
    double t0 = now_seconds();
    for (int i = 0; i < a->steps; i++)
        if (tc_model_encode_image(m, images, a->batch) != TC_OK) goto done;
    if (be->synchronize(be) != TC_OK) goto done;
    report(a, c, "infer", now_seconds() - t0, a->steps, tc_model_device_bytes(m), be);
    rc = 0;
done:
    if (rc) tc_cli_report("bench");
    free(ids);
    free(images);
    tc_model_destroy(m);
    return rc;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* the final model of every stage of a run folder, in name order */
static int bench_run(const bench_args *a, tc_backend *be) {
    DIR *d = opendir(a->run);
    if (!d) {
        fprintf(stderr, "tinyclip bench: cannot open run folder %s\n", a->run);
        return 1;
    }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s/final", a->run, e->d_name);
        if (e->d_name[0] != '.' && tc_path_is_dir(p)) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    int rc = n ? 0 : 1;
    if (!n) fprintf(stderr, "tinyclip bench: no stage with final weights in %s\n", a->run);
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s/final", a->run, names[i]);
        tc_model_config cfg;
        tc_param_layout layout;
        float *params = NULL;
        if (rc == 0 && tc_checkpoint_load(p, NULL, &cfg, &layout, &params) != TC_OK) {
            rc = tc_cli_report("bench");
        } else if (rc == 0) {
            tc_param_counts pc = tc_param_count(&layout);
            printf("%-34s params %zu (%zu without the token embedding)\n", names[i], pc.total,
                   pc.total - pc.token_embedding);
            snprintf(cfg.name, sizeof cfg.name, "%s", names[i]);
            if (a->train) rc = bench_train(a, be, &cfg, NULL);
            if (rc == 0 && a->infer) rc = bench_infer(a, be, &cfg);
            free(params);
            tc_param_layout_free(&layout);
        }
        free(names[i]);
    }
    /* the run's speedup, compute and goals, as its report.md gives them */
    if (rc == 0) {
        printf("\n");
        if (tc_run_report_print(stdout, a->run) != TC_OK)
            fprintf(stderr, "tinyclip bench: no speedup measures for %s: %s\n", a->run,
                    tc_last_error());
    }
    return rc;
}

int tc_cmd_bench(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--data") == 0) return tc_cmd_bench_data(argc, argv);
    bench_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    tc_backend *be;
    if (tc_backend_open(a.backend, a.threads, &be) != TC_OK) return tc_cli_report("bench");
    tc_model_config teacher_cfg;
    if (a.teacher && tc_model_config_load(&teacher_cfg, a.teacher) != TC_OK) {
        be->destroy(be);
        return tc_cli_report("bench");
    }
    if (!a.json)
        printf("%-34s %-6s %-5s\n", "model", "mode", "device");
    if (a.run) {
        rc = bench_run(&a, be);
        be->destroy(be);
        return rc;
    }
    rc = 0;
    for (int i = 0; i < a.n_models && rc == 0; i++) {
        tc_model_config c;
        if (tc_model_config_load(&c, a.models[i]) != TC_OK) {
            rc = tc_cli_report("bench");
            break;
        }
        if (a.train) rc = bench_train(&a, be, &c, a.teacher ? &teacher_cfg : NULL);
        if (rc == 0 && a.infer) rc = bench_infer(&a, be, &c);
    }
    be->destroy(be);
    return rc;
}
