#include "inherit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tc_inherit_options tc_inherit_defaults(void) { return (tc_inherit_options){.vision = 1, .text = 1}; }

tc_status tc_inherit_layer_map(int teacher_depth, int student_depth, int *idx) {
    if (teacher_depth < 0 || student_depth < 0 || teacher_depth > TC_MAX_LAYERS ||
        student_depth > TC_MAX_LAYERS)
        return tc_fail(TC_ERR_ARG, "layer map: depths %d -> %d out of range", teacher_depth,
                       student_depth);
    if (student_depth > teacher_depth)
        return tc_fail(TC_ERR_CONFIG,
                       "layer map: the student has %d layers, more than the teacher's %d",
                       student_depth, teacher_depth);
    int step = teacher_depth / (student_depth > 1 ? student_depth : 1);
    for (int i = 0; i < student_depth; i++) idx[i] = i * step;
    return TC_OK;
}

/* "prefix" "resblocks.%d." "suffix" -> layer and the offset of the suffix */
static int parse_block(const char *name, int *layer, const char **suffix, size_t *prefix_len) {
    const char *r = strstr(name, "resblocks.");
    if (!r) return 0;
    const char *p = r + strlen("resblocks.");
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end != '.' || v < 0 || v >= TC_MAX_LAYERS) return 0;
    *layer = (int)v;
    *suffix = end + 1;
    *prefix_len = (size_t)(r - name);
    return 1;
}

/* "visual.layer<S>.<I>.<suffix>" (a ResNet bottleneck) -> stage S-1 and block I */
static int parse_rn_block(const char *name, int *stage, int *block, const char **suffix) {
    int s = 0, b = 0, n = 0;
    if (sscanf(name, "visual.layer%d.%d.%n", &s, &b, &n) != 2 || n == 0) return 0;
    if (s < 1 || s > TC_RESNET_STAGES || b < 0 || b >= TC_MAX_LAYERS) return 0;
    *stage = s - 1;
    *block = b;
    *suffix = name + n;
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int in_bounds(const tc_param_info *p, size_t total) {
    return p->offset <= total && p->count <= total - p->offset;
}

/* student[:s0, :s1, ...] = teacher[:s0, :s1, ...] for up to 4 dims */
static void copy_leading(float *dst, const tc_param_info *sp, const float *src,
                         const tc_param_info *tp) {
    int64_t ss[4] = {1, 1, 1, 1}, ts[4] = {1, 1, 1, 1};
    /* right-align the shapes in 4 dims */
    for (int i = 0; i < sp->ndim; i++) ss[4 - sp->ndim + i] = sp->shape[i];
    for (int i = 0; i < tp->ndim; i++) ts[4 - tp->ndim + i] = tp->shape[i];
    for (int64_t a = 0; a < ss[0]; a++)
        for (int64_t b = 0; b < ss[1]; b++)
            for (int64_t c = 0; c < ss[2]; c++) {
                size_t so = (size_t)(((a * ss[1] + b) * ss[2] + c) * ss[3]);
                size_t to = (size_t)(((a * ts[1] + b) * ts[2] + c) * ts[3]);
                memcpy(dst + so, src + to, (size_t)ss[3] * sizeof *dst);
            }
}

static tc_status inherit_tensor(const tc_param_info *sp, float *student, const tc_param_info *tp,
                                const float *teacher) {
    const char *name = sp->name;
    if (ends_with(name, "attn.in_proj_weight") || ends_with(name, "attn.in_proj_bias")) {
        int is_w = ends_with(name, "weight");
        if (sp->ndim != (is_w ? 2 : 1) || tp->ndim != sp->ndim)
            return tc_fail(TC_ERR_CONFIG, "%s: unexpected rank", name);
        int64_t rs = sp->shape[0], rt = tp->shape[0];
        if (rs % 3 || rt % 3)
            return tc_fail(TC_ERR_CONFIG, "%s: %lld rows is not q, k and v stacked", name,
                           (long long)(rs % 3 ? rs : rt));
        /* each of q, k, v: its first heads (the caller checked that both
         * towers' heads have one size) */
        int64_t as = rs / 3, at = rt / 3;
        int64_t cs = is_w ? sp->shape[1] : 1, ct = is_w ? tp->shape[1] : 1;
        if (as > at)
            return tc_fail(TC_ERR_CONFIG, "%s: the student's attention is %lld wide, the teacher's %lld",
                           name, (long long)as, (long long)at);
        if (cs > ct)
            return tc_fail(TC_ERR_CONFIG, "%s: student width %lld exceeds the teacher's %lld",
                           name, (long long)cs, (long long)ct);
        /* view (3, NH, HS, C) cut to [:, :NH_s, :, :C_s]: the first heads of q, k and v */
        for (int q = 0; q < 3; q++)
            for (int64_t r = 0; r < as; r++)
                memcpy(student + (size_t)((q * as + r) * cs), teacher + (size_t)((q * at + r) * ct),
                       (size_t)cs * sizeof *student);
        return TC_OK;
    }
    if (tp->count == 1 && sp->count == 1) {
        student[0] = teacher[0];
        return TC_OK;
    }
    if (sp->ndim != tp->ndim)
        return tc_fail(TC_ERR_CONFIG, "%s: rank %d in the student, %d in the teacher", name,
                       sp->ndim, tp->ndim);
    int is_pos = ends_with(name, "positional_embedding");
    if (is_pos && sp->shape[0] != tp->shape[0]) {
        int vis = strncmp(name, "visual.", 7) == 0;
        return tc_fail(TC_ERR_CONFIG,
                       "%s: the student has %lld %s, the teacher %lld (a different %s cannot "
                       "inherit the positional embedding)",
                       name, (long long)sp->shape[0], vis ? "image tokens" : "text positions",
                       (long long)tp->shape[0], vis ? "image grid" : "context length");
    }
    for (int i = 0; i < sp->ndim; i++)
        if (sp->shape[i] > tp->shape[i])
            return tc_fail(TC_ERR_CONFIG, "%s: student dim %d is %lld, larger than the teacher's %lld",
                           name, i, (long long)sp->shape[i], (long long)tp->shape[i]);
    copy_leading(student, sp, teacher, tp);
    return TC_OK;
}

/* heads are inherited whole: a student head is a teacher head */
static tc_status same_head_size(int on, const tc_tower_config *t, const tc_tower_config *s,
                                const char *what) {
    if (!on || t->head_width == s->head_width) return TC_OK;
    return tc_fail(TC_ERR_CONFIG,
                   "%s tower: the student's heads are %d wide, the teacher's %d: a head cannot be "
                   "inherited across head widths (give the student head_width %d)",
                   what, s->head_width, t->head_width, t->head_width);
}

/* the teacher layer of each student layer: an explicit list, checked, or interval_front */
static tc_status layer_map(int teacher_depth, int student_depth, const int *list, int n, int *idx) {
    if (!list) return tc_inherit_layer_map(teacher_depth, student_depth, idx);
    if (n != student_depth)
        return tc_fail(TC_ERR_CONFIG, "the layer list has %d entries for a student of %d layers", n,
                       student_depth);
    for (int i = 0; i < n; i++) {
        if (list[i] < 0 || list[i] >= teacher_depth)
            return tc_fail(TC_ERR_CONFIG, "layer list entry %d is %d, outside the teacher's 0..%d", i,
                           list[i], teacher_depth - 1);
        idx[i] = list[i];
    }
    return TC_OK;
}

/* a ResNet's blocks: interval_front within each stage, as TinyCLIP maps
 * visual.layer<S>.<I>. (the first block of a stage, which holds the
 * downsample branch, always from the teacher's first) */
static tc_status stage_maps(const tc_tower_config *t, const tc_tower_config *s,
                            const tc_inherit_options *o, int maps[TC_RESNET_STAGES][TC_MAX_LAYERS]) {
    if (t->resnet != s->resnet)
        return tc_fail(TC_ERR_CONFIG, "vision tower: a %s student cannot inherit from a %s teacher",
                       s->resnet ? "ResNet" : "ViT", t->resnet ? "ResNet" : "ViT");
    if (o->vision_layers)
        return tc_fail(TC_ERR_CONFIG,
                       "vision tower: an explicit layer list is for transformer towers; a ResNet's "
                       "blocks are mapped per stage");
    for (int k = 0; k < TC_RESNET_STAGES; k++) {
        tc_status st = tc_inherit_layer_map(t->stages[k], s->stages[k], maps[k]);
        if (st != TC_OK) return tc_fail_context(st, "vision tower, stage %d", k + 1);
    }
    return TC_OK;
}

tc_status tc_inherit_manual(const tc_model_config *teacher_cfg, const tc_param_layout *tl,
                            const float *teacher_params, const tc_model_config *student_cfg,
                            const tc_param_layout *sl, float *student_params,
                            const tc_inherit_options *opt) {
    tc_inherit_options o = opt ? *opt : tc_inherit_defaults();
    int vmap[TC_MAX_LAYERS], tmap[TC_MAX_LAYERS], smap[TC_RESNET_STAGES][TC_MAX_LAYERS];
    const int resnet = student_cfg->vision.resnet || teacher_cfg->vision.resnet;
    /* a ResNet's attention pool is cut by leading rows, as TinyCLIP does, whatever its heads */
    if (!resnet)
        TC_TRY(same_head_size(o.vision, &teacher_cfg->vision, &student_cfg->vision, "vision"));
    TC_TRY(same_head_size(o.text, &teacher_cfg->text, &student_cfg->text, "text"));
    if (o.vision && resnet) {
        TC_TRY(stage_maps(&teacher_cfg->vision, &student_cfg->vision, &o, smap));
    } else if (o.vision) {
        tc_status st = layer_map(teacher_cfg->vision.layers, student_cfg->vision.layers,
                                 o.vision_layers, o.n_vision_layers, vmap);
        if (st != TC_OK) return tc_fail_context(st, "vision tower");
    }
    if (o.text) {
        tc_status st = layer_map(teacher_cfg->text.layers, student_cfg->text.layers, o.text_layers,
                                 o.n_text_layers, tmap);
        if (st != TC_OK) return tc_fail_context(st, "text tower");
    }
    for (int i = 0; i < sl->count; i++) {
        const tc_param_info *sp = &sl->params[i];
        int vis = sp->tower == TC_TOWER_VISION;
        if (sp->tower == TC_TOWER_SHARED) continue; /* logit_scale keeps the student's value */
        if ((vis && !o.vision) || (!vis && !o.text)) continue;
        if (!in_bounds(sp, sl->total))
            return tc_fail(TC_ERR_ARG, "%s: outside the student buffer", sp->name);

        char tname[sizeof sp->name];
        int layer, stage;
        const char *suffix;
        size_t plen;
        if (vis && resnet && parse_rn_block(sp->name, &stage, &layer, &suffix)) {
            if (layer >= student_cfg->vision.stages[stage])
                return tc_fail(TC_ERR_ARG, "%s: block %d beyond the student's stage of %d", sp->name,
                               layer, student_cfg->vision.stages[stage]);
            snprintf(tname, sizeof tname, "visual.layer%d.%d.%s", stage + 1, smap[stage][layer],
                     suffix);
        } else if (parse_block(sp->name, &layer, &suffix, &plen)) {
            int nl = vis ? student_cfg->vision.layers : student_cfg->text.layers;
            if (layer >= nl)
                return tc_fail(TC_ERR_ARG, "%s: layer %d beyond the student's %d layers", sp->name,
                               layer, nl);
            int tlayer = vis ? vmap[layer] : tmap[layer];
            snprintf(tname, sizeof tname, "%.*sresblocks.%d.%s", (int)plen, sp->name, tlayer,
                     suffix);
        } else {
            snprintf(tname, sizeof tname, "%s", sp->name);
        }
        const tc_param_info *tp = tc_param_find(tl, tname);
        if (!tp)
            return tc_fail(TC_ERR_CONFIG, "%s: the teacher has no tensor %s to inherit from",
                           sp->name, tname);
        if (!in_bounds(tp, tl->total))
            return tc_fail(TC_ERR_ARG, "%s: outside the teacher buffer", tp->name);
        TC_TRY(inherit_tensor(sp, student_params + sp->offset, tp, teacher_params + tp->offset));
    }
    return TC_OK;
}
