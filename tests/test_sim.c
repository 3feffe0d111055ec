/* SPDX-License-Identifier: MIT */
/* Simulated backends and the scheduler's decisions on a virtual clock (backends/sim/,
 * runtime/sched/sched_model.c): deterministic checks of the makespan against the ideal, the best
 * single backend, outliers, exploration, and the spec parser's errors; simulated clusters
 * (the distributed map's protocol over N nodes) and their errors. */
#include <math.h>

#include "sched/sched_model.h"
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
    /* a stored model: exactly its values, and one batch far off does not move it */
    tdm__est_seed(&e, 20.0, 300.0, 9, 0);
    assert_true(e.tpi == 20.0 && e.lat == 300.0 && e.seeded);
    assert_false(tdm__est_add(&e, 1000, 1e9));
    assert_true(fabs(e.tpi - 20.0) < 1e-6);
    /* a second in a row shows it stale: measured afresh from those two alone */
    assert_true(tdm__est_add(&e, 2000, 2e9));
    assert_false(e.seeded);
    assert_int_equal(e.count, 2);
    assert_true(fabs(e.tpi - 1e6) < 1);
    /* a batch within 8x bears it out: no later batch is checked against it */
    tdm__est_seed(&e, 20.0, 300.0, 4, 0);
    assert_false(tdm__est_add(&e, 1000, 300 + 1000 * 30.0));
    assert_false(e.seeded);
    assert_false(tdm__est_add(&e, 1000, 1e9));
    assert_false(tdm__est_add(&e, 1000, 1e9));
    /* one batch far faster than stored shows it stale at any size (nothing makes a batch
     * faster) ... */
    tdm__est_seed(&e, 1e6, 300.0, 4, 0);
    assert_true(tdm__est_add(&e, 1, 1e3));
    assert_false(e.seeded);
    /* ... far slower only with 16 items or more (a few items are slowed by a late wake-up) */
    tdm__est_seed(&e, 2.0, 300.0, 4, 0);
    assert_false(tdm__est_add(&e, 1, 21e3));
    assert_false(tdm__est_add(&e, 4, 30e3));
    assert_true(e.seeded);
    assert_false(tdm__est_add(&e, 64, 64 * 100.0));
    assert_true(tdm__est_add(&e, 64, 64 * 100.0));
    assert_true(isinf(tdm__waterfill((double[]){0}, (double[]){0}, 1, 10)));
    double v[5] = {5, 1, 4, 2, 3};
    assert_true(tdm__median(v, 5) == 3 && tdm__median(v, 0) == 0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The estimator's median (a selection, not a sort) against the sorted middle, for every size
 * the estimator asks for (up to 66 slopes), with ties, runs, repeated values and infinities;
 * each array on the heap at its exact size, so that the ASan build catches a read or write
 * past it. With NaN among the values it must still end and stay inside the array. */
static void test_median_matches_the_sorted_middle(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (int it = 0; it < 20000; it++) {
        int n = 1 + it % 66, mode = (it / 66) % 6;
        double *v = malloc(sizeof *v * (size_t)n), *s = malloc(sizeof *s * (size_t)n);
        assert_non_null(v);
        assert_non_null(s);
        for (int i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = seed >> 8;
            v[i] = mode == 0   ? (double)r / 16777216.0 /* distinct */
                   : mode == 1 ? (double)(r % 3)         /* many ties */
                   : mode == 2 ? (double)i               /* sorted */
                   : mode == 3 ? (double)(n - i)         /* reversed */
                   : mode == 4 ? (r % 4 == 0 ? INFINITY : r % 4 == 1 ? -INFINITY : (double)(r % 5))
                               : (r % 3 == 0 ? NAN : (double)(r % 7));
            s[i] = v[i];
        }
        double got = tdm__median(v, n);
        if (mode < 5) {
            qsort(s, (size_t)n, sizeof *s, cmp_double);
            double want = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
            assert_true(got == want || (isnan(got) && isnan(want))); /* (inf - inf) */
        }
        free(v);
        free(s);
    }
}

/* The estimator's weighted median (a selection) against a sort and a running sum, for every
 * size the estimator asks for (up to 66 slopes), with ties, sorted and reversed runs, zero
 * weights and infinities; small whole weights, so that the sums are exact and a tie with
 * half the total is decided the same way. On the heap at their exact sizes (ASan). */
static void test_weighted_median_matches_the_sorted_one(void **state)
{
    (void)state;
    unsigned seed = 777;
    for (int it = 0; it < 20000; it++) {
        int n = 1 + it % 66, mode = (it / 66) % 5;
        double *v = malloc(sizeof *v * (size_t)n), *w = malloc(sizeof *w * (size_t)n);
        double(*s)[2] = malloc(sizeof *s * (size_t)n);
        assert_true(v && w && s);
        double total = 0;
        for (int i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = seed >> 8;
            v[i] = mode == 0   ? (double)(r % 100000)
                   : mode == 1 ? (double)(r % 3)
                   : mode == 2 ? (double)i
                   : mode == 3 ? (double)(n - i)
                               : (r % 4 == 0   ? INFINITY
                                  : r % 4 == 1 ? -INFINITY
                                               : (double)(r % 5));
            w[i] = (double)((r >> 8) % 7); /* 0..6 */
            if (i == 0 && w[i] == 0)
                w[i] = 1; /* (not all zero) */
            s[i][0] = v[i];
            s[i][1] = w[i];
            total += w[i];
        }
        double got = tdm__weighted_median(v, w, n);
        qsort(s, (size_t)n, sizeof *s, cmp_double); /* (by the value, the first of each pair) */
        double cum = 0, want = s[n - 1][0];
        for (int i = 0; i < n; i++) {
            cum += s[i][1];
            /* (ties: the weight of every copy of a value counts before it is judged) */
            if (cum >= total / 2 && (i == n - 1 || s[i + 1][0] != s[i][0])) {
                want = s[i][0];
                break;
            }
        }
        assert_true(got == want);
        free(v);
        free(w);
        free(s);
    }
    assert_true(tdm__weighted_median(NULL, NULL, 0) == 0);
    /* all weights zero: the smallest value; a negative or NaN weight stays inside the array
     * (not a use: the estimator's weights are sizes apart, > 0) */
    double z[3] = {3, 1, 2}, zw[3] = {0, 0, 0};
    assert_true(tdm__weighted_median(z, zw, 3) == 1);
    double a[2] = {2, 1}, aw[2] = {NAN, 1};
    double got = tdm__weighted_median(a, aw, 2);
    assert_true(got == 1 || got == 2);
    double b[3] = {5, 4, 6}, bw[3] = {-3, 1, 1};
    got = tdm__weighted_median(b, bw, 3);
    assert_true(got == 4 || got == 5 || got == 6);
}

/* One slowed group a little larger than the batches of one size around it: every pair of
 * batches clearly apart in size hangs on it, and so did the fitted slope. Replayed from a
 * logged cold pi map (PoCL's groups of n_queues batches: items, microseconds), where the
 * 132-item group read as 4.38e5 ns per item against 1.2e5 and the map went to the CPU threads
 * at half the speed. The estimate stays with the other groups. */
static void test_estimator_one_slowed_larger_group(void **state)
{
    (void)state;
    static const double log[][2] = {{1, 260.3},    {4, 1009.0},   {16, 2403.9},  {81, 13497.9},
                                    {78, 8775.1},  {75, 9540.6},  {86, 11552.8}, {95, 11830.1},
                                    {94, 11844.2}, {96, 11903.6}, {96, 11655.3}, {97, 12866.0},
                                    {98, 16316.5}, {97, 12917.0}, {99, 8461.3}};
    tdm__est e;
    tdm__est_init(&e, 50e3);
    for (size_t i = 0; i < sizeof log / sizeof log[0]; i++)
        tdm__est_add(&e, log[i][0], log[i][1] * 1e3);
    assert_true(e.tpi > 1.0e5 && e.tpi < 1.4e5);
    tdm__est_add(&e, 132, 32444.0e3); /* the slowed one */
    assert_true(e.tpi > 1.0e5 && e.tpi < 1.4e5);
    /* a slope that is there (batches of 50 and 100 on t = 2e6 + 1e5 n, then one of 200
     * slowed 1.5x) is kept */
    tdm__est_init(&e, 50e3);
    for (int i = 0; i < 10; i++)
        tdm__est_add(&e, i % 2 ? 100 : 50, 2e6 + 1e5 * (i % 2 ? 100 : 50));
    assert_true(fabs(e.tpi - 1e5) < 1 && fabs(e.lat - 2e6) < 1e3);
    tdm__est_add(&e, 200, 1.5 * (2e6 + 1e5 * 200));
    assert_true(fabs(e.tpi - 1e5) < 1 && fabs(e.lat - 2e6) < 1e3);
}

/* A full window is not fitted again for a batch on its line (within 20%), up to 3 in a row: a
 * slow drift is taken in at every 4th batch; a batch off the line is fitted at once, and so is
 * every batch while the window fills or a stored figure is not yet borne out. */
static void test_estimator_refits_a_full_window_every_4th_batch_on_its_line(void **state)
{
    (void)state;
    tdm__est e;
    tdm__est_init(&e, 1000);
    for (int i = 0; i < TDM__EST_WIN - 1; i++) {
        double n = i % 2 ? 400 : 100;
        tdm__est_add(&e, n, 1000 + 10 * n);
        assert_int_equal(e.unfit, 0); /* (filling: each fitted) */
    }
    tdm__est_add(&e, 400, 1000 + 10 * 400.0); /* (the one that fills it: on the line) */
    assert_int_equal(e.unfit, 1);
    tdm__est_add(&e, 100, 1000 + 10 * 100.0);
    tdm__est_add(&e, 400, 1000 + 10 * 400.0);
    tdm__est_add(&e, 100, 1000 + 10 * 100.0); /* (the 4th: fitted) */
    assert_int_equal(e.unfit, 0);
    assert_true(fabs(e.tpi - 10) < 1e-9 && fabs(e.lat - 1000) < 1e-6);
    /* 5% slower per item: on the line, fitted at every 4th */
    for (int i = 0; i < TDM__EST_WIN; i++) {
        double n = i % 2 ? 400 : 100;
        tdm__est_add(&e, n, 1000 + 10.5 * n);
        assert_int_equal(e.unfit, (i + 1) % 4);
        if (i < 3)
            assert_true(fabs(e.tpi - 10) < 1e-9);
    }
    assert_true(fabs(e.tpi - 10.5) < 1e-9 && fabs(e.lat - 1000) < 1e-6); /* (the window: all new) */
    /* off the line (2x): fitted at once, though the medians keep the estimate */
    tdm__est_add(&e, 400, 1000 + 10.5 * 400);
    assert_int_equal(e.unfit, 1);
    tdm__est_add(&e, 400, 2 * (1000 + 10.5 * 400));
    assert_int_equal(e.unfit, 0);
    assert_true(fabs(e.tpi - 10.5) < 1e-9);
    /* a stored figure not yet borne out (batches of 8 items 10x slower than it: too few items
     * to show it stale) fills the window: every batch fitted, though on the line */
    tdm__est_seed(&e, 10.0, 1000.0, 4, 8);
    assert_int_equal(e.unfit, 0);
    for (int i = 0; i < TDM__EST_WIN; i++) {
        tdm__est_add(&e, 8, 1000 + 8 * 100.0);
        assert_true(e.seeded);
        assert_int_equal(e.unfit, 0);
    }
    tdm__est_seed(&e, 10.0, 1000.0, TDM__EST_WIN, 400); /* (a full window of seeds) */
    assert_int_equal(e.unfit, 0);
    /* flushed: the batches left unfitted are fitted in */
    tdm__est_init(&e, 1000); /* (batches of one size: tpi is the median of their own) */
    for (int i = 0; i < TDM__EST_WIN + 2; i++)
        tdm__est_add(&e, 100, 1000 + (i < 6 ? 10 : 10.5) * 100);
    assert_int_equal(e.unfit, 3); /* (the batch that filled the window and 2 more, on the line) */
    assert_true(fabs(e.tpi - 10) < 1e-9); /* (fitted with 6 of 11 at 10) */
    tdm__est_flush(&e);
    assert_int_equal(e.unfit, 0);
    assert_true(fabs(e.tpi - 10.5) < 1e-9); /* (4 of 12 at 10) */
    tdm__est_flush(&e);                     /* (nothing left: no change) */
    assert_true(e.unfit == 0);
}

/* A stored figure counts as its 4 batches against the lane's own batches: seeded at the size
 * of what the lane measures (PoCL's groups of 3 batches of 18 pi items), a group read 35%
 * slower moves nothing, 3 in a row neither, and the measured batches take over once they are
 * the most. Seeded at sizes of 1-9 items, as before, the first such group replaced a figure
 * settled over 81 batches, and the map went to the CPU threads. */
static void test_estimator_seed_counts_against_the_lanes_own_batches(void **state)
{
    (void)state;
    tdm__est e;
    tdm__est_init(&e, 50e3);
    tdm__est_seed(&e, 2.2e5, 57e3, 4, 54);
    assert_true(e.tpi == 2.2e5 && e.lat == 57e3);
    for (int i = 0; i < 3; i++) {
        tdm__est_add(&e, 54, 57e3 + 54 * 2.96e5);
        assert_true(fabs(e.tpi - 2.2e5) < 1e-6 * 2.2e5);
    }
    tdm__est_add(&e, 54, 57e3 + 54 * 2.96e5);
    tdm__est_add(&e, 54, 57e3 + 54 * 2.96e5);
    assert_true(fabs(e.tpi - 2.96e5) < 1e-6 * 2.96e5);
    /* a batch of another size (the run's last, 7 items) on the line: one line through it and
     * the seeds, as for any two sizes */
    tdm__est_seed(&e, 2.2e5, 57e3, 4, 54);
    tdm__est_add(&e, 7, 57e3 + 7 * 2.2e5);
    assert_true(fabs(e.tpi - 2.2e5) < 1e-6 * 2.2e5);
}

/* PoCL's groups of pi items in a warm AUTO map (3 batches of about 4 ms each, 54-114 items per
 * group as the batches grew; replayed from TDM_DEBUG=sched with the times logged): among sizes
 * less than 4x apart the line hung on their noise, fitting fixed costs of 1.9-7.4 ms (a launch
 * costs 0.05) and 1.1-1.6e5 ns per item, which the map stored, while the groups ran at 1.7-2.6e5.
 * With the fixed cost known before, the estimate stays with the groups' own time per item. A
 * fixed cost that is there, among batches 2x apart that it fits exactly, is still fitted. */
static void test_estimator_noise_among_close_sizes_is_no_fixed_cost(void **state)
{
    (void)state;
    static const double log[][2] = {
        {63, 13519.9},  {60, 14131.9},  {54, 10912.6},  {54, 10114.0}, {54, 10756.3}, {55, 12384.7},
        {56, 13957.9},  {54, 9401.7},   {54, 9568.8},   {55, 13162.2}, {56, 10460.4}, {55, 9852.7},
        {76, 20708.2},  {114, 19106.5}, {104, 30806.3}, {81, 15550.7}, {74, 19550.5}, {72, 16533.7},
        {73, 14727.2},  {75, 14667.8},  {75, 17271.9},  {85, 23629.9}, {96, 15662.1}, {87, 21382.9},
        {100, 25053.9}, {90, 17381.7}};
    tdm__est e;
    tdm__est_init(&e, 50e3);
    for (size_t i = 0; i < sizeof log / sizeof log[0]; i++) {
        tdm__est_add(&e, log[i][0], log[i][1] * 1e3);
        assert_true(e.tpi > 1.7e5 && e.tpi < 2.6e5);
        assert_true(e.lat <= 50e3);
    }
    tdm__est_init(&e, 50e3);
    for (int i = 0; i < 10; i++)
        tdm__est_add(&e, i % 2 ? 100 : 50, 2e6 + 1e5 * (i % 2 ? 100 : 50));
    assert_true(fabs(e.tpi - 1e5) < 1 && fabs(e.lat - 2e6) < 1e3);
    /* a hand-off slower than thought (30 us against the 200 ns known), among batches of 20
     * items with 2% of noise, shown by one batch of twice the size (job_sched.c doubles one
     * so): fitted, as the noise could not make it */
    tdm__est_init(&e, 200);
    for (int i = 0; i < 12; i++) {
        double n = i == 6 ? 40 : 20;
        tdm__est_add(&e, n, (30e3 + n * 5e3) * (1 + 0.02 * ((i * 7) % 5 - 2) / 2));
    }
    assert_true(e.lat > 20e3 && e.lat < 40e3 && e.tpi > 4.5e3 && e.tpi < 5.5e3);
}

/* The cores slowing while a CPU thread's batches shrink (replayed from a pi map of one thread
 * and one worker process under load, items of 20000 terms: 2.8e4 ns per item, then about
 * twice that): a batch of 60 items, batches of 3 at 84-105 us, then of 2 at 100-102 us, then
 * of 1 and 2 at about 60 us. The slopes between sizes so close hang on the drift: 28 pairs 1
 * item apart outvoted the 11 pairs with the 60 (6.25e3 ns per item, a fixed cost of 90 us),
 * and later, among batches of 1 and 2 items that took about as long, the line said 40 ns per
 * item (the thread took half the 672 items left in one batch). Slopes weighted by how far
 * apart their sizes are, and no line that puts most of a batch's time in its fixed cost from
 * sizes less than 4x apart: the estimate stays within 2x of the batches' own time per item.
 * A fixed cost that is there, among sizes 4x apart or more, is still fitted. */
static void test_estimator_drift_among_close_sizes(void **state)
{
    (void)state;
    tdm__est e;
    tdm__est_init(&e, 200);
    tdm__est_add(&e, 60, 1695e3);
    for (int i = 0; i < 7; i++) {
        tdm__est_add(&e, 3, i < 5 ? 84e3 + 4e3 * i : 105e3);
        assert_true(e.tpi > 1.5e4);
    }
    for (int i = 0; i < 5; i++) {
        tdm__est_add(&e, 2, 100e3 + 1e3 * (i % 3));
        assert_true(e.tpi > 1.5e4);
    }
    assert_true(e.n[0] != 60 && e.n[TDM__EST_WIN - 1] != 60); /* (the 60 has left) */
    for (int i = 0; i < 12; i++) {
        double n = i % 6 == 5 ? 2 : 1;
        tdm__est_add(&e, n, (n == 2 ? 61e3 : 60e3) + 500 * (i % 4));
        assert_true(e.tpi > 1.5e4);
    }
    assert_true(e.lat + e.tpi > 5e4 && e.lat + e.tpi < 7e4); /* a 1-item batch: about 60 us */
    /* a real fixed cost, sizes 4x apart: kept */
    tdm__est_init(&e, 200);
    for (int i = 0; i < 12; i++)
        tdm__est_add(&e, i % 2 ? 4 : 1, 100e3 + 1e3 * (i % 2 ? 4 : 1));
    assert_true(fabs(e.tpi - 1e3) < 1 && fabs(e.lat - 100e3) < 1);
}

/* A line whose fixed cost is below zero, from sizes less than 4x apart, is no fit: its slope
 * is more than any batch's time per item. Replayed from a logged cold pi map (a CPU thread's
 * window: items, microseconds): 11 batches of one item and one of two drew 5.84e5 ns per item
 * and a fixed cost of -76 us, taken as 0, 1.15x what its one-item batches took; the threads,
 * compared with PoCL at that figure, handed it the cores, and PoCL, 4% slower, ran the map.
 * The estimate is the batches' own time per item. A fixed cost above zero that stands out of
 * the scatter is still fitted (test_estimator_noise_among_close_sizes_is_no_fixed_cost). */
static void test_estimator_no_fixed_cost_below_zero(void **state)
{
    (void)state;
    static const double log[][2] = {{1, 477.2}, {1, 509.2},  {1, 509.4}, {1, 708.5},
                                    {1, 507.6}, {1, 480.8},  {1, 515.2}, {1, 481.8},
                                    {1, 512.4}, {2, 1091.4}, {1, 478.5}, {1, 506.7}};
    tdm__est e;
    tdm__est_init(&e, 200);
    for (size_t i = 0; i < sizeof log / sizeof log[0]; i++)
        tdm__est_add(&e, log[i][0], log[i][1] * 1e3);
    tdm__est_flush(&e);
    assert_true(e.lat >= 0 && e.lat < 10e3);
    assert_true(e.tpi > 4.9e5 && e.tpi < 5.2e5); /* (its one-item batches' median: 5.08e5) */
    /* the same on an exact line through zero, the two-item batch 10% slow: no slope of it */
    tdm__est_init(&e, 200);
    for (int i = 0; i < 12; i++)
        tdm__est_add(&e, i == 9 ? 2 : 1, i == 9 ? 1.1e6 : 5e5);
    tdm__est_flush(&e);
    assert_true(e.tpi > 4.9e5 && e.tpi < 5.1e5);
}

/* A host-CPU device's rung below the size that fills it may have run on one of its cores: its
 * budget is reckoned at half its estimate. PoCL's pi rung of 16 items on one core of two
 * (fill: 128), 5.1e5 ns per item in 8.2 ms, 10.5 ms explored, the threads 2.45e5 together:
 * taken as its speed (0.48 of theirs), the far rule ended the ladder before the 64 rung;
 * at half, it reads near, and the 64 rung runs. From the 128 rung on, the estimate alone. */
static void test_exploration_reach_of_a_rung_below_fill(void **state)
{
    (void)state;
    const double thr = 1 / 2.45e5, items = 2000;
    double share = 0;
    assert_true(tdm__explore_reach_tpi(true, 128, 16, 5.1e5) == 2.55e5);
    assert_true(tdm__explore_reach_tpi(true, 128, 64, 5.1e5) == 2.55e5);
    assert_true(tdm__explore_reach_tpi(true, 128, 128, 5.1e5) == 5.1e5); /* fills it */
    assert_true(tdm__explore_reach_tpi(false, 128, 16, 5.1e5) == 5.1e5); /* processes */
    assert_true(tdm__explore_reach_tpi(true, 64, 16, 5.1e5) == 5.1e5);   /* one unit */
    double far = tdm__explore_budget_of(true, items, thr, 5.1e5, &share);
    assert_true(share == 0.02);
    assert_true(tdm__explore_stops(10.5e6, 16, 8.2e6, 64, far));
    double b = tdm__explore_budget_of(true, items, thr,
                                      tdm__explore_reach_tpi(true, 128, 16, 5.1e5), &share);
    assert_true(share == 0.03 && fabs(b - 0.03 * items * 2.45e5 / 0.1) < 1);
    assert_false(tdm__explore_stops(10.5e6, 16, 8.2e6, 64, b));
    /* the 64 rung on one core too: the 256 rung (130 ms more, at the estimate) passes it */
    assert_true(tdm__explore_stops(43.3e6, 64, 32.6e6, 256, b));
}

/* Sides taking turns on shared cores (threads, processes, a host-CPU device), with the
 * runtime's margins: in their order, the processes displace the threads when 5% faster, a
 * device the side chosen before it when 2% faster; a side that holds its place is displaced
 * only by one 5% faster than it, whichever comes first in the order. */
static void test_side_pick_keeps_the_side_that_runs(void **state)
{
    (void)state;
    const bool all[3] = {true, true, true}, no_procs[3] = {true, false, true};
    const bool none[3] = {false, false, false};
    const double m[3] = {1.0, 1.05, 1.02};
    double r[3] = {1.0, 0.5, 1.03}; /* the device 3% faster than the threads */
    assert_int_equal(tdm__side_pick(r, all, m, 3, -1), 2);
    r[2] = 1.01;
    assert_int_equal(tdm__side_pick(r, all, m, 3, -1), 0); /* the threads keep a tie */
    assert_int_equal(tdm__side_pick(r, all, m, 3, 2), 2);  /* the device runs: it stays */
    /* the device runs; the threads read 4% faster than it: it stays; 6%: they take over */
    r[0] = 1.04 * r[2];
    assert_int_equal(tdm__side_pick(r, all, m, 3, 2), 2);
    assert_int_equal(tdm__side_pick(r, all, m, 3, -1), 0);
    r[0] = 1.06 * r[2];
    assert_int_equal(tdm__side_pick(r, all, m, 3, 2), 0);
    /* the processes need 5% over the threads; a device then 2% over the processes */
    double q[3] = {1.0, 1.04, 0};
    const bool cpu[3] = {true, true, false};
    assert_int_equal(tdm__side_pick(q, cpu, m, 3, -1), 0);
    q[1] = 1.06;
    assert_int_equal(tdm__side_pick(q, cpu, m, 3, -1), 1);
    q[2] = 1.06 * 1.03;
    assert_int_equal(tdm__side_pick(q, all, m, 3, -1), 2);
    /* the device holds its place: the threads 4% faster do not displace it, and the
     * processes 6% faster than it are not 5% faster than the threads, which come first */
    double h[3] = {1.04, 1.06, 1.0};
    assert_int_equal(tdm__side_pick(h, all, m, 3, 2), 2);
    h[1] = 1.04 * 1.06;
    assert_int_equal(tdm__side_pick(h, all, m, 3, 2), 1);
    /* whichever side is passed as running holds its place: the processes 40% slower than
     * the threads lose it, then the device must beat the threads by 2% */
    double p[3] = {1.0, 0.6, 1.01};
    assert_int_equal(tdm__side_pick(p, all, m, 3, 1), 0);
    /* a side that runs but is not there any more, or out of range: as if none ran */
    p[1] = 2.0;
    assert_int_equal(tdm__side_pick(p, no_procs, m, 3, 1), 0);
    assert_int_equal(tdm__side_pick(p, all, m, 3, 7), 1);
    assert_int_equal(tdm__side_pick(p, none, m, 3, 0), -1);
}

/* The exploration budget bounds what exploring alone costs: the threads' share of the map,
 * divided by the part of their speed the lane lacks, up to the cap on the part it is credited
 * with (0.75: four times the share at most). */
static void test_exploration_budget_weighs_the_lanes_speed(void **state)
{
    (void)state;
    /* the threads: 1 item per 100 ns, 10^6 items: 1e8 ns for the map; 2% of it: 2e6 ns */
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 0, 0.75) - 2e6) < 1e-3);
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 1e4, 0.75) - 2e6 / 0.99) < 1e-3);
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 200, 0.75) - 4e6) < 1e-3); /* half */
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 100, 0.75) - 8e6) < 1e-3); /* as fast */
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 10, 0.75) - 8e6) < 1e-3);  /* faster */
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 100, 0.9) - 2e7) < 1e-3);  /* cap 0.9 */
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 125, 0.9) - 1e7) < 1e-3);  /* 0.8 */
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 100, 0) - 2e6) < 1e-3);    /* none */
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 100, 1) - 2e6) < 1e-3);
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, 100, NAN) - 2e6) < 1e-3);
    assert_true(isinf(tdm__explore_budget(0.02, 1e6, 0, 100, 0.75)));
    assert_true(isinf(tdm__explore_budget(0.02, 1e6, NAN, 100, 0.75)));
    assert_true(fabs(tdm__explore_budget(0.02, 1e6, 0.01, NAN, 0.75) - 2e6) < 1e-3);
}

/* A host-CPU device that reads close to the threads (at 3/4 of their speed or more) may spend
 * 3% of their time, credited with up to 0.9 of their speed; processes, and a device farther
 * off, 2% and 0.75. The figures of a cold pi map on PoCL (2,000 items, the two threads 2.3e5
 * ns per item together: 460 ms): after its 64-item rung at 2.6e5 (its rungs so far 26 ms), the
 * 256-item rung (67 ms at that figure) runs under the close rule and not under the far one;
 * at 3.1e5 (74% of the threads' speed) it does not run either way. exp_sinh on PoCL (80 ns
 * per item against 1.35 together, 20M items) keeps the far rule. */
static void test_exploration_budget_of_a_close_device(void **state)
{
    (void)state;
    const double thr = 1 / 2.3e5, items = 2000;
    double share = 0;
    double b = tdm__explore_budget_of(true, items, thr, 2.6e5, &share);
    assert_true(share == 0.03);
    assert_true(fabs(b - 0.03 * 460e6 / (1 - 2.3 / 2.6)) < 1);
    assert_false(tdm__explore_stops(26e6, 64, 64 * 2.6e5, 256, b));
    double far = tdm__explore_budget_of(false, items, thr, 2.6e5, &share); /* processes */
    assert_true(share == 0.02 && fabs(far - 0.02 * 460e6 / 0.25) < 1);
    assert_true(tdm__explore_stops(26e6, 64, 64 * 2.6e5, 256, far));
    b = tdm__explore_budget_of(true, items, thr, 3.1e5, &share); /* 2.3 / 3.1 = 0.742 */
    assert_true(share == 0.02 && fabs(b - 0.02 * 460e6 / (1 - 2.3 / 3.1)) < 1);
    assert_true(tdm__explore_stops(26e6, 64, 64 * 3.1e5, 256, b));
    b = tdm__explore_budget_of(true, items, thr, 1.5e5, &share); /* faster: credited 0.9 */
    assert_true(share == 0.03 && fabs(b - 0.03 * 460e6 / 0.1) < 1);
    b = tdm__explore_budget_of(true, 2e7, 1 / 1.35, 80, &share); /* exp_sinh: far */
    assert_true(share == 0.02 && fabs(b - 0.02 * 2e7 * 1.35 / (1 - 1.35 / 80)) < 1e-6);
    assert_true(isinf(tdm__explore_budget_of(true, items, 0, 2.6e5, NULL))); /* no threads */
    b = tdm__explore_budget_of(true, items, thr, 0, &share); /* no estimate yet: the far rule */
    assert_true(share == 0.02 && fabs(b - 0.02 * 460e6) < 1);
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

/* ---- clusters (tdm_simulate_cluster) ----------------------------------------------------- */

static void add_group(tdm_sim_cluster_config *c, const char *group)
{
    char err[256];
    int rc = tdm_sim_cluster_add(c, group, err, sizeof err);
    if (rc != 0)
        fail_msg("tdm_sim_cluster_add(%s): %s", group, err);
}

/* The seed workloads: pi (1e6 Leibniz terms per item: ~2 ms per item on a core, 8 bytes out)
 * on nodes of 2 cores. */
static tdm_sim_cluster_config pi_cluster(int nodes)
{
    tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
    char g[64];
    snprintf(g, sizeof g, "%d:cpu*2:tpi=2ms", nodes);
    add_group(&c, g);
    c.items = 100000;
    c.out_bytes_per_item = 8;
    c.net_bandwidth = 25e9;
    c.net_latency_s = 2e-6;
    return c;
}

/* One node is the single-node simulation: the grants overlap the chunks (2 in flight, rank 0
 * asks itself), nothing is gathered; what is left is the chunks' whole-item rounding. */
static void test_cluster_one_node_is_single_node(void **state)
{
    const char *nodes[] = {"1:cpu*2:tpi=2ms", "1:cpu*4:tpi=100ns:lat=1us;gpu:tpi=10ns:lat=20us",
                           "1:cpu*32:tpi=10ns"};
    const int64_t items[] = {100000, 1000000000, 1000000000};
    for (int k = 0; k < 3; k++) {
        tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
        add_group(&c, nodes[k]);
        c.items = items[k];
        c.out_bytes_per_item = 8;
        c.payload_bytes = 1e9; /* a broadcast to nobody */
        tdm_sim_cluster_result r;
        tdm_sim_node_result n[1];
        assert_int_equal(tdm_simulate_cluster(&c, &r, n, 1), 0);
        tdm_sim_config one = c.groups[0].node;
        one.items = c.items;
        tdm_sim_result s;
        assert_int_equal(tdm_simulate(&one, &s), 0);
        if (!(fabs(r.makespan_s / s.makespan_s - 1) < 0.005))
            fail_msg("%s: cluster of one %.6f s, single node %.6f s", nodes[k], r.makespan_s,
                     s.makespan_s);
        assert_true(r.broadcast_s == 0 && r.gather_s == 0 && r.gather_bytes == 0);
        assert_true(fabs(r.single_s - s.makespan_s) <= 1e-9 * s.makespan_s);
        assert_true(r.efficiency > 0.99 && r.efficiency <= 1.0);
        assert_int_equal(r.nodes, 1);
        assert_int_equal(r.steals, 0);
        assert_int_equal(n[0].items, c.items);
        assert_int_equal(n[0].chunks, r.grants);
        assert_true(r.grants < 64); /* guided chunks: a few dozen, not one per item */
    }
}

/* The pi workload on 64 nodes of a 25 GB/s, 2 us network stays above 0.9 of the ideal; the
 * compute and the gather add up to the makespan, every item is computed once. */
static void test_cluster_pi_scales_to_64_nodes(void **state)
{
    double last = 2;
    for (int nodes = 8; nodes <= 64; nodes *= 2) {
        tdm_sim_cluster_config c = pi_cluster(nodes);
        tdm_sim_cluster_result r;
        tdm_sim_node_result n[64];
        assert_int_equal(tdm_simulate_cluster(&c, &r, n, 64), 0);
        if (!(r.efficiency > 0.9))
            fail_msg("%d nodes: efficiency %.3f", nodes, r.efficiency);
        assert_true(r.efficiency <= last + 1e-9); /* no better with more nodes */
        last = r.efficiency;
        assert_true(fabs(r.makespan_s - (r.broadcast_s + r.compute_s + r.gather_s)) <
                    1e-9 * r.makespan_s);
        assert_true(fabs(r.ideal_speedup - nodes) < 1e-9 * nodes);
        assert_true(fabs(r.efficiency - r.speedup / r.ideal_speedup) < 1e-12);
        int64_t sum = 0;
        for (int k = 0; k < nodes; k++)
            sum += n[k].items;
        assert_int_equal(sum, c.items);
        assert_int_equal(r.groups[0].items, c.items);
        /* every other rank's 8-byte outputs reach rank 0 */
        assert_true(fabs(r.gather_bytes - 8.0 * (double)(c.items - n[0].items)) < 1e-6);
    }
}

/* Tiny chunks (1 us items, 1e6 of them, min_chunk 1), a 50 us network: every grant costs
 * rank 0 5 us, and with more nodes there are more grants for less work each. Efficiency falls
 * with the node count and rank 0's share of the time rises: the coordinator is the bottleneck.
 * The protocol's own floor (a chunk is at least 2 ms of the rank's work) gives most of it
 * back. */
static void test_cluster_coordinator_bottleneck(void **state)
{
    double eff[4], busy[4];
    const int counts[4] = {8, 16, 32, 64};
    for (int k = 0; k < 4; k++) {
        tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
        char g[64];
        snprintf(g, sizeof g, "%d:cpu:tpi=1us", counts[k]);
        add_group(&c, g);
        c.items = 1000000;
        c.net_latency_s = 50e-6;
        c.min_chunk = 1;
        tdm_sim_cluster_result r;
        assert_int_equal(tdm_simulate_cluster(&c, &r, NULL, 0), 0);
        eff[k] = r.efficiency;
        busy[k] = r.coord_busy_s / r.compute_s;
        assert_true(fabs(r.coord_busy_s - (double)r.requests * 5e-6) < 1e-9);
        if (k > 0 && !(eff[k] < eff[k - 1] && busy[k] > busy[k - 1]))
            fail_msg("%d nodes: efficiency %.3f (%.3f before), rank 0 busy %.3f (%.3f)", counts[k],
                     eff[k], eff[k - 1], busy[k], busy[k - 1]);
        if (k == 3) {
            assert_true(eff[0] > 0.95 && eff[3] < 0.85);
            c.min_chunk = 0; /* the default: 2 ms of work */
            tdm_sim_cluster_result big;
            assert_int_equal(tdm_simulate_cluster(&c, &big, NULL, 0), 0);
            assert_true(big.grants < r.grants / 2);
            assert_true(big.efficiency > eff[3] + 0.05);
        }
    }
}

/* Rank 1's chunks take longer, which the split does not know: it gets proportionally fewer
 * items (others steal the back of its range) and the run ends within 10% of the ideal split,
 * with one or two chunks in flight. (With chunks of half a share, as first drafted, a rank
 * had 3/4 of its share before its first chunk ended and a node twice as slow stayed the
 * straggler: 0.70 at 8 nodes. The protocol's sixteenth of a share until the rank's rate is
 * known, then a quarter, absorbs it.) */
static void test_cluster_slow_node_is_stolen_from(void **state)
{
    const struct {
        double slow;
        int in_flight;
    } cases[] = {{1.25, 0}, {2.0, 1}, {2.0, 0}, {4.0, 0}};
    for (int k = 0; k < 4; k++) {
        tdm_sim_cluster_config c = pi_cluster(8);
        c.slow_node = 1;
        c.slow_factor = cases[k].slow;
        c.max_in_flight = cases[k].in_flight;
        tdm_sim_cluster_result r;
        tdm_sim_node_result n[8];
        assert_int_equal(tdm_simulate_cluster(&c, &r, n, 8), 0);
        double fair = (double)c.items * (1.0 / cases[k].slow) / (7.0 + 1.0 / cases[k].slow);
        assert_true(fabs(n[1].rate * cases[k].slow - n[0].rate) < 1e-9 * n[0].rate);
        assert_true(n[1].stolen_items > 0 && r.steals > 0);
        if (!(fabs((double)n[1].items / fair - 1) < 0.10) || !(r.makespan_s <= 1.10 * r.ideal_s))
            fail_msg("slow %.2f: %lld items (fair %.0f), makespan %.3f s, ideal %.3f s",
                     cases[k].slow, (long long)n[1].items, fair, r.makespan_s, r.ideal_s);
    }
}

/* A steal of partitioned rows pays for their transfer: over a slow network fewer rows move,
 * and the run stays near what no stealing at all would give (the slow half's equal share,
 * 12.5 s), where splitting by rates alone moved 19 GB and took 47.5 s. */
static void test_cluster_steals_weigh_the_transfer(void **state)
{
    tdm_sim_cluster_result fast, slow;
    for (int k = 0; k < 2; k++) {
        tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
        add_group(&c, "4:cpu*2:tpi=1ms");
        add_group(&c, "4:cpu*2:tpi=2ms");
        c.items = 100000;
        c.partitioned = 1;
        c.in_bytes_per_item = 1e6;
        c.out_bytes_per_item = 8;
        c.gather = TDM_SIM_GATHER_NONE;
        c.net_bandwidth = k == 0 ? 12.5e9 : 125e6;
        c.net_latency_s = 5e-6;
        assert_int_equal(tdm_simulate_cluster(&c, k == 0 ? &fast : &slow, NULL, 0), 0);
    }
    assert_true(fast.efficiency > 0.95);
    assert_true(slow.steal_bytes < fast.steal_bytes / 2);
    if (!(slow.makespan_s < 1.5 * 12.5))
        fail_msg("125 MB/s: makespan %.3f s", slow.makespan_s);
}

/* Partitioned inputs move only with steals: none without one, some with (inputs to the thief,
 * outputs back home), never more than the stolen items' bytes both ways; replicated inputs
 * move nothing even when ranks steal. */
static void test_cluster_partitioned_moves_bytes_only_on_steals(void **state)
{
    tdm_sim_cluster_config c = pi_cluster(2);
    c.partitioned = 1;
    c.in_bytes_per_item = 1000;
    tdm_sim_cluster_result r;
    tdm_sim_node_result n[8];
    assert_int_equal(tdm_simulate_cluster(&c, &r, n, 8), 0);
    assert_int_equal(r.steals, 0);
    assert_true(r.steal_bytes == 0);
    /* partitioned outputs are gathered from their homes: rank 1's whole range */
    assert_true(fabs(r.gather_bytes - 8.0 * 50000) < 1e-6);

    c = pi_cluster(8);
    c.partitioned = 1;
    c.in_bytes_per_item = 1000;
    c.slow_node = 3;
    c.slow_factor = 1.5;
    assert_int_equal(tdm_simulate_cluster(&c, &r, n, 8), 0);
    assert_true(r.steals > 0);
    int64_t stolen = 0;
    for (int k = 0; k < 8; k++)
        stolen += n[k].stolen_items;
    assert_true(r.steal_bytes > 0 && r.steal_bytes <= (1000.0 + 8.0) * (double)stolen);

    c.partitioned = 0;
    assert_int_equal(tdm_simulate_cluster(&c, &r, n, 8), 0);
    assert_true(r.steals > 0);
    assert_true(r.steal_bytes == 0);
}

/* The network's costs: the payload's broadcast is ceil(log2 N) rounds, the gather one latency
 * plus its bytes per sending rank, GATHER_ALL adds the output's broadcast, NONE costs nothing. */
static void test_cluster_broadcast_and_gather(void **state)
{
    tdm_sim_cluster_config c = pi_cluster(8);
    c.payload_bytes = 200e6;
    c.out_bytes_per_item = 1000;
    tdm_sim_cluster_result root, all, none;
    tdm_sim_node_result n[8];
    assert_int_equal(tdm_simulate_cluster(&c, &root, n, 8), 0);
    assert_true(fabs(root.broadcast_s - 3 * (2e-6 + 200e6 / 25e9)) < 1e-12);
    double g = 0;
    for (int k = 1; k < 8; k++)
        g += 2e-6 + (double)n[k].items * 1000 / 25e9;
    assert_true(fabs(root.gather_s - g) < 1e-12);
    c.gather = TDM_SIM_GATHER_ALL;
    assert_int_equal(tdm_simulate_cluster(&c, &all, NULL, 0), 0);
    assert_true(fabs(all.gather_s - (g + 3 * (2e-6 + 1e5 * 1000 / 25e9))) < 1e-9);
    c.gather = TDM_SIM_GATHER_NONE;
    assert_int_equal(tdm_simulate_cluster(&c, &none, NULL, 0), 0);
    assert_true(none.gather_s == 0 && none.gather_bytes == 0);
    assert_true(none.compute_s == root.compute_s);
    assert_true(none.makespan_s < root.makespan_s && root.makespan_s < all.makespan_s);
}

/* Mixed nodes: a calibrated split gives each kind its share from the start, so the GPU nodes
 * compute more per node and the run is near the ideal; uncalibrated, stealing fixes the equal
 * split. 64 nodes and 1e9 items are simulated in well under a second (no timing asserted). */
static void test_cluster_heterogeneous(void **state)
{
    tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
    add_group(&c, "4:cpu*32:tpi=10ns");
    add_group(&c, "4:cpu*32:tpi=10ns;gpu:tpi=0.5ns:lat=20us:bw=25G:bytes=16");
    c.items = 10000000000LL;
    for (int cal = 0; cal < 2; cal++) {
        c.calibrated = cal;
        tdm_sim_cluster_result r;
        tdm_sim_node_result n[8];
        assert_int_equal(tdm_simulate_cluster(&c, &r, n, 8), 0);
        assert_int_equal(r.nodes, 8);
        assert_int_equal(r.n_groups, 2);
        assert_true(r.groups[1].rate > 1.2 * r.groups[0].rate);
        assert_true(r.groups[0].rate <= r.groups[0].lanes_rate * 1.000001);
        assert_true(n[4].group == 1 && n[3].group == 0);
        assert_true(n[4].items > n[3].items);
        assert_true(r.efficiency > (cal ? 0.99 : 0.97));
        assert_int_equal(r.groups[0].items + r.groups[1].items, c.items);
        char text[8192];
        int len = tdm_sim_cluster_format(&c, &r, n, 8, text, sizeof text);
        assert_true(len > 0 && (size_t)len < sizeof text);
        assert_non_null(strstr(text, "efficiency"));
        assert_non_null(strstr(text, "cpu*32+gpu*1"));
    }
    tdm_sim_cluster_config big = TDM_SIM_CLUSTER_CONFIG_INIT;
    add_group(&big, "64:cpu*32:tpi=10ns");
    big.items = 1000000000;
    tdm_sim_cluster_result r;
    assert_int_equal(tdm_simulate_cluster(&big, &r, NULL, 0), 0);
    assert_true(r.grants < 10000);
}

/* Same config, same result, noise and all; another seed, another result. */
static void test_cluster_deterministic(void **state)
{
    tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
    add_group(&c, "6:cpu*8:tpi=100ns:lat=1us:noise=0.3");
    add_group(&c, "2:cpu*8:tpi=100ns;gpu:tpi=7ns:lat=20us:noise=0.2");
    c.items = 500000000;
    c.node_noise = 0.3;
    c.partitioned = 1;
    c.in_bytes_per_item = 8;
    c.out_bytes_per_item = 8;
    c.seed = 42;
    tdm_sim_cluster_result a, b;
    tdm_sim_node_result na[8], nb[8];
    assert_int_equal(tdm_simulate_cluster(&c, &a, na, 8), 0);
    assert_int_equal(tdm_simulate_cluster(&c, &b, nb, 8), 0);
    assert_true(a.makespan_s == b.makespan_s && a.steal_bytes == b.steal_bytes);
    assert_int_equal(a.grants, b.grants);
    assert_int_equal(a.steals, b.steals);
    for (int k = 0; k < 8; k++) {
        assert_int_equal(na[k].items, nb[k].items);
        assert_true(na[k].busy_s == nb[k].busy_s && na[k].end_s == nb[k].end_s);
    }
    c.seed = 43;
    assert_int_equal(tdm_simulate_cluster(&c, &b, NULL, 0), 0);
    assert_true(a.makespan_s != b.makespan_s);
    assert_true(b.efficiency > 0.5);
}

static void test_cluster_errors(void **state)
{
    tdm_sim_cluster_config c = TDM_SIM_CLUSTER_CONFIG_INIT;
    tdm_sim_cluster_result r;
    tdm_sim_node_result n[4];
    char err[256];
    assert_int_equal(tdm_simulate_cluster(NULL, &r, NULL, 0), TDM_EINVAL);
    assert_int_equal(tdm_simulate_cluster(&c, &r, NULL, 0), TDM_EINVAL); /* no group */
    assert_non_null(strstr(tdm_errmsg(NULL), "groups"));
    /* the group parser */
    const char *bad[] = {
        "",                  /* no count */
        "cpu:tpi=1ns",       /* no count */
        "0:cpu:tpi=1ns",     /* count */
        "-2:cpu:tpi=1ns",    /* count */
        "5000:cpu:tpi=1ns",  /* too many nodes */
        "2cpu:tpi=1ns",      /* not COUNT: */
        "2:",                /* no backend */
        "2:;",               /* no backend */
        "2:cpu",             /* no tpi */
        "2:cpu:tpi=1ns;gpu", /* the second has no tpi */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (tdm_sim_cluster_add(&c, bad[i], err, sizeof err) != TDM_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(c.n_groups, 0);
    assert_int_equal(tdm_sim_cluster_add(NULL, "1:cpu:tpi=1", err, sizeof err), TDM_EINVAL);
    assert_int_equal(tdm_sim_cluster_add(&c, NULL, NULL, 0), TDM_EINVAL);
    c.version = 99;
    assert_int_equal(tdm_sim_cluster_add(&c, "1:cpu:tpi=1", err, sizeof err), TDM_EINVAL);
    c.version = TDM_SIM_CLUSTER_CONFIG_VERSION;
    add_group(&c, "4000:cpu:tpi=1us");
    assert_int_equal(tdm_sim_cluster_add(&c, "97:cpu:tpi=1us", err, sizeof err), TDM_EINVAL);
    assert_non_null(strstr(err, "at most"));
    for (int g = 1; g < TDM_SIM_MAX_GROUPS; g++)
        add_group(&c, "1:cpu:tpi=1us");
    assert_int_equal(tdm_sim_cluster_add(&c, "1:cpu:tpi=1us", err, sizeof err), TDM_EINVAL);
    assert_int_equal(c.n_groups, TDM_SIM_MAX_GROUPS);

    c = (tdm_sim_cluster_config)TDM_SIM_CLUSTER_CONFIG_INIT;
    add_group(&c, "4:cpu*2:tpi=1us");
    c.items = 1000;
    assert_int_equal(tdm_simulate_cluster(&c, NULL, NULL, 0), TDM_EINVAL);
    assert_int_equal(tdm_simulate_cluster(&c, &r, n, 3), TDM_EINVAL); /* room for 3 of 4 */
    assert_int_equal(tdm_simulate_cluster(&c, &r, n, 4), 0);
    /* every figure out of range, one at a time */
    for (int k = 0;; k++) {
        tdm_sim_cluster_config b = c;
        /* clang-format off */
        switch (k) {
        case 0: b.size = 8; break;
        case 1: b.version = 0; break;
        case 2: b.items = 0; break;
        case 3: b.net_bandwidth = 0; break;
        case 4: b.net_bandwidth = -1; break;
        case 5: b.net_bandwidth = INFINITY; break;
        case 6: b.net_bandwidth = NAN; break;
        case 7: b.net_latency_s = -1e-6; break;
        case 8: b.net_latency_s = NAN; break;
        case 9: b.coord_service_s = -1; break;
        case 10: b.payload_bytes = -1; break;
        case 11: b.in_bytes_per_item = NAN; break;
        case 12: b.out_bytes_per_item = -8; break;
        case 13: b.gather = (tdm_sim_gather)7; break;
        case 14: b.min_chunk = -1; break;
        case 15: b.node_noise = 1; break;
        case 16: b.node_noise = -0.1; break;
        case 17: b.slow_node = 4; break; /* ranks 0..3 */
        case 18: b.slow_node = -2; break;
        case 19: b.slow_node = 0; b.slow_factor = 0; break;
        case 20: b.max_in_flight = TDM_SIM_MAX_IN_FLIGHT + 1; break;
        case 21: b.max_in_flight = -1; break;
        case 22: b.chunk_divisor = 0.5; break;
        case 23: b.groups[0].count = 0; break;
        case 24: b.n_groups = TDM_SIM_MAX_GROUPS + 1; break;
        case 25: b.groups[0].node.n_backends = 0; break; /* the node's own simulation refuses */
        case 26: b.groups[0].node.size = 0; break;
        case 27: b.groups[0].count = TDM_SIM_MAX_NODES + 1; break;
        default: b.size = 0; break;
        }
        /* clang-format on */
        if (k > 27)
            break;
        if (tdm_simulate_cluster(&b, &r, NULL, 0) != TDM_EINVAL)
            fail_msg("case %d was accepted", k);
        assert_true(strlen(tdm_errmsg(NULL)) > 0);
        if (k == 25)
            assert_non_null(strstr(tdm_errmsg(NULL), "group 0"));
    }
    /* the knobs at their edges are fine */
    c.slow_node = 3;
    c.slow_factor = 0.5; /* a faster node */
    c.max_in_flight = TDM_SIM_MAX_IN_FLIGHT;
    c.chunk_divisor = 1;
    c.min_chunk = 0;
    assert_int_equal(tdm_simulate_cluster(&c, &r, n, 4), 0);
    assert_int_equal(n[0].items + n[1].items + n[2].items + n[3].items, 1000);
    /* the text: its length, and its errors */
    char buf[4096];
    int len = tdm_sim_cluster_format(&c, &r, n, 4, buf, sizeof buf);
    assert_true(len > 0 && (size_t)len < sizeof buf);
    assert_int_equal(tdm_sim_cluster_format(&c, &r, n, 4, NULL, 0), len);
    assert_int_equal(tdm_sim_cluster_format(&c, &r, n, 4, buf, 10), len); /* truncated */
    assert_int_equal((int)strlen(buf), 9);
    assert_true(tdm_sim_cluster_format(&c, &r, NULL, 0, NULL, 0) < len); /* no node lines */
    assert_int_equal(tdm_sim_cluster_format(NULL, &r, NULL, 0, buf, sizeof buf), TDM_EINVAL);
    assert_int_equal(tdm_sim_cluster_format(&c, NULL, NULL, 0, buf, sizeof buf), TDM_EINVAL);
    assert_int_equal(tdm_sim_cluster_format(&c, &r, NULL, 0, NULL, 8), TDM_EINVAL);
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
        cmocka_unit_test(test_estimator_one_slowed_larger_group),
        cmocka_unit_test(test_estimator_drift_among_close_sizes),
        cmocka_unit_test(test_estimator_refits_a_full_window_every_4th_batch_on_its_line),
        cmocka_unit_test(test_estimator_seed_counts_against_the_lanes_own_batches),
        cmocka_unit_test(test_estimator_noise_among_close_sizes_is_no_fixed_cost),
        cmocka_unit_test(test_estimator_no_fixed_cost_below_zero),
        cmocka_unit_test(test_median_matches_the_sorted_middle),
        cmocka_unit_test(test_weighted_median_matches_the_sorted_one),
        cmocka_unit_test(test_exploration_budget_weighs_the_lanes_speed),
        cmocka_unit_test(test_exploration_budget_of_a_close_device),
        cmocka_unit_test(test_side_pick_keeps_the_side_that_runs),
        cmocka_unit_test(test_exploration_reach_of_a_rung_below_fill),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_simulate_errors),
        cmocka_unit_test(test_cluster_one_node_is_single_node),
        cmocka_unit_test(test_cluster_pi_scales_to_64_nodes),
        cmocka_unit_test(test_cluster_coordinator_bottleneck),
        cmocka_unit_test(test_cluster_slow_node_is_stolen_from),
        cmocka_unit_test(test_cluster_partitioned_moves_bytes_only_on_steals),
        cmocka_unit_test(test_cluster_steals_weigh_the_transfer),
        cmocka_unit_test(test_cluster_broadcast_and_gather),
        cmocka_unit_test(test_cluster_heterogeneous),
        cmocka_unit_test(test_cluster_deterministic),
        cmocka_unit_test(test_cluster_errors),
    };
    return TDM_TEST_MAIN("sim", tests);
}
