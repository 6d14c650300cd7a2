/* test_cuda_ops' cases for AdamW and its device-side step gate (cuda/optimizer.cu), compiled into
 * that binary: the CUDA backend against the CPU reference backend in the fp32 and the mixed (bf16)
 * mode, with the harness and tolerances of tests/cuda/cuda_harness.h */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_cases.h"
#include "cuda_harness.h"
#include "testutil.h"

#include "backend.h"
#include "status.h"

#ifdef TC_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "tc_cuda.h"

/* the device-side step: step_gate's counts and AdamW gated by them (skips a
 * non-finite step, bias correction from the device's count), as the CPU */
void test_step_gate_adamw(void **state) {
    (void)state;
    const size_t total = g_quick ? 2000 : 300007;
    tc_param_segment segs[2] = {{0, total / 2, 0.1f}, {total / 2, total - total / 2, 0.0f}};
    float *p = rand_f32(total, 1.0f), *gr = rand_f32(total, 1.0f);
    float zeros4[4] = {0, 0, 0, 0};
    float *cp = put_f32(g_cpu, p, total), *cgr = put_f32(g_cpu, gr, total);
    float *cm = balloc(g_cpu, total * 4), *cv = balloc(g_cpu, total * 4);
    float *gp = put_f32(g_gpu, p, total), *ggr = put_f32(g_gpu, gr, total);
    float *gm = balloc(g_gpu, total * 4), *gv = balloc(g_gpu, total * 4);
    g_gpu->zero(g_gpu, gm, total * 4);
    g_gpu->zero(g_gpu, gv, total * 4);
    g_cpu->zero(g_cpu, cm, total * 4);
    g_cpu->zero(g_cpu, cv, total * 4);
    float *cst = put_f32(g_cpu, zeros4, 4), *gst = put_f32(g_gpu, zeros4, 4);
    tc_act *gcomp = balloc(g_gpu, total * g_gpu->act_bytes);
    /* finite, finite, not finite (skipped), finite */
    const float finite[4] = {1.0f, 1.0f, 0.0f, 1.0f};
    for (int k = 0; k < 4; k++) {
        g_cpu->fill_f32(g_cpu, cst, finite[k], 1);
        g_gpu->fill_f32(g_gpu, gst, finite[k], 1);
        g_cpu->step_gate(g_cpu, cst);
        g_gpu->step_gate(g_gpu, gst);
        tc_adamw_hparams hp = {1e-3f, 0.9f, 0.98f, 1e-6f, 99, NULL, NULL};
        hp.gate = cst;
        g_cpu->adamw_update(g_cpu, cp, cgr, cm, cv, NULL, segs, 2, hp, NULL);
        hp.gate = gst;
        g_gpu->adamw_update(g_gpu, gp, ggr, gm, gv, gcomp, segs, 2, hp, NULL);
    }
    bsync(g_gpu, "cuda step_gate + gated adamw");
    float st[4], r_st[4];
    get_f32(g_gpu, st, gst, 4);
    get_f32(g_cpu, r_st, cst, 4);
    printf("  step gate: device state {%g, %g, %g, %g}, cpu {%g, %g, %g, %g}\n", st[0], st[1],
           st[2], st[3], r_st[0], r_st[1], r_st[2], r_st[3]);
    /* {finite, updates, skipped, skipped in a row} after the four steps */
    const float expect[4] = {1.0f, 3.0f, 1.0f, 0.0f};
    for (int i = 0; i < 4; i++)
        if (st[i] != expect[i] || r_st[i] != expect[i])
            fail_msg("step_gate state[%d]: cuda %g, cpu %g, expected %g", i, st[i], r_st[i],
                     expect[i]);
    float *r = hmalloc(total * 4), *o = hmalloc(total * 4);
    get_f32(g_cpu, r, cp, total);
    get_f32(g_gpu, o, gp, total);
    expect_close("params after 3 gated updates and a skip", o, r, total, TOL_FP32);
    get_f32(g_cpu, r, cv, total);
    get_f32(g_gpu, o, gv, total);
    expect_close("v", o, r, total, TOL_FP32);
}

/* AdamW on three segments (one without decay, one gap), grad scale, compute copy */
void test_adamw(void **state) {
    (void)state;
    const size_t total = g_quick ? 3000 : 1000003;
    tc_param_segment segs[3] = {{0, total / 3, 0.1f},
                                {total / 3 + 5, total / 3, 0.0f},
                                {2 * (total / 3) + 5, total - 2 * (total / 3) - 5, 0.2f}};
    float *p = rand_f32(total, 1.0f), *gr = rand_f32(total, 1.0f), *m = rand_f32(total, 0.1f);
    float *v = rand_f32(total, 0.1f);
    for (size_t i = 0; i < total; i++)
        v[i] = fabsf(v[i]);
    float gsc = 0.7f;
    float *cp = put_f32(g_cpu, p, total), *cgr = put_f32(g_cpu, gr, total);
    float *cm = put_f32(g_cpu, m, total), *cv = put_f32(g_cpu, v, total);
    float *cgs = put_f32(g_cpu, &gsc, 1);
    tc_act *ccomp = balloc(g_cpu, total * 4);
    float *gp = put_f32(g_gpu, p, total), *ggr = put_f32(g_gpu, gr, total);
    float *gm = put_f32(g_gpu, m, total), *gv = put_f32(g_gpu, v, total);
    float *ggs = put_f32(g_gpu, &gsc, 1);
    tc_act *gcomp = balloc(g_gpu, total * g_gpu->act_bytes);
    tc_adamw_hparams hp = {1e-3f, 0.9f, 0.98f, 1e-6f, 1, NULL, NULL};
    for (int step = 1; step <= 3; step++) {
        hp.step = step;
        /* step 2 without grad scale; the segment table is cached across steps */
        const float *cs = step == 2 ? NULL : cgs, *gs = step == 2 ? NULL : ggs;
        g_cpu->adamw_update(g_cpu, cp, cgr, cm, cv, ccomp, segs, 3, hp, cs);
        g_gpu->adamw_update(g_gpu, gp, ggr, gm, gv, gcomp, segs, 3, hp, gs);
    }
    bsync(g_gpu, "cuda adamw");
    float *r = hmalloc(total * 4), *o = hmalloc(total * 4);
    printf("  adamw n=%zu, 3 segments, 3 steps\n", total);
    get_f32(g_cpu, r, cp, total);
    get_f32(g_gpu, o, gp, total);
    expect_close("params", o, r, total, TOL_FP32);
    /* the gap between segments 0 and 1 is untouched */
    for (size_t i = total / 3; i < total / 3 + 5; i++)
        if (o[i] != p[i]) fail_msg("adamw wrote element %zu outside every segment", i);
    get_f32(g_cpu, r, cm, total);
    get_f32(g_gpu, o, gm, total);
    expect_close("m", o, r, total, TOL_FP32);
    get_f32(g_cpu, r, cv, total);
    get_f32(g_gpu, o, gv, total);
    expect_close("v", o, r, total, TOL_FP32);
    get_act(g_cpu, r, ccomp, total);
    get_act(g_gpu, o, gcomp, total);
    expect_close("compute copy", o, r, total, tol_act());
}

#endif
