/* webdataset shard writing through libarchive (ustar/pax); see shard_writer.h. */
#include "shard_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct tc_shard_writer {
    char dir[4096];
    int64_t per_shard;
    struct archive *a; /* open shard, or NULL */
    char tmp[4200], final[4200];
    int64_t in_shard;
    int nshards;
    int64_t total;
    int64_t *counts; /* (nshards) */
    int cap;
};

tc_status tc_shard_writer_create(const char *dir, int64_t per_shard, tc_shard_writer **out) {
    *out = NULL;
    if (per_shard <= 0) return tc_fail(TC_ERR_ARG, "shards: --per-shard must be positive");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return tc_fail(TC_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    tc_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return tc_fail(TC_ERR_OOM, "shards: out of memory");
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    w->per_shard = per_shard;
    *out = w;
    return TC_OK;
}

static tc_status finish_shard(tc_shard_writer *w) {
    if (!w->a) return TC_OK;
    int rc = archive_write_close(w->a);
    const char *msg = rc != ARCHIVE_OK ? archive_error_string(w->a) : NULL;
    archive_write_free(w->a);
    w->a = NULL;
    if (rc != ARCHIVE_OK) {
        unlink(w->tmp);
        return tc_fail(TC_ERR_IO, "%s: %s", w->final, msg ? msg : "write failed");
    }
    if (rename(w->tmp, w->final) != 0) {
        unlink(w->tmp);
        return tc_fail(TC_ERR_IO, "%s: cannot rename: %s", w->final, strerror(errno));
    }
    if (w->nshards == w->cap) {
        int nc = w->cap ? w->cap * 2 : 16;
        int64_t *n = realloc(w->counts, sizeof(int64_t) * (size_t)nc);
        if (!n) return tc_fail(TC_ERR_OOM, "shards: out of memory");
        w->counts = n;
        w->cap = nc;
    }
    w->counts[w->nshards++] = w->in_shard;
    w->in_shard = 0;
    return TC_OK;
}

static tc_status start_shard(tc_shard_writer *w) {
    snprintf(w->final, sizeof w->final, "%s/%06d.tar", w->dir, w->nshards);
    snprintf(w->tmp, sizeof w->tmp, "%s/.%06d.tar.tmp", w->dir, w->nshards);
    w->a = archive_write_new();
    if (!w->a) return tc_fail(TC_ERR_OOM, "shards: out of memory");
    archive_write_set_format_pax_restricted(w->a);
    if (archive_write_open_filename(w->a, w->tmp) != ARCHIVE_OK) {
        tc_status st = tc_fail(TC_ERR_IO, "%s: cannot create: %s", w->tmp,
                               archive_error_string(w->a) ? archive_error_string(w->a) : "?");
        archive_write_free(w->a);
        w->a = NULL;
        return st;
    }
    return TC_OK;
}

static tc_status put(tc_shard_writer *w, const char *key, const char *ext, const void *data,
                     size_t len) {
    char name[1024];
    snprintf(name, sizeof name, "%s.%s", key, ext);
    struct archive_entry *e = archive_entry_new();
    if (!e) return tc_fail(TC_ERR_OOM, "shards: out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, 0, 0);
    tc_status st = TC_OK;
    if (archive_write_header(w->a, e) != ARCHIVE_OK ||
        (len > 0 && archive_write_data(w->a, data, len) != (la_ssize_t)len))
        st = tc_fail(TC_ERR_IO, "%s: member %s: %s", w->final, name,
                     archive_error_string(w->a) ? archive_error_string(w->a) : "write failed");
    archive_entry_free(e);
    return st;
}

tc_status tc_shard_writer_add(tc_shard_writer *w, const char *key, const char *image_ext,
                              const uint8_t *image, size_t image_len, const char *caption,
                              size_t caption_len, int32_t label, const char *json) {
    if (!key || !key[0] || strchr(key, '.'))
        return tc_fail(TC_ERR_ARG, "shards: bad sample key '%s' (no dots allowed)", key ? key : "");
    if (!w->a) TC_TRY(start_shard(w));
    TC_TRY(put(w, key, image_ext, image, image_len));
    TC_TRY(put(w, key, "txt", caption, caption_len));
    if (label >= 0) {
        char cls[32];
        int n = snprintf(cls, sizeof cls, "%d", (int)label);
        TC_TRY(put(w, key, "cls", cls, (size_t)n));
    }
    if (json) TC_TRY(put(w, key, "json", json, strlen(json)));
    w->in_shard++;
    w->total++;
    if (w->in_shard >= w->per_shard) TC_TRY(finish_shard(w));
    return TC_OK;
}

tc_status tc_shard_writer_close(tc_shard_writer *w, int *num_shards, int64_t *num_samples) {
    TC_TRY(finish_shard(w));
    char tmp[4200], fin[4200];
    snprintf(fin, sizeof fin, "%s/sizes.json", w->dir);
    snprintf(tmp, sizeof tmp, "%s/.sizes.json.tmp", w->dir);
    FILE *f = fopen(tmp, "w");
    if (!f) return tc_fail(TC_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    fprintf(f, "{");
    for (int i = 0; i < w->nshards; i++)
        fprintf(f, "%s\n  \"%06d.tar\": %lld", i ? "," : "", i, (long long)w->counts[i]);
    fprintf(f, "\n}\n");
    int bad = ferror(f);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) bad = 1;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, fin) != 0) {
        unlink(tmp);
        return tc_fail(TC_ERR_IO, "%s: write failed: %s", fin, strerror(errno));
    }
    if (num_shards) *num_shards = w->nshards;
    if (num_samples) *num_samples = w->total;
    return TC_OK;
}

void tc_shard_writer_destroy(tc_shard_writer *w) {
    if (!w) return;
    if (w->a) {
        archive_write_free(w->a);
        unlink(w->tmp);
    }
    free(w->counts);
    free(w);
}
