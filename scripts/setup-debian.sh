#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what tandem needs to build and test on Debian 12 (run as root, or with sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake ninja-build pkg-config libcmocka-dev \
    ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
# Tensor files and the result cache (zstd, lz4, xxHash, zlib); NumPy for the interop test, clang
# for the fuzz targets, joblib for bench/bench_io.py.
$SUDO apt-get install -y -qq --no-install-recommends \
    libzstd-dev liblz4-dev libxxhash-dev zlib1g-dev python3-numpy python3-joblib clang
# The Python package (python/, scripts/test-python.sh): headers and venv for Debian's python3.
$SUDO apt-get install -y -qq --no-install-recommends python3-dev python3-venv
# JPEG decoding (tandem/image.h). (bench/bench_dataloader.py also wants python3-torch
# python3-torchvision python3-pil, large and not needed to build or test.)
$SUDO apt-get install -y -qq --no-install-recommends libjpeg62-turbo-dev
# MPI (tandem/dist.h): Open MPI; the tests run 2 and 4 ranks with mpirun on loopback.
$SUDO apt-get install -y -qq --no-install-recommends libopenmpi-dev openmpi-bin
# The API reference (cmake --build build --target docs) and the C++ consumer checks.
$SUDO apt-get install -y -qq --no-install-recommends doxygen g++
