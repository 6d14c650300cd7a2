/* opening the files a data source names (images, captions, tables, class
 * lists, local shards) without ever blocking on them: a path is opened with
 * O_NONBLOCK and checked with fstat, and only a regular file is read. a
 * FIFO, socket, device or directory is refused with what it is ("is a
 * directory", "not a regular file (a FIFO)"), so that a sample can be
 * skipped and named like a corrupt one instead of hanging the pipeline. */
#ifndef TC_DATA_FILE_H
#define TC_DATA_FILE_H

#include <stddef.h>
#include <stdint.h>

/* a read-only descriptor of the regular file at path (blocking reads, close
 * with close()), or -1 with the reason in why */
int tc_data_open_regular(const char *path, char *why, size_t why_cap);

/* the whole regular file at path in a malloc'd buffer with a NUL after the
 * last byte; 0 on success, -1 with the reason in why (a clause that
 * follows the file's name: "is a directory", "has size N, over the limit
 * of M bytes", "cannot be opened: No such file or directory") */
int tc_data_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, char *why,
                      size_t why_cap);

/* 1 when path names a regular file (links followed), 0 otherwise */
int tc_data_is_regular(const char *path);

#endif
