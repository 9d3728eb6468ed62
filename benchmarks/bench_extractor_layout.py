"""Lite0 features at 224 px (chapter 07's `lite0` space, the GANs' training FID) three ways, measured in the same run:
the plain model, the model in channels-last memory, and the library's model (channels-last, BatchNorms folded into the
convolutions): milliseconds per image (resize and normalisation included) at 1 and 2 threads, ratios against the plain
model, and how far the features differ (relative to the largest).

    python benchmarks/bench_extractor_layout.py [--n 64] [--reps 3]
"""
import argparse, time

import torch

from aras.images import LITE_NORM, resize_square
from aras.metrics import _normalise, lite0_imagenet


def features(m, x, layout):
    "Pooled Lite0 features of uint8 images `x`, the model and its input in `layout`."
    with torch.inference_mode():
        y = _normalise(resize_square(x, 224), *LITE_NORM).contiguous(memory_format=layout)
        return m.forward_head(m.forward_features(y), pre_logits=True)


def ms_per_image(fn, n: int, reps: int) -> float:
    "Milliseconds per image of `fn()` on `n` images, after one warm-up call."
    fn()
    t0 = time.perf_counter()
    for _ in range(reps): fn()
    return (time.perf_counter() - t0) / (reps * n) * 1000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images per batch (the FID tracker's chunk)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    x = (torch.rand(a.n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    plain = lite0_imagenet(fast=False)
    variants = {"channels-last": (lite0_imagenet(fast=False).to(memory_format=torch.channels_last), torch.channels_last),
                "channels-last + folded BatchNorm (the library's)": (lite0_imagenet(), torch.channels_last)}
    ref = features(plain, x, torch.contiguous_format)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        base = ms_per_image(lambda: features(plain, x, torch.contiguous_format), a.n, a.reps)
        print(f"{threads} thread(s): plain model {base:.1f} ms/image", end="")
        for name, (m, layout) in variants.items():
            ms = ms_per_image(lambda: features(m, x, layout), a.n, a.reps)
            print(f"; {name} {ms:.1f}: {base / ms:.2f}x", end="")
        print()
    for name, (m, layout) in variants.items():
        rel = float((features(m, x, layout) - ref).abs().max() / ref.abs().max())
        print(f"{name}: features differ from the plain model's by at most {rel:.1e} of the largest")

if __name__ == "__main__":
    main()
