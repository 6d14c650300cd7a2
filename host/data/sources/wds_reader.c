/* reading one webdataset shard: tar members through libarchive, grouped
 * into samples with open_clip's rules (key = path up to the first dot of
 * the basename, extension = the rest, lower-cased; members that are not
 * regular files and __*__ names are skipped; a sample's files are adjacent;
 * a new sample starts when the key changes or a suffix repeats, as
 * group_by_keys_nothrow). image = first of jpg, png, jpeg, webp; caption =
 * txt; label = cls.
 *
 * the bytes come from a shard stream (shard_stream.h). when the stream of a
 * pipe: or http(s) shard fails (the command exits non-zero, breaks off or
 * hangs past the timeout), the command is run again after a backoff
 * (stream.retries times, backoff_ms doubling) and the samples already
 * handed out are read past, so the shard continues exactly where it broke
 * off; when the retries are used up the failure is returned and the loader
 * counts the shard as bad. a tar that is corrupt while its stream is fine
 * is not retried. */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wds_reader.h"

#define MAX_IMAGE_BYTES ((int64_t)64 << 20)
#define MAX_TEXT_BYTES ((int64_t)1 << 20)
#define MAX_SUFFIXES 32
#define IO_BYTES (1 << 16)

struct tc_shard_reader {
    struct archive *a;
    char name[512]; /* as printed (redacted) */
    char *url;      /* as given, to open it again; NULL for a memory reader */
    int part;
    tc_stream_opts so;
    FILE *log;
    int quiet;
    tc_shard_stream *stream;
    uint8_t *iobuf;
    int stream_failed; /* the stream (not the tar) failed: stream_err says how */
    char stream_err[700];
    int attempt;           /* runs of the command so far, after the first */
    int64_t emitted, skip; /* samples handed out; to drop after a retry */
    int ended;             /* the archive's end was read */
    /* sample under construction */
    int have;
    char key[256];
    char suffixes[MAX_SUFFIXES][32];
    int nsuf;
    tc_sample cur;
    char img_ext[8];
    int img_rank; /* lower is preferred: jpg, png, jpeg, webp */
    int has_txt;
    /* a fatal error met after the last member: reported on the next call */
    tc_status pending_err;
    char pending_msg[800];
    int done;
};

static int img_rank_of(const char *ext) {
    if (strcmp(ext, "jpg") == 0) return 0;
    if (strcmp(ext, "png") == 0) return 1;
    if (strcmp(ext, "jpeg") == 0) return 2;
    if (strcmp(ext, "webp") == 0) return 3;
    return -1;
}

static void start_sample(tc_shard_reader *r, const char *key) {
    tc_sample_clear(&r->cur);
    r->have = 1;
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->cur.key, sizeof r->cur.key, "%s", key);
    snprintf(r->cur.where, sizeof r->cur.where, "%s", r->name);
    r->cur.label = -1;
    r->cur.part = r->part;
    r->nsuf = 0;
    r->img_rank = 99;
    r->has_txt = 0;
    r->img_ext[0] = 0;
}

/* hands the finished sample to out, deciding whether it is usable */
static void finish_sample(tc_shard_reader *r, tc_sample *out) {
    *out = r->cur;
    memset(&r->cur, 0, sizeof r->cur);
    r->have = 0;
    if (out->bad[0]) return;
    if (!r->has_txt) {
        snprintf(out->bad, sizeof out->bad, "no caption (.txt)");
    } else if (!out->image) {
        snprintf(out->bad, sizeof out->bad, "no image (.jpg/.jpeg/.png)");
    } else if (!tc_utf8_valid(out->caption, out->caption_len)) {
        snprintf(out->bad, sizeof out->bad, "caption is not valid UTF-8");
    } else if (strcmp(r->img_ext, "webp") == 0) {
        snprintf(out->bad, sizeof out->bad, "WebP images are not supported");
    }
}

static tc_status read_member(tc_shard_reader *r, int64_t size, const char *mname, uint8_t **buf,
                             size_t *len) {
    *buf = malloc((size_t)size + 1);
    if (!*buf) return tc_fail(TC_ERR_OOM, "%s: out of memory for member %s", r->name, mname);
    size_t off = 0;
    while (off < (size_t)size) {
        la_ssize_t k = archive_read_data(r->a, *buf + off, (size_t)size - off);
        if (k < 0) {
            free(*buf);
            *buf = NULL;
            if (r->stream_failed) return tc_fail(TC_ERR_IO, "%s", r->stream_err);
            return tc_fail(TC_ERR_FORMAT, "shard %s: member %s: %s", r->name, mname,
                           archive_error_string(r->a) ? archive_error_string(r->a) : "read error");
        }
        if (k == 0) break;
        off += (size_t)k;
    }
    if (off != (size_t)size) {
        free(*buf);
        if (r->stream_failed) {
            *buf = NULL;
            return tc_fail(TC_ERR_IO, "%s", r->stream_err);
        }
        *buf = NULL;
        return tc_fail(TC_ERR_FORMAT, "shard %s: member %s truncated (%zu of %lld bytes)", r->name,
                       mname, off, (long long)size);
    }
    (*buf)[size] = 0;
    *len = (size_t)size;
    return TC_OK;
}

static tc_status next_sample(tc_shard_reader *r, tc_sample *out, int *eof) {
    memset(out, 0, sizeof *out);
    out->label = -1;
    *eof = 0;
    if (r->pending_err != TC_OK) {
        tc_status e = r->pending_err;
        r->pending_err = TC_OK;
        r->done = 1;
        return tc_fail(e, "%s", r->pending_msg);
    }
    if (r->done) {
        *eof = 1;
        return TC_OK;
    }
    int emitted = 0;
    for (;;) {
        struct archive_entry *e;
        int rc = archive_read_next_header(r->a, &e);
        if (rc == ARCHIVE_EOF || rc < ARCHIVE_WARN) {
            if (rc != ARCHIVE_EOF) {
                const char *m = archive_error_string(r->a);
                r->pending_err = r->stream_failed ? TC_ERR_IO : TC_ERR_FORMAT;
                if (r->stream_failed)
                    snprintf(r->pending_msg, sizeof r->pending_msg, "%s", r->stream_err);
                else
                    snprintf(r->pending_msg, sizeof r->pending_msg,
                             "shard %s: truncated or corrupt tar: %s", r->name,
                             m ? m : "read error");
                /* a command that broke off is run again: the sample it was
                 * in comes whole from the next attempt */
                if (r->stream_failed) {
                    tc_sample_clear(&r->cur);
                    r->have = 0;
                }
            } else {
                r->done = 1;
                r->ended = 1;
            }
            if (r->have) {
                finish_sample(r, out);
                if (r->pending_err != TC_OK && out->bad[0]) {
                    char why[sizeof out->bad];
                    snprintf(why, sizeof why, "%s", out->bad);
                    snprintf(out->bad, sizeof out->bad,
                             "incomplete, the shard breaks off in it (%.150s)", why);
                }
                return TC_OK;
            }
            if (r->pending_err != TC_OK) return next_sample(r, out, eof);
            *eof = 1;
            return TC_OK;
        }
        if (archive_entry_filetype(e) != AE_IFREG) continue;
        const char *path = archive_entry_pathname(e);
        if (!path || !path[0]) continue;
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        size_t blen = strlen(base);
        if (blen >= 4 && base[0] == '_' && base[1] == '_' && base[blen - 1] == '_' &&
            base[blen - 2] == '_')
            continue; /* __key__-style metadata */
        const char *dot = strchr(base, '.');
        if (!dot || dot == base) continue; /* no key or no extension: base_plus_ext gives None */
        char key[256], ext[32];
        size_t klen = (size_t)(dot - path);
        size_t elen = strlen(dot + 1);
        int key_too_long = klen >= sizeof key;
        if (key_too_long) klen = sizeof key - 1;
        memcpy(key, path, klen);
        key[klen] = 0;
        if (elen >= sizeof ext) elen = sizeof ext - 1;
        for (size_t i = 0; i < elen; i++)
            ext[i] = (char)tolower((unsigned char)dot[1 + i]);
        ext[elen] = 0;
        int repeated = 0;
        for (int i = 0; i < r->nsuf; i++)
            if (strcmp(r->suffixes[i], ext) == 0) repeated = 1;
        if (r->have && (strcmp(key, r->key) != 0 || repeated)) {
            /* this member opens the next sample: the current one is handed
             * out when this member has been taken in */
            finish_sample(r, out);
            emitted = 1;
            start_sample(r, key);
        } else if (!r->have) {
            start_sample(r, key);
        }
        if (key_too_long && !r->cur.bad[0])
            snprintf(r->cur.bad, sizeof r->cur.bad, "key longer than %zu bytes", sizeof key - 1);
        if (r->nsuf < MAX_SUFFIXES) snprintf(r->suffixes[r->nsuf++], 32, "%s", ext);
        int rank = img_rank_of(ext);
        int want_txt = strcmp(ext, "txt") == 0, want_json = strcmp(ext, "json") == 0,
            want_cls = strcmp(ext, "cls") == 0;
        if (rank >= 0 || want_txt || want_json || want_cls) {
            int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
            int64_t limit = rank >= 0 ? MAX_IMAGE_BYTES : MAX_TEXT_BYTES;
            if (size < 0 || size > limit) {
                if (!r->cur.bad[0])
                    snprintf(r->cur.bad, sizeof r->cur.bad, "member .%s has size %lld (limit %lld)",
                             ext, (long long)size, (long long)limit);
            } else if (rank < 0 || rank < r->img_rank) {
                uint8_t *buf = NULL;
                size_t len = 0;
                tc_status st = read_member(r, size, path, &buf, &len);
                if (st != TC_OK) {
                    /* the stream is broken from here: report the shard */
                    r->pending_err = st;
                    snprintf(r->pending_msg, sizeof r->pending_msg, "%s", tc_last_error());
                    r->done = 1;
                    tc_sample_clear(&r->cur);
                    r->have = 0;
                    if (emitted) return TC_OK; /* a finished sample is already in out */
                    r->pending_err = TC_OK;
                    return tc_fail(st, "%s", r->pending_msg);
                }
                if (rank >= 0) {
                    free(r->cur.image);
                    r->cur.image = buf;
                    r->cur.image_len = len;
                    r->img_rank = rank;
                    snprintf(r->img_ext, sizeof r->img_ext, "%.7s", ext);
                } else if (want_txt) {
                    r->cur.caption = (char *)buf;
                    r->cur.caption_len = len;
                    r->has_txt = 1;
                } else if (want_json) {
                    r->cur.json = (char *)buf;
                    r->cur.json_len = len;
                } else {
                    char *endp = NULL;
                    long v = strtol((char *)buf, &endp, 10);
                    if (endp != (char *)buf && v >= 0 && v < (1L << 30)) r->cur.label = (int32_t)v;
                    free(buf);
                }
            }
        }
        if (emitted) return TC_OK;
    }
}

/* ---- the byte stream under libarchive ---- */

static la_ssize_t cb_read(struct archive *a, void *ud, const void **buf) {
    tc_shard_reader *r = ud;
    ssize_t k = tc_shard_stream_read(r->stream, r->iobuf, IO_BYTES);
    if (k < 0) {
        r->stream_failed = 1;
        snprintf(r->stream_err, sizeof r->stream_err, "%s", tc_last_error());
        archive_set_error(a, EIO, "%s", r->stream_err);
        return -1;
    }
    *buf = r->iobuf;
    return k;
}

static la_int64_t cb_skip(struct archive *a, void *ud, la_int64_t n) {
    (void)a;
    tc_shard_reader *r = ud;
    off_t k = tc_shard_stream_skip(r->stream, (off_t)n);
    return k < 0 ? 0 : (la_int64_t)k; /* 0: libarchive reads past instead */
}

static tc_status new_archive(tc_shard_reader *r) {
    r->a = archive_read_new();
    if (!r->a) return tc_fail(TC_ERR_OOM, "shard %s: out of memory", r->name);
    if (archive_read_support_format_tar(r->a) != ARCHIVE_OK ||
        archive_read_support_filter_gzip(r->a) < ARCHIVE_WARN)
        return tc_fail(TC_ERR_BACKEND, "shard %s: libarchive: %s", r->name,
                       archive_error_string(r->a) ? archive_error_string(r->a) : "no tar support");
    return TC_OK;
}

/* (re)starts reading r->url from its first byte */
static tc_status attach(tc_shard_reader *r) {
    r->stream_failed = 0;
    r->stream_err[0] = 0;
    r->done = r->ended = 0;
    r->pending_err = TC_OK;
    r->have = 0;
    tc_sample_clear(&r->cur);
    TC_TRY(tc_shard_stream_open(r->url, &r->so, &r->stream));
    TC_TRY(new_archive(r));
    archive_read_set_callback_data(r->a, r);
    archive_read_set_read_callback(r->a, cb_read);
    archive_read_set_skip_callback(r->a, cb_skip);
    if (archive_read_open1(r->a) != ARCHIVE_OK) {
        if (r->stream_failed) return tc_fail(TC_ERR_IO, "%s", r->stream_err);
        return tc_fail(TC_ERR_FORMAT, "shard %s: not a tar archive: %s", r->name,
                       archive_error_string(r->a) ? archive_error_string(r->a) : "?");
    }
    return TC_OK;
}

/* closes the archive and the stream; complete: the archive's end was read */
static tc_status detach(tc_shard_reader *r, int complete) {
    if (r->a) archive_read_free(r->a);
    r->a = NULL;
    tc_status st = tc_shard_stream_close(r->stream, complete);
    r->stream = NULL;
    return st;
}

static tc_shard_reader *reader_new(const char *name) {
    tc_shard_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    tc_shard_display(name, r->name, sizeof r->name);
    r->pending_err = TC_OK;
    return r;
}

void tc_wds_reader_close(tc_shard_reader *r) {
    if (!r) return;
    detach(r, 0);
    tc_sample_clear(&r->cur);
    free(r->iobuf);
    free(r->url);
    free(r);
}

tc_status tc_wds_reader_open_memory(const void *data, size_t len, const char *name,
                                    tc_shard_reader **out) {
    *out = NULL;
    tc_shard_reader *r = reader_new(name);
    if (!r) return tc_fail(TC_ERR_OOM, "shard %s: out of memory", name);
    tc_status st = new_archive(r);
    if (st == TC_OK && archive_read_open_memory(r->a, data, len) != ARCHIVE_OK)
        st = tc_fail(TC_ERR_FORMAT, "shard %s: not a tar archive: %s", r->name,
                     archive_error_string(r->a) ? archive_error_string(r->a) : "?");
    if (st != TC_OK) {
        tc_wds_reader_close(r);
        return st;
    }
    *out = r;
    return TC_OK;
}

static int stop_requested(const tc_shard_reader *r) {
    return r->so.cancel && __atomic_load_n(r->so.cancel, __ATOMIC_RELAXED);
}

/* waits ms milliseconds, returning early when the loader stops */
static void backoff(const tc_shard_reader *r, long ms) {
    while (ms > 0 && !stop_requested(r)) {
        long step = ms < 100 ? ms : 100;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* after a failure of the stream: run it again, or give up with st */
static tc_status retry_or_fail(tc_shard_reader *r, tc_status st) {
    char msg[800];
    snprintf(msg, sizeof msg, "%s", tc_last_error());
    for (;;) {
        if (!r->url || !tc_shard_is_remote(r->url) || r->attempt >= r->so.retries ||
            stop_requested(r))
            return tc_fail(st, "%s%s", msg, r->attempt > 0 && r->url ? " (after all retries)" : "");
        long ms = (long)r->so.backoff_ms << (r->attempt < 20 ? r->attempt : 20);
        if (ms > 600000) ms = 600000; /* at most 10 minutes between two runs */
        r->attempt++;
        if (!r->quiet)
            fprintf(r->log ? r->log : stderr, "tinyclip: data: %s; retry %d of %d in %.1f s\n", msg,
                    r->attempt, r->so.retries, (double)ms / 1000.0);
        backoff(r, ms);
        detach(r, 0);
        r->skip = r->emitted; /* read past what was handed out */
        st = attach(r);
        if (st == TC_OK) return TC_OK;
        snprintf(msg, sizeof msg, "%s", tc_last_error());
    }
}

tc_status tc_wds_reader_open_url(const char *url, int part, const tc_source_opts *o,
                                 tc_shard_reader **out) {
    *out = NULL;
    tc_shard_reader *r = reader_new(url);
    if (!r) return tc_fail(TC_ERR_OOM, "shard: out of memory");
    r->part = part;
    if (o) {
        r->so = o->stream;
        r->log = o->log;
        r->quiet = o->quiet;
    } else {
        tc_stream_opts_init(&r->so);
    }
    r->url = strdup(url);
    r->iobuf = malloc(IO_BYTES);
    tc_status st =
        r->url && r->iobuf ? attach(r) : tc_fail(TC_ERR_OOM, "shard %s: out of memory", r->name);
    if (st != TC_OK) st = retry_or_fail(r, st);
    if (st != TC_OK) {
        tc_wds_reader_close(r);
        return st;
    }
    *out = r;
    return TC_OK;
}

tc_status tc_wds_reader_next(tc_shard_reader *r, tc_sample *out, int *eof) {
    for (;;) {
        tc_status st = next_sample(r, out, eof);
        if (st == TC_OK && !*eof) {
            if (r->skip > 0) { /* handed out before a retry */
                r->skip--;
                tc_sample_clear(out);
                continue;
            }
            r->emitted++;
            return TC_OK;
        }
        if (st == TC_OK) {
            /* the archive's end: a command must also end well. its samples
             * are out, so a failure here is reported, not retried */
            if (r->stream && r->ended) {
                int complete = r->ended;
                st = detach(r, complete);
                if (st != TC_OK) return tc_fail(st, "%s (after its last sample)", tc_last_error());
            }
            return TC_OK;
        }
        if (!r->stream_failed || r->ended) return st;
        if ((st = retry_or_fail(r, st)) != TC_OK) return st;
    }
}
