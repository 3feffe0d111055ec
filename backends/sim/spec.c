/* SPDX-License-Identifier: MIT */
/* Simulated backends described in text ("gpu*8:tpi=10ns:lat=20us:bw=25G:bytes=8"), and the
 * text of a simulation's result. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tandem/sim.h"

/* A spec error of `fn`: the message goes to err (when given) and to the thread's message. */
static int bad(const char *fn, char *err, size_t len, const char *fmt, ...) TDM__PRINTF(4, 5);
static int bad(const char *fn, char *err, size_t len, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err && len)
        snprintf(err, len, "%s", msg);
    return tdm__err(NULL, TDM_EINVAL, "%s: %s", fn, msg);
}

/* A number with an optional unit suffix from `units` (name, factor; NULL-terminated). */
typedef struct {
    const char *name;
    double factor;
} unit;

static bool number(const char *s, const unit *units, double *out)
{
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v))
        return false;
    if (*end == '\0') {
        *out = v * units[0].factor; /* the first unit is the bare number's */
        return true;
    }
    for (const unit *u = units; u->name; u++) {
        if (strcmp(end, u->name) == 0) {
            *out = v * u->factor;
            return true;
        }
    }
    return false;
}

static const unit TPI_UNITS[] = {{"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9}, {NULL, 0}};
static const unit LAT_UNITS[] = {{"s", 1}, {"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {NULL, 0}};
static const unit BW_UNITS[] = {{"", 1},     {"K", 1e3},  {"M", 1e6},  {"G", 1e9},
                                {"KB/s", 1e3}, {"MB/s", 1e6}, {"GB/s", 1e9}, {NULL, 0}};
static const unit PLAIN[] = {{"", 1}, {NULL, 0}};

int tdm_sim_add(tdm_sim_config *cfg, const char *spec, char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    if (!cfg || !spec)
        return bad("tdm_sim_add", err, err_len, "config or spec is NULL");
    if (cfg->n_backends < 0 || cfg->n_backends >= TDM_SIM_MAX_BACKENDS)
        return bad("tdm_sim_add", err, err_len, "at most %d backends", TDM_SIM_MAX_BACKENDS);
    char buf[256];
    if (strlen(spec) >= sizeof buf)
        return bad("tdm_sim_add", err, err_len, "spec longer than %zu characters", sizeof buf - 1);
    snprintf(buf, sizeof buf, "%s", spec);
    tdm_sim_backend b;
    memset(&b, 0, sizeof b);
    b.count = 1;
    char *save = NULL;
    char *head = strtok_r(buf, ":", &save);
    if (!head || !*head)
        return bad("tdm_sim_add", err, err_len, "'%s': no backend name", spec);
    char *star = strchr(head, '*');
    if (star) {
        *star = '\0';
        char *end;
        errno = 0;
        long n = strtol(star + 1, &end, 10);
        if (end == star + 1 || *end || errno || n < 1 || n > TDM_SIM_MAX_LANES)
            return bad("tdm_sim_add", err, err_len, "'%s': count '%s' is not in 1..%d", spec,
                       star + 1, TDM_SIM_MAX_LANES);
        b.count = (int)n;
    }
    if (!*head || strlen(head) >= sizeof b.name)
        return bad("tdm_sim_add", err, err_len, "'%s': the name must have 1..%zu characters", spec,
                   sizeof b.name - 1);
    snprintf(b.name, sizeof b.name, "%s", head);
    bool have_tpi = false;
    for (char *kv = strtok_r(NULL, ":", &save); kv; kv = strtok_r(NULL, ":", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return bad("tdm_sim_add", err, err_len, "'%s': '%s' is not key=value", spec, kv);
        *eq = '\0';
        const char *k = kv, *v = eq + 1;
        bool ok;
        if (strcmp(k, "tpi") == 0) {
            ok = number(v, TPI_UNITS, &b.ns_per_item) && b.ns_per_item > 0;
            have_tpi = ok;
        } else if (strcmp(k, "lat") == 0) {
            ok = number(v, LAT_UNITS, &b.latency_s) && b.latency_s >= 0;
        } else if (strcmp(k, "bw") == 0) {
            ok = number(v, BW_UNITS, &b.bandwidth) && b.bandwidth > 0;
        } else if (strcmp(k, "bytes") == 0) {
            ok = number(v, PLAIN, &b.bytes_per_item) && b.bytes_per_item >= 0;
        } else if (strcmp(k, "noise") == 0) {
            ok = number(v, PLAIN, &b.noise) && b.noise >= 0 && b.noise < 1;
        } else if (strcmp(k, "outlier") == 0) {
            char *end;
            errno = 0;
            long every = strtol(v, &end, 10);
            ok = end != v && *end == '/' && every >= 1 && every <= 1000000000L && !errno;
            if (ok) {
                b.outlier_every = (int)every;
                ok = number(end + 1, PLAIN, &b.outlier_factor) && b.outlier_factor > 0;
            }
        } else {
            return bad("tdm_sim_add", err, err_len,
                       "'%s': unknown key '%s' (tpi, lat, bw, bytes, noise, outlier)", spec, k);
        }
        if (!ok)
            return bad("tdm_sim_add", err, err_len, "'%s': bad value '%s' for %s", spec, v, k);
    }
    if (!have_tpi)
        return bad("tdm_sim_add", err, err_len, "'%s': tpi= (time per item) is required", spec);
    if (b.bytes_per_item > 0 && b.bandwidth <= 0)
        return bad("tdm_sim_add", err, err_len, "'%s': bytes= needs bw= (the link's bandwidth)",
                   spec);
    int lanes = b.count;
    for (int i = 0; i < cfg->n_backends; i++)
        lanes += cfg->backends[i].count;
    if (lanes > TDM_SIM_MAX_LANES)
        return bad("tdm_sim_add", err, err_len, "%d lanes in all (at most %d)", lanes,
                   TDM_SIM_MAX_LANES);
    cfg->backends[cfg->n_backends++] = b;
    return 0;
}

static const char *policy_name(tdm_sim_policy p)
{
    return p == TDM_SIM_AUTO ? "auto" : p == TDM_SIM_EAGER ? "eager" : "round-robin";
}

/* Seconds with a unit that keeps 3-4 significant digits. */
static void dur(char *buf, size_t len, double s)
{
    if (s >= 3600)
        snprintf(buf, len, "%.3f h", s / 3600);
    else if (s >= 1)
        snprintf(buf, len, "%.3f s", s);
    else if (s >= 1e-3)
        snprintf(buf, len, "%.3f ms", s * 1e3);
    else
        snprintf(buf, len, "%.3f us", s * 1e6);
}

int tdm_sim_format(const tdm_sim_config *cfg, const tdm_sim_result *r, char *buf, size_t len)
{
    if (!cfg || !r || (!buf && len))
        return tdm__err(NULL, TDM_EINVAL, "tdm_sim_format: NULL argument");
    size_t n = 0;
    if (len)
        buf[0] = '\0';
    n = tdm__appendf(buf, len, n, "simulated map: %lld items, policy %s, %s model\n",
                     (long long)cfg->items, policy_name(cfg->policy),
                     cfg->calibrated ? "calibrated" : "uncalibrated (explores)");
    n = tdm__appendf(buf, len, n, "%-12s %5s %14s %6s %9s %6s %9s %11s %10s\n", "backend", "lanes",
                     "items", "share", "batches", "util", "est/real", "GB moved", "alone");
    for (int b = 0; b < r->n_backends && b < cfg->n_backends; b++) {
        const tdm_sim_backend_result *br = &r->backends[b];
        char alone[32];
        dur(alone, sizeof alone, br->alone_s);
        double share = (double)br->items / (double)cfg->items;
        n = tdm__appendf(buf, len, n, "%-12s %5d %14lld %5.1f%% %9lld %5.1f%% %9.3f %11.3f %10s\n",
                         cfg->backends[b].name, cfg->backends[b].count, (long long)br->items,
                         100 * share, (long long)br->batches, 100 * br->utilisation,
                         br->busy_s > 0 && br->est_s > 0 ? br->est_s / br->busy_s : 0.0,
                         br->bytes_moved * 1e-9, alone);
    }
    char mk[32], id[32], bs[32];
    dur(mk, sizeof mk, r->makespan_s);
    dur(id, sizeof id, r->ideal_s);
    dur(bs, sizeof bs, r->best_single_s);
    n = tdm__appendf(buf, len, n,
                     "makespan %s   ideal %s (makespan/ideal %.3f)   best single backend: %s, %s "
                     "(speed-up %.2fx)\n",
                     mk, id, r->ideal_s > 0 ? r->makespan_s / r->ideal_s : 0.0,
                     r->best_single >= 0 ? cfg->backends[r->best_single].name : "-", bs,
                     r->makespan_s > 0 ? r->best_single_s / r->makespan_s : 0.0);
    n = tdm__appendf(
        buf, len, n,
        "%lld batches, %lld declines, %lld exploration batches; simulated in %.1f ms\n",
        (long long)r->batches, (long long)r->declines, (long long)r->explorations, r->host_s * 1e3);
    return n > (size_t)INT_MAX ? INT_MAX : (int)n;
}

/* ---- clusters ---------------------------------------------------------------------------- */

int tdm_sim_cluster_add(tdm_sim_cluster_config *cfg, const char *group, char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    if (!cfg || !group)
        return bad("tdm_sim_cluster_add", err, err_len, "config or group is NULL");
    if (cfg->size < sizeof *cfg || cfg->version != TDM_SIM_CLUSTER_CONFIG_VERSION)
        return bad("tdm_sim_cluster_add", err, err_len,
                   "config size %u / version %u not supported (start from "
                   "TDM_SIM_CLUSTER_CONFIG_INIT)",
                   cfg->size, cfg->version);
    if (cfg->n_groups < 0 || cfg->n_groups >= TDM_SIM_MAX_GROUPS)
        return bad("tdm_sim_cluster_add", err, err_len, "at most %d node groups",
                   TDM_SIM_MAX_GROUPS);
    char *end;
    errno = 0;
    long count = strtol(group, &end, 10);
    if (end == group || *end != ':' || errno || count < 1 || count > TDM_SIM_MAX_NODES)
        return bad("tdm_sim_cluster_add", err, err_len,
                   "'%s': expected COUNT:SPEC[;SPEC]... with COUNT in 1..%d", group,
                   TDM_SIM_MAX_NODES);
    long nodes = count;
    for (int g = 0; g < cfg->n_groups; g++)
        nodes += cfg->groups[g].count;
    if (nodes > TDM_SIM_MAX_NODES)
        return bad("tdm_sim_cluster_add", err, err_len, "%ld nodes in all (at most %d)", nodes,
                   TDM_SIM_MAX_NODES);
    char buf[1024];
    if (strlen(end + 1) >= sizeof buf)
        return bad("tdm_sim_cluster_add", err, err_len, "group longer than %zu characters",
                   sizeof buf - 1);
    snprintf(buf, sizeof buf, "%s", end + 1);
    tdm_sim_node_group ng = {.count = (int)count, .node = TDM_SIM_CONFIG_INIT};
    char *save = NULL;
    for (char *spec = strtok_r(buf, ";", &save); spec; spec = strtok_r(NULL, ";", &save)) {
        char why[256];
        if (tdm_sim_add(&ng.node, spec, why, sizeof why) != 0)
            return bad("tdm_sim_cluster_add", err, err_len, "%s", why);
    }
    if (ng.node.n_backends == 0)
        return bad("tdm_sim_cluster_add", err, err_len, "'%s': no backend after the count", group);
    cfg->groups[cfg->n_groups++] = ng;
    return 0;
}

static const char *gather_name(tdm_sim_gather g)
{
    return g == TDM_SIM_GATHER_ROOT ? "to rank 0" : g == TDM_SIM_GATHER_ALL ? "to all" : "none";
}

/* Bytes (or bytes/s) with a decimal unit. */
static void bytes(char *buf, size_t len, double b)
{
    if (b >= 1e12)
        snprintf(buf, len, "%.3g TB", b * 1e-12);
    else if (b >= 1e9)
        snprintf(buf, len, "%.3g GB", b * 1e-9);
    else if (b >= 1e6)
        snprintf(buf, len, "%.3g MB", b * 1e-6);
    else if (b >= 1e3)
        snprintf(buf, len, "%.3g kB", b * 1e-3);
    else
        snprintf(buf, len, "%.3g B", b);
}

/* "cpu*32+gpu*2" */
static void node_text(char *buf, size_t len, const tdm_sim_config *node)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int b = 0; b < node->n_backends && n < len; b++)
        n = tdm__appendf(buf, len, n, "%s%s*%d", b ? "+" : "", node->backends[b].name,
                         node->backends[b].count);
}

int tdm_sim_cluster_format(const tdm_sim_cluster_config *cfg, const tdm_sim_cluster_result *r,
                           const tdm_sim_node_result *nodes, size_t n_nodes, char *buf, size_t len)
{
    if (!cfg || !r || (!buf && len))
        return tdm__err(NULL, TDM_EINVAL, "tdm_sim_cluster_format: NULL argument");
    size_t n = 0;
    if (len)
        buf[0] = '\0';
    char bw[32], lat[32], pay[32];
    bytes(bw, sizeof bw, cfg->net_bandwidth);
    dur(lat, sizeof lat, cfg->net_latency_s);
    bytes(pay, sizeof pay, cfg->payload_bytes);
    n = tdm__appendf(
        buf, len, n,
        "simulated cluster: %d node%s, %lld items, network %s/s + %s per message, %s split\n",
        r->nodes, r->nodes == 1 ? "" : "s", (long long)cfg->items, bw, lat,
        cfg->calibrated ? "calibrated" : "equal");
    n = tdm__appendf(buf, len, n,
                     "payload %s, %s inputs (%g B/item), outputs %g B/item gathered %s", pay,
                     cfg->partitioned ? "partitioned" : "replicated", cfg->in_bytes_per_item,
                     cfg->out_bytes_per_item, gather_name(cfg->gather));
    if (cfg->slow_node >= 0 && cfg->slow_node < r->nodes)
        n = tdm__appendf(buf, len, n, ", rank %d slowed %gx", cfg->slow_node, cfg->slow_factor);
    if (cfg->node_noise > 0)
        n = tdm__appendf(buf, len, n, ", chunk noise +-%g", cfg->node_noise);
    if ((cfg->max_in_flight > 0 && cfg->max_in_flight != 2) ||
        (cfg->chunk_divisor > 0 && cfg->chunk_divisor != 2))
        n = tdm__appendf(buf, len, n, ", %d chunk(s) in flight, chunk = share / %g",
                         cfg->max_in_flight > 0 ? cfg->max_in_flight : 2,
                         cfg->chunk_divisor > 0 ? cfg->chunk_divisor : 2.0);
    n = tdm__appendf(buf, len, n, "\n%-5s %5s %-24s %12s %9s %14s %6s %6s %7s\n", "group", "nodes",
                     "node", "items/s/node", "vs lanes", "items", "share", "busy", "steals");
    for (int g = 0; g < r->n_groups && g < cfg->n_groups; g++) {
        const tdm_sim_group_result *gr = &r->groups[g];
        char nt[128];
        node_text(nt, sizeof nt, &cfg->groups[g].node);
        double busy = r->compute_s > 0 ? gr->busy_s / (cfg->groups[g].count * r->compute_s) : 0;
        n = tdm__appendf(
            buf, len, n, "%-5d %5d %-24s %12.4g %8.1f%% %14lld %5.1f%% %5.1f%% %7lld\n", g,
            cfg->groups[g].count, nt, gr->rate,
            gr->lanes_rate > 0 ? 100 * gr->rate / gr->lanes_rate : 0.0, (long long)gr->items,
            100 * (double)gr->items / (double)cfg->items, 100 * busy, (long long)gr->steals);
    }
    if (nodes && n_nodes >= (size_t)r->nodes) {
        n = tdm__appendf(buf, len, n, "%5s %5s %12s %14s %7s %6s %7s %12s %10s\n", "rank", "group",
                         "items/s", "items", "chunks", "busy", "steals", "stolen", "ends");
        for (int k = 0; k < r->nodes; k++) {
            const tdm_sim_node_result *nr = &nodes[k];
            char end[32];
            dur(end, sizeof end, nr->end_s);
            n = tdm__appendf(buf, len, n, "%5d %5d %12.4g %14lld %7lld %5.1f%% %7lld %12lld %10s\n",
                             k, nr->group, nr->rate, (long long)nr->items, (long long)nr->chunks,
                             r->compute_s > 0 ? 100 * nr->busy_s / r->compute_s : 0.0,
                             (long long)nr->steals, (long long)nr->stolen_items, end);
        }
    }
    char mk[32], bc[32], cp[32], ga[32], id[32], one[32], cb[32], sb[32], gb[32];
    dur(mk, sizeof mk, r->makespan_s);
    dur(bc, sizeof bc, r->broadcast_s);
    dur(cp, sizeof cp, r->compute_s);
    dur(ga, sizeof ga, r->gather_s);
    dur(id, sizeof id, r->ideal_s);
    dur(one, sizeof one, r->single_s);
    dur(cb, sizeof cb, r->coord_busy_s);
    bytes(sb, sizeof sb, r->steal_bytes);
    bytes(gb, sizeof gb, r->gather_bytes);
    n = tdm__appendf(buf, len, n, "makespan %s = broadcast %s + compute %s + gather %s (%s)\n", mk,
                     bc, cp, ga, gb);
    n = tdm__appendf(buf, len, n,
                     "ideal %s, one node %s: speed-up %.2fx of %.2fx, efficiency %.3f\n", id, one,
                     r->speedup, r->ideal_speedup, r->efficiency);
    n = tdm__appendf(
        buf, len, n,
        "%lld grants, %lld steals (%s moved), rank 0 served %lld requests in %s (%.1f%% of the "
        "compute); simulated in %.1f ms\n",
        (long long)r->grants, (long long)r->steals, sb, (long long)r->requests, cb,
        r->compute_s > 0 ? 100 * r->coord_busy_s / r->compute_s : 0.0, r->host_s * 1e3);
    return n > (size_t)INT_MAX ? INT_MAX : (int)n;
}
