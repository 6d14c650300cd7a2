/* the training/eval data loader: worker threads turn a source's samples into
 * ready batches (images (B,3,S,S) fp32 or bf16, token ids (B,context) int32,
 * labels (B) int32 with -1 where unknown) held in a bounded queue.
 *
 * three orders (B = batch_size per rank, W = world_size, G = B*W):
 *
 *   training (default): one global stream per epoch, the same for every
 *     number of processes, cut into global batches of G positions; rank r
 *     takes positions [r*B, (r+1)*B) of every global batch, as llm.c's loader
 *     does. so W processes of batch B see exactly the samples one process of
 *     batch G sees, in the same global batches, and a run can resume on
 *     another number of processes (the cursor is a global position).
 *       - indexable sources (csv, folder, Fashion-MNIST): a permutation of
 *         all N samples seeded by (seed, epoch); floor(N / G) batches
 *         (drop_last); rank r reads only its positions.
 *       - webdataset: the shard list shuffled by (seed, epoch), every shard
 *         read front to back by every rank, through webdataset's shuffle
 *         buffer (bufsize, initial) seeded by (seed, epoch); a rank decodes
 *         only its positions but reads all bytes (W times the reading of the
 *         one-process run: for many processes use resampled mode). with a
 *         known size (sizes.json or num_samples) ceil(N / G) batches per
 *         epoch, the shards read again when they run out (open_clip's
 *         with_epoch); otherwise one pass, the last partial batch dropped.
 *       a position whose sample cannot be used (bad data, a failed decode)
 *       takes the first usable sample after it in the same global batch,
 *       else the last usable one before it; a duplicate, so the batch keeps
 *       its size and every other position its sample. this depends on the
 *       data alone, not on W: exact for indexable sources; for webdataset
 *       the rank keeps the SUBST_WINDOW samples just before and after its
 *       slice to search, so the result is W-independent unless more than
 *       that many unusable samples come in a row. when nothing usable is in
 *       reach, the rank's last usable sample is repeated (logged; an error
 *       when the rank has had none yet).
 *       augmentation is seeded by (seed, epoch, global position).
 *
 *   resampled (resampled = 1, webdataset only; open_clip's
 *     --dataset-resampled): every rank draws shards with replacement from
 *     its own generator seeded by (seed, epoch, rank): the stream is
 *     endless, independent per rank (so it depends on W by definition), and
 *     an epoch is ceil(N / G) batches (N = num_samples, required). the
 *     shards of several "::" parts are drawn with weights = the part's
 *     upsampling factor (open_clip: each shard weighs its part's factor, so
 *     a part's share of samples is factor x shards x samples per shard).
 *     samples pass through a block shuffle: shuffle_buffer samples are read,
 *     permuted by a generator seeded by the block's index, and handed out.
 *     bad samples are skipped (the batch fills from the next ones).
 *     resume is exact: the cursor holds the block's first shard draw and
 *     sample, and the block is read again (at most shuffle_buffer samples
 *     plus the skipped head of one shard).
 *
 *   eval (train = 0): every sample once in source order; rank r takes
 *     indices r, r+W, ... of an indexable source, or shards r, r+W, ... of a
 *     webdataset; bad samples skipped; the last batch may be partial.
 *
 * workers decode stream positions in parallel, but batches are assembled in
 * stream order, so the batches are the same whatever the number of threads
 * or their timing.
 *
 * resume. tc_batch.cursor is the loader state after that batch. a loader
 * created with it yields exactly the batches an uninterrupted one would have
 * yielded next (training: the stream is read again up to the position,
 * without decoding, to rebuild the shuffle buffer). on another number of
 * processes a training cursor continues the same global batches; a
 * resampled one continues with new streams (tc_loader_cursor_rebase).
 *
 * bad data. every skipped or replaced sample is logged as "shard X: sample
 * KEY: reason" (the first 50, then every 1000th); an unreadable shard (after
 * its command's retries, shard_stream.h) is logged by name and skipped;
 * when bad / seen exceeds max_bad_fraction after min_samples samples, or
 * bad shards / shards opened does after TC_LOADER_MIN_SHARDS shards, the
 * loader stops and tc_loader_next returns TC_ERR_DATA. seen and bad count
 * this rank's positions. */
#ifndef TC_LOADER_H
#define TC_LOADER_H

#include <stdint.h>
#include <stdio.h>

#include "host_alloc.h"
#include "image_transform.h"
#include "source.h"
#include "status.h"
#include "tokenizer.h"

/* samples kept on each side of a rank's slice to replace unusable ones
 * (training order, webdataset) */
#define TC_LOADER_SUBST_WINDOW 32
/* shards opened before their failure rate is held to max_bad_fraction */
#define TC_LOADER_MIN_SHARDS 20

typedef struct {
    int64_t epoch;   /* epoch the next batch belongs to */
    int64_t batch;   /* batches of that epoch already delivered */
    int64_t pos;     /* next stream position in that epoch (global in training order) */
    int64_t bad;     /* bad samples so far (for the error-rate bound) */
    int64_t seen;    /* samples examined so far */
    int64_t draw;    /* resampled: shard draw of the current shuffle block's first sample */
    int64_t member;  /* resampled: samples of that draw before the block */
    int64_t restart; /* resampled: batch at which this epoch's streams were started */
} tc_loader_cursor;

#define TC_LOADER_CURSOR_INTS 8
/* the first 5 values are the cursor of earlier versions: unpacking 5 gives
 * draw = member = restart = 0 */
void tc_loader_cursor_pack(const tc_loader_cursor *c, int64_t v[TC_LOADER_CURSOR_INTS]);
void tc_loader_cursor_unpack(const int64_t *v, int n, tc_loader_cursor *c);
/* a cursor saved by a run of another number of processes: the training
 * order continues unchanged; resampled streams restart at the cursor's batch
 * with new draws (the old ranks' streams cannot be split or joined) */
void tc_loader_cursor_rebase(tc_loader_cursor *c, int resampled);

typedef struct {
    const char *data; /* source spec, see source.h */
    tc_source_opts source;
    int batch_size;     /* B per rank */
    int image_size;     /* S */
    int context_length; /* token ids per caption (77) */
    int train;          /* shuffle + RandomResizedCrop + drop the partial last batch */
    int resampled;      /* train: shards drawn with replacement per rank (webdataset) */
    int bf16;           /* images as bf16 instead of fp32 */
    int workers;        /* decode threads (default 2) */
    int prefetch;       /* ready batches kept queued (default 2) */
    uint64_t seed;
    int rank, world_size;
    int shuffle_buffer;           /* webdataset sample shuffle buffer (default 1000; 0 = off) */
    int shuffle_initial;          /* samples buffered before the first pick (default 100) */
    int64_t epochs;               /* stop after this many epochs (0 = never) */
    double max_bad_fraction;      /* default 0.05 */
    int64_t min_samples;          /* the bound applies after this many samples (default 100) */
    int dct_scale;                /* -1 default (on for train, off for eval), 0 off, 1 on */
    double scale_min, scale_max;  /* RandomResizedCrop scale (0.9, 1.0) */
    int64_t max_image_pixels;     /* 0: TC_IMAGE_DEFAULT_MAX_PIXELS (image_decode.h) */
    tc_tokenizer *tokenizer;      /* required; shared by the workers */
    tc_batch_allocator allocator; /* alloc NULL: malloc/free */
    FILE *log;                    /* skip lines; NULL: stderr */
    int quiet;                    /* 1: no skip lines (counts still kept) */
} tc_loader_cfg;

void tc_loader_cfg_init(tc_loader_cfg *c);

typedef struct {
    int n;                 /* samples in the batch (B, or fewer for a final eval batch) */
    int batch_size;        /* B: the arrays' first dimension */
    float *images;         /* (B,3,S,S) fp32; NULL when bf16 */
    uint16_t *images_bf16; /* (B,3,S,S) bf16; NULL unless cfg.bf16 */
    int32_t *tokens;       /* (B, context) */
    int32_t *labels;       /* (B) */
    int32_t *parts;        /* (B) the "::" source of each sample (0 for one source) */
    int64_t epoch, index;  /* batch `index` of `epoch` */
    int last_in_epoch;
    tc_loader_cursor cursor; /* resume point after this batch */
} tc_batch;

typedef struct tc_loader tc_loader;

/* resume NULL: start at epoch 0 */
tc_status tc_loader_create(const tc_loader_cfg *cfg, const tc_loader_cursor *resume,
                           tc_loader **out);
/* the next batch in order; *out = NULL after the last epoch. a caller may
 * hold at most two batches at a time (release each with tc_loader_release):
 * the loader owns prefetch + 2 batch buffers. */
tc_status tc_loader_next(tc_loader *l, tc_batch **out);
void tc_loader_release(tc_loader *l, tc_batch *b);
void tc_loader_destroy(tc_loader *l);

int64_t tc_loader_batches_per_epoch(const tc_loader *l); /* -1 when unknown */
const tc_source *tc_loader_source(const tc_loader *l);
void tc_loader_stats(tc_loader *l, int64_t *seen, int64_t *bad, int64_t *bad_shards);
/* samples per "::" part of the spec in the batches handed out by
 * tc_loader_next so far (this loader's life, this rank); parts =
 * max(1, source->num_parts) entries; returns that count */
int tc_loader_part_counts(tc_loader *l, int64_t *counts, int cap);

#endif
