/* the bytes of one webdataset shard, from wherever its URL points:
 *
 *   path/to/000123.tar           a local regular file (data_file.h's checks)
 *   pipe:CMD                     the standard output of CMD, run as
 *                                `/bin/sh -c CMD` exactly as webdataset's
 *                                gopen does (shell syntax, pipes and
 *                                redirections work; the environment is
 *                                inherited, so credentials can stay there)
 *   http://... , https://...     `pipe:curl -s -S -f -L 'URL'` when curl is
 *                                on PATH (refused with a clear message when
 *                                it is not)
 *
 * the bytes are streamed to the tar reader as they arrive: no temporary
 * files. a command runs in a process group of its own so that a timeout or
 * an early close stops the whole pipeline (sh and what it started). a read
 * that sees no byte for timeout_s seconds kills the command and fails,
 * naming the shard; a command that exits non-zero (or dies from a signal
 * other than SIGPIPE, which webdataset ignores too) fails with its exit
 * status and the tail of its standard error.
 *
 * nothing printed names more of a command than tc_shard_redact leaves:
 * query strings and user:password parts of URLs and NAME=value words are
 * replaced by "***"; the environment is never printed. */
#ifndef TC_SHARD_STREAM_H
#define TC_SHARD_STREAM_H

#include <stddef.h>
#include <sys/types.h>

#include "status.h"

typedef struct {
    int retries;       /* a failed command is run again this often (default 3) */
    int backoff_ms;    /* before the first retry; doubled for each next one (default 1000) */
    int timeout_s;     /* no byte for this long: the command is killed (default 300) */
    const int *cancel; /* when non-NULL and set (atomically), reads stop at once */
} tc_stream_opts;

void tc_stream_opts_init(tc_stream_opts *o);

typedef struct tc_shard_stream tc_shard_stream;

/* 1 for pipe: and http(s):// names, 0 for local paths */
int tc_shard_is_remote(const char *name);

/* checks what opening name will need (curl for http(s)); TC_OK or a message */
tc_status tc_shard_check(const char *name);

/* the name as it may be printed (see tc_shard_redact) */
void tc_shard_display(const char *name, char *out, size_t cap);

/* copies text to out with query strings, URL user:password parts and
 * NAME=value words replaced by "***" */
void tc_shard_redact(const char *text, char *out, size_t cap);

tc_status tc_shard_stream_open(const char *name, const tc_stream_opts *o, tc_shard_stream **out);

/* up to n bytes; 0 at the end of the stream; -1 on failure (message set,
 * naming the shard; for a command its exit status and standard error) */
ssize_t tc_shard_stream_read(tc_shard_stream *s, void *buf, size_t n);

/* skips n bytes of a local file (seek); -1 when the stream cannot seek */
off_t tc_shard_stream_skip(tc_shard_stream *s, off_t n);

/* ends the stream. complete = 1 when the tar reader reached the archive's
 * end: a command is then allowed to finish (its remaining output is read
 * and dropped, up to the timeout) and its exit status is checked; complete
 * = 0 stops it at once. returns the command's failure, if any; frees s. */
tc_status tc_shard_stream_close(tc_shard_stream *s, int complete);

#endif
