#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The consumer matrix: installs a build into a temporary prefix, checks what was installed
# (no libmpi, libOpenCL or libjpeg NEEDED by libtandem; the SONAME; licence, dialect header,
# man page), then builds and runs a small outside program against it, in C and in C++ (C++17,
# -pedantic -Werror), linked to the shared and to the static library, through CMake's
# find_package(tandem) and through pkg-config: 8 consumers. MPI and the CUDA toolkit are made
# invisible to the consumers (CMAKE_DISABLE_FIND_PACKAGE_*, and pkg-config searching only the
# prefix): tandem must not need them.
# Usage: scripts/check-install.sh [build-dir]
set -euo pipefail
BUILD=${1:-build}
PREFIX=$(mktemp -d)
WORK=$(mktemp -d)
trap 'rm -rf "$PREFIX" "$WORK"' EXIT
fail() { echo "install check: FAILED: $*" >&2; exit 1; }
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null

# ---- what was installed ----
SO=$(find "$PREFIX" -name 'libtandem.so' | head -n 1)
[ -n "$SO" ] || fail "no libtandem.so installed"
LIBDIR=$(dirname "$SO")
[ -f "$LIBDIR/libtandem.a" ] || fail "no libtandem.a installed"
needed=$(readelf -d "$SO" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "libtandem.so NEEDs: $(echo $needed)"
for lib in libmpi libOpenCL libjpeg libcuda libnvrtc; do
    if echo "$needed" | grep -q "^$lib\."; then fail "libtandem.so NEEDs $lib"; fi
done
soname=$(readelf -d "$SO" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
version=$(sed -n 's/#define TDM_VERSION_STRING "\(.*\)"/\1/p' "$PREFIX/include/tandem/version.h")
case $version in
    0.*) want=libtandem.so.$(echo "$version" | cut -d. -f1-2) ;;
    *) want=libtandem.so.$(echo "$version" | cut -d. -f1) ;;
esac
[ "$soname" = "$want" ] || fail "SONAME $soname, expected $want (version $version)"
[ -f "$PREFIX/share/doc/tandem/LICENSE" ] || fail "LICENSE not installed"
[ -f "$PREFIX/include/tandem/dialect.h" ] || fail "tandem/dialect.h not installed"
if [ -x "$PREFIX/bin/tandem" ]; then
    [ -f "$PREFIX/share/man/man1/tandem.1" ] || fail "man page tandem(1) not installed"
    "$PREFIX/bin/tandem" --version >/dev/null || fail "installed tandem does not run"
fi
if grep -rq "/libm\.so\|/libm\.a" "$LIBDIR/cmake/tandem/"; then
    fail "the CMake export records an absolute libm path"
fi
if grep -Eq "ompi|-lmpi" "$LIBDIR/pkgconfig/tandem.pc"; then fail "tandem.pc requires MPI"; fi

# ---- the consumers ----
cat >"$WORK/main.c" <<'C'
#include <math.h>
#include <stdio.h>
#include <tandem.h>
int main(void)
{
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, NULL) != 0)
        return 1;
    int64_t n = 10000;
    tdm_tensor *x = NULL, *y = NULL;
    tdm_report rep = TDM_REPORT_INIT;
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.policy = TDM_POLICY_CPU;
    int rc = tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x);
    if (rc == 0)
        rc = tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &y);
    for (int64_t i = 0; rc == 0 && i < n; i++)
        ((double *)tdm_tensor_data(x))[i] = (double)i * 1e-4;
    if (rc == 0)
        rc = tdm_map(rt, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, &rep);
    double y1 = rc == 0 ? ((double *)tdm_tensor_data(y))[n - 1] : 0;
    double want = exp(0.9999) * sinh(0.9999);
    printf("tandem %s: %lld items, y[n-1] %.6f (expected %.6f)\n", tdm_version_string(),
           (long long)rep.items, y1, want);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    return tdm_runtime_close(rt) != 0 || rc != 0 || fabs(y1 - want) > 1e-9;
}
C
cp "$WORK/main.c" "$WORK/main.cc"
sed -i 's/((double \*)tdm_tensor_data(\(.\)))/static_cast<double *>(tdm_tensor_data(\1))/g; s/NULL/nullptr/g' \
    "$WORK/main.cc"
sed -i 's/#include <math.h>/#include <cmath>\nusing std::exp; using std::sinh; using std::fabs;/' "$WORK/main.cc"

cat >"$WORK/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(consumer C CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_EXTENSIONS OFF)
if(LINK STREQUAL "static")
  find_package(tandem REQUIRED COMPONENTS static)
  set(lib tandem::tandem_static)
else()
  find_package(tandem REQUIRED)
  set(lib tandem::tandem)
endif()
add_executable(consumer_c main.c)
add_executable(consumer_cxx main.cc)
target_compile_options(consumer_cxx PRIVATE -Wall -Wextra -pedantic -Werror)
target_link_libraries(consumer_c PRIVATE ${lib} m)
target_link_libraries(consumer_cxx PRIVATE ${lib})
CM
# Only the prefix is visible to pkg-config (no ompi-c.pc, no system .pc files).
pc() { PKG_CONFIG_LIBDIR="$LIBDIR/pkgconfig" pkg-config "$@"; }
run() { # name, program
    LD_LIBRARY_PATH="$LIBDIR" "$2" >"$WORK/$1.out" 2>&1 || { cat "$WORK/$1.out"; fail "$1 failed"; }
    local n
    n=$(readelf -d "$2" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -E '^lib(mpi|OpenCL|jpeg)\.' || true)
    [ -z "$n" ] || fail "$1 NEEDs $n"
    echo "  $1: $(cat "$WORK/$1.out")"
}
for link in shared static; do
    cmake -S "$WORK" -B "$WORK/b-$link" -DCMAKE_PREFIX_PATH="$PREFIX" -DLINK=$link \
        -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON \
        -DCMAKE_DISABLE_FIND_PACKAGE_OpenCL=ON -DCMAKE_DISABLE_FIND_PACKAGE_JPEG=ON \
        >"$WORK/cfg-$link.log" 2>&1 || { cat "$WORK/cfg-$link.log"; fail "find_package ($link)"; }
    cmake --build "$WORK/b-$link" >"$WORK/build-$link.log" 2>&1 ||
        { cat "$WORK/build-$link.log"; fail "CMake consumer build ($link)"; }
    run "cmake-$link-c" "$WORK/b-$link/consumer_c"
    run "cmake-$link-c++" "$WORK/b-$link/consumer_cxx"
done
# shellcheck disable=SC2046
cc "$WORK/main.c" -o "$WORK/pc-shared-c" $(pc --cflags --libs tandem) -lm
# shellcheck disable=SC2046
c++ -std=c++17 -Wall -Wextra -pedantic -Werror "$WORK/main.cc" -o "$WORK/pc-shared-cxx" \
    $(pc --cflags --libs tandem)
static_libs=$(pc --static --libs tandem | sed 's/-ltandem\b/-l:libtandem.a/')
# shellcheck disable=SC2086
cc "$WORK/main.c" -o "$WORK/pc-static-c" $(pc --cflags tandem) $static_libs
# shellcheck disable=SC2086
c++ -std=c++17 -Wall -Wextra -pedantic -Werror "$WORK/main.cc" -o "$WORK/pc-static-cxx" \
    $(pc --cflags tandem) $static_libs
for p in pc-shared-c pc-shared-cxx pc-static-c pc-static-cxx; do run "$p" "$WORK/$p"; done
if readelf -d "$WORK/pc-static-c" | grep -q 'libtandem'; then fail "pc-static-c NEEDs libtandem.so"; fi
echo "install check: 8 consumers (CMake and pkg-config, shared and static, C and C++) built and ran"

# The MPI layer, libtandem-mpi: found with COMPONENTS mpi (MPI visible here), and tandem-mpi.pc.
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
cmake -S "$WORK/mpi" -B "$WORK/mpi/b" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_C_FLAGS="-Wall -Werror" \
    >"$WORK/cfg-mpi.log" 2>&1 || { cat "$WORK/cfg-mpi.log"; fail "find_package(tandem COMPONENTS mpi)"; }
cmake --build "$WORK/mpi/b" >"$WORK/build-mpi.log" 2>&1 ||
    { cat "$WORK/build-mpi.log"; fail "CMake MPI consumer build"; }
LD_LIBRARY_PATH="$LIBDIR" "$WORK/mpi/b/consumer_mpi" || fail "tandem::mpi consumer failed"
# shellcheck disable=SC2046
cc -Wall -Werror "$WORK/dist.c" -o "$WORK/consumer-mpi-pc" \
    $(PKG_CONFIG_PATH="$LIBDIR/pkgconfig" pkg-config --cflags --libs tandem-mpi)
LD_LIBRARY_PATH="$LIBDIR" "$WORK/consumer-mpi-pc" || fail "tandem-mpi.pc consumer failed"
echo "install check: the MPI layer: tandem::mpi and tandem-mpi.pc consumers built and ran"
