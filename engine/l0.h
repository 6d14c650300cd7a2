/* hard-concrete (L0) masks of automatic weight inheritance, host-side math:
 * the TinyCLIP L0Module (adapted from CoFiPruning) for one tower of a
 * uniform, teacher-shaped transformer.
 *
 * two shapes of mask:
 *   irregular (the original's): one gate per unit
 *     hidden_z        (C)      residual-stream dims, shared by all layers
 *     heads_z         (L, NH)  attention heads (head size 64)
 *     intermediate_z  (L, M)   MLP units
 *   regular (beyond the original): gates tied so that the pruned tower is a
 *   plain open_clip tower (one width, a multiple of the head size HS, with
 *   width / HS heads and one MLP width in every layer)
 *     unit_z          (NH)     width unit u: hidden dims [u*HS, (u+1)*HS) and
 *                              head u of every layer
 *     mlp_z           (M)      MLP unit i of every layer
 *
 * everything here runs on small host arrays: log alpha (n_loga floats) and
 * the multipliers lambda1, lambda2. the model forward consumes a z vector of
 * n_z = C + L*NH + L*M floats in the order hidden | heads | intermediate
 * (tc_l0_expand_z builds it from the gates) and gives back dloss/dz, which
 * tc_l0_reduce_dz and tc_l0_backward_z turn into dloss/dlog_alpha.
 *
 * constants are the original's: gamma -0.1, zeta 1.1, beta 2/3, eps 1e-6,
 * magical number 0.8, log alpha initialised to 10 and clamped to
 * [ln 0.01, ln 100] after every step, lambda1 = lambda2 = 10, mask AdamW
 * betas (0.9, 0.999), eps 1e-8, no weight decay, lr 0.02 for log alpha and
 * -0.02 (gradient ascent) for lambda.
 *
 * probabilities, expected sizes and gradients are computed in double; the
 * original computes them in fp32, so they agree to fp32 rounding. */
#ifndef TC_L0_H
#define TC_L0_H

#include <stddef.h>
#include <stdint.h>

#include "model_config.h"
#include "status.h"

#define TC_L0_LIMIT_A (-0.1)            /* gamma */
#define TC_L0_LIMIT_B 1.1               /* zeta */
#define TC_L0_EPS 1e-6
#define TC_L0_TEMPERATURE (2.0 / 3.0)   /* beta */
#define TC_L0_MAGICAL 0.8
#define TC_L0_INIT_LOGA 10.0f
#define TC_L0_PRUNED_LOGA (-10.0f)      /* re-expansion: units pruned in the last stage */
#define TC_L0_LAMBDA_INIT 10.0f
#define TC_L0_LOGA_MIN (-4.605170185988091) /* ln 0.01 */
#define TC_L0_LOGA_MAX 4.605170185988092    /* ln 100 */

typedef enum { TC_L0_IRREGULAR = 0, TC_L0_REGULAR = 1 } tc_l0_shape;

typedef struct {
    tc_l0_shape shape;
    int layers, hidden, heads, inter; /* L, C, NH, M of the full tower */
    int head_size;                    /* HS: hidden dims per width unit (regular) */
    int rows;                         /* rows of heads_loga and intermediate_loga:
                                       * L (irregular), 1 (regular: shared by the layers) */
    size_t n_loga;                    /* C + L*NH + L*M (irregular), NH + M (regular) */
    size_t n_z;                       /* C + L*NH + L*M: the z vector the model reads */
    size_t count;                     /* n_loga + 2: the optimizer's parameter vector */
    float *data;                      /* (count), owned */
    float *hidden_loga;               /* (C) view into data; NULL for regular */
    float *heads_loga;                /* (rows, NH); regular: the width units */
    float *intermediate_loga;         /* (rows, M) */
    float *lambda;                    /* (2): lambda1, lambda2 */
} tc_l0_masks;

/* irregular masks: every log alpha = 10, lambda1 = lambda2 = 10 */
tc_status tc_l0_masks_create(tc_l0_masks *m, int L, int C, int NH, int M);
/* either shape; the tower must be uniform (C a multiple of NH: head size C / NH) */
tc_status tc_l0_masks_create_shaped(tc_l0_masks *m, tc_l0_shape shape, int L, int C, int NH, int M);
/* masks for a uniform tower: every layer with the same heads (heads * head size ==
 * width) and the same MLP width; an irregular tower is an error (expand it
 * to the teacher shape first) */
tc_status tc_l0_masks_for_tower(tc_l0_masks *m, const tc_tower_config *t, const char *what);
tc_status tc_l0_masks_for_tower_shaped(tc_l0_masks *m, const tc_tower_config *t, tc_l0_shape shape,
                                       const char *what);
const char *tc_l0_shape_name(tc_l0_shape shape); /* "irregular" / "regular" */
void tc_l0_masks_free(tc_l0_masks *m);
/* 1 when the tower has exactly the masks' shape */
int tc_l0_masks_match(const tc_l0_masks *m, const tc_tower_config *t);

/* P(z != 0) = 1 - clamp(sigmoid(beta*log(-gamma/zeta) - log_alpha), eps, 1-eps)
 * (the original's score_loga; beta*log(-gamma/zeta) = -1.5986) */
double tc_l0_score(float log_alpha);
/* d P(z != 0) / d log_alpha (0 where the clamp is active) */
double tc_l0_score_grad(float log_alpha);

/* params_per_head = (4*C*C + 4*C) / NH (integer division, as the original) */
long long tc_l0_params_per_head(int C, int NH);
/* L*NH*params_per_head + L*(2*C*M + C + M): the sparsity denominator */
double tc_l0_prunable_size(int L, int C, int NH, int M);

/* E = sum_d s_hid[d] * sum_{l,h} s_head[l,h] * pph / C
 *   + 2 * sum_d s_hid[d] * sum_{l,i} s_int[l,i]
 * from given scores (any values, e.g. 0/1 for counting) */
double tc_l0_expected_params_scores(int L, int C, int NH, int M, const double *s_hid,
                                    const double *s_head, const double *s_int);
/* E from the masks' log alpha; when grad is not NULL, grad[i] += grad_scale *
 * dE/dlog_alpha[i] for the n_loga entries. regular masks count their tied
 * units in the same formula: the hidden sum is HS * (sum of unit scores), the
 * head sum L * (sum of unit scores), the MLP sum L * (sum of MLP scores), which
 * for 0/1 gates is exactly the formula evaluated on the regular tower they
 * leave. */
double tc_l0_expected_params(const tc_l0_masks *m, float *grad, double grad_scale);

/* the original's calculate_model_size on a deterministic z: weights kept in
 * the pruned blocks, (sum of kept heads) * (kept hidden) * head size * 4
 * + (sum of kept MLP units) * (kept hidden) * 2, biases not counted. the
 * pruned sparsity it reports is 1 - this / prunable size. z: (n_z) */
double tc_l0_remaining_params(const tc_l0_masks *m, const float *z);

/* the expected-size formula on the 0/1 pattern of z (n_z): the size the
 * Lagrangian's sparsity measures, of the tower a prune with z leaves */
double tc_l0_pruned_params(const tc_l0_masks *m, const float *z);

/* counter-based generator (splitmix64 of seed and a counter), so the state
 * is two integers that a train-state file can hold */
typedef struct {
    uint64_t seed, counter;
} tc_l0_rng;
void tc_l0_rng_init(tc_l0_rng *r, uint64_t seed);
/* u ~ U(eps, 1-eps), as torch's uniform_(1e-6, 1-1e-6) */
double tc_l0_rng_uniform(tc_l0_rng *r);

/* one hard-concrete sample:
 *   z = clamp(sigmoid((log u - log(1-u) + log_alpha)/beta) * (zeta-gamma) + gamma, 0, 1)
 * dz (optional) = dz/dlog_alpha, 0 where the clamp is active (hardtanh) */
float tc_l0_sample_one(float log_alpha, double u, float *dz);
/* one sample of every gate (the original draws once per forward, shared by
 * the whole batch); zg, dz: (n_loga) in the order of the log alphas */
void tc_l0_sample(const tc_l0_masks *m, tc_l0_rng *r, float *zg, float *dz);
/* the model's z (n_z) from the gates zg (n_loga): a copy for irregular masks,
 * each tied gate written to every place it gates for regular ones */
void tc_l0_expand_z(const tc_l0_masks *m, const float *zg, float *z);
/* dloss/dgate (n_loga) from dloss/dz (n_z): the sum over the places a gate
 * is written to (the transpose of tc_l0_expand_z) */
void tc_l0_reduce_dz(const tc_l0_masks *m, const float *dloss_dz, float *dloss_dgate);
/* grad[i] += dloss_dz[i] * dz[i] for the n_loga entries */
void tc_l0_backward_z(float *grad, const float *dloss_dz, const float *dz, size_t n);

/* deterministic (eval / pruning) masks, once for hidden and per layer row for
 * heads and intermediate:
 *   soft = sigmoid(log_alpha / beta * 0.8)
 *   num_zeros = round(size - sum P(z != 0))   (round half to even, as Python)
 *   the num_zeros smallest soft values are set to 0 (ties: the higher index
 *   is zeroed first), the others keep their soft value.
 * round_to > 1 (beyond the original): the kept count of hidden and of every
 * MLP row, when not 0, is raised to the next multiple of round_to (at most the
 * full size) by keeping the highest-scoring zeroed units with their soft
 * value. heads are never rounded: a head is already 64 wide.
 *
 * regular masks (the structure decides the counts, not each row): the tower
 * keeps h = round(sum of unit scores) width units (at least 1) and the MLP
 * width M' (at least 1) that brings the pruned tower's size (the
 * expected-size formula on 0/1 gates) closest to a size: the masks' expected
 * size here, the size given to tc_l0_deterministic_sized. when M' hits a
 * bound, the neighbouring h is taken if it comes closer. a coarse width (h
 * steps of HS dims) thus still lands on the size. round_to rounds M' up. the
 * kept units are those of the highest soft values, with them.
 * z: (n_z) */
tc_status tc_l0_deterministic(const tc_l0_masks *m, int round_to, float *z);
/* the same; regular masks aim at `size` (< 0: the expected size), irregular
 * ones ignore it */
tc_status tc_l0_deterministic_sized(const tc_l0_masks *m, int round_to, double size, float *z);
/* the pooled target sparsity of n towers as a size per tower: (1 - target) *
 * (sum of prunable sizes), shared in proportion to the towers' expected
 * sizes (what the masks learned), so that regular towers pruned to these
 * sizes land on the target together. sizes: (n) */
void tc_l0_target_sizes(tc_l0_masks *const *towers, int n, double target, double *sizes);

/* linear ramp: start + (target - start) * min(1, step / warmup); the target
 * itself when warmup <= 0 */
double tc_l0_target_sparsity(double start, double target, long long step, long long warmup);

typedef struct {
    double expected_params;   /* sum over towers */
    double prunable_size;     /* sum over towers */
    double expected_sparsity; /* 1 - expected_params / prunable_size */
    double target;
    double lagrangian;        /* lambda1 * max(t - s, 0) + lambda2 * max(t - s, 0)^2 */
} tc_l0_lagrangian_result;

/* the Lagrangian pooled over n towers (the original's --total-loss-flag; n = 1
 * gives a tower's own term): lambda_k is the mean of the towers' lambda_k,
 * s = 1 - sum E / sum prunable. target is the pooled target (the mean of
 * the towers' ramps). when grads is not NULL, grads[k] (count entries of
 * tower k) += dL/dlog_alpha and dL/dlambda. the derivative of max(x, 0) at
 * x == 0 is 1/2, as torch.maximum. */
tc_status tc_l0_lagrangian(tc_l0_masks *const *towers, float *const *grads, int n,
                           double target, tc_l0_lagrangian_result *out);

/* the mask optimizer: torch AdamW over the count entries of one tower, with
 * one learning rate for log alpha and another for lambda */
typedef struct {
    float lr_loga, lr_lambda, beta1, beta2, eps, weight_decay;
} tc_l0_adamw_hparams;
tc_l0_adamw_hparams tc_l0_adamw_defaults(void); /* 0.02, -0.02, 0.9, 0.999, 1e-8, 0 */

typedef struct {
    size_t count;
    float *m, *v; /* (count) moments */
    long long step;
} tc_l0_adamw;
tc_status tc_l0_adamw_create(tc_l0_adamw *o, const tc_l0_masks *masks);
void tc_l0_adamw_free(tc_l0_adamw *o);
/* one step on masks->data with gradient grad * grad_scale (count entries) */
tc_status tc_l0_adamw_step(tc_l0_adamw *o, tc_l0_masks *masks, const float *grad,
                           const tc_l0_adamw_hparams *hp, float grad_scale);
/* clamp every log alpha to [ln 0.01, ln 100] (constrain_parameters) */
void tc_l0_constrain(tc_l0_masks *m);

#endif
