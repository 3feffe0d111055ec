#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the Python-callable tests (python/tests/test_parallel*.py: rt.parallel, the joblib
# backend) against the current joblib from PyPI, in a venv of its own (Debian's joblib 1.2 is
# what scripts/test-python.sh tests with). Usage: scripts/test-python-joblib.sh [pytest args]
#   TDM_PY_VENV   the venv (default build-python/venv-joblib; created when absent)
#   PYTHON        the interpreter that makes the venv (default /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
VENV=${TDM_PY_VENV:-build-python/venv-joblib}
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv --system-site-packages "$VENV"; fi
"$VENV/bin/python" -m pip install -q --upgrade "scikit-build-core>=0.8" pytest joblib
"$VENV/bin/python" -m pip install -q --no-build-isolation \
    --config-settings=cmake.define.TDM_PY_WERROR=ON ./python
echo "test-python-joblib: joblib $("$VENV/bin/python" -c 'import joblib; print(joblib.__version__)')"
cd python/tests
set +e
"../../$VENV/bin/python" -m pytest -q -p no:cacheprovider test_parallel.py \
    test_parallel_joblib.py "$@"
rc=$?
set -e
if [ $rc != 0 ]; then echo "test-python-joblib: pytest exited $rc" >&2; exit 1; fi
