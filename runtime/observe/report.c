/* SPDX-License-Identifier: MIT */
/* Formatting a run report as a table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The one appender of the *_format() calls (internal.h). */
size_t tdm__appendf(char *buf, size_t len, size_t at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(at < len ? buf + at : NULL, at < len ? len - at : 0, fmt, ap);
    va_end(ap);
    return at + (n > 0 ? (size_t)n : 0);
}

int tdm_report_format(const tdm_report *r, char *buf, size_t buf_len)
{
    if (!r || (!buf && buf_len > 0) || r->size < sizeof(tdm_report))
        return tdm__err(NULL, TDM_EINVAL, "tdm_report_format: bad argument");
    if (buf_len > 0)
        buf[0] = '\0';
    size_t at = 0;
    double rate = r->wall_s > 0 ? (double)r->items / r->wall_s : 0.0;
    at = tdm__appendf(buf, buf_len, at,
                      "%s: %s, %lld/%lld items in %lld batches (size %lld..%lld), "
                      "%.6f s wall, %.3g items/s\n",
                      r->what, r->status ? tdm_status_name(r->status) : "ok", (long long)r->items,
                      (long long)r->items_total, (long long)r->batches,
                      (long long)r->batch_size_min, (long long)r->batch_size, r->wall_s, rate);
    if (r->first_error)
        at = tdm__appendf(buf, buf_len, at,
                          "  first error: %s in batch %lld (items %lld..%lld); %lld "
                          "batch(es) failed\n",
                          tdm_status_name(r->first_error), (long long)r->first_error_batch,
                          (long long)r->first_error_begin, (long long)r->first_error_end,
                          (long long)r->failed_batches);
    at = tdm__appendf(buf, buf_len, at, "  %-8s %6s %12s %10s %10s %7s %9s %10s\n", "backend",
                      "worker", "items", "batches", "busy s", "busy %", "est/busy", "MB moved");
    int n = r->n_workers < TDM_REPORT_MAX_WORKERS ? r->n_workers : TDM_REPORT_MAX_WORKERS;
    for (int i = 0; i < n; i++) {
        const tdm_report_worker *w = &r->workers[i];
        double pct = r->wall_s > 0 ? 100.0 * w->busy_s / r->wall_s : 0.0;
        char est[16] = "-";
        if (w->est_s > 0 && w->busy_s > 0)
            snprintf(est, sizeof est, "%.2f", w->est_s / w->busy_s);
        at = tdm__appendf(buf, buf_len, at, "  %-8s %6d %12lld %10lld %10.4f %6.1f%% %9s %10.1f\n",
                          tdm_backend_kind_name(w->kind), w->index, (long long)w->items,
                          (long long)w->batches, w->busy_s, pct, est, (double)w->bytes * 1e-6);
    }
    return at > (size_t)INT32_MAX ? INT32_MAX : (int)at;
}

int tdm_report_print(const tdm_report *r, FILE *f)
{
    if (!r || !f)
        return tdm__err(NULL, TDM_EINVAL, "tdm_report_print: NULL argument");
    int n = tdm_report_format(r, NULL, 0);
    if (n < 0)
        return n;
    char buf[16384];
    char *p = buf;
    if ((size_t)n >= sizeof buf) {
        p = malloc((size_t)n + 1);
        if (!p)
            return tdm__err(NULL, TDM_ENOMEM, "tdm_report_print: out of memory");
    }
    tdm_report_format(r, p, (size_t)n + 1);
    int rc = fputs(p, f) < 0 ? tdm__err(NULL, TDM_ESYS, "tdm_report_print: write failed") : 0;
    if (p != buf)
        free(p);
    return rc;
}
