/* `tandem simulate`: what-if questions answered on simulated backends (tandem/sim.h).
 *
 *   tandem simulate --items 1e9 --backend cpu*32:tpi=200ns \
 *                   --backend gpu*8:tpi=5ns:lat=20us:bw=25G:bytes=16
 *
 * prints the makespan under tandem's scheduler, per-backend share and utilisation, the ideal
 * (sum of throughputs) and the best single backend. Uses only the public API. */
#include <errno.h>
#include <math.h>
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
            "                  --backend gpu*8:tpi=4ns:lat=20us:bw=25G:bytes=16\n");
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

int tandem_cmd_simulate(int argc, char **argv)
{
    tdm_sim_config cfg = TDM_SIM_CONFIG_INIT;
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
        } else {
            fprintf(stderr, "tandem simulate: unknown option '%s'\n\n", argv[i]);
            sim_usage(stderr);
            return 2;
        }
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
