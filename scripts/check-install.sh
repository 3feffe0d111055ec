#!/usr/bin/env bash
# Installs a build into a temporary prefix and builds a small consumer against it twice:
# with CMake's find_package(tandem) and with pkg-config.
set -euo pipefail
BUILD=${1:-build}
PREFIX=$(mktemp -d)
WORK=$(mktemp -d)
trap 'rm -rf "$PREFIX" "$WORK"' EXIT
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
cat > "$WORK/main.c" <<'C'
#include <stdio.h>
#include <tandem.h>
int main(void)
{
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, NULL) != 0)
        return 1;
    printf("tandem %s, %d threads\n", tdm_version_string(), tdm_runtime_threads(rt));
    return tdm_runtime_close(rt) != 0;
}
C
cat > "$WORK/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(consumer C)
find_package(tandem REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE tandem::tandem)
CM
cmake -S "$WORK" -B "$WORK/b" -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
cmake --build "$WORK/b" >/dev/null
LIBDIR=$(dirname "$(find "$PREFIX" -name 'libtandem.so' | head -n 1)")
LD_LIBRARY_PATH="$LIBDIR" "$WORK/b/consumer"
# shellcheck disable=SC2046
cc "$WORK/main.c" -o "$WORK/consumer-pc" $(PKG_CONFIG_PATH="$LIBDIR/pkgconfig" pkg-config --cflags --libs tandem)
LD_LIBRARY_PATH="$LIBDIR" "$WORK/consumer-pc"
echo "install check: find_package and pkg-config consumers built and ran"
