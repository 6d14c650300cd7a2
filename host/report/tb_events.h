/* TensorBoard event files, written without TensorFlow or protobuf:
 * TFRecord framing (uint64 length, masked CRC32C of the length, data,
 * masked CRC32C of the data, little-endian) around hand-encoded Event
 * protobufs. the first record is Event{wall_time, file_version:"brain.Event:2"};
 * each scalar is Event{wall_time (1, double), step (2, int64),
 * summary (5) = Summary{value (1) = Value{tag (1), simple_value (2, float)}}}.
 * `tensorboard --logdir runs/` shows every events.out.tfevents.* file below.
 * a reader is included for the tests and for tools; it is hostile-input safe. */
#ifndef TC_TB_EVENTS_H
#define TC_TB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct tc_tb_writer tc_tb_writer;

/* creates dir (and parents) and a new events.out.tfevents.<time>.<host>.<pid>.<n>
 * file in it, starting with the file_version record */
tc_status tc_tb_open(tc_tb_writer **out, const char *dir);
/* a scalar at `step`, wall time now */
tc_status tc_tb_scalar(tc_tb_writer *w, const char *tag, int64_t step, float value);
tc_status tc_tb_scalar_at(tc_tb_writer *w, const char *tag, int64_t step, float value,
                          double wall_time);
/* flushes to the OS (and fsyncs when sync is set) */
tc_status tc_tb_flush(tc_tb_writer *w, int sync);
/* flushes, closes and frees; NULL is fine */
tc_status tc_tb_close(tc_tb_writer *w);
const char *tc_tb_path(const tc_tb_writer *w);

/* CRC32C (Castagnoli) and TFRecord's mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8 */
uint32_t tc_crc32c(const void *data, size_t len);
uint32_t tc_crc32c_mask(uint32_t crc);

/* one decoded event */
typedef struct {
    double wall_time;
    int64_t step;
    int has_file_version;
    char file_version[32];
    int has_scalar;
    char tag[128];
    float value;
} tc_tb_event;

/* decodes the records of an event file held in memory, checking both CRCs.
 * calls fn for every event (fn returns nonzero to stop); fails on a corrupt
 * or truncated record, naming its byte offset. unknown fields are skipped. */
tc_status tc_tb_parse(const uint8_t *data, size_t len, int (*fn)(void *user, const tc_tb_event *ev),
                      void *user);

#endif
