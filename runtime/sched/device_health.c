/* SPDX-License-Identifier: MIT */
/* What the device backends (OpenCL, CUDA) share: a device lost once and for good, the fault
 * injection that tests use to lose one at any point, and the device-memory cap from the
 * configuration or the environment. See sched/device.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/device.h"

static const char *const g_points[TDM__FAULT_N] = {
    [TDM__FAULT_NONE] = "none",     [TDM__FAULT_ALLOC] = "alloc",   [TDM__FAULT_WRITE] = "write",
    [TDM__FAULT_READ] = "read",     [TDM__FAULT_LAUNCH] = "launch", [TDM__FAULT_FINISH] = "finish",
    [TDM__FAULT_STICKY] = "sticky", [TDM__FAULT_LOST] = "lost",
};

int tdm__devhealth_init(tdm__devhealth *h, const char *name, char *detail, size_t len)
{
    memset(h, 0, sizeof *h);
    atomic_init(&h->state, 0);
    snprintf(h->name, sizeof h->name, "%s", name);
    const char *env = getenv("TDM_DEVICE_FAULT");
    if (!env || !*env)
        return 0;
    const char *colon = strchr(env, ':');
    char *end = NULL;
    long n = colon ? strtol(colon + 1, &end, 10) : 0;
    for (int p = TDM__FAULT_ALLOC; colon && p < TDM__FAULT_N; p++) {
        size_t l = strlen(g_points[p]);
        if ((size_t)(colon - env) == l && !strncmp(env, g_points[p], l) && end && !*end && n >= 1 &&
            n <= 1000000) {
            h->point = p;
            h->at = (int)n;
            return 0;
        }
    }
    if (detail && len)
        snprintf(detail, len,
                 "TDM_DEVICE_FAULT='%.40s' is not <point>:<n> (point alloc, write, read, launch, "
                 "finish, sticky or lost; n >= 1)",
                 env);
    return TDM_EINVAL;
}

/* Keeps the first reason; later losers only read it. */
static void mark_lost(tdm__devhealth *h, const char *why)
{
    int expect = 0;
    if (atomic_compare_exchange_strong(&h->state, &expect, 1)) {
        snprintf(h->why, sizeof h->why, "%s", why);
        atomic_store_explicit(&h->state, 2, memory_order_release);
    }
}

static int lost_since(const tdm__devhealth *h, char *detail, size_t len)
{
    if (detail && len) {
        const char *why = atomic_load_explicit(&h->state, memory_order_acquire) == 2 ? h->why : "";
        snprintf(detail, len, "%s was lost earlier: %s", h->name, why);
    }
    return TDM_EDEVLOST;
}

int tdm__devhealth_enter(tdm__devhealth *h, tdm__fault_point p, char *detail, size_t len)
{
    if (atomic_load_explicit(&h->state, memory_order_acquire) != 0)
        return lost_since(h, detail, len);
    if (h->sticky) {
        h->sticky = false;
        char why[256];
        snprintf(why, sizeof why,
                 "%s: the context is dead after an injected device fault in "
                 "launch %d (TDM_DEVICE_FAULT=sticky:%d), found at the next %s",
                 h->name, h->at, h->at, g_points[p]);
        mark_lost(h, why);
        return lost_since(h, detail, len);
    }
    if (h->point == TDM__FAULT_NONE)
        return 0;
    bool counts = h->point == (int)p || h->point == TDM__FAULT_LOST ||
                  (h->point == TDM__FAULT_STICKY && p == TDM__FAULT_LAUNCH);
    if (!counts || ++h->seen != h->at)
        return 0;
    if (h->point == TDM__FAULT_STICKY) {
        h->sticky = true; /* the launch itself "succeeds": the fault shows up later */
        return 0;
    }
    char why[256];
    snprintf(why, sizeof why, "%s: injected driver failure at %s %d (TDM_DEVICE_FAULT=%s:%d)",
             h->name, g_points[p], h->seen, g_points[h->point], h->at);
    mark_lost(h, why);
    return lost_since(h, detail, len);
}

int tdm__devhealth_lose(tdm__devhealth *h, char *detail, size_t len)
{
    char why[sizeof h->why];
    snprintf(why, sizeof why, "%s", detail && len ? detail : "a driver error");
    mark_lost(h, why);
    if (detail && len) {
        size_t n = strlen(detail);
        if (n < len)
            snprintf(detail + n, len - n, " (%s lost)", h->name);
    }
    return TDM_EDEVLOST;
}

bool tdm__devhealth_lost(const tdm__devhealth *h)
{
    return atomic_load_explicit(&h->state, memory_order_acquire) != 0;
}

int tdm__parse_bytes(const char *s, uint64_t *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    while (isspace((unsigned char)*end))
        end++;
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    unsigned shift = u ? 10u * (unsigned)(u - units + 1) : 0;
    if (shift) {
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
    }
    if (toupper((unsigned char)*end) == 'B')
        end++;
    while (isspace((unsigned char)*end))
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int tdm__device_mem_cap(const tdm_runtime *rt, const char *who, uint64_t *cap, char *detail,
                        size_t len)
{
    *cap = rt ? rt->cfg.device_mem_cap : 0;
    const char *env = !rt || rt->cfg.use_env ? getenv("TDM_DEVICE_MEM_CAP") : NULL;
    if (env && *env && tdm__parse_bytes(env, cap) != 0) {
        if (detail && len)
            snprintf(detail, len,
                     "%s: TDM_DEVICE_MEM_CAP='%.40s' is not a size (bytes, or a number with K, M, "
                     "G or T)",
                     who, env);
        return TDM_EINVAL;
    }
    return 0;
}
