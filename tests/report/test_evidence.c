/* the evidence of a compression run on synthetic curves: the crossing of a
 * target by linear interpolation (reached between evaluations, at the first
 * evaluation, never, only before pruning, on a non-monotone curve), the
 * curve's value at a step, the speedup table, the lineage compute sums and
 * every kind of goal met, not met and undecidable. */
#include <math.h>
#include <string.h>

#include "evidence.h"
#include "testutil.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void test_reach_between_evaluations(void **state) {
    int64_t s[] = {20, 40, 60, 80};
    double a[] = {0.5, 0.6, 0.7, 0.8};
    tc_curve c = {s, a, N(s), 0};
    int first = -1;
    assert_float_equal(tc_curve_reach(&c, 0.65, &first), 50.0, 1e-9);
    assert_int_equal(first, 0);
    /* exactly on an evaluation: that evaluation's step */
    assert_float_equal(tc_curve_reach(&c, 0.7, &first), 60.0, 1e-9);
    assert_float_equal(tc_curve_reach(&c, 0.8, NULL), 80.0, 1e-9);
    assert_float_equal(tc_curve_reach(&c, 0.72, NULL), 64.0, 1e-9);
}

static void test_reach_first_and_never(void **state) {
    int64_t s[] = {20, 40, 60};
    double a[] = {0.5, 0.6, 0.7};
    tc_curve c = {s, a, N(s), 0};
    int first = 0;
    /* reached at the first evaluation: the crossing itself is not seen */
    assert_float_equal(tc_curve_reach(&c, 0.4, &first), 20.0, 1e-9);
    assert_int_equal(first, 1);
    assert_float_equal(tc_curve_reach(&c, 0.5, &first), 20.0, 1e-9);
    assert_int_equal(first, 1);
    /* never */
    assert_true(isnan(tc_curve_reach(&c, 0.71, &first)));
    assert_int_equal(first, 0);
    assert_true(isnan(tc_curve_reach(&c, NAN, NULL)));
    tc_curve empty = {s, a, 0, 0};
    assert_true(isnan(tc_curve_reach(&empty, 0.1, NULL)));
    assert_true(isnan(tc_curve_at(&empty, 20)));
}

static void test_reach_non_monotone(void **state) {
    int64_t s[] = {20, 40, 60, 80};
    double a[] = {0.5, 0.7, 0.6, 0.8};
    tc_curve c = {s, a, N(s), 0};
    /* the first crossing counts, even when the curve falls back below */
    assert_float_equal(tc_curve_reach(&c, 0.65, NULL), 35.0, 1e-9);
    /* a target above the dip is crossed on the way up after it */
    assert_float_equal(tc_curve_reach(&c, 0.75, NULL), 75.0, 1e-9);
    /* the value on the way down */
    assert_float_equal(tc_curve_at(&c, 50), 0.65, 1e-12);
}

static void test_reach_counted_from_pruning(void **state) {
    /* a masked student at its parent's accuracy, then pruned at step 60 */
    int64_t s[] = {20, 40, 60, 80, 100};
    double a[] = {0.82, 0.81, 0.70, 0.75, 0.85};
    tc_curve c = {s, a, N(s), 60};
    int first = 0;
    /* 0.8 was passed before pruning; counted only after: between 80 and 100 */
    assert_float_equal(tc_curve_reach(&c, 0.8, &first), 90.0, 1e-9);
    assert_int_equal(first, 0);
    /* reached at the pruning step: that step, flagged */
    assert_float_equal(tc_curve_reach(&c, 0.7, &first), 60.0, 1e-9);
    assert_int_equal(first, 1);
    /* reached only before pruning: not reached */
    int64_t s2[] = {20, 40, 60, 80};
    double a2[] = {0.9, 0.9, 0.70, 0.72};
    tc_curve c2 = {s2, a2, N(s2), 60};
    assert_true(isnan(tc_curve_reach(&c2, 0.8, NULL)));
    /* the value is only read from counted evaluations */
    assert_true(isnan(tc_curve_at(&c2, 40)));
    assert_true(isnan(tc_curve_at(&c2, 59.9)));
    assert_float_equal(tc_curve_at(&c2, 70), 0.71, 1e-12);
    assert_true(isnan(tc_curve_at(&c2, 81)));
    /* counted_from after every evaluation */
    tc_curve c3 = {s2, a2, N(s2), 1000};
    assert_true(isnan(tc_curve_reach(&c3, 0.1, NULL)));
}

/* a baseline rising linearly 0.30 -> 0.78 over 24 evaluations of 20 steps,
 * a student pruned at 120 that starts at 0.76 */
static int64_t base_steps[24], stu_steps[12];
static double base_acc[24], stu_acc[12];

static void synthetic(tc_curve *base, tc_curve *stu) {
    for (int k = 0; k < 24; k++) {
        base_steps[k] = 20 * (k + 1);
        base_acc[k] = 0.30 + 0.02 * k;
    }
    for (int k = 0; k < 12; k++) {
        stu_steps[k] = 20 * (k + 1);
        /* mask phase at the parent's 0.82, then from 0.76 up by 0.01 */
        stu_acc[k] = stu_steps[k] < 120 ? 0.82 : 0.76 + 0.01 * (double)(k - 5);
    }
    *base = (tc_curve){base_steps, base_acc, 24, 0};
    *stu = (tc_curve){stu_steps, stu_acc, 12, 120};
}

static void test_speedup(void **state) {
    tc_curve base, stu;
    synthetic(&base, &stu);
    double fr[] = {0.25, 0.5, 0.75, 1.0};
    tc_speedup sp;
    assert_int_equal(tc_speedup_compute(&stu, 240, &base, 480, fr, 4, &sp), TC_OK);
    assert_int_equal(sp.n, 4);
    /* 25%: step 120, the baseline's 0.40; the student is above it at pruning */
    assert_float_equal(sp.reach[0].target, 0.40, 1e-12);
    assert_float_equal(sp.reach[0].baseline_steps, 120.0, 1e-9);
    assert_float_equal(sp.reach[0].steps, 120.0, 1e-9);
    assert_int_equal(sp.reach[0].at_first, 1);
    assert_float_equal(sp.reach[0].speedup, 1.0, 1e-12);
    /* 75%: step 360, 0.64: still at pruning */
    assert_float_equal(sp.reach[2].target, 0.64, 1e-12);
    assert_float_equal(sp.reach[2].baseline_steps, 360.0, 1e-9);
    /* 100%: 0.76 at 480, the student's first counted evaluation (0.76 at 120) */
    assert_float_equal(sp.reach[3].target, 0.76, 1e-12);
    assert_float_equal(sp.reach[3].baseline_steps, 480.0, 1e-6);
    assert_float_equal(sp.reach[3].steps, 120.0, 1e-9);
    assert_float_equal(sp.reach[3].speedup, 4.0, 1e-6);
    /* equal steps: the baseline at 240 is 0.52, the student ends at 0.82 */
    assert_float_equal(sp.equal_step, 240.0, 0);
    assert_float_equal(sp.baseline_at_equal, 0.52, 1e-12);
    assert_float_equal(sp.student_final, 0.82, 1e-12);
    assert_float_equal(sp.margin, 0.30, 1e-12);
    /* a student trained longer than the baseline: no baseline at equal steps */
    assert_int_equal(tc_speedup_compute(&stu, 600, &base, 480, fr, 1, &sp), TC_OK);
    assert_true(isnan(sp.baseline_at_equal));
    assert_true(isnan(sp.margin));
    /* a target the student never reaches */
    double hi_b[] = {0.5, 0.9};
    int64_t hs[] = {100, 200};
    tc_curve hb = {hs, hi_b, 2, 0};
    assert_int_equal(tc_speedup_compute(&stu, 240, &hb, 200, (double[]){1.0}, 1, &sp), TC_OK);
    assert_true(isnan(sp.reach[0].steps));
    assert_true(isnan(sp.reach[0].speedup));
    /* bad fractions and counts */
    assert_int_equal(tc_speedup_compute(&stu, 240, &base, 480, (double[]){0.0}, 1, &sp),
                     TC_ERR_ARG);
    assert_int_equal(tc_speedup_compute(&stu, 240, &base, 480, (double[]){1.5}, 1, &sp),
                     TC_ERR_ARG);
    assert_int_equal(tc_speedup_compute(&stu, 240, &base, 480, fr, TC_MAX_TARGETS + 1, &sp),
                     TC_ERR_ARG);
}

static void test_lineage(void **state) {
    /* teacher; auto50 <- teacher; auto25 <- auto50 (teacher distils both);
     * manual25 <- teacher; scratch25 alone */
    tc_lineage_node nodes[5] = {{-1, -1, 0, 100.0, 10.0},
                                {0, 0, 0, 50.0, 5.0},
                                {1, 0, 0, 30.0, 3.0},
                                {0, 0, 0, 20.0, 2.0},
                                {-1, -1, 0, 60.0, 6.0}};
    tc_lineage l;
    assert_int_equal(tc_lineage_sum(nodes, 5, 2, &l), TC_OK);
    /* the teacher is reached twice (parent of auto50, teacher of both) and counted once */
    assert_float_equal(l.gflop, 180.0, 1e-12);
    assert_float_equal(l.seconds, 18.0, 1e-12);
    assert_int_equal(l.members, 0x7);
    assert_int_equal(l.external, 0);
    assert_int_equal(tc_lineage_sum(nodes, 5, 3, &l), TC_OK);
    assert_float_equal(l.gflop, 120.0, 1e-12);
    assert_int_equal(l.members, 0x9);
    assert_int_equal(tc_lineage_sum(nodes, 5, 4, &l), TC_OK);
    assert_float_equal(l.gflop, 60.0, 1e-12);
    assert_int_equal(l.members, 0x10);
    assert_int_equal(tc_lineage_sum(nodes, 5, 0, &l), TC_OK);
    assert_float_equal(l.gflop, 100.0, 1e-12);
    /* an unknown time makes the sum unknown; an outside checkpoint is flagged */
    nodes[1].seconds = NAN;
    nodes[0].external = 1;
    assert_int_equal(tc_lineage_sum(nodes, 5, 2, &l), TC_OK);
    assert_true(isnan(l.seconds));
    assert_float_equal(l.gflop, 180.0, 1e-12);
    assert_int_equal(l.external, 1);
    /* a circle is walked once */
    tc_lineage_node circle[2] = {{1, -1, 0, 1.0, 1.0}, {0, -1, 0, 2.0, 2.0}};
    assert_int_equal(tc_lineage_sum(circle, 2, 0, &l), TC_OK);
    assert_float_equal(l.gflop, 3.0, 1e-12);
    /* bad indices */
    assert_int_equal(tc_lineage_sum(nodes, 5, 5, &l), TC_ERR_ARG);
    tc_lineage_node bad[1] = {{3, -1, 0, 1.0, 1.0}};
    assert_int_equal(tc_lineage_sum(bad, 1, 0, &l), TC_ERR_ARG);
}

static void test_goals(void **state) {
    tc_curve base, stu;
    synthetic(&base, &stu);
    tc_goal_stage st[4] = {{"teacher", 0.8345, {0}, 500},
                           {"auto50", 0.8243, {0}, 240},
                           {"auto25", 0.82, stu, 240},
                           {"scratch25", 0.78, base, 480}};
    tc_goal_result r;
    tc_goal g = {TC_GOAL_TOP1_AT_LEAST, 0, -1, 0.80, 0};
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 1);
    assert_non_null(strstr(r.result, "83.45%"));
    g.value = 0.84;
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 0);
    st[0].top1 = NAN;
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, -1);
    st[0].top1 = 0.8345;

    g = (tc_goal){TC_GOAL_TOP1_WITHIN, 1, 0, 3.0, 0};
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 1);
    assert_non_null(strstr(r.result, "1.02 points below"));
    g.value = 1.0;
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 0);

    /* 75% of 480 = 360: 0.64, the baseline needed 360 steps, auto25 reached
     * it at its pruning step 120 <= 0.5 x 360 */
    g = (tc_goal){TC_GOAL_REACH_FASTER, 2, 3, 0.5, 0.75};
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 1);
    assert_non_null(strstr(r.result, "target 64.00%"));
    g.value = 0.3; /* 120 > 108 */
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 0);
    /* reached only before pruning: not met */
    double low[12];
    for (int k = 0; k < 12; k++)
        low[k] = stu_steps[k] < 120 ? 0.9 : 0.5;
    tc_goal_stage st2[4];
    memcpy(st2, st, sizeof st2);
    st2[2].curve.acc = low;
    g.value = 0.5;
    tc_goal_check(&g, st2, 4, NAN, &r);
    assert_int_equal(r.met, 0);
    assert_non_null(strstr(r.result, "auto25 not reached"));
    /* no baseline curve: cannot tell */
    st2[3].curve.n = 0;
    tc_goal_check(&g, st2, 4, NAN, &r);
    assert_int_equal(r.met, -1);

    /* equal steps: 0.82 against 0.52 at step 240 */
    g = (tc_goal){TC_GOAL_AHEAD_AT_EQUAL_STEPS, 2, 3, 2.0, 0};
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 1);
    assert_non_null(strstr(r.result, "+30.00 points"));
    g.value = 31.0;
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, 0);
    tc_goal_check(&g, st2, 4, NAN, &r);
    assert_int_equal(r.met, -1);

    g = (tc_goal){TC_GOAL_WALL_TIME, -1, -1, 15.0, 0};
    tc_goal_check(&g, st, 4, 899.0, &r);
    assert_int_equal(r.met, 1);
    tc_goal_check(&g, st, 4, 901.0, &r);
    assert_int_equal(r.met, 0);
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, -1);

    /* a stage index outside the run */
    g = (tc_goal){TC_GOAL_TOP1_WITHIN, 1, 7, 3.0, 0};
    tc_goal_check(&g, st, 4, NAN, &r);
    assert_int_equal(r.met, -1);
    assert_non_null(strstr(r.result, "not in the run"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reach_between_evaluations),
        cmocka_unit_test(test_reach_first_and_never),
        cmocka_unit_test(test_reach_non_monotone),
        cmocka_unit_test(test_reach_counted_from_pruning),
        cmocka_unit_test(test_speedup),
        cmocka_unit_test(test_lineage),
        cmocka_unit_test(test_goals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
