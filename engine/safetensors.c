#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "json.h"

static const struct {
    const char *name;
    int bits;
} dtypes[TC_DT_COUNT] = {
    [TC_DT_BOOL] = {"BOOL", 8},
    [TC_DT_F4] = {"F4", 4},
    [TC_DT_F6_E2M3] = {"F6_E2M3", 6},
    [TC_DT_F6_E3M2] = {"F6_E3M2", 6},
    [TC_DT_U8] = {"U8", 8},
    [TC_DT_I8] = {"I8", 8},
    [TC_DT_F8_E5M2] = {"F8_E5M2", 8},
    [TC_DT_F8_E4M3] = {"F8_E4M3", 8},
    [TC_DT_F8_E8M0] = {"F8_E8M0", 8},
    [TC_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [TC_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [TC_DT_I16] = {"I16", 16},
    [TC_DT_U16] = {"U16", 16},
    [TC_DT_F16] = {"F16", 16},
    [TC_DT_BF16] = {"BF16", 16},
    [TC_DT_I32] = {"I32", 32},
    [TC_DT_U32] = {"U32", 32},
    [TC_DT_F32] = {"F32", 32},
    [TC_DT_C64] = {"C64", 64},
    [TC_DT_F64] = {"F64", 64},
    [TC_DT_I64] = {"I64", 64},
    [TC_DT_U64] = {"U64", 64},
};

const char *tc_dtype_name(tc_dtype dt) {
    return (unsigned)dt < TC_DT_COUNT ? dtypes[dt].name : "?";
}
int tc_dtype_bits(tc_dtype dt) {
    return (unsigned)dt < TC_DT_COUNT ? dtypes[dt].bits : 0;
}
int tc_dtype_is_float_readable(tc_dtype dt) {
    return dt == TC_DT_F32 || dt == TC_DT_F16 || dt == TC_DT_BF16 || dt == TC_DT_F64;
}

struct tc_safetensors {
    char *source;
    void *map; /* mmap'd file, or NULL for a caller buffer */
    size_t map_len;
    const unsigned char *base;
    size_t size;
    tc_st_tensor *tensors; /* header order */
    int *by_name;          /* indices sorted by name */
    int count;
    char **names; /* owned tensor names */
    char **meta_keys, **meta_values;
    int meta_count;
};

/* ---- fp16 / bf16 ---- */

float tc_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            /* subnormal: value = man * 2^-24, exact in fp32 */
            float v = (float)man * 5.9604644775390625e-08f;
            memcpy(&bits, &v, 4);
            bits |= sign;
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float tc_bfloat_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tc_float_to_bfloat(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7FFFu + ((x >> 16) & 1);
    return (uint16_t)((x + rounding) >> 16);
}

uint16_t tc_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00;  /* NaN */
    if (ax >= 0x477FF000u) return sign | 0x7C00; /* rounds to inf */
    if (ax < 0x38800000u) {
        /* subnormal or zero in fp16: value / 2^-24 rounded to nearest even */
        float a;
        memcpy(&a, &ax, 4);
        float scaled = a * 16777216.0f; /* exact: power of two */
        return sign | (uint16_t)lrintf(scaled);
    }
    uint32_t rounding = 0xFFFu + ((ax >> 13) & 1);
    ax += rounding;
    return sign | (uint16_t)(((ax >> 23) - 112) << 10 | ((ax >> 13) & 0x3FF));
}

/* ---- reading ---- */

void tc_st_close(tc_safetensors *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++)
        free(f->names[i]);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->names);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->tensors);
    free(f->by_name);
    if (f->map) munmap(f->map, f->map_len);
    free(f->source);
    free(f);
}

/* qsort has no context argument; validation runs on one thread per handle,
 * but keep it reentrant by sorting pairs instead */
typedef struct {
    uint64_t begin, end;
    int index;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

typedef struct {
    const char *name;
    int index;
} named;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

static tc_status bad(const tc_safetensors *f, const char *fmt, const char *a, const char *b) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a ? a : "", b ? b : "");
    return tc_fail(TC_ERR_FORMAT, "%s: invalid safetensors file: %s", f->source, msg);
}

static tc_status parse_entry(tc_safetensors *f, const char *name, const tc_json *e,
                             tc_st_tensor *t) {
    if (e->type != TC_JSON_OBJECT)
        return bad(f, "tensor '%s': entry is not an object%s", name, NULL);
    const tc_json *dt = tc_json_get(e, "dtype"), *shape = tc_json_get(e, "shape"),
                  *offs = tc_json_get(e, "data_offsets");
    if (!dt || dt->type != TC_JSON_STRING)
        return bad(f, "tensor '%s': missing or non-string \"dtype\"%s", name, NULL);
    int found = -1;
    for (int i = 0; i < TC_DT_COUNT; i++)
        if (strcmp(dt->string, dtypes[i].name) == 0 && strlen(dtypes[i].name) == dt->string_len)
            found = i;
    if (found < 0) {
        char d[64];
        snprintf(d, sizeof d, "%.40s", dt->string);
        return bad(f, "tensor '%s': unknown dtype \"%s\"", name, d);
    }
    t->dtype = (tc_dtype)found;
    if (!shape || shape->type != TC_JSON_ARRAY)
        return bad(f, "tensor '%s': missing or non-array \"shape\"%s", name, NULL);
    if (shape->count > TC_ST_MAX_DIMS)
        return bad(f, "tensor '%s': more than 8 dimensions%s", name, NULL);
    t->ndim = (int)shape->count;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < shape->count; i++) {
        const tc_json *d = &shape->items[i];
        if (d->type != TC_JSON_NUMBER || !d->is_int || d->integer < 0)
            return bad(f, "tensor '%s': shape entries must be non-negative integers%s", name, NULL);
        t->shape[i] = d->integer;
        uint64_t v = (uint64_t)d->integer;
        if (v != 0 && numel > UINT64_MAX / v)
            overflow = 1;
        else
            numel *= v;
    }
    /* a zero dimension makes the size 0 whatever the overflow of the others */
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0) {
            numel = 0;
            overflow = 0;
        }
    if (overflow || numel > UINT64_MAX / 64)
        return bad(f, "tensor '%s': shape too large (element count overflows)%s", name, NULL);
    t->numel = numel;
    uint64_t bits = numel * (uint64_t)dtypes[t->dtype].bits;
    if (bits % 8 != 0)
        return bad(f, "tensor '%s': size in bits is not a multiple of 8%s", name, NULL);
    if (!offs || offs->type != TC_JSON_ARRAY || offs->count != 2)
        return bad(f, "tensor '%s': \"data_offsets\" must be [BEGIN, END]%s", name, NULL);
    for (int i = 0; i < 2; i++) {
        const tc_json *o = &offs->items[i];
        if (o->type != TC_JSON_NUMBER || !o->is_int || o->integer < 0)
            return bad(f, "tensor '%s': data_offsets must be non-negative integers%s", name, NULL);
    }
    t->begin = (uint64_t)offs->items[0].integer;
    t->end = (uint64_t)offs->items[1].integer;
    if (t->end < t->begin) return bad(f, "tensor '%s': data_offsets END < BEGIN%s", name, NULL);
    if (t->end - t->begin != bits / 8) {
        char m[160];
        snprintf(m, sizeof m, "%llu bytes for dtype %s and its shape, but data_offsets span %llu",
                 (unsigned long long)(bits / 8), dtypes[t->dtype].name,
                 (unsigned long long)(t->end - t->begin));
        return bad(f, "tensor '%s': size mismatch: %s", name, m);
    }
    return TC_OK;
}

static tc_status validate(tc_safetensors *f) {
    if (f->size < 8)
        return tc_fail(TC_ERR_FORMAT,
                       "%s: invalid safetensors file: %zu bytes, shorter than the 8-byte header "
                       "length",
                       f->source, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | f->base[i];
    if (n > TC_ST_MAX_HEADER)
        return tc_fail(TC_ERR_FORMAT,
                       "%s: invalid safetensors file: header length %llu exceeds the limit of "
                       "100000000 bytes",
                       f->source, (unsigned long long)n);
    if (n > f->size - 8)
        return tc_fail(TC_ERR_FORMAT,
                       "%s: invalid safetensors file: header length %llu runs past the end of "
                       "the file (%zu bytes)",
                       f->source, (unsigned long long)n, f->size);
    const char *hdr = (const char *)f->base + 8;
    if (n == 0 || hdr[0] != '{')
        return tc_fail(TC_ERR_FORMAT,
                       "%s: invalid safetensors file: header does not start with '{'", f->source);
    tc_json *root = NULL;
    tc_status st = tc_json_parse(hdr, (size_t)n, f->source, &root);
    if (st != TC_OK) return tc_fail_context(st, "safetensors header");
    if (root->type != TC_JSON_OBJECT) {
        tc_json_free(root);
        return bad(f, "header is not a JSON object%s%s", NULL, NULL);
    }
    size_t cap = root->count ? root->count : 1;
    f->tensors = calloc(cap, sizeof *f->tensors);
    f->names = calloc(cap, sizeof *f->names);
    f->by_name = calloc(cap, sizeof *f->by_name);
    span *spans = calloc(cap, sizeof *spans);
    named *nm = calloc(cap, sizeof *nm);
    if (!f->tensors || !f->names || !f->by_name || !spans || !nm) {
        st = tc_fail(TC_ERR_OOM, "%s: out of memory reading the header", f->source);
        goto done;
    }
    int seen_meta = 0;
    for (size_t i = 0; i < root->count; i++) {
        const char *key = root->keys[i];
        if (strlen(key) != root->key_lens[i]) {
            st = bad(f, "tensor name contains a NUL character%s%s", NULL, NULL);
            goto done;
        }
        const tc_json *e = &root->items[i];
        if (strcmp(key, "__metadata__") == 0) {
            if (seen_meta++) {
                st = bad(f, "duplicate \"__metadata__\"%s%s", NULL, NULL);
                goto done;
            }
            if (e->type != TC_JSON_OBJECT) {
                st = bad(f, "\"__metadata__\" is not an object%s%s", NULL, NULL);
                goto done;
            }
            size_t mc = e->count ? e->count : 1;
            f->meta_keys = calloc(mc, sizeof(char *));
            f->meta_values = calloc(mc, sizeof(char *));
            if (!f->meta_keys || !f->meta_values) {
                st = tc_fail(TC_ERR_OOM, "%s: out of memory reading the header", f->source);
                goto done;
            }
            for (size_t k = 0; k < e->count; k++) {
                if (e->items[k].type != TC_JSON_STRING) {
                    st = bad(f, "__metadata__ value of '%s' is not a string%s", e->keys[k], NULL);
                    goto done;
                }
                f->meta_keys[k] = strdup(e->keys[k]);
                f->meta_values[k] = strdup(e->items[k].string);
                f->meta_count = (int)k + 1;
                if (!f->meta_keys[k] || !f->meta_values[k]) {
                    st = tc_fail(TC_ERR_OOM, "%s: out of memory reading the header", f->source);
                    goto done;
                }
            }
            continue;
        }
        if (f->count >= 0x7FFFFFFF) {
            st = bad(f, "too many tensors%s%s", NULL, NULL);
            goto done;
        }
        tc_st_tensor *t = &f->tensors[f->count];
        st = parse_entry(f, key, e, t);
        if (st != TC_OK) goto done;
        f->names[f->count] = strdup(key);
        if (!f->names[f->count]) {
            st = tc_fail(TC_ERR_OOM, "%s: out of memory reading the header", f->source);
            goto done;
        }
        t->name = f->names[f->count];
        spans[f->count] = (span){t->begin, t->end, f->count};
        nm[f->count] = (named){t->name, f->count};
        f->count++;
    }
    /* names first: a name given twice is a duplicate, whatever its offsets */
    qsort(nm, (size_t)f->count, sizeof *nm, cmp_named);
    for (int i = 0; i < f->count; i++) {
        if (i > 0 && strcmp(nm[i].name, nm[i - 1].name) == 0) {
            st = bad(f, "duplicate tensor name '%s'%s", nm[i].name, NULL);
            goto done;
        }
        f->by_name[i] = nm[i].index;
    }
    /* contiguity: sorted by offsets, each tensor starts where the last ended */
    qsort(spans, (size_t)f->count, sizeof *spans, cmp_span);
    uint64_t expect = 0;
    for (int i = 0; i < f->count; i++) {
        if (spans[i].begin != expect) {
            char m[160];
            snprintf(m, sizeof m, "starts at byte %llu but the previous tensor ends at %llu (%s)",
                     (unsigned long long)spans[i].begin, (unsigned long long)expect,
                     spans[i].begin > expect ? "a hole" : "overlapping");
            st = bad(f, "tensor '%s' %s", f->tensors[spans[i].index].name, m);
            goto done;
        }
        expect = spans[i].end;
    }
    uint64_t data_len = f->size - 8 - n;
    if (expect != data_len) {
        char m[200];
        snprintf(
            m, sizeof m, "tensors end at byte %llu of the data but the file holds %llu bytes %s",
            (unsigned long long)expect, (unsigned long long)data_len,
            expect > data_len ? "(truncated file or offsets out of range)" : "(trailing bytes)");
        st = bad(f, "%s%s", m, NULL);
        goto done;
    }
    for (int i = 0; i < f->count; i++)
        f->tensors[i].data = f->base + 8 + n + f->tensors[i].begin;
done:
    free(spans);
    free(nm);
    tc_json_free(root);
    return st;
}

tc_status tc_st_open_memory(tc_safetensors **out, const void *data, size_t len,
                            const char *source) {
    *out = NULL;
    tc_safetensors *f = calloc(1, sizeof *f);
    if (!f) return tc_fail(TC_ERR_OOM, "out of memory");
    f->source = strdup(source ? source : "safetensors");
    f->base = data;
    f->size = len;
    if (!f->source) {
        tc_st_close(f);
        return tc_fail(TC_ERR_OOM, "out of memory");
    }
    tc_status st = validate(f);
    if (st != TC_OK) {
        tc_st_close(f);
        return st;
    }
    *out = f;
    return TC_OK;
}

tc_status tc_st_open(tc_safetensors **out, const char *path) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tc_fail(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tc_fail(TC_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            tc_status st = tc_fail(TC_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            return st;
        }
    }
    close(fd);
    static const unsigned char empty[1];
    tc_safetensors *f;
    tc_status st = tc_st_open_memory(&f, map ? map : empty, size, path);
    if (st != TC_OK) {
        if (map) munmap(map, size);
        return st;
    }
    f->map = map;
    f->map_len = size;
    *out = f;
    return TC_OK;
}

const char *tc_st_source(const tc_safetensors *f) {
    return f->source;
}
int tc_st_count(const tc_safetensors *f) {
    return f->count;
}
const tc_st_tensor *tc_st_tensor_at(const tc_safetensors *f, int i) {
    return (i >= 0 && i < f->count) ? &f->tensors[i] : NULL;
}

const tc_st_tensor *tc_st_find(const tc_safetensors *f, const char *name) {
    int lo = 0, hi = f->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const tc_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

tc_status tc_st_tensor_to_f32(const tc_safetensors *f, const tc_st_tensor *t, float *dst) {
    const unsigned char *src = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case TC_DT_F32: memcpy(dst, src, n * 4); return TC_OK;
    case TC_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = tc_half_to_float(h);
        }
        return TC_OK;
    case TC_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = tc_bfloat_to_float(h);
        }
        return TC_OK;
    case TC_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return TC_OK;
    default:
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "%s: tensor '%s': dtype %s cannot be read as floating point (F32, F16, BF16 "
                       "or F64 expected)",
                       f->source, t->name, tc_dtype_name(t->dtype));
    }
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static tc_status find_shaped(const tc_safetensors *f, const char *name, int ndim,
                             const int64_t *shape, const tc_st_tensor **out) {
    const tc_st_tensor *t = tc_st_find(f, name);
    if (!t) return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' is missing", f->source, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        format_shape(want, sizeof want, ndim, shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", f->source, name,
                       got, want);
    }
    *out = t;
    return TC_OK;
}

tc_status tc_st_read_f32(const tc_safetensors *f, const char *name, int ndim, const int64_t *shape,
                         float *dst) {
    const tc_st_tensor *t;
    TC_TRY(find_shaped(f, name, ndim, shape, &t));
    return tc_st_tensor_to_f32(f, t, dst);
}

tc_status tc_st_read_i32(const tc_safetensors *f, const char *name, int ndim, const int64_t *shape,
                         int32_t *dst) {
    const tc_st_tensor *t;
    TC_TRY(find_shaped(f, name, ndim, shape, &t));
    const unsigned char *src = t->data;
    size_t n = (size_t)t->numel;
    if (t->dtype == TC_DT_I32) {
        memcpy(dst, src, n * 4);
        return TC_OK;
    }
    if (t->dtype != TC_DT_I64)
        return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected I32 or I64",
                       f->source, name, tc_dtype_name(t->dtype));
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, src + 8 * i, 8);
        if (v < INT32_MIN || v > INT32_MAX)
            return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s': element %zu (%lld) does not fit int32",
                           f->source, name, i, (long long)v);
        dst[i] = (int32_t)v;
    }
    return TC_OK;
}

int tc_st_metadata_count(const tc_safetensors *f) {
    return f->meta_count;
}
void tc_st_metadata_at(const tc_safetensors *f, int i, const char **key, const char **value) {
    *key = *value = NULL;
    if (i < 0 || i >= f->meta_count) return;
    *key = f->meta_keys[i];
    *value = f->meta_values[i];
}
const char *tc_st_metadata(const tc_safetensors *f, const char *key) {
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

/* ---- writing ---- */

tc_status tc_st_write(const char *path, const tc_st_write_tensor *tensors, int n,
                      const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    tc_sbuf h = {0};
    uint64_t *sizes = calloc(n > 0 ? (size_t)n : 1, sizeof *sizes);
    if (!sizes) return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    tc_sbuf_puts(&h, "{");
    int first = 1;
    if (n_meta > 0) {
        tc_sbuf_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) tc_sbuf_puts(&h, ",");
            tc_sbuf_json_string(&h, meta_keys[i], strlen(meta_keys[i]));
            tc_sbuf_puts(&h, ":");
            tc_sbuf_json_string(&h, meta_values[i], strlen(meta_values[i]));
        }
        tc_sbuf_puts(&h, "}");
        first = 0;
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const tc_st_write_tensor *t = &tensors[i];
        if ((unsigned)t->dtype >= TC_DT_COUNT || t->ndim < 0 || t->ndim > TC_ST_MAX_DIMS) {
            free(sizes);
            tc_sbuf_free(&h);
            return tc_fail(TC_ERR_ARG, "%s: tensor '%s': bad dtype or rank", path, t->name);
        }
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 ||
                (t->shape[d] > 0 && numel > UINT64_MAX / 64 / (uint64_t)t->shape[d])) {
                free(sizes);
                tc_sbuf_free(&h);
                return tc_fail(TC_ERR_ARG, "%s: tensor '%s': bad shape", path, t->name);
            }
            numel *= (uint64_t)t->shape[d];
        }
        uint64_t bits = numel * (uint64_t)dtypes[t->dtype].bits;
        sizes[i] = (bits + 7) / 8;
        if (!first) tc_sbuf_puts(&h, ",");
        first = 0;
        tc_sbuf_json_string(&h, t->name, strlen(t->name));
        tc_sbuf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtypes[t->dtype].name);
        for (int d = 0; d < t->ndim; d++)
            tc_sbuf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        tc_sbuf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                       (unsigned long long)(offset + sizes[i]));
        offset += sizes[i];
    }
    tc_sbuf_puts(&h, "}");
    while (h.len % 8 != 0)
        tc_sbuf_puts(&h, " ");
    if (h.oom) {
        free(sizes);
        tc_sbuf_free(&h);
        return tc_fail(TC_ERR_OOM, "%s: out of memory building the header", path);
    }
    unsigned char len8[8];
    uint64_t hl = h.len;
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(hl >> (8 * i));
    tc_atomic_file *af = NULL;
    tc_status st = tc_atomic_open(&af, path);
    if (st == TC_OK) st = tc_atomic_write(af, len8, 8);
    if (st == TC_OK) st = tc_atomic_write(af, h.data, h.len);
    for (int i = 0; st == TC_OK && i < n; i++)
        if (sizes[i]) st = tc_atomic_write(af, tensors[i].data, (size_t)sizes[i]);
    if (st == TC_OK)
        st = tc_atomic_commit(af);
    else
        tc_atomic_abort(af);
    free(sizes);
    tc_sbuf_free(&h);
    return st;
}
