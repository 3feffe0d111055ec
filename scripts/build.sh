#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures and builds tandem into build/ (or $TDM_BUILD_DIR), warnings as errors.
# CUDA code is compiled when nvcc is found (/usr/local/cuda/bin/nvcc is looked for too).
# Extra arguments go to CMake, e.g. scripts/build.sh -DTDM_SANITIZE=thread
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TDM_BUILD_DIR:-build}
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDACXX=/usr/local/cuda/bin/nvcc
fi
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTDM_WERROR=ON "$@"
cmake --build "$BUILD" -j "$(nproc)"
