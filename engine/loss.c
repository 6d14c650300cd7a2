#include "loss.h"

/* sim[0] = a @ B^T, sim[1] = b @ A^T: rows of this process against all columns */
static void similarity_rows(tc_backend *be, float *sim, const float *a, const float *b,
                            const float *a_all, const float *b_all, int n, int N, int E) {
    be->gemm_f32(be, 0, 1, n, N, E, 1.0f, a, b_all, 0.0f, sim);
    be->gemm_f32(be, 0, 1, n, N, E, 1.0f, b, a_all, 0.0f, sim + (size_t)n * N);
}

void tc_loss_forward_backward(tc_backend *be, tc_loss_weights w, int n, int N, int offset, int E,
                              int TE, const tc_loss_features *st, const tc_loss_features *te,
                              const float *log_scale, const float *teacher_log_scale,
                              tc_loss_workspace ws, float *loss, float *dimg, float *dtxt,
                              float *dimg_all, float *dtxt_all, float *dlog_scale) {
    size_t nN = (size_t)n * N;
    const float *tsim = NULL;
    if (te && w.w_distill != 0.0f) {
        similarity_rows(be, ws.teacher_sim, te->img, te->txt, te->img_all, te->txt_all, n, N, TE);
        tsim = ws.teacher_sim;
    }
    similarity_rows(be, ws.sim, st->img, st->txt, st->img_all, st->txt_all, n, N, E);
    be->fill_f32(be, loss, 0.0f, 1);
    for (int dir = 0; dir < 2; dir++)
        be->softmax_xent_rows(be, loss, ws.dsim + dir * nN, dimg ? dlog_scale : NULL,
                              ws.sim + dir * nN, tsim ? tsim + dir * nN : NULL, log_scale,
                              teacher_log_scale, n, N, offset, 0.5f * w.w_clip, 0.5f * w.w_distill);
    if (!dimg) return;
    const float *ds_i2t = ws.dsim, *ds_t2i = ws.dsim + nN;
    /* rows */
    be->gemm_f32(be, 0, 0, n, E, N, 1.0f, ds_i2t, st->txt_all, 0.0f, dimg);
    be->gemm_f32(be, 0, 0, n, E, N, 1.0f, ds_t2i, st->img_all, 0.0f, dtxt);
    /* columns */
    be->gemm_f32(be, 1, 0, N, E, n, 1.0f, ds_t2i, st->txt, dimg_all == dimg ? 1.0f : 0.0f,
                 dimg_all);
    be->gemm_f32(be, 1, 0, N, E, n, 1.0f, ds_i2t, st->img, dtxt_all == dtxt ? 1.0f : 0.0f,
                 dtxt_all);
}
