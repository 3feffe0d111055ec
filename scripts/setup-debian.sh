#!/usr/bin/env bash
# Installs what tandem needs to build and test on Debian 12 (run as root, or with sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake ninja-build pkg-config libcmocka-dev \
    ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
