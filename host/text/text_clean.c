/* open_clip's clean='lower' text pipeline; the contract is in text_clean.h.
 * the work is done on UTF-32 arrays so that Python's per-code-point rules
 * (the 32-character entity names of html.unescape, str.split) carry over
 * one to one. */
#include "text_clean.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>

typedef struct {
    uint32_t *p;
    size_t n, cap;
} u32buf;

/* ftfy stops repeating its fixers when a line no longer changes; each
 * repetition that changes anything consumes an entity, so this bound is only
 * reached by hostile input (thousands of nested "&amp;amp;...") */
#define MAX_FIX_PASSES 4096
/* ftfy's TextFixerConfig.max_decode_length */
#define MAX_SEGMENT 1000000

static int buf_reserve(u32buf *b, size_t extra) {
    if (extra > SIZE_MAX / 8 - b->n) return -1;
    size_t need = b->n + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    uint32_t *p = realloc(b->p, cap * sizeof *p);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_push(u32buf *b, uint32_t c) {
    if (b->n == b->cap && buf_reserve(b, 1)) return -1;
    b->p[b->n++] = c;
    return 0;
}

static int buf_append(u32buf *b, const uint32_t *s, size_t n) {
    if (buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n * sizeof *s);
    b->n += n;
    return 0;
}

static void buf_free(u32buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static void buf_swap(u32buf *a, u32buf *b) {
    u32buf t = *a;
    *a = *b;
    *b = t;
}

/* decodes one UTF-8 sequence at s[i]; returns its length, 0 when invalid
 * (Python's strict decoder: shortest form only, no surrogates, <= U+10FFFF) */
static size_t utf8_decode(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned c = s[i];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n - i < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i + k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

size_t tc_utf8_valid_prefix(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_decode(s, len, i, &cp);
        if (!k) return i;
        i += k;
    }
    return len;
}

static tc_status decode_text(const char *text, size_t len, u32buf *out) {
    const unsigned char *s = (const unsigned char *)text;
    out->n = 0;
    if (buf_reserve(out, len + 1))
        return tc_fail(TC_ERR_OOM, "text: out of memory (%zu bytes)", len);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_decode(s, len, i, &cp);
        if (!k)
            return tc_fail(TC_ERR_ARG, "text is not valid UTF-8 (byte 0x%02x at offset %zu)", s[i],
                           i);
        out->p[out->n++] = cp;
        i += k;
    }
    return TC_OK;
}

static tc_status encode_text(const u32buf *b, char **out, size_t *out_len) {
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        n += b->p[i] < 0x80 ? 1 : b->p[i] < 0x800 ? 2 : b->p[i] < 0x10000 ? 3 : 4;
    unsigned char *s = malloc(n + 1);
    if (!s) return tc_fail(TC_ERR_OOM, "text: out of memory (%zu bytes)", n);
    size_t o = 0;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = b->p[i];
        if (c < 0x80) {
            s[o++] = (unsigned char)c;
        } else if (c < 0x800) {
            s[o++] = (unsigned char)(0xC0 | (c >> 6));
            s[o++] = (unsigned char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            s[o++] = (unsigned char)(0xE0 | (c >> 12));
            s[o++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            s[o++] = (unsigned char)(0x80 | (c & 0x3F));
        } else {
            s[o++] = (unsigned char)(0xF0 | (c >> 18));
            s[o++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            s[o++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            s[o++] = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    s[o] = 0;
    *out = (char *)s;
    *out_len = o;
    return TC_OK;
}

/* appends a table value (valid UTF-8 by construction) */
static int push_utf8(u32buf *b, const char *v) {
    const unsigned char *s = (const unsigned char *)v;
    size_t n = strlen(v);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_decode(s, n, i, &cp);
        if (!k) return -1;
        if (buf_push(b, cp)) return -1;
        i += k;
    }
    return 0;
}

/* ---- table lookups ---- */

/* compares an ASCII table name with code points; non-ASCII sorts after */
static int name_cmp(const char *name, const uint32_t *s, size_t n) {
    size_t i = 0;
    for (; i < n && name[i]; i++) {
        uint32_t a = (unsigned char)name[i];
        if (a != s[i]) return a < s[i] ? -1 : 1;
    }
    if (i == n) return name[i] ? 1 : 0;
    return -1;
}

static const char *entity_find(const tc_entity *t, size_t count, const uint32_t *s, size_t n) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(t[mid].name, s, n);
        if (c == 0) return t[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const char *charmap_find(const tc_charmap *t, size_t count, uint32_t cp) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t[mid].cp == cp) return t[mid].value;
        if (t[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const char *invalid_charref(uint32_t num) {
    for (size_t i = 0; i < tc_invalid_charref_count; i++)
        if (tc_invalid_charrefs[i].num == num) return tc_invalid_charrefs[i].value;
    return NULL;
}

static int invalid_codepoint(uint32_t num) {
    size_t lo = 0, hi = tc_invalid_codepoint_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tc_invalid_codepoints[mid] == num) return 1;
        if (tc_invalid_codepoints[mid] < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int has_char(const u32buf *b, uint32_t c) {
    for (size_t i = 0; i < b->n; i++)
        if (b->p[i] == c) return 1;
    return 0;
}

static int is_digit(uint32_t c) {
    return c >= '0' && c <= '9';
}
static int is_xdigit(uint32_t c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static int is_alnum(uint32_t c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static uint32_t xdigit_value(uint32_t c) {
    return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* ---- Python's html.unescape ---- */

/* _replace_charref for a numeric reference; num is saturated above U+10FFFF */
static int emit_charref(u32buf *out, uint32_t num) {
    const char *v = invalid_charref(num);
    if (v) return push_utf8(out, v);
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return buf_push(out, 0xFFFD);
    if (invalid_codepoint(num)) return 0;
    return buf_push(out, num);
}

/* html._charref's third branch: [^\t\n\f <&#;]{1,32};? */
static int name_char(uint32_t c) {
    return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' &&
           c != ';';
}

/* out = html.unescape(s[0..n)); returns -1 on allocation failure.
 * decimal references longer than Python's 4300-digit int() limit make Python
 * raise; they give U+FFFD here like any other out-of-range number. */
static int py_html_unescape(const uint32_t *s, size_t n, u32buf *out) {
    out->n = 0;
    size_t i = 0;
    while (i < n) {
        if (s[i] != '&') {
            if (buf_push(out, s[i])) return -1;
            i++;
            continue;
        }
        size_t j = i + 1;
        if (j < n && s[j] == '#') {
            int hex = 0;
            size_t k = j + 1;
            if (k < n && is_digit(s[k])) {
                hex = 0;
            } else if (k + 1 < n && (s[k] == 'x' || s[k] == 'X') && is_xdigit(s[k + 1])) {
                hex = 1;
                k++;
            } else {
                if (buf_push(out, '&')) return -1;
                i++;
                continue;
            }
            uint32_t num = 0;
            for (; k < n && (hex ? is_xdigit(s[k]) : is_digit(s[k])); k++) {
                uint32_t d = hex ? xdigit_value(s[k]) : s[k] - '0';
                if (num <= 0x10FFFF) num = num * (hex ? 16 : 10) + d;
            }
            if (k < n && s[k] == ';') k++;
            if (emit_charref(out, num)) return -1;
            i = k;
            continue;
        }
        size_t k = j;
        while (k < n && k - j < 32 && name_char(s[k]))
            k++;
        if (k == j) {
            if (buf_push(out, '&')) return -1;
            i++;
            continue;
        }
        if (k < n && s[k] == ';') k++;
        const uint32_t *name = s + j;
        size_t len = k - j;
        const char *v = entity_find(tc_html5_entities, tc_html5_entity_count, name, len);
        if (v) {
            if (push_utf8(out, v)) return -1;
        } else {
            /* the longest prefix that is an entity (only the legacy names
             * without ';' can be one) */
            size_t x = len - 1;
            for (; x >= 2; x--) {
                v = entity_find(tc_html5_entities, tc_html5_entity_count, name, x);
                if (v) break;
            }
            if (v) {
                if (push_utf8(out, v) || buf_append(out, name + x, len - x)) return -1;
            } else {
                if (buf_push(out, '&') || buf_append(out, name, len)) return -1;
            }
        }
        i = k;
    }
    return 0;
}

/* ---- ftfy's fixers; each returns 1 when it wrote a changed text to out,
 * 0 when the text is unchanged (out untouched), -1 on allocation failure ---- */

/* fixes.unescape_html: &#?[0-9A-Za-z]{1,24}; looked up in chardata.HTML_ENTITIES,
 * numeric ones through html.unescape unless that leaves a ';' */
static int fix_unescape_html(const u32buf *in, u32buf *out) {
    if (!has_char(in, '&')) return 0;
    const uint32_t *s = in->p;
    size_t n = in->n;
    int changed = 0;
    u32buf tmp = {0};
    out->n = 0;
    size_t i = 0;
    while (i < n) {
        if (s[i] != '&') {
            if (buf_push(out, s[i])) goto oom;
            i++;
            continue;
        }
        size_t j = i + 1;
        int numeric = j < n && s[j] == '#';
        if (numeric) j++;
        size_t k = j;
        while (k < n && k - j <= 24 && is_alnum(s[k]))
            k++;
        if (k == j || k - j > 24 || k >= n || s[k] != ';') {
            if (buf_push(out, '&')) goto oom;
            i++;
            continue;
        }
        size_t end = k + 1;
        const char *v = entity_find(tc_ftfy_entities, tc_ftfy_entity_count, s + i, end - i);
        if (v) {
            if (push_utf8(out, v)) goto oom;
            changed = 1;
        } else if (numeric) {
            if (py_html_unescape(s + i, end - i, &tmp)) goto oom;
            if (has_char(&tmp, ';')) {
                if (buf_append(out, s + i, end - i)) goto oom;
            } else {
                if (buf_append(out, tmp.p, tmp.n)) goto oom;
                changed = 1;
            }
        } else {
            if (buf_append(out, s + i, end - i)) goto oom;
        }
        i = end;
    }
    buf_free(&tmp);
    return changed;
oom:
    buf_free(&tmp);
    return -1;
}

/* fix_c1_controls: U+0080..U+009F read as sloppy windows-1252, which is
 * exactly html._invalid_charrefs on that range */
static int fix_c1_controls(const u32buf *in, u32buf *out) {
    size_t i = 0;
    while (i < in->n && !(in->p[i] >= 0x80 && in->p[i] <= 0x9F))
        i++;
    if (i == in->n) return 0;
    out->n = 0;
    if (buf_append(out, in->p, i)) return -1;
    for (; i < in->n; i++) {
        uint32_t c = in->p[i];
        const char *v = c >= 0x80 && c <= 0x9F ? invalid_charref(c) : NULL;
        if (v ? push_utf8(out, v) : buf_push(out, c)) return -1;
    }
    return 1;
}

/* a bitmap of the BMP code points that are keys of any ftfy translate table
 * (all of them are in the BMP), so most characters skip the searches */
static uint8_t translate_keys[0x10000 / 8];
static pthread_once_t translate_once = PTHREAD_ONCE_INIT;

static void translate_init(void) {
    const tc_charmap *tables[] = {tc_ftfy_ligatures, tc_ftfy_width_map, tc_ftfy_control_chars};
    size_t counts[] = {tc_ftfy_ligatures_count, tc_ftfy_width_map_count,
                       tc_ftfy_control_chars_count};
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < counts[t]; i++)
            if (tables[t][i].cp < 0x10000)
                translate_keys[tables[t][i].cp >> 3] |= (uint8_t)(1u << (tables[t][i].cp & 7));
}

static int maybe_key(uint32_t c) {
    return c >= 0x10000 || (translate_keys[c >> 3] >> (c & 7)) & 1;
}

/* str.translate with an ftfy table */
static int translate(const u32buf *in, u32buf *out, const tc_charmap *t, size_t count) {
    pthread_once(&translate_once, translate_init);
    size_t i = 0;
    for (; i < in->n; i++)
        if (maybe_key(in->p[i]) && charmap_find(t, count, in->p[i])) break;
    if (i == in->n) return 0;
    out->n = 0;
    if (buf_append(out, in->p, i)) return -1;
    for (; i < in->n; i++) {
        uint32_t c = in->p[i];
        const char *v = maybe_key(c) ? charmap_find(t, count, c) : NULL;
        if (v ? push_utf8(out, v) : buf_push(out, c)) return -1;
    }
    return 1;
}

static int fix_latin_ligatures(const u32buf *in, u32buf *out) {
    return translate(in, out, tc_ftfy_ligatures, tc_ftfy_ligatures_count);
}

static int fix_character_width(const u32buf *in, u32buf *out) {
    return translate(in, out, tc_ftfy_width_map, tc_ftfy_width_map_count);
}

static int remove_control_chars(const u32buf *in, u32buf *out) {
    return translate(in, out, tc_ftfy_control_chars, tc_ftfy_control_chars_count);
}

/* uncurl_quotes: [\u02bc\u2018-\u201b] -> ', [\u201c-\u201f] -> " */
static int uncurl_quotes(const u32buf *in, u32buf *out) {
    int changed = 0;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->p[i];
        if (c == 0x2BC || (c >= 0x2018 && c <= 0x201F)) {
            if (!changed) {
                out->n = 0;
                if (buf_append(out, in->p, in->n)) return -1;
                changed = 1;
            }
            out->p[i] = c >= 0x201C ? '"' : '\'';
        }
    }
    return changed;
}

/* fix_line_breaks: \r\n, \r, U+2028, U+2029, U+0085 -> \n */
static int fix_line_breaks(const u32buf *in, u32buf *out) {
    size_t i = 0;
    for (; i < in->n; i++) {
        uint32_t c = in->p[i];
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) break;
    }
    if (i == in->n) return 0;
    out->n = 0;
    if (buf_append(out, in->p, i)) return -1;
    for (; i < in->n; i++) {
        uint32_t c = in->p[i];
        if (c == '\r' && i + 1 < in->n && in->p[i + 1] == '\n') continue;
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
        if (buf_push(out, c)) return -1;
    }
    return 1;
}

static int is_ascii_letter(uint32_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* remove_terminal_escapes: \033\[((?:\d|;)*)([a-zA-Z]); \d is Unicode Nd
 * in Python's re for str patterns */
static int remove_terminal_escapes(const u32buf *in, u32buf *out) {
    if (!has_char(in, 0x1B)) return 0;
    int changed = 0;
    out->n = 0;
    size_t i = 0;
    while (i < in->n) {
        if (in->p[i] == 0x1B && i + 1 < in->n && in->p[i + 1] == '[') {
            size_t k = i + 2;
            while (k < in->n &&
                   (in->p[k] == ';' || uc_is_general_category(in->p[k], UC_DECIMAL_DIGIT_NUMBER)))
                k++;
            if (k < in->n && is_ascii_letter(in->p[k])) {
                i = k + 1;
                changed = 1;
                continue;
            }
        }
        if (buf_push(out, in->p[i])) return -1;
        i++;
    }
    return changed;
}

/* code points that leave any text NFC that they are part of: combining
 * class 0, no decomposition other than a primary composite's own, and never
 * the second half of a composition (what NFC_Quick_Check=Maybe marks) */
static uint8_t nfc_unstable[0x110000 / 8];
static pthread_once_t nfc_once = PTHREAD_ONCE_INIT;

static void mark_unstable(uint32_t c) {
    nfc_unstable[c >> 3] |= (uint8_t)(1u << (c & 7));
}

static void nfc_init(void) {
    for (uint32_t c = 0x300; c < 0x110000; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        if (uc_combining_class(c) != 0) {
            mark_unstable(c);
            continue;
        }
        ucs4_t d[UC_DECOMPOSITION_MAX_LENGTH];
        int n = uc_canonical_decomposition(c, d);
        if (n < 0) continue;
        if (n == 2 && uc_composition(d[0], d[1]) == c) {
            mark_unstable(d[1]); /* "d0 d1" composes to c */
        } else {
            mark_unstable(c); /* singletons, exclusions */
        }
    }
}

/* unicodedata.normalize('NFC'); text without unstable code points (text
 * below U+0300 in particular) is left as it is, as Python's quick check does */
static int normalize_nfc(const u32buf *in, u32buf *out) {
    size_t i = 0;
    while (i < in->n && in->p[i] < 0x300)
        i++;
    if (i == in->n) return 0;
    pthread_once(&nfc_once, nfc_init);
    for (; i < in->n; i++)
        if ((nfc_unstable[in->p[i] >> 3] >> (in->p[i] & 7)) & 1) break;
    if (i == in->n) return 0;
    size_t len = 0;
    uint32_t *r = u32_normalize(UNINORM_NFC, in->p, in->n, NULL, &len);
    if (!r) return -1;
    int changed = len != in->n || memcmp(r, in->p, len * sizeof *r) != 0;
    if (changed) {
        out->n = 0;
        if (buf_append(out, r, len)) {
            free(r);
            return -1;
        }
    }
    free(r);
    return changed;
}

typedef int (*fixer_fn)(const u32buf *in, u32buf *out);

/* fix_and_explain on one segment with fix_encoding off: the fixers in ftfy's
 * order, then NFC, repeated until a pass changes nothing */
static int fix_segment(u32buf *seg, int unescape_html, u32buf *tmp, u32buf *orig) {
    static const fixer_fn fixers[] = {
        fix_c1_controls, fix_latin_ligatures,     fix_character_width,  uncurl_quotes,
        fix_line_breaks, remove_terminal_escapes, remove_control_chars, normalize_nfc};
    const size_t n_fixers = sizeof fixers / sizeof fixers[0];
    int is_nfc = 0; /* NFC is idempotent: skip it until another fixer changes the text */
    for (int pass = 0; pass < MAX_FIX_PASSES; pass++) {
        orig->n = 0;
        if (buf_append(orig, seg->p, seg->n)) return -1;
        int any = 0;
        if (unescape_html) {
            int r = fix_unescape_html(seg, tmp);
            if (r < 0) return -1;
            if (r) buf_swap(seg, tmp), any = 1, is_nfc = 0;
        }
        for (size_t f = 0; f < n_fixers; f++) {
            if (f == n_fixers - 1 && is_nfc) break;
            int r = fixers[f](seg, tmp);
            if (r < 0) return -1;
            if (r) buf_swap(seg, tmp), any = 1, is_nfc = 0;
        }
        is_nfc = 1;
        if (!any) return 0;
        if (seg->n == orig->n && memcmp(seg->p, orig->p, seg->n * sizeof *seg->p) == 0) return 0;
    }
    return 0;
}

/* ftfy.fix_text: lines fixed independently; unescape_html='auto' turns off
 * for good at the first line that holds '<' */
static int ftfy_fix_text(const u32buf *in, u32buf *out) {
    u32buf seg = {0}, tmp = {0}, orig = {0};
    int unescape_html = 1, rc = 0;
    out->n = 0;
    size_t pos = 0;
    while (pos < in->n) {
        size_t end = pos;
        while (end < in->n && in->p[end] != '\n')
            end++;
        end = end < in->n ? end + 1 : in->n;
        if (end - pos > MAX_SEGMENT) end = pos + MAX_SEGMENT;
        seg.n = 0;
        if (buf_append(&seg, in->p + pos, end - pos)) goto oom;
        if (unescape_html && has_char(&seg, '<')) unescape_html = 0;
        if (fix_segment(&seg, unescape_html, &tmp, &orig)) goto oom;
        if (buf_append(out, seg.p, seg.n)) goto oom;
        pos = end;
    }
    goto done;
oom:
    rc = -1;
done:
    buf_free(&seg);
    buf_free(&tmp);
    buf_free(&orig);
    return rc;
}

/* str.isspace() in Python 3.11: bidi class WS, B or S, or category Zs */
static int py_isspace(uint32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* " ".join(text.split()) (which also strips) */
static int whitespace_clean(const u32buf *in, u32buf *out) {
    out->n = 0;
    size_t i = 0;
    while (i < in->n) {
        while (i < in->n && py_isspace(in->p[i]))
            i++;
        if (i == in->n) break;
        if (out->n && buf_push(out, ' ')) return -1;
        size_t j = i;
        while (j < in->n && !py_isspace(in->p[j]))
            j++;
        if (buf_append(out, in->p + i, j - i)) return -1;
        i = j;
    }
    return 0;
}

/* the final-sigma context of Python's handle_capital_sigma: a cased letter
 * before (skipping case-ignorables), none after (skipping case-ignorables).
 * libunistring's own u32_tolower tests these in another order and differs
 * for characters that are both (U+0345) and around apostrophes. */
static uint32_t lower_capital_sigma(const uint32_t *s, size_t n, size_t i) {
    size_t j = i;
    uint32_t c = 0;
    while (j > 0) {
        c = s[--j];
        if (!uc_is_property_case_ignorable(c)) break;
        c = 0;
    }
    int final_sigma = c != 0 && uc_is_property_cased(c);
    if (final_sigma && i + 1 < n) {
        for (j = i + 1; j < n; j++)
            if (!uc_is_property_case_ignorable(s[j])) break;
        final_sigma = j == n || !uc_is_property_cased(s[j]);
    }
    return final_sigma ? 0x3C2 : 0x3C3;
}

/* str.lower(): the simple lowercase mapping of every character except the
 * unconditional full mapping U+0130 -> i + U+0307 and the final-sigma rule
 * (checked against Python 3.11 over all code points: lower.tsv fixture) */
static int py_lower(const u32buf *in, u32buf *out) {
    out->n = 0;
    if (buf_reserve(out, in->n + 1)) return -1;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->p[i];
        if (c < 0x80) {
            if (buf_push(out, c >= 'A' && c <= 'Z' ? c + 32 : c)) return -1;
        } else if (c == 0x130) {
            if (buf_push(out, 'i') || buf_push(out, 0x307)) return -1;
        } else if (c == 0x3A3) {
            if (buf_push(out, lower_capital_sigma(in->p, in->n, i))) return -1;
        } else {
            if (buf_push(out, uc_tolower(c))) return -1;
        }
    }
    return 0;
}

tc_status tc_text_html_unescape(const char *text, size_t len, char **out, size_t *out_len) {
    u32buf a = {0}, b = {0};
    tc_status st = decode_text(text, len, &a);
    if (st == TC_OK && py_html_unescape(a.p, a.n, &b))
        st = tc_fail(TC_ERR_OOM, "html unescape: out of memory");
    if (st == TC_OK) st = encode_text(&b, out, out_len);
    buf_free(&a);
    buf_free(&b);
    return st;
}

tc_status tc_text_lower(const char *text, size_t len, char **out, size_t *out_len) {
    u32buf a = {0}, b = {0};
    tc_status st = decode_text(text, len, &a);
    if (st == TC_OK && py_lower(&a, &b)) st = tc_fail(TC_ERR_OOM, "lower: out of memory");
    if (st == TC_OK) st = encode_text(&b, out, out_len);
    buf_free(&a);
    buf_free(&b);
    return st;
}

tc_status tc_text_ftfy(const char *text, size_t len, char **out, size_t *out_len) {
    u32buf a = {0}, b = {0};
    tc_status st = decode_text(text, len, &a);
    if (st == TC_OK && ftfy_fix_text(&a, &b)) st = tc_fail(TC_ERR_OOM, "ftfy: out of memory");
    if (st == TC_OK) st = encode_text(&b, out, out_len);
    buf_free(&a);
    buf_free(&b);
    return st;
}

tc_status tc_text_clean_lower(const char *text, size_t len, char **out, size_t *out_len) {
    u32buf a = {0}, b = {0};
    tc_status st = decode_text(text, len, &a);
    if (st != TC_OK) goto done;
    /* basic_clean: ftfy.fix_text, html.unescape twice, strip; then
     * whitespace_clean and lower */
    if (ftfy_fix_text(&a, &b) || py_html_unescape(b.p, b.n, &a) || py_html_unescape(a.p, a.n, &b) ||
        whitespace_clean(&b, &a) || py_lower(&a, &b)) {
        st = tc_fail(TC_ERR_OOM, "text cleaning: out of memory (%zu bytes of text)", len);
        goto done;
    }
    st = encode_text(&b, out, out_len);
done:
    buf_free(&a);
    buf_free(&b);
    return st;
}
