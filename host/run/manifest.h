/* the manifest of a folder of weights (a checkpoint, a stage's final/): one
 * line per file with its size and XXH3-64 checksum (libxxhash), written
 * last, so that a truncated file or a flipped bit is found before the
 * weights are used.
 *
 *   DIR/manifest.txt
 *     # tinyclip manifest: xxh3-64 size name
 *     xxh3 1f0e9a4c77d2b8e1 4215800 open_clip_model.safetensors
 *     ...
 *
 * every regular file of the folder is listed (not the manifest itself,
 * nor names starting with '.', which are temporaries). */
#ifndef TC_MANIFEST_H
#define TC_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define TC_MANIFEST_FILE "manifest.txt"

/* checksums every regular file of dir into dir/manifest.txt (atomically) */
tc_status tc_manifest_write(const char *dir);

/* 1: every file the manifest lists is there with its size and checksum;
 * 0: damaged, why says how ("train_state.safetensors: 812 bytes, the
 * manifest says 3464"); -1: there is no manifest (why says so) */
int tc_manifest_verify(const char *dir, char *why, size_t cap);

/* the XXH3-64 of a regular file and its size (a FIFO or a folder is
 * refused, never opened for reading) */
tc_status tc_file_xxh3(const char *path, uint64_t *hash, uint64_t *size);

#endif
