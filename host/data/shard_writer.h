/* writes webdataset shards: DIR/000000.tar, 000001.tar, ... with at most
 * per_shard samples each; a sample is <key>.<jpg|png>, <key>.txt and, when
 * known, <key>.cls (class index) and <key>.json. members carry fixed
 * metadata (mode 0644, mtime 0, no owner) so the output is reproducible.
 * each shard is written to a temporary name and renamed when complete;
 * sizes.json (shard basename -> sample count) is written the same way when
 * the writer is closed. */
#ifndef TC_SHARD_WRITER_H
#define TC_SHARD_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct tc_shard_writer tc_shard_writer;

tc_status tc_shard_writer_create(const char *dir, int64_t per_shard, tc_shard_writer **out);

/* image_ext "jpg" or "png"; label < 0: no .cls member; json may be NULL */
tc_status tc_shard_writer_add(tc_shard_writer *w, const char *key, const char *image_ext,
                              const uint8_t *image, size_t image_len, const char *caption,
                              size_t caption_len, int32_t label, const char *json);

/* finishes the open shard and writes sizes.json */
tc_status tc_shard_writer_close(tc_shard_writer *w, int *num_shards, int64_t *num_samples);

/* frees the writer; an unfinished shard's temporary file is removed */
void tc_shard_writer_destroy(tc_shard_writer *w);

#endif
