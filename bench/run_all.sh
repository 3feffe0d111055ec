#!/bin/sh
# Runs every benchmark from a build directory and prints everything. Builds nothing.
#   bench/run_all.sh <build dir> [extra options passed to every benchmark]
# Each benchmark repeats its measurements and quotes medians; expect a few minutes in all.
set -u
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 <build dir> [options for every benchmark]" >&2
    exit 2
fi
dir=$1
shift
status=0
for b in bench_dispatch bench_exp_sinh bench_pi bench_progress bench_idle; do
    exe=$dir/bench/$b
    if [ ! -x "$exe" ]; then
        echo "$b: not built ($exe missing)" >&2
        status=1
        continue
    fi
    echo
    "$exe" "$@"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "$b: exit $rc" >&2
        status=1
    fi
done
exit $status
