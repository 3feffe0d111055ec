#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Per-call cost of rt.map above the same tdm_map call made from C, in instructions counted by
# callgrind (the whole process, every thread): independent of how busy the machine is, unlike
# bench_map.py's timings. Each variant runs N1 and N2 calls; the difference / (N2 - N1) is the
# cost of one call.   Usage: bench/python/overhead_instructions.sh [python]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-build-python/venv/bin/python}
N1=100 N2=1100
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" bench/python/bench_map.py \
        --loop-only "$1" --calls "$2" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
declare -A per
for k in c py alloc; do
    a=$(count $k $N1); b=$(count $k $N2)
    per[$k]=$(( (b - a) / (N2 - N1) ))
done
echo "instructions per call (1,000 f64, exp_sinh, 1 thread):"
echo "  C tdm_map            ${per[c]}"
echo "  rt.map(out=y)        ${per[py]}   (+$(( per[py] - per[c] )) above C)"
echo "  rt.map (allocating)  ${per[alloc]}   (+$(( per[alloc] - per[c] )) above C)"
echo "(at 1 to 3 instructions per ns, 1,000 extra instructions are 0.3 to 1 us)"
