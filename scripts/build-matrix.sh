#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures and builds tandem with gcc and clang in every CMake build type (Debug, Release,
# RelWithDebInfo, MinSizeRel), warnings as errors, benchmarks, samples and tests included (the
# tests are built, not run), into build-matrix/<cc>-<type>.
# nvcc is slow and does not depend on the C compiler's build type: only gcc-RelWithDebInfo
# compiles the CUDA code (when nvcc is found); the seven others are configured with
# -DTDM_WITH_CUDA=OFF.
# Usage: scripts/build-matrix.sh [cc ...]   (default: gcc clang; TDM_MATRIX_TYPES overrides
#        the build types, TDM_MATRIX_JOBS the parallel jobs)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDACXX=/usr/local/cuda/bin/nvcc
fi
CCS=("$@")
if [ ${#CCS[@]} -eq 0 ]; then CCS=(gcc clang); fi
TYPES=(${TDM_MATRIX_TYPES:-Debug Release RelWithDebInfo MinSizeRel})
JOBS=${TDM_MATRIX_JOBS:-$(nproc)}
GEN=()
KEEP=() # with Ninja, report every failing file, not just the first
if command -v ninja >/dev/null; then GEN=(-G Ninja); KEEP=(-- -k 0); fi
mkdir -p build-matrix
start=$(date +%s)
for cc in "${CCS[@]}"; do
    case $cc in
        gcc) cxx=g++ ;;
        clang) cxx=clang++ ;;
        *) cxx=${CXX:-c++} ;;
    esac
    for type in "${TYPES[@]}"; do
        dir=build-matrix/$cc-$type
        cuda=OFF
        if [ "$cc" = gcc ] && [ "$type" = RelWithDebInfo ]; then cuda=AUTO; fi
        t0=$(date +%s)
        CC=$cc CXX=$cxx cmake -S . -B "$dir" "${GEN[@]}" -DCMAKE_BUILD_TYPE="$type" \
            -DTDM_WERROR=ON -DTDM_BUILD_BENCH=ON -DTDM_BUILD_SAMPLES=ON -DTDM_BUILD_TESTS=ON \
            -DTDM_WITH_CUDA=$cuda >"$dir.configure.log" 2>&1 ||
            { cat "$dir.configure.log"; echo "build-matrix: $cc $type: configure failed"; exit 1; }
        if ! cmake --build "$dir" -j "$JOBS" "${KEEP[@]}" >"$dir.build.log" 2>&1; then
            grep -E -A6 'error|warning' "$dir.build.log" | head -n 200
            echo "build-matrix: $cc $type: build failed (log: $dir.build.log)"
            exit 1
        fi
        echo "build-matrix: $cc $type (CUDA $cuda): ok in $(($(date +%s) - t0)) s"
    done
done
echo "build-matrix: ${#CCS[@]} compiler(s) x ${#TYPES[@]} build type(s) built warning-free in $(($(date +%s) - start)) s"
