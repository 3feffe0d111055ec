#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tandem's Python door against its baselines, measured in the same run (issue 17).

  1. per-call overhead of rt.map on a 1,000-element array vs the same tdm_map call made from C
     (tandem._tandem._bench_c_map: a loop of tdm_map in C on the same tensors)  target <= 5 us
  2. exp(x)*sinh(x) over N doubles (default 50M): rt.map vs NumPy's np.exp(x)*np.sinh(x)
     (target >= 2.5x) and vs the same C call (target >= 0.98x)
  3. tandem.save / load (also mmap='r' + a full read) vs numpy.save / load (target >= 1.0x)

Baselines and tandem alternate rep by rep; medians are printed. Usage:
  build-python/venv/bin/python bench/python/bench_map.py [--n 50000000] [--reps 5] [--dir D]
Run it on a quiet machine: each figure is a median, but other processes still move it.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import tandem
from tandem import _tandem


def verdict(ok):
    return "met" if ok else "NOT met"


def per_call(rt, reps, calls):
    x = np.linspace(0, 1, 1000)
    y = np.empty_like(x)
    for _ in range(200):  # warm: calibrate the scheduler, fault pages in
        rt.map("exp_sinh", x, out=y)
    _tandem._bench_c_map(rt, "exp_sinh", x, y, 200)
    py, c, alloc = [], [], []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(calls):
            rt.map("exp_sinh", x, out=y)
        py.append((time.perf_counter() - t) / calls)
        c.append(_tandem._bench_c_map(rt, "exp_sinh", x, y, calls) / calls)
        t = time.perf_counter()
        for _ in range(calls):
            rt.map("exp_sinh", x)
        alloc.append((time.perf_counter() - t) / calls)
    mp, mc, ma = (statistics.median(v) * 1e6 for v in (py, c, alloc))
    bp, bc = min(py) * 1e6, min(c) * 1e6
    over = mp - mc
    print(f"[1] per call, 1,000 f64: rt.map(out=y) {mp:8.2f} us   C tdm_map {mc:8.2f} us   "
          f"overhead {over:+.2f} us (target <= 5 us: {verdict(over <= 5)})")
    print(f"    best reps: rt.map {bp:.2f} us, C {bc:.2f} us ({bp - bc:+.2f} us); "
          f"rt.map allocating its output: {ma:.2f} us ({ma - mc:+.2f} us above C)")
    return over


def exp_sinh(rt, n, reps):
    x = rt.empty(n, "f64")
    x[:] = np.linspace(-2, 2, n)
    y = rt.empty(n, "f64")
    rt.map("exp_sinh", x, out=y)  # warm
    tn, tt, tc = [], [], []
    for _ in range(reps):
        t = time.perf_counter()
        ref = np.exp(x) * np.sinh(x)
        tn.append(time.perf_counter() - t)
        del ref
        t = time.perf_counter()
        rt.map("exp_sinh", x, out=y)
        tt.append(time.perf_counter() - t)
        tc.append(_tandem._bench_c_map(rt, "exp_sinh", x, y, 1))
    np.testing.assert_allclose(y[:1000], np.exp(x[:1000]) * np.sinh(x[:1000]), rtol=1e-12)
    mn, mt, mc = (statistics.median(v) for v in (tn, tt, tc))
    vs_np, vs_c = mn / mt, mc / mt
    print(f"[2] exp*sinh, {n:,} f64: numpy {mn:.3f} s   rt.map {mt:.3f} s   C {mc:.3f} s")
    print(f"    rt.map vs numpy {vs_np:.2f}x (target >= 2.5x: {verdict(vs_np >= 2.5)});"
          f" vs C {vs_c:.3f}x (target >= 0.98x: {verdict(vs_c >= 0.98)})")
    return vs_np, vs_c


def io(rt, n, reps, d):
    a = np.random.default_rng(0).standard_normal(n)
    pn, pt = os.path.join(d, "numpy.npy"), os.path.join(d, "tandem.npy")
    res = {k: [] for k in ("save_np", "save_t", "load_np", "load_t", "mmap_np", "mmap_t")}
    for _ in range(reps):
        t = time.perf_counter(); np.save(pn, a); res["save_np"].append(time.perf_counter() - t)
        t = time.perf_counter(); tandem.save(pt, a, rt=rt); res["save_t"].append(time.perf_counter() - t)
        t = time.perf_counter(); b = np.load(pn); res["load_np"].append(time.perf_counter() - t)
        del b
        t = time.perf_counter(); b = tandem.load(pt, rt=rt); res["load_t"].append(time.perf_counter() - t)
        del b
        t = time.perf_counter()
        m = np.load(pn, mmap_mode="r"); float(m.sum()); del m
        res["mmap_np"].append(time.perf_counter() - t)
        t = time.perf_counter()
        m = tandem.load(pt, mmap="r", rt=rt); float(m.sum()); del m
        res["mmap_t"].append(time.perf_counter() - t)
    assert np.array_equal(np.load(pt, mmap_mode="r")[:1000], a[:1000])
    med = {k: statistics.median(v) for k, v in res.items()}
    ratios = []
    for what, kn, kt in (("save", "save_np", "save_t"), ("load", "load_np", "load_t"),
                         ("mmap 'r' + sum", "mmap_np", "mmap_t")):
        r = med[kn] / med[kt]
        ratios.append(r)
        print(f"[3] {what:15s} {a.nbytes / 1e6:.0f} MB: numpy {med[kn]:.3f} s   tandem "
              f"{med[kt]:.3f} s   {r:.2f}x (target >= 1.0x: {verdict(r >= 1.0)})")
    return ratios


def loop_only(kind, calls):
    """Just `calls` map calls, untimed: for bench/python/overhead_instructions.sh, which
    counts instructions under callgrind (independent of the machine's load)."""
    with tandem.Runtime(threads=1, backends="cpu", sched_model_dir="off", use_env=False) as rt:
        x = np.linspace(0, 1, 1000)
        y = np.empty_like(x)
        for _ in range(50):
            rt.map("exp_sinh", x, out=y, policy="threads")
        if kind == "py":
            for _ in range(calls):
                rt.map("exp_sinh", x, out=y, policy="threads")
        elif kind == "alloc":
            for _ in range(calls):
                rt.map("exp_sinh", x, policy="threads")
        else:
            _tandem._bench_c_map(rt, "exp_sinh", x, y, calls, "threads")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop-only", choices=("py", "alloc", "c"), default=None,
                    help="run only a loop of --calls maps (for callgrind), no timing")
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--dir", default=None, help="where the I/O files go (default: a temp dir)")
    args = ap.parse_args()
    if args.loop_only:
        loop_only(args.loop_only, args.calls)
        return
    with tandem.Runtime() as rt:
        info = tandem.system_info()
        load = os.getloadavg()[0]
        print(f"tandem {tandem.__version__}: {rt.threads} threads, {info['usable_cores']} usable "
              f"cores, load average {load:.1f}; medians of {args.reps} reps, baselines "
              f"interleaved")
        if load > info["usable_cores"]:
            print("    (the machine is busy: other processes share the cores; figures are noisy)")
        per_call(rt, args.reps, args.calls)
        exp_sinh(rt, args.n, args.reps)
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            io(rt, args.n, args.reps, d)


if __name__ == "__main__":
    main()
