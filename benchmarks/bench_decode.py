"""PNG decoding, serial (one image after the other in the main thread, as the loaders did) against `data.decode_many`
(the shared decoding threads every loader now uses), on the same files in one run; the ratio is what a loader gains.

Run: ``python benchmarks/bench_decode.py [--n 800] [--px 256]``. Files are toyland-like 256 px patches (smooth fields
with texture, PNG at the dataset's compression level 1) written to a temporary folder first; each way is timed twice,
the faster kept (the page cache is warm for both)."""
import argparse, os, tempfile, time
from pathlib import Path

import numpy as np

from aras.data import _write_png, decode_many, read_png


def write_patches(folder: Path, n: int, px: int) -> list:
    rng = np.random.default_rng(0)
    base = np.stack(np.meshgrid(np.linspace(0, 1, px), np.linspace(0, 1, px)), -1).sum(-1)
    out = []
    for k in range(n):
        img = (base[..., None] * rng.uniform(40, 120, 3) + rng.normal(0, 12, (px, px, 3)) + rng.uniform(0, 80, 3)).clip(0, 255)
        out.append(folder / f"p{k:05d}.png"); _write_png(img.astype(np.uint8), out[-1])
    return out


def best_of(f, reps=2):
    t = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return min(t)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--n", type=int, default=800); ap.add_argument("--px", type=int, default=256)
    a = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as d:
        files = write_patches(Path(d), a.n, a.px)
        serial = best_of(lambda: [read_png(f) for f in files])
        threads = best_of(lambda: decode_many(read_png, files))
    print(f"{a.n} PNGs of {a.px} px: serial {serial:.2f} s ({a.n / serial:.0f} img/s), decode_many {threads:.2f} s "
          f"({a.n / threads:.0f} img/s): {serial / threads:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
