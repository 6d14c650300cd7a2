/* the aligned parameter arena (engine/params.h) on every shipped model
 * config: every tensor starts on a 256-byte boundary in the bf16 compute
 * copy and in the fp32 buffers (masters, gradients, moments), the padding
 * is outside every tensor, the packed order (train state, ZeRO-1) is the
 * tensors back to back, ZeRO-1's slices hold the elements they held before
 * the padding existed, the mask vectors' rows are aligned as well, and the
 * padding never reaches AdamW, the weights read back or a checkpoint. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "backend.h"
#include "checkpoint.h"
#include "l0.h"
#include "model.h"
#include "train.h"

static const char *source_dir(void) {
    const char *s = getenv("TC_SOURCE_DIR");
    return s && s[0] ? s : TC_SOURCE_DIR;
}

/* every .json of configs/models, in directory order; returns how many */
static int shipped_configs(tc_model_config *out, char (*names)[256], int cap) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/configs/models", source_dir());
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (tc_model_config_load(&out[n], path) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
        snprintf(names[n], 256, "%s", e->d_name);
        n++;
    }
    closedir(d);
    assert_true(n >= 10); /* the ten configs shipped with this test */
    return n;
}

/* the layout's invariants; name for the messages */
static void check_layout(const char *name, const tc_param_layout *l) {
    size_t end = 0, packed = 0;
    for (int i = 0; i < l->count; i++) {
        const tc_param_info *p = &l->params[i];
        if (p->offset % TC_PARAM_ALIGN != 0)
            fail_msg("%s: %s at element %zu is not on the alignment", name, p->name, p->offset);
        /* bf16 compute copy and fp32 buffers: 256-byte boundaries */
        if ((p->offset * 2) % 256 != 0 || (p->offset * 4) % 256 != 0)
            fail_msg("%s: %s: byte offsets %zu (bf16), %zu (fp32)", name, p->name, p->offset * 2,
                     p->offset * 4);
        if (p->offset < end || p->offset - end >= TC_PARAM_ALIGN)
            fail_msg("%s: %s starts at %zu, the previous tensor ends at %zu", name, p->name,
                     p->offset, end);
        if (p->packed != packed)
            fail_msg("%s: %s packed at %zu, expected %zu", name, p->name, p->packed, packed);
        /* the packed order maps back to the tensor's elements */
        assert_int_equal(tc_param_offset_of_packed(l, p->packed), p->offset);
        if (p->count > 0)
            assert_int_equal(tc_param_offset_of_packed(l, p->packed + p->count - 1),
                             p->offset + p->count - 1);
        end = p->offset + p->count;
        packed += p->count;
    }
    assert_int_equal(l->packed_total, packed);
    tc_param_counts c = tc_param_count(l);
    assert_int_equal(l->packed_total, c.total + c.buffers); /* BatchNorm buffers: tensors too */
    assert_true(l->total >= end && l->total - end < TC_PARAM_ALIGN);
    assert_int_equal(l->total % TC_PARAM_ALIGN, 0);
    assert_int_equal(tc_param_offset_of_packed(l, l->packed_total), l->total);
}

/* ZeRO-1's slices: in the packed order, exactly the slicing of a buffer
 * without padding (ceil(P/W) rounded up to 64 per rank); in the buffer,
 * contiguous ranges covering it, each holding its packed slice */
static void check_shards(const char *name, const tc_param_layout *l, int W) {
    size_t *a = calloc(4 * (size_t)W, sizeof *a);
    size_t *plo = a, *pn = a + W, *lo = a + 2 * W, *n = a + 3 * W;
    tc_param_shards(l, W, plo, pn, lo, n);
    size_t P = l->packed_total, per = ((P + W - 1) / W + 63) / 64 * 64, at = 0, bat = 0;
    for (int r = 0; r < W; r++) {
        size_t want = at >= P ? 0 : (P - at < per ? P - at : per);
        if (plo[r] != at || pn[r] != want)
            fail_msg("%s W=%d rank %d: packed slice [%zu, +%zu), expected [%zu, +%zu)", name, W, r,
                     plo[r], pn[r], at, want);
        if (lo[r] != bat) fail_msg("%s W=%d rank %d: buffer slice not contiguous", name, W, r);
        /* the tensors' elements inside the buffer slice are its packed slice */
        size_t inside = 0;
        for (int i = 0; i < l->count; i++) {
            const tc_param_info *p = &l->params[i];
            size_t s = p->offset > lo[r] ? p->offset : lo[r], e = p->offset + p->count;
            if (e > lo[r] + n[r]) e = lo[r] + n[r];
            if (s < e) {
                if (p->packed + (s - p->offset) < plo[r] ||
                    p->packed + (e - p->offset) > plo[r] + pn[r])
                    fail_msg("%s W=%d rank %d: %s outside its packed slice", name, W, r, p->name);
                inside += e - s;
            }
        }
        assert_int_equal(inside, pn[r]);
        at += want;
        bat += n[r];
    }
    assert_int_equal(at, P);
    assert_int_equal(bat, l->total);
    free(a);
}

/* the mask vectors of a teacher-shaped tower, either shape: aligned rows, a
 * round trip of z (n_z: the model's view, which a regular shape expands to) */
static void check_masks(const char *name, const tc_tower_config *t, tc_l0_shape shape) {
    tc_l0_masks m;
    /* an irregular or ResNet tower, or a width without whole heads, has none */
    if (tc_l0_masks_for_tower_shaped(&m, t, shape, name) != TC_OK) return;
    tc_l0_device_layout d = tc_l0_device_layout_of(&m);
    assert_int_equal(d.heads % TC_PARAM_ALIGN, 0);
    assert_int_equal(d.inter % TC_PARAM_ALIGN, 0);
    assert_int_equal(d.heads_stride % TC_PARAM_ALIGN, 0);
    assert_int_equal(d.inter_stride % TC_PARAM_ALIGN, 0);
    assert_true(d.heads >= (size_t)m.hidden && d.heads_stride >= m.heads &&
                d.inter_stride >= m.inter);
    float *z = malloc(m.n_z * sizeof *z), *back = malloc(m.n_z * sizeof *back);
    float *dev = malloc(d.total * sizeof *dev);
    for (size_t i = 0; i < m.n_z; i++)
        z[i] = (float)i + 1.0f;
    for (size_t i = 0; i < d.total; i++)
        dev[i] = NAN;
    tc_l0_to_device(&m, &d, dev, z);
    /* hidden first, layer 1's first head and first MLP unit on their rows */
    assert_true(dev[0] == 1.0f);
    if (t->layers > 1) {
        assert_true(dev[d.heads + d.heads_stride] == z[m.hidden + m.heads]);
        assert_true(dev[d.inter + d.inter_stride] ==
                    z[m.hidden + (size_t)m.layers * m.heads + m.inter]);
    }
    size_t zeros = 0;
    for (size_t i = 0; i < d.total; i++)
        zeros += dev[i] == 0.0f;
    assert_int_equal(zeros, d.total - m.n_z); /* the gaps cleared, nothing else */
    tc_l0_from_device(&m, &d, back, dev);
    assert_memory_equal(back, z, m.n_z * sizeof *z);
    free(z), free(back), free(dev);
    tc_l0_masks_free(&m);
}

static void test_shipped_configs(void **state) {
    (void)state;
    static tc_model_config cfgs[32];
    static char names[32][256];
    int n = shipped_configs(cfgs, names, 32);
    for (int c = 0; c < n; c++) {
        tc_param_layout l;
        if (tc_param_layout_build(&l, &cfgs[c]) != TC_OK)
            fail_msg("%s: %s", names[c], tc_last_error());
        check_layout(names[c], &l);
        static const int worlds[] = {1, 2, 3, 8, 64};
        for (size_t w = 0; w < sizeof worlds / sizeof worlds[0]; w++)
            check_shards(names[c], &l, worlds[w]);
        for (int k = 0; k < 2; k++) {
            tc_l0_shape shape = k ? TC_L0_REGULAR : TC_L0_IRREGULAR;
            check_masks(names[c], &cfgs[c].vision, shape);
            check_masks(names[c], &cfgs[c].text, shape);
        }
        printf("%-40s %3d tensors, %11zu elements, %7zu of padding (%.3f%%)\n", names[c], l.count,
               l.packed_total, l.total - l.packed_total,
               100.0 * (double)(l.total - l.packed_total) / (double)l.total);
        tc_param_layout_free(&l);
    }
}

/* the backend's buffers start on 256 bytes, so every view does */
static void test_buffers_aligned(void **state) {
    (void)state;
    tc_backend *be;
    assert_int_equal(tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}), TC_OK);
    tc_model_config cfg;
    tc_test_tiny_clip(&cfg, "tiny", 40, 24);
    tc_model *m;
    tc_model_options o = {.max_batch = 2, .train = 1, .masked = 1};
    assert_int_equal(tc_model_create(&m, be, &cfg, o), TC_OK);
    assert_int_equal((uintptr_t)tc_model_params(m) % 256, 0);
    assert_int_equal((uintptr_t)tc_model_grads(m) % 256, 0);
    assert_int_equal((uintptr_t)tc_model_compute_weights(m) % 256, 0);
    const tc_param_layout *l = tc_model_layout(m);
    for (int i = 0; i < l->count; i++) {
        assert_int_equal((uintptr_t)(tc_model_params(m) + l->params[i].offset) % 256, 0);
        assert_int_equal(
            (uintptr_t)tc_act_offset(be, tc_model_compute_weights(m), l->params[i].offset) % 256,
            0);
    }
    tc_model_destroy(m);
    be->destroy(be);
}

/* NaN in the padding of the weights: three training steps give the
 * tensors (a ResNet's BatchNorm buffers included) the bits of a run with
 * zero padding, the padding keeps its NaN (AdamW never wrote it, the
 * gradient norm never read it), and a checkpoint of the NaN-padded weights
 * is the same file */
static void padding_untouched(const tc_model_config *model) {
    tc_backend *be;
    assert_int_equal(tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}), TC_OK);
    const tc_model_config cfg = *model;
    const int B = 4;
    int S = cfg.vision.image_size, T = cfg.text.context_length;
    float *images = malloc((size_t)B * 3 * S * S * sizeof *images);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids);
    float *out[2] = {NULL, NULL};
    size_t P = 0;
    for (int run = 0; run < 2; run++) {
        tc_model *m;
        tc_model_options o = {.max_batch = B, .train = 1};
        assert_int_equal(tc_model_create(&m, be, &cfg, o), TC_OK);
        assert_int_equal(tc_model_init_random(m, 5), TC_OK);
        const tc_param_layout *l = tc_model_layout(m);
        P = l->total;
        out[run] = malloc(P * sizeof(float));
        assert_int_equal(tc_model_get_params(m, out[run]), TC_OK);
        tc_test_set_padding(l, out[run], run ? NAN : 0.0f);
        assert_int_equal(tc_model_set_params(m, out[run]), TC_OK);
        tc_optim_config oc = tc_optim_default();
        oc.warmup_steps = 1;
        oc.grad_clip = 1.0f; /* the norm takes part in every update */
        tc_loss_config lc = {1.0f, 0.0f, 0.0f, 50.0f};
        tc_trainer *tr;
        assert_int_equal(tc_trainer_create(&tr, m, NULL, &oc, &lc), TC_OK);
        for (int s = 0; s < 3; s++) {
            tc_test_clip_batch(images, ids, B, &cfg, s);
            tc_step_result r;
            assert_int_equal(tc_trainer_step(tr, images, ids, B, &r), TC_OK);
            assert_false(r.skipped);
        }
        assert_int_equal(tc_model_get_params(m, out[run]), TC_OK);
        for (int i = 0; i < l->count; i++) {
            const tc_param_info *p = &l->params[i];
            if (run && memcmp(out[0] + p->offset, out[1] + p->offset, p->count * sizeof(float)))
                fail_msg("%s differs with NaN padding", p->name);
        }
        char *dir = tc_make_tempdir("pad");
        assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, &cfg, l, out[run]), TC_OK);
        char path[1024];
        snprintf(path, sizeof path, "%s/open_clip_model.safetensors", dir);
        size_t len;
        char *file = tc_read_file(path, &len);
        assert_non_null(file);
        static char *first;
        static size_t first_len;
        if (!run) {
            first = file, first_len = len;
        } else {
            assert_int_equal(len, first_len);
            assert_memory_equal(file, first, len);
            free(first), free(file);
        }
        tc_rmtree(dir);
        free(dir);
        /* the padding of the second run is still NaN */
        if (run) {
            size_t nan = 0;
            for (size_t i = 0; i < P; i++)
                nan += isnan(out[1][i]);
            assert_int_equal(nan, l->total - l->packed_total);
        }
        tc_trainer_destroy(tr);
        tc_model_destroy(m);
    }
    free(out[0]), free(out[1]);
    free(images), free(ids);
    be->destroy(be);
}

static void test_padding_untouched(void **state) {
    (void)state;
    tc_model_config cfg;
    tc_test_tiny_clip(&cfg, "tiny", 40, 24);
    padding_untouched(&cfg);
}

/* a ResNet image tower: convolutions and BatchNorms (five tensors each) */
static void test_padding_untouched_resnet(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/models/fmnist-rn-student.json", source_dir());
    tc_model_config cfg;
    if (tc_model_config_load(&cfg, path) != TC_OK) fail_msg("%s: %s", path, tc_last_error());
    assert_true(cfg.vision.resnet);
    padding_untouched(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_configs),
        cmocka_unit_test(test_buffers_aligned),
        cmocka_unit_test(test_padding_untouched),
        cmocka_unit_test(test_padding_untouched_resnet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
