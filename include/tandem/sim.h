/* tandem — simulated backends on a virtual clock: what-if questions for the scheduler.
 *
 * A simulation runs the scheduler's own decision code (the one tdm_map uses per batch) over
 * modelled backends — a time per item, a fixed latency per batch, a link bandwidth and the
 * bytes each item moves — on a virtual clock. It is deterministic (same config and seed, same
 * result, on any machine) and fast: a simulated hour of 64 backends takes milliseconds.
 * `tandem simulate` is its command-line face. */
#ifndef TANDEM_SIM_H
#define TANDEM_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"

/** Backends (kinds of lane) in one simulation. */
#define TDM_SIM_MAX_BACKENDS 16
/** Lanes (cores, processes, devices) in all. */
#define TDM_SIM_MAX_LANES 1024

/** One simulated backend: `count` identical lanes, each running one batch at a time. A batch
 *  of n items on a lane takes latency_s + n * (ns_per_item * 1e-9 + bytes_per_item /
 *  bandwidth), times a seeded random factor when `noise` > 0. */
typedef struct tdm_sim_backend {
    char name[32];         /**< label, e.g. "cpu", "gpu" */
    int count;             /**< lanes, 1..TDM_SIM_MAX_LANES */
    double ns_per_item;    /**< compute time of one item on one lane, ns (> 0) */
    double latency_s;      /**< fixed cost of each batch (launch, hand-off), seconds (>= 0) */
    double bandwidth;      /**< bytes per second of its link; 0 = no transfers (host memory) */
    double bytes_per_item; /**< bytes each item moves over the link (with bandwidth > 0) */
    double noise;          /**< relative spread of batch times, 0..1 (uniform +-noise) */
    int outlier_every;     /**< every k-th batch of a lane is `outlier_factor` times slower;
                            *  0 = never (tests the model's robustness to outliers) */
    double outlier_factor;
} tdm_sim_backend;

/** How the simulated run places batches. */
typedef enum tdm_sim_policy {
    TDM_SIM_AUTO = 0,        /**< tandem's scheduler (what TDM_POLICY_AUTO does) */
    TDM_SIM_EAGER = 1,       /**< every free lane takes the next guided batch (greedy) */
    TDM_SIM_ROUND_ROBIN = 2, /**< fixed batches dealt to lanes in turn, whatever their speed */
} tdm_sim_policy;

#define TDM_SIM_CONFIG_VERSION 1u

/** A simulated run. Start from TDM_SIM_CONFIG_INIT and add backends with tdm_sim_add(). */
typedef struct tdm_sim_config {
    uint32_t size;    /**< sizeof(tdm_sim_config) */
    uint32_t version; /**< TDM_SIM_CONFIG_VERSION */
    int64_t items;    /**< items of the divisible map (> 0) */
    tdm_sim_policy policy;
    int calibrated;      /**< 1: lanes start with a calibrated model (a stored one, as on a
                          *  second run); 0: each explores first */
    int64_t batch_size;  /**< round-robin batch; 0 = items / (64 * lanes) */
    uint64_t seed;       /**< noise seed */
    int n_backends;
    tdm_sim_backend backends[TDM_SIM_MAX_BACKENDS];
} tdm_sim_config;

#define TDM_SIM_CONFIG_INIT                                                                        \
    {                                                                                              \
        .size = sizeof(tdm_sim_config), .version = TDM_SIM_CONFIG_VERSION, .items = 1000000,       \
        .calibrated = 0, .seed = 1                                                                 \
    }

/** Per-backend figures of a simulated run. */
typedef struct tdm_sim_backend_result {
    int64_t items;
    int64_t batches;
    double busy_s;      /**< sum over its lanes of time inside batches */
    double utilisation; /**< busy_s / (count * makespan) */
    double bytes_moved; /**< items * bytes_per_item when it has a link */
    double est_s;       /**< sum of the scheduler's estimates of its batches (AUTO) */
    double alone_s;     /**< makespan of the whole map on this backend alone (same policy) */
} tdm_sim_backend_result;

/** The result of tdm_simulate(). A plain value. */
typedef struct tdm_sim_result {
    double makespan_s;    /**< virtual time until the last batch ended */
    double ideal_s;       /**< lower bound: every lane busy from its latency to one common end
                           *  (sum of throughputs, transfers included) */
    double best_single_s; /**< the best backend alone */
    int best_single;      /**< its index */
    int64_t batches;      /**< batches run */
    int64_t declines;     /**< times a free lane left work to a faster one (AUTO) */
    int64_t explorations; /**< exploration batches of uncalibrated lanes */
    double host_s;        /**< real seconds the simulation took */
    int n_backends;
    tdm_sim_backend_result backends[TDM_SIM_MAX_BACKENDS];
} tdm_sim_result;

TDM_BEGIN_DECLS

/** Adds a backend described by `spec` to cfg:
 *  "NAME[*COUNT][:key=value]..." with keys tpi (time per item: "100ns", "2us", "1e-6s"; a bare
 *  number is ns), lat (latency per batch: "20us"), bw (bytes/s: "25G", "12e9"), bytes (bytes
 *  per item), noise (0..1), outlier ("EVERY/FACTOR", e.g. "50/20").
 *  Example: "gpu*8:tpi=10ns:lat=20us:bw=25G:bytes=8". Returns 0, or TDM_EINVAL (NULL, a
 *  malformed spec, a bad value, too many backends or lanes) with the reason in err (may be
 *  NULL). Thread-safe (touches only cfg). */
TDM_EXTERN int tdm_sim_add(tdm_sim_config *cfg, const char *spec, char *err, size_t err_len);

/** Runs the simulation. Returns 0 and fills *res; TDM_EINVAL (NULL, bad size/version, no
 *  backend, items <= 0, a backend whose figures are out of range), TDM_ENOMEM. Deterministic:
 *  the same config gives the same result (host_s aside). Thread-safe. */
TDM_EXTERN int tdm_simulate(const tdm_sim_config *cfg, tdm_sim_result *res);

/** Formats a result as the text `tandem simulate` prints (backends, utilisation, makespan,
 *  ideal, ratios) into buf (NUL-terminated when buf_len > 0). Returns the length the whole
 *  text needs (like snprintf) or TDM_EINVAL. Thread-safe. */
TDM_EXTERN int tdm_sim_format(const tdm_sim_config *cfg, const tdm_sim_result *res, char *buf,
                              size_t buf_len);

TDM_END_DECLS

#endif
