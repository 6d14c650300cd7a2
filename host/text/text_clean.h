/* open_clip's caption cleaning (clean='lower'), in C, character for
 * character: ftfy.fix_text with its default fixers except the mojibake
 * repair (fix_encoding: re-decoding text that was decoded in the wrong
 * encoding), then html.unescape twice, str.strip, " ".join(text.split()) and
 * str.lower (Python 3.11, Unicode 14: libunistring for NFC and case mapping,
 * with Python's own final-sigma rule).
 *
 * ftfy pieces kept, each exactly as ftfy 6.3.1 does them: unescape_html
 * ('auto': off from the first line holding '<' on), fix_c1_controls,
 * fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks,
 * remove_terminal_escapes, remove_control_chars, NFC; applied per line and
 * repeated until the line no longer changes, as fix_and_explain does.
 * fix_surrogates has nothing to do: valid UTF-8 holds no surrogates.
 *
 * input must be valid UTF-8 (Python's strict decoder: no overlongs, no
 * surrogates, nothing above U+10FFFF); anything else is TC_ERR_ARG naming the
 * byte offset. all functions are reentrant. */
#ifndef TC_TEXT_CLEAN_H
#define TC_TEXT_CLEAN_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* *out (malloc'd, NUL-terminated, *out_len bytes before the NUL) is
 * _clean_lower(text) of open_clip's tokenizer.py */
tc_status tc_text_clean_lower(const char *text, size_t len, char **out, size_t *out_len);

/* the pieces, for tests: each maps UTF-8 to malloc'd UTF-8 */
tc_status tc_text_html_unescape(const char *text, size_t len, char **out, size_t *out_len);
tc_status tc_text_ftfy(const char *text, size_t len, char **out, size_t *out_len);
tc_status tc_text_lower(const char *text, size_t len, char **out, size_t *out_len);

/* returns the byte offset of the first invalid UTF-8 sequence, or len */
size_t tc_utf8_valid_prefix(const char *text, size_t len);

/* ---- generated tables (host/text/html_entities.c, scripts/gen_html_entities.py) ---- */
typedef struct {
    const char *name;  /* ASCII */
    const char *value; /* UTF-8 */
} tc_entity;
typedef struct {
    uint32_t num;
    const char *value;
} tc_charref;
typedef struct {
    uint32_t cp;
    const char *value; /* UTF-8; "" deletes */
} tc_charmap;

/* html.entities.html5, sorted by name; names carry ';' where the key does */
extern const tc_entity tc_html5_entities[];
extern const size_t tc_html5_entity_count;
/* ftfy.chardata.HTML_ENTITIES: "&name;" keys, all-caps variants included */
extern const tc_entity tc_ftfy_entities[];
extern const size_t tc_ftfy_entity_count;
/* html._invalid_charrefs (sorted by num) and html._invalid_codepoints (sorted) */
extern const tc_charref tc_invalid_charrefs[];
extern const size_t tc_invalid_charref_count;
extern const uint32_t tc_invalid_codepoints[];
extern const size_t tc_invalid_codepoint_count;
/* ftfy translate tables, sorted by code point */
extern const tc_charmap tc_ftfy_ligatures[];
extern const size_t tc_ftfy_ligatures_count;
extern const tc_charmap tc_ftfy_width_map[];
extern const size_t tc_ftfy_width_map_count;
extern const tc_charmap tc_ftfy_control_chars[];
extern const size_t tc_ftfy_control_chars_count;
/* PCRE2 class fragments: what the regex module's \p{L} / \p{N} hold beyond
 * Unicode 14, and what its IGNORECASE classes match nowhere (U+0345) */
extern const char tc_regex_extra_letters[];
extern const char tc_regex_extra_numbers[];
extern const char tc_regex_skipped[];

#endif
