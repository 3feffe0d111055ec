#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the Python package (python/, which builds libtandem with it) into a venv and runs its
# tests with pytest. Debian's interpreter (/usr/bin/python3, with python3-numpy) is used, not
# whatever `python3` is first on PATH; the venv keeps its site-packages (NumPy from apt).
# Usage: scripts/test-python.sh [--asan | --numpy2] [pytest args...]
#   TDM_PY_VENV   the venv (default build-python/venv; created when absent)
#   PYTHON        the interpreter that makes the venv (default /usr/bin/python3)
# --asan builds the extension and libtandem with AddressSanitizer + UBSan and runs pytest with
# libasan preloaded (leak checking off: CPython's own allocations are not freed at exit).
# --numpy2 tests against a current NumPy from PyPI (>= 2.1: DLPack 1.x versioned capsules) in
# a venv without Debian's site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ASAN=0 NP2=0
if [ "${1:-}" = "--asan" ]; then ASAN=1; shift; fi
if [ "${1:-}" = "--numpy2" ]; then NP2=1; shift; fi
PY=${PYTHON:-/usr/bin/python3}
VENV=${TDM_PY_VENV:-build-python/venv}
if [ $ASAN = 1 ]; then VENV=${TDM_PY_VENV:-build-python/venv-asan}; fi
if [ $NP2 = 1 ]; then VENV=${TDM_PY_VENV:-build-python/venv-np2}; fi
if [ ! -x "$VENV/bin/python" ]; then
    if [ $NP2 = 1 ]; then "$PY" -m venv "$VENV"; else "$PY" -m venv --system-site-packages "$VENV"; fi
fi
"$VENV/bin/python" -m pip install -q --upgrade "scikit-build-core>=0.8" pytest
if [ $NP2 = 1 ]; then "$VENV/bin/python" -m pip install -q "numpy>=2.1"; fi
ARGS=(--no-build-isolation --config-settings=cmake.define.TDM_PY_WERROR=ON)
if [ $ASAN = 1 ]; then
    ARGS+=(--config-settings=cmake.define.TDM_SANITIZE=address,undefined
           --config-settings=build-dir=build/asan)
fi
# --no-build-isolation: the venv's scikit-build-core builds (no download per install).
"$VENV/bin/python" -m pip install -q "${ARGS[@]}" ./python
# Run from outside the source tree so `import tandem` is the installed package.
cd python/tests
set +e
if [ $ASAN = 1 ]; then
    # (use_sigaltstack=0: why, in scripts/test.sh)
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:intercept_tls_get_addr=0:use_sigaltstack=0
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
        "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
else
    "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
fi
rc=$?
set -e
# pytest's 5 ("no tests collected") is a failure here too.
if [ $rc != 0 ]; then echo "test-python: pytest exited $rc" >&2; exit 1; fi
