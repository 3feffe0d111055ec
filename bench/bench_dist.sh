#!/bin/sh
# SPDX-License-Identifier: MIT
# The distributed benchmark at 1, 2 and 4 ranks on this machine (loopback), with the efficiency
# of each rank count against one rank (T1 / (N * TN) for the same total work), then the
# predicted efficiency at 8-64 nodes from `tandem simulate`, fed with the per-rank rates
# measured here.
#   bench/bench_dist.sh <build dir> [options for bench_dist, e.g. --threads 1 --reps 5]
# Ranks share this machine's cores: with more ranks than cores the efficiency measures the
# oversubscription, not the network. `--threads 1` gives each rank one core's worth.
set -u
if [ $# -lt 1 ] || [ ! -x "$1/bench/bench_dist" ]; then
    echo "usage: $0 <build dir with bench/bench_dist> [bench_dist options]" >&2
    exit 2
fi
dir=$1
shift
export OMPI_MCA_btl_vader_single_copy_mechanism=none
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for n in 1 2 4; do
    if [ "$n" = 1 ]; then
        "$dir/bench/bench_dist" "$@" | tee -a "$out" || exit 1
    else
        mpirun --oversubscribe --allow-run-as-root -np "$n" "$dir/bench/bench_dist" "$@" |
            tee -a "$out" || exit 1
    fi
done
echo
echo "efficiency against one rank (T1 / (N x TN)), cores on this machine: $(nproc)"
for w in pi exp_sinh; do
    awk -v w="$w" '
        $1 == "dist:" && $2 == "workload=" w {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            t[f["ranks"]] = f["wall_s"]
        }
        END {
            for (n = 1; n <= 4; n *= 2)
                if (t[n] > 0)
                    printf "  %-9s %d rank(s): %.4f s, speed-up %.2fx, efficiency %.2f\n", w, n,
                           t[n], t[1] / t[n], t[1] / (n * t[n])
        }' "$out"
done
echo "uneven ranks (last rank 4x slower): compute time / ideal split for the rates shown"
awk '$1 == "dist:" && $2 == "workload=uneven" { print "  " $0 }' "$out" | sed 's/dist: workload=uneven //'
# Predicted efficiency at 8-64 nodes: nodes like this one's rank (its measured pi rate), on a
# 10 Gbit/s network with 5 us latency (tandem simulate --nodes; see README).
if "$dir/tools/tandem" simulate --help 2>&1 | grep -q -- "--nodes"; then
    rate=$(awk '$1 == "dist:" && $2 == "workload=pi" && $3 == "ranks=1" {
                 for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "items_per_s") print kv[2] } }' "$out")
    erate=$(awk '$1 == "dist:" && $2 == "workload=exp_sinh" && $3 == "ranks=1" {
                 for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "melem_per_s") print kv[2] } }' "$out")
    if [ -n "$rate" ] && [ -n "$erate" ]; then
        tpi=$(awk -v r="$rate" 'BEGIN { printf "%.0fns", 1e9 / r }')
        etpi=$(awk -v r="$erate" 'BEGIN { printf "%.3fns", 1e3 / r }')
        echo
        echo "simulated: pi, nodes of one lane at ${tpi} per item (this machine, 1 rank), 100000 items, 10G/5us"
        "$dir/tools/tandem" simulate --nodes 1,8,16,32,64 --node "cpu:tpi=$tpi" --items 100000 \
            --net-bw 1.25G --net-lat 5us --out-bytes 8
        echo
        echo "simulated: exp_sinh, nodes of one lane at ${etpi} per element, 1e9 elements, gathered, 10G/5us"
        "$dir/tools/tandem" simulate --nodes 1,8,16,32,64 --node "cpu:tpi=$etpi" --items 1000000000 \
            --net-bw 1.25G --net-lat 5us --in-bytes 8 --out-bytes 8
        echo
        echo "simulated: the same, rows partitioned and results left where they are (no gather)"
        "$dir/tools/tandem" simulate --nodes 1,8,16,32,64 --node "cpu:tpi=$etpi" --items 1000000000 \
            --net-bw 1.25G --net-lat 5us --in-bytes 8 --out-bytes 8 --partitioned --gather none
    fi
fi
