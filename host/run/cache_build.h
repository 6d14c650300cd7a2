/* building a teacher-feature cache (host/data/teacher_cache.h): the
 * teacher_cache stage of an experiment and `tinyclip cache` both come here.
 *
 * data parallel like training: under mpirun every process builds the cache
 * shards s with s % processes == rank (for an indexable source rows
 * [s*R, (s+1)*R) of the samples, for a webdataset data shard s), then rank
 * 0 writes the manifest with every shard's checksum. each shard is written
 * atomically, so a build killed at any moment and started again keeps the
 * shards it finished (checked against the build's key) and builds the rest;
 * a folder with a cache of other settings is refused, never mixed.
 *
 * per chunk of samples: the sample's content hash, the decode (the train
 * loader's DCT scaling), K crops from the sample's fixed pool
 * (tc_aug_pool_crop), the caption's tokens, in parallel over the CPU
 * threads; then the teacher's image forward over the crops and its text
 * forward over the captions, in batches of `batch`. */
#ifndef TC_CACHE_BUILD_H
#define TC_CACHE_BUILD_H

#include <stdint.h>
#include <stdio.h>

#include "status.h"

/* `tinyclip cache`: a cache of a teacher checkpoint over a data source */
typedef struct {
    const char *teacher;       /* weights: a checkpoint file or folder */
    const char *teacher_model; /* its config (NULL: beside the weights) */
    const char *data;          /* a source spec (source.h); "fmnist" = the train split */
    const char *source_kind;   /* NULL: guessed from the spec */
    int64_t num_samples;       /* webdataset: samples when there is no sizes.json */
    const char *out;           /* the cache folder */
    int augmentations;         /* K (1) */
    int dtype;                 /* 0 fp32, 1 fp16, 2 bf16 */
    uint64_t seed;             /* the augmentation pool's seed is tc_cache_aug_seed(seed) */
    int batch;                 /* teacher forward batch (256) */
    int shard_samples;         /* rows per shard of an indexable source (8192) */
    int threads;               /* 0: all cores */
    const char *backend;       /* "cpu" (default) or "cuda" */
    FILE *log;                 /* NULL: stdout */
} tc_cache_command;

void tc_cache_command_init(tc_cache_command *o);
tc_status tc_cache_command_run(const tc_cache_command *o);

#endif
