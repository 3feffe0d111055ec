#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds tandem (if needed) and runs the whole test suite: the C tests with CTest, then the
# Python package's tests (scripts/test-python.sh: a venv in build-python/, pip install ./python,
# pytest).
# Usage: scripts/test.sh [--sanitize address,undefined|thread] [ctest args...]
# With --sanitize (or ctest arguments, or TDM_TEST_PYTHON=0) only the C tests run; the Python
# tests under ASan are scripts/test-python.sh --asan.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SAN=""
if [ "${1:-}" = "--sanitize" ]; then SAN=$2; shift 2; fi
if [ -n "$SAN" ]; then
    export TDM_BUILD_DIR=${TDM_BUILD_DIR:-build-${SAN//,/-}}
    # Sanitizer builds never run CUDA code here: one GPU architecture is enough to keep the
    # CUDA sources compiling (CUDAARCHS is read when the build directory is first configured).
    export CUDAARCHS=${CUDAARCHS:-90}
    scripts/build.sh -DTDM_SANITIZE="$SAN" -DTDM_BUILD_BENCH=OFF
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    # intercept_tls_get_addr=0: up to GCC 13, the runtime's __tls_get_addr interceptor can take
    # a malloc'd dynamic TLS block (PoCL's and LLVM's) for an old glibc header and hand
    # LeakSanitizer a bogus range, and its tracer segfaults at exit after the test has passed
    # ("Tracer caught signal 11 ... LeakSanitizer has encountered a fatal error").
    # use_sigaltstack=0: LLVM (PoCL's compiler) gives the thread it compiles on an alternate
    # signal stack of its own, malloc'd (72 KiB), when that thread has none or a smaller one
    # (ASan's are 32 KiB). When the thread ends, ASan munmaps the stack it finds there, LLVM's
    # heap block: EINVAL, and the process aborts ("AddressSanitizer failed to deallocate ...
    # unable to unmap"). Seen on an AMD EPYC 7xx3 VM (no AVX-512) in every test whose devices
    # open on a background thread; earlier machines did not show it.
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:intercept_tls_get_addr=0:use_sigaltstack=0
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
else
    scripts/build.sh
fi
(cd "${TDM_BUILD_DIR:-build}" && ctest --output-on-failure -j "$(nproc)" "$@")
if [ -z "$SAN" ] && [ $# -eq 0 ] && [ "${TDM_TEST_PYTHON:-1}" != 0 ]; then
    echo "=== the Python package (scripts/test-python.sh) ==="
    scripts/test-python.sh
fi
