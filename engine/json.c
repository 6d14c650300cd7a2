#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t len, pos;
    const char *source;
    int depth;
    size_t values;
} parser;

static tc_status perr(parser *p, const char *msg) {
    /* line and column of the current position, 1-based */
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p->pos && i < p->len; i++) {
        if (p->s[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return tc_fail(TC_ERR_FORMAT, "%s: invalid JSON at line %zu column %zu: %s", p->source, line,
                   col, msg);
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            p->pos++;
        else
            break;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(parser *p, unsigned *out) {
    if (p->len - p->pos < 4) return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + i]);
        if (h < 0) return 0;
        v = v * 16 + (unsigned)h;
    }
    p->pos += 4;
    *out = v;
    return 1;
}

static size_t put_utf8(char *dst, unsigned cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* length of a valid UTF-8 sequence at s (n bytes available), 0 if invalid */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
        k = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* overlong forms, surrogates and values past U+10FFFF */
    if ((k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k;
}

/* parses a string at p->pos (the opening quote); the decoded text is never
 * longer than the escaped text, so one allocation of the raw length works */
static tc_status parse_string(parser *p, char **out, size_t *out_len) {
    p->pos++; /* opening quote */
    size_t start = p->pos, end = start;
    /* find the closing quote to size the buffer */
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\') end++;
        end++;
    }
    if (end >= p->len) {
        p->pos = p->len;
        return perr(p, "unterminated string");
    }
    char *buf = malloc(end - start + 1);
    if (!buf) return tc_fail(TC_ERR_OOM, "%s: out of memory parsing JSON", p->source);
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(buf);
            return perr(p, "control character in string");
        }
        if (c == '\\') {
            p->pos++;
            char e = p->s[p->pos++];
            switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                unsigned cp;
                if (!read_hex4(p, &cp) || p->pos > end) {
                    free(buf);
                    return perr(p, "bad \\u escape");
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (p->pos + 2 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                        free(buf);
                        return perr(p, "unpaired surrogate in \\u escape");
                    }
                    p->pos += 2;
                    if (!read_hex4(p, &lo) || p->pos > end || lo < 0xDC00 || lo > 0xDFFF) {
                        free(buf);
                        return perr(p, "unpaired surrogate in \\u escape");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    free(buf);
                    return perr(p, "unpaired surrogate in \\u escape");
                }
                /* \u escapes of 6 bytes decode to at most 4 (12 bytes for a pair) */
                n += put_utf8(buf + n, cp);
                break;
            }
            default:
                p->pos--;
                free(buf);
                return perr(p, "bad escape in string");
            }
        } else {
            size_t k = utf8_seq((const unsigned char *)p->s + p->pos, end - p->pos);
            if (k == 0) {
                free(buf);
                return perr(p, "invalid UTF-8 in string");
            }
            memcpy(buf + n, p->s + p->pos, k);
            n += k;
            p->pos += k;
        }
    }
    p->pos = end + 1;
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return TC_OK;
}

static tc_status parse_number(parser *p, tc_json *v) {
    size_t start = p->pos;
    const char *s = p->s;
    int is_int = 1;
    if (p->pos < p->len && s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len) return perr(p, "truncated number");
    if (s[p->pos] == '0') {
        p->pos++;
    } else if (s[p->pos] >= '1' && s[p->pos] <= '9') {
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
            p->pos++;
    } else {
        return perr(p, "bad number");
    }
    if (p->pos < p->len && s[p->pos] == '.') {
        is_int = 0;
        p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
            p->pos++;
        if (p->pos == d) return perr(p, "bad number: digits expected after '.'");
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        is_int = 0;
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
            p->pos++;
        if (p->pos == d) return perr(p, "bad number: digits expected in exponent");
    }
    size_t n = p->pos - start;
    if (n > 512) {
        p->pos = start;
        return perr(p, "number literal too long");
    }
    char tmp[520];
    memcpy(tmp, s + start, n);
    tmp[n] = 0;
    errno = 0;
    double x = strtod(tmp, NULL);
    if (!isfinite(x)) {
        p->pos = start;
        return perr(p, "number out of range");
    }
    v->type = TC_JSON_NUMBER;
    v->number = x;
    if (is_int) {
        errno = 0;
        long long ll = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            v->is_int = 1;
            v->integer = (int64_t)ll;
        }
    }
    return TC_OK;
}

static tc_status parse_value(parser *p, tc_json *v);

static tc_status grow(parser *p, tc_json *v, size_t *cap, int object) {
    if (v->count < *cap) return TC_OK;
    size_t nc = *cap ? *cap * 2 : 4;
    tc_json *items = realloc(v->items, nc * sizeof *items);
    if (!items) return tc_fail(TC_ERR_OOM, "%s: out of memory parsing JSON", p->source);
    v->items = items;
    if (object) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) return tc_fail(TC_ERR_OOM, "%s: out of memory parsing JSON", p->source);
        v->keys = keys;
        size_t *kl = realloc(v->key_lens, nc * sizeof *kl);
        if (!kl) return tc_fail(TC_ERR_OOM, "%s: out of memory parsing JSON", p->source);
        v->key_lens = kl;
    }
    *cap = nc;
    return TC_OK;
}

static tc_status parse_array(parser *p, tc_json *v) {
    v->type = TC_JSON_ARRAY;
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return TC_OK;
    }
    for (;;) {
        TC_TRY(grow(p, v, &cap, 0));
        tc_json *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        v->count++;
        TC_TRY(parse_value(p, item));
        skip_ws(p);
        if (p->pos >= p->len) return perr(p, "unterminated array");
        char c = p->s[p->pos++];
        if (c == ']') return TC_OK;
        if (c != ',') {
            p->pos--;
            return perr(p, "expected ',' or ']' in array");
        }
    }
}

static tc_status parse_object(parser *p, tc_json *v) {
    v->type = TC_JSON_OBJECT;
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return TC_OK;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->len) return perr(p, "unterminated object");
        if (p->s[p->pos] != '"') return perr(p, "expected a string key in object");
        TC_TRY(grow(p, v, &cap, 1));
        tc_json *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        v->keys[v->count] = NULL;
        v->key_lens[v->count] = 0;
        v->count++;
        TC_TRY(parse_string(p, &v->keys[v->count - 1], &v->key_lens[v->count - 1]));
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') return perr(p, "expected ':' after key");
        p->pos++;
        TC_TRY(parse_value(p, item));
        skip_ws(p);
        if (p->pos >= p->len) return perr(p, "unterminated object");
        char c = p->s[p->pos++];
        if (c == '}') return TC_OK;
        if (c != ',') {
            p->pos--;
            return perr(p, "expected ',' or '}' in object");
        }
    }
}

static int match_word(parser *p, const char *w) {
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static tc_status parse_value(parser *p, tc_json *v) {
    if (++p->values > TC_JSON_MAX_VALUES) return perr(p, "more than 4000000 values");
    skip_ws(p);
    if (p->pos >= p->len) return perr(p, "unexpected end of input");
    char c = p->s[p->pos];
    switch (c) {
    case '{':
    case '[': {
        if (++p->depth > TC_JSON_MAX_DEPTH) return perr(p, "nesting deeper than 64 levels");
        tc_status st = c == '{' ? parse_object(p, v) : parse_array(p, v);
        p->depth--;
        return st;
    }
    case '"': v->type = TC_JSON_STRING; return parse_string(p, &v->string, &v->string_len);
    case 't':
        if (!match_word(p, "true")) return perr(p, "unexpected token");
        v->type = TC_JSON_BOOL;
        v->boolean = 1;
        return TC_OK;
    case 'f':
        if (!match_word(p, "false")) return perr(p, "unexpected token");
        v->type = TC_JSON_BOOL;
        v->boolean = 0;
        return TC_OK;
    case 'n':
        if (!match_word(p, "null")) return perr(p, "unexpected token");
        v->type = TC_JSON_NULL;
        return TC_OK;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
        return perr(p, "unexpected character");
    }
}

static void free_children(tc_json *v) {
    if (!v) return;
    for (size_t i = 0; i < v->count; i++) {
        free_children(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lens);
    free(v->string);
}

tc_status tc_json_parse(const char *text, size_t len, const char *source, tc_json **out) {
    *out = NULL;
    if (!source) source = "JSON";
    tc_json *root = calloc(1, sizeof *root);
    if (!root) return tc_fail(TC_ERR_OOM, "%s: out of memory parsing JSON", source);
    parser p = {text, len, 0, source, 0, 0};
    tc_status st = parse_value(&p, root);
    if (st == TC_OK) {
        skip_ws(&p);
        if (p.pos != p.len) st = perr(&p, "trailing characters after the JSON value");
    }
    if (st != TC_OK) {
        tc_json_free(root);
        return st;
    }
    *out = root;
    return TC_OK;
}

void tc_json_free(tc_json *v) {
    if (!v) return;
    free_children(v);
    free(v);
}

const tc_json *tc_json_get(const tc_json *v, const char *key) {
    if (!v || v->type != TC_JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < v->count; i++)
        if (v->key_lens[i] == n && memcmp(v->keys[i], key, n) == 0) return &v->items[i];
    return NULL;
}

const char *tc_json_type_name(tc_json_type t) {
    switch (t) {
    case TC_JSON_NULL: return "null";
    case TC_JSON_BOOL: return "a boolean";
    case TC_JSON_NUMBER: return "a number";
    case TC_JSON_STRING: return "a string";
    case TC_JSON_ARRAY: return "an array";
    case TC_JSON_OBJECT: return "an object";
    }
    return "?";
}

/* ---- writing ---- */

static int reserve(tc_sbuf *b, size_t extra) {
    if (b->oom) return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return 0;
    }
    if (b->len + extra + 1 <= b->cap) return 1;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra + 1)
        nc *= 2;
    char *d = realloc(b->data, nc);
    if (!d) {
        b->oom = 1;
        return 0;
    }
    b->data = d;
    b->cap = nc;
    return 1;
}

void tc_sbuf_append(tc_sbuf *b, const char *s, size_t n) {
    if (!reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void tc_sbuf_puts(tc_sbuf *b, const char *s) {
    tc_sbuf_append(b, s, strlen(s));
}

void tc_sbuf_printf(tc_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n)) {
        if (n < 0) b->oom = 1;
        va_end(ap2);
        return;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

void tc_sbuf_json_string(tc_sbuf *b, const char *s, size_t n) {
    tc_sbuf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\b')
            esc = "\\b";
        else if (c == '\f')
            esc = "\\f";
        else if (c < 0x20 || c == 0x7F) {
            snprintf(u, sizeof u, "\\u%04x", c);
            esc = u;
        }
        if (esc) {
            tc_sbuf_append(b, s + i - run, run);
            run = 0;
            tc_sbuf_puts(b, esc);
        } else {
            run++;
        }
    }
    tc_sbuf_append(b, s + n - run, run);
    tc_sbuf_append(b, "\"", 1);
}

void tc_sbuf_json_number(tc_sbuf *b, double x) {
    if (!isfinite(x)) {
        tc_sbuf_puts(b, "null");
        return;
    }
    if (x == floor(x) && fabs(x) < 1e15) {
        tc_sbuf_printf(b, "%.1f", x);
        return;
    }
    /* shortest of %.15g..%.17g that reads back exactly */
    char tmp[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        if (strtod(tmp, NULL) == x) break;
    }
    tc_sbuf_puts(b, tmp);
}

void tc_sbuf_free(tc_sbuf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

tc_status tc_sbuf_finish(tc_sbuf *b, char **out) {
    *out = NULL;
    if (!b->oom && !b->data) reserve(b, 0);
    if (b->oom) {
        tc_sbuf_free(b);
        return tc_fail(TC_ERR_OOM, "out of memory building a string");
    }
    b->data[b->len] = 0;
    *out = b->data;
    memset(b, 0, sizeof *b);
    return TC_OK;
}

void tc_sbuf_indented(tc_sbuf *b, const char *text, const char *indent) {
    for (const char *c = text; *c; c++) {
        if (*c == '\n' && c[1]) {
            tc_sbuf_puts(b, "\n");
            tc_sbuf_puts(b, indent);
        } else if (*c != '\n') {
            tc_sbuf_append(b, c, 1);
        }
    }
}
