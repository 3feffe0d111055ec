/* SPDX-License-Identifier: MIT */
/* Tracing: every batch becomes a span on its worker's lane (threads, process drivers, device
 * queues), written as a Chrome trace-event file that Perfetto and chrome://tracing open. Off
 * unless asked for (config.trace_path / TDM_TRACE): then one short mutex-protected append per
 * batch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sched/device.h"
#include "observe/trace.h"

typedef struct {
    uint64_t ts, dur; /* ns since the runtime opened */
    int lane;
    int name; /* index into names */
    int64_t batch, begin, end;
    int status;
} tdm__tev;

struct tdm__trace {
    pthread_mutex_t mu;
    char *path;
    uint64_t t0;
    tdm__tev *ev;
    size_t n, cap;
    char names[64][64];
    int n_names;
};

int tdm__trace_open(tdm_runtime *rt, const char *path)
{
    if (!path || !*path)
        return 0;
    struct tdm__trace *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path))) {
        free(t);
        return tdm__err(rt, TDM_ENOMEM, "tdm_runtime_open: out of memory (trace)");
    }
    pthread_mutex_init(&t->mu, NULL);
    t->t0 = tdm__now_ns();
    rt->trace = t;
    return 0;
}

void tdm__trace_span(tdm_runtime *rt, int lane, const char *name, int64_t batch, int64_t begin,
                     int64_t end, int status, uint64_t t_start, uint64_t t_end)
{
    struct tdm__trace *t = rt->trace;
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    int id = 0;
    while (id < t->n_names && strcmp(t->names[id], name) != 0)
        id++;
    if (id == t->n_names && t->n_names < 64)
        snprintf(t->names[t->n_names++], sizeof t->names[0], "%s", name);
    if (id == 64)
        id = 63; /* more kernels than names: the last name stands for the rest */
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4096;
        tdm__tev *g = realloc(t->ev, cap * sizeof *g);
        if (!g) { /* a dropped event; the run goes on */
            pthread_mutex_unlock(&t->mu);
            return;
        }
        t->ev = g;
        t->cap = cap;
    }
    t->ev[t->n++] =
        (tdm__tev){t_start - t->t0, t_end - t_start, lane, id, batch, begin, end, status};
    pthread_mutex_unlock(&t->mu);
}

/* Lane names: CPU threads, process drivers (their process slots), device queues. */
static void lane_name(tdm_runtime *rt, int lane, char *buf, size_t len)
{
    int procs = tdm__procs_count(rt->procs);
    if (lane == TDM__TRACE_DIST_LANE) {
        snprintf(buf, len, "chunks (distributed)");
    } else if (lane < rt->threads) {
        snprintf(buf, len, "cpu thread %d", lane);
    } else if (lane < rt->threads + procs) {
        snprintf(buf, len, "worker process %d", lane - rt->threads);
    } else {
        int w = lane / TDM__TRACE_QUEUES, q = lane % TDM__TRACE_QUEUES;
        tdm__devslot *ds = tdm__device_of_worker(rt, w - TDM__TRACE_DEVICE_BASE);
        snprintf(buf, len, "%s %d queue %d", ds ? ds->info.backend : "device",
                 ds ? ds->info.index : 0, q);
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

void tdm__trace_write_events(tdm_runtime *rt, FILE *f, int pid, const char *pname,
                             int64_t shift_ns, bool *first)
{
    struct tdm__trace *t = rt->trace;
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    fprintf(f, "%s\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":",
            *first ? "" : ",", pid);
    *first = false;
    json_str(f, pname);
    fprintf(f, "}}");
    /* one thread_name per lane used */
    for (size_t i = 0; i < t->n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = t->ev[j].lane == t->ev[i].lane;
        if (seen)
            continue;
        char name[96];
        lane_name(rt, t->ev[i].lane, name, sizeof name);
        fprintf(f,
                ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{"
                "\"name\":",
                pid, t->ev[i].lane);
        json_str(f, name);
        fprintf(f, "}}");
    }
    for (size_t i = 0; i < t->n; i++) {
        const tdm__tev *e = &t->ev[i];
        fprintf(f, ",\n{\"name\":");
        json_str(f, t->names[e->name]);
        fprintf(f,
                ",\"cat\":\"batch\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,"
                "\"args\":{\"batch\":%lld,\"begin\":%lld,\"end\":%lld,\"status\":%d}}",
                pid, e->lane, (double)((int64_t)e->ts + shift_ns) / 1e3, (double)e->dur / 1e3,
                (long long)e->batch, (long long)e->begin, (long long)e->end, e->status);
    }
    pthread_mutex_unlock(&t->mu);
}

const char *tdm__trace_path(const tdm_runtime *rt)
{
    return rt->trace ? rt->trace->path : NULL;
}

uint64_t tdm__trace_t0(const tdm_runtime *rt)
{
    return rt->trace ? rt->trace->t0 : 0;
}

int tdm__trace_write_file(tdm_runtime *rt, const char *path,
                          void (*body)(void *arg, FILE *f), void *arg)
{
    size_t plen = strlen(path) + 16;
    char *tmp = malloc(plen);
    if (!tmp)
        return tdm__err(rt, TDM_ENOMEM, "trace: out of memory");
    snprintf(tmp, plen, "%s.tmp%d", path, (int)getpid());
    int rc = 0;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        rc = tdm__err(rt, TDM_EIO, "trace: cannot write '%s' (%s)", tmp, strerror(errno));
        goto out;
    }
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[");
    body(arg, f);
    fprintf(f, "\n]}\n");
    if (fclose(f) != 0) {
        rc = tdm__err(rt, TDM_EIO, "trace: writing '%s' failed", tmp);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = tdm__err(rt, TDM_EIO, "trace: cannot replace '%s' (%s)", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    return rc;
}

static void flush_body(void *arg, FILE *f)
{
    bool first = true;
    tdm__trace_write_events(arg, f, 1, "tandem", 0, &first);
}

int tdm_trace_flush(tdm_runtime *rt)
{
    if (!rt)
        return tdm__err(NULL, TDM_EINVAL, "tdm_trace_flush: runtime is NULL");
    struct tdm__trace *t = rt->trace;
    if (!t)
        return 0;
    return tdm__trace_write_file(rt, t->path, flush_body, rt);
}

void tdm__trace_free(tdm_runtime *rt)
{
    struct tdm__trace *t = rt->trace;
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->ev);
    free(t->path);
    free(t);
    rt->trace = NULL;
}

void tdm__trace_close(tdm_runtime *rt)
{
    if (!rt->trace)
        return;
    if (tdm_trace_flush(rt) != 0)
        tdm__log(rt, TDM_DEBUG_RUNTIME, "trace not written: %s", tdm_errmsg(rt));
    tdm__trace_free(rt);
}
