#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python callables on worker processes (issue 18): tandem's rt.parallel against joblib and
multiprocessing, measured in the same run.

  1. seed 1: Leibniz pi in pure Python, ITEMS items x TERMS terms each, every call also given a
     200 MB NumPy payload: serial, tandem (procs = cores), joblib/loky with its auto-memmap
     (its best variant), joblib with the payload pickled per task (max_nbytes=None, fewer
     items: it is that slow), multiprocessing.Pool with the payload pickled per chunk.
     Target: tandem speedup over serial >= 0.95 x cores.
  2. per-batch round trip of an empty function (batch size 1): tandem, Pool.map chunksize 1,
     joblib/loky batch_size=1. Target <= 20 us.
  3. RESULTS results of RBYTES each (two of them slow): peak RSS of the process tree (parent +
     workers) for tandem list / generator / generator_unordered, joblib (list) and Pool.imap.
  4. a worker SIGKILLed mid-run: tandem raises WorkerError (or, with retries=1, finishes);
     nothing hangs.

Usage: build-python/venv/bin/python bench/python/seeds.py [--items 200] [--terms 100000]
       [--results 150] [--rbytes 16M] [--quick]
The machine is shared: run it quiet, and read each figure as one sample.
"""
import argparse
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np

import tandem

CORES = os.cpu_count() or 1


def leibniz(i, payload, terms):
    s, sign = 0.0, 1.0
    for k in range(terms):
        s += sign / (2 * k + 1)
        sign = -sign
    return 4 * s + 0.0 * float(payload[i % len(payload)])


def leibniz_pool(args):
    return leibniz(*args)


def empty(i):
    return None


def result_of(i, nbytes):
    if i in (3, 70):
        time.sleep(0.5)  # two slow calls hold the window
    return np.full(nbytes // 8, float(i))


def result_pool(args):
    return result_of(*args)


def kill_one(i, tries):
    if i == 10 and tries[0] == 0:
        tries[0] += 1
        os.kill(os.getpid(), signal.SIGKILL)
    return i


# ---- memory of the process tree ------------------------------------------------------------

def _tree_rss(root):
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss = int(f.read().split()[1]) * 4096
            kids.setdefault(ppid, []).append((int(d), rss))
        except (OSError, ValueError, IndexError):
            pass
    total, todo = 0, [root]
    with open(f"/proc/{root}/statm") as f:
        total = int(f.read().split()[1]) * 4096
    while todo:
        p = todo.pop()
        for c, rss in kids.get(p, []):
            total += rss
            todo.append(c)
    return total


class PeakRSS:
    def __enter__(self):
        self.peak, self.base = 0, _tree_rss(os.getpid())
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(os.getpid()))
            time.sleep(0.02)

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _tree_rss(os.getpid()))

    @property
    def grew(self):
        return max(0, self.peak - self.base)


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def mb(n):
    return f"{n / 2**20:.0f} MB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--terms", type=int, default=100_000)
    ap.add_argument("--payload-mb", type=int, default=200)
    ap.add_argument("--roundtrips", type=int, default=5000)
    ap.add_argument("--results", type=int, default=150)
    ap.add_argument("--rbytes", default="16M")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    a = ap.parse_args()
    if a.quick:
        a.items, a.terms, a.payload_mb, a.roundtrips, a.results, a.rbytes = \
            40, 20_000, 20, 500, 30, "1M"
    rbytes = int(a.rbytes[:-1]) << 20 if a.rbytes.endswith("M") else int(a.rbytes)
    import joblib
    from joblib import Parallel, delayed
    print(f"machine: {CORES} cores, load average {os.getloadavg()[0]:.2f} (shared with "
          f"other users: figures are samples); joblib {joblib.__version__}, numpy "
          f"{np.__version__}")
    payload = np.ones(a.payload_mb * 2**20 // 8)
    rt = tandem.Runtime(procs=CORES, threads=1, backends="cpu,procs")

    # ---- 1. seed 1 ----------------------------------------------------------------------
    print(f"\n1. Leibniz pi, {a.items} items x {a.terms} terms, {a.payload_mb} MB payload")
    n_ser = max(CORES * 2, a.items // 4)
    t_ser, _ = timed(lambda: [leibniz(i, payload, a.terms) for i in range(n_ser)])
    t_ser *= a.items / n_ser  # serial time of all items, from a quarter of them
    t_td, r_td = timed(lambda: rt.parallel(leibniz, range(a.items), payload, a.terms))
    t_jm, r_jm = timed(lambda: Parallel(n_jobs=CORES)(
        delayed(leibniz)(i, payload, a.terms) for i in range(a.items)))
    assert r_td == r_jm
    n_pk = max(CORES, a.items // 20)
    t_jp, _ = timed(lambda: Parallel(n_jobs=CORES, max_nbytes=None)(
        delayed(leibniz)(i, payload, a.terms) for i in range(n_pk)))
    t_jp *= a.items / n_pk
    with mp.get_context("fork").Pool(CORES) as pool:
        t_mp, _ = timed(lambda: pool.map(leibniz_pool,
                                         [(i, payload, a.terms) for i in range(n_pk)],
                                         chunksize=1))
    t_mp *= a.items / n_pk
    sp = t_ser / t_td
    print(f"  serial          {t_ser:8.3f} s (from {n_ser} items)")
    print(f"  tandem          {t_td:8.3f} s  speedup {sp:.2f}x = {sp / CORES:.2f} x cores "
          f"(target >= 0.95 x cores: {'met' if sp >= 0.95 * CORES else 'NOT met'})")
    print(f"  joblib memmap   {t_jm:8.3f} s  tandem is {t_jm / t_td:.2f}x faster")
    print(f"  joblib pickled  {t_jp:8.3f} s  (from {n_pk} items) tandem is {t_jp / t_td:.1f}x "
          "faster")
    print(f"  Pool, pickled   {t_mp:8.3f} s  (from {n_pk} items, one message per item, as "
          f"tqdm_batch's queue) tandem is {t_mp / t_td:.1f}x faster")

    # ---- 2. round trip -------------------------------------------------------------------
    n = a.roundtrips
    print(f"\n2. empty function, {n} batches of 1 item")
    rt.parallel(empty, range(100), batch_size=1)  # warm
    t_td, _ = timed(lambda: rt.parallel(empty, range(n), batch_size=1))
    with mp.get_context("fork").Pool(CORES) as pool:
        pool.map(empty, range(100), chunksize=1)
        t_mp, _ = timed(lambda: pool.map(empty, range(n), chunksize=1))
    Parallel(n_jobs=CORES, batch_size=1)(delayed(empty)(i) for i in range(100))
    t_jl, _ = timed(lambda: Parallel(n_jobs=CORES, batch_size=1)(
        delayed(empty)(i) for i in range(n)))
    us = lambda t: 1e6 * t / n  # noqa: E731
    print(f"  tandem          {us(t_td):8.1f} us per batch (target <= 20 us: "
          f"{'met' if us(t_td) <= 20 else 'NOT met'})")
    print(f"  Pool.map cs=1   {us(t_mp):8.1f} us")
    print(f"  joblib bs=1     {us(t_jl):8.1f} us")

    # ---- 3. memory of results -----------------------------------------------------------
    print(f"\n3. {a.results} results of {mb(rbytes)}, two slow calls: peak RSS growth of the "
          "process tree")
    window = 2 * CORES

    def consume(it):
        s = 0.0
        for x in it:
            s += float(x[0])
        return s

    for mode in ("list", "generator", "generator_unordered"):
        with PeakRSS() as m:
            r = rt.parallel(result_of, range(a.results), rbytes, batch_size=1, return_as=mode,
                            max_in_flight=window)
            consume(r)
            del r
        print(f"  tandem {mode:20s} {mb(m.grew):>8}  (window {window} x {mb(rbytes)} = "
              f"{mb(window * rbytes)})")
    with PeakRSS() as m:
        r = Parallel(n_jobs=CORES)(delayed(result_of)(i, rbytes) for i in range(a.results))
        consume(r)
        del r
    print(f"  joblib list                 {mb(m.grew):>8}")
    with mp.get_context("fork").Pool(CORES) as pool:
        with PeakRSS() as m:
            consume(pool.imap(result_pool, [(i, rbytes) for i in range(a.results)]))
    print(f"  Pool.imap                   {mb(m.grew):>8}")

    # ---- 4. a worker killed --------------------------------------------------------------
    print("\n4. a worker SIGKILLed mid-run")
    tries = rt.zeros(1, "i8", memory="shared")
    t0 = time.perf_counter()
    try:
        rt.parallel(kill_one, range(40), tries, batch_size=2)
        print("  NOT raised")
    except tandem.WorkerError as e:
        print(f"  raised WorkerError after {time.perf_counter() - t0:.3f} s: batch {e.batch}, "
              f"items {e.begin}..{e.end - 1}, pid {e.pid}, signal {e.signal}")
    tries[0] = 0
    t, r = timed(lambda: rt.parallel(kill_one, range(40), tries, batch_size=2, retries=1))
    print(f"  retries=1: {'all 40 results' if r == list(range(40)) else 'WRONG'} in {t:.3f} s")
    shm = [f for f in os.listdir("/dev/shm") if f.startswith("tandem-result")]
    print(f"  leftover result files in /dev/shm: {len(shm)}")
    rt.close()


if __name__ == "__main__":
    main()
