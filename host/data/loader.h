/* the training/eval data loader: worker threads turn a source's samples into
 * ready batches (images (B,3,S,S) fp32 or bf16, token ids (B,context) int32,
 * labels (B) int32 with -1 where unknown) held in a bounded queue.
 *
 * order. every rank reads a deterministic stream of samples per epoch:
 *   - indexable sources (csv, folder, Fashion-MNIST): train uses a full
 *     permutation seeded by (seed, epoch), padded and strided over ranks as
 *     torch's DistributedSampler does (rank r takes positions r, r+W, ...);
 *     eval reads in order, rank r taking indices r, r+W, ... unpadded;
 *   - webdataset: train shuffles the shard list by (seed, epoch) (the same on
 *     every rank), rank r reads shards r, r+W, ..., then a shuffle buffer
 *     seeded by (seed, epoch, rank) with webdataset's algorithm (bufsize,
 *     initial); eval reads the rank's shards in order without shuffling.
 * workers decode stream positions in parallel, but batches are assembled in
 * stream order, skipping bad samples, so the batches are the same whatever
 * the number of threads or their timing. the train augmentation of a sample
 * is seeded by (seed, epoch, rank, position).
 *
 * epochs, as open_clip counts them:
 *   - indexable, train: ceil(N / W) samples per rank (DistributedSampler),
 *     floor of that / B batches (drop_last); eval: every sample once, the
 *     last batch may be partial;
 *   - webdataset with a known size (sizes.json or num_samples), train:
 *     ceil(N / (B*W)) batches per rank (open_clip's with_epoch; the per-worker
 *     rounding does not apply since our workers share one stream); the rank's
 *     shards are re-read from the start when they run out, so samples may
 *     repeat. unknown size, or eval: one pass over the rank's shards.
 *   bad samples are skipped, so an epoch ending at its stream's end may hold
 *   fewer batches; an epoch with no usable sample is an error.
 *
 * resume. tc_batch.cursor is the loader state after that batch: (epoch,
 * batch, position, bad, seen). a loader created with that cursor yields
 * exactly the batches an uninterrupted one would have yielded next
 * (webdataset shards are re-read up to the position, without decoding, to
 * rebuild the shuffle buffer).
 *
 * bad data. every skipped sample is logged as "shard X: sample KEY: reason"
 * (the first 50, then every 1000th); an unreadable shard is logged by name;
 * when bad / seen exceeds max_bad_fraction after min_samples samples the
 * loader stops and tc_loader_next returns TC_ERR_DATA. */
#ifndef TC_LOADER_H
#define TC_LOADER_H

#include <stdint.h>
#include <stdio.h>

#include "host_alloc.h"
#include "image_transform.h"
#include "source.h"
#include "status.h"
#include "tokenizer.h"

typedef struct {
    int64_t epoch; /* epoch the next batch belongs to */
    int64_t batch; /* batches of that epoch already delivered */
    int64_t pos;   /* next stream position of this rank in that epoch */
    int64_t bad;   /* bad samples so far (for the error-rate bound) */
    int64_t seen;  /* samples examined so far */
} tc_loader_cursor;

#define TC_LOADER_CURSOR_INTS 5
void tc_loader_cursor_pack(const tc_loader_cursor *c, int64_t v[TC_LOADER_CURSOR_INTS]);
void tc_loader_cursor_unpack(const int64_t v[TC_LOADER_CURSOR_INTS], tc_loader_cursor *c);

typedef struct {
    const char *data; /* source spec, see source.h */
    tc_source_opts source;
    int batch_size;     /* B per rank */
    int image_size;     /* S */
    int context_length; /* token ids per caption (77) */
    int train;          /* shuffle + RandomResizedCrop + drop the partial last batch */
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

#endif
