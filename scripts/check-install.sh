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

# libtandem itself never loads MPI: the distributed runtime is libtandem-mpi (tandem::mpi).
if readelf -d "$LIBDIR/libtandem.so" | grep -q 'NEEDED.*libmpi'; then
    echo "install check: libtandem.so NEEDs libmpi"; exit 1
fi
cat > "$WORK/dist.c" <<'C'
#include <stdio.h>
#include <tandem.h>
#include <tandem/dist.h>
int main(void)
{
    tdm_runtime *rt;
    tdm_dist *d;
    if (tdm_runtime_open(&rt, NULL) != 0 || tdm_dist_open(&d, rt, NULL) != 0)
        return 1;
    printf("tandem-mpi: rank %d of %d (MPI layer %s)\n", tdm_dist_rank(d), tdm_dist_size(d),
           tdm_dist_available() ? "built" : "single rank");
    return (tdm_dist_close(d) != 0) | (tdm_runtime_close(rt) != 0);
}
C
mkdir -p "$WORK/mpi"
cp "$WORK/dist.c" "$WORK/mpi/main.c"
cat > "$WORK/mpi/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(consumer_mpi C)
find_package(tandem REQUIRED COMPONENTS mpi)
add_executable(consumer_mpi main.c)
target_link_libraries(consumer_mpi PRIVATE tandem::mpi)
CM
cmake -S "$WORK/mpi" -B "$WORK/mpi/b" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_C_FLAGS="-Wall -Werror" >/dev/null
cmake --build "$WORK/mpi/b" >/dev/null
LD_LIBRARY_PATH="$LIBDIR" "$WORK/mpi/b/consumer_mpi"
# shellcheck disable=SC2046
cc -Wall -Werror "$WORK/dist.c" -o "$WORK/consumer-mpi-pc" $(PKG_CONFIG_PATH="$LIBDIR/pkgconfig" pkg-config --cflags --libs tandem-mpi)
LD_LIBRARY_PATH="$LIBDIR" "$WORK/consumer-mpi-pc"
echo "install check: find_package and pkg-config consumers built and ran (tandem, tandem::mpi)"
