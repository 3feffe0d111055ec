/* SPDX-License-Identifier: MIT */
/* Last-error messages (per thread, per runtime) and debug logging. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* A few slots per thread, so a thread that alternates between runtimes keeps each one's last
 * message; the least recently written slot is reused. */
#define TDM__ERR_SLOTS 4

typedef struct {
    const tdm_runtime *rt;
    uint64_t stamp;
    char msg[TDM__ERRMSG_LEN];
} tdm__err_slot;

static _Thread_local tdm__err_slot tls_slots[TDM__ERR_SLOTS];
static _Thread_local uint64_t tls_stamp;

static tdm__err_slot *slot_for(const tdm_runtime *rt, bool create)
{
    tdm__err_slot *oldest = &tls_slots[0];
    for (int i = 0; i < TDM__ERR_SLOTS; i++) {
        if (tls_slots[i].stamp != 0 && tls_slots[i].rt == rt)
            return &tls_slots[i];
        if (tls_slots[i].stamp < oldest->stamp)
            oldest = &tls_slots[i];
    }
    if (!create)
        return NULL;
    oldest->rt = rt;
    oldest->msg[0] = '\0';
    return oldest;
}

int tdm__err(const tdm_runtime *rt, int code, const char *fmt, ...)
{
    tdm__err_slot *s = slot_for(rt, true);
    s->stamp = ++tls_stamp;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    if (rt)
        tdm__log(rt, TDM_DEBUG_RUNTIME, "error %s: %s", tdm_status_name(code), s->msg);
    return code;
}

void tdm__err_clear(const tdm_runtime *rt)
{
    tdm__err_slot *s = slot_for(rt, false);
    if (s)
        s->msg[0] = '\0';
}

const char *tdm_errmsg(const tdm_runtime *rt)
{
    tdm__err_slot *s = slot_for(rt, false);
    return s ? s->msg : "";
}

void tdm__log(const tdm_runtime *rt, unsigned flag, const char *fmt, ...)
{
    if (!rt || !(rt->debug & flag))
        return;
    char line[TDM__ERRMSG_LEN + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (rt->cfg.log_fn) {
        rt->cfg.log_fn(rt->cfg.log_user, flag, line);
    } else {
        /* Debug output was asked for (TDM_DEBUG or config.debug) and no sink was given. */
        fprintf(stderr, "[tandem %.3f] %s\n", (double)tdm__now_ns() * 1e-9, line);
    }
}

uint64_t tdm__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int tdm__msg(char *msg, size_t len, int code, const char *fmt, ...)
{
    if (msg && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, len, fmt, ap);
        va_end(ap);
    }
    return code;
}
