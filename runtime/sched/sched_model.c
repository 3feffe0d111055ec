/* SPDX-License-Identifier: MIT */
/* The scheduler's estimator and decision (see sched_model.h). No state, no locks, no clock. */
#include "sched/sched_model.h"

#include <math.h>
#include <string.h>

/* The k-th smallest of v[lo..hi] (Hoare's selection; v is reordered so that v[lo..k-1] <= v[k]
 * <= v[k+1..hi]). */
static double select_kth(double *v, int lo, int hi, int k)
{
    while (lo < hi) {
        double p = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] < p)
                i++;
            while (v[j] > p)
                j--;
            if (i <= j) {
                double x = v[i];
                v[i++] = v[j];
                v[j--] = x;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break; /* v[j+1..i-1] all equal p, k among them */
    }
    return v[k];
}

/* Median of v[0..n-1] (v is reordered). The estimator takes several per batch of every lane
 * (up to 66 slopes): a selection, not a sort (an insertion sort of the 66 was 0.4% of an AUTO
 * map's cycles on 100 us batches). */
static double median_of(double *v, int n)
{
    double hi = select_kth(v, 0, n - 1, n / 2);
    if (n % 2)
        return hi;
    double lo = v[0]; /* the largest of v[0..n/2-1]: the lower middle value */
    for (int i = 1; i < n / 2; i++)
        if (v[i] > lo)
            lo = v[i];
    return 0.5 * (lo + hi);
}

static void swap2(double *v, double *w, int i, int j)
{
    double x = v[i], y = w[i];
    v[i] = v[j];
    w[i] = w[j];
    v[j] = x;
    w[j] = y;
}

/* (sched_model.h) A three-way selection, as select_kth. */
double tdm__weighted_median(double *v, double *w, int n)
{
    double half = 0, below = 0; /* below: the weight of v[0..lo-1] (all < v[lo..hi]) */
    for (int i = 0; i < n; i++)
        half += w[i];
    half *= 0.5;
    if (n <= 0)
        return 0.0;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        double p = v[lo + (hi - lo) / 2];
        int lt = lo, i = lo, gt = hi;
        while (i <= gt) { /* v[lo..lt-1] < p, v[lt..i-1] == p, v[gt+1..hi] > p */
            if (v[i] < p)
                swap2(v, w, i++, lt++);
            else if (v[i] > p)
                swap2(v, w, i, gt--);
            else
                i++;
        }
        double wl = 0, we = 0;
        for (int k = lo; k < lt; k++)
            wl += w[k];
        for (int k = lt; k <= gt; k++)
            we += w[k];
        if (below + wl >= half) /* (the largest value below p reaches half) */
            hi = lt - 1;
        else if (below + wl + we >= half)
            return p;
        else if (gt >= hi)
            return p; /* (nothing above p: only a NaN or negative weight gets here) */
        else {
            below += wl + we;
            lo = gt + 1;
        }
    }
    return v[lo];
}

/* Whether the line's fixed cost `lat` (> 0) stands out of the batches' scatter (sizes nmin..nmax):
 * at least 4 times what that scatter alone could make of it, the median distance of the
 * batches to the line times their median size over the sizes' spread (an intercept's error
 * grows with how far it is reached out from the sizes). */
static bool fixed_cost_shows(const tdm__est *e, double tpi, double lat, double nmin, double nmax)
{
    double d[TDM__EST_WIN] = {0}, n[TDM__EST_WIN] = {0};
    for (int i = 0; i < e->count; i++) {
        d[i] = fabs(e->t[i] - lat - tpi * e->n[i]);
        n[i] = e->n[i];
    }
    double scatter = median_of(d, e->count) * median_of(n, e->count) / (nmax - nmin);
    return lat >= 4 * scatter;
}

static void fit(tdm__est *e)
{
    /* (zeroed: gcc -O3 cannot tell that the medians below read only what was written) */
    double sl[TDM__EST_WIN * (TDM__EST_WIN - 1) / 2] = {0}, r[TDM__EST_WIN] = {0};
    double wt[TDM__EST_WIN * (TDM__EST_WIN - 1) / 2] = {0};
    int m = 0, c = e->count;
    for (int i = 0; i < c; i++) {
        for (int j = i + 1; j < c; j++) {
            double lo = e->n[i] < e->n[j] ? e->n[i] : e->n[j];
            double hi = e->n[i] < e->n[j] ? e->n[j] : e->n[i];
            if (hi >= 1.5 * lo) { /* sizes clearly apart: the slope means something */
                sl[m] = (e->t[j] - e->t[i]) / (e->n[j] - e->n[i]);
                wt[m++] = hi - lo;
            }
        }
    }
    if (m >= 3) {
        /* The median of the slopes weighted by how far apart their sizes are (a slope's
         * error is the batches' noise over that distance): among batches of 2 and 3 items
         * and one of 60, the 28 pairs 1 item apart outvoted the 11 of 57 and 58. */
        double b = tdm__weighted_median(sl, wt, m);
        if (b > 0 && isfinite(b)) {
            for (int i = 0; i < c; i++)
                r[i] = e->t[i] - b * e->n[i];
            double a = median_of(r, c);
            /* A fixed cost far below zero is no fit: among batches of one size, one slowed
             * batch a little larger makes every pair clearly apart, and so every slope, hang
             * on it (a PoCL group of 132 items in 32 ms among groups of 75-99 in 9-13 ms:
             * 4.4e5 ns per item against 1.2e5, and the map went to the CPU threads, at half
             * the speed). The line then misses most batches; the time per item of each,
             * below, does not. */
            /* From sizes less than 4x apart, the batches' noise can decide how a line splits
             * their time between fixed cost and items. Such a line is taken only when its
             * fixed cost is at most half the median batch's time and stands out of the
             * batches' scatter (fixed_cost_shows: a hand-off slower than thought, seen by one
             * batch of twice the size among others alike, does); else the fixed cost learned
             * so far (from an exploration's rungs, or stored) stands, and each batch's time
             * per item with it, below. A drift of the cores' speed that shrank the batches
             * read as a large fixed cost (a CPU thread's pi batches of 3 items at 105 us, then
             * of 2 at 100 us as the cores slowed: 6.25e3 ns per item and a fixed cost of 90 us
             * against the 2.8e4 measured before; later, 40 ns per item, and the thread took
             * half the map's 672 items left in one batch), and so did PoCL's groups of 54-122
             * pi items, each of 4 ms batches: fixed costs of 1.9-7.4 ms (a launch costs 0.05)
             * and 1.1-1.6e5 ns per item against the 2.2e5 they ran at, read, and stored, as a
             * device 1.5x faster than it was (fixed costs 1.3-3.2 times that scatter). A
             * fixed cost below zero never shows: a CPU thread's window of 11 pi batches of
             * one item (477-515 us, one of 709) and one of two (1.09 ms) drew a line of
             * 5.84e5 ns per item and a fixed cost of -76 us (taken as 0): 1.15x what its
             * one-item batches took. Compared at that figure, the threads handed the cores
             * to a PoCL 4% slower than they were. */
            double nmin = e->n[0], nmax = e->n[0];
            for (int i = 0; i < c; i++) {
                sl[i] = e->t[i];
                nmin = e->n[i] < nmin ? e->n[i] : nmin;
                nmax = e->n[i] > nmax ? e->n[i] : nmax;
            }
            double mid = median_of(sl, c);
            if (a >= -0.25 * mid &&
                (nmax >= 4 * nmin ||
                 (a > 0 && a <= 0.5 * mid && fixed_cost_shows(e, b, a, nmin, nmax)))) {
                e->tpi = b;
                e->lat = a > 0 ? a : 0;
                return;
            }
        }
    }
    /* Sizes alike (or a fit that makes no sense): time per item with the known fixed cost. */
    double a = e->tpi > 0 ? e->lat : e->lat0;
    int k = 0;
    for (int i = 0; i < c; i++)
        if (e->t[i] > a)
            r[k++] = (e->t[i] - a) / e->n[i];
    if (k * 2 >= c && k > 0) {
        e->tpi = median_of(r, k);
        e->lat = a;
        return;
    }
    for (int i = 0; i < c; i++) /* every batch shorter than the fixed cost: all of it counts */
        r[i] = e->t[i] / e->n[i];
    e->tpi = median_of(r, c);
    e->lat = 0;
}

double tdm__median(double *v, int n)
{
    return n > 0 ? median_of(v, n) : 0.0;
}

void tdm__est_init(tdm__est *e, double lat0)
{
    memset(e, 0, sizeof *e);
    e->lat0 = lat0 > 0 && isfinite(lat0) ? lat0 : 0;
}

static void push(tdm__est *e, double n, double dur)
{
    e->n[e->next] = n;
    e->t[e->next] = dur;
    e->next = (e->next + 1) % TDM__EST_WIN;
    if (e->count < TDM__EST_WIN)
        e->count++;
}

#define TDM__STALE_FACTOR 8.0

/* Checks a measured batch against a stored model not yet borne out (see tdm__est_add); true
 * when the model is to be dropped. */
static bool seed_stale(tdm__est *e, double n, double dur)
{
    double own = (dur > 2 * e->lat ? dur - e->lat : dur / 2) / n;
    double ratio = own / e->seed_tpi;
    if (ratio <= 1 / TDM__STALE_FACTOR)
        return true; /* nothing makes a batch faster: one is enough */
    if (ratio >= TDM__STALE_FACTOR && n >= TDM__STALE_MIN_ITEMS)
        return ++e->off >= 2; /* a slowed batch happens: two in a row */
    if (ratio < TDM__STALE_FACTOR)
        e->seeded = false; /* borne out */
    else
        e->off = 0; /* slower, but too few items to tell */
    return false;
}

/* A full window's fit is not made again for a batch on its line, within TDM__EST_ON_LINE of
 * the time the line gives it, up to TDM__EST_REFIT - 1 batches in a row: the fit (66 pairs'
 * slopes and their weighted median, the medians of the intercepts and the times) was 1.5% of
 * the cycles of a warm AUTO exp_sinh map run on two threads in batches of 100 us, most of the
 * 2.5-3% it ran slower than the same runtime's CPU-only map. A batch off the line (a change,
 * or an outlier the medians may outvote) is fitted at once. In such a map 26% of the threads'
 * batches were more than 10% off the line, 13% more than 20%: fits for 47% of the batches at
 * 10%, 33% at 20%. */
#ifndef TDM__EST_REFIT /* (1: a fit for every batch, as before) */
#define TDM__EST_REFIT 4
#endif
#define TDM__EST_ON_LINE 0.2

bool tdm__est_add(tdm__est *e, double n, double dur)
{
    if (!(n > 0) || !(dur > 0) || !isfinite(dur) || !isfinite(n))
        return false;
    bool stale = e->seeded && seed_stale(e, n, dur);
    push(e, n, dur);
    if (e->seeded)
        e->real++;
    if (stale) { /* start again from the batches measured since the seed */
        int real = e->real < TDM__EST_WIN ? e->real : TDM__EST_WIN;
        double rn[TDM__EST_WIN], rt[TDM__EST_WIN];
        for (int i = 0; i < real; i++) { /* the last `real` pushed, oldest first */
            int at = ((e->next - real + i) % TDM__EST_WIN + TDM__EST_WIN) % TDM__EST_WIN;
            rn[i] = e->n[at];
            rt[i] = e->t[at];
        }
        tdm__est_init(e, e->lat0);
        for (int i = 0; i < real; i++)
            push(e, rn[i], rt[i]);
    }
    if (!stale && !e->seeded && e->count == TDM__EST_WIN && e->tpi > 0 &&
        ++e->unfit < TDM__EST_REFIT) {
        double line = e->lat + e->tpi * n;
        if (fabs(dur - line) <= TDM__EST_ON_LINE * line)
            return false;
    }
    e->unfit = 0;
    fit(e);
    return stale;
}

void tdm__est_flush(tdm__est *e)
{
    if (e->unfit > 0 && e->count > 0) {
        e->unfit = 0;
        fit(e);
    }
}

int tdm__est_drop_smaller(tdm__est *e, double n_min)
{
    if (e->seeded)
        return 0;
    double kn[TDM__EST_WIN], kt[TDM__EST_WIN];
    int k = 0;
    for (int i = 0; i < e->count; i++) { /* oldest first */
        int at = ((e->next - e->count + i) % TDM__EST_WIN + TDM__EST_WIN) % TDM__EST_WIN;
        if (e->n[at] >= n_min) {
            kn[k] = e->n[at];
            kt[k++] = e->t[at];
        }
    }
    int dropped = e->count - k;
    if (dropped == 0)
        return 0;
    tdm__est_init(e, e->lat0);
    for (int i = 0; i < k; i++)
        push(e, kn[i], kt[i]);
    if (k > 0)
        fit(e);
    return dropped;
}

void tdm__est_seed(tdm__est *e, double tpi, double lat, int weight, double n_hint)
{
    double lat0 = e->lat0;
    tdm__est_init(e, lat0);
    if (!(tpi > 0) || !isfinite(tpi))
        return;
    if (!(lat >= 0) || !isfinite(lat))
        lat = lat0;
    if (weight > TDM__EST_WIN)
        weight = TDM__EST_WIN;
    if (weight < 2)
        weight = 2;
    /* Batches of the lane's own size on the stored line (sched_model.h says why). */
    double n = n_hint > 0 && isfinite(n_hint) ? n_hint : 1e6 / tpi;
    n = n < 1 ? 1 : n > 1e15 ? 1e15 : n; /* (a tpi near zero: finite times still) */
    for (int i = 0; i < weight; i++)
        tdm__est_add(e, n, lat + n * tpi);
    e->unfit = 0; /* (exactly what was stored, below: nothing left to fit) */
    e->tpi = tpi; /* exactly what was stored */
    e->lat = lat;
    e->seeded = true;
    e->seed_tpi = tpi;
}

double tdm__waterfill(const double *a, const double *rate, int n, double items)
{
    double sr = 0, sra = 0;
    bool in[256];
    int m = n < 256 ? n : 256;
    for (int j = 0; j < m; j++) {
        in[j] = rate[j] > 0;
        if (in[j]) {
            sr += rate[j];
            sra += rate[j] * a[j];
        }
    }
    if (sr <= 0)
        return INFINITY;
    double t = (items + sra) / sr;
    /* Lanes available only after t do not help: drop them and solve again (t only falls). */
    for (;;) {
        bool dropped = false;
        for (int j = 0; j < m; j++) {
            if (in[j] && a[j] >= t) {
                in[j] = false;
                sr -= rate[j];
                sra -= rate[j] * a[j];
                dropped = true;
            }
        }
        if (!dropped || sr <= 0)
            break;
        t = (items + sra) / sr;
    }
    return t;
}

#define TDM__EXPLORE_MIN_ITEMS 64

double tdm__explore_enough_ns(double lat, double target_ns)
{
    return 16.0 * lat < target_ns ? 16.0 * lat : target_ns;
}

int64_t tdm__explore_next(int64_t explore, int64_t n, double dur_ns, double target_ns, double lat,
                          int64_t fill, int *long_rungs)
{
    if (explore <= 0)
        return 0;
    double enough = tdm__explore_enough_ns(lat, target_ns);
    /* A batch of a few items that lasts long enough is more likely slowed than long: a first
     * item on cold caches, a worker woken late (a single exp_sinh item took 21 us on a CPU
     * thread, against 2 ns once warm, and read as 20000 ns per item, which made a map's
     * threads lose to its worker processes). It ends the ladder only if it lasted a target,
     * and so did the rung before it: a first exp_sinh item on a cold CPU thread beside the
     * worker processes took 121 us, a target, read as 1.2e5 ns per item, and the processes,
     * 6% slower, ran the map. */
    bool long_few = n < TDM__EXPLORE_MIN_ITEMS && dur_ns >= target_ns;
    int before = long_rungs ? *long_rungs : 1; /* (no count kept: one is enough) */
    if (long_rungs)
        *long_rungs = long_few ? before + 1 : 0;
    bool many = n >= TDM__EXPLORE_MIN_ITEMS || (long_few && before > 0);
    if (long_few && before == 0 && n >= explore && n >= fill)
        return n; /* (the same rung again: a slow kernel's costs one more target, not four) */
    if ((dur_ns >= enough && n >= fill && many) || n < explore)
        return 0;
    int64_t base = n > explore ? n : explore;
    return base > INT64_MAX / 4 ? INT64_MAX / 4 : base * 4;
}

double tdm__explore_budget(double share, double items, double cpu_rate, double lane_tpi, double cap)
{
    if (!(cpu_rate > 0) || !isfinite(cpu_rate))
        return INFINITY;
    double ratio = lane_tpi > 0 && isfinite(lane_tpi) ? 1.0 / lane_tpi / cpu_rate : 0;
    cap = cap > 0 && cap < 1 ? cap : 0;
    ratio = ratio < cap ? ratio : cap;
    return share * items / cpu_rate / (1.0 - ratio);
}

double tdm__explore_reach_tpi(bool host_cpu, int64_t fill, int64_t n, double tpi)
{
    return host_cpu && fill >= 128 && n < fill ? tpi / 2 : tpi;
}

double tdm__explore_budget_of(bool device, double items, double cpu_rate, double lane_tpi,
                              double *share)
{
    bool close = device && cpu_rate > 0 && isfinite(cpu_rate) && lane_tpi > 0 &&
                 isfinite(lane_tpi) && lane_tpi * cpu_rate * TDM__EXPLORE_CAP <= 1.0;
    double sh = close ? TDM__EXPLORE_SHARE_CLOSE : TDM__EXPLORE_SHARE;
    if (share)
        *share = sh;
    return tdm__explore_budget(sh, items, cpu_rate, lane_tpi,
                               close ? TDM__EXPLORE_CAP_CLOSE : TDM__EXPLORE_CAP);
}

bool tdm__explore_stops(double explored_ns, int64_t n, double dur_ns, int64_t next,
                        double budget_ns)
{
    if (next <= 0 || n <= 0)
        return false;
    return explored_ns + dur_ns * (double)next / (double)n >= budget_ns;
}

bool tdm__explore_hopeless(int64_t n, double lane_tpi, double cpu_rate, double budget_ns,
                           double enough_ns)
{
    return n >= TDM__EXPLORE_MIN_ITEMS && lane_tpi > 0 && isfinite(lane_tpi) && cpu_rate > 0 &&
           isfinite(cpu_rate) && lane_tpi * cpu_rate >= TDM__EXPLORE_HOPELESS &&
           budget_ns < enough_ns;
}

int tdm__beside_judge(int64_t n, double dur_ns, double min_ns, int64_t fill, double cpu_rate)
{
    if (n <= 0 || !(dur_ns > 0) || !isfinite(dur_ns) || !(min_ns > 0) || !isfinite(min_ns) ||
        dur_ns - min_ns < TDM__BESIDE_CONCLUSIVE * min_ns || dur_ns - min_ns < TDM__BESIDE_CLEAN_NS)
        return TDM__BESIDE_UNSURE;
    /* (a rung short of the batch that fills the device may have run on one compute unit) */
    double units = n < fill && fill >= 128 ? (double)fill / 64 : 1;
    double lower = (dur_ns - min_ns) / (double)n / (TDM__BESIDE_SHARE * units);
    return cpu_rate > 0 && isfinite(cpu_rate) && lower * cpu_rate >= TDM__EXPLORE_HOPELESS
               ? TDM__BESIDE_HOPELESS
               : TDM__BESIDE_NEAR;
}

int tdm__side_pick(const double *rate, const bool *any, const double *margin, int n, int running)
{
    int hold = running >= 0 && running < n && any[running] ? running : -1;
    int run = -1; /* the others by their order first, then against the one that holds */
    for (int g = 0; g < n; g++)
        if (any[g] && g != hold && (run < 0 || rate[g] > margin[g] * rate[run]))
            run = g;
    if (hold >= 0 && (run < 0 || !(rate[run] > TDM__SIDE_HOLD * rate[hold])))
        run = hold;
    return run;
}

void tdm__sched_decide(const tdm__lane_view *lanes, int n, int w, double now, int64_t remaining,
                       tdm__decision *out)
{
    memset(out, 0, sizeof *out);
    out->best_other = -1;
    out->t_end = INFINITY;
    const tdm__lane_view *me = &lanes[w];
    if (!me->eligible || me->cap_left <= 0 || remaining <= 0)
        return;
    int64_t limit = remaining < me->cap_left ? remaining : me->cap_left;
    if (me->explore > 0 || !(me->tpi > 0)) {
        /* (at most a share of what is left: exploring is not a reason to straggle) */
        int64_t b = me->explore < 1 ? 1 : me->explore;
        int64_t share = remaining / (2 * (int64_t)(n > 0 ? n : 1));
        if (b > share)
            b = share > 1 ? share : 1;
        out->items = b < limit ? b : limit;
        out->explore = true;
        return;
    }
    double a[256], rate[256];
    int m = n < 256 ? n : 256;
    double best_other = INFINITY;
    for (int j = 0; j < m; j++) {
        const tdm__lane_view *l = &lanes[j];
        bool usable = l->eligible && l->tpi > 0 && l->cap_left > 0;
        /* (A device asking while its queues still hold work is available after that work.) */
        double avail = (l->free_at > now ? l->free_at : now) + l->lat;
        a[j] = avail;
        rate[j] = usable ? 1.0 / l->tpi : 0.0;
        if (usable && j != w && avail + l->tpi < best_other) {
            best_other = avail + l->tpi;
            out->best_other = j;
        }
    }
    double t = tdm__waterfill(a, rate, m, (double)remaining);
    double share = (t - a[w]) / me->tpi;
    out->t_end = t;
    out->share = share;
    out->finish_w = a[w] + me->tpi;
    out->finish_other = best_other;
    int64_t b;
    if (share >= 2.0) {
        double target = me->target_ns / me->tpi;
        double half = share / 2.0;
        double x = half < target ? half : target;
        b = x >= (double)limit ? limit : (int64_t)x;
        if (b < 1)
            b = 1;
    } else if (share >= 1.0 || out->finish_w <= best_other) {
        /* The tail: a last item or two goes where it ends first. */
        b = share >= 1.0 ? (int64_t)share : 1;
    } else {
        return; /* another lane finishes it sooner: decline */
    }
    out->items = b < limit ? b : limit;
    out->est_ns = me->lat + (double)out->items * me->tpi;
}
