"""GAN training throughput on this machine: images/s and minutes per kimg for both models, at the tiny and
the paper resolution (paper channel widths), so that a paper-scale run can be planned.

Measured, not asserted: a few training steps after one warm-up step, on random images and masks.
Run: ``python benchmarks/bench_gan.py [--steps 3] [--device cpu]``.
"""
import argparse, time

import torch

from aras.core import get_profile
from aras.gan import TASKS


def throughput(kind, cfg, batch, steps, device):
    task = TASKS[kind](cfg, device)
    reals = torch.rand(batch, 3, cfg.resolution, cfg.resolution, device=device) * 2 - 1
    labels = torch.randint(0, 7, (batch, cfg.resolution, cfg.resolution), device=device)
    task.train_step(reals, labels, 1, batch, 10_000)                     # warm-up
    t = time.perf_counter()
    for s in range(steps):
        task.train_step(reals, labels, s, batch, 10_000)                 # includes R1 / path length on their steps
    return steps * batch / (time.perf_counter() - t)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--steps", type=int, default=3); ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rows = []
    for prof in ("smoke", "paper"):
        for kind in ("uncond", "cond"):
            cfg = get_profile(prof).gan[kind]
            batch = cfg.batch if prof == "smoke" or args.device != "cpu" else 4   # paper batches do not fit a CPU step
            ips = throughput(kind, cfg, batch, args.steps if prof == "smoke" else 1, args.device)
            rows.append((prof, kind, cfg.resolution, batch, ips, 1000 / ips / 60, cfg.kimg * 1000 / ips / 3600))
            print(f"{prof:5s} {kind:6s} {cfg.resolution:4d} px  batch {batch:3d}: {ips:8.2f} img/s  "
                  f"{rows[-1][5]:8.2f} min/kimg  -> {cfg.kimg:g} kimg in {rows[-1][6]:9.1f} h on this device", flush=True)
    tiny_u = rows[0][4]
    print(f"ratio smoke/paper images per second (uncond): {tiny_u / rows[2][4]:.1f}x")
