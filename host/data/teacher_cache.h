/* a teacher-feature cache: for every training sample and K augmentations of
 * it, the augmentation's parameters and the frozen teacher's L2-normalised
 * image features, and the teacher's normalised text features of its
 * caption. built once (host/run/cache_build.c), read by every distillation
 * stage that names it, which then runs no teacher (MobileCLIP's dataset
 * reinforcement, for TinyCLIP's affinity mimicking).
 *
 * a cache is a folder:
 *   manifest.json              written last: what the cache was built from
 *                              (the key below), the shard list with sizes
 *                              and XXH3-64 checksums, the build's timings
 *   shard-000000.safetensors   rows of samples, each written atomically
 *   ...                        (their bytes depend on the data and the key alone)
 *   build/shard-000000.txt     what building each shard took (seconds, teacher time)
 * shard tensors (n rows, K augmentations, E the teacher's embedding width):
 *   valid           U8  (n)        1: the sample was usable when the cache was built
 *   sample_hash     U64 (n)        XXH3-64 of the sample's key, caption and image bytes
 *   image_size      I32 (n, 2)     the decoded image's width and height
 *   crop            I32 (n, K, 4)  RandomResizedCrop's box of each augmentation:
 *                                  top, left, height, width in decoded pixels
 *   image_features  dtype (n, K, E)
 *   text_features   dtype (n, E)
 * with dtype F32, F16 or BF16 (the manifest's `dtype`) and __metadata__
 * {format, key (the key's hash), shard, rows}.
 *
 * rows: an indexable source (fmnist, csv, folder) of N samples puts sample
 * i in shard i / rows_per_shard, row i % rows_per_shard; a webdataset has
 * one cache shard per data shard, a sample's row is its place in its shard
 * (tc_sample.member). a sample's augmentation k is crop k of the pool
 * tc_aug_pool_crop(aug_seed, uid, k) (image_transform.h), so a live run with
 * the same pool (the loader's aug_pool) sees the same crops.
 *
 * reading checks everything before a row is used: the manifest against the
 * run (tc_teacher_cache_check: teacher, data, transform, image size, K,
 * dtype), every shard's size and checksum (tc_teacher_cache_verify), every
 * shard's header when it is mapped, and every sample's content hash when
 * it is read (another sample in the row's place is an error, not a skip). */
#ifndef TC_TEACHER_CACHE_H
#define TC_TEACHER_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "image_transform.h"
#include "source.h"
#include "status.h"

#define TC_CACHE_FORMAT "tinyclip-teacher-cache-1"
#define TC_CACHE_MANIFEST "manifest.json"
#define TC_CACHE_MAX_AUG 1024
/* shards kept mapped at once; the least recently used beyond this are unmapped */
#define TC_CACHE_MAX_OPEN 4096

typedef enum { TC_CACHE_F32 = 0, TC_CACHE_F16 = 1, TC_CACHE_BF16 = 2 } tc_cache_dtype;
const char *tc_cache_dtype_name(tc_cache_dtype d);
/* "fp32", "fp16", "bf16"; -1 when s is none of them */
int tc_cache_dtype_parse(const char *s);
size_t tc_cache_dtype_bytes(tc_cache_dtype d);

/* what a cache was built from. a run computes its own and compares. */
typedef struct {
    /* the teacher: XXH3-64 of its model config (JSON, name left out) and of
     * its fp32 weights in layout order, so the same weights in another file
     * layout give the same fingerprint */
    char teacher_name[128];
    uint64_t teacher_config, teacher_weights;
    int embed_dim;
    /* the data: kind, the shards' file names (webdataset) or the number of
     * samples (indexable); the samples' contents are checked row by row */
    char data_kind[16];
    char data_spec[512]; /* as given, for messages (shown redacted) */
    uint64_t data;
    int64_t samples; /* rows of the cache (webdataset: counted while building) */
    int data_shards; /* webdataset shards; 0 for an indexable source */
    /* the transform: open_clip's train transform at image_size, and the
     * decoder's DCT scaling (the decoded size the crops refer to) */
    int image_size, context_length, decode_min_side;
    double scale_min, scale_max, ratio_min, ratio_max;
    float mean[3], std[3];
    /* the augmentations and the storage */
    int augmentations;
    uint64_t aug_seed;
    tc_cache_dtype dtype;
    int rows_per_shard; /* indexable; 0 for webdataset */
} tc_cache_key;

/* the data part of a key from an opened source (spec: as given) */
void tc_cache_key_data(tc_cache_key *k, const tc_source *src, const char *spec);
/* the transform part from the loader's train transform of size S */
void tc_cache_key_transform(tc_cache_key *k, const tc_transform_cfg *t, int context_length,
                            int decode_min_side);
/* XXH3-64 of every field but samples and data_shards (known only when the
 * build ends): the identity a shard of a build carries */
uint64_t tc_cache_key_hash(const tc_cache_key *k);

/* the pool's seed of a run with seed `seed` (experiment seed, tinyclip cache --seed) */
uint64_t tc_cache_aug_seed(uint64_t seed);

/* a sample's identity: index i of an indexable source; shard and place in
 * the shard of a webdataset (< 2^40 samples per shard) */
uint64_t tc_cache_sample_uid(int indexable, int64_t index, int shard, int64_t member);
/* XXH3-64 of the sample's key, caption and image (encoded bytes, or the
 * raw pixels with their size) */
uint64_t tc_cache_sample_hash(const tc_sample *s);
/* the cache shard and row of a sample */
void tc_cache_locate(const tc_cache_key *k, int indexable, int64_t index, int shard, int64_t member,
                     int *cshard, int64_t *row);
/* cache shards of a source: indexable ceil(N / rows_per_shard), webdataset its shards */
int tc_cache_num_shards(const tc_cache_key *k);
void tc_cache_shard_name(int shard, char *buf, size_t cap);

/* ---- building ---- */

/* one shard's rows in memory (host, fp32 features; written in the key's dtype) */
typedef struct {
    int64_t n;
    int K, E;
    uint8_t *valid;      /* (n) */
    uint64_t *hash;      /* (n) */
    int32_t *image_size; /* (n, 2) */
    int32_t *crop;       /* (n, K, 4) */
    float *img;          /* (n, K, E) */
    float *txt;          /* (n, E) */
} tc_cache_rows;

tc_status tc_cache_rows_alloc(tc_cache_rows *r, int64_t n, int K, int E);
void tc_cache_rows_free(tc_cache_rows *r);

typedef struct {
    int64_t rows;
    uint64_t bytes, xxh3;
    /* what building it took (kept beside the shard, so a resumed build's
     * totals are whole): wall seconds, and seconds in the teacher's forward
     * over `images` augmented images and the rows' captions */
    double seconds, image_s, text_s;
    int64_t images;
} tc_cache_shard_info;

/* dir/shard-NNNNNN.safetensors, atomically; info's timings go into it, its
 * rows, size and checksum are filled */
tc_status tc_cache_shard_write(const char *dir, int shard, const tc_cache_key *k,
                               const tc_cache_rows *rows, tc_cache_shard_info *info);
/* a shard file left by an earlier, interrupted build: 1 when it is complete
 * and of the build with key k (info filled), 0 when there is none, -1 with
 * the reason in why when it belongs to another build or cannot be read */
int tc_cache_shard_done(const char *dir, int shard, const tc_cache_key *k,
                        tc_cache_shard_info *info, char *why, size_t cap);

/* what building cost, for the report (sums over the shards) */
typedef struct {
    double process_seconds; /* every process's wall time in its shards, added up */
    double teacher_image_s; /* the teacher's image forward, seconds per image */
    double teacher_text_s;  /* its text forward, seconds per caption */
    int processes;          /* of the build that finished it */
} tc_cache_build_stats;

/* the totals of a build from its shards */
tc_cache_build_stats tc_cache_build_totals(const tc_cache_shard_info *shards, int n, int processes);
/* dir/manifest.json, atomically (after every shard is written) */
tc_status tc_cache_manifest_write(const char *dir, const tc_cache_key *k,
                                  const tc_cache_shard_info *shards, int n, int processes);

/* ---- reading ---- */

typedef struct tc_teacher_cache tc_teacher_cache;

/* reads dir/manifest.json (a folder without one is an unfinished build) and
 * checks that every shard file is there with its size */
tc_status tc_teacher_cache_open(const char *dir, tc_teacher_cache **out);
void tc_teacher_cache_close(tc_teacher_cache *c);

const tc_cache_key *tc_teacher_cache_key(const tc_teacher_cache *c);
const char *tc_teacher_cache_dir(const tc_teacher_cache *c);
const tc_cache_build_stats *tc_teacher_cache_stats(const tc_teacher_cache *c);
/* bytes of every shard */
uint64_t tc_teacher_cache_bytes(const tc_teacher_cache *c);
/* what the cache holds, in one number: XXH3-64 of its key, its rows and
 * every shard's size and checksum (not the build's timings, so the same
 * cache built again has the same identity); 0 when out of memory */
uint64_t tc_teacher_cache_identity(const tc_teacher_cache *c);

/* the run's view of what the cache must be; a field left at 0 (or NULL,
 * -1 for dtype) is not compared */
typedef struct {
    const tc_cache_key *teacher;   /* teacher_config, teacher_weights, embed_dim */
    const tc_cache_key *data;      /* data_kind, data */
    const tc_cache_key *transform; /* every transform field */
    int image_size;                /* the student's */
    int augmentations;
    int dtype; /* tc_cache_dtype, or -1 */
} tc_cache_expect;

/* every difference between the cache and what the run expects, one line
 * each, in one error (TC_ERR_CONFIG) naming the cache folder */
tc_status tc_teacher_cache_check(const tc_teacher_cache *c, const tc_cache_expect *want);

/* the size and XXH3-64 checksum of shards rank, rank + world, ...
 * (every process of a run checks its share) */
tc_status tc_teacher_cache_verify(tc_teacher_cache *c, int rank, int world);

/* the entry of one sample (thread-safe): augmentation k's crop, its image
 * features and the text features (E floats each). the row must hold the
 * sample with content hash `hash` decoded to img_w x img_h: anything else
 * is an error (TC_ERR_DATA) naming the shard and row. *usable = 0 when the
 * sample was unusable at build time (no features; the caller skips it). */
tc_status tc_teacher_cache_get(tc_teacher_cache *c, int cshard, int64_t row, int k, uint64_t hash,
                               int img_w, int img_h, int *usable, tc_crop *crop,
                               float *img_features, float *txt_features);

#endif
