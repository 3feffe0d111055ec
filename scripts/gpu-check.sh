#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The first run of tandem's CUDA backend on a GPU, in one command (target: under 10 minutes on
# an H100/H200), from the repository root, on a machine with only the CUDA toolkit and a
# driver. Lean build: CUDA ON, OpenCL, JPEG and MPI OFF, so only cmake, a C compiler and
# cmocka are needed (the script says what to install when one is missing).
#
#   1. versions: GPU, driver, toolkit, NVRTC, compute capability
#   2. build with CUDA ON (build-gpu/), then ASan+UBSan (build-gpu-asan/)
#   3. the fatbin's images (cuobjdump; pip's nvidia-cuda-cuobjdump when absent, if online)
#   4. every cuda_*, device_cuda_* and device_fault_*_cuda test: any skip FAILS the check
#   5. the same tests under ASan+UBSan (ASAN_OPTIONS=protect_shadow_gap=0: the driver maps
#      memory where ASan's shadow gap would be)
#   6. compute-sanitizer memcheck, racecheck, synccheck on the tiled matmul and pipeline tests
#   7. a sticky fault for real: a user kernel's out-of-bounds store kills the context; the map
#      completes on the CPU (bench_cuda --sticky-probe)
#   8. bench_cuda: H2D/D2H pageable vs pinned by size, exp*sinh, the hybrid CPU+GPU row
# Exit status: 0 when every step passed; the first failing step is named.
# Environment: GPU_CHECK_SKIP_ASAN=1 skips 5 (saves ~2 minutes); GPU_CHECK_JOBS (build jobs).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
JOBS=${GPU_CHECK_JOBS:-$(nproc)}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
export CUDACXX=${CUDACXX:-$CUDA_HOME/bin/nvcc}
FAILED=()

step() { printf '\n==== [%4ds] %s\n' $(($(date +%s) - T0)) "$*"; }
fail() { echo "FAIL: $*"; FAILED+=("$*"); }
die() { echo "FAIL: $*"; echo "gpu-check: stopped at: $*"; exit 1; }

# ---- 1. versions -------------------------------------------------------------------------------
step "1. versions"
[ -x "$CUDACXX" ] || die "no nvcc at $CUDACXX (set CUDA_HOME)"
"$CUDACXX" --version | tail -2
for t in cmake cc; do command -v $t >/dev/null || die "$t is missing (apt-get install cmake gcc)"; done
if [ ! -f /usr/include/cmocka.h ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing cmocka (apt-get)"; apt-get install -y -q libcmocka-dev >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libcmocka-dev >/dev/null 2>&1; }
fi
[ -f /usr/include/cmocka.h ] || die "cmocka is missing (apt-get install libcmocka-dev; the tests need it)"
ls "$CUDA_HOME"/lib64/libnvrtc.so.* 2>/dev/null | head -3 || echo "no NVRTC in $CUDA_HOME/lib64"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    NO_GPU=1
    echo "no GPU: nvidia-smi $(command -v nvidia-smi >/dev/null && echo 'finds none' || echo 'is absent')"
else
    NO_GPU=0
    nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max \
        --format=csv
fi

# ---- 2. build ----------------------------------------------------------------------------------
step "2. build (CUDA ON, lean) into build-gpu/"
mkdir -p build-gpu build-gpu-asan
LEAN=(-DTDM_WITH_CUDA=ON -DTDM_WITH_OPENCL=OFF -DTDM_WITH_JPEG=OFF -DTDM_WITH_MPI=OFF)
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
# Warnings are not errors here: a GPU host's compiler may warn where CI's (which keeps -Werror)
# does not, and this check is about the GPU.
cmake -S . -B build-gpu "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTDM_WERROR=OFF "${LEAN[@]}" \
    >build-gpu/configure.log 2>&1 || { tail -30 build-gpu/configure.log; die "configure"; }
B0=$(date +%s)
cmake --build build-gpu -j "$JOBS" >build-gpu/build.log 2>&1 || { tail -40 build-gpu/build.log; die "build"; }
echo "built in $(($(date +%s) - B0)) s"
TANDEM=build-gpu/tools/tandem
"$TANDEM" info | sed -n '1,/^devices/p'

# ---- 3. the fatbin's images -------------------------------------------------------------------
step "3. images of the built-in kernels"
OBJ=$(find build-gpu -name 'builtin_kernels.cu.o' | head -1)
CUOBJDUMP=$(command -v cuobjdump || true)
if [ -z "$CUOBJDUMP" ] && command -v python3 >/dev/null; then
    # PyPI's nvidia-cuda-cuobjdump (the toolkit package may leave it out); needs the network
    python3 -m venv build-gpu/venv >/dev/null 2>&1 &&
        build-gpu/venv/bin/pip -q install nvidia-cuda-cuobjdump >/dev/null 2>&1 &&
        CUOBJDUMP=$(find build-gpu/venv -name cuobjdump -type f | head -1)
fi
if [ -n "$CUOBJDUMP" ] && [ -n "$OBJ" ]; then
    "$CUOBJDUMP" --list-elf --list-ptx "$OBJ" | tee build-gpu/images.txt
    for a in sm_80 sm_86 sm_89 sm_90; do
        grep -q "$a" build-gpu/images.txt || fail "no $a SASS in $OBJ"
    done
    grep -q "ptx" build-gpu/images.txt || fail "no PTX image in $OBJ"
else
    echo "note: no cuobjdump (not in $CUDA_HOME/bin and pip could not fetch nvidia-cuda-cuobjdump): images not listed"
fi

[ "$NO_GPU" = 1 ] && die "no GPU on this machine: the steps from 4 on need one"

# ---- 4. the CUDA tests; a skip is a failure ------------------------------------------------------
step "4. cuda_*, device_cuda_*, device_fault_*_cuda tests (a skip fails)"
CUDA_TESTS='^(cuda_|device_cuda_|device_fault_.*_cuda$)'
run_tests() { # dir, label
    (cd "$1" && ctest -R "$CUDA_TESTS" --output-on-failure -j 4 --timeout 300) >"$1/ctest-cuda.log" 2>&1
    local rc=$?
    grep -E "tests passed|tests failed|Skipped|Failed|Not Run" "$1/ctest-cuda.log" | tail -25
    [ $rc -eq 0 ] || fail "$2: a test failed (see $1/ctest-cuda.log)"
    if grep -q "Skipped" "$1/ctest-cuda.log"; then fail "$2: a test skipped on a GPU machine"; fi
    grep -q "tests passed" "$1/ctest-cuda.log" || fail "$2: no test ran"
}
run_tests build-gpu "tests"

# ---- 5. the same under ASan + UBSan ---------------------------------------------------------------
if [ "${GPU_CHECK_SKIP_ASAN:-0}" != 1 ]; then
    step "5. the CUDA tests under ASan+UBSan (protect_shadow_gap=0)"
    cmake -S . -B build-gpu-asan "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTDM_WERROR=OFF \
        -DTDM_SANITIZE=address,undefined -DTDM_BUILD_BENCH=OFF "${LEAN[@]}" >/dev/null 2>&1 &&
        cmake --build build-gpu-asan -j "$JOBS" >build-gpu-asan/build.log 2>&1 ||
        fail "ASan build (build-gpu-asan/build.log)"
    # (the driver's, NVRTC's and cudart's allocations kept until exit: tests/lsan.supp, which
    # CTest gives every test)
    # (use_sigaltstack=0: why, in scripts/test.sh)
    export ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1:intercept_tls_get_addr=0:use_sigaltstack=0
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    [ -d build-gpu-asan/tests ] && run_tests build-gpu-asan "ASan tests"
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi

# ---- 6. compute-sanitizer ------------------------------------------------------------------------
step "6. compute-sanitizer on the tiled matmuls and the pipeline"
CS=$(command -v compute-sanitizer || echo "$CUDA_HOME/compute-sanitizer/compute-sanitizer")
if [ -x "$CS" ]; then
    for tool in memcheck racecheck synccheck; do
        for t in tiled_matmuls_match_c three_queue_pipeline; do
            out=build-gpu/cs-$tool-$t.log
            timeout 240 "$CS" --tool "$tool" --error-exitcode 99 build-gpu/tests/test_cuda "test_$t" \
                >"$out" 2>&1
            rc=$?
            printf '%-10s %-26s rc %d  %s\n' "$tool" "$t" $rc "$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY|No (errors|hazards)' "$out")"
            [ $rc -eq 0 ] || fail "compute-sanitizer $tool on $t ($out)"
        done
    done
else
    fail "compute-sanitizer not found in the toolkit"
fi

# ---- 7. a sticky fault, for real ----------------------------------------------------------------
step "7. sticky-fault probe: an out-of-bounds store in a user kernel, the map completes on the CPU"
timeout 120 build-gpu/bench/bench_cuda --sticky-probe || fail "sticky-fault probe"

# ---- 8. benchmarks ------------------------------------------------------------------------------
step "8. bench_cuda (every figure)"
timeout 300 build-gpu/bench/bench_cuda || fail "bench_cuda"

step "done in $(($(date +%s) - T0)) s"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'gpu-check FAILED:\n'; printf '  - %s\n' "${FAILED[@]}"; exit 1
fi
echo "gpu-check passed"
