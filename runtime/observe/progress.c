/* SPDX-License-Identifier: MIT */
/* Progress: a thread per job (only when a display is asked for; for a blocking map, the thread
 * that waits for it) that reads the workers' counters about ten times a second and draws a
 * tqdm-style bar on stderr or calls the user's callback. Workers only add to their own counter
 * once per batch: no message per item. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "observe/progress_internal.h"

static void fmt_time(double s, char *buf, size_t len)
{
    if (s < 0 || !isfinite(s)) {
        snprintf(buf, len, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, len, "%02ld:%02ld", t / 60, t % 60);
}

static void fmt_rate(double rate, char *buf, size_t len)
{
    if (rate <= 0 || !isfinite(rate))
        snprintf(buf, len, "?it/s");
    else if (rate >= 1e9)
        snprintf(buf, len, "%.2fGit/s", rate / 1e9);
    else if (rate >= 1e6)
        snprintf(buf, len, "%.2fMit/s", rate / 1e6);
    else if (rate >= 1e3)
        snprintf(buf, len, "%.2fkit/s", rate / 1e3);
    else if (rate >= 1.0 || rate == 0)
        snprintf(buf, len, "%.2fit/s", rate);
    else
        snprintf(buf, len, "%.2fs/it", 1.0 / rate);
}

/* Display columns of a UTF-8 string: one per code point (the bar's block characters and any
 * text tandem prints are one column wide). */
static int columns(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Copies at most `cols` columns of src (whole code points) to dst (cap bytes); returns bytes. */
static size_t copy_cols(char *dst, size_t cap, const char *src, int cols)
{
    size_t n = 0;
    int c = 0;
    while (src[n] && n + 1 < cap) {
        if (((unsigned char)src[n] & 0xC0) != 0x80 && c++ == cols)
            break;
        n++;
    }
    while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) /* never split a code point */
        n--;
    if (cap > 0) {
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return n;
}

/* The narrowest bar worth drawing, in cells; below it the line is plain text. */
#define MIN_BAR 8

int tdm_progress_format(const tdm_progress *p, const char *desc, int width, char *buf,
                        size_t buf_len)
{
    if (!p || (!buf && buf_len > 0) || width < 0 || (width > 0 && width < 20))
        return tdm__err(NULL, TDM_EINVAL, "tdm_progress_format: bad argument");
    if (width == 0)
        width = 80;
    if (width > 400)
        width = 400;
    char el[32], eta[32], rate[32], left[224], right[160], line[1700];
    fmt_time(p->elapsed_s, el, sizeof el);
    fmt_time(p->eta_s, eta, sizeof eta);
    fmt_rate(p->rate, rate, sizeof rate);
    double frac = p->total > 0 ? (double)p->done / (double)p->total : 1.0;
    if (frac > 1.0)
        frac = 1.0;
    if (frac < 0.0)
        frac = 0.0;
    /* The label is cut so that at least the percentage and the counts fit. */
    char d[200] = "";
    if (desc && *desc)
        copy_cols(d, sizeof d, desc, width / 3);
    snprintf(left, sizeof left, "%s%s%3.0f%%|", d, *d ? ": " : "", frac * 100.0);
    snprintf(right, sizeof right, "| %lld/%lld [%s<%s, %s]", (long long)p->done,
             (long long)p->total, el, eta, rate);
    int bar_w = width - columns(left) - columns(right);
    size_t bl = 0;
    if (bar_w >= MIN_BAR) {
        /* tqdm's layout: label, percentage, bar in eighths of a cell, counts, times, rate. */
        static const char *const parts[8] = {"",       "\u258f", "\u258e", "\u258d",
                                             "\u258c", "\u258b", "\u258a", "\u2589"};
        char bar[3 * 400 + 8];
        int eighths = (int)(frac * bar_w * 8.0);
        int full = eighths / 8, rem = eighths % 8, cells = 0;
        for (; cells < full; cells++) {
            memcpy(bar + bl, "\u2588", 3);
            bl += 3;
        }
        if (rem && cells < bar_w) {
            size_t k = strlen(parts[rem]);
            memcpy(bar + bl, parts[rem], k);
            bl += k;
            cells++;
        }
        for (; cells < bar_w; cells++)
            bar[bl++] = ' ';
        bar[bl] = '\0';
        bl = (size_t)snprintf(line, sizeof line, "%s%s%s", left, bar, right);
    } else {
        /* Too narrow for a bar: a plain line, cut to the width if it must be. */
        char plain[400];
        snprintf(plain, sizeof plain, "%s%s%3.0f%% %lld/%lld [%s<%s, %s]", d, *d ? ": " : "",
                 frac * 100.0, (long long)p->done, (long long)p->total, el, eta, rate);
        bl = copy_cols(line, sizeof line, plain, width);
    }
    if (buf_len > 0)
        copy_cols(buf, buf_len, line, width);
    return (int)bl;
}

/* ---- the per-job thread --------------------------------------------------------------------- */

typedef struct {
    tdm__job *job;
    int mode; /* TDM_PROGRESS_BAR / _PER_WORKER / _CALLBACK */
    int64_t *per_worker;
    int64_t *lane_done; /* per_worker of the workers the policy may use, in order */
    int *lane_ids;      /* their worker indices */
    double ema_rate;
    int64_t last_done;
    double last_t;
    int lines_drawn;
} tdm__prog;

int tdm__progress_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col > 400 ? 400 : ws.ws_col;
    return 80;
}

bool tdm__progress_auto_on(void)
{
    const char *e = getenv("TDM_PROGRESS");
    if (!e || !*e || !strcmp(e, "0") || !strcasecmp(e, "off") || !strcasecmp(e, "no") ||
        !strcasecmp(e, "false"))
        return false;
    return !strcasecmp(e, "always") || isatty(STDERR_FILENO);
}

/* One line of at most width - 1 columns (a line as wide as the terminal would wrap on some
 * terminals): the bar from tdm_progress_format, or below its minimum width a plain line. */
static size_t format_line(const tdm_progress *p, const char *desc, int width, char *out, size_t cap)
{
    int w = width - 1;
    if (w >= 20) {
        int k = tdm_progress_format(p, desc, w, out, cap);
        return k < 0 ? 0 : strlen(out);
    }
    /* A very narrow terminal: the percentage, then the counts if they fit. */
    double frac = p->total > 0 ? (double)p->done / (double)p->total : 1.0;
    char plain[96];
    snprintf(plain, sizeof plain, "%3.0f%% %lld/%lld", (frac > 1 ? 1 : frac) * 100.0,
             (long long)p->done, (long long)p->total);
    return copy_cols(out, cap, plain, w < 1 ? 1 : w);
}

static void snapshot(tdm__prog *pg, tdm_progress *p, bool final)
{
    tdm__job *job = pg->job;
    double now = (double)(tdm__now_ns() - job->t_start) * 1e-9;
    int64_t done = 0;
    for (int w = 0; w < job->n_workers; w++) {
        pg->per_worker[w] = atomic_load_explicit(&job->ws[w].progress, memory_order_relaxed);
        done += pg->per_worker[w];
    }
    double dt = now - pg->last_t;
    if (dt > 0) {
        double inst = (double)(done - pg->last_done) / dt;
        /* tqdm's smoothing: an exponential moving average of the instantaneous rate. */
        pg->ema_rate = pg->ema_rate <= 0 ? inst : 0.3 * inst + 0.7 * pg->ema_rate;
    }
    pg->last_done = done;
    pg->last_t = now;
    double rate = final && now > 0 ? (double)done / now : pg->ema_rate;
    memset(p, 0, sizeof *p);
    p->done = done;
    p->total = job->n_items;
    p->elapsed_s = now;
    p->rate = rate;
    p->eta_s = rate > 0 ? (double)(job->n_items - done) / rate : -1.0;
    if (final)
        p->eta_s = 0;
    p->n_workers = tdm__job_workers(job);
    p->per_worker = pg->per_worker;
    p->final = final;
}

void tdm__progress_render(const tdm_progress *p, const char *desc, bool per_lane, const char *lane,
                          const int *lane_ids, int width, int *lines_drawn)
{
    int n = per_lane ? p->n_workers : 0;
    size_t cap = (size_t)(n + 1) * 1400 + 64, len = 0;
    char *out = malloc(cap);
    if (!out)
        return; /* a missed frame is harmless; the next one may succeed */
    if (*lines_drawn > 1)
        len += (size_t)snprintf(out + len, cap - len, "\033[%dA", *lines_drawn - 1);
    len += (size_t)snprintf(out + len, cap - len, "\r");
    len += format_line(p, desc, width, out + len, cap - len);
    for (int i = 0; i < n && len < cap - 1300; i++) {
        char wdesc[48];
        snprintf(wdesc, sizeof wdesc, "  %s %d", lane, lane_ids ? lane_ids[i] : i);
        tdm_progress wp = *p;
        wp.done = p->per_worker[i];
        /* Each lane's share is not known in advance: show it against the total. */
        wp.rate = p->elapsed_s > 0 ? (double)wp.done / p->elapsed_s : 0;
        len += (size_t)snprintf(out + len, cap - len, "\033[K\n");
        len += format_line(&wp, wdesc, width, out + len, cap - len);
    }
    *lines_drawn = n + 1;
    len += (size_t)snprintf(out + len, cap - len, "\033[K%s", p->final ? "\n" : "");
    if (len > cap - 1)
        len = cap - 1;
    /* The user asked for this bar (progress on, or AUTO with stderr a terminal). */
    ssize_t wr = write(STDERR_FILENO, out, len);
    (void)wr;
    free(out);
}

static void draw(tdm__prog *pg, bool final)
{
    tdm__job *job = pg->job;
    tdm_progress p;
    snapshot(pg, &p, final);
    if (pg->mode == TDM_PROGRESS_CALLBACK) {
        job->opts.progress_fn(&p, job->opts.progress_user);
        return;
    }
    const char *desc = job->opts.desc ? job->opts.desc : job->what;
    /* One bar per worker the job's policy may use (a PROCS map draws no idle threads' bars),
     * each labelled with its worker index. */
    int n = 0, nw = tdm__job_workers(job);
    for (int w = 0; w < nw; w++)
        if (job->on & tdm__worker_kind(job, w)) {
            pg->lane_ids[n] = w;
            pg->lane_done[n++] = pg->per_worker[w];
        }
    p.n_workers = n;
    p.per_worker = pg->lane_done;
    /* The width is asked at every frame: a resized terminal gets lines that fit at once. */
    tdm__progress_render(&p, desc, pg->mode == TDM_PROGRESS_PER_WORKER, "worker", pg->lane_ids,
                         tdm__progress_width(), &pg->lines_drawn);
}

/* The job's time between frames, ns. */
static uint64_t interval_ns(const tdm__job *job)
{
    double interval = job->opts.progress_interval_s > 0 ? job->opts.progress_interval_s : 0.1;
    return (uint64_t)(interval * 1e9);
}

static void prog_free(tdm__prog *pg)
{
    free(pg->per_worker);
    free(pg->lane_done);
    free(pg->lane_ids);
    free(pg);
}

/* Draws a frame at `next` (CLOCK_MONOTONIC ns) and every interval after it until wait (the
 * pool mutex held, as on entry and return) says the job has finished; draws without the
 * mutex. */
static void draw_until(tdm__prog *pg, uint64_t next,
                       bool (*wait)(tdm__job *job, const struct timespec *until))
{
    tdm__job *job = pg->job;
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    for (;;) {
        struct timespec ts = {(time_t)(next / 1000000000ull), (long)(next % 1000000000ull)};
        if (wait(job, &ts))
            return;
        if (tdm__now_ns() >= next) {
            pthread_mutex_unlock(mu);
            draw(pg, false);
            next += interval_ns(job);
            pthread_mutex_lock(mu);
        }
    }
}

/* The progress thread's wait: until the job has finished (it does not finish it: its waiter
 * does) or `until`. */
static bool finished_or_timed_out(tdm__job *job, const struct timespec *until)
{
    if (!job->finished)
        pthread_cond_timedwait(&job->cv, tdm__pool_mutex(job->rt->pool), until);
    return job->finished;
}

static void *progress_main(void *arg)
{
    tdm__prog *pg = arg;
    tdm__job *job = pg->job;
    pthread_mutex_t *mu = tdm__pool_mutex(job->rt->pool);
    uint64_t next = tdm__now_ns() + interval_ns(job);
    draw(pg, false);
    pthread_mutex_lock(mu);
    draw_until(pg, next, finished_or_timed_out);
    pthread_mutex_unlock(mu);
    draw(pg, true);
    prog_free(pg);
    return NULL;
}

/* A blocking map's caller draws its display while it waits: a thread of its own cost every
 * map a start, and at the end a wake-up and a join in turn after the last batch (bench_progress:
 * 0.15-0.3 ms a map, 1-2% of a 15 ms map of 10M items). */
bool tdm__progress_wait_locked(tdm__job *job,
                               bool (*wait)(tdm__job *job, const struct timespec *until))
{
    if (!job->progress_pg)
        return false;
    draw_until(job->progress_pg, tdm__now_ns() /* (the first frame now, unless finished) */, wait);
    return true;
}

int tdm__progress_start(tdm__job *job)
{
    int mode = job->opts.progress;
    /* AUTO: a library prints nothing unless asked; TDM_PROGRESS asks (then a bar when stderr
     * is a terminal, or always with TDM_PROGRESS=always). */
    if (mode == TDM_PROGRESS_AUTO)
        mode = tdm__progress_auto_on() ? TDM_PROGRESS_BAR : TDM_PROGRESS_OFF;
    if (mode == TDM_PROGRESS_OFF)
        return 0;
    tdm__prog *pg = calloc(1, sizeof *pg);
    size_t nw = job->n_workers > 0 ? (size_t)job->n_workers : 1;
    int64_t *pw = calloc(nw, sizeof *pw), *ld = calloc(nw, sizeof *ld);
    int *ids = calloc(nw, sizeof *ids);
    if (!pg || !pw || !ld || !ids) {
        free(pg);
        free(pw);
        free(ld);
        free(ids);
        return tdm__err(job->rt, TDM_ENOMEM, "%s: out of memory (progress)", job->what);
    }
    pg->job = job;
    pg->mode = mode;
    pg->per_worker = pw;
    pg->lane_done = ld;
    pg->lane_ids = ids;
    if (job->progress_inline) {
        job->progress_pg = pg; /* (drawn by tdm__progress_wait_locked, freed by _stop) */
        return 0;
    }
    int rc = pthread_create(&job->progress_thread, NULL, progress_main, pg);
    if (rc != 0) {
        prog_free(pg);
        return tdm__err(job->rt, TDM_ESYS, "%s: cannot start the progress thread: %s", job->what,
                        strerror(rc));
    }
    job->progress_running = true;
    return 0;
}

void tdm__progress_stop(tdm__job *job)
{
    if (job->progress_pg) {
        tdm__prog *pg = job->progress_pg;
        job->progress_pg = NULL;
        draw(pg, true);
        prog_free(pg);
        return;
    }
    if (!job->progress_running)
        return;
    pthread_join(job->progress_thread, NULL);
    job->progress_running = false;
}
