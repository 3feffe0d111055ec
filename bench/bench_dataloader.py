#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_dataloader.py: the PyTorch side of the image preprocessing benchmark.

Measures torch.utils.data.DataLoader throughput (images/s: median of timed epochs after one
warm-up epoch; persistent workers, so worker start-up is not in the timed epochs) with 2 worker
processes (and 0 for reference), batch 64, on two workloads:

  synthetic  u8 3x224x224 made per item (seeded), float /255, Normalize(ImageNet), random
             horizontal flip: no I/O, no decoding, the cost of the loader itself;
  jpeg       china.jpg / flower.jpg (640x427) in turn from tests/data: PIL open +
             convert("RGB"), RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize.

    /usr/bin/python3 bench/bench_dataloader.py [--images 1024] [--tandem PATH]

With --tandem PATH it runs `PATH --variant synthetic|jpeg --images N --workers 2 --batch 64`,
reads its `tandem_img_per_s <number>` line and prints the ratio to DataLoader(2 workers) and
whether the targets are met. Without torch it says so and exits 0.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torchvision
    import torchvision.transforms as T
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
except ImportError as e:
    print("bench_dataloader.py: PyTorch/torchvision/PIL not importable (%s): nothing measured. "
          "Install with: apt-get install python3-torch python3-torchvision python3-pil "
          "(and run with /usr/bin/python3)" % e)
    sys.exit(0)

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
TARGETS = {"synthetic": 5.0, "jpeg": 1.5}
HERE = os.path.dirname(os.path.abspath(__file__))


class SyntheticDataset(Dataset):
    def __init__(self, n, seed):
        self.n, self.seed = n, seed
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000003 + i)
        x = torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8, generator=g)
        x = (x.float().div_(255) - self.mean).div_(self.std)
        if torch.rand(1, generator=g).item() < 0.5:
            x = x.flip(-1)
        return x


class JpegDataset(Dataset):
    def __init__(self, n, paths):
        self.n, self.paths = n, paths
        self.tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize(MEAN, STD)])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with Image.open(self.paths[i % len(self.paths)]) as im:
            return self.tf(im.convert("RGB"))


def epoch(loader, device):
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        n += batch.shape[0]
    if device is not None:
        torch.cuda.synchronize()
    return n, time.perf_counter() - t0


def measure(ds, workers, batch, epochs, pin, device):
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0)
    epoch(loader, device)  # warm-up: worker start-up, page cache, allocator
    rates = []
    for _ in range(epochs):
        n, dt = epoch(loader, device)
        rates.append(n / dt)
    del loader  # stops the persistent workers
    return statistics.median(rates), rates


def run_tandem(path, variant, images, workers, batch):
    cmd = [path, "--variant", variant, "--images", str(images), "--workers", str(workers),
           "--batch", str(batch)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "cannot run %s: %s" % (" ".join(cmd), e)
    for line in r.stdout.splitlines():
        m = re.match(r"^\s*tandem_img_per_s\s+([0-9.eE+-]+)\s*$", line)
        if m and r.returncode == 0:
            return float(m.group(1)), None
    tail = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or [""])[-1]
    return None, "%s: exit %d, no 'tandem_img_per_s <number>' line (%s)" % (
        " ".join(cmd), r.returncode, tail)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1024, help="images per epoch (default 1024)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "tests", "data"))
    ap.add_argument("--variants", default="synthetic,jpeg")
    ap.add_argument("--tandem", metavar="PATH", help="the tandem side's executable")
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    if a.images <= 0 or a.batch <= 0 or a.workers < 1 or a.epochs < 1 or \
            any(v not in TARGETS for v in variants):
        sys.exit("bench_dataloader.py: bad arguments")
    paths = [os.path.normpath(os.path.join(a.data, f)) for f in ("china.jpg", "flower.jpg")]
    if "jpeg" in variants and not all(os.path.isfile(p) for p in paths):
        sys.exit("bench_dataloader.py: %s not found (--data DIR)" % " / ".join(paths))

    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else None
    print("torch %s, torchvision %s, PIL %s, Python %s; %d CPUs; torch threads %d" % (
        torch.__version__, torchvision.__version__, Image.__version__,
        sys.version.split()[0], os.cpu_count(), torch.get_num_threads()))
    if cuda:
        print("CUDA: %s: pin_memory=True, each batch copied to the GPU (non_blocking) and the "
              "epoch synchronised" % torch.cuda.get_device_name(0))
    else:
        print("no CUDA: pin_memory=False, batches stay in host memory (no device copy timed)")
    print("%d images/epoch, batch %d, median of %d timed epochs after 1 warm-up, persistent "
          "workers" % (a.images, a.batch, a.epochs))

    results = {}
    for v in variants:
        ds = SyntheticDataset(a.images, a.seed) if v == "synthetic" else JpegDataset(a.images,
                                                                                     paths)
        for w in (0, a.workers):
            med, rates = measure(ds, w, a.batch, a.epochs, cuda, device)
            results[(v, w)] = med
            print("DataLoader %-9s workers=%d: %9.1f img/s   (epochs: %s)" % (
                v, w, med, ", ".join("%.1f" % r for r in rates)))

    if a.tandem:
        for v in variants:
            base = results[(v, a.workers)]
            got, why = run_tandem(a.tandem, v, a.images, a.workers, a.batch)
            if got is None:
                print("tandem     %-9s: not measured: %s" % (v, why))
                print("target: %s >= %gx DataLoader(%d workers) NOT met (no tandem figure)" % (
                    v, TARGETS[v], a.workers))
                continue
            ratio = got / base
            print("tandem     %-9s workers=%d: %9.1f img/s   ratio tandem / DataLoader(%d "
                  "workers) = %.2fx" % (v, a.workers, got, a.workers, ratio))
            print("target: %s >= %gx DataLoader(%d workers) %s (%.2fx)" % (
                v, TARGETS[v], a.workers, "met" if ratio >= TARGETS[v] else "NOT met", ratio))

    print("copies per byte, worker to device (DataLoader, from its design, not measured):\n"
          "  1. the worker collates its samples into a batch tensor in shared memory (one copy\n"
          "     of every byte into shm; the main process receives a handle, not the bytes);\n"
          "  2. with pin_memory=True the pin-memory thread copies the batch into page-locked\n"
          "     host memory (a second copy);\n"
          "  3. the host-to-device DMA (.to('cuda')) reads it once over the bus.\n"
          "  So 2 CPU copies + 1 DMA per byte. Without pin_memory the CUDA driver stages the\n"
          "  pageable batch through its own pinned buffer: the same copies, serialised with the\n"
          "  transfer.")


if __name__ == "__main__":
    main()
