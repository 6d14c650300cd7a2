/* loading a checkpoint: every tensor found through the key mapping,
 * checked against the model config's shapes, converted to fp32 in the
 * parameter layout's order */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_keys.h"
#include "fileio.h"
#include "json.h"
#include "safetensors.h"

typedef enum { LAYOUT_OPENCLIP, LAYOUT_HF } key_layout;

typedef struct {
    char canon[TC_CKPT_NAME_MAX]; /* open_clip name */
    int ignored;   /* an entry the model has no use for (position_ids, OpenAI's ints) */
    int part;      /* -1 whole tensor; 0,1,2 = q,k,v rows of in_proj_* (HF) */
    int transpose; /* stored as the transpose of the open_clip tensor (HF) */
    int used;
    const tc_st_tensor *t;
} src_entry;

static int cmp_entry(const void *a, const void *b) {
    const src_entry *x = a, *y = b;
    int c = strcmp(x->canon, y->canon);
    if (c) return c;
    return (x->part > y->part) - (x->part < y->part);
}

static const src_entry *find_entry(const src_entry *e, int n, const char *canon, int part) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(canon, e[mid].canon);
        if (c == 0) c = (part > e[mid].part) - (part < e[mid].part);
        if (c == 0) return &e[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static int same_shape(const tc_st_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

static tc_status shape_error(const char *file, const tc_st_tensor *t, const char *canon, int ndim,
                             const int64_t *want) {
    char a[96], b[96];
    shape_str(a, sizeof a, t->ndim, t->shape);
    shape_str(b, sizeof b, ndim, want);
    if (strcmp(t->name, canon) == 0)
        return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' has shape %s, the model config expects %s",
                       file, t->name, a, b);
    return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' (%s) has shape %s, the model config expects %s",
                   file, t->name, canon, a, b);
}

/* a BatchNorm buffer stored as integers (num_batches_tracked is int64 in
 * torch): the count as fp32, exact up to 2^24 */
static tc_status read_int_buffer(const tc_safetensors *st, const tc_st_tensor *t, float *dst) {
    for (uint64_t i = 0; i < t->numel; i++) {
        int64_t v;
        if (t->dtype == TC_DT_I64) {
            memcpy(&v, (const char *)t->data + 8 * i, 8);
        } else {
            int32_t w;
            memcpy(&w, (const char *)t->data + 4 * i, 4);
            v = w;
        }
        if (v < 0 || v > (1 << 24))
            return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' holds %lld, outside [0, 2^24]",
                           tc_st_source(st), t->name, (long long)v);
        dst[i] = (float)v;
    }
    return TC_OK;
}

/* dst NULL: the dtype is checked, nothing is read (tc_checkpoint_check) */
static tc_status read_tensor(const tc_safetensors *st, const tc_st_tensor *t, float *dst,
                             int buffer) {
    if (buffer && (t->dtype == TC_DT_I64 || t->dtype == TC_DT_I32))
        return dst ? read_int_buffer(st, t, dst) : TC_OK;
    if (!tc_dtype_is_float_readable(t->dtype))
        return tc_fail(TC_ERR_FORMAT,
                       "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                       tc_st_source(st), t->name, tc_dtype_name(t->dtype));
    return dst ? tc_st_tensor_to_f32(st, t, dst) : TC_OK;
}

/* fills params (layout order) from the file through the key mapping;
 * params NULL: names, shapes and dtypes are checked, no tensor is read */
static tc_status load_params(const tc_safetensors *st, src_entry *e, int n, key_layout kl,
                             const tc_param_layout *layout, float *params) {
    const char *file = tc_st_source(st);
    for (int i = 0; i < layout->count; i++) {
        const tc_param_info *p = &layout->params[i];
        float *dst = params ? params + p->offset : NULL;
        const src_entry *s = find_entry(e, n, p->name, -1);
        if (!s && kl == LAYOUT_HF && strstr(p->name, "attn.in_proj_")) {
            /* q, k, v stacked on dim 0: each is a third of the rows */
            int64_t part_shape[2] = {p->shape[0] / 3, p->ndim > 1 ? p->shape[1] : 0};
            size_t part_count = p->count / 3;
            for (int q = 0; q < 3; q++) {
                const src_entry *sq = find_entry(e, n, p->name, q);
                char hf[TC_CKPT_NAME_MAX];
                if (!sq) {
                    tc_ckpt_canon_to_hf(p->name, q, hf, sizeof hf);
                    return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' is missing (part of %s)", file,
                                   hf, p->name);
                }
                if (!same_shape(sq->t, p->ndim, part_shape))
                    return shape_error(file, sq->t, p->name, p->ndim, part_shape);
                TC_TRY(read_tensor(st, sq->t, dst ? dst + (size_t)q * part_count : NULL, 0));
                ((src_entry *)sq)->used = 1;
            }
            continue;
        }
        if (!s && p->buffer && p->ndim == 0) {
            /* a BatchNorm's batch count, absent from older state dicts (torch
             * itself fills it in then); the running statistics are required */
            dst[0] = 0.0f;
            continue;
        }
        if (!s) {
            char hf[TC_CKPT_NAME_MAX];
            if (kl == LAYOUT_HF && tc_ckpt_canon_to_hf(p->name, -1, hf, sizeof hf))
                return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' (%s) is missing", file, hf, p->name);
            return tc_fail(TC_ERR_FORMAT, "%s: tensor '%s' is missing", file, p->name);
        }
        const tc_st_tensor *t = s->t;
        if (p->ndim == 0) {
            /* logit_scale is [] in open_clip and HF, [1] in some exports */
            if (!(t->ndim == 0 || (t->ndim == 1 && t->shape[0] == 1)))
                return shape_error(file, t, p->name, 0, p->shape);
            TC_TRY(read_tensor(st, t, dst, p->buffer));
        } else if (s->transpose) {
            int64_t want[2] = {p->shape[1], p->shape[0]};
            if (p->ndim != 2 || !same_shape(t, 2, want))
                return shape_error(file, t, p->name, 2, want);
            if (!dst) {
                TC_TRY(read_tensor(st, t, NULL, 0));
                ((src_entry *)s)->used = 1;
                continue;
            }
            float *tmp = malloc(p->count * sizeof *tmp);
            if (!tmp) return tc_fail(TC_ERR_OOM, "%s: out of memory", file);
            tc_status rs = read_tensor(st, t, tmp, 0);
            if (rs != TC_OK) {
                free(tmp);
                return rs;
            }
            size_t R = (size_t)p->shape[0], C = (size_t)p->shape[1];
            for (size_t r = 0; r < R; r++)
                for (size_t c = 0; c < C; c++)
                    dst[r * C + c] = tmp[c * R + r];
            free(tmp);
        } else {
            if (!same_shape(t, p->ndim, p->shape))
                return shape_error(file, t, p->name, p->ndim, p->shape);
            TC_TRY(read_tensor(st, t, dst, p->buffer));
        }
        ((src_entry *)s)->used = 1;
    }
    for (int i = 0; i < n; i++) {
        if (!e[i].ignored && !e[i].used) {
            if (strcmp(e[i].t->name, e[i].canon) == 0)
                return tc_fail(TC_ERR_FORMAT,
                               "%s: unexpected tensor '%s': not part of the model the config "
                               "describes",
                               file, e[i].t->name);
            return tc_fail(TC_ERR_FORMAT,
                           "%s: unexpected tensor '%s' (%s): not part of the model the config "
                           "describes",
                           file, e[i].t->name, e[i].canon);
        }
    }
    return TC_OK;
}

static tc_status build_entries(const tc_safetensors *st, src_entry **out, int *n_out,
                               key_layout *kl) {
    int n = tc_st_count(st);
    src_entry *e = calloc(n > 0 ? (size_t)n : 1, sizeof *e);
    if (!e) return tc_fail(TC_ERR_OOM, "out of memory");
    *kl = LAYOUT_OPENCLIP;
    for (int i = 0; i < n; i++) {
        const char *k =
            tc_ckpt_strip(tc_ckpt_strip(tc_st_tensor_at(st, i)->name, "state_dict."), "module.");
        if (tc_ckpt_starts_with(k, "vision_model.") || tc_ckpt_starts_with(k, "text_model."))
            *kl = LAYOUT_HF;
    }
    for (int i = 0; i < n; i++) {
        const tc_st_tensor *t = tc_st_tensor_at(st, i);
        e[i].t = t;
        e[i].part = -1;
        if (strlen(t->name) >= TC_CKPT_NAME_MAX - 8) {
            /* cannot be a model key; reported as unexpected unless it matches nothing */
            snprintf(e[i].canon, TC_CKPT_NAME_MAX, "%.100s...", t->name);
            continue;
        }
        if (*kl == LAYOUT_HF) {
            const char *k = tc_ckpt_strip(tc_ckpt_strip(t->name, "state_dict."), "module.");
            int r = tc_ckpt_hf_to_canon(k, e[i].canon, &e[i].part, &e[i].transpose);
            if (r == 0)
                e[i].ignored = 1;
            else if (r < 0)
                snprintf(e[i].canon, TC_CKPT_NAME_MAX, "%s", k);
        } else {
            e[i].ignored = tc_ckpt_openclip_canon(t->name, e[i].canon);
        }
    }
    qsort(e, (size_t)n, sizeof *e, cmp_entry);
    for (int i = 1; i < n; i++)
        if (!e[i].ignored && !e[i - 1].ignored && cmp_entry(&e[i], &e[i - 1]) == 0) {
            tc_status s = tc_fail(TC_ERR_FORMAT, "%s: tensors '%s' and '%s' both map to '%s'",
                                  tc_st_source(st), e[i - 1].t->name, e[i].t->name, e[i].canon);
            free(e);
            return s;
        }
    *out = e;
    *n_out = n;
    return TC_OK;
}

/* params_out NULL: everything but reading the tensors (tc_checkpoint_check) */
static tc_status load(const char *path, const tc_model_config *hint, tc_model_config *cfg_out,
                      tc_param_layout *layout_out, float **params_out) {
    if (params_out) *params_out = NULL;
    memset(layout_out, 0, sizeof *layout_out);
    char *wpath = NULL, *cpath = NULL;
    tc_safetensors *st = NULL;
    src_entry *entries = NULL;
    float *params = NULL;
    int n = 0;
    key_layout kl = LAYOUT_OPENCLIP;
    tc_model_config cfg;
    tc_status s = tc_checkpoint_resolve(path, &wpath, &cpath);
    if (s != TC_OK) goto fail;
    s = tc_st_open(&st, wpath);
    if (s != TC_OK) goto fail;
    const char *meta_cfg = tc_st_metadata(st, "tinyclip_model_cfg");
    if (meta_cfg) {
        char src[1200];
        snprintf(src, sizeof src, "%s (__metadata__ tinyclip_model_cfg)", wpath);
        s = tc_model_config_parse(&cfg, meta_cfg, strlen(meta_cfg), src);
        if (s != TC_OK) goto fail;
        cfg.name[0] = 0; /* named after the checkpoint below */
    } else if (cpath) {
        s = tc_model_config_load(&cfg, cpath);
        if (s != TC_OK) goto fail;
    } else if (hint) {
        cfg = *hint;
        s = tc_model_config_validate(&cfg, hint->name[0] ? hint->name : "--model");
        if (s != TC_OK) goto fail;
    } else {
        s = tc_fail(TC_ERR_CONFIG,
                    "%s: no model config found beside the weights; pass --model CONFIG.json "
                    "(the activation, GELU or QuickGELU, cannot be inferred from weights)",
                    wpath);
        goto fail;
    }
    /* name the model after the checkpoint when the config has no useful name */
    if (!cfg.name[0] || strcmp(cfg.name, "open_clip_config") == 0 ||
        strcmp(cfg.name, "config") == 0) {
        if (hint && hint->name[0])
            snprintf(cfg.name, sizeof cfg.name, "%s", hint->name);
        else {
            /* the directory or file name, without a trailing slash or .safetensors */
            char tmp[1024];
            snprintf(tmp, sizeof tmp, "%s", path);
            size_t n = strlen(tmp);
            while (n > 1 && tmp[n - 1] == '/')
                tmp[--n] = 0;
            if (n > 12 && strcmp(tmp + n - 12, ".safetensors") == 0) tmp[n - 12] = 0;
            const char *b = strrchr(tmp, '/');
            snprintf(cfg.name, sizeof cfg.name, "%s", b ? b + 1 : tmp);
        }
    }
    s = build_entries(st, &entries, &n, &kl);
    if (s != TC_OK) goto fail;
    s = tc_param_layout_build(layout_out, &cfg);
    if (s != TC_OK) goto fail;
    /* zero-filled: the padding between tensors stays zero */
    if (params_out) params = calloc(layout_out->total ? layout_out->total : 1, sizeof *params);
    if (params_out && !params) {
        s = tc_fail(TC_ERR_OOM, "%s: out of memory for %zu parameters", wpath, layout_out->total);
        goto fail;
    }
    s = load_params(st, entries, n, kl, layout_out, params);
    if (s != TC_OK) goto fail;
    *cfg_out = cfg;
    if (params_out) *params_out = params;
    free(entries);
    tc_st_close(st);
    free(wpath);
    free(cpath);
    return TC_OK;
fail:
    free(params);
    tc_param_layout_free(layout_out);
    free(entries);
    tc_st_close(st);
    free(wpath);
    free(cpath);
    return s;
}

tc_status tc_checkpoint_load(const char *path, const tc_model_config *hint,
                             tc_model_config *cfg_out, tc_param_layout *layout_out,
                             float **params_out) {
    return load(path, hint, cfg_out, layout_out, params_out);
}

tc_status tc_checkpoint_check(const char *path, const tc_model_config *hint,
                              tc_model_config *cfg_out) {
    tc_param_layout layout;
    tc_status s = load(path, hint, cfg_out, &layout, NULL);
    if (s == TC_OK) tc_param_layout_free(&layout);
    return s;
}
