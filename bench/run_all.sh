#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every benchmark from a build directory and prints everything. Builds nothing.
#   bench/run_all.sh <build dir> [extra options passed to every benchmark]
# Each benchmark repeats its measurements and quotes medians; expect a few minutes in all.
# Ends with one summary table: every target line the benchmarks printed ("target: ..."), with
# its figure and whether this run met it.
set -u
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 <build dir> [options for every benchmark]" >&2
    exit 2
fi
dir=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_all() {
status=0
for b in bench_dispatch bench_exp_sinh bench_pi bench_progress bench_idle bench_autobatch bench_stream bench_procs bench_devices; do
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
# bench_opencl: only in builds with OpenCL (TDM_HAVE_OPENCL); it prints "skipped" without a device.
if [ -x "$dir/bench/bench_opencl" ]; then
    echo
    "$dir/bench/bench_opencl" "$@"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "bench_opencl: exit $rc" >&2
        status=1
    fi
fi
# bench_matmul: only in builds with OpenCL, like bench_opencl.
if [ -x "$dir/bench/bench_matmul" ]; then
    echo
    "$dir/bench/bench_matmul" "$@"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "bench_matmul: exit $rc" >&2
        status=1
    fi
fi
# bench_cuda: only in builds with CUDA (TDM_HAVE_CUDA); it prints "no CUDA device" without one.
if [ -x "$dir/bench/bench_cuda" ]; then
    echo
    "$dir/bench/bench_cuda" "$@"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "bench_cuda: exit $rc" >&2
        status=1
    fi
fi
# bench_io: tensor files and the result cache; through bench_io.py (NumPy and joblib timed in
# the same run) when python3 has numpy, else alone.
if [ -x "$dir/bench/bench_io" ]; then
    echo
    py=python3
    $py -c "import numpy" 2>/dev/null || py=/usr/bin/python3
    if $py -c "import numpy" 2>/dev/null; then
        $py "$(dirname "$0")/bench_io.py" "$dir"
    else
        "$dir/bench/bench_io"
    fi
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "bench_io: exit $rc" >&2
        status=1
    fi
fi
echo; "$dir/bench/bench_sched" "$@" || { echo "bench_sched: exit $?" >&2; status=1; } # the scheduler: AUTO vs CPU / OpenCL alone, decision cost
return $status
}
run_all "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo
echo "== summary: every target of this run (figure = the measured value; see each benchmark above)"
grep '^target:' "$log" | sed 's/^target: //'
n_all=$(grep -c '^target:' "$log")
n_not=$(grep -c '^target:.*NOT met$' "$log")
echo "$((n_all - n_not)) of $n_all targets met, $n_not not met"
exit "$status"
