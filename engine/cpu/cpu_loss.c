/* feature normalisation and the softmax cross-entropy rows of the CLIP and
 * affinity losses (fp32 in and out, double inside a row).
 *   l2norm      out = x / max(||x||, 1e-12) (F.normalize), norm = ||x|| saved
 *               dinp = (dout - out (out.dout)) / ||x||, or dout / 1e-12 where
 *               the clamp is active (the clamped denominator is a constant)
 *   xent rows   z = exp(log_scale) sim, log-softmax by max subtraction;
 *               hard CE against column label_offset + i, soft CE against
 *               t = softmax(exp(teacher_log_scale) teacher_sim);
 *               dz = (w_hard (p - onehot) + w_soft (p sum(t) - t)) / n,
 *               dsim = exp(log_scale) dz, dlog_scale += sum dz z.
 * rows are processed in parallel; the per-row loss and log-scale gradient
 * terms are summed afterwards in row order, so the result does not depend on
 * the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define TC_L2_EPS 1e-12f

void tc_cpu_l2norm_forward(tc_backend *b, float *out, float *norm, const tc_act *inp, int N,
                           int C) {
    TC_CPU_DIMS(b, "l2norm_forward", N, C);
    const float *x = TC_CF(inp);
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((long)N * C > 32768)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *orow = out + (size_t)n * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++)
            ss += (double)xr[c] * xr[c];
        const float nr = (float)sqrt(ss);
        const float den = nr > TC_L2_EPS ? nr : TC_L2_EPS;
        for (int c = 0; c < C; c++)
            orow[c] = xr[c] / den;
        if (norm) norm[n] = nr;
    }
}

void tc_cpu_l2norm_backward(tc_backend *b, tc_act *dinp, const float *dout, const float *out,
                            const float *norm, int N, int C) {
    TC_CPU_DIMS(b, "l2norm_backward", N, C);
    float *dx = TC_F(dinp);
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((long)N * C > 32768)
    for (int n = 0; n < N; n++) {
        const float *dyr = dout + (size_t)n * C, *orow = out + (size_t)n * C;
        float *dxr = dx + (size_t)n * C;
        const float nr = norm[n];
        if (nr < TC_L2_EPS) { /* clamp_min active (torch passes the gradient at equality) */
            for (int c = 0; c < C; c++)
                dxr[c] = dyr[c] / TC_L2_EPS;
            continue;
        }
        double dot = 0.0;
        for (int c = 0; c < C; c++)
            dot += (double)orow[c] * dyr[c];
        const float d = (float)dot;
        for (int c = 0; c < C; c++)
            dxr[c] = (dyr[c] - orow[c] * d) / nr;
    }
}

void tc_cpu_softmax_xent_rows(tc_backend *b, float *loss, float *dsim, float *dlog_scale,
                              const float *sim, const float *teacher_sim, const float *log_scale,
                              const float *teacher_log_scale, int n, int Ncols, int label_offset,
                              float w_hard, float w_soft) {
    TC_CPU_DIMS(b, "softmax_xent_rows", n, Ncols);
    const float s = expf(log_scale[0]);
    const int soft = teacher_sim != NULL && teacher_log_scale != NULL && w_soft != 0.0f;
    const float ts = soft ? expf(teacher_log_scale[0]) : 0.0f;
    /* per-row loss and sum(dz z), reduced in row order below */
    double *row_terms = malloc((size_t)n * 2 * sizeof(double));
    if (!row_terms) { /* no scratch: the run stops at the next synchronize */
        tc_cpu_record(b, TC_ERR_OOM, "softmax_xent_rows: no memory for %d rows", n);
        memset(dsim, 0, (size_t)n * Ncols * sizeof(float));
        return;
    }
    const double inv_n = 1.0 / n;
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((long)n * Ncols > 4096)
    for (int i = 0; i < n; i++) {
        const float *sr = sim + (size_t)i * Ncols;
        float *dr = dsim + (size_t)i * Ncols;
        /* student log-softmax: lse = m + log sum exp(z - m) */
        double m = -INFINITY;
        for (int j = 0; j < Ncols; j++) {
            double z = s * sr[j];
            if (z > m) m = z;
        }
        double se = 0.0;
        for (int j = 0; j < Ncols; j++)
            se += exp((double)(s * sr[j]) - m);
        const double lse = m + log(se);
        /* teacher softmax statistics */
        const float *tr = soft ? teacher_sim + (size_t)i * Ncols : NULL;
        double tm = -INFINITY, tlse = 0.0, tsum = 0.0;
        if (soft) {
            for (int j = 0; j < Ncols; j++) {
                double z = ts * tr[j];
                if (z > tm) tm = z;
            }
            double tse = 0.0;
            for (int j = 0; j < Ncols; j++)
                tse += exp((double)(ts * tr[j]) - tm);
            tlse = tm + log(tse);
            for (int j = 0; j < Ncols; j++)
                tsum += exp((double)(ts * tr[j]) - tlse);
        }
        const int label = label_offset + i;
        const int hard = w_hard != 0.0f && label >= 0 && label < Ncols; /* host checks the range */
        /* the hard term is read before the row of dsim is written, so that
         * even a dsim aliasing sim gives the right loss */
        double row_loss = hard ? w_hard * (lse - (double)(s * sr[label])) : 0.0;
        double row_dls = 0.0, soft_ce = 0.0;
        for (int j = 0; j < Ncols; j++) {
            const double z = (double)(s * sr[j]);
            const double logp = z - lse, p = exp(logp);
            double dz = 0.0;
            if (hard) dz += w_hard * (p - (j == label ? 1.0 : 0.0));
            if (soft) {
                const double t = exp((double)(ts * tr[j]) - tlse);
                soft_ce -= t * logp;
                dz += w_soft * (p * tsum - t);
            }
            dz *= inv_n;
            dr[j] = (float)(s * dz);
            row_dls += dz * z;
        }
        if (soft) row_loss += w_soft * soft_ce;
        row_terms[2 * i] = row_loss;
        row_terms[2 * i + 1] = row_dls;
    }
    double total = 0.0, dls = 0.0;
    for (int i = 0; i < n; i++) {
        total += row_terms[2 * i];
        dls += row_terms[2 * i + 1];
    }
    free(row_terms);
    if (loss) loss[0] += (float)(total * inv_n);
    if (dlog_scale) dlog_scale[0] += (float)dls;
}
