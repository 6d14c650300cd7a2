#include "l0.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* beta * logit((0 - gamma) / (zeta - gamma)) = beta * log(-gamma/zeta) = -1.5986,
 * evaluated with the same operations as the original's cdf_qz(0, .) */
static double cdf_logit(void) {
    double xn = (0.0 - TC_L0_LIMIT_A) / (TC_L0_LIMIT_B - TC_L0_LIMIT_A);
    return (log(xn) - log(1.0 - xn)) * TC_L0_TEMPERATURE;
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

tc_status tc_l0_masks_create_shaped(tc_l0_masks *m, tc_l0_shape shape, int L, int C, int NH,
                                    int M) {
    memset(m, 0, sizeof *m);
    if (L < 0 || L > TC_MAX_LAYERS || C <= 0 || NH <= 0 || M <= 0 || C > (1 << 20) ||
        NH > (1 << 16) || M > (1 << 22))
        return tc_fail(TC_ERR_ARG, "l0 masks: bad shape (layers %d, hidden %d, heads %d, mlp %d)",
                       L, C, NH, M);
    if (C % NH != 0)
        return tc_fail(TC_ERR_ARG,
                       "l0 masks: the width (%d) is not a whole number of heads (%d); masks need "
                       "a uniform tower",
                       C, NH);
    m->shape = shape;
    m->layers = L;
    m->hidden = C;
    m->heads = NH;
    m->inter = M;
    m->head_size = C / NH; /* the tower is uniform: width = heads * head size */
    m->rows = shape == TC_L0_REGULAR ? 1 : L;
    m->n_z = (size_t)C + (size_t)L * NH + (size_t)L * M;
    m->n_loga = shape == TC_L0_REGULAR ? (size_t)NH + (size_t)M : m->n_z;
    m->count = m->n_loga + 2;
    m->data = malloc(m->count * sizeof *m->data);
    if (!m->data) return tc_fail(TC_ERR_OOM, "l0 masks: out of memory (%zu floats)", m->count);
    size_t nh = shape == TC_L0_REGULAR ? 0 : (size_t)C;
    m->hidden_loga = shape == TC_L0_REGULAR ? NULL : m->data;
    m->heads_loga = m->data + nh;
    m->intermediate_loga = m->heads_loga + (size_t)m->rows * NH;
    m->lambda = m->intermediate_loga + (size_t)m->rows * M;
    for (size_t i = 0; i < m->n_loga; i++) m->data[i] = TC_L0_INIT_LOGA;
    m->lambda[0] = m->lambda[1] = TC_L0_LAMBDA_INIT;
    return TC_OK;
}

tc_status tc_l0_masks_create(tc_l0_masks *m, int L, int C, int NH, int M) {
    return tc_l0_masks_create_shaped(m, TC_L0_IRREGULAR, L, C, NH, M);
}

const char *tc_l0_shape_name(tc_l0_shape shape) {
    return shape == TC_L0_REGULAR ? "regular" : "irregular";
}

static int tower_uniform(const tc_tower_config *t) {
    if (t->layers < 1 || t->layers > TC_MAX_LAYERS) return 0;
    if (t->heads[0] * t->head_width != t->width || t->mlp_width[0] <= 0) return 0;
    for (int l = 1; l < t->layers; l++)
        if (t->heads[l] != t->heads[0] || t->mlp_width[l] != t->mlp_width[0]) return 0;
    return 1;
}

tc_status tc_l0_masks_for_tower_shaped(tc_l0_masks *m, const tc_tower_config *t, tc_l0_shape shape,
                                       const char *what) {
    memset(m, 0, sizeof *m);
    if (!tower_uniform(t))
        return tc_fail(TC_ERR_CONFIG,
                       "%s tower: masks need a uniform tower (every layer %d heads of %d = width "
                       "and one MLP width); expand a pruned model to the teacher shape first",
                       what, t->head_width ? t->width / t->head_width : 0, t->head_width);
    return tc_l0_masks_create_shaped(m, shape, t->layers, t->width, t->heads[0], t->mlp_width[0]);
}

tc_status tc_l0_masks_for_tower(tc_l0_masks *m, const tc_tower_config *t, const char *what) {
    return tc_l0_masks_for_tower_shaped(m, t, TC_L0_IRREGULAR, what);
}

int tc_l0_masks_match(const tc_l0_masks *m, const tc_tower_config *t) {
    return m && m->data && tower_uniform(t) && t->layers == m->layers && t->width == m->hidden &&
           t->heads[0] == m->heads && t->mlp_width[0] == m->inter;
}

void tc_l0_masks_free(tc_l0_masks *m) {
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* sigmoid(c - log_alpha) = cdf_qz(0), before the clamp */
static double cdf0(float log_alpha) { return sigmoid(cdf_logit() - (double)log_alpha); }

double tc_l0_score(float log_alpha) {
    double c = cdf0(log_alpha);
    if (c < TC_L0_EPS) c = TC_L0_EPS;
    if (c > 1.0 - TC_L0_EPS) c = 1.0 - TC_L0_EPS;
    return 1.0 - c;
}

double tc_l0_score_grad(float log_alpha) {
    double c = cdf0(log_alpha);
    /* torch.clamp passes the gradient inside the closed interval */
    if (c < TC_L0_EPS || c > 1.0 - TC_L0_EPS) return 0.0;
    return c * (1.0 - c); /* d(1 - sigmoid(k - a))/da */
}

long long tc_l0_params_per_head(int C, int NH) {
    return (4LL * C * C + 4LL * C) / NH;
}

double tc_l0_prunable_size(int L, int C, int NH, int M) {
    return (double)L * NH * (double)tc_l0_params_per_head(C, NH) +
           (double)L * (2.0 * C * M + C + M);
}

double tc_l0_expected_params_scores(int L, int C, int NH, int M, const double *s_hid,
                                    const double *s_head, const double *s_int) {
    double sh = 0, sa = 0, si = 0;
    for (int d = 0; d < C; d++) sh += s_hid[d];
    for (size_t i = 0; i < (size_t)L * NH; i++) sa += s_head[i];
    for (size_t i = 0; i < (size_t)L * M; i++) si += s_int[i];
    double pph_over_c = (double)tc_l0_params_per_head(C, NH) / C;
    return sh * sa * pph_over_c + 2.0 * sh * si;
}

typedef struct {
    double sh, sa, si; /* sums of the hidden, head and intermediate scores */
} score_sums;

/* the sums the formula reads; regular masks count each tied gate once per
 * place it gates (HS hidden dims and L heads per width unit, L MLP units per
 * MLP gate) */
static score_sums sum_scores(const tc_l0_masks *m) {
    size_t nh = (size_t)m->rows * m->heads, ni = (size_t)m->rows * m->inter;
    score_sums s = {0, 0, 0};
    for (size_t i = 0; i < nh; i++) s.sa += tc_l0_score(m->heads_loga[i]);
    for (size_t i = 0; i < ni; i++) s.si += tc_l0_score(m->intermediate_loga[i]);
    if (m->shape == TC_L0_REGULAR) {
        s.sh = s.sa * m->head_size;
        s.sa *= m->layers;
        s.si *= m->layers;
    } else {
        for (int d = 0; d < m->hidden; d++)
            s.sh += tc_l0_score(m->hidden_loga[d]);
    }
    return s;
}

static double pph_over_c(const tc_l0_masks *m) {
    return (double)tc_l0_params_per_head(m->hidden, m->heads) / m->hidden;
}

/* grad += grad_scale * dE/dlog_alpha; E is bilinear in (sum of hidden
 * scores) and (sums of head / MLP scores) */
static void expected_grad(const tc_l0_masks *m, score_sums s, float *grad, double grad_scale) {
    int regular = m->shape == TC_L0_REGULAR;
    int C = regular ? 0 : m->hidden;
    size_t nh = (size_t)m->rows * m->heads, ni = (size_t)m->rows * m->inter;
    double k = pph_over_c(m);
    float *gh = grad, *ga = grad + C, *gi = grad + C + nh;
    double dsh = grad_scale * (s.sa * k + 2.0 * s.si), dsa = grad_scale * s.sh * k,
           dsi = grad_scale * 2.0 * s.sh;
    if (regular) {
        /* a unit's score enters sh HS times and sa L times, an MLP gate's si L times */
        dsa = dsh * m->head_size + dsa * m->layers;
        dsi *= m->layers;
    }
    for (int d = 0; d < C; d++) gh[d] += (float)(dsh * tc_l0_score_grad(m->hidden_loga[d]));
    for (size_t i = 0; i < nh; i++) ga[i] += (float)(dsa * tc_l0_score_grad(m->heads_loga[i]));
    for (size_t i = 0; i < ni; i++)
        gi[i] += (float)(dsi * tc_l0_score_grad(m->intermediate_loga[i]));
}

double tc_l0_expected_params(const tc_l0_masks *m, float *grad, double grad_scale) {
    score_sums s = sum_scores(m);
    if (grad) expected_grad(m, s, grad, grad_scale);
    return s.sh * s.sa * pph_over_c(m) + 2.0 * s.sh * s.si;
}

double tc_l0_remaining_params(const tc_l0_masks *m, const float *z) {
    size_t nh = (size_t)m->layers * m->heads, ni = (size_t)m->layers * m->inter;
    double kh = 0, ka = 0, ki = 0;
    for (int d = 0; d < m->hidden; d++) kh += z[d] != 0.0f;
    for (size_t i = 0; i < nh; i++) ka += z[m->hidden + i] != 0.0f;
    for (size_t i = 0; i < ni; i++) ki += z[m->hidden + nh + i] != 0.0f;
    double dim_per_head = (double)(m->hidden / m->heads);
    return ka * kh * dim_per_head * 4.0 + ki * kh * 2.0;
}

double tc_l0_pruned_params(const tc_l0_masks *m, const float *z) {
    size_t nh = (size_t)m->layers * m->heads, ni = (size_t)m->layers * m->inter;
    double kh = 0, ka = 0, ki = 0;
    for (int d = 0; d < m->hidden; d++)
        kh += z[d] != 0.0f;
    for (size_t i = 0; i < nh; i++)
        ka += z[m->hidden + i] != 0.0f;
    for (size_t i = 0; i < ni; i++)
        ki += z[m->hidden + nh + i] != 0.0f;
    return kh * ka * pph_over_c(m) + 2.0 * kh * ki;
}

/* ---- sampling ---- */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void tc_l0_rng_init(tc_l0_rng *r, uint64_t seed) {
    r->seed = splitmix64(seed ^ 0x6c30u); /* decorrelate from other users of the same seed */
    r->counter = 0;
}

double tc_l0_rng_uniform(tc_l0_rng *r) {
    uint64_t x = splitmix64(r->seed + 0x9e3779b97f4a7c15ULL * ++r->counter);
    double u01 = (double)(x >> 11) * 0x1.0p-53; /* [0, 1) */
    return TC_L0_EPS + (1.0 - 2.0 * TC_L0_EPS) * u01;
}

float tc_l0_sample_one(float log_alpha, double u, float *dz) {
    double s = sigmoid((log(u) - log(1.0 - u) + (double)log_alpha) / TC_L0_TEMPERATURE);
    double z = s * (TC_L0_LIMIT_B - TC_L0_LIMIT_A) + TC_L0_LIMIT_A;
    if (dz) {
        /* hardtanh passes the gradient strictly inside (0, 1) */
        *dz = (z > 0.0 && z < 1.0)
                  ? (float)((TC_L0_LIMIT_B - TC_L0_LIMIT_A) * s * (1.0 - s) / TC_L0_TEMPERATURE)
                  : 0.0f;
    }
    if (z < 0.0) z = 0.0;
    if (z > 1.0) z = 1.0;
    return (float)z;
}

void tc_l0_sample(const tc_l0_masks *m, tc_l0_rng *r, float *z, float *dz) {
    for (size_t i = 0; i < m->n_loga; i++)
        z[i] = tc_l0_sample_one(m->data[i], tc_l0_rng_uniform(r), dz ? &dz[i] : NULL);
}

void tc_l0_expand_z(const tc_l0_masks *m, const float *zg, float *z) {
    if (m->shape != TC_L0_REGULAR) {
        memcpy(z, zg, m->n_z * sizeof *z);
        return;
    }
    int C = m->hidden, NH = m->heads, M = m->inter, HS = m->head_size;
    float *zh = z + C, *zi = zh + (size_t)m->layers * NH;
    for (int d = 0; d < C; d++)
        z[d] = zg[d / HS];
    for (int l = 0; l < m->layers; l++) {
        memcpy(zh + (size_t)l * NH, zg, (size_t)NH * sizeof *z);
        memcpy(zi + (size_t)l * M, zg + NH, (size_t)M * sizeof *z);
    }
}

void tc_l0_reduce_dz(const tc_l0_masks *m, const float *dloss_dz, float *dloss_dgate) {
    if (m->shape != TC_L0_REGULAR) {
        memcpy(dloss_dgate, dloss_dz, m->n_z * sizeof *dloss_dgate);
        return;
    }
    int C = m->hidden, NH = m->heads, M = m->inter, HS = m->head_size;
    const float *dh = dloss_dz + C, *di = dh + (size_t)m->layers * NH;
    for (int u = 0; u < NH; u++) {
        double acc = 0;
        for (int e = 0; e < HS; e++)
            acc += dloss_dz[u * HS + e];
        for (int l = 0; l < m->layers; l++)
            acc += dh[(size_t)l * NH + u];
        dloss_dgate[u] = (float)acc;
    }
    for (int i = 0; i < M; i++) {
        double acc = 0;
        for (int l = 0; l < m->layers; l++)
            acc += di[(size_t)l * M + i];
        dloss_dgate[NH + i] = (float)acc;
    }
}

void tc_l0_backward_z(float *grad, const float *dloss_dz, const float *dz, size_t n) {
    for (size_t i = 0; i < n; i++) grad[i] += dloss_dz[i] * dz[i];
}

/* ---- deterministic masks ---- */

typedef struct {
    float v;
    int i;
} scored;

/* ascending value; among equal values the higher index first (so leading
 * units survive ties, which keeps re-expanded models stable) */
static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->v < y->v) return -1;
    if (x->v > y->v) return 1;
    return (x->i < y->i) - (x->i > y->i);
}

static float soft_mask(float log_alpha) {
    float x = log_alpha / (float)TC_L0_TEMPERATURE * (float)TC_L0_MAGICAL;
    return 1.0f / (1.0f + expf(-x));
}

static void deterministic_row(const float *loga, int n, int round_to, float *z, scored *tmp) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        z[i] = soft_mask(loga[i]);
        sum += tc_l0_score(loga[i]);
        tmp[i] = (scored){z[i], i};
    }
    /* Python's round(): half to even, which rint does in the default mode */
    double nz = rint((double)n - sum);
    int num_zeros = nz <= 0 ? 0 : nz >= n ? n : (int)nz;
    if (num_zeros == 0) return;
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_scored);
    int keep = n - num_zeros;
    if (round_to > 1 && keep > 0 && keep % round_to) {
        long long up = ((long long)keep + round_to - 1) / round_to * round_to;
        keep = up > n ? n : (int)up;
        num_zeros = n - keep;
    }
    for (int k = 0; k < num_zeros; k++) z[tmp[k].i] = 0.0f;
}

/* the keep highest soft values of a row stay, the others become 0 */
static void keep_top(const float *loga, int n, int keep, float *z, scored *tmp) {
    for (int i = 0; i < n; i++) {
        z[i] = soft_mask(loga[i]);
        tmp[i] = (scored){z[i], i};
    }
    if (keep >= n) return;
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_scored);
    for (int k = 0; k < n - keep; k++)
        z[tmp[k].i] = 0.0f;
}

/* the expected-size formula on a regular tower of h units and mw MLP units */
static double regular_size(const tc_l0_masks *m, int h, int mw) {
    double sh = (double)h * m->head_size, sa = (double)h * m->layers, si = (double)mw * m->layers;
    return sh * sa * pph_over_c(m) + 2.0 * sh * si;
}

/* the MLP width in [1, M] that brings a tower of h units closest to size E */
static int regular_mlp_width(const tc_l0_masks *m, int h, double E) {
    double per_unit = 2.0 * h * m->head_size * m->layers;
    double mw = rint((E - regular_size(m, h, 0)) / per_unit);
    return mw < 1 ? 1 : mw > m->inter ? m->inter : (int)mw;
}

static tc_status deterministic_regular(const tc_l0_masks *m, int round_to, double size, float *z) {
    int NH = m->heads, M = m->inter;
    score_sums s = sum_scores(m);
    double E = size >= 0 ? size : s.sh * s.sa * pph_over_c(m) + 2.0 * s.sh * s.si;
    double hu = rint(s.sa / m->layers);
    int h = hu < 1 ? 1 : hu > NH ? NH : (int)hu;
    int mw = regular_mlp_width(m, h, E);
    if (mw == 1 || mw == M) {
        /* the width alone overshoots: the neighbouring width may come closer */
        int h2 = mw == 1 ? h - 1 : h + 1;
        if (h2 >= 1 && h2 <= NH) {
            int mw2 = regular_mlp_width(m, h2, E);
            if (fabs(regular_size(m, h2, mw2) - E) < fabs(regular_size(m, h, mw) - E)) {
                h = h2;
                mw = mw2;
            }
        }
    }
    if (round_to > 1 && mw % round_to) {
        long long up = ((long long)mw + round_to - 1) / round_to * round_to;
        mw = up > M ? M : (int)up;
    }
    float *zg = malloc(m->n_loga * sizeof *zg);
    scored *tmp = malloc((size_t)(NH > M ? NH : M) * sizeof *tmp);
    if (!zg || !tmp) {
        free(zg);
        free(tmp);
        return tc_fail(TC_ERR_OOM, "l0 masks: out of memory");
    }
    keep_top(m->heads_loga, NH, h, zg, tmp);
    keep_top(m->intermediate_loga, M, mw, zg + NH, tmp);
    tc_l0_expand_z(m, zg, z);
    free(zg);
    free(tmp);
    return TC_OK;
}

void tc_l0_target_sizes(tc_l0_masks *const *towers, int n, double target, double *sizes) {
    double E = 0, P = 0;
    for (int k = 0; k < n; k++) {
        E += tc_l0_expected_params(towers[k], NULL, 0);
        P += tc_l0_prunable_size(towers[k]->layers, towers[k]->hidden, towers[k]->heads,
                                 towers[k]->inter);
    }
    for (int k = 0; k < n; k++) {
        const tc_l0_masks *m = towers[k];
        double share = E > 0 ? tc_l0_expected_params(m, NULL, 0) / E
                             : tc_l0_prunable_size(m->layers, m->hidden, m->heads, m->inter) / P;
        sizes[k] = (1.0 - target) * P * share;
    }
}

tc_status tc_l0_deterministic(const tc_l0_masks *m, int round_to, float *z) {
    return tc_l0_deterministic_sized(m, round_to, -1.0, z);
}

tc_status tc_l0_deterministic_sized(const tc_l0_masks *m, int round_to, double size, float *z) {
    if (round_to < 0) return tc_fail(TC_ERR_ARG, "l0 masks: round_to %d is negative", round_to);
    if (m->shape == TC_L0_REGULAR) return deterministic_regular(m, round_to, size, z);
    int maxn = m->hidden;
    if (m->heads > maxn) maxn = m->heads;
    if (m->inter > maxn) maxn = m->inter;
    scored *tmp = malloc((size_t)maxn * sizeof *tmp);
    if (!tmp) return tc_fail(TC_ERR_OOM, "l0 masks: out of memory");
    deterministic_row(m->hidden_loga, m->hidden, round_to, z, tmp);
    float *zh = z + m->hidden, *zi = zh + (size_t)m->layers * m->heads;
    for (int l = 0; l < m->layers; l++) {
        deterministic_row(m->heads_loga + (size_t)l * m->heads, m->heads, 0,
                          zh + (size_t)l * m->heads, tmp);
        deterministic_row(m->intermediate_loga + (size_t)l * m->inter, m->inter, round_to,
                          zi + (size_t)l * m->inter, tmp);
    }
    free(tmp);
    return TC_OK;
}

/* ---- sparsity target and Lagrangian ---- */

double tc_l0_target_sparsity(double start, double target, long long step, long long warmup) {
    if (warmup <= 0) return target;
    double f = (double)step / (double)warmup;
    if (f > 1.0) f = 1.0;
    return (target - start) * f + start;
}

tc_status tc_l0_lagrangian(tc_l0_masks *const *towers, float *const *grads, int n,
                           double target, tc_l0_lagrangian_result *out) {
    if (n < 1 || !towers) return tc_fail(TC_ERR_ARG, "l0 lagrangian: no towers");
    double E = 0, P = 0, lam1 = 0, lam2 = 0;
    score_sums sums[2];
    for (int k = 0; k < n; k++) {
        const tc_l0_masks *m = towers[k];
        if (!m || !m->data) return tc_fail(TC_ERR_ARG, "l0 lagrangian: tower %d has no masks", k);
        score_sums s = sum_scores(m);
        if (k < 2) sums[k] = s;
        E += s.sh * s.sa * pph_over_c(m) + 2.0 * s.sh * s.si;
        P += tc_l0_prunable_size(m->layers, m->hidden, m->heads, m->inter);
        lam1 += m->lambda[0];
        lam2 += m->lambda[1];
    }
    lam1 /= n;
    lam2 /= n;
    double s = 1.0 - E / P;
    double gap = target - s;
    double hinge = gap > 0 ? gap : 0.0;
    double dhinge = gap > 0 ? 1.0 : gap == 0 ? 0.5 : 0.0; /* torch.maximum splits ties */
    double L = lam1 * hinge + lam2 * hinge * hinge;
    if (grads) {
        double dL_dgap = lam1 * dhinge + 2.0 * lam2 * hinge * dhinge;
        /* gap = t - 1 + E/P, so dgap/dE_k = 1/P */
        for (int k = 0; k < n; k++) {
            if (!grads[k]) continue;
            if (dL_dgap != 0.0) {
                if (k < 2) expected_grad(towers[k], sums[k], grads[k], dL_dgap / P);
                else tc_l0_expected_params(towers[k], grads[k], dL_dgap / P);
            }
            grads[k][towers[k]->n_loga] += (float)(hinge / n);
            grads[k][towers[k]->n_loga + 1] += (float)(hinge * hinge / n);
        }
    }
    if (out) {
        out->expected_params = E;
        out->prunable_size = P;
        out->expected_sparsity = s;
        out->target = target;
        out->lagrangian = L;
    }
    return TC_OK;
}

/* ---- mask optimizer ---- */

tc_l0_adamw_hparams tc_l0_adamw_defaults(void) {
    return (tc_l0_adamw_hparams){0.02f, -0.02f, 0.9f, 0.999f, 1e-8f, 0.0f};
}

tc_status tc_l0_adamw_create(tc_l0_adamw *o, const tc_l0_masks *masks) {
    memset(o, 0, sizeof *o);
    o->count = masks->count;
    o->m = calloc(o->count, sizeof *o->m);
    o->v = calloc(o->count, sizeof *o->v);
    if (!o->m || !o->v) {
        tc_l0_adamw_free(o);
        return tc_fail(TC_ERR_OOM, "l0 optimizer: out of memory");
    }
    return TC_OK;
}

void tc_l0_adamw_free(tc_l0_adamw *o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

tc_status tc_l0_adamw_step(tc_l0_adamw *o, tc_l0_masks *masks, const float *grad,
                           const tc_l0_adamw_hparams *hp, float grad_scale) {
    if (o->count != masks->count)
        return tc_fail(TC_ERR_ARG, "l0 optimizer: %zu moments for %zu mask parameters", o->count,
                       masks->count);
    o->step++;
    /* torch.optim.AdamW, single-tensor path: scalars in double, tensors in fp32 */
    double bc1 = 1.0 - pow((double)hp->beta1, (double)o->step);
    double bc2 = 1.0 - pow((double)hp->beta2, (double)o->step);
    float bc2_sqrt = (float)sqrt(bc2);
    for (size_t i = 0; i < o->count; i++) {
        float lr = i < masks->n_loga ? hp->lr_loga : hp->lr_lambda;
        float g = grad[i] * grad_scale;
        float *p = &masks->data[i];
        *p *= 1.0f - lr * hp->weight_decay;
        o->m[i] += (1.0f - hp->beta1) * (g - o->m[i]);
        o->v[i] = o->v[i] * hp->beta2 + (1.0f - hp->beta2) * g * g;
        float step_size = (float)((double)lr / bc1);
        float denom = sqrtf(o->v[i]) / bc2_sqrt + hp->eps;
        *p += -step_size * (o->m[i] / denom);
    }
    return TC_OK;
}

void tc_l0_constrain(tc_l0_masks *m) {
    const float lo = (float)TC_L0_LOGA_MIN, hi = (float)TC_L0_LOGA_MAX;
    for (size_t i = 0; i < m->n_loga; i++) {
        if (m->data[i] < lo) m->data[i] = lo;
        if (m->data[i] > hi) m->data[i] = hi;
    }
}
