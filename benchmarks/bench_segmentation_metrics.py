"""Segmentation metrics: aras' streaming confusion matrix against the authors' method, in one run.

Authors' method (``segmentation_train.py``, ``evaluate``): keep every predicted and true pixel of the test set,
concatenate them, then call scikit-learn (accuracy, macro IoU / precision / recall / F1, per-class IoU and F1).
aras: a torchmetrics confusion matrix updated batch by batch, every metric from its 49 numbers
(``aras.stats.metrics_from_cm``).

Both consume the same stream of predicted and true label batches (what a model emits on a test set); only
the metric work is timed. Each (method, number of images) runs in a fresh process, whose peak resident memory
above its state before the stream is reported (Linux: VmHWM after resetting it via /proc/self/clear_refs).
Run: ``python benchmarks/bench_segmentation_metrics.py [--images 50 100 200] [--size 256]``.
"""
import argparse, multiprocessing as mp, os, re, time

import numpy as np


def _rss_kb(field):
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read())[1])


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError: return False


def _stream(n_images, size, batch, seed=0, pool=4):
    "Fresh (pred, true) int64 label batches, like a test loader's argmax outputs and masks (cycled from a few made up front)."
    import torch
    g = torch.Generator().manual_seed(seed)
    made = []
    for _ in range(pool):
        true = torch.randint(0, 7, (batch, size // 16, size // 16), generator=g).repeat_interleave(16, 1).repeat_interleave(16, 2)
        noise = torch.randint(0, 7, (batch, size, size), generator=g)
        made.append((torch.where(torch.rand((batch, size, size), generator=g) < 0.8, true, noise), true))
    def batches():
        for k, s in enumerate(range(0, n_images, batch)):
            b = min(batch, n_images - s); pred, true = made[k % pool]
            yield pred[:b].clone(), true[:b].clone()
    return batches()


def measure(method, n_images, size, batch):
    import torch
    torch.set_num_threads(1)
    from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score
    from aras.segmentation import confusion_meter
    from aras.stats import metrics_from_cm
    gen = _stream(n_images, size, batch)                         # its batches are made here, before the baseline
    warm = next(_stream(batch, size, batch, pool=1))              # warm up: imports, a batch, one call of each method
    m = confusion_meter(); m.update(*warm); metrics_from_cm(m.compute().numpy())
    f1_score(warm[1].numpy().ravel()[:100], warm[0].numpy().ravel()[:100], average="macro", zero_division=0)
    exact = _reset_peak()
    base = _rss_kb("VmRSS")
    spent = 0.0
    if method == "streaming":
        meter = confusion_meter()
        for pred, true in gen:
            t = time.perf_counter(); meter.update(pred, true); spent += time.perf_counter() - t
        t = time.perf_counter()
        m = metrics_from_cm(meter.compute().numpy())
        out = dict(f1=m["f1"], iou=m["iou"], precision=m["precision"], recall=m["recall"], accuracy=m["accuracy"],
                   f1_c=m["f1_per_class"], iou_c=m["iou_per_class"])
        spent += time.perf_counter() - t
    else:
        preds, labels = [], []
        for pred, true in gen:
            t = time.perf_counter(); preds.append(pred.cpu().numpy()); labels.append(true.cpu().numpy()); spent += time.perf_counter() - t
        t = time.perf_counter()
        y_pred = np.concatenate([a.ravel() for a in preds]); y_true = np.concatenate([a.ravel() for a in labels])
        out = dict(accuracy=(y_pred == y_true).mean(), iou=jaccard_score(y_true, y_pred, average="macro", zero_division=0),
                   precision=precision_score(y_true, y_pred, average="macro", zero_division=0),
                   recall=recall_score(y_true, y_pred, average="macro", zero_division=0),
                   f1=f1_score(y_true, y_pred, average="macro", zero_division=0),
                   iou_c=jaccard_score(y_true, y_pred, average=None, zero_division=0),
                   f1_c=f1_score(y_true, y_pred, average=None, zero_division=0))
        spent += time.perf_counter() - t
    peak = _rss_kb("VmHWM") - base
    del warm
    return dict(seconds=spent, peak_mb=max(peak, 0) / 1024, exact_peak=exact, metrics={k: np.asarray(v).tolist() for k, v in out.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--size", type=int, default=256, help="patch size in pixels (the paper: 256)")
    ap.add_argument("--batch", type=int, default=24, help="images per batch (the authors' batch size)")
    a = ap.parse_args()
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")     # big buffers from mmap: freed memory leaves the RSS
    ctx = mp.get_context("spawn")
    rows = []
    with ctx.Pool(1, maxtasksperchild=1) as pool:                 # a fresh process per measurement
        for n in a.images:
            s = pool.apply(measure, ("streaming", n, a.size, a.batch))
            k = pool.apply(measure, ("sklearn", n, a.size, a.batch))
            for key in s["metrics"]:
                np.testing.assert_allclose(s["metrics"][key], k["metrics"][key], rtol=1e-9, atol=1e-12, err_msg=key)
            rows.append((n, s, k))
    print(f"{a.size}x{a.size} px patches, batches of {a.batch}; both methods give the same metrics (checked to 1e-9)\n")
    print(f"{'images':>7} {'pixels':>12} {'stream s':>9} {'sklearn s':>10} {'speed x':>8} {'stream MB':>10} {'sklearn MB':>11} {'memory x':>9}")
    for n, s, k in rows:
        print(f"{n:7d} {n * a.size**2:12,d} {s['seconds']:9.3f} {k['seconds']:10.3f} {k['seconds'] / s['seconds']:8.1f} "
              f"{s['peak_mb']:10.1f} {k['peak_mb']:11.1f} {k['peak_mb'] / max(s['peak_mb'], 0.1):9.1f}")
    (n0, s0, k0), (n1, s1, k1) = rows[0], rows[-1]
    grow = lambda a_, b_: (b_ - a_) / (n1 - n0) * 1000
    print(f"\nspeed ratio at {n1} images: {k1['seconds'] / s1['seconds']:.0f}x faster")
    print(f"memory growth per 1000 images: streaming {grow(s0['peak_mb'], s1['peak_mb']):.1f} MB, "
          f"concatenate + scikit-learn {grow(k0['peak_mb'], k1['peak_mb']):.0f} MB")
    if not all(r[1]["exact_peak"] for r in rows):
        print("(peak memory could not be reset via /proc/self/clear_refs: peaks include the process start)")


if __name__ == "__main__":
    main()
