"""Feature cache of the metric suite: a cold run (decode + network) against a warm rerun (hash + load), in one run.

Images: toyland-like random 256 px PNGs written to a temporary folder (no dataset needed). Spaces: ImageNet
EfficientNet-Lite0 and its rotation-invariant version. The issue asks for warm >= 10x faster than cold.
Run: ``python benchmarks/bench_metrics_cache.py [--n 64]``.
"""
import argparse, tempfile, time
from pathlib import Path

import numpy as np
from PIL import Image

from aras.metrics import extract_features, get_extractor


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--n", type=int, default=64); ap.add_argument("--px", type=int, default=256)
    a = ap.parse_args()
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
