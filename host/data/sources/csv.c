/* open_clip CsvDataset: a header row names the columns; the image column
 * (default "filepath") and caption column (default "title") are picked by
 * name; the separator defaults to a tab as open_clip's --csv-separator.
 * fields may be double-quoted ("" is a literal quote; quoted fields may hold
 * the separator and newlines). the whole table is parsed at open.
 * relative image paths: open_clip hands them to PIL, i.e. resolves them
 * against the current directory. we try the current directory first (same
 * result whenever open_clip would find the file) and then the directory of
 * the csv file, so a table written next to its images works from anywhere.
 * a row with too few columns, an empty path or a file that cannot be read
 * is a bad sample, named by its row number (1 = the first data row). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data_file.h"
#include "source.h"

#define CSV_MAX_BYTES ((size_t)4 << 30)
#define CSV_MAX_IMAGE ((size_t)64 << 20)

typedef struct {
    char *path, *caption; /* point into text; NULL when the row lacks the column */
} csv_row;

typedef struct {
    char *text; /* the file, fields unescaped in place */
    csv_row *rows;
    int64_t nrows;
    char dir[4096]; /* directory of the csv */
    char file[4096];
} csv_table;

/* splits one record starting at *p; fields unescaped in place and
 * NUL-terminated; returns the number of fields, advances *p past the record */
static int parse_record(char **p, char *end, char sep, char **fields, int maxf) {
    char *s = *p;
    int nf = 0;
    for (;;) {
        char *w = s, *start = s;
        if (s < end && *s == '"') {
            s++;
            for (;;) {
                if (s >= end) break;
                if (*s == '"') {
                    if (s + 1 < end && s[1] == '"') {
                        *w++ = '"';
                        s += 2;
                        continue;
                    }
                    s++;
                    break;
                }
                *w++ = *s++;
            }
            /* text after the closing quote up to the separator is kept, as pandas does */
            while (s < end && *s != sep && *s != '\n' && *s != '\r')
                *w++ = *s++;
        } else {
            while (s < end && *s != sep && *s != '\n' && *s != '\r')
                s++;
            w = s;
        }
        char term = s < end ? *s : '\n';
        *w = 0; /* w <= s; s == end is fine (text has a spare byte) */
        if (nf < maxf) fields[nf] = start;
        nf++;
        if (s >= end) break;
        s++; /* past the terminator, whose byte may now be the NUL */
        if (term == sep) continue;
        if (term == '\r' && s < end && *s == '\n') s++;
        break;
    }
    *p = s;
    return nf;
}

static void csv_destroy(tc_source *s) {
    csv_table *t = s->impl;
    if (t) {
        free(t->text);
        free(t->rows);
        free(t);
    }
    free(s);
}

static tc_status csv_get(tc_source *s, int64_t index, tc_sample *out) {
    csv_table *t = s->impl;
    memset(out, 0, sizeof *out);
    out->label = -1;
    if (index < 0 || index >= t->nrows)
        return tc_fail(TC_ERR_ARG, "%s: row %lld out of range", t->file, (long long)index + 1);
    csv_row *r = &t->rows[index];
    snprintf(out->key, sizeof out->key, "row %lld", (long long)index + 1);
    snprintf(out->where, sizeof out->where, "%.511s", t->file);
    if (!r->path || !r->caption) {
        snprintf(out->bad, sizeof out->bad, "row has too few columns");
        return TC_OK;
    }
    if (!r->path[0]) {
        snprintf(out->bad, sizeof out->bad, "empty image path");
        return TC_OK;
    }
    char full[8192];
    const char *use = r->path;
    /* whatever exists at the path is taken (a FIFO or a directory is then
     * refused by name); a path that exists in neither place keeps the
     * current directory's name for the message */
    if (r->path[0] != '/' && access(r->path, F_OK) != 0) {
        snprintf(full, sizeof full, "%s/%s", t->dir, r->path);
        if (access(full, F_OK) == 0) use = full;
    }
    snprintf(out->key, sizeof out->key, "row %lld (%s)", (long long)index + 1, r->path);
    char why[160];
    if (tc_data_read_file(use, CSV_MAX_IMAGE, &out->image, &out->image_len, why, sizeof why) != 0) {
        snprintf(out->bad, sizeof out->bad, "image file %s", why);
        return TC_OK;
    }
    size_t cl = strlen(r->caption);
    out->caption = malloc(cl + 1);
    if (!out->caption) {
        tc_sample_clear(out);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", t->file);
    }
    memcpy(out->caption, r->caption, cl + 1);
    out->caption_len = cl;
    if (!out->bad[0] && !tc_utf8_valid(out->caption, cl))
        snprintf(out->bad, sizeof out->bad, "caption is not valid UTF-8");
    return TC_OK;
}

tc_status tc_source_csv_open(const char *path, const tc_source_opts *opts, tc_source **out) {
    *out = NULL;
    char sep = opts && opts->csv_sep ? opts->csv_sep : '\t';
    const char *img_key = opts && opts->csv_img_key ? opts->csv_img_key : "filepath";
    const char *cap_key = opts && opts->csv_caption_key ? opts->csv_caption_key : "title";
    uint8_t *raw = NULL;
    size_t got = 0;
    char why[160];
    if (tc_data_read_file(path, CSV_MAX_BYTES, &raw, &got, why, sizeof why) != 0)
        return tc_fail(TC_ERR_IO, "%s: %s", path, why);
    tc_source *s = calloc(1, sizeof *s);
    csv_table *t = calloc(1, sizeof *t);
    /* one more NUL: the parser may write one past the last byte */
    char *text = realloc(raw, got + 2);
    if (!s || !t || !text) {
        free(s);
        free(t);
        free(text ? text : (char *)raw);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    text[got] = 0;
    text[got + 1] = 0;
    t->text = text;
    s->impl = t;
    s->destroy = csv_destroy;
    snprintf(t->file, sizeof t->file, "%s", path);
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(t->dir, sizeof t->dir, "%.*s", (int)(slash - path), path);
    else
        snprintf(t->dir, sizeof t->dir, ".");
    char *p = text, *end = text + got;
    /* skip a UTF-8 byte-order mark, as pandas does */
    if (got >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
        (unsigned char)p[2] == 0xBF)
        p += 3;
    enum { MAXF = 256 };
    char *fields[MAXF];
    int nf = 0;
    while (p < end && (nf = parse_record(&p, end, sep, fields, MAXF)) == 1 && !fields[0][0]) {
    }
    int ci = -1, cc = -1;
    for (int i = 0; i < nf && i < MAXF; i++) {
        if (ci < 0 && strcmp(fields[i], img_key) == 0) ci = i;
        if (cc < 0 && strcmp(fields[i], cap_key) == 0) cc = i;
    }
    if (nf == 0 || ci < 0 || cc < 0) {
        csv_destroy(s);
        return tc_fail(
            TC_ERR_FORMAT,
            "%s: header lacks column '%s' or '%s' (separator '%s'; set it with --csv-sep)", path,
            ci < 0 ? img_key : "", cc < 0 ? cap_key : "", sep == '\t' ? "\\t" : (char[]){sep, 0});
    }
    int64_t cap = 1024;
    t->rows = malloc(sizeof(csv_row) * (size_t)cap);
    while (t->rows && p < end) {
        nf = parse_record(&p, end, sep, fields, MAXF);
        if (nf == 1 && !fields[0][0]) continue; /* blank line */
        if (t->nrows == cap) {
            cap *= 2;
            csv_row *nr = realloc(t->rows, sizeof(csv_row) * (size_t)cap);
            if (!nr) {
                free(t->rows);
                t->rows = NULL;
                break;
            }
            t->rows = nr;
        }
        csv_row *r = &t->rows[t->nrows++];
        r->path = ci < nf && ci < MAXF ? fields[ci] : NULL;
        r->caption = cc < nf && cc < MAXF ? fields[cc] : NULL;
    }
    if (!t->rows) {
        csv_destroy(s);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    s->kind = "csv";
    s->indexable = 1;
    s->num_samples = t->nrows;
    s->get = csv_get;
    *out = s;
    return TC_OK;
}
