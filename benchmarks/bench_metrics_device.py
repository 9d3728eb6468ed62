"""Set metrics on the features' device (issue 31): the same work with the features as NumPy arrays (the CPU
path, as before the change: the baseline, measured in the same run) and as tensors on `--device` (what a GPU
run gets from `features_on`). Prints seconds and the ratio baseline / device for each piece of chapter 07a's
work:

* the half-sample replicates of every set metric (`set_metrics`, Gram blocks of at most `--rows` rows a set),
* the paired FID-difference replicates (`fid_difference`: two FIDs from the features per replicate),
* the real-vs-real floor by the chunked whole-set estimators (`real_floor` above `MAX_GRAM`: CMMD, KID, k-NN).

On a CPU-only machine both sides run on the CPU (the ratio is the torch path's own cost there, about 1); on
a GPU (`--device cuda`) the ratio is the speed-up. Sizes are a scaled-down paper setting (its 50k images,
2048-d, 1000 replicates of 5000 rows take hours per space on the CPU).
Run: ``python benchmarks/bench_metrics_device.py [--n 1500] [--dim 256] [--rows 400] [--reps 10] [--repeat 3]
[--device cuda]``.
"""
import argparse, time

import numpy as np
import torch
from fastcore.basics import AttrDict

from aras import distributional as DM
from aras.metrics import features_on


def timed(fn, repeat: int) -> float:
    "Seconds of the fastest of `repeat` calls of `fn` (a GPU's queue drained before and after each)."
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    best = float("inf")
    for _ in range(repeat):
        sync(); t0 = time.perf_counter(); fn(); sync()
        best = min(best, time.perf_counter() - t0)
    return best


def work(real, fake, other, pool, a) -> dict:
    "The three pieces of work, each as a function of nothing."
    S = AttrDict(kid_subset_size=min(100, a.n), kid_subsets=10, k=3, n_boot=a.reps, is_splits=5,
                 ci_max_rows=a.rows)
    return {f"set_metrics, {a.reps} replicates": lambda: DM.set_metrics(real, fake, S, seed=0),
            f"fid_difference, {a.reps} replicates": lambda: DM.fid_difference(real, fake, other, a.reps),
            "real_floor, chunked estimators, 2 reps": lambda: DM.real_floor(pool, a.n, a.n, reps=2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500, help="images per set")
    ap.add_argument("--dim", type=int, default=256); ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="calls per timing; the fastest counts")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    DM.MAX_GRAM = min(DM.MAX_GRAM, 2 * a.n - 1)          # the floor by the paper-scale path (no Gram matrix)
    rng = np.random.default_rng(0)
    real, fake, other = (rng.normal(mu, 1, size=(a.n, a.dim)).astype(np.float32) for mu in (0, 0.1, 0.2))
    pool = np.concatenate([real, other])
    on_device = [torch.as_tensor(v, device=a.device) for v in (real, fake, other, pool)]   # as on a GPU
    assert features_on(real, "cpu") is real              # the CPU path keeps arrays: the baseline below
    print(f"{a.n} vs {a.n} images, {a.dim}-d, replicates of at most {a.rows} rows; "
          f"torch threads {torch.get_num_threads()}")
    base, dev = work(real, fake, other, pool, a), work(*on_device, a)
    for name in base:
        t_base, t_dev = timed(base[name], a.repeat), timed(dev[name], a.repeat)
        print(f"{name:40s} arrays (CPU, baseline) {t_base:7.2f} s   tensors on {a.device:5s} "
              f"{t_dev:7.2f} s   ratio {t_base / t_dev:5.2f}x")


if __name__ == "__main__":
    main()
