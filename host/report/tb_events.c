/* TensorBoard event-file writer and reader (contract in tb_events.h). */
#include "tb_events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "fileio.h"

struct tc_tb_writer {
    FILE *f;
    char path[1024];
};

/* ---------------------------------------------------------------- crc32c */

static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = 1;
}

uint32_t tc_crc32c(const void *data, size_t len) {
    if (!crc_ready) crc_init(); /* idempotent: a race writes the same table */
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t tc_crc32c_mask(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

/* ---------------------------------------------------------------- protobuf */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static int put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) return -1;
    memcpy(b->p + b->n, d, n);
    b->n += n;
    return 0;
}

static int put_varint(buf *b, uint64_t v) {
    uint8_t t[10];
    int n = 0;
    do {
        t[n] = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v) t[n] |= 0x80;
        n++;
    } while (v);
    return put(b, t, (size_t)n);
}

static int put_fixed64(buf *b, uint64_t v) {
    uint8_t t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    return put(b, t, 8);
}

static int put_fixed32(buf *b, uint32_t v) {
    uint8_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    return put(b, t, 4);
}

static int put_double(buf *b, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return put_fixed64(b, u);
}

/* field key: (number << 3) | wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32) */
static int put_key(buf *b, int field, int wire) {
    return put_varint(b, (uint64_t)((field << 3) | wire));
}

static int put_bytes(buf *b, int field, const void *d, size_t n) {
    if (put_key(b, field, 2) || put_varint(b, n)) return -1;
    return put(b, d, n);
}

/* ---------------------------------------------------------------- writer */

static tc_status write_record(tc_tb_writer *w, const uint8_t *data, size_t n) {
    uint8_t head[12];
    uint64_t len = n;
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)(len >> (8 * i));
    uint32_t lc = tc_crc32c_mask(tc_crc32c(head, 8));
    for (int i = 0; i < 4; i++)
        head[8 + i] = (uint8_t)(lc >> (8 * i));
    uint32_t dc = tc_crc32c_mask(tc_crc32c(data, n));
    uint8_t tail[4];
    for (int i = 0; i < 4; i++)
        tail[i] = (uint8_t)(dc >> (8 * i));
    if (fwrite(head, 1, 12, w->f) != 12 || fwrite(data, 1, n, w->f) != n ||
        fwrite(tail, 1, 4, w->f) != 4)
        return tc_fail(TC_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    return TC_OK;
}

static double now_seconds(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

tc_status tc_tb_open(tc_tb_writer **out, const char *dir) {
    static int counter;
    *out = NULL;
    TC_TRY(tc_mkdir_p(dir));
    tc_tb_writer *w = calloc(1, sizeof *w);
    if (!w) return tc_fail(TC_ERR_OOM, "tensorboard: out of memory");
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
        if (*p == '/') *p = '_';
    int n = snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s.%d.%d", dir,
                     (long long)now_seconds(), host, (int)getpid(), counter++);
    if (n < 0 || (size_t)n >= sizeof w->path) {
        free(w);
        return tc_fail(TC_ERR_ARG, "tensorboard: path too long under %s", dir);
    }
    w->f = fopen(w->path, "wb");
    if (!w->f) {
        tc_status s = tc_fail(TC_ERR_IO, "%s: cannot create: %s", w->path, strerror(errno));
        free(w);
        return s;
    }
    uint8_t mem[64];
    buf b = {mem, 0, sizeof mem};
    static const char version[] = "brain.Event:2";
    if (put_key(&b, 1, 1) || put_double(&b, now_seconds()) ||
        put_bytes(&b, 3, version, sizeof version - 1)) {
        tc_tb_close(w);
        return tc_fail(TC_ERR_ARG, "tensorboard: header encoding failed");
    }
    tc_status s = write_record(w, b.p, b.n);
    if (s == TC_OK) s = tc_tb_flush(w, 0);
    if (s != TC_OK) {
        tc_tb_close(w);
        return s;
    }
    *out = w;
    return TC_OK;
}

tc_status tc_tb_scalar_at(tc_tb_writer *w, const char *tag, int64_t step, float value,
                          double wall_time) {
    size_t tl = strlen(tag);
    if (tl == 0 || tl > 1000) return tc_fail(TC_ERR_ARG, "tensorboard: tag of %zu characters", tl);
    uint8_t val_mem[1100], sum_mem[1120], ev_mem[1160];
    buf val = {val_mem, 0, sizeof val_mem}, sum = {sum_mem, 0, sizeof sum_mem},
        ev = {ev_mem, 0, sizeof ev_mem};
    uint32_t fv;
    memcpy(&fv, &value, 4);
    int bad = put_bytes(&val, 1, tag, tl) || put_key(&val, 2, 5) || put_fixed32(&val, fv);
    bad = bad || put_bytes(&sum, 1, val.p, val.n);
    bad = bad || put_key(&ev, 1, 1) || put_double(&ev, wall_time) || put_key(&ev, 2, 0) ||
          put_varint(&ev, (uint64_t)step) || put_bytes(&ev, 5, sum.p, sum.n);
    if (bad)
        return tc_fail(TC_ERR_ARG, "tensorboard: event encoding overflow for tag '%.40s'", tag);
    return write_record(w, ev.p, ev.n);
}

tc_status tc_tb_scalar(tc_tb_writer *w, const char *tag, int64_t step, float value) {
    return tc_tb_scalar_at(w, tag, step, value, now_seconds());
}

tc_status tc_tb_flush(tc_tb_writer *w, int sync) {
    if (fflush(w->f) != 0)
        return tc_fail(TC_ERR_IO, "%s: flush failed: %s", w->path, strerror(errno));
    if (sync && fsync(fileno(w->f)) != 0)
        return tc_fail(TC_ERR_IO, "%s: fsync failed: %s", w->path, strerror(errno));
    return TC_OK;
}

tc_status tc_tb_close(tc_tb_writer *w) {
    if (!w) return TC_OK;
    tc_status s = TC_OK;
    if (w->f && fclose(w->f) != 0)
        s = tc_fail(TC_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    free(w);
    return s;
}

const char *tc_tb_path(const tc_tb_writer *w) {
    return w->path;
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    const uint8_t *p, *end;
} rd;

static int get_varint(rd *r, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

static int get_fixed(rd *r, int n, uint64_t *v) {
    if (r->end - r->p < n) return -1;
    *v = 0;
    for (int i = 0; i < n; i++)
        *v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return 0;
}

/* skips a field of the given wire type; sets *sub to a length-delimited payload */
static int get_field(rd *r, int wire, uint64_t *v, rd *sub) {
    switch (wire) {
    case 0: return get_varint(r, v);
    case 1: return get_fixed(r, 8, v);
    case 5: return get_fixed(r, 4, v);
    case 2:
        if (get_varint(r, v) || *v > (uint64_t)(r->end - r->p)) return -1;
        sub->p = r->p;
        sub->end = r->p + *v;
        r->p += *v;
        return 0;
    default: return -1;
    }
}

static int parse_value(rd r, tc_tb_event *ev) {
    while (r.p < r.end) {
        uint64_t key, v;
        rd sub = {0, 0};
        if (get_varint(&r, &key) || get_field(&r, (int)(key & 7), &v, &sub)) return -1;
        int field = (int)(key >> 3), wire = (int)(key & 7);
        if (field == 1 && wire == 2) {
            size_t n = (size_t)(sub.end - sub.p);
            if (n >= sizeof ev->tag) n = sizeof ev->tag - 1;
            memcpy(ev->tag, sub.p, n);
            ev->tag[n] = 0;
        } else if (field == 2 && wire == 5) {
            uint32_t u = (uint32_t)v;
            memcpy(&ev->value, &u, 4);
            ev->has_scalar = 1;
        }
    }
    return 0;
}

static int parse_event(rd r, tc_tb_event *ev) {
    memset(ev, 0, sizeof *ev);
    while (r.p < r.end) {
        uint64_t key, v;
        rd sub = {0, 0};
        if (get_varint(&r, &key) || get_field(&r, (int)(key & 7), &v, &sub)) return -1;
        int field = (int)(key >> 3), wire = (int)(key & 7);
        if (field == 1 && wire == 1)
            memcpy(&ev->wall_time, &v, 8);
        else if (field == 2 && wire == 0)
            ev->step = (int64_t)v;
        else if (field == 3 && wire == 2) {
            size_t n = (size_t)(sub.end - sub.p);
            if (n >= sizeof ev->file_version) n = sizeof ev->file_version - 1;
            memcpy(ev->file_version, sub.p, n);
            ev->file_version[n] = 0;
            ev->has_file_version = 1;
        } else if (field == 5 && wire == 2) {
            /* Summary: the first Value */
            while (sub.p < sub.end) {
                uint64_t k2, v2;
                rd val = {0, 0};
                if (get_varint(&sub, &k2) || get_field(&sub, (int)(k2 & 7), &v2, &val)) return -1;
                if ((k2 >> 3) == 1 && (k2 & 7) == 2 && !ev->has_scalar && parse_value(val, ev))
                    return -1;
            }
        }
    }
    return 0;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

tc_status tc_tb_parse(const uint8_t *data, size_t len, int (*fn)(void *, const tc_tb_event *),
                      void *user) {
    size_t off = 0;
    while (off < len) {
        if (len - off < 12)
            return tc_fail(TC_ERR_FORMAT, "event file: truncated record header at byte %zu", off);
        uint64_t n = 0;
        for (int i = 0; i < 8; i++)
            n |= (uint64_t)data[off + i] << (8 * i);
        if (tc_crc32c_mask(tc_crc32c(data + off, 8)) != le32(data + off + 8))
            return tc_fail(TC_ERR_FORMAT, "event file: bad length CRC at byte %zu", off);
        if (n > len - off - 12 || len - off - 12 - n < 4)
            return tc_fail(TC_ERR_FORMAT, "event file: record at byte %zu runs past the end", off);
        const uint8_t *d = data + off + 12;
        if (tc_crc32c_mask(tc_crc32c(d, (size_t)n)) != le32(d + n))
            return tc_fail(TC_ERR_FORMAT, "event file: bad data CRC in the record at byte %zu",
                           off);
        tc_tb_event ev;
        rd r = {d, d + n};
        if (parse_event(r, &ev))
            return tc_fail(TC_ERR_FORMAT, "event file: malformed Event in the record at byte %zu",
                           off);
        if (fn && fn(user, &ev)) return TC_OK;
        off += 12 + (size_t)n + 4;
    }
    return TC_OK;
}
