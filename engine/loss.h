/* the CLIP contrastive loss and TinyCLIP's affinity mimicking, on the
 * similarity rows of this process's samples against every sample of the
 * global batch (docs/method.md §1.1, open_clip ClipLoss with local_loss):
 *
 *   S_i2t = f_I (n,E) @ F_T^T (E,N)      S_t2i = f_T @ F_I^T        (n, N)
 *   per direction, weight 0.5 each, mean over the n rows:
 *     w_clip    * CE(s * S, label offset + i)
 *   + w_distill * softCE(s * S, softmax(s_t * S_teacher))
 *   s = exp(log_scale[0]), s_t = exp(teacher_log_scale[0])
 *
 * backward: the rows' features get dI = dS_i2t F_T, dT = dS_t2i F_I (n, E);
 * the columns, which belong to every process, get dF_T = dS_i2t^T f_I and
 * dF_I = dS_t2i^T f_T (N, E), to be reduce-scattered to their owners
 * (gather-with-grad). in one process local == all: pass the same buffer as
 * row and column gradient and the column part is added to it. */
#ifndef TC_LOSS_H
#define TC_LOSS_H

#include "backend.h"

typedef struct {
    const float *img, *txt;         /* (n, E) this process's rows */
    const float *img_all, *txt_all; /* (N, E) the global batch, this process's at rows offset.. */
} tc_loss_features;

typedef struct {
    float w_clip, w_distill;
} tc_loss_weights;

typedef struct {
    float *sim, *dsim, *teacher_sim; /* each (2, n, N); teacher_sim only with a teacher */
} tc_loss_workspace;

/* loss: device scalar, written. dimg/dtxt NULL: forward only.
 * dimg_all/dtxt_all may equal dimg/dtxt when n == N (then accumulated). */
void tc_loss_forward_backward(tc_backend *be, tc_loss_weights w, int n, int N, int offset, int E,
                              int TE, const tc_loss_features *student,
                              const tc_loss_features *teacher, const float *log_scale,
                              const float *teacher_log_scale, tc_loss_workspace ws, float *loss,
                              float *dimg, float *dtxt, float *dimg_all, float *dtxt_all,
                              float *dlog_scale);

#endif
