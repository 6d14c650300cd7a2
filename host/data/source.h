/* one interface over every data source the loader reads.
 *
 * a source is either
 *   - indexable (csv/tsv, image folder, Fashion-MNIST): num_samples is known
 *     and get(i) returns sample i; get is safe to call from several threads;
 *   - sharded (webdataset tars): num_shards files read front to back with
 *     open_shard/next/close_shard; a reader belongs to one thread.
 * a sample that cannot be used (no caption, no image, bad UTF-8, unreadable
 * file, oversized member) comes back with TC_OK and sample->bad set to the
 * reason, so the caller can count and log it; a failed call (TC_ERR_*) means
 * the shard or source itself is broken (missing, truncated, corrupt tar).
 *
 * source specs (tc_source_open):
 *   "fmnist" | "fmnist:train" | "fmnist:test"   Debian's dataset-fashion-mnist
 *   "path/list.csv" | ".tsv"                    open_clip CsvDataset columns
 *   "dir/"  (a directory)                       image folder, one folder per class
 *   "a/{000..009}.tar::b/{00..04}.tar"          webdataset shards, brace-expanded
 *   "pipe:aws s3 cp s3://b/{0..9}.tar -"        shards streamed from a command
 *   "https://host/{0..9}.tar"                   shards streamed through curl
 * opts->kind forces one of "wds", "csv", "folder", "fmnist" instead of guessing.
 * the parts of a webdataset spec joined by "::" are its sources (parts):
 * every shard knows its part, every sample carries it, and the loader counts
 * samples per part and, in resampled mode, draws shards weighted by the
 * parts' upsampling factors (open_clip's --train-data-upsampling-factors).
 * shard_stream.h says how pipe: and http(s) shards are read. */
#ifndef TC_DATASET_H
#define TC_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "image_decode.h"
#include "shard_stream.h"
#include "status.h"

typedef struct {
    char key[256];   /* webdataset key, csv "row N", folder relative path, fmnist index */
    char where[512]; /* shard path / csv file / folder root, for log lines */
    uint8_t *image;  /* encoded JPEG/PNG bytes (owned), or NULL when raw is set */
    size_t image_len;
    tc_image raw;  /* already-decoded pixels (Fashion-MNIST), raw.px owned */
    char *caption; /* UTF-8, NUL-terminated (owned) */
    size_t caption_len;
    char *json; /* optional .json member (owned) */
    size_t json_len;
    int32_t label; /* class index, -1 when unknown */
    int part;      /* the "::" part of the spec it came from (0 for one part) */
    char bad[200]; /* non-empty: the sample is unusable, and why */
} tc_sample;

void tc_sample_clear(tc_sample *s); /* frees the owned buffers and zeroes the sample */

typedef struct tc_source tc_source;
typedef struct tc_shard_reader tc_shard_reader;

struct tc_source {
    const char *kind;    /* "wds", "csv", "folder", "fmnist" */
    int64_t num_samples; /* -1 when unknown (webdataset without sizes.json) */
    int indexable;
    int num_shards;  /* webdataset */
    char **shards;   /* (num_shards) shard names as given (not for printing: see shard_stream.h) */
    int num_parts;   /* webdataset: the "::" parts of the spec (0 for other sources) */
    int *shard_part; /* (num_shards) the part of each shard */
    double *part_factor; /* (num_parts) upsampling factors, 1 when not given */
    int num_classes;     /* folder, fmnist; 0 otherwise */
    char **class_names;  /* (num_classes) */
    void *impl;
    tc_status (*get)(tc_source *s, int64_t index, tc_sample *out);
    tc_status (*open_shard)(tc_source *s, int shard, tc_shard_reader **out);
    tc_status (*next)(tc_shard_reader *r, tc_sample *out, int *eof);
    void (*close_shard)(tc_shard_reader *r);
    void (*destroy)(tc_source *s);
};

typedef struct {
    const char *kind;            /* NULL: guess from the spec */
    char csv_sep;                /* default '\t' as open_clip's --csv-separator */
    const char *csv_img_key;     /* default "filepath" */
    const char *csv_caption_key; /* default "title" */
    const char *classnames;   /* folder: class-name file (default DIR/classnames.txt if present) */
    const char *fmnist_dir;   /* default /usr/share/datasets/fashion-mnist */
    int64_t num_samples;      /* > 0 overrides sizes.json (open_clip --train-num-samples) */
    const double *upsampling; /* one factor > 0 per "::" part, or NULL (all 1) */
    int num_upsampling;
    tc_stream_opts stream; /* pipe: and http(s) shards: retries, backoff, timeout */
    FILE *log;             /* retry lines; NULL: stderr */
    int quiet;             /* 1: no retry lines */
} tc_source_opts;

void tc_source_opts_init(tc_source_opts *o);

tc_status tc_source_open(const char *spec, const tc_source_opts *opts, tc_source **out);
void tc_source_destroy(tc_source *s);

/* constructors behind tc_source_open */
tc_status tc_source_wds_open(const char *spec, const tc_source_opts *opts, tc_source **out);
tc_status tc_source_csv_open(const char *path, const tc_source_opts *opts, tc_source **out);
tc_status tc_source_folder_open(const char *dir, const tc_source_opts *opts, tc_source **out);
tc_status tc_source_fmnist_open(const char *split, const tc_source_opts *opts, tc_source **out);

/* webdataset tar reading over a memory buffer (fuzzing, tests); name is used in messages */
tc_status tc_wds_reader_open_memory(const void *data, size_t len, const char *name,
                                    tc_shard_reader **out);
tc_status tc_wds_reader_next(tc_shard_reader *r, tc_sample *out, int *eof);
void tc_wds_reader_close(tc_shard_reader *r);

/* braceexpand semantics: {a,b}, {0..9}, {000..099} (zero padding kept when
 * either bound has a leading zero), {1..9..2}, {a..e}, nesting. *out is an
 * array of n malloc'd strings; free with tc_strlist_free. */
tc_status tc_brace_expand(const char *pattern, char ***out, int *n);
void tc_strlist_free(char **list, int n);

/* true when the bytes are valid UTF-8 (no overlongs, no surrogates) */
int tc_utf8_valid(const char *s, size_t len);

#endif
