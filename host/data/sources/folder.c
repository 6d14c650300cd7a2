/* image folders for zero-shot evaluation, torchvision ImageFolder layout:
 * DIR/<class>/<image>.{jpg,jpeg,png} (extension case-insensitive); classes
 * are the sub-folders in byte order (class index = position), images in
 * byte order inside each class. class names for the text prompts come from
 * a class-name file, one name per line in class order (DIR/classnames.txt
 * when present, or opts->classnames); without one, the folder name with
 * '_' read as ' '. a caption is DIR/<class>/<stem>.txt when it exists, else
 * a template caption from the class name (caption_templates.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caption_templates.h"
#include "data_file.h"
#include "source.h"

#define FOLDER_MAX_IMAGE ((size_t)64 << 20)

typedef struct {
    char root[4096];
    char **files; /* relative "<class>/<file>" */
    int32_t *labels;
    int64_t n;
} folder;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_image_name(const char *n) {
    const char *dot = strrchr(n, '.');
    if (!dot || n[0] == '.') return 0;
    return strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 ||
           strcasecmp(dot, ".png") == 0;
}

static tc_status list_dir(const char *path, int want_dirs, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(path);
    if (!d) return tc_fail(TC_ERR_IO, "%s: cannot open folder: %s", path, strerror(errno));
    char **v = NULL;
    int cnt = 0, cap = 0;
    struct dirent *e;
    tc_status st = TC_OK;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat sb;
        if (stat(p, &sb) != 0) continue;
        if (want_dirs ? !S_ISDIR(sb.st_mode) : !(S_ISREG(sb.st_mode) && is_image_name(e->d_name)))
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, sizeof(char *) * (size_t)cap);
            if (!nv) {
                st = tc_fail(TC_ERR_OOM, "%s: out of memory", path);
                break;
            }
            v = nv;
        }
        if (!(v[cnt] = strdup(e->d_name))) {
            st = tc_fail(TC_ERR_OOM, "%s: out of memory", path);
            break;
        }
        cnt++;
    }
    closedir(d);
    if (st != TC_OK) {
        tc_strlist_free(v, cnt);
        return st;
    }
    if (cnt) qsort(v, (size_t)cnt, sizeof(char *), cmp_str);
    *out = v;
    *n = cnt;
    return TC_OK;
}

static void folder_destroy(tc_source *s) {
    folder *f = s->impl;
    if (f) {
        tc_strlist_free(f->files, (int)f->n);
        free(f->labels);
        free(f);
    }
    tc_strlist_free(s->class_names, s->num_classes);
    free(s);
}

/* a small regular file, NUL-terminated; NULL with the reason in why */
static char *read_small(const char *p, size_t *len, size_t limit, char *why, size_t why_cap) {
    uint8_t *b = NULL;
    if (tc_data_read_file(p, limit, &b, len, why, why_cap) != 0) return NULL;
    return (char *)b;
}

static tc_status folder_get(tc_source *s, int64_t index, tc_sample *out) {
    folder *f = s->impl;
    memset(out, 0, sizeof *out);
    out->label = -1;
    if (index < 0 || index >= f->n)
        return tc_fail(TC_ERR_ARG, "%s: index %lld out of range", f->root, (long long)index);
    snprintf(out->key, sizeof out->key, "%s", f->files[index]);
    snprintf(out->where, sizeof out->where, "%.511s", f->root);
    out->label = f->labels[index];
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", f->root, f->files[index]);
    size_t n = 0;
    char why[160];
    out->image = (uint8_t *)read_small(p, &n, FOLDER_MAX_IMAGE, why, sizeof why);
    if (!out->image) {
        snprintf(out->bad, sizeof out->bad, "image file %s", why);
        return TC_OK;
    }
    out->image_len = n;
    /* sidecar caption: same stem, .txt */
    char *dot = strrchr(p, '.');
    if (dot && (size_t)(dot - p) + 5 < sizeof p) {
        strcpy(dot, ".txt");
        size_t cl = 0;
        char *cap = access(p, F_OK) == 0 ? read_small(p, &cl, 1 << 20, why, sizeof why) : NULL;
        if (!cap && access(p, F_OK) == 0) {
            /* a caption file that is there but cannot be read: not silently replaced */
            snprintf(out->bad, sizeof out->bad, "caption file %s", why);
            return TC_OK;
        }
        if (cap) {
            while (cl > 0 && (cap[cl - 1] == '\n' || cap[cl - 1] == '\r'))
                cap[--cl] = 0;
            out->caption = cap;
            out->caption_len = cl;
            if (!tc_utf8_valid(cap, cl))
                snprintf(out->bad, sizeof out->bad, "caption is not valid UTF-8");
            return TC_OK;
        }
    }
    char buf[1024];
    size_t cl = tc_caption_format(buf, sizeof buf, tc_caption_pick(3, (uint64_t)index),
                                  s->class_names[out->label]);
    out->caption = malloc(cl + 1);
    if (!out->caption) {
        tc_sample_clear(out);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", f->root);
    }
    memcpy(out->caption, buf, cl + 1);
    out->caption_len = cl;
    return TC_OK;
}

static tc_status read_classnames(const char *path, int want, char ***out) {
    size_t n = 0;
    char why[160];
    char *text = read_small(path, &n, 16 << 20, why, sizeof why);
    if (!text) return tc_fail(TC_ERR_IO, "%s: class-name file %s", path, why);
    char **names = calloc((size_t)want + 1, sizeof(char *));
    int cnt = 0;
    tc_status st = TC_OK;
    char *p = text;
    while (names && st == TC_OK && *p) {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        size_t l = len;
        while (l > 0 && (p[l - 1] == '\r' || p[l - 1] == ' '))
            l--;
        if (l > 0) {
            if (cnt >= want) {
                st = tc_fail(TC_ERR_FORMAT, "%s: more names than the %d class folders", path, want);
                break;
            }
            names[cnt] = malloc(l + 1);
            if (!names[cnt]) break;
            memcpy(names[cnt], p, l);
            names[cnt][l] = 0;
            if (!tc_utf8_valid(names[cnt], l))
                st = tc_fail(TC_ERR_FORMAT, "%s: line %d is not valid UTF-8", path, cnt + 1);
            cnt++;
        }
        p += len + (nl ? 1 : 0);
    }
    free(text);
    if (!names) return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    if (st == TC_OK && cnt != want)
        st = tc_fail(TC_ERR_FORMAT, "%s: %d class names for %d class folders", path, cnt, want);
    if (st != TC_OK) {
        tc_strlist_free(names, want + 1);
        return st;
    }
    *out = names;
    return TC_OK;
}

tc_status tc_source_folder_open(const char *dir, const tc_source_opts *opts, tc_source **out) {
    *out = NULL;
    tc_source *s = calloc(1, sizeof *s);
    folder *f = calloc(1, sizeof *f);
    if (!s || !f) {
        free(s);
        free(f);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", dir);
    }
    s->impl = f;
    s->destroy = folder_destroy;
    snprintf(f->root, sizeof f->root, "%s", dir);
    size_t rl = strlen(f->root);
    while (rl > 1 && f->root[rl - 1] == '/')
        f->root[--rl] = 0;
    char **classes = NULL;
    int nc = 0;
    tc_status st = list_dir(f->root, 1, &classes, &nc);
    if (st == TC_OK && nc == 0) st = tc_fail(TC_ERR_DATA, "%s: no class folders", f->root);
    int64_t cap = 0;
    for (int c = 0; st == TC_OK && c < nc; c++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", f->root, classes[c]);
        char **files = NULL;
        int nfiles = 0;
        st = list_dir(p, 0, &files, &nfiles);
        for (int i = 0; st == TC_OK && i < nfiles; i++) {
            if (f->n == cap) {
                cap = cap ? cap * 2 : 1024;
                char **nf = realloc(f->files, sizeof(char *) * (size_t)cap);
                int32_t *nl = nf ? realloc(f->labels, sizeof(int32_t) * (size_t)cap) : NULL;
                if (nf) f->files = nf;
                if (nl) f->labels = nl;
                if (!nf || !nl) {
                    st = tc_fail(TC_ERR_OOM, "%s: out of memory", dir);
                    break;
                }
            }
            size_t len = strlen(classes[c]) + strlen(files[i]) + 2;
            f->files[f->n] = malloc(len);
            if (!f->files[f->n]) {
                st = tc_fail(TC_ERR_OOM, "%s: out of memory", dir);
                break;
            }
            snprintf(f->files[f->n], len, "%s/%s", classes[c], files[i]);
            f->labels[f->n] = c;
            f->n++;
        }
        tc_strlist_free(files, nfiles);
    }
    if (st == TC_OK) {
        char cn[8192];
        const char *cnp = opts ? opts->classnames : NULL;
        if (!cnp) {
            snprintf(cn, sizeof cn, "%s/classnames.txt", f->root);
            if (access(cn, F_OK) == 0) cnp = cn;
        }
        if (cnp) {
            st = read_classnames(cnp, nc, &s->class_names);
            if (st == TC_OK) {
                tc_strlist_free(classes, nc);
                classes = NULL;
            }
        } else {
            for (int c = 0; c < nc; c++)
                for (char *q = classes[c]; *q; q++)
                    if (*q == '_') *q = ' ';
            s->class_names = classes;
            classes = NULL;
        }
        s->num_classes = nc;
    }
    tc_strlist_free(classes, nc);
    if (st == TC_OK && f->n == 0)
        st = tc_fail(TC_ERR_DATA, "%s: no images in the class folders", dir);
    if (st != TC_OK) {
        folder_destroy(s);
        return st;
    }
    s->kind = "folder";
    s->indexable = 1;
    s->num_samples = f->n;
    s->get = folder_get;
    *out = s;
    return TC_OK;
}
