/* SPDX-License-Identifier: MIT */
/* tandem — simulated backends on a virtual clock: what-if questions for the scheduler.
 *
 * A simulation runs the scheduler's own decision code (the one tdm_map uses per batch) over
 * modelled backends — a time per item, a fixed latency per batch, a link bandwidth and the
 * bytes each item moves — on a virtual clock. It is deterministic (same config and seed, same
 * result, on any machine) and fast: a simulated hour of 64 backends takes milliseconds.
 * tdm_simulate_cluster() (below) runs the distributed map's protocol over N such nodes on a
 * network. `tandem simulate` is their command-line face. */
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
    double outlier_factor; /**< how much slower an outlier batch is (> 0) */
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
    tdm_sim_policy policy; /**< how batches are placed (TDM_SIM_AUTO: tandem's scheduler) */
    int calibrated;      /**< 1: lanes start with a calibrated model (a stored one, as on a
                          *  second run); 0: each explores first */
    int64_t batch_size;  /**< round-robin batch; 0 = items / (64 * lanes) */
    uint64_t seed;       /**< noise seed */
    int n_backends;                                 /**< entries used in backends[] */
    tdm_sim_backend backends[TDM_SIM_MAX_BACKENDS]; /**< added with tdm_sim_add() */
} tdm_sim_config;

#ifdef __cplusplus
#define TDM_SIM_CONFIG_INIT                                                                        \
    ([] {                                                                                          \
        tdm_sim_config tdm_v_ = tdm_sim_config();                                                  \
        tdm_v_.size = sizeof(tdm_sim_config);                                                      \
        tdm_v_.version = TDM_SIM_CONFIG_VERSION;                                                   \
        tdm_v_.items = 1000000;                                                                    \
        tdm_v_.seed = 1;                                                                           \
        return tdm_v_;                                                                             \
    }())
#else
#define TDM_SIM_CONFIG_INIT                                                                        \
    {                                                                                              \
        .size = sizeof(tdm_sim_config), .version = TDM_SIM_CONFIG_VERSION, .items = 1000000,       \
        .calibrated = 0, .seed = 1                                                                 \
    }
#endif

/** Per-backend figures of a simulated run. */
typedef struct tdm_sim_backend_result {
    int64_t items;      /**< items it ran */
    int64_t batches;    /**< batches it ran */
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
    int n_backends;                                        /**< entries used in backends[] */
    tdm_sim_backend_result backends[TDM_SIM_MAX_BACKENDS]; /**< per backend, config order */
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

/* ---- Clusters: the same map over N nodes (tdm_simulate_cluster) ------------------------------
 *
 * A what-if for the distributed map (tandem/dist.h) before the cluster exists: N nodes, each a
 * set of simulated backends as above, joined by a network of one bandwidth and one latency.
 * The simulation follows the distributed map's protocol, on a virtual clock:
 *
 * - Ranks 0..N-1, one per node, in group order; rank 0 is the coordinator and computes too.
 * - A replicated payload of `payload_bytes` is broadcast from rank 0 first (binomial tree:
 *   ceil(log2 N) rounds of latency + payload / bandwidth).
 * - Each rank owns a contiguous range of the items, split in proportion to its group's
 *   throughput (`calibrated`) or equally (the first run).
 * - A rank keeps up to 2 chunks in flight (`max_in_flight`); with fewer it asks rank 0 for a
 *   grant (a round trip of 2 latencies plus `coord_service_s` at rank 0, which serves requests
 *   one at a time; rank 0's own requests skip the network). It computes its chunks one after
 *   another. Chunk = max(min_chunk, ceil(R * rate_r / sum(rate) / D)) with R the items not
 *   yet granted anywhere, capped by what is left of the rank's range; D = 4 when rate_r is
 *   known (measured, or the group's with `calibrated`), 16 while it is a guess
 *   (`chunk_divisor` overrides both); min_chunk defaults to 2 ms of the rank's known rate
 *   (else 1). rate_r is the rank's measured throughput once it has finished a chunk (the
 *   request carries it; the real ranks report it a little earlier, with their first finished
 *   batches), before that its group's (`calibrated`) or the mean of those measured (else all
 *   equal).
 * - A rank whose range is empty steals: rank 0 moves the back of the ungranted part of the
 *   rank with the largest remaining time (ungranted items / rate, at least 2 items) into the
 *   thief's range, split so that both would end together: in proportion to the two ranks'
 *   rates, less when the rows must travel (partitioned, not the thief's own rows: each
 *   stolen item then costs the thief its transfer at the network's bandwidth too; the real
 *   coordinator uses the bandwidth it has seen), and grants from it. With `partitioned` inputs, the stolen items' input
 *   bytes travel victim -> thief (the thief's chunks wait for them) and each finished chunk's
 *   output bytes travel back to the items' home rank; replicated inputs move nothing.
 * - A chunk of n items on a node takes T(n) * k * (slow factor) * (1 +- node_noise): T(n) the
 *   shortest time in which the node's lanes finish n whole items (each lane pays its latency
 *   once), k = (the lanes' summed throughput) / (the node's throughput under its own scheduler,
 *   tdm_simulate() of the whole map on one node of the group): k >= 1 carries the local
 *   scheduler's exploration, batch latencies and tail into every chunk.
 * - Then, after the last chunk (a barrier): the outputs are gathered to rank 0 through its one
 *   link (per sending rank: latency + its out bytes / bandwidth, one after another), gathered
 *   and broadcast to all (binomial tree of the whole output), or left where they are.
 * Links: control messages cost latency only; data transfers hold the sender's and the
 * receiver's link (full duplex) for bytes / bandwidth and arrive one latency later. */

/** Node groups (kinds of node) in one cluster. */
#define TDM_SIM_MAX_GROUPS 8
/** Nodes (ranks) in all. */
#define TDM_SIM_MAX_NODES 4096
/** Chunks a rank may keep in flight. */
#define TDM_SIM_MAX_IN_FLIGHT 8

/** Where the outputs end up. */
typedef enum tdm_sim_gather {
    TDM_SIM_GATHER_ROOT = 0, /**< all on rank 0 */
    TDM_SIM_GATHER_ALL = 1,  /**< all on every rank (gathered to rank 0, then broadcast) */
    TDM_SIM_GATHER_NONE = 2, /**< left on the ranks that hold them */
} tdm_sim_gather;

/** `count` identical nodes whose backends are `node` (start it from TDM_SIM_CONFIG_INIT and
 *  tdm_sim_add(), or use tdm_sim_cluster_add()). node.items is ignored (the cluster's items
 *  are used); node.policy, node.seed and node.calibrated (forced on by the cluster's
 *  `calibrated`) apply to the node's own scheduler. */
typedef struct tdm_sim_node_group {
    int count;           /**< nodes in the group */
    tdm_sim_config node; /**< the backends of each of them */
} tdm_sim_node_group;

#define TDM_SIM_CLUSTER_CONFIG_VERSION 1u

/** A simulated cluster run. Start from TDM_SIM_CLUSTER_CONFIG_INIT and add node groups with
 *  tdm_sim_cluster_add(). */
typedef struct tdm_sim_cluster_config {
    uint32_t size;             /**< sizeof(tdm_sim_cluster_config) */
    uint32_t version;          /**< TDM_SIM_CLUSTER_CONFIG_VERSION */
    int64_t items;             /**< items of the map (> 0) */
    double net_bandwidth;      /**< bytes per second of each node's link (> 0) */
    double net_latency_s;      /**< one-way latency of a message, seconds (>= 0) */
    double coord_service_s;    /**< rank 0's time to serve one request (>= 0; INIT: 5 us) */
    double payload_bytes;      /**< replicated payload broadcast before the map (>= 0) */
    double in_bytes_per_item;  /**< input bytes of an item (moved by steals when partitioned) */
    double out_bytes_per_item; /**< output bytes of an item (gathered) */
    tdm_sim_gather gather;     /**< where the outputs end (root, all, none) */
    int partitioned;      /**< 1: each rank holds the inputs of its own range (they move when
                           *  stolen); 0: inputs replicated (or computed), nothing moves */
    int calibrated;       /**< 1: ranges split by the groups' throughputs, nodes' schedulers
                           *  calibrated (a second run); 0: equal split */
    int64_t min_chunk;    /**< smallest chunk a grant gives (0 = 2 ms of the rank's rate when
                           *  known, else 1) */
    int max_in_flight;    /**< chunks a rank keeps granted ahead, 1..TDM_SIM_MAX_IN_FLIGHT (0 = 2,
                           *  the protocol's) */
    double chunk_divisor; /**< chunk = ungranted * rate share / this, >= 1 (0 = the protocol's:
                           *  4 for a known rate, 16 for a guess): what-ifs for the protocol */
    double node_noise;    /**< relative spread of each chunk's time, [0, 1) (uniform +-) */
    int slow_node;        /**< a rank whose chunks take `slow_factor` times longer, unknown to
                           *  the split (a noisy neighbour); -1 = none */
    double slow_factor;   /**< > 0 */
    uint64_t seed;        /**< noise seed */
    int n_groups;                                  /**< entries used in groups[] */
    tdm_sim_node_group groups[TDM_SIM_MAX_GROUPS]; /**< added with tdm_sim_cluster_add() */
} tdm_sim_cluster_config;

#ifdef __cplusplus
#define TDM_SIM_CLUSTER_CONFIG_INIT                                                                \
    ([] {                                                                                          \
        tdm_sim_cluster_config tdm_v_ = tdm_sim_cluster_config();                                  \
        tdm_v_.size = sizeof(tdm_sim_cluster_config);                                              \
        tdm_v_.version = TDM_SIM_CLUSTER_CONFIG_VERSION;                                           \
        tdm_v_.items = 1000000;                                                                    \
        tdm_v_.net_bandwidth = 12.5e9;                                                             \
        tdm_v_.net_latency_s = 2e-6;                                                               \
        tdm_v_.coord_service_s = 5e-6;                                                             \
        tdm_v_.slow_node = -1;                                                                     \
        tdm_v_.slow_factor = 1;                                                                    \
        tdm_v_.seed = 1;                                                                           \
        return tdm_v_;                                                                             \
    }())
#else
#define TDM_SIM_CLUSTER_CONFIG_INIT                                                                \
    {                                                                                              \
        .size = sizeof(tdm_sim_cluster_config), .version = TDM_SIM_CLUSTER_CONFIG_VERSION,         \
        .items = 1000000, .net_bandwidth = 12.5e9, .net_latency_s = 2e-6, .coord_service_s = 5e-6, \
        .min_chunk = 0, .slow_node = -1, .slow_factor = 1, .seed = 1                               \
    }
#endif

/** One node's figures in a cluster run. */
typedef struct tdm_sim_node_result {
    int group;            /**< its group */
    double rate;          /**< items per second it computes at (slow factor included) */
    int64_t items;        /**< items it computed */
    int64_t chunks;       /**< chunks it was granted */
    double busy_s;        /**< time inside chunks */
    int64_t steals;       /**< ranges it stole (as the thief) */
    int64_t stolen_items; /**< items other ranks stole from its range */
    double end_s;         /**< when its last chunk ended, from the start of the run */
} tdm_sim_node_result;

/** One node group's figures in a cluster run. */
typedef struct tdm_sim_group_result {
    double rate;       /**< items/s of one of its nodes under the node's scheduler (simulated
                        *  on the whole map: items / makespan) */
    double lanes_rate; /**< items/s of its lanes summed (the bound the rate approaches) */
    int64_t items;     /**< items its nodes computed */
    double busy_s;     /**< their time inside chunks */
    int64_t steals;    /**< ranges they stole */
} tdm_sim_group_result;

/** The result of tdm_simulate_cluster(). A plain value. makespan_s = broadcast_s + compute_s
 *  + gather_s. Efficiency is the speedup over one node of the first group (unslowed, no
 *  network: single_s) divided by the ideal speedup (sum of the nodes' rates / that node's
 *  rate), which is ideal_s / makespan_s with ideal_s = items / sum of the nodes' rates. */
typedef struct tdm_sim_cluster_result {
    int nodes;            /**< ranks */
    double makespan_s;    /**< virtual time from the start to the outputs in place */
    double broadcast_s;   /**< the payload's broadcast */
    double compute_s;     /**< from the broadcast's end to the last chunk and output moved */
    double gather_s;      /**< the gather (and broadcast of the outputs with GATHER_ALL) */
    double ideal_s;       /**< items / sum of the nodes' rates: no network, perfect balance */
    double single_s;      /**< items / the rate of one node of the first group */
    double speedup;       /**< single_s / makespan_s */
    double ideal_speedup; /**< single_s / ideal_s */
    double efficiency;    /**< speedup / ideal_speedup = ideal_s / makespan_s */
    int64_t requests;     /**< requests rank 0 served (grants + steals + "no more work") */
    int64_t grants;       /**< chunks granted */
    int64_t steals;       /**< ranges stolen */
    double coord_busy_s;  /**< rank 0's time serving requests */
    double steal_bytes;   /**< bytes moved because of steals (partitioned: inputs + outputs) */
    double gather_bytes;  /**< bytes rank 0 received in the gather */
    double host_s;        /**< real seconds the simulation took */
    int n_groups;                                    /**< entries used in groups[] */
    tdm_sim_group_result groups[TDM_SIM_MAX_GROUPS]; /**< per node group, config order */
} tdm_sim_cluster_result;

TDM_BEGIN_DECLS

/** Adds a node group described by `group` to cfg: "COUNT:SPEC[;SPEC]...", each SPEC a backend
 *  of one node in tdm_sim_add()'s syntax. Example: "4:cpu*32:tpi=10ns;gpu:tpi=1ns:lat=20us".
 *  Returns 0, or TDM_EINVAL (NULL, bad size/version, a malformed group or spec, too many
 *  groups or nodes) with the reason in err (may be NULL); cfg is unchanged on error.
 *  Thread-safe (touches only cfg). */
TDM_EXTERN int tdm_sim_cluster_add(tdm_sim_cluster_config *cfg, const char *group, char *err,
                                   size_t err_len);

/** Runs the cluster simulation. Fills *res and, when `nodes` is not NULL, nodes[0..N-1] (N =
 *  the sum of the groups' counts; n_nodes must be at least N). Returns 0; TDM_EINVAL (NULL
 *  cfg or res, bad size/version, no group, a group with count < 1 or a node config that
 *  tdm_simulate() refuses, more than TDM_SIM_MAX_NODES nodes, items <= 0, bandwidth <= 0,
 *  a negative or non-finite latency, service time, byte count or min_chunk, noise outside
 *  [0, 1), max_in_flight outside 0..TDM_SIM_MAX_IN_FLIGHT, chunk_divisor neither 0 nor
 *  >= 1, an unknown gather mode, slow_node outside -1..N-1, slow_factor <= 0, n_nodes < N);
 *  TDM_ENOMEM. The message is in tdm_errmsg(NULL). Deterministic: the same config gives the
 *  same result (host_s aside). Cost: one tdm_simulate() per group, then O(chunks log chunks)
 *  (64 nodes of 32 cores and 1e9 items: about 0.1 s, nearly all of it the node's own
 *  simulation). Thread-safe. */
TDM_EXTERN int tdm_simulate_cluster(const tdm_sim_cluster_config *cfg, tdm_sim_cluster_result *res,
                                    tdm_sim_node_result *nodes, size_t n_nodes);

/** Formats a cluster result as text (network, groups and their rates, the time split,
 *  efficiency, grants and steals; one line per node when `nodes` is given with n_nodes >=
 *  res->nodes) into buf (NUL-terminated when buf_len > 0). Returns the length the whole text
 *  needs (like snprintf) or TDM_EINVAL (NULL cfg or res, NULL buf with buf_len > 0).
 *  Thread-safe. */
TDM_EXTERN int tdm_sim_cluster_format(const tdm_sim_cluster_config *cfg,
                                      const tdm_sim_cluster_result *res,
                                      const tdm_sim_node_result *nodes, size_t n_nodes, char *buf,
                                      size_t buf_len);

TDM_END_DECLS

#endif
