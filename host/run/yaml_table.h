/* a YAML document read as typed tables: the generic half of the experiment
 * parser (the schema lives in experiment_schema.c and experiment_stages.c).
 *
 * what it does: builds the libfyaml document (UTF-8 checked first), records
 * the position of every node before anything edits the tree, collects errors
 * as "FILE:LINE:COLUMN: KEY.PATH: message" (or "--set 'OVERRIDE': KEY.PATH:
 * message" for a node an override made), substitutes ${NAME} from the
 * document's top-level `params:` mapping or the environment, and fills a C
 * struct from a mapping through a field table (integers, numbers, booleans,
 * strings, enums, each with its range; unknown keys are reported with the
 * keys that were expected). it knows nothing of what the document means.
 *
 * use: a parser embeds a tc_yaml as the first member of its own context,
 * calls tc_yaml_init, tc_yaml_load, tc_yaml_parse_map on the root with its
 * field tables (custom fields get the tc_yaml back and cast it to their
 * context), then tc_yaml_free. errors never stop the walk: every problem of
 * the document is reported at once. */
#ifndef TC_YAML_TABLE_H
#define TC_YAML_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define TC_YAML_MAX_ERRORS 64
#define TC_YAML_MAX_TOUCHED 512
#define TC_YAML_MAX_PARAMS 64

struct fy_document;
struct fy_node;
struct fy_diag;

/* where a value came from: a position in the file (1-based), or an override */
typedef struct {
    int line, column; /* 0 when unknown */
    int from_set;     /* 1: the value came from --set number from_set-1 */
} tc_yaml_loc;

/* one reported problem */
typedef struct {
    char text[512];     /* the full formatted line */
    int line, column;   /* 0 when from --set or unknown */
    char key_path[160]; /* e.g. "stages.2.optimizer.lr" */
} tc_yaml_error;

typedef struct {
    int count;   /* errors recorded (at most TC_YAML_MAX_ERRORS) */
    int dropped; /* errors beyond the cap */
    tc_yaml_error items[TC_YAML_MAX_ERRORS];
} tc_yaml_errors;

typedef struct tc_yaml tc_yaml;

/* a field the table cannot describe: v is the value (aliases resolved), path
 * its key path, obj the struct the table fills */
typedef void (*tc_yaml_custom_fn)(tc_yaml *y, struct fy_node *v, const char *path, void *obj);
/* a string field's text (after ${NAME}) -> the string stored (malloc'd) */
typedef char *(*tc_yaml_resolve_fn)(tc_yaml *y, const char *text);

typedef enum {
    TC_YAML_INT,  /* int */
    TC_YAML_I64,  /* int64_t; "1e4" is accepted when integral */
    TC_YAML_F32,  /* float */
    TC_YAML_F64,  /* double */
    TC_YAML_BOOL, /* int 0/1 */
    TC_YAML_STR,  /* char *, malloc'd; null frees it */
    TC_YAML_PATH, /* char *, malloc'd, never null: through resolve (NULL: tc_yaml_resolve_path) */
    TC_YAML_ENUM, /* int: the index of the name in enums */
    TC_YAML_CUSTOM,
} tc_yaml_type;

typedef struct {
    const char *key;
    tc_yaml_type type;
    size_t off;                 /* of the value in obj */
    double lo, hi;              /* numbers: the range [lo, hi]; every field has an upper bound */
    int excl_lo;                /* lo itself is out of range */
    const char *const *enums;   /* TC_YAML_ENUM: NULL-terminated names, value = index */
    tc_yaml_custom_fn fn;       /* TC_YAML_CUSTOM */
    tc_yaml_resolve_fn resolve; /* TC_YAML_PATH */
} tc_yaml_field;

typedef struct {
    struct fy_node *node;
    int line, column;
} tc_yaml_mark;

struct tc_yaml {
    struct fy_document *fyd;
    struct fy_diag *diag;
    const char *source;   /* the file name used in messages */
    const char *base_dir; /* relative paths resolve against it */
    tc_yaml_errors *errs;
    const char *const *overrides; /* the --set texts, named in messages */
    tc_yaml_mark *marks;          /* sorted by node address */
    int n_marks, cap_marks;
    struct fy_node *touched[TC_YAML_MAX_TOUCHED]; /* nodes an override made */
    int touched_set[TC_YAML_MAX_TOUCHED];         /* and which override */
    int n_touched;
    struct {
        char name[64];
        char *value; /* NULL: take the environment */
    } params[TC_YAML_MAX_PARAMS];
    int n_params;
};

/* ---- the document ---- */

/* an empty reader whose errors go to errs (cleared); source and base_dir
 * must outlive it. TC_ERR_OOM when libfyaml cannot make its diagnostics */
tc_status tc_yaml_init(tc_yaml *y, const char *source, const char *base_dir,
                       const char *const *overrides, tc_yaml_errors *errs);

/* parses the text (UTF-8, checked first) and records where every node is;
 * 0 with the errors recorded when it is not valid UTF-8 or not YAML */
int tc_yaml_load(tc_yaml *y, const char *text, size_t len);

/* the root node, aliases resolved; NULL when there is none */
struct fy_node *tc_yaml_root(tc_yaml *y);

/* an override made or replaced node n: errors on it or inside it name
 * override number `set` (0-based) */
void tc_yaml_touch(tc_yaml *y, struct fy_node *n, int set);

void tc_yaml_free(tc_yaml *y);

/* ---- errors ---- */

tc_yaml_loc tc_yaml_node_loc(tc_yaml *y, struct fy_node *n);

/* one error at a node's position (n may be NULL: no position) */
void tc_yaml_report(tc_yaml *y, struct fy_node *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* one error at a known position */
void tc_yaml_report_at(tc_yaml *y, tc_yaml_loc loc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* records the errors as the thread's message (as many as fit, then
 * "(and N more)") and returns TC_ERR_CONFIG */
tc_status tc_yaml_fail(const tc_yaml_errors *errs);

/* ---- nodes and values ---- */

/* n with aliases resolved; NULL for an alias that does not resolve */
struct fy_node *tc_yaml_deref(struct fy_node *n);

/* 1 for a missing node, an empty plain scalar, ~ and null/Null/NULL */
int tc_yaml_is_null(struct fy_node *n);

/* a scalar's text as a NUL-terminated copy in buf (cut to cap); NULL when
 * n is not a scalar */
const char *tc_yaml_scalar_text(struct fy_node *n, char *buf, size_t cap);

/* "a mapping", "a list", "a value" or "nothing", for messages */
const char *tc_yaml_node_kind(struct fy_node *n);

/* path "." key (or key at the top level), cut to cap */
void tc_yaml_join(char *out, size_t cap, const char *path, const char *key);

char *tc_yaml_strdup(const char *s);

/* 1: *out holds the value; 0: not a number of that kind; -1: a number
 * beyond what the type holds (strtoll's ERANGE, 1e999), *out untouched */
int tc_yaml_parse_i64(const char *s, int64_t *out);
int tc_yaml_parse_f64(const char *s, double *out);

/* the text with every ${NAME} replaced (params, then the environment);
 * NULL with the error recorded at n when a name is malformed or undefined */
char *tc_yaml_substitute(tc_yaml *y, struct fy_node *n, const char *path, const char *text);

/* a path relative to the document's folder (absolute paths unchanged) */
char *tc_yaml_resolve_path(tc_yaml *y, const char *p);

/* ---- tables ---- */

/* reads the top-level `params:` mapping (NAME: value, or null for the
 * environment's) so that ${NAME} works everywhere; the table of the top
 * level should accept the key and ignore it */
void tc_yaml_read_params(tc_yaml *y, struct fy_node *root);

/* one value through its field */
void tc_yaml_set_field(tc_yaml *y, const tc_yaml_field *f, struct fy_node *v, const char *path,
                       void *obj);

/* walks a mapping through its table (at most 64 fields); returns a bitmask
 * of the fields present */
uint64_t tc_yaml_parse_map(tc_yaml *y, struct fy_node *map, const char *path,
                           const tc_yaml_field *fields, int nfields, void *obj);

/* 1 when key's bit is set in a tc_yaml_parse_map result */
int tc_yaml_seen(const tc_yaml_field *fields, int nfields, uint64_t seen, const char *key);

#define TC_YAML_NF(tab) ((int)(sizeof(tab) / sizeof((tab)[0])))

#endif
