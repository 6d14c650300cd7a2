/* safetensors files (huggingface/safetensors format): a u64 little-endian
 * header length N, N bytes of JSON, then the tensor bytes.
 *
 * reading maps the file and validates it completely before anything is
 * returned: N <= 100,000,000 and inside the file, the header is a JSON object
 * starting with '{', every entry has a known dtype, a shape of non-negative
 * integers whose byte size (checked for overflow) equals END-BEGIN, offsets
 * sorted are contiguous from 0 without holes or overlap, 8+N+last END equals
 * the file size, names are unique, __metadata__ maps strings to strings.
 * F32, F16, BF16 (and F64) read as fp32; I32/I64 (and other dtypes) are
 * available as raw bytes.
 *
 * writing emits __metadata__ first, pads the header with spaces to a multiple
 * of 8, and lays tensors out in the order given (our own files use the
 * parameter layout's memory order, which is open_clip key order), through an
 * atomic write. */
#ifndef TC_SAFETENSORS_H
#define TC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define TC_ST_MAX_HEADER 100000000ull
#define TC_ST_MAX_DIMS 8

typedef enum {
    TC_DT_BOOL,
    TC_DT_F4,
    TC_DT_F6_E2M3,
    TC_DT_F6_E3M2,
    TC_DT_U8,
    TC_DT_I8,
    TC_DT_F8_E5M2,
    TC_DT_F8_E4M3,
    TC_DT_F8_E8M0,
    TC_DT_F8_E4M3FNUZ,
    TC_DT_F8_E5M2FNUZ,
    TC_DT_I16,
    TC_DT_U16,
    TC_DT_F16,
    TC_DT_BF16,
    TC_DT_I32,
    TC_DT_U32,
    TC_DT_F32,
    TC_DT_C64,
    TC_DT_F64,
    TC_DT_I64,
    TC_DT_U64,
    TC_DT_COUNT
} tc_dtype;

const char *tc_dtype_name(tc_dtype dt);
int tc_dtype_bits(tc_dtype dt);
/* 1 for the dtypes tc_st_read_f32 converts: F32, F16, BF16, F64 */
int tc_dtype_is_float_readable(tc_dtype dt);

typedef struct {
    const char *name; /* owned by the file handle */
    tc_dtype dtype;
    int ndim;
    int64_t shape[TC_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* byte offsets in the data buffer */
    const void *data;    /* into the mapping; not necessarily aligned */
} tc_st_tensor;

typedef struct tc_safetensors tc_safetensors;

/* maps and validates a file; errors name the file */
tc_status tc_st_open(tc_safetensors **out, const char *path);
/* validates a buffer the caller keeps alive while the handle lives (fuzzing,
 * tests); source names it in messages */
tc_status tc_st_open_memory(tc_safetensors **out, const void *data, size_t len, const char *source);
void tc_st_close(tc_safetensors *f);

const char *tc_st_source(const tc_safetensors *f);
/* tensors in header order */
int tc_st_count(const tc_safetensors *f);
const tc_st_tensor *tc_st_tensor_at(const tc_safetensors *f, int i);
/* NULL when absent */
const tc_st_tensor *tc_st_find(const tc_safetensors *f, const char *name);

/* converts a float tensor to fp32 into dst (t->numel floats); other dtypes
 * fail with a message naming the tensor and the file */
tc_status tc_st_tensor_to_f32(const tc_safetensors *f, const tc_st_tensor *t, float *dst);
/* reads tensor `name` as fp32 after checking its shape equals shape[0..ndim)
 * (error naming the tensor, file and both shapes otherwise) */
tc_status tc_st_read_f32(const tc_safetensors *f, const char *name, int ndim, const int64_t *shape,
                         float *dst);

/* reads an I32 or I64 tensor (token ids, labels) into int32 after checking
 * its shape; I64 values outside the int32 range are refused by name */
tc_status tc_st_read_i32(const tc_safetensors *f, const char *name, int ndim, const int64_t *shape,
                         int32_t *dst);

/* __metadata__ entries (in file order); tc_st_metadata returns NULL when the
 * key is absent */
int tc_st_metadata_count(const tc_safetensors *f);
void tc_st_metadata_at(const tc_safetensors *f, int i, const char **key, const char **value);
const char *tc_st_metadata(const tc_safetensors *f, const char *key);

/* ---- writing ---- */
typedef struct {
    const char *name;
    tc_dtype dtype; /* any; the bytes are written as given (little-endian host) */
    int ndim;
    int64_t shape[TC_ST_MAX_DIMS];
    const void *data; /* numel * element size bytes */
} tc_st_write_tensor;

/* writes tensors in the given order with __metadata__ from meta_keys /
 * meta_values (n_meta pairs, may be 0). atomic. */
tc_status tc_st_write(const char *path, const tc_st_write_tensor *tensors, int n,
                      const char *const *meta_keys, const char *const *meta_values, int n_meta);

/* fp16 / bf16 conversions (round to nearest even), used by tests and writers */
float tc_half_to_float(uint16_t h);
float tc_bfloat_to_float(uint16_t h);
uint16_t tc_float_to_half(float f);
uint16_t tc_float_to_bfloat(float f);

#endif
