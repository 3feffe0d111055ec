/* SPDX-License-Identifier: MIT */
/* `tandem simulate`: what-if questions answered on simulated backends (tandem/sim.h).
 *
 *   tandem simulate --items 1e9 --backend cpu*32:tpi=200ns \
 *                   --backend gpu*8:tpi=5ns:lat=20us:bw=25G:bytes=16
 *
 * prints the makespan under tandem's scheduler, per-backend share and utilisation, the ideal
 * (sum of throughputs) and the best single backend. With --node / --node-group it simulates
 * the distributed map over N such nodes instead (tdm_simulate_cluster), one line per node
 * count of a --nodes sweep. Uses only the public API. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tandem.h>

#include "simulate.h"

static void sim_usage(FILE *f)
{
    fprintf(f,
            "usage: tandem simulate --backend SPEC [--backend SPEC]... [options]\n"
            "\n"
            "SPEC: NAME[*COUNT][:key=value]...  keys: tpi (time per item: 100ns, 2us),\n"
            "      lat (latency per batch: 20us), bw (link bytes/s: 25G), bytes (per item),\n"
            "      noise (0..1), outlier (EVERY/FACTOR)\n"
            "options:\n"
            "  --items N        items of the map (default 1e6; 1e9-style accepted)\n"
            "  --policy P       auto (default), eager, round-robin\n"
            "  --calibrated     start from a stored model (a second run) instead of exploring\n"
            "  --seed S         noise seed (default 1)\n"
            "example (1 CPU socket + 8 GPUs):\n"
            "  tandem simulate --items 1e10 --backend cpu*32:tpi=200ns \\\n"
            "                  --backend gpu*8:tpi=4ns:lat=20us:bw=25G:bytes=16\n"
            "\n"
            "clusters (the distributed map over N nodes; instead of --backend):\n"
            "  --node SPEC          a backend of every node (repeat for several)\n"
            "  --nodes N[,N]...     node counts: one line per count (default 1)\n"
            "  --node-group COUNT:SPEC[;SPEC]...  COUNT nodes of these backends (repeat for a\n"
            "                       mixed cluster; --nodes then scales the mix: each N a\n"
            "                       multiple of the counts' sum)\n"
            "  --net-bw BYTES/S     each node's link (default 12.5G)\n"
            "  --net-lat TIME       one-way latency of a message (default 2us)\n"
            "  --coord-service TIME rank 0's time per request (default 5us)\n"
            "  --payload BYTES      replicated payload broadcast first (200M)\n"
            "  --in-bytes N, --out-bytes N   bytes per item in and out (default 0)\n"
            "  --gather root|all|none        where the outputs end (default root)\n"
            "  --partitioned        each rank holds its range's inputs: steals move them\n"
            "  --min-chunk N        smallest grant (default 1)\n"
            "  --in-flight K        chunks a rank keeps granted ahead (default 2)\n"
            "  --chunk-div D        chunk = ungranted items x rate share / D (default 2)\n"
            "  --slow-node F[@RANK] one rank's chunks take F times longer, unknown to the\n"
            "                       split (default rank: the last)\n"
            "  --node-noise X       spread of chunk times, 0..1\n"
            "  --policy, --calibrated, --items, --seed apply as above (--calibrated: the\n"
            "  ranges split by throughput, as on a second run)\n"
            "example (pi, 1e6 terms per item, 8 to 64 nodes of 2 cores):\n"
            "  tandem simulate --nodes 8,16,32,64 --node cpu*2:tpi=2ms --items 100000 \\\n"
            "                  --net-bw 12.5G --net-lat 5us\n");
}

static int arg_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "tandem simulate: %s needs a value\n", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

/* A number with an optional unit: units[k].name (NULL-terminated list), units[0] being the
 * bare number's. */
typedef struct {
    const char *name;
    double factor;
} sim_unit;

static const sim_unit TIME_UNITS[] = {
    {"s", 1}, {"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {NULL, 0}};
static const sim_unit BYTE_UNITS[] = {{"", 1},       {"B", 1},      {"K", 1e3},     {"KB", 1e3},
                                      {"M", 1e6},    {"MB", 1e6},   {"G", 1e9},     {"GB", 1e9},
                                      {"T", 1e12},   {"TB", 1e12},  {"B/s", 1},     {"K/s", 1e3},
                                      {"KB/s", 1e3}, {"M/s", 1e6},  {"MB/s", 1e6},  {"G/s", 1e9},
                                      {"GB/s", 1e9}, {"T/s", 1e12}, {"TB/s", 1e12}, {NULL, 0}};

static int unit_value(const char *opt, const char *v, const sim_unit *units, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end != v && !errno && isfinite(d) && d >= 0) {
        if (*end == '\0') {
            *out = d * units[0].factor;
            return 0;
        }
        for (const sim_unit *u = units; u->name; u++) {
            if (!strcmp(end, u->name)) {
                *out = d * u->factor;
                return 0;
            }
        }
    }
    fprintf(stderr, "tandem simulate: %s: bad value '%s' (%s)\n", opt, v,
            units == TIME_UNITS ? "a time: 2us, 1ms, 0.5s" : "bytes: 8, 200M, 12.5G");
    return -1;
}

/* A whole number >= lo (1e9-style accepted). */
static int count_value(const char *opt, const char *v, double lo, int64_t *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno || !(d >= lo) || d > 9e18 || d != floor(d)) {
        fprintf(stderr, "tandem simulate: %s expects a whole number >= %g\n", opt, lo);
        return -1;
    }
    *out = (int64_t)d;
    return 0;
}

#define SIM_MAX_SWEEP 64

/* Everything the cluster options say. */
typedef struct {
    bool on;                   /* a cluster option was given */
    bool any_net;              /* an option that only means something for a cluster */
    tdm_sim_config node;       /* --node: the backends of every node */
    int counts[SIM_MAX_SWEEP]; /* --nodes */
    int n_counts;
    double slow_factor;
    int slow_rank; /* -1: the last */
} sim_cluster_opts;

static void sim_dur(char *buf, size_t len, double s)
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

static void sim_bytes(char *buf, size_t len, double b)
{
    if (b >= 1e9)
        snprintf(buf, len, "%.3g GB", b * 1e-9);
    else if (b >= 1e6)
        snprintf(buf, len, "%.3g MB", b * 1e-6);
    else if (b >= 1e3)
        snprintf(buf, len, "%.3g kB", b * 1e-3);
    else
        snprintf(buf, len, "%.3g B", b);
}

/* Runs the cluster what-if: one full report for one node count, a table for a sweep. */
static int run_cluster(tdm_sim_cluster_config *cc, const sim_cluster_opts *o)
{
    if (o->node.n_backends > 0 && cc->n_groups > 0) {
        fprintf(stderr, "tandem simulate: give either --node (one kind of node) or --node-group\n");
        return 2;
    }
    if (o->node.n_backends == 0 && cc->n_groups == 0) {
        fprintf(stderr, "tandem simulate: a cluster needs --node SPEC or --node-group "
                        "COUNT:SPEC\n\n");
        sim_usage(stderr);
        return 2;
    }
    int base[TDM_SIM_MAX_GROUPS], base_sum = 0;
    if (o->node.n_backends > 0) {
        cc->n_groups = 1;
        cc->groups[0].count = 1;
        cc->groups[0].node = o->node;
    }
    for (int g = 0; g < cc->n_groups; g++) {
        base[g] = cc->groups[g].count;
        base_sum += base[g];
    }
    int counts[SIM_MAX_SWEEP], n_counts = o->n_counts;
    if (n_counts == 0) {
        counts[0] = base_sum;
        n_counts = 1;
    } else {
        memcpy(counts, o->counts, sizeof counts);
    }
    for (int k = 0; k < n_counts; k++) {
        if (counts[k] % base_sum != 0) {
            fprintf(stderr,
                    "tandem simulate: --nodes %d is not a multiple of the groups' %d "
                    "nodes\n",
                    counts[k], base_sum);
            return 2;
        }
    }
    tdm_sim_node_result *nodes = NULL;
    char *text = NULL;
    int rc = 0;
    for (int k = 0; k < n_counts && rc == 0; k++) {
        int scale = counts[k] / base_sum;
        for (int g = 0; g < cc->n_groups; g++)
            cc->groups[g].count = base[g] * scale;
        if (o->slow_factor > 0) {
            cc->slow_node = o->slow_rank >= 0 ? o->slow_rank : counts[k] - 1;
            cc->slow_factor = o->slow_factor;
        }
        tdm_sim_node_result *more = realloc(nodes, (size_t)counts[k] * sizeof *nodes);
        if (!more) {
            fprintf(stderr, "tandem simulate: out of memory\n");
            rc = 1;
            break;
        }
        nodes = more;
        tdm_sim_cluster_result res;
        if (tdm_simulate_cluster(cc, &res, nodes, (size_t)counts[k]) != 0) {
            fprintf(stderr, "tandem simulate: %s\n", tdm_errmsg(NULL));
            rc = 1;
            break;
        }
        if (n_counts == 1) {
            /* one line per node up to 64 nodes */
            size_t shown = counts[k] <= 64 ? (size_t)counts[k] : 0;
            int need = tdm_sim_cluster_format(cc, &res, shown ? nodes : NULL, shown, NULL, 0);
            text = need > 0 ? malloc((size_t)need + 1) : NULL;
            if (!text) {
                rc = 1;
                break;
            }
            tdm_sim_cluster_format(cc, &res, shown ? nodes : NULL, shown, text, (size_t)need + 1);
            fputs(text, stdout);
            break;
        }
        if (k == 0) {
            char lat[32];
            sim_dur(lat, sizeof lat, cc->net_latency_s);
            printf("simulated cluster: %lld items, network %.4g GB/s + %s per message, %s split, "
                   "%s inputs (%g B/item in, %g out, gathered %s), payload %.4g MB\n",
                   (long long)cc->items, cc->net_bandwidth * 1e-9, lat,
                   cc->calibrated ? "calibrated" : "equal",
                   cc->partitioned ? "partitioned" : "replicated", cc->in_bytes_per_item,
                   cc->out_bytes_per_item,
                   cc->gather == TDM_SIM_GATHER_ROOT  ? "to rank 0"
                   : cc->gather == TDM_SIM_GATHER_ALL ? "to all"
                                                      : "nowhere",
                   cc->payload_bytes * 1e-6);
            if (o->slow_factor > 0)
                printf("one node slowed %gx (rank %s)\n", o->slow_factor,
                       o->slow_rank >= 0 ? "given" : "N-1");
            for (int g = 0; g < cc->n_groups; g++) {
                const tdm_sim_config *nd = &cc->groups[g].node;
                printf("node kind %d (%d in %d):", g, base[g], base_sum);
                for (int b = 0; b < nd->n_backends; b++)
                    printf(" %s*%d", nd->backends[b].name, nd->backends[b].count);
                printf(", %.4g items/s under its scheduler (%.1f%% of its lanes' sum)\n",
                       res.groups[g].rate, 100 * res.groups[g].rate / res.groups[g].lanes_rate);
            }
            printf("%6s %12s %12s %12s %12s %6s %9s %8s %7s %10s %7s\n", "nodes", "makespan",
                   "compute", "gather", "ideal", "effic", "speed-up", "grants", "steals", "moved",
                   "r0 busy");
        }
        char mk[32], cp[32], ga[32], id[32], mv[32];
        sim_bytes(mv, sizeof mv, res.steal_bytes);
        sim_dur(mk, sizeof mk, res.makespan_s);
        sim_dur(cp, sizeof cp, res.compute_s);
        sim_dur(ga, sizeof ga, res.gather_s);
        sim_dur(id, sizeof id, res.ideal_s);
        printf("%6d %12s %12s %12s %12s %6.3f %8.2fx %8lld %7lld %10s %6.1f%%\n", counts[k], mk, cp,
               ga, id, res.efficiency, res.speedup, (long long)res.grants, (long long)res.steals,
               mv, res.compute_s > 0 ? 100 * res.coord_busy_s / res.compute_s : 0.0);
    }
    free(text);
    free(nodes);
    return rc;
}

int tandem_cmd_simulate(int argc, char **argv)
{
    tdm_sim_config cfg = TDM_SIM_CONFIG_INIT;
    tdm_sim_cluster_config cc = TDM_SIM_CLUSTER_CONFIG_INIT;
    sim_cluster_opts co = {.node = TDM_SIM_CONFIG_INIT, .slow_rank = -1};
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int m;
        char err[256];
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            sim_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--calibrated")) {
            cfg.calibrated = 1;
        } else if ((m = arg_value(argc, argv, &i, "--backend", &v)) != 0) {
            if (m < 0)
                return 2;
            if (tdm_sim_add(&cfg, v, err, sizeof err) != 0) {
                fprintf(stderr, "tandem simulate: %s\n\n", err);
                sim_usage(stderr);
                return 2;
            }
        } else if ((m = arg_value(argc, argv, &i, "--items", &v)) != 0) {
            char *end;
            errno = 0;
            double d = m < 0 ? 0 : strtod(v, &end);
            if (m < 0 || end == v || *end || errno || !(d >= 1) || d > 9e18 || d != floor(d)) {
                fprintf(stderr, "tandem simulate: --items expects a whole number >= 1\n");
                return 2;
            }
            cfg.items = (int64_t)d;
        } else if ((m = arg_value(argc, argv, &i, "--policy", &v)) != 0) {
            if (m < 0)
                return 2;
            if (!strcmp(v, "auto"))
                cfg.policy = TDM_SIM_AUTO;
            else if (!strcmp(v, "eager"))
                cfg.policy = TDM_SIM_EAGER;
            else if (!strcmp(v, "round-robin") || !strcmp(v, "rr"))
                cfg.policy = TDM_SIM_ROUND_ROBIN;
            else {
                fprintf(stderr, "tandem simulate: unknown policy '%s' (auto, eager, round-robin)\n",
                        v);
                return 2;
            }
        } else if ((m = arg_value(argc, argv, &i, "--seed", &v)) != 0) {
            char *end;
            errno = 0;
            unsigned long long s = m < 0 ? 0 : strtoull(v, &end, 10);
            if (m < 0 || end == v || *end || errno) {
                fprintf(stderr, "tandem simulate: --seed expects an unsigned integer\n");
                return 2;
            }
            cfg.seed = s;
        } else if ((m = arg_value(argc, argv, &i, "--node-group", &v)) != 0) {
            if (m < 0)
                return 2;
            if (tdm_sim_cluster_add(&cc, v, err, sizeof err) != 0) {
                fprintf(stderr, "tandem simulate: --node-group: %s\n", err);
                return 2;
            }
            co.on = true;
        } else if ((m = arg_value(argc, argv, &i, "--nodes", &v)) != 0) {
            if (m < 0)
                return 2;
            co.n_counts = 0;
            for (const char *p = v;;) {
                char *end;
                errno = 0;
                long n = strtol(p, &end, 10);
                if (end == p || errno || n < 1 || n > TDM_SIM_MAX_NODES ||
                    (*end != ',' && *end != '\0') || co.n_counts == SIM_MAX_SWEEP) {
                    fprintf(stderr,
                            "tandem simulate: --nodes expects N[,N]... (each 1..%d, at "
                            "most %d)\n",
                            TDM_SIM_MAX_NODES, SIM_MAX_SWEEP);
                    return 2;
                }
                co.counts[co.n_counts++] = (int)n;
                if (*end == '\0')
                    break;
                p = end + 1;
            }
            co.on = true;
        } else if ((m = arg_value(argc, argv, &i, "--node", &v)) != 0) {
            if (m < 0)
                return 2;
            if (tdm_sim_add(&co.node, v, err, sizeof err) != 0) {
                fprintf(stderr, "tandem simulate: --node: %s\n\n", err);
                sim_usage(stderr);
                return 2;
            }
            co.on = true;
        } else if ((m = arg_value(argc, argv, &i, "--net-bw", &v)) != 0) {
            if (m < 0 || unit_value("--net-bw", v, BYTE_UNITS, &cc.net_bandwidth) < 0)
                return 2;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--net-lat", &v)) != 0) {
            if (m < 0 || unit_value("--net-lat", v, TIME_UNITS, &cc.net_latency_s) < 0)
                return 2;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--coord-service", &v)) != 0) {
            if (m < 0 || unit_value("--coord-service", v, TIME_UNITS, &cc.coord_service_s) < 0)
                return 2;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--payload", &v)) != 0) {
            if (m < 0 || unit_value("--payload", v, BYTE_UNITS, &cc.payload_bytes) < 0)
                return 2;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--in-bytes", &v)) != 0) {
            if (m < 0 || unit_value("--in-bytes", v, BYTE_UNITS, &cc.in_bytes_per_item) < 0)
                return 2;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--out-bytes", &v)) != 0) {
            if (m < 0 || unit_value("--out-bytes", v, BYTE_UNITS, &cc.out_bytes_per_item) < 0)
                return 2;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--gather", &v)) != 0) {
            if (m < 0)
                return 2;
            if (!strcmp(v, "root"))
                cc.gather = TDM_SIM_GATHER_ROOT;
            else if (!strcmp(v, "all"))
                cc.gather = TDM_SIM_GATHER_ALL;
            else if (!strcmp(v, "none"))
                cc.gather = TDM_SIM_GATHER_NONE;
            else {
                fprintf(stderr, "tandem simulate: unknown --gather '%s' (root, all, none)\n", v);
                return 2;
            }
            co.any_net = true;
        } else if (!strcmp(argv[i], "--partitioned")) {
            cc.partitioned = 1;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--min-chunk", &v)) != 0) {
            if (m < 0 || count_value("--min-chunk", v, 1, &cc.min_chunk) < 0)
                return 2;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--in-flight", &v)) != 0) {
            int64_t k = 0;
            if (m < 0 || count_value("--in-flight", v, 1, &k) < 0)
                return 2;
            if (k > TDM_SIM_MAX_IN_FLIGHT) {
                fprintf(stderr, "tandem simulate: --in-flight is at most %d\n",
                        TDM_SIM_MAX_IN_FLIGHT);
                return 2;
            }
            cc.max_in_flight = (int)k;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--chunk-div", &v)) != 0) {
            char *end;
            errno = 0;
            double d = m < 0 ? 0 : strtod(v, &end);
            if (m < 0 || end == v || *end || errno || !(d >= 1) || !isfinite(d)) {
                fprintf(stderr, "tandem simulate: --chunk-div expects a number >= 1\n");
                return 2;
            }
            cc.chunk_divisor = d;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--node-noise", &v)) != 0) {
            char *end;
            errno = 0;
            double d = m < 0 ? -1 : strtod(v, &end);
            if (m < 0 || end == v || *end || errno || !(d >= 0) || d >= 1) {
                fprintf(stderr, "tandem simulate: --node-noise expects a number in [0, 1)\n");
                return 2;
            }
            cc.node_noise = d;
            co.any_net = true;
        } else if ((m = arg_value(argc, argv, &i, "--slow-node", &v)) != 0) {
            char *end;
            errno = 0;
            double f = m < 0 ? 0 : strtod(v, &end);
            long rank = -1;
            bool okv = m >= 0 && end != v && !errno && f > 0 && isfinite(f);
            if (okv && *end == '@') {
                const char *r = end + 1;
                rank = strtol(r, &end, 10);
                okv = end != r && rank >= 0 && rank < TDM_SIM_MAX_NODES && !errno;
            }
            if (!okv || *end) {
                fprintf(stderr, "tandem simulate: --slow-node expects FACTOR[@RANK], e.g. 2 or "
                                "1.5@3\n");
                return 2;
            }
            co.slow_factor = f;
            co.slow_rank = (int)rank;
            co.any_net = true;
        } else {
            fprintf(stderr, "tandem simulate: unknown option '%s'\n\n", argv[i]);
            sim_usage(stderr);
            return 2;
        }
    }
    if (co.on || co.any_net) {
        if (cfg.n_backends > 0) {
            fprintf(stderr, "tandem simulate: a cluster's backends are given with --node or "
                            "--node-group, not --backend\n");
            return 2;
        }
        cc.items = cfg.items;
        cc.seed = cfg.seed;
        cc.calibrated = cfg.calibrated;
        co.node.policy = cfg.policy;
        co.node.seed = cfg.seed;
        for (int g = 0; g < cc.n_groups; g++) {
            cc.groups[g].node.policy = cfg.policy;
            cc.groups[g].node.seed = cfg.seed;
        }
        return run_cluster(&cc, &co);
    }
    if (cfg.n_backends == 0) {
        fprintf(stderr, "tandem simulate: give at least one --backend\n\n");
        sim_usage(stderr);
        return 2;
    }
    tdm_sim_result res;
    int rc = tdm_simulate(&cfg, &res);
    if (rc != 0) {
        fprintf(stderr, "tandem simulate: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    char text[8192];
    tdm_sim_format(&cfg, &res, text, sizeof text);
    fputs(text, stdout);
    return 0;
}
