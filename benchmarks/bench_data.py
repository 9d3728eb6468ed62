"""Data-preparation speed on toyland: aras' pipeline against a straightforward baseline, in one run.

Baseline = what the authors' script does: reopen the land-cover raster for every patch and read its
window, and decode masks by looping over the palette with ``np.all``. Run: ``python benchmarks/bench_data.py``.
"""
import argparse, tempfile, time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window, from_bounds

from aras.data import AlignedPair, discover_tiles, patch_status, scale_rgb
from aras.landcover import PALETTE, labels_to_rgb, merge_lut, rgb_to_labels
from aras.toyland import ensure_toyland


def ours(pairs, size):
    lut, n = merge_lut("paper"), 0
    for pair in pairs:
        with AlignedPair(pair) as ap:
            rows, cols = ap.grid(size)
            for i in range(rows):
                codes, s2 = ap.read_strip(i, size)
                labels = lut[codes]
                for j in range(cols):
                    sl = np.s_[:, j * size:(j + 1) * size]
                    patch_status(labels[sl], s2[(slice(None),) + sl]); scale_rgb(s2[(slice(None),) + sl]); n += 1
    return n


def baseline_patches(pairs, size):
    "The authors' loop: every patch's remapped land-cover codes and S2 window, the land-cover raster reopened per patch."
    remap = {90: 10, 95: 10, 70: 60, 100: 30}
    for pair in pairs:
        with rasterio.open(pair.s2_path) as s2src:
            with AlignedPair(pair) as ap: rows, cols = ap.grid(size); c0, r0 = ap.window.col_off, ap.window.row_off
            for i in range(rows):
                for j in range(cols):
                    with rasterio.open(pair.map_path) as lc:                      # reopened for every patch
                        w = Window(c0 + j * size, r0 + i * size, size, size)
                        codes = lc.read(1, window=w)
                        b = rasterio.windows.bounds(w, lc.transform)
                    s2 = s2src.read((1, 2, 3, 4), window=from_bounds(*b, transform=s2src.transform).round_offsets().round_lengths())
                    for old, new in remap.items(): codes[codes == old] = new
                    yield pair.tile, i, j, codes, s2


def baseline(pairs, size):
    n = 0
    for _, _, _, codes, s2 in baseline_patches(pairs, size):
        (codes == 0).any(); (codes == 80).mean(); scale_rgb(s2); n += 1
    return n


def baseline_end_to_end(pairs, size, out: Path):
    "The baseline with what both must also do: write each kept patch's image and mask as PNG (PIL's default settings)."
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True); lut, n = merge_lut("paper"), 0
    for tile, i, j, codes, s2 in baseline_patches(pairs, size):
        if (codes == 0).any() or (codes == 80).mean() > 0.9: continue
        name = f"{tile}_{i:03d}_{j:03d}.png"
        Image.fromarray(scale_rgb(s2)).save(out / f"img_{name}")
        Image.fromarray(labels_to_rgb(lut[codes])).save(out / f"mask_{name}"); n += 1
    return n


def decode_baseline(rgb):
    labels = np.zeros(rgb.shape[:2], np.uint8)
    for k, colour in enumerate(PALETTE):                                         # one pass per colour
        labels[np.all(rgb == colour, axis=-1)] = k
    return labels


def timed(f, *a, repeat=3):
    best = min((lambda t: (f(*a), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(repeat))
    return f(*a), best


if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--px", type=int, default=2048); ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    raw = ensure_toyland(0, n_tiles=4, tile_px=args.px, root=Path(tempfile.gettempdir()) / "aras-bench")
    pairs = discover_tiles(raw)
    n1, t1 = timed(ours, pairs, args.size)
    n0, t0 = timed(baseline, pairs, args.size)
    assert n0 == n1
    print(f"patch extraction ({n1} patches of {args.size} px, {len(pairs)} toyland tiles of {args.px} px)")
    print(f"  baseline (reopen land cover per patch): {n0 / t0:8.1f} patches/s")
    print(f"  aras (each raster opened once, strips):  {n1 / t1:8.1f} patches/s   ratio {t0 / t1:5.2f}x")
    # end to end, PNG files written (what a user waits for): the baseline, then aras with 1 and 2 processes
    from aras.core import get_profile
    from aras.data import data_settings
    from aras.prepare import prepare_dataset
    settings = dict(data_settings(get_profile("paper").data), patch_size=args.size)
    with tempfile.TemporaryDirectory() as d:
        tb = time.perf_counter(); nb = baseline_end_to_end(pairs, args.size, Path(d) / "base"); tb = time.perf_counter() - tb
        times = {}
        for w in (1, 2):
            t = time.perf_counter(); kept = (prepare_dataset(raw, Path(d) / f"w{w}", settings, progress=False, workers=w).status == "kept").sum()
            times[w] = time.perf_counter() - t
    print(f"end to end, PNGs written ({kept} kept patches; baseline {nb})")
    print(f"  baseline (authors' loop, PIL defaults): {tb:6.1f} s")
    for w, t in times.items():
        print(f"  aras prepare_dataset, {w} process{'es' if w > 1 else ''}:  {t:6.1f} s   ratio to baseline {tb / t:5.2f}x"
              + (f", to 1 process {times[1] / t:5.2f}x" if w > 1 else ""))
    labels = np.random.default_rng(0).integers(0, 7, (64, 256, 256)).astype(np.uint8)
    rgb = labels_to_rgb(labels)
    d1, s1 = timed(lambda: [rgb_to_labels(m) for m in rgb])
    d0, s0 = timed(lambda: [decode_baseline(m) for m in rgb])
    assert all((a == b).all() for a, b in zip(d0, d1))
    print(f"mask decoding ({len(rgb)} masks of 256 px)")
    print(f"  baseline (np.all per colour): {len(rgb) / s0:8.1f} masks/s")
    print(f"  aras (24-bit key lookup):     {len(rgb) / s1:8.1f} masks/s   ratio {s0 / s1:5.2f}x")
