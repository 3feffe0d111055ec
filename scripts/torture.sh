#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the worker-process torture suite (CTest label "torture") in a build directory and sums
# what it injected and found. Fails if any case failed.
# Usage: scripts/torture.sh [build-dir] [extra ctest args...]
#   TDM_TORTURE_SCALE=f scales the storms' durations (default 1; 0.25 in sanitizer builds).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-${TDM_BUILD_DIR:-build}}
shift || true
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
(cd "$DIR" && ctest -L torture -j "$(nproc)" --output-on-failure -V "$@") >"$LOG" 2>&1
RC=$?
set -e
grep -o 'torture [a-z_+0-9]*: .*' "$LOG" | sed 's/^/  /' || true
awk '
/torture [a-z_+0-9]*: faults/ {
    for (i = 1; i <= NF; i++) {
        if ($i == "faults") f += $(i + 1)
        if ($i == "(kills") k += $(i + 1)
        if ($i == "stops") s += $(i + 1)
        if ($i == "injected") j += $(i + 1)
        if ($i == "calls") c += $(i + 1)
        if ($i == "lost") lost += $(i + 1)
        if ($i == "wrong") wrong += $(i + 1)
        if ($i == "dup") dup += $(i + 1)
        if ($i == "unexpected") unexp += $(i + 1)
        if ($i == "hangs") hangs += $(i + 1)
        if ($i == "canary") canary += $(i + 1)
        if ($i == "leaks") { split($(i + 1), l, "/"); leaks += l[1] + l[2] + l[3] }
    }
    n++
}
END {
    printf "torture: %d cases, %d faults injected (%d SIGKILL, %d SIGSTOP, %d failing syscalls), %d calls; lost %d, wrong %d, duplicated %d, unexpected %d, hangs %d, leaks %d, canary hit %d\n", n, f, k, s, j, c, lost, wrong, dup, unexp, hangs, leaks, canary
}' "$LOG"
grep -E "tests passed|tests failed" "$LOG" | tail -1
exit $RC
