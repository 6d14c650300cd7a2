/* file helpers for everything the engine writes and reads whole:
 * atomic writes (a temp file in the target's directory, fsync, rename over
 * the target, fsync the directory) so that a crash leaves either the old or
 * the new file, never a torn one; bounded whole-file reads; mkdir -p. */
#ifndef TC_FILEIO_H
#define TC_FILEIO_H

#include <stddef.h>

#include "status.h"

typedef struct tc_atomic_file tc_atomic_file;

/* creates "<dir>/.<base>.tmp.<pid>.<n>" beside path */
tc_status tc_atomic_open(tc_atomic_file **out, const char *path);
tc_status tc_atomic_write(tc_atomic_file *f, const void *data, size_t len);
/* fsync, close, rename onto the target, fsync the directory; frees f on
 * success and on failure (the temp file is removed on failure) */
tc_status tc_atomic_commit(tc_atomic_file *f);
/* discards the temp file and frees f (NULL is fine) */
void tc_atomic_abort(tc_atomic_file *f);

/* the whole of data to path, atomically */
tc_status tc_write_file_atomic(const char *path, const void *data, size_t len);
/* the same to dir/name */
tc_status tc_write_file_atomic_in(const char *dir, const char *name, const void *data, size_t len);

/* "dir/name", malloc'd; NULL when out of memory */
char *tc_path_join(const char *dir, const char *name);

/* reads a whole regular file into a malloc'd, NUL-terminated buffer;
 * files larger than max_bytes are refused with a message naming the file */
tc_status tc_read_file_bounded(const char *path, size_t max_bytes, char **data, size_t *len);

/* creates path and its missing parents (mode 0777 & umask) */
tc_status tc_mkdir_p(const char *path);

int tc_path_is_dir(const char *path);
int tc_path_is_file(const char *path);

/* what stands at path when it is not a regular file, for messages: "no such
 * file or directory", "is a directory", "is not a regular file (a FIFO)",
 * ...; NULL for a regular file. never opens the path (a FIFO would block) */
const char *tc_path_not_regular(const char *path);
/* the same for a st_mode from stat/fstat: NULL for a regular file */
const char *tc_file_mode_kind(unsigned mode);

#endif
