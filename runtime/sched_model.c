/* The scheduler's estimator and decision (see sched_model.h). No state, no locks, no clock. */
#include "sched_model.h"

#include <math.h>
#include <string.h>

static double median_of(const double *v, int n)
{
    double s[TDM__EST_WIN];
    memcpy(s, v, (size_t)n * sizeof *s);
    for (int i = 1; i < n; i++) { /* insertion sort: at most 9 values */
        double x = s[i];
        int j = i - 1;
        while (j >= 0 && s[j] > x) {
            s[j + 1] = s[j];
            j--;
        }
        s[j + 1] = x;
    }
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

void tdm__est_add(tdm__est *e, double v)
{
    if (!(v > 0) || !isfinite(v))
        return;
    e->win[e->next] = v;
    e->next = (e->next + 1) % TDM__EST_WIN;
    if (e->n < TDM__EST_WIN)
        e->n++;
    e->value = median_of(e->win, e->n);
}

void tdm__est_seed(tdm__est *e, double v, int weight)
{
    memset(e, 0, sizeof *e);
    if (!(v > 0) || !isfinite(v))
        return;
    if (weight > TDM__EST_WIN)
        weight = TDM__EST_WIN;
    for (int i = 0; i < (weight < 1 ? 1 : weight); i++)
        tdm__est_add(e, v);
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

int64_t tdm__explore_next(int64_t explore, int64_t n, double dur_ns, double target_ns, double lat)
{
    if (explore <= 0)
        return 0;
    double enough = 16.0 * lat;
    if (enough > target_ns)
        enough = target_ns;
    if (dur_ns >= enough)
        return 0;
    int64_t base = n > explore ? n : explore;
    return base > INT64_MAX / 4 ? INT64_MAX / 4 : base * 4;
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
        int64_t b = me->explore < 1 ? 1 : me->explore;
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
        double avail = (j == w ? now : (l->free_at > now ? l->free_at : now)) + l->lat;
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
