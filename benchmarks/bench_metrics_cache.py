"""Feature cache of the metric suite: a cold run (decode + network) against a warm rerun (hash + load), in one run.

Images: toyland-like random 256 px PNGs written to a temporary folder (no dataset needed). Spaces: ImageNet
EfficientNet-Lite0 and its rotation-invariant version. The issue asks for warm >= 10x faster than cold.
Also the cost of a set metric's interval: every half-sample replicate indexes one Gram matrix of the two sets
(`SetPair`), against recomputing each replicate from its features (what a resampler without the Gram matrix does).
Run: ``python benchmarks/bench_metrics_cache.py [--n 64] [--sets 115 128] [--dim 1280] [--reps 50]``.
"""
import argparse, tempfile, time
from pathlib import Path

import numpy as np
from PIL import Image

from aras.distributional import SET_METRICS, SetPair, subsample_ci
from aras.metrics import extract_features, get_extractor


def bench_intervals(n_real: int, n_fake: int, dim: int, reps: int):
    "Seconds for `reps` half-sample replicates of every set metric: Gram indexing vs a Gram per replicate."
    rng = np.random.default_rng(0)
    r, f = rng.normal(size=(n_real, dim)), rng.normal(0.2, 1, size=(n_fake, dim))
    t0 = time.perf_counter(); pair = SetPair(r, f); point = pair.metrics(np.arange(n_real), np.arange(n_fake), SET_METRICS)
    subsample_ci(lambda i, j: pair.metrics(i, j, SET_METRICS), (n_real, n_fake), point, reps); t_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    subsample_ci(lambda i, j: SetPair(r[i], f[j]).metrics(np.arange(len(i)), np.arange(len(j)), SET_METRICS), (n_real, n_fake), point, reps)
    t_each = time.perf_counter() - t0
    print(f"{reps} half-sample replicates of {len(SET_METRICS)} set metrics, {n_real} vs {n_fake} images, {dim}-d: "
          f"one Gram matrix {t_gram:.2f} s, a Gram per replicate {t_each:.2f} s ({t_each / t_gram:.1f}x)")


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--n", type=int, default=64); ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--sets", type=int, nargs=2, default=(115, 128)); ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args()
    bench_intervals(*a.sets, a.dim, a.reps)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); rng = np.random.default_rng(0); paths = []
        for i in range(a.n):
            p = d / f"img{i:04d}.png"
            Image.fromarray(rng.integers(0, 256, (a.px, a.px, 3), dtype=np.uint8)).save(p); paths.append(p)
        print(f"{a.n} PNG images of {a.px} px")
        for name in ("lite0", "lite0+rot8"):
            ext, cache = get_extractor(name), d / f"cache-{name}"
            t0 = time.perf_counter(); cold = extract_features(ext, paths, 32, cache=cache, progress=False); t_cold = time.perf_counter() - t0
            t0 = time.perf_counter(); warm = extract_features(ext, paths, 32, cache=cache, progress=False); t_warm = time.perf_counter() - t0
            assert np.array_equal(cold, warm)
            print(f"{name:12s} cold {t_cold:7.2f} s   warm {t_warm:6.3f} s   warm is {t_cold / t_warm:6.0f}x faster")


if __name__ == "__main__":
    main()
