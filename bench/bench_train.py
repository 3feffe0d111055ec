#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_train.py: training steps/s of the digits MLP, PyTorch on the CPU vs tandem.

The same model and data on both sides: the MLP 64 -> 128 -> 10 (ReLU, softmax cross-entropy)
of samples/train_mlp.c, Adam (lr 3e-3, weight decay 1e-4), mini-batches of 32 shuffled each
epoch, on the digits data set (1797 8x8 images, features / 16) with the stratified 80/20
split of train_mlp.c (its splitmix64 shuffle is reproduced here, so both sides train and test
on the very same rows).

  PyTorch  nn.Sequential(Linear(64,128), ReLU, Linear(128,10)), CrossEntropyLoss, Adam;
           torch.set_num_threads(--threads); the training loop alone is timed (the test
           accuracy is computed after it).
  tandem   runs `sample_train_mlp --epochs E --batch 32 --quiet` (TDM_DATA_DIR set, and
           TDM_NUM_THREADS = --threads) and parses its lines
           "N steps in T s: S steps/s (...)" and "test accuracy A". Its timed loop includes
           a forward pass over the 359 test rows after every epoch (small next to an epoch).

Three runs each, interleaved (torch, tandem, torch, ...); the medians are compared.
This script builds nothing:

    /usr/bin/python3 bench/bench_train.py [--tandem build/samples/sample_train_mlp]
        [--epochs 30] [--batch 32] [--threads 2] [--runs 3] [--data DIR]

Without torch it says so and exits 0. On a GPU machine the comparison would be repeated with
`sample_train_mlp --policy gpu` against the model and batches moved with .cuda(); that is not
run here.
"""
import argparse
import gzip
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
F, C = 64, 10
M64 = (1 << 64) - 1

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError as e:
    print("bench_train.py: PyTorch/numpy not importable (%s): nothing measured. Install with: "
          "apt-get install -y python3-torch (Debian), and run with /usr/bin/python3" % e)
    sys.exit(0)


class SplitMix64:
    """train_mlp.c's generator, to reproduce its split exactly."""

    def __init__(self, seed):
        self.s = seed & M64

    def uniform(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0)

    def shuffle(self, v):
        for i in range(len(v) - 1, 0, -1):
            j = int(self.uniform() * (i + 1))
            v[i], v[j] = v[j], v[i]


def load(path):
    with gzip.open(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float64)
    x = (a[:, :F] / 16.0).astype(np.float32)
    y = a[:, F].astype(np.int64)
    keep = (y >= 0) & (y < C)
    return x[keep], y[keep]


def stratified_split(y, seed):
    """train_mlp.c's split: per class, shuffled, round(20%) to the test set."""
    rng = SplitMix64(seed)
    train, test = [], []
    for c in range(C):
        idx = [int(i) for i in np.nonzero(y == c)[0]]
        rng.shuffle(idx)
        t = int(np.floor(0.2 * len(idx) + 0.5))  # lround
        test += idx[:t]
        train += idx[t:]
    return np.array(train), np.array(test)


def run_torch(x, y, train, test, epochs, batch, seed):
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    xv, yv = torch.from_numpy(x[test]), torch.from_numpy(y[test])
    model = nn.Sequential(nn.Linear(F, 128), nn.ReLU(), nn.Linear(128, C))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    n = len(train)
    g = torch.Generator().manual_seed(seed)
    steps = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            steps += 1
    wall = time.perf_counter() - t0
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    return {"steps": steps, "wall": wall, "steps_s": steps / wall, "samples_s": epochs * n / wall,
            "acc": acc}


STEPS_RE = re.compile(r"(\d+) steps in ([0-9.]+) s: ([0-9.]+) steps/s \(([0-9.]+) samples/s\)")
ACC_RE = re.compile(r"test accuracy ([0-9.]+)")


def run_tandem(exe, data_dir, epochs, batch, threads):
    env = dict(os.environ, TDM_DATA_DIR=data_dir, TDM_NUM_THREADS=str(threads))
    p = subprocess.run([exe, "--epochs", str(epochs), "--batch", str(batch), "--quiet"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600)
    m, a = STEPS_RE.search(p.stdout), ACC_RE.search(p.stdout)
    if p.returncode != 0 or not m or not a:
        raise RuntimeError("%s exited %d; output:\n%s" % (exe, p.returncode, p.stdout))
    steps, wall = int(m.group(1)), float(m.group(2))
    return {"steps": steps, "wall": wall, "steps_s": float(m.group(3)),
            "samples_s": float(m.group(4)), "acc": float(a.group(1))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_exe = os.path.normpath(os.path.join(HERE, "..", "build", "samples", "sample_train_mlp"))
    ap.add_argument("--tandem", default=default_exe if os.path.exists(default_exe) else None,
                    help="the sample_train_mlp executable (default %s if it exists)" % default_exe)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads, TDM_NUM_THREADS")
    ap.add_argument("--runs", type=int, default=3, help="runs of each side (median)")
    ap.add_argument("--seed", type=int, default=0, help="the split's seed (train_mlp's --seed 0)")
    ap.add_argument("--data", default=os.path.normpath(os.path.join(HERE, "..", "tests",
                                                                     "data")),
                    help="directory holding digits.csv.gz")
    a = ap.parse_args()
    if a.epochs < 1 or a.batch < 1 or a.threads < 1 or a.runs < 1:
        ap.error("--epochs, --batch, --threads and --runs must be >= 1")
    path = os.path.join(a.data, "digits.csv.gz")
    if not os.path.exists(path):
        print("bench_train.py: %s not found (--data DIR)" % path)
        return 1
    if a.tandem and not os.access(a.tandem, os.X_OK):
        print("bench_train.py: --tandem %s is not an executable" % a.tandem)
        return 1

    torch.set_num_threads(a.threads)
    x, y = load(path)
    train, test = stratified_split(y, a.seed)
    print("digits: %d samples, %d train / %d test (train_mlp's stratified split, seed %d); "
          "MLP %d-128-%d, Adam lr 3e-3 wd 1e-4, batch %d, %d epochs, %d threads"
          % (len(y), len(train), len(test), a.seed, F, C, a.batch, a.epochs, a.threads))
    print("PyTorch %s (CPU, %d threads); tandem: %s" % (torch.__version__, torch.get_num_threads(),
                                                        a.tandem or "not given (--tandem PATH)"))
    res = {"torch": [], "tandem": []}
    for r in range(a.runs):
        t = run_torch(x, y, train, test, a.epochs, a.batch, a.seed + r)
        res["torch"].append(t)
        print("run %d  PyTorch  %5d steps in %6.3f s: %7.0f steps/s (%7.0f samples/s), "
              "test accuracy %.4f" % (r + 1, t["steps"], t["wall"], t["steps_s"], t["samples_s"],
                                      t["acc"]))
        if a.tandem:
            d = run_tandem(a.tandem, a.data, a.epochs, a.batch, a.threads)
            res["tandem"].append(d)
            print("run %d  tandem   %5d steps in %6.3f s: %7.0f steps/s (%7.0f samples/s), "
                  "test accuracy %.4f" % (r + 1, d["steps"], d["wall"], d["steps_s"],
                                          d["samples_s"], d["acc"]))
        sys.stdout.flush()

    def med(side, key):
        return statistics.median(v[key] for v in res[side])

    print("\nmedian of %d runs:" % a.runs)
    print("  %-8s %9s %11s %9s" % ("", "steps/s", "samples/s", "test acc"))
    for side in ("torch", "tandem"):
        if res[side]:
            print("  %-8s %9.0f %11.0f %9.4f" % ("PyTorch" if side == "torch" else side,
                                                med(side, "steps_s"), med(side, "samples_s"),
                                                med(side, "acc")))
    if res["tandem"]:
        print("  tandem / PyTorch: %.2fx steps/s" % (med("tandem", "steps_s") /
                                                     med("torch", "steps_s")))
    else:
        print("  (tandem not run: pass --tandem PATH to sample_train_mlp)")
    gpu = torch.cuda.is_available()
    print("\nnote: CPU only. On a GPU machine the comparison would be repeated with "
          "`sample_train_mlp --policy gpu` against the same model with .cuda() (model and "
          "batches on the device) — not run here (%s)."
          % ("torch sees a CUDA device, but this script compares CPUs only" if gpu
             else "no GPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
