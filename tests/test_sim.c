/* Simulated backends and the scheduler's decisions on a virtual clock (backends/sim/,
 * runtime/sched_model.c): deterministic checks of the makespan against the ideal, the best
 * single backend, outliers, exploration, and the spec parser's errors. */
#include <math.h>

#include "sched_model.h"
#include "tdm_test.h"

/* One hour of ideal time for the given lanes (items sized from the true throughputs). */
static int64_t hour_of_items(const tdm_sim_config *c)
{
    double rate = 0; /* items per ns */
    for (int b = 0; b < c->n_backends; b++) {
        const tdm_sim_backend *k = &c->backends[b];
        double eff = k->ns_per_item + (k->bandwidth > 0 ? k->bytes_per_item / k->bandwidth * 1e9 : 0);
        rate += k->count / eff;
    }
    return (int64_t)(3600e9 * rate);
}

static void add(tdm_sim_config *c, const char *spec)
{
    char err[256];
    int rc = tdm_sim_add(c, spec, err, sizeof err);
    if (rc != 0)
        fail_msg("tdm_sim_add(%s): %s", spec, err);
}

/* The mixes: CPU cores (100 ns/item), a device 10x faster than a core, a lane 2x slower,
 * with and without transfer costs, 1 to 64 lanes; calibrated and exploring. AUTO must end
 * within 5% of the ideal and never after the best single backend. */
static void test_auto_within_5pct_of_ideal(void **state)
{
    const int cpus[] = {1, 2, 4, 8, 16, 31, 62};
    int runs = 0;
    for (size_t ci = 0; ci < sizeof cpus / sizeof cpus[0]; ci++) {
        for (int mix = 0; mix < 4; mix++) {
            for (int calibrated = 0; calibrated < 2; calibrated++) {
                tdm_sim_config c = TDM_SIM_CONFIG_INIT;
                char spec[64];
                snprintf(spec, sizeof spec, "cpu*%d:tpi=100ns:lat=1us", cpus[ci]);
                add(&c, spec);
                if (mix == 1 || mix == 3)
                    add(&c, "gpu:tpi=10ns:lat=20us");
                if (mix == 2)
                    add(&c, "gpu:tpi=10ns:lat=20us:bw=16G:bytes=16"); /* +1 ns/item of copies */
                if (mix >= 2)
                    add(&c, "slow:tpi=200ns:lat=1us");
                c.items = hour_of_items(&c);
                c.calibrated = calibrated;
                tdm_sim_result r;
                assert_int_equal(tdm_simulate(&c, &r), 0);
                double ratio = r.makespan_s / r.ideal_s;
                if (!(ratio <= 1.05) || !(r.makespan_s <= r.best_single_s * 1.0001))
                    fail_msg("cpus %d mix %d calibrated %d: makespan %.2f s, ideal %.2f s "
                             "(%.4f), best single %.2f s",
                             cpus[ci], mix, calibrated, r.makespan_s, r.ideal_s, ratio,
                             r.best_single_s);
                assert_true(ratio >= 0.999); /* the ideal is a lower bound */
                /* a simulated hour is thousands of batches per lane, not billions (what makes
                 * it take milliseconds; no timing is asserted here) */
                int lanes = 0;
                for (int b = 0; b < c.n_backends; b++)
                    lanes += c.backends[b].count;
                assert_true(r.batches <= 4000 * (int64_t)lanes);
                runs++;
            }
        }
    }
    assert_int_equal(runs, 56);
}

/* A lane far slower than the rest takes almost nothing at the end: it is not the straggler. */
static void test_slow_lane_is_never_the_straggler(void **state)
{
    tdm_sim_config c = TDM_SIM_CONFIG_INIT;
    add(&c, "gpu*2:tpi=1ns:lat=10us");
    add(&c, "snail:tpi=10us"); /* 10000x slower */
    c.items = 1000000000;
    tdm_sim_result r;
    assert_int_equal(tdm_simulate(&c, &r), 0);
    assert_true(r.makespan_s <= r.ideal_s * 1.03);
    assert_true(r.makespan_s <= r.backends[0].alone_s);
    /* it takes about its throughput's share (5e-5 of the items), in small batches */
    assert_true(r.backends[1].items < 100000);
    /* EAGER has no model of the tail: the snail keeps a batch to the very end. */
    c.policy = TDM_SIM_EAGER;
    tdm_sim_result e;
    assert_int_equal(tdm_simulate(&c, &e), 0);
    assert_true(e.makespan_s > r.makespan_s);
    assert_int_equal(e.declines, 0);
}

/* Round-robin deals equal batches whatever the speed: the 10x device idles while the cores
 * finish theirs. AUTO beats it by a wide margin. */
static void test_round_robin_is_slower_than_auto(void **state)
{
    tdm_sim_config c = TDM_SIM_CONFIG_INIT;
    add(&c, "cpu*4:tpi=100ns");
    add(&c, "gpu:tpi=10ns:lat=20us");
    c.items = 100000000;
    tdm_sim_result a, rr;
    assert_int_equal(tdm_simulate(&c, &a), 0);
    c.policy = TDM_SIM_ROUND_ROBIN;
    assert_int_equal(tdm_simulate(&c, &rr), 0);
    /* each lane gets 1/5 of the items: the cores take 0.2 * 1e8 * 100 ns = 2 s */
    assert_true(fabs(rr.makespan_s - 2.0) < 0.01);
    assert_true(a.makespan_s < 0.6 * rr.makespan_s);
    assert_int_equal(rr.backends[0].items + rr.backends[1].items, c.items);
}

/* The same config gives the same result, bit for bit (host_s aside), noise included. */
static void test_deterministic(void **state)
{
    tdm_sim_config c = TDM_SIM_CONFIG_INIT;
    add(&c, "cpu*8:tpi=100ns:lat=1us:noise=0.3");
    add(&c, "gpu*2:tpi=7ns:lat=20us:bw=12G:bytes=8:noise=0.2");
    c.items = 500000000;
    c.seed = 42;
    tdm_sim_result a, b;
    assert_int_equal(tdm_simulate(&c, &a), 0);
    assert_int_equal(tdm_simulate(&c, &b), 0);
    assert_true(a.makespan_s == b.makespan_s);
    assert_int_equal(a.batches, b.batches);
    assert_int_equal(a.declines, b.declines);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(a.backends[i].items, b.backends[i].items);
        assert_true(a.backends[i].busy_s == b.backends[i].busy_s);
    }
    /* another seed: other noise, still close to the ideal */
    c.seed = 43;
    assert_int_equal(tdm_simulate(&c, &b), 0);
    assert_true(a.makespan_s != b.makespan_s);
    assert_true(b.makespan_s <= b.ideal_s * 1.10);
}

/* A few batches of the device are 20x slower (batch 400, 800, ...): the median model does
 * not flip its decisions (a mean over the same window would see the device several times
 * slower after each and starve it for the next batches). Its share stays what it is without
 * the outliers, and the run ends near its ideal. */
static void test_outliers_do_not_flip_decisions(void **state)
{
    tdm_sim_config c = TDM_SIM_CONFIG_INIT;
    add(&c, "cpu*4:tpi=100ns:lat=1us");
    add(&c, "gpu:tpi=10ns:lat=20us");
    c.items = 1000000000;
    c.calibrated = 1;
    tdm_sim_result clean, r;
    assert_int_equal(tdm_simulate(&c, &clean), 0);
    c.backends[1].outlier_every = 400;
    c.backends[1].outlier_factor = 20;
    assert_int_equal(tdm_simulate(&c, &r), 0);
    double share0 = (double)clean.backends[1].items / (double)c.items;
    double share = (double)r.backends[1].items / (double)c.items;
    if (!(share > share0 * 0.93) || !(r.makespan_s <= r.ideal_s * 1.06))
        fail_msg("device share %.4f (%.4f without outliers), makespan/ideal %.4f", share, share0,
                 r.makespan_s / r.ideal_s);
}

/* Uncalibrated lanes explore with small batches, a handful each; a calibrated run explores
 * not at all. */
static void test_exploration_then_calibrated(void **state)
{
    tdm_sim_config c = TDM_SIM_CONFIG_INIT;
    add(&c, "cpu*4:tpi=100ns");
    add(&c, "gpu*2:tpi=10ns:lat=20us");
    c.items = 100000000;
    tdm_sim_result r;
    assert_int_equal(tdm_simulate(&c, &r), 0);
    assert_true(r.explorations >= 6 && r.explorations <= 6 * 12); /* a short ladder per lane */
    c.calibrated = 1;
    assert_int_equal(tdm_simulate(&c, &r), 0);
    assert_int_equal(r.explorations, 0);
    /* the scheduler's estimates of the device's batches match what they took */
    assert_true(fabs(r.backends[1].est_s / r.backends[1].busy_s - 1.0) < 0.01);
}

/* The decision itself: a free fast lane takes half its share; a slow lane whose share is
 * under an item declines; the earliest finisher always takes the last item. */
static void test_decision_rules(void **state)
{
    tdm__lane_view v[3] = {
        {.tpi = 10, .lat = 0, .target_ns = 1e9, .cap_left = INT64_MAX, .eligible = true},
        {.tpi = 10, .lat = 0, .target_ns = 1e9, .cap_left = INT64_MAX, .eligible = true},
        {.tpi = 1e6, .lat = 0, .target_ns = 1e9, .cap_left = INT64_MAX, .eligible = true},
    };
    tdm__decision d;
    tdm__sched_decide(v, 3, 0, 0, 1000, &d);
    /* T: two 10 ns lanes and a 1 ms lane share 1000 items: about 5000 ns each */
    assert_true(fabs(d.t_end - 5000) < 10);
    assert_int_equal(d.items, 249); /* half of its ~499.8-item share */
    tdm__sched_decide(v, 3, 2, 0, 1000, &d);
    assert_int_equal(d.items, 0); /* the slow lane declines */
    assert_int_equal(d.best_other, 0);
    /* one item left: the fast lanes are busy for a long time, the slow one takes it */
    v[0].free_at = v[1].free_at = 1e7;
    tdm__sched_decide(v, 3, 2, 0, 1, &d);
    assert_int_equal(d.items, 1);
    /* target: a lane takes at most its target duration */
    v[0].free_at = v[1].free_at = 0;
    v[0].target_ns = 100;
    tdm__sched_decide(v, 3, 0, 0, 1000, &d);
    assert_int_equal(d.items, 10);
    assert_true(fabs(d.est_ns - 100) < 1e-9);
    /* a share cap limits it; an ineligible or capped-out lane takes nothing */
    v[0].target_ns = 1e9;
    v[0].cap_left = 7;
    tdm__sched_decide(v, 3, 0, 0, 1000, &d);
    assert_int_equal(d.items, 7);
    v[0].cap_left = 0;
    tdm__sched_decide(v, 3, 0, 0, 1000, &d);
    assert_int_equal(d.items, 0);
    v[1].eligible = false;
    tdm__sched_decide(v, 3, 1, 0, 1000, &d);
    assert_int_equal(d.items, 0);
    /* uncalibrated: an exploration batch */
    v[1].eligible = true;
    v[1].tpi = 0;
    v[1].explore = 16;
    tdm__sched_decide(v, 3, 1, 0, 1000, &d);
    assert_int_equal(d.items, 16);
    assert_true(d.explore);
}

/* The estimator: batches of 100..1600 items on the line t = 5000 + 10 n are fitted exactly;
 * a 50x slow batch in the window moves nothing; batches all of one size give the time per
 * item with the known fixed cost; garbage is ignored. */
static void test_estimator_is_robust(void **state)
{
    tdm__est e;
    tdm__est_init(&e, 1000);
    assert_true(e.tpi == 0);
    for (int i = 0; i < 10; i++) {
        double n = 100.0 * (1 << (i % 5));
        tdm__est_add(&e, n, 5000 + 10 * n);
    }
    assert_true(fabs(e.tpi - 10) < 1e-9 && fabs(e.lat - 5000) < 1e-6);
    tdm__est_add(&e, 400, 50 * (5000 + 10 * 400.0)); /* one outlier */
    assert_true(fabs(e.tpi - 10) < 1e-9 && fabs(e.lat - 5000) < 1e-6);
    tdm__est_add(&e, -1, 5);
    tdm__est_add(&e, 5, NAN);
    assert_true(fabs(e.tpi - 10) < 1e-9);
    /* one size only: (t - lat) / n with the last fitted lat */
    tdm__est_init(&e, 1000);
    for (int i = 0; i < 5; i++)
        tdm__est_add(&e, 100, 1000 + 100 * 7.0);
    assert_true(fabs(e.tpi - 7) < 1e-9 && e.lat == 1000);
    /* a stored model: exactly its values, and a few new batches do not move it */
    tdm__est_seed(&e, 20.0, 300.0, 9);
    assert_true(e.tpi == 20.0 && e.lat == 300.0);
    tdm__est_add(&e, 1000, 1e9);
    assert_true(fabs(e.tpi - 20.0) < 1e-6);
    assert_true(isinf(tdm__waterfill((double[]){0}, (double[]){0}, 1, 10)));
    double v[5] = {5, 1, 4, 2, 3};
    assert_true(tdm__median(v, 5) == 3 && tdm__median(v, 0) == 0);
}

static void test_spec_errors(void **state)
{
    tdm_sim_config c = TDM_SIM_CONFIG_INIT;
    char err[256];
    const char *bad[] = {
        "",                        /* no name */
        "cpu",                     /* no tpi */
        "cpu*0:tpi=1ns",           /* count */
        "cpu*x:tpi=1ns",           /* count */
        "cpu*2000:tpi=1ns",        /* too many lanes */
        "cpu:tpi=-1ns",            /* negative */
        "cpu:tpi=1parsec",         /* unit */
        "cpu:tpi=1ns:lat",         /* not key=value */
        "cpu:tpi=1ns:color=red",   /* unknown key */
        "cpu:tpi=1ns:bytes=8",     /* bytes without bw */
        "cpu:tpi=1ns:noise=1",     /* noise out of range */
        "cpu:tpi=1ns:outlier=0/2", /* outlier */
        "cpu:tpi=1ns:outlier=5",
        "a_name_that_is_far_too_long_for_it:tpi=1ns",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (tdm_sim_add(&c, bad[i], err, sizeof err) != TDM_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(c.n_backends, 0);
    assert_int_equal(tdm_sim_add(NULL, "cpu:tpi=1", err, sizeof err), TDM_EINVAL);
    assert_int_equal(tdm_sim_add(&c, NULL, NULL, 0), TDM_EINVAL);
    for (int i = 0; i < TDM_SIM_MAX_BACKENDS; i++)
        assert_int_equal(tdm_sim_add(&c, "x:tpi=1us:lat=2us:bw=1G:bytes=4:noise=0.1", err, sizeof err), 0);
    assert_int_equal(tdm_sim_add(&c, "x:tpi=1", err, sizeof err), TDM_EINVAL);
    assert_true(c.backends[3].latency_s == 2e-6 && c.backends[3].bandwidth == 1e9);
}

static void test_simulate_errors(void **state)
{
    tdm_sim_config c = TDM_SIM_CONFIG_INIT;
    tdm_sim_result r;
    assert_int_equal(tdm_simulate(NULL, &r), TDM_EINVAL);
    assert_int_equal(tdm_simulate(&c, &r), TDM_EINVAL); /* no backend */
    add(&c, "cpu:tpi=1ns");
    assert_int_equal(tdm_simulate(&c, NULL), TDM_EINVAL);
    c.items = 0;
    assert_int_equal(tdm_simulate(&c, &r), TDM_EINVAL);
    c.items = 10;
    c.policy = (tdm_sim_policy)9;
    assert_int_equal(tdm_simulate(&c, &r), TDM_EINVAL);
    c.policy = TDM_SIM_AUTO;
    c.size = 4;
    assert_int_equal(tdm_simulate(&c, &r), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(NULL), "TDM_SIM_CONFIG_INIT"));
    c.size = sizeof c;
    c.backends[0].noise = 2;
    assert_int_equal(tdm_simulate(&c, &r), TDM_EINVAL);
    c.backends[0].noise = 0;
    assert_int_equal(tdm_simulate(&c, &r), 0);
    assert_int_equal(r.backends[0].items, 10);
    char buf[2048];
    int n = tdm_sim_format(&c, &r, buf, sizeof buf);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    assert_non_null(strstr(buf, "makespan"));
    assert_int_equal(tdm_sim_format(&c, &r, NULL, 0), n); /* the length it needs */
    assert_int_equal(tdm_sim_format(NULL, &r, buf, sizeof buf), TDM_EINVAL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_within_5pct_of_ideal),
        cmocka_unit_test(test_slow_lane_is_never_the_straggler),
        cmocka_unit_test(test_round_robin_is_slower_than_auto),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_outliers_do_not_flip_decisions),
        cmocka_unit_test(test_exploration_then_calibrated),
        cmocka_unit_test(test_decision_rules),
        cmocka_unit_test(test_estimator_is_robust),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_simulate_errors),
    };
    return TDM_TEST_MAIN("sim", tests);
}
