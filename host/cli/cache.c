/* tinyclip cache: build a teacher-feature cache (host/run/cache_build.h),
 * or check one (--verify DIR: the manifest and every shard's checksum) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_build.h"
#include "cli.h"
#include "teacher_cache.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tinyclip cache --teacher WEIGHTS [--model CONFIG] --data SPEC --out DIR [options]\n"
        "       tinyclip cache --verify DIR\n"
        "  --teacher WEIGHTS   the teacher's checkpoint (file or folder)\n"
        "  --model CONFIG      its model config (default: beside the weights)\n"
        "  --data SPEC         fmnist, a csv/tsv, an image folder or webdataset shards\n"
        "  --source KIND       fmnist, csv, folder or wds (default: guessed from SPEC)\n"
        "  --num-samples N     webdataset samples when there is no sizes.json\n"
        "  --out DIR           the cache folder (running the command again resumes)\n"
        "  --augmentations K   crops stored per sample (default 1)\n"
        "  --dtype D           fp32 (default), fp16 or bf16\n"
        "  --seed S            the seed of the experiments that will read it (default 0)\n"
        "  --batch N           teacher forward batch (default 256)\n"
        "  --shard-samples N   rows per shard of an indexable source (default 8192)\n"
        "  --threads N         CPU threads (default: all)\n"
        "  --backend NAME      cpu (default) or cuda\n"
        "under mpirun every process builds its share of the shards.\n");
}

static int verify(const char *dir) {
    tc_teacher_cache *c;
    if (tc_teacher_cache_open(dir, &c) != TC_OK) return tc_cli_report("cache --verify");
    tc_status s = tc_teacher_cache_verify(c, 0, 1);
    if (s == TC_OK) {
        const tc_cache_key *k = tc_teacher_cache_key(c);
        printf("%s: %lld samples x %d augmentations of teacher '%s' (embedding %d), %s, "
               "%.1f MiB; every shard's checksum matches\n",
               dir, (long long)k->samples, k->augmentations, k->teacher_name, k->embed_dim,
               tc_cache_dtype_name(k->dtype), (double)tc_teacher_cache_bytes(c) / 1048576.0);
    }
    tc_teacher_cache_close(c);
    return s == TC_OK ? 0 : tc_cli_report("cache --verify");
}

int tc_cmd_cache(int argc, char **argv) {
    tc_cache_command o;
    tc_cache_command_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "tinyclip cache: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--verify") == 0)
            return verify(v);
        else if (strcmp(a, "--teacher") == 0)
            o.teacher = v;
        else if (strcmp(a, "--model") == 0)
            o.teacher_model = v;
        else if (strcmp(a, "--data") == 0)
            o.data = v;
        else if (strcmp(a, "--source") == 0)
            o.source_kind = v;
        else if (strcmp(a, "--num-samples") == 0)
            o.num_samples = atoll(v);
        else if (strcmp(a, "--out") == 0)
            o.out = v;
        else if (strcmp(a, "--augmentations") == 0)
            o.augmentations = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            o.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--batch") == 0)
            o.batch = atoi(v);
        else if (strcmp(a, "--shard-samples") == 0)
            o.shard_samples = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            o.threads = atoi(v);
        else if (strcmp(a, "--backend") == 0)
            o.backend = v;
        else if (strcmp(a, "--dtype") == 0) {
            o.dtype = tc_cache_dtype_parse(v);
            if (o.dtype < 0) {
                fprintf(stderr, "tinyclip cache: --dtype must be fp32, fp16 or bf16\n");
                return 2;
            }
        } else {
            fprintf(stderr, "tinyclip cache: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o.teacher || !o.data || !o.out) {
        fprintf(stderr, "tinyclip cache: --teacher, --data and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (o.augmentations < 1 || o.augmentations > TC_CACHE_MAX_AUG || o.batch < 1 ||
        o.shard_samples < 1 || o.threads < 0) {
        fprintf(stderr,
                "tinyclip cache: --augmentations must be in 1..%d; --batch and "
                "--shard-samples positive\n",
                TC_CACHE_MAX_AUG);
        return 2;
    }
    return tc_cache_command_run(&o) == TC_OK ? 0 : tc_cli_report("cache");
}
