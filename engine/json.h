/* a small JSON reader into a tree (DOM) and a string builder for writing
 * JSON. the reader is safe on hostile input: nesting depth is bounded,
 * strings must be valid UTF-8 with valid escapes (surrogate pairs joined),
 * numbers are checked for range, and every error names the source, line and
 * column. objects keep their keys in file order and may hold duplicate keys;
 * callers that care (safetensors, configs) reject duplicates themselves. */
#ifndef TC_JSON_H
#define TC_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define TC_JSON_MAX_DEPTH 64
/* a tree node costs ~80 bytes; bounding the count bounds the memory a small
 * hostile input can make the parser allocate (a safetensors header of 100 MB
 * holds far fewer values than this in any real file) */
#define TC_JSON_MAX_VALUES 4000000

typedef enum {
    TC_JSON_NULL = 0,
    TC_JSON_BOOL,
    TC_JSON_NUMBER,
    TC_JSON_STRING,
    TC_JSON_ARRAY,
    TC_JSON_OBJECT
} tc_json_type;

typedef struct tc_json tc_json;
struct tc_json {
    tc_json_type type;
    int boolean;     /* TC_JSON_BOOL */
    double number;   /* TC_JSON_NUMBER (finite) */
    int is_int;      /* the literal had no fraction/exponent and fits int64 */
    int64_t integer; /* valid when is_int */
    char *string;    /* TC_JSON_STRING: UTF-8, NUL-terminated (may contain NUL: see len) */
    size_t string_len;
    tc_json *items; /* array elements / object values */
    char **keys;    /* object keys, NUL-terminated UTF-8 */
    size_t *key_lens;
    size_t count;
};

/* parses exactly one JSON value (surrounding whitespace allowed; for
 * safetensors headers trailing spaces are whitespace too). `source` names
 * the input in error messages. *out is malloc'd; free with tc_json_free. */
tc_status tc_json_parse(const char *text, size_t len, const char *source, tc_json **out);
void tc_json_free(tc_json *v);

/* first value under key in an object; NULL when absent or v is not an object */
const tc_json *tc_json_get(const tc_json *v, const char *key);
const char *tc_json_type_name(tc_json_type t);

/* growable string for writing JSON and messages; on allocation failure it
 * sets oom and drops further appends, checked once at the end */
typedef struct {
    char *data;
    size_t len, cap;
    int oom;
} tc_sbuf;

void tc_sbuf_append(tc_sbuf *b, const char *s, size_t n);
void tc_sbuf_puts(tc_sbuf *b, const char *s);
void tc_sbuf_printf(tc_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* appends s (n bytes) as a quoted JSON string, escaping as RFC 8259 asks */
void tc_sbuf_json_string(tc_sbuf *b, const char *s, size_t n);
/* appends a double so that it parses back to the same value ("%.17g", with
 * integral values written without exponent when small) */
void tc_sbuf_json_number(tc_sbuf *b, double x);
/* text (e.g. a JSON document) with `indent` after each of its inner newlines
 * and without its final newline, to nest it inside another document */
void tc_sbuf_indented(tc_sbuf *b, const char *text, const char *indent);
void tc_sbuf_free(tc_sbuf *b);
/* hands over the string (NUL-terminated) or fails with TC_ERR_OOM */
tc_status tc_sbuf_finish(tc_sbuf *b, char **out);

#endif
