/* tinyclip bench: images/s of the training step and of inference for one or
 * more model configs on a backend, with random inputs. the training step is
 * the whole step (both towers forward and backward, loss, clipping, AdamW);
 * with --teacher it is a distillation step (teacher forward + affinity loss),
 * and with --cache also the same step on stored teacher features (a
 * teacher-feature cache: no teacher forward), the two measured in
 * alternation, with the one-time cost of storing a sample's features.
 * every line gives the FLOPs per sample of the one FLOP model
 * (engine/flops.h) and how many GEMMs ran on the CUDA fallback kernel. on
 * the CUDA bf16 backend every measurement runs with the FMA and the
 * tensor-core attention (--attention), each line naming its kernel and the
 * fast paths the environment switched on, so one run tells which is faster.
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
#include "cli.h"
#include "fileio.h"
#include "flops.h"
#include "model.h"
#include "model_config.h"
#include "params.h"
#include "rng.h"
#include "run_report.h"
#include "safetensors.h"
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
    int cache, rounds;     /* --cache: live teacher vs stored features, rounds of each */
    int cache_bf16;        /* the stored features in bf16 (converted back each step) */
    const char *attention; /* fma, mma, wgmma, tma, both, all; NULL: see attention_kernels */
    char tag_json[160], tag_text[96]; /* the kernels of the current backend */
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
            "  --cache            with --teacher: also the step on stored teacher features\n"
            "                     (a teacher cache), in alternation with the live step\n"
            "  --rounds N         --cache: rounds of live and cached steps (default 3)\n"
            "  --cache-dtype D    --cache: fp32 (default) or bf16 stored features\n"
            "  --backend NAME     cpu (default), cuda, cuda-fp32\n"
            "  --batch N          batch size (default 32)\n"
            "  --accum-steps K    train in K micro-batches of batch/K (default 1)\n"
            "  --threads N        CPU threads (default: all)\n"
            "  --steps N          timed iterations (default 5)\n"
            "  --warmup N         untimed iterations first (default 1)\n"
            "  --mode M           train, infer or both (default both)\n"
            "  --attention K      fma, mma, wgmma, tma, both (fma and mma) or all (cuda;\n"
            "                     default: TINYCLIP_ATTENTION if set, else both on cuda,\n"
            "                     fma elsewhere)\n"
            "  --json             one JSON line per measurement\n");
}

/* the attention kernels by name, in the order "all" measures them */
static const struct {
    const char *name;
    tc_attention_kernel kind;
} attention_kernel_list[] = {{"fma", TC_ATTENTION_FMA},
                             {"mma", TC_ATTENTION_MMA},
                             {"wgmma", TC_ATTENTION_WGMMA},
                             {"tma", TC_ATTENTION_TMA}};
enum { N_ATTENTION_KERNELS = sizeof attention_kernel_list / sizeof *attention_kernel_list };

static int attention_kernel_named(const char *name) {
    for (int i = 0; i < N_ATTENTION_KERNELS; i++)
        if (strcmp(name, attention_kernel_list[i].name) == 0) return i;
    return -1;
}
static int attention_kernel_index(tc_attention_kernel kind) {
    for (int i = 0; i < N_ATTENTION_KERNELS; i++)
        if (attention_kernel_list[i].kind == kind) return i;
    return 0;
}

static int parse_args(int argc, char **argv, bench_args *a) {
    memset(a, 0, sizeof *a);
    a->backend = "cpu";
    a->batch = 32;
    a->accum = 1;
    a->steps = 5;
    a->warmup = 1;
    a->train = a->infer = 1;
    a->rounds = 3;
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
        if (strcmp(o, "--cache") == 0) {
            a->cache = 1;
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
        } else if (strcmp(o, "--teacher") == 0)
            a->teacher = v;
        else if (strcmp(o, "--run") == 0)
            a->run = v;
        else if (strcmp(o, "--backend") == 0)
            a->backend = v;
        else if (strcmp(o, "--batch") == 0)
            a->batch = atoi(v);
        else if (strcmp(o, "--accum-steps") == 0)
            a->accum = atoi(v);
        else if (strcmp(o, "--threads") == 0)
            a->threads = atoi(v);
        else if (strcmp(o, "--steps") == 0)
            a->steps = atoi(v);
        else if (strcmp(o, "--warmup") == 0)
            a->warmup = atoi(v);
        else if (strcmp(o, "--attention") == 0) {
            a->attention = v;
            if (strcmp(v, "both") && strcmp(v, "all") && attention_kernel_named(v) < 0) {
                fprintf(stderr,
                        "tinyclip bench: --attention must be fma, mma, wgmma, tma, both or all\n");
                return 2;
            }
        } else if (strcmp(o, "--rounds") == 0)
            a->rounds = atoi(v);
        else if (strcmp(o, "--cache-dtype") == 0) {
            a->cache_bf16 = strcmp(v, "bf16") == 0;
            if (!a->cache_bf16 && strcmp(v, "fp32") != 0) {
                fprintf(stderr, "tinyclip bench: --cache-dtype must be fp32 or bf16\n");
                return 2;
            }
        } else if (strcmp(o, "--mode") == 0) {
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
    if (a->cache && (!a->teacher || a->rounds < 1)) {
        fprintf(stderr, "tinyclip bench: --cache needs --teacher (and --rounds >= 1)\n");
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
    for (size_t i = 0; i < (size_t)B * 3 * S * S; i++)
        images[i] = tc_prng_normal(&r);
    for (int b = 0; b < B; b++) {
        int eot = 1 + (int)tc_prng_below(&r, (uint64_t)(T - 1));
        ids[(size_t)b * T] = V > 49406 ? 49406 : 0;
        for (int j = 1; j < T; j++)
            ids[(size_t)b * T + j] =
                j < eot    ? 1 + (int)tc_prng_below(&r, (uint64_t)(V > 49406 ? 49405 : V - 2))
                : j == eot ? V - 1
                           : 0;
    }
}

/* one measurement; the FLOPs per sample come from the one FLOP model
 * (engine/flops.h): distill counts the teacher's forward of both towers
 * and the student's forward and backward */
static void report(const bench_args *a, const tc_model_config *c, const tc_model_config *teacher,
                   tc_step_kind kind, const char *mode, double seconds, int steps, size_t bytes,
                   tc_backend *be, long long fallbacks) {
    double ips = (double)a->batch * steps / seconds;
    double gflop = tc_step_gflops(kind, c, teacher);
    double gflops_s = ips * gflop;
    /* device_mb: the engine's buffers; peak_mb: what the process holds at
     * its peak (backend memory_peak: the whole device's use on CUDA) */
    double peak_mb = be->memory_peak(be) / 1048576.0;
    if (a->json)
        printf("{\"framework\":\"tinyclip\",\"model\":\"%s\",\"mode\":\"%s\",\"backend\":\"%s\","
               "\"batch\":%d,\"threads\":%d,\"images_per_s\":%.3f,\"step_ms\":%.3f,"
               "\"gflop_per_sample\":%.4f,\"gflops_per_s\":%.2f,\"gemm_fallbacks\":%lld,"
               "\"device_mb\":%.1f,\"peak_mb\":%.1f%s%s%s%s}\n",
               c->name, mode, be->name, a->batch, a->threads, ips, 1e3 * seconds / steps, gflop,
               gflops_s, fallbacks, bytes / 1048576.0, peak_mb, a->teacher ? ",\"teacher\":\"" : "",
               a->teacher ? a->teacher : "", a->teacher ? "\"" : "", a->tag_json);
    else
        printf("%-34s %-6s %-5s batch %4d  %9.2f images/s  %9.2f ms/step  %8.2f GFLOP/s  %8.1f MB"
               " (peak %.1f MB)  %.3f GFLOP/sample  gemm fallbacks %lld%s\n",
               c->name, mode, be->name, a->batch, ips, 1e3 * seconds / steps, gflops_s,
               bytes / 1048576.0, peak_mb, gflop, fallbacks, a->tag_text);
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
    tc_loss_config l = {teacher ? 0.0f : 1.0f, teacher ? 1.0f : 0.0f, teacher ? 50.0f : 0.0f,
                        50.0f};
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
    const long long fallbacks = be->gemm_fallbacks;
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
    if (a->accum > 1)
        snprintf(mode, sizeof mode, "%s/%d", kind, a->accum);
    else
        snprintf(mode, sizeof mode, "%s", kind);
    report(a, c, teacher_cfg, teacher ? TC_STEP_DISTILL : TC_STEP_TRAIN, mode, seconds, a->steps,
           bytes, be, be->gemm_fallbacks - fallbacks);
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

/* ---- --cache: the distillation step with the teacher live and on stored features ---- */

typedef struct {
    tc_trainer *tr;
    int cached;
    const float *img32, *txt32;    /* stored fp32 features (B, E) */
    const uint16_t *img16, *txt16; /* or bf16 */
    float *img, *txt;              /* what a step is handed, fp32 (B, E) */
    size_t n;                      /* B * E */
} step_mode;

/* `steps` steps of one mode, no result read inside; the stored features are
 * copied (or converted from bf16) for every step, as the loader does */
static tc_status time_mode(step_mode *m, tc_backend *be, const float *images, const int32_t *ids,
                           int B, int steps, double *seconds) {
    TC_TRY(be->synchronize(be));
    double t0 = now_seconds();
    for (int i = 0; i < steps; i++) {
        if (m->cached) {
            for (size_t k = 0; k < m->n; k++) {
                m->img[k] = m->img16 ? tc_bfloat_to_float(m->img16[k]) : m->img32[k];
                m->txt[k] = m->txt16 ? tc_bfloat_to_float(m->txt16[k]) : m->txt32[k];
            }
            tc_trainer_set_teacher_features(m->tr, m->img, m->txt);
        }
        TC_TRY(tc_trainer_step(m->tr, images, ids, B, NULL));
    }
    TC_TRY(be->synchronize(be));
    *seconds = now_seconds() - t0;
    return TC_OK;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* the teacher's features of the batch in micro-batches (what building a
 * cache computes), into img/txt (B, E); the seconds it took */
static tc_status teacher_features(tc_model *t, tc_backend *be, const float *images,
                                  const int32_t *ids, int B, int micro, float *img, float *txt,
                                  double *seconds) {
    const tc_model_config *c = tc_model_cfg(t);
    size_t px = (size_t)3 * c->vision.image_size * c->vision.image_size, E = (size_t)c->embed_dim;
    double t0 = now_seconds();
    for (int at = 0; at < B; at += micro) {
        int n = B - at < micro ? B - at : micro;
        TC_TRY(tc_model_encode_image(t, images + (size_t)at * px, n));
        TC_TRY(be->download(be, img + (size_t)at * E, tc_model_image_features(t), n * E * 4));
        TC_TRY(tc_model_encode_text(t, ids + (size_t)at * c->text.context_length, n));
        TC_TRY(be->download(be, txt + (size_t)at * E, tc_model_text_features(t), n * E * 4));
    }
    *seconds = now_seconds() - t0;
    return TC_OK;
}

static int bench_cache(const bench_args *a, tc_backend *be, const tc_model_config *c,
                       const tc_model_config *tcfg) {
    tc_model *m = NULL, *teacher = NULL;
    step_mode md[2];
    memset(md, 0, sizeof md);
    float *images = NULL, *store = NULL;
    int32_t *ids = NULL;
    uint16_t *store16 = NULL;
    double *sec = NULL;
    int rc = 1, micro = a->batch / a->accum, B = a->batch, E = tcfg->embed_dim;
    size_t n = (size_t)B * E;
    tc_model_options so = {.max_batch = micro, .train = 1}, to = {.max_batch = micro, .train = 0};
    tc_optim_config o = tc_optim_default();
    o.warmup_steps = 10;
    o.grad_clip = 5.0f;
    tc_loss_config l = {0.0f, 1.0f, 50.0f, 50.0f};
    tc_parallel_config par = {a->accum, 0, 0};
    if (tc_model_create(&m, be, c, so) != TC_OK || tc_model_init_random(m, 1) != TC_OK ||
        tc_model_create(&teacher, be, tcfg, to) != TC_OK ||
        tc_model_init_random(teacher, 2) != TC_OK ||
        tc_trainer_create(&md[0].tr, m, teacher, &o, &l) != TC_OK ||
        tc_trainer_create_cached(&md[1].tr, m, E, &o, &l) != TC_OK ||
        tc_trainer_set_parallel(md[0].tr, &par) != TC_OK ||
        tc_trainer_set_parallel(md[1].tr, &par) != TC_OK)
        goto done;
    int S = c->vision.image_size, T = c->text.context_length;
    images = malloc((size_t)B * 3 * S * S * sizeof *images);
    ids = malloc((size_t)B * T * sizeof *ids);
    store = malloc(4 * n * sizeof *store); /* stored img, txt; handed img, txt */
    store16 = malloc(2 * n * sizeof *store16);
    sec = calloc(2 * (size_t)a->rounds, sizeof *sec);
    if (!images || !ids || !store || !store16 || !sec) {
        tc_fail(TC_ERR_OOM, "bench: out of host memory");
        goto done;
    }
    random_inputs(c, B, images, ids, 3);
    /* the one-time cost: the teacher's forward over each sample, as building does */
    double build = 0;
    if (teacher_features(teacher, be, images, ids, B, micro, store, store + n, &build) != TC_OK ||
        teacher_features(teacher, be, images, ids, B, micro, store, store + n, &build) != TC_OK)
        goto done;
    for (size_t k = 0; k < 2 * n; k++)
        store16[k] = tc_float_to_bfloat(store[k]);
    md[1].cached = 1;
    md[1].n = n;
    md[1].img32 = store;
    md[1].txt32 = store + n;
    if (a->cache_bf16) {
        md[1].img16 = store16;
        md[1].txt16 = store16 + n;
    }
    md[1].img = store + 2 * n;
    md[1].txt = store + 3 * n;
    double w;
    for (int k = 0; k < 2; k++)
        if (a->warmup > 0 && time_mode(&md[k], be, images, ids, B, a->warmup, &w) != TC_OK)
            goto done;
    /* in alternation, so that a machine's drift falls on both */
    const long long fallbacks = be->gemm_fallbacks;
    for (int r = 0; r < a->rounds; r++)
        for (int k = 0; k < 2; k++)
            if (time_mode(&md[k], be, images, ids, B, a->steps, &sec[k * a->rounds + r]) != TC_OK)
                goto done;
    tc_step_result res;
    for (int k = 0; k < 2; k++) {
        if (tc_trainer_read_result(md[k].tr, &res) != TC_OK) goto done;
        if (res.skipped_total > 0) {
            tc_fail(TC_ERR_NONFINITE, "bench: a step had a non-finite loss or gradient");
            goto done;
        }
    }
    if (!a->json)
        for (int r = 0; r < a->rounds; r++)
            printf("cache round %d: live %.3f images/s, cached %.3f images/s (%.2fx)\n", r + 1,
                   a->steps * B / sec[r], a->steps * B / sec[a->rounds + r],
                   sec[r] / sec[a->rounds + r]);
    double med[2];
    for (int k = 0; k < 2; k++) {
        qsort(sec + k * a->rounds, (size_t)a->rounds, sizeof *sec, cmp_double);
        med[k] = sec[k * a->rounds + a->rounds / 2];
    }
    size_t bytes[2] = {tc_model_device_bytes(m) + tc_model_device_bytes(teacher) +
                           tc_trainer_device_bytes(md[0].tr),
                       tc_model_device_bytes(m) + tc_trainer_device_bytes(md[1].tr)};
    /* the fallback count covers both modes' rounds; a cached step runs no
     * teacher, so its FLOPs are the student's training step (the affinity
     * loss on the stored features is negligible beside it) */
    const long long fb = be->gemm_fallbacks - fallbacks;
    report(a, c, tcfg, TC_STEP_DISTILL, "distill", med[0], a->steps, bytes[0], be, fb);
    report(a, c, NULL, TC_STEP_TRAIN, a->cache_bf16 ? "distill-cache-bf16" : "distill-cache",
           med[1], a->steps, bytes[1], be, fb);
    double build_sps = B / build;
    if (a->json)
        printf("{\"framework\":\"tinyclip\",\"model\":\"%s\",\"teacher\":\"%s\",\"mode\":"
               "\"cache\",\"rounds\":%d,\"live_images_per_s\":%.3f,\"cached_images_per_s\":%.3f,"
               "\"speedup\":%.4f,\"build_samples_per_s\":%.3f}\n",
               c->name, tcfg->name, a->rounds, a->steps * B / med[0], a->steps * B / med[1],
               med[0] / med[1], build_sps);
    else
        printf("cache: median of %d rounds in alternation: %.2fx the live step's images/s; "
               "building it costs the teacher's forward once per sample and augmentation "
               "(%.2f samples/s here)\n",
               a->rounds, med[0] / med[1], build_sps);
    rc = 0;
done:
    if (rc) tc_cli_report("bench --cache");
    free(sec);
    free(store16);
    free(store);
    free(ids);
    free(images);
    tc_trainer_destroy(md[0].tr);
    tc_trainer_destroy(md[1].tr);
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
    const long long fallbacks = be->gemm_fallbacks;
    for (int i = 0; i < a->warmup; i++)
        if (tc_model_encode_image(m, images, a->batch) != TC_OK) goto done;
    if (be->synchronize(be) != TC_OK) goto done;
    double t0 = now_seconds();
    for (int i = 0; i < a->steps; i++)
        if (tc_model_encode_image(m, images, a->batch) != TC_OK) goto done;
    if (be->synchronize(be) != TC_OK) goto done;
    report(a, c, NULL, TC_STEP_INFER, "infer", now_seconds() - t0, a->steps,
           tc_model_device_bytes(m), be, be->gemm_fallbacks - fallbacks);
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

/* the attention kernels to measure: --attention, else the environment's
 * choice when TINYCLIP_ATTENTION is set, else both (fma, mma) on the CUDA
 * bf16 backend (the only one with a tensor-core attention); all: fma, mma,
 * wgmma and tma (on a device without compute capability 9 the last two run
 * as mma) */
static int attention_kernels(const bench_args *a, tc_attention_kernel k[N_ATTENTION_KERNELS]) {
    const char *env = getenv("TINYCLIP_ATTENTION");
    const char *want = a->attention ? a->attention : env && env[0] ? env : NULL;
    if (strcmp(a->backend, "cpu") == 0) want = "fma"; /* one attention: nothing to choose */
    if (!want) want = strcmp(a->backend, "cuda") == 0 ? "both" : "fma";
    const int n = strcmp(want, "all") == 0 ? 4 : strcmp(want, "both") == 0 ? 2 : 0;
    for (int i = 0; i < n; i++)
        k[i] = attention_kernel_list[i].kind;
    if (n) return n;
    const int named = attention_kernel_named(want);
    k[0] = named < 0 ? TC_ATTENTION_FMA : attention_kernel_list[named].kind;
    return 1;
}

/* every model (or the run's) on one backend */
static int bench_models(bench_args *a, tc_backend *be, const tc_model_config *teacher_cfg) {
    if (a->run) return bench_run(a, be);
    int rc = 0;
    for (int i = 0; i < a->n_models && rc == 0; i++) {
        tc_model_config c;
        if (tc_model_config_load(&c, a->models[i]) != TC_OK) return tc_cli_report("bench");
        if (a->train && a->cache)
            rc = bench_cache(a, be, &c, teacher_cfg);
        else if (a->train)
            rc = bench_train(a, be, &c, teacher_cfg);
        if (rc == 0 && a->infer) rc = bench_infer(a, be, &c);
    }
    return rc;
}

int tc_cmd_bench(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--data") == 0) return tc_cmd_bench_data(argc, argv);
    bench_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    tc_backend_options opt;
    if (tc_backend_options_from_env(&opt) != TC_OK) return tc_cli_report("bench");
    opt.threads = a.threads;
    tc_model_config teacher_cfg;
    if (a.teacher && tc_model_config_load(&teacher_cfg, a.teacher) != TC_OK)
        return tc_cli_report("bench");
    if (!a.json) printf("%-34s %-6s %-5s\n", "model", "mode", "device");
    tc_attention_kernel kernels[N_ATTENTION_KERNELS];
    const int nk = attention_kernels(&a, kernels);
    rc = 0;
    for (int k = 0; k < nk && rc == 0; k++) {
        opt.attention = kernels[k];
        const char *att = attention_kernel_list[attention_kernel_index(kernels[k])].name;
        snprintf(a.tag_json, sizeof a.tag_json,
                 ",\"attention\":\"%s\",\"gemm_plans\":%d,\"gemm_epilogue\":%d,\"cuda_graph\":%d",
                 att, opt.gemm_plans, opt.gemm_epilogue, opt.cuda_graph);
        snprintf(a.tag_text, sizeof a.tag_text, "  [attention %s%s%s%s]", att,
                 opt.gemm_plans ? ", plans" : "", opt.gemm_epilogue ? ", epilogues" : "",
                 opt.cuda_graph ? ", graph" : "");
        if (strcmp(a.backend, "cpu") == 0) a.tag_json[0] = a.tag_text[0] = 0; /* no kernel choice */
        tc_backend *be;
        if (tc_backend_open_with(a.backend, &opt, &be) != TC_OK) return tc_cli_report("bench");
        rc = bench_models(&a, be, a.teacher ? &teacher_cfg : NULL);
        be->destroy(be);
    }
    return rc;
}
