/* the loader's state, shared by its three files: loader.c (life cycle,
 * workers, per-sample processing), loader_stream.c (the reader: the order
 * of each mode, shards, shuffling, resume) and loader_assemble.c (batches
 * in stream order, replacements in training order).
 *
 * pipeline, one mutex: a worker claims the next ring number g, and while
 * holding the lock produces the stream item for it (an index for indexable
 * sources; for webdataset the next raw sample through the shard reader and
 * shuffle, a sequential read). it then decodes, transforms and tokenizes
 * into ring slot g % R without the lock, marks the slot done, and the one
 * thread that holds the `assembling` role copies done slots into batches
 * strictly in g order. the reader switches epochs only when the assembler
 * says the epoch is over (end of stream or batch quota), so an epoch's
 * content never depends on timing. */
#ifndef TC_LOADER_INTERNAL_H
#define TC_LOADER_INTERNAL_H

#include <pthread.h>

#include "loader.h"

enum { SLOT_FREE = 0, SLOT_BUSY, SLOT_DONE };
enum { MODE_EVAL = 0, MODE_GLOBAL, MODE_RESAMPLED };

/* one processed sample: pixels, tokens, label, part, or why it failed */
typedef struct {
    float *img;      /* (3,S,S) */
    uint16_t *img16; /* (3,S,S) */
    int32_t *tok;    /* (context) */
    int32_t label;
    int part;
    char bad[800]; /* non-empty: unusable, with the log line's text */
} sample_out;

typedef struct {
    int state;
    int64_t epoch, pos;
    int is_end;                         /* end-of-stream marker for `epoch` */
    int row;                            /* training order: the row in the rank's batch */
    int64_t index;                      /* indexable: sample index */
    tc_sample raw;                      /* webdataset: the raw sample read by the reader */
    int64_t blk_draw[2], blk_member[2]; /* resampled: its block's start and end */
    sample_out o;
} slot;

typedef struct {
    struct tc_loader *l;
    pthread_t th;
    tc_image_decoder *dec;
    uint8_t *scratch;
    int started;
} worker;

/* training order, webdataset: the raw samples around a rank's slice of one
 * global batch, kept to replace unusable samples (loader_assemble.c) */
typedef struct {
    int64_t epoch, batch;
    int64_t lo;  /* global position of before[0] */
    int nbefore; /* positions lo .. lo+nbefore-1, ending just before the slice */
    int nafter;  /* positions just after the slice */
    tc_sample before[TC_LOADER_SUBST_WINDOW], after[TC_LOADER_SUBST_WINDOW];
} subst_window;

struct tc_loader {
    tc_loader_cfg cfg;
    tc_source *src;
    tc_transform_cfg tcfg;
    int mode;
    int min_side;
    int64_t G;        /* global batch (training order) */
    int64_t per_rank; /* indexable eval: stream length per epoch */
    int64_t quota;    /* batches per epoch, -1 unknown */
    int cycle;        /* webdataset: re-read the shards when they run out */
    int nparts;
    int cancel; /* set (atomically) by destroy: stops shard streams at once */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    tc_status fatal;
    char fatal_msg[1024];

    /* reader */
    int64_t r_epoch, r_pos;
    int r_finished; /* epochs limit reached */
    int r_ended;    /* end marker of r_epoch already issued */
    int64_t *perm;  /* indexable train: permutation of r_epoch */
    int *rshards;   /* webdataset: the rank's shards in r_epoch order */
    int nrshards, shard_i;
    int64_t cycle_items; /* raw samples read in the current pass */
    tc_shard_reader *rd;
    tc_sample *sbuf; /* shuffle buffer (webdataset's, or the resampled block) */
    int sbuf_n, src_done;
    tc_rng shuf_rng;
    int64_t raw_pos; /* training order, webdataset: stream items produced in r_epoch */
    /* resampled: draws of r_epoch, samples read from the current one, and
     * the block being handed out */
    int64_t rs_draw, rs_member, rs_restart;
    int sbuf_at; /* next index of the block to hand out */
    int64_t blk_draw[2], blk_member[2];
    double *part_cum; /* (num_shards) cumulative shard weights */
    /* training order, webdataset: windows of the global batches not yet assembled */
    subst_window *win;
    int nwin, win_cap;

    /* ring */
    slot *slots;
    int R;
    int64_t g_next, g_asm;

    /* assembler */
    int assembling;
    int64_t a_epoch, a_batch, a_good_in_epoch;
    int64_t seen, bad, bad_shards, logged, shards_opened;
    int64_t *part_counts; /* (nparts) */
    tc_batch *cur;
    int cur_rows;          /* training order: rows of cur assembled */
    unsigned char *row_ok; /* (B) training order: row decoded fine */
    int rows_bad;
    sample_out spare[2]; /* training order: decoded replacements, the last usable sample */
    int have_last;
    tc_batch **pool;
    int npool, pool_cap, nallocated;
    tc_batch **ready;
    int rq_head, rq_n, rq_cap;
    int end_queued;

    worker *workers;
    int nworkers;
};

/* loader.c */
void tc_loader_log(tc_loader *l, const char *what);
void tc_loader_set_fatal(tc_loader *l, tc_status st, const char *msg);
/* decodes, transforms and tokenizes one raw sample (or index) into o; the
 * augmentation is seeded by (epoch, aug_rank, pos) */
void tc_loader_process(tc_loader *l, worker *w, int64_t index, tc_sample *raw, int64_t epoch,
                       int64_t pos, sample_out *o);

/* loader_stream.c (called with mu held) */
tc_status tc_loader_reader_start(tc_loader *l, int64_t epoch, const tc_loader_cursor *at);
tc_status tc_loader_produce(tc_loader *l, slot *s, int *produced);
tc_status tc_loader_fast_forward(tc_loader *l, const tc_loader_cursor *at);
void tc_loader_reader_reset(tc_loader *l);
/* training order: global position of row `row` of this rank in batch k */
int64_t tc_loader_row_pos(const tc_loader *l, int64_t k, int row);
subst_window *tc_loader_window(tc_loader *l, int64_t epoch, int64_t batch);
void tc_loader_window_drop(tc_loader *l, int64_t epoch, int64_t batch);
void tc_loader_windows_clear(tc_loader *l);
tc_status tc_loader_complete_window(tc_loader *l, int64_t epoch, int64_t k);

/* loader_assemble.c (called with mu held) */
void tc_loader_assemble(tc_loader *l, worker *w);
void tc_loader_batch_free(tc_loader *l, tc_batch *b);

#endif
