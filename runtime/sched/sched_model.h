/* SPDX-License-Identifier: MIT */
/* tandem — the per-batch scheduler's pure parts: the robust per-lane estimator and the
 * decision. Shared by the real runtime (runtime/sched/job.c, runtime/sched/job_device.c) and the simulator
 * (backends/sim/), so what `tandem simulate` predicts is what a run decides. Not API.
 *
 * Model. A lane is one thing that runs one batch at a time from the scheduler's view: a CPU
 * thread, a worker process, a device (whose queues pipeline its batches). A batch of n items
 * on lane j is expected to take lat_j + n * tpi_j, where tpi_j (ns per item, transfers
 * included) is learned from measured batches and lat_j is the lane's fixed cost per batch.
 *
 * Decision (pull): when lane w is free it asks for work. With R items unclaimed, every lane j
 * becomes available at a_j = max(now, free_j) + lat_j; the earliest common finish time T for
 * the R items solves sum_j max(0, T - a_j) / tpi_j = R (water filling: the sum-of-throughputs
 * bound, with each lane's backlog). Lane w's share is s_w = (T - a_w) / tpi_w items. It takes
 * min(s_w / 2, its target batch) — half, so that later decisions correct the model's errors
 * and the last batches are small — and declines when its share is below one item and another
 * lane would finish one item sooner: a slow lane never becomes the straggler. */
#ifndef TANDEM_SCHED_MODEL_H
#define TANDEM_SCHED_MODEL_H

#include <stdbool.h>
#include <stdint.h>

/* A robust running estimate of a lane's batch time t = lat + n * tpi, fitted over its last
 * TDM__EST_WIN batches by Theil-Sen (the median of the slopes between pairs of batches of
 * clearly different sizes, weighted by how far apart the sizes are, then the median
 * intercept): a few slow batches in the window do
 * not move it (StarPU's mean-based history model flips on one outlier), and a device whose
 * launches cost milliseconds is not mistaken for one that is slow per item. With batch sizes all
 * within 4x of each other, tpi is the median of (t - lat) / n with the last fitted (or prior) lat
 * (there the batches' noise can decide how a line splits their time between fixed cost and
 * items), unless the line's fixed cost is at most half a batch and stands out of their scatter;
 * so too when the line makes no sense: a fixed cost far below zero. */
#define TDM__EST_WIN 12
typedef struct tdm__est {
    double n[TDM__EST_WIN], t[TDM__EST_WIN];
    int count; /* samples in the window */
    int next;  /* ring position */
    double lat0; /* prior fixed cost per batch, ns */
    double tpi;  /* fitted ns per item; 0 = no sample yet */
    double lat;  /* fitted fixed cost per batch, ns */
    /* A stored model not yet borne out: the seed's figures (tdm__est_seed), the measured
     * batches since, and how many of those in a row were far off it. */
    bool seeded;
    double seed_tpi;
    int real, off;
    int unfit; /* batches added since the last fit (tdm__est_add) */
} tdm__est;

/* The weighted median of v[0..n-1] with weights w[0..n-1] (>= 0): the smallest v[i] such that
 * the weights of the values up to it come to half the total or more; 0 for n <= 0. v and w are
 * reordered together. The estimator's slopes, weighted by how far apart their sizes are. */
double tdm__weighted_median(double *v, double *w, int n);
/* Starts an empty estimate with a prior fixed cost per batch. */
void tdm__est_init(tdm__est *e, double lat0);
/* Fits the batches tdm__est_add left unfitted, if any (e->unfit > 0): at a map's end, before
 * its figures are stored. */
void tdm__est_flush(tdm__est *e);
/* Adds a batch of n items (> 0) that took dur_ns (> 0) and refits, except that a full window
 * with no stored model to bear out skips the fit for a batch within 20% of the line's time for
 * it, up to 3 in a row (TDM__EST_REFIT, TDM__EST_ON_LINE in sched_model.c): e->tpi and e->lat
 * may then be up to 3 batches old (tdm__est_flush fits them in). While a stored model is not
 * yet borne out (e->seeded), each batch is checked against it: one within 8x of its time per
 * item bears it out; one 8x or more faster, or two in a row 8x or more slower with 16 items or
 * more each (a batch of a few items is slowed by a late wake-up or cold caches; nothing makes
 * one faster), show it stale, and the estimate starts again from the measured batches alone:
 * a pi_leibniz figure stored for items of a few terms (4.56 ns per item) otherwise held against
 * 1 ms items for a whole map. Returns true when it dropped the stored figures. */
bool tdm__est_add(tdm__est *e, double n, double dur_ns);
/* Forgets the batches of fewer than n_min items and refits from the rest; with none left, the
 * estimate is empty again (its prior fixed cost kept). A stored model not yet borne out
 * (e->seeded) is left as it is. Returns how many batches it forgot. */
int tdm__est_drop_smaller(tdm__est *e, double n_min);
/* Items a batch slower than the stored model needs to count against it (tdm__est_add). */
#define TDM__STALE_MIN_ITEMS 16
/* Starts from a stored model (tpi, lat) counting as `weight` batches of n_hint items each (the
 * size of the batches the lane is about to add; <= 0: a batch that lasts 1 ms), so that as many
 * new batches of about that size are needed to move it (unless they show it stale, see
 * tdm__est_add). Batches of the lane's own size: against seeds of other sizes, every slope from
 * a new batch to a seed outweighed the seeds' own (weighted by how far apart the sizes are), and
 * PoCL's first group of 54 pi items (seeds at 1-9 items) replaced a stored figure settled over
 * 81 batches. A new batch of a size 1.5x or more off draws a line through itself and the seeds,
 * as between any two sizes. */
void tdm__est_seed(tdm__est *e, double tpi, double lat, int weight, double n_hint);

/* Sides that take turns on shared cores (the CPU threads, the worker processes, a host-CPU
 * device): which of n sides runs, from each side's speed rate[g] (items per ns) where any[g].
 * In the order given, side g displaces the one chosen before it when margin[g] times faster
 * (the first keeps a tie). A side that holds its place (`running`, -1: none; the runtime
 * passes a host-CPU device that runs) is left out of that, and then displaced only by the
 * others' choice if that is TDM__SIDE_HOLD times faster than it: with the margin on the order
 * alone, a cold pi map with PoCL about as fast as the threads (2,000 items, 0.47 s) went from
 * one side to the other 6 times after both had explored, as the side that ran updated its
 * figure and the other's stood still, and each turn costs the cores' hand-over. Returns the
 * side, or -1 when none is there. The runtime's margins: the worker processes displace the
 * threads when TDM__SIDE_MARGIN_PROCS faster, a host-CPU device the side before it when
 * TDM__SIDE_MARGIN_DEVICE faster (job_sched.c says why). */
#define TDM__SIDE_HOLD 1.05
#define TDM__SIDE_MARGIN_PROCS 1.05
#define TDM__SIDE_MARGIN_DEVICE 1.02
int tdm__side_pick(const double *rate, const bool *any, const double *margin, int n, int running);

/* One lane as the decision sees it. */
typedef struct tdm__lane_view {
    double tpi;        /* ns per item; <= 0: not calibrated yet */
    double free_at;    /* ns: when its claimed work is expected to end */
    double lat;        /* ns of fixed cost per batch */
    double target_ns;  /* preferred batch duration */
    int64_t cap_left;  /* items it may still take (share cap); INT64_MAX if none */
    int64_t explore;   /* > 0: the lane is still exploring; its next batch has this many items */
    bool eligible;     /* may run this job (and is alive) */
    bool beside;       /* a host-CPU device exploring beside the CPU threads (job_sched.c) */
} tdm__lane_view;

typedef struct tdm__decision {
    int64_t items;    /* > 0: take this many; 0: decline for now */
    bool explore;     /* an exploration batch of an uncalibrated lane */
    double t_end;     /* T: estimated finish of the whole remaining work */
    double share;     /* s_w, items */
    double est_ns;    /* estimated duration of the batch taken (lat + items * tpi) */
    int best_other;   /* lane that would finish one item soonest besides w, -1 if none */
    double finish_w;  /* when one item would end on w */
    double finish_other; /* ... and on best_other */
} tdm__decision;

/* Decides for lane w at time `now` with `remaining` items unclaimed (> 0). `n_lanes` views.
 * O(n_lanes). */
void tdm__sched_decide(const tdm__lane_view *lanes, int n_lanes, int w, double now,
                       int64_t remaining, tdm__decision *out);

/* Exploration: an uncalibrated lane takes 1 item, then 4x more each batch, until a batch lasts
 * at least its target or 16 latencies (so the sample is not just latency) and has at least
 * `fill` items (a device with many compute units runs a small batch on a few of them) and
 * at least 64 items, unless it and the rung before it each lasted a whole target (a few items
 * that last long were more likely slowed, by cold caches or a late wake-up, than long; a
 * kernel whose items are that slow shows it twice: after the first such rung the same rung
 * runs again): a lane 10000x slower than the rest costs the run about two targets' time, never
 * a straggling slice. A batch cut below the ladder's size (the run's end was near) ends the
 * exploration too. *long_rungs (the lane's, 0 at its start) counts its rungs of fewer than 64
 * items in a row that lasted a target; it is updated. long_rungs NULL: no count is kept, and
 * one such rung ends the ladder. Returns the next `explore` value after a batch of n items
 * that took dur_ns: 0 when the lane is calibrated. */
int64_t tdm__explore_next(int64_t explore, int64_t n, double dur_ns, double target_ns, double lat,
                          int64_t fill, int *long_rungs);
/* How long a batch must last for the ladder to end on it: 16 fixed costs, at most a target. */
double tdm__explore_enough_ns(double lat, double target_ns);

/* The most a lane exploring alone on the shared cores may spend on it: `share` of what the CPU
 * threads (cpu_rate items per ns) need for the map's `items`, divided by the share of their
 * speed it lacks (the lane computes items meanwhile: exploring costs only what the threads
 * would have done beyond them). lane_tpi is its estimate so far (0: none); a lane at `cap` of
 * the threads' speed or more (0.75: four times the share; 0.9: ten times) is credited with
 * `cap`, no more (a cap outside (0, 1): none credited, the share alone). INFINITY when cpu_rate
 * is not known. */
double tdm__explore_budget(double share, double items, double cpu_rate, double lane_tpi,
                           double cap);

/* The time per item a lane's exploration budget is reckoned from (tdm__explore_budget_of)
 * after a rung of n items with the estimate tpi: tpi, except on a host-CPU device of two
 * compute units or more before a rung that fills it (`fill`: 64 items per compute unit, 128
 * or more), which may have run at half the speed of the cores it had: then tpi / 2 (the
 * budget only: a next rung that would pass it is still reckoned at the estimate). PoCL's pi
 * rung of 16 items (2 work-groups of 8) ran on one core in 12 of 30 cold maps, 5.1e5 ns per
 * item against 2.5e5 on both (the two threads: 2.45e5 together); taken as PoCL's speed, it
 * ended the ladder under the far rule, and the threads ran those maps at 0.75 of PoCL's
 * speed. */
double tdm__explore_reach_tpi(bool host_cpu, int64_t fill, int64_t n, double tpi);

/* The exploration budget of a lane exploring alone on the shared cores (tdm__explore_budget):
 * worker processes and host-CPU devices spend TDM__EXPLORE_SHARE, credited with up to
 * TDM__EXPLORE_CAP of the threads' speed. A near device gets further: a host-CPU device
 * (`device`) whose estimate reads at TDM__EXPLORE_CAP of the threads' speed or more (a near
 * device; not to be confused with a stored close call, tdm__cm_close_unsettled) spends
 * TDM__EXPLORE_SHARE_CLOSE, credited with up to TDM__EXPLORE_CAP_CLOSE. Its small rungs run on
 * part of its cores or in few work-groups and read slower than it runs: PoCL, pi (2,000 items
 * of about 0.2 ms on two cores), single launches: 64 items 2.3-3.2e5 ns per item, 256 items
 * 1.9-2.3e5, its queues full in a map 1.9-2.2e5, the two threads 2.3e5 together; with the
 * processes' rule the ladder stopped at 64 items in 7 cold maps of 10 (the 256 would have
 * passed 37 ms) and the threads ran those maps, 10-15% slower than PoCL alone. With the close
 * rule the 256-item rung runs when the device reads at about 85% of the threads' speed or more.
 * A device that reads that close costs the map at most 3% if it is as slow as it reads; one
 * farther off keeps the processes' rule (exp_sinh on PoCL, 60 times slower than the threads,
 * and the hopeless rule below). Returns the budget in ns (INFINITY when cpu_rate is not known:
 * 0 or not finite) and its share in *share (may be NULL). */
#define TDM__EXPLORE_SHARE 0.02
#define TDM__EXPLORE_CAP 0.75
#define TDM__EXPLORE_SHARE_CLOSE 0.03
#define TDM__EXPLORE_CAP_CLOSE 0.9
double tdm__explore_budget_of(bool device, double items, double cpu_rate, double lane_tpi,
                              double *share);

/* Whether a lane whose exploration batches have taken explored_ns (its last: n items in
 * dur_ns) stops exploring instead of running its next batch of `next` items, with budget_ns
 * the most its exploration may take: the next batch is reckoned at the last one's time per
 * item, latency included (more than it will take), and is not started when it would bring the
 * total to the budget. next 0 (calibrated): false. */
bool tdm__explore_stops(double explored_ns, int64_t n, double dur_ns, int64_t next,
                        double budget_ns);

/* Whether a host-CPU device exploring alone on the shared cores (the CPU threads, cpu_rate
 * items per ns together, waiting) stops at once: its last batch had at least 64 items, its
 * fitted time per item (lane_tpi) is TDM__EXPLORE_HOPELESS times the threads' or more, and its
 * exploration budget (budget_ns, tdm__explore_budget) is less than one batch long enough to
 * measure time per item (enough_ns: 16 fixed costs or a target, as tdm__explore_next asks).
 * Such a budget ends the ladder on latency-heavy batches anyway (their estimate errs towards
 * the CPU): the rest of it could change nothing, and the threads wait while it runs (exp_sinh
 * on PoCL in a 20 ms map: 80 ns per item after 64 items, the threads 1.35 together, a 0.4 ms
 * budget, the 256 and 1024 rungs 0.3 ms more). With a larger budget the ladder goes on: a
 * cheap kernel's first batches are all launch latency, and one that a device runs faster than
 * the threads could read as many times slower until a batch lasts long enough. */
#define TDM__EXPLORE_HOPELESS 8.0
bool tdm__explore_hopeless(int64_t n, double lane_tpi, double cpu_rate, double budget_ns,
                           double enough_ns);

/* A host-CPU device's first exploration rungs run beside the CPU threads, not alone: a device
 * many times slower than the threads (exp_sinh on PoCL: 300-700 ns per item against the two
 * threads' 2.5 together) is judged there and never makes them stand down, which cost a cold
 * 40 ms map about 1 ms of the device alone on both cores and a few more core-ms of wake-ups
 * (bench_sched's cold exp_sinh row: 0.945-0.954). Beside the threads a rung reads slow by up
 * to the share of the cores it gets (TDM__BESIDE_SHARE: two busy threads and PoCL's two on two
 * cores, half), and a rung short of the batch that fills the device (fill items, on fill / 64
 * compute units when fill >= 128) may have run on one of them; and its time holds a fixed
 * cost. So its time per item is bounded below by its time over the shortest rung before it
 * (min_ns: no rung's fixed cost is longer), per item, over those factors; it is read only
 * when that excess is at least TDM__BESIDE_CONCLUSIVE times the shortest rung and at least
 * TDM__BESIDE_CLEAN_NS (a rung of a few items varies by its fixed cost's jitter, and a device's
 * threads woken on busy cores can wait that long: per item, for a cheap kernel, jitter alone
 * could read as hopeless; exp_sinh on PoCL beside the threads: single items in 17-95 us, once
 * 3.3 ms). Returns TDM__BESIDE_UNSURE (too short to tell; any argument not positive),
 * TDM__BESIDE_HOPELESS (the bound is TDM__EXPLORE_HOPELESS times the threads' time per item,
 * cpu_rate items per ns together, or more: judged on it; a rung that waited milliseconds
 * for a core past the floor reads so for a cheap kernel whatever the device's speed, and the
 * figure stored then is measured again after a few maps: tdm__cm_measure_again) or
 * TDM__BESIDE_NEAR (the device may be near, or cpu_rate is not known: it explores alone).
 * UNSURE also when n, dur_ns or min_ns is not positive and finite. Pure. */
#define TDM__BESIDE_SHARE 2.0
#define TDM__BESIDE_CONCLUSIVE 2.0
#ifndef TDM__BESIDE_CLEAN_NS
#define TDM__BESIDE_CLEAN_NS 200e3
#endif
enum { TDM__BESIDE_UNSURE, TDM__BESIDE_HOPELESS, TDM__BESIDE_NEAR };
int tdm__beside_judge(int64_t n, double dur_ns, double min_ns, int64_t fill, double cpu_rate);

/* Median of v[0..n-1] (reorders v); 0 when n is 0. */
double tdm__median(double *v, int n);

/* T solving sum_j max(0, T - a_j) * rate_j = items (rate_j in items per ns, a_j in ns) over the
 * n entries with rate_j > 0. Returns +inf when no rate is positive. */
double tdm__waterfill(const double *a, const double *rate, int n, double items);

#endif
