#!/usr/bin/env python3
"""bench_io.py: tandem's tensor files against numpy.save/load and joblib.dump/load, same run.

Runs build/bench/bench_io (tandem: .npy raw, zstd-1, lz4; mmap; the result cache), then times
NumPy and joblib on the very tensor bench_io wrote (bench_io_input.npy), with the same number of
repetitions and the page cache warm for every load, and prints one table with the ratios.

    bench/bench_io.py <build dir> [--mb 1024] [--reps 3] [--dir /tmp]

joblib has no zstd; its fastest codecs are compared instead: zlib level 1, and lz4 when the
python3 lz4 module is installed.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.exit("bench_io.py: numpy is required (apt-get install python3-numpy)")
try:
    import joblib
except ImportError:
    joblib = None


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--elems", type=int, default=50000000)
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    a = ap.parse_args()
    exe = os.path.join(a.build, "bench", "bench_io")
    out = subprocess.run([exe, "--mb", str(a.mb), "--reps", str(a.reps), "--elems",
                          str(a.elems), "--dir", a.dir], check=True, capture_output=True,
                         text=True).stdout
    res = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, name, sec, nbytes = line.split()
            res[name] = (float(sec), float(nbytes))
        else:
            print(line)

    src = os.path.join(a.dir, "bench_io_input.npy")
    x = np.load(src)
    nbytes = x.nbytes
    print("-- the same %.0f MB in Python %s: numpy %s, joblib %s" % (
        nbytes / 1e6, sys.version.split()[0], np.__version__,
        joblib.__version__ if joblib else "absent"))
    py = {}

    def run(name, save, load, path):
        s, l = [], []
        for _ in range(a.reps):
            if os.path.exists(path):
                os.unlink(path)
            s.append(timed(lambda: save(path))[0])
            dt, y = timed(lambda: load(path))
            if not np.array_equal(np.asarray(y), x):
                sys.exit("bench_io.py: %s round trip differs" % name)
            del y
            l.append(dt)
        size = os.path.getsize(path)
        os.unlink(path)
        py[name] = (statistics.median(s), statistics.median(l), size)

    run("numpy", lambda p: np.save(p, x), lambda p: np.load(p), os.path.join(a.dir, "b_np.npy"))

    def mmap_touch(p):
        m = np.load(p, mmap_mode="r")
        m[::1024].sum()
        return m
    np.save(os.path.join(a.dir, "b_np.npy"), x)
    t = [timed(lambda: mmap_touch(os.path.join(a.dir, "b_np.npy")))[0] for _ in range(a.reps)]
    os.unlink(os.path.join(a.dir, "b_np.npy"))
    py["numpy_mmap"] = (0.0, statistics.median(t), nbytes)
    if joblib:
        run("joblib_raw", lambda p: joblib.dump(x, p), lambda p: joblib.load(p),
            os.path.join(a.dir, "b_jl.pkl"))
        run("joblib_zlib1", lambda p: joblib.dump(x, p, compress=("zlib", 1)),
            lambda p: joblib.load(p), os.path.join(a.dir, "b_jl.z"))
        try:
            import lz4  # noqa: F401
            run("joblib_lz4", lambda p: joblib.dump(x, p, compress=("lz4", 1)),
                lambda p: joblib.load(p), os.path.join(a.dir, "b_jl.lz4"))
        except ImportError:
            pass
    os.unlink(src)

    gb = nbytes / 1e9
    def rate(sec):
        return gb / sec if sec > 0 else float("nan")
    print("\n%-30s %10s %10s %10s" % ("save / load of %.0f MB f32" % (nbytes / 1e6), "save GB/s",
                                       "load GB/s", "file MB"))
    rows = [("tandem .npy", "raw"), ("tandem zstd-1", "zstd1"), ("tandem lz4", "lz4")]
    for label, k in rows:
        print("%-30s %10.2f %10.2f %10.0f" % (label, rate(res["tandem_save_" + k][0]),
                                              rate(res["tandem_load_" + k][0]),
                                              res["size_" + k][1] / 1e6))
    print("%-30s %10s %10.2f %10s" % ("tandem .npy mmap + touch", "",
                                      rate(res["tandem_load_raw_mmap_touch"][0]), ""))
    for k, (s, l, size) in py.items():
        print("%-30s %10s %10.2f %10s" % (k.replace("_", " "), "%.2f" % rate(s) if s else "",
                                          rate(l), "%.0f" % (size / 1e6) if s else ""))
    print("\nratios (tandem / baseline, >1 = tandem faster):")
    np_s, np_l, _ = py["numpy"]
    print("  raw .npy vs numpy.save/load:        save %.2fx, load %.2fx" % (
        np_s / res["tandem_save_raw"][0], np_l / res["tandem_load_raw"][0]))
    print("  mmap + touch vs numpy mmap_mode='r': %.2fx" % (
        py["numpy_mmap"][1] / res["tandem_load_raw_mmap_touch"][0]))
    if "joblib_raw" in py:
        js, jl, _ = py["joblib_raw"]
        print("  raw vs joblib.dump/load:            save %.2fx, load %.2fx" % (
            js / res["tandem_save_raw"][0], jl / res["tandem_load_raw"][0]))
        zs, zl, zsize = py["joblib_zlib1"]
        print("  zstd-1 vs joblib zlib-1:            save %.2fx, load %.2fx (files %.0f vs %.0f MB)"
              % (zs / res["tandem_save_zstd1"][0], zl / res["tandem_load_zstd1"][0],
                 res["size_zstd1"][1] / 1e6, zsize / 1e6))
        print("  lz4 vs joblib zlib-1:               save %.2fx, load %.2fx" % (
            zs / res["tandem_save_lz4"][0], zl / res["tandem_load_lz4"][0]))
        if "joblib_lz4" in py:
            ls, ll, _ = py["joblib_lz4"]
            print("  lz4 vs joblib lz4:                  save %.2fx, load %.2fx" % (
                ls / res["tandem_save_lz4"][0], ll / res["tandem_load_lz4"][0]))
    c, h, m = (res["cache_compute_exp_sinh"][0], res["cache_hit_load"][0],
               res["cache_hit_mmap_verified"][0])
    print("  cache hit vs recomputing exp_sinh:  %.1fx (loaded), %.1fx (mapped)" % (c / h, c / m))


if __name__ == "__main__":
    main()
