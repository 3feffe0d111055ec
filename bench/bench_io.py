#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_io.py: tandem's tensor files against numpy.save/load and joblib.dump/load, same run.

Runs build/bench/bench_io (tandem: .npy raw, zstd-1, lz4; mmap; the result cache), then times
NumPy and joblib on the very tensor bench_io wrote (bench_io_input.npy), with the same number of
repetitions and the page cache warm for every load, and prints one table with the ratios.

The raw .npy row is measured like with like: tandem (bench_io --serve, a second process holding
the same tensor) and numpy.save / numpy.load take turns rep by rep, the order swapped every rep,
after one untimed round, each side doing the same steps (save to a fresh path, load it back into
new memory with the page cache warm, check, free, delete the file). Both loads include
allocating and first-touching the destination; neither save fsyncs (numpy.save never does;
tdm_save only with tdm_save_opts.fsync = 1, whose cost is shown on a separate row). Taking turns
matters on a VM that hands freed memory back to its host (virtio-balloon free page reporting):
there, memory freed a few seconds earlier costs several times more to touch again than memory
freed just before, so two loops run one after the other measure the host, not the library.
Mapped loads take turns the same way, both sides mapping one file (numpy.save's, written back):
numpy.load(mmap_mode='r') against tdm_load with TDM_MMAP_READ, each then reading one float per
page. Mapping costs a few ms for 1 GiB and depends on the file's page-cache folios, which
depend on how and when the file was written, so separate files or separate phases compare the
kernel's state, not the libraries.

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

    # raw .npy, tandem and numpy taking turns (see the docstring)
    srv = subprocess.Popen([exe, "--serve", src], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)

    def ask(cmd):
        srv.stdin.write(cmd + "\n")
        srv.stdin.flush()
        ans = srv.stdout.readline().split(None, 1)
        if not ans or ans[0] != "T":
            sys.exit("bench_io.py: bench_io --serve: %s -> %s" % (cmd, " ".join(ans) or "EOF"))
        return float(ans[1])

    ready = srv.stdout.readline().split()
    if not ready or ready[0] != "READY" or int(ready[1]) != nbytes:
        sys.exit("bench_io.py: bench_io --serve did not start: %r" % ready)
    p_np, p_td = os.path.join(a.dir, "b_np.npy"), os.path.join(a.dir, "b_td.npy")
    turns = {"numpy": ([], []), "tandem": ([], [])}

    def numpy_turn():
        if os.path.exists(p_np):
            os.unlink(p_np)
        turns["numpy"][0].append(timed(lambda: np.save(p_np, x))[0])
        dt, y = timed(lambda: np.load(p_np))
        if not np.array_equal(y, x):
            sys.exit("bench_io.py: numpy round trip differs")
        del y
        turns["numpy"][1].append(dt)
        os.unlink(p_np)

    def tandem_turn():
        turns["tandem"][0].append(ask("save " + p_td))  # unlinks first, like numpy_turn
        turns["tandem"][1].append(ask("load " + p_td))  # checks and frees after the clock
        os.unlink(p_td)

    # one untimed round first: whoever goes first otherwise pays for memory the VM has never
    # backed (2.5 s or more for 1 GiB here, in numpy's first rep)
    for turn in (numpy_turn, tandem_turn):
        turn()
    for k in turns:
        del turns[k][0][:], turns[k][1][:]
    for r in range(a.reps):
        for turn in ((numpy_turn, tandem_turn) if r % 2 == 0 else (tandem_turn, numpy_turn)):
            turn()
    fsync_s = []
    for r in range(a.reps):
        fsync_s.append(ask("fsave " + p_td))
        os.unlink(p_td)

    # Mapped loads, taking turns on one file (numpy.save's, written back first so no dirty
    # pages are being written while they are mapped): numpy.load(mmap_mode='r') and tandem's
    # TDM_MMAP_READ load, each then reading one float per 4 KiB page; the mapping is released
    # after the clock on both sides. One file for both, so both meet the same page-cache folios
    # (their sizes depend on how the file was written).
    def mmap_touch(p):
        m = np.load(p, mmap_mode="r")
        m[::1024].sum()
        return m
    np.save(p_np, x)
    fd = os.open(p_np, os.O_RDONLY)
    os.fdatasync(fd)
    os.close(fd)
    mm = {"numpy": [], "tandem": []}
    for r in range(2 * a.reps + 1):  # the first round untimed
        sides = ("numpy", "tandem") if r % 2 == 0 else ("tandem", "numpy")
        for side in sides:
            t = timed(lambda: mmap_touch(p_np))[0] if side == "numpy" else ask("mmap " + p_np)
            if r > 0:
                mm[side].append(t)
    os.unlink(p_np)
    srv.stdin.write("quit\n")
    srv.stdin.close()
    if srv.wait() != 0:
        sys.exit("bench_io.py: bench_io --serve failed")
    size_np = nbytes + 128
    py["numpy"] = (statistics.median(turns["numpy"][0]), statistics.median(turns["numpy"][1]),
                   size_np)
    med = statistics.median
    res["tandem_save_raw_turns"] = (med(turns["tandem"][0]), float(nbytes))
    res["tandem_load_raw_turns"] = (med(turns["tandem"][1]), float(nbytes))
    res["tandem_save_raw_fsync"] = (med(fsync_s), float(nbytes))
    print("-- raw .npy, tandem and numpy taking turns (%d reps each; seconds per rep):" % a.reps)
    for k in ("tandem", "numpy"):
        print("  %-7s save %s" % (k, " ".join("%.3f" % v for v in turns[k][0])))
        print("  %-7s load %s" % (k, " ".join("%.3f" % v for v in turns[k][1])))
    print("  tandem  save with fsync = 1: %s" % " ".join("%.3f" % v for v in fsync_s))
    print("-- mapped + touched, taking turns on numpy.save's file (%d reps each; ms per rep):"
          % len(mm["numpy"]))
    for k in ("tandem", "numpy"):
        print("  %-7s %s" % (k, " ".join("%.2f" % (v * 1e3) for v in mm[k])))
    py["numpy_mmap"] = (0.0, med(mm["numpy"]), nbytes)
    res["tandem_mmap_turns"] = (med(mm["tandem"]), float(nbytes))
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
    print("%-30s %10.2f %10.2f %10.0f" % ("tandem .npy (turns w/ numpy)",
                                          rate(res["tandem_save_raw_turns"][0]),
                                          rate(res["tandem_load_raw_turns"][0]),
                                          res["size_raw"][1] / 1e6))
    print("%-30s %10.2f %10s %10s" % ("tandem .npy save, fsync = 1",
                                      rate(res["tandem_save_raw_fsync"][0]), "", ""))
    rows = [("tandem .npy (bench_io loop)", "raw"), ("tandem zstd-1", "zstd1"),
            ("tandem lz4", "lz4")]
    for label, k in rows:
        print("%-30s %10.2f %10.2f %10.0f" % (label, rate(res["tandem_save_" + k][0]),
                                              rate(res["tandem_load_" + k][0]),
                                              res["size_" + k][1] / 1e6))
    print("%-30s %10s %10.2f %10s" % ("tandem .npy mmap + touch", "",
                                      rate(res["tandem_mmap_turns"][0]), ""))
    print("%-30s %10s %10.2f %10s" % ("  the same, bench_io loop", "",
                                      rate(res["tandem_load_raw_mmap_touch"][0]), ""))
    for k, (s, l, size) in py.items():
        print("%-30s %10s %10.2f %10s" % (k.replace("_", " "), "%.2f" % rate(s) if s else "",
                                          rate(l), "%.0f" % (size / 1e6) if s else ""))
    print("\nratios (tandem / baseline, >1 = tandem faster):")
    np_s, np_l, _ = py["numpy"]
    print("  raw .npy vs numpy.save/load:        save %.2fx, load %.2fx (taking turns; both "
          "loads allocate, page cache warm, no fsync)" % (
              np_s / res["tandem_save_raw_turns"][0], np_l / res["tandem_load_raw_turns"][0]))
    print("  mmap + touch vs numpy mmap_mode='r': %.2fx (taking turns on one file)" % (
        py["numpy_mmap"][1] / res["tandem_mmap_turns"][0]))
    if "joblib_raw" in py:
        js, jl, _ = py["joblib_raw"]
        print("  raw vs joblib.dump/load:            save %.2fx, load %.2fx (joblib in its own "
              "loop)" % (js / res["tandem_save_raw_turns"][0],
                         jl / res["tandem_load_raw_turns"][0]))
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
    print()

    def target(text, fig, met):  # the same lines as bench_common.h's bench_target()
        print("target: %-62s %12.4g  %s" % (text, fig, "met" if met else "NOT met"))
    r_save = np_s / res["tandem_save_raw_turns"][0]
    r_load = np_l / res["tandem_load_raw_turns"][0]
    r_mmap = py["numpy_mmap"][1] / res["tandem_mmap_turns"][0]
    target(".npy save >= 1.0x numpy.save", r_save, r_save >= 1.0)
    target(".npy load >= 1.0x numpy.load", r_load, r_load >= 1.0)
    target(".npy mmap + touch >= 1.0x numpy mmap_mode='r'", r_mmap, r_mmap >= 1.0)


if __name__ == "__main__":
    main()
