#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quick start on a fresh Debian 12 machine: install the packages, build, run `tandem demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
scripts/build.sh
exec "${TDM_BUILD_DIR:-build}/tools/tandem" demo "$@"
