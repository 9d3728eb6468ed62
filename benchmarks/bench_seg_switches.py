"""Segmentation speed switches on this CPU, end to end: wall time and test macro F1 of converged Real runs.

The training-step benchmark (issue 27) measured batch 32 + channels_last at 2.26x the images/s of the small
profile's batch 8, fp32. A step is not a run: a larger batch takes fewer optimiser steps per epoch, and early
stopping counts epochs, so what the user waits for, and what the run finds, can move either way. This script
trains the small profile's Real cell (Unet + Lite0 at 32 px, 150 real patches, early stopping on validation F1)
to its stop under each setting, for the given run seeds, and prints wall time, epochs, images seen and test F1,
with each setting's wall time as a ratio of the first setting's, measured in the same run. `--mix real_cond` trains an
augmented mix instead (from the cache's toyland run): check a switch there too, as batch 16 kept Real's F1 and cost
Real + Cond. 12 points on 7 December (early stopping counts epochs, and an epoch had half the steps).

    python benchmarks/bench_seg_switches.py --data-root <prepared ARAS400k> --run-seeds 0 1 \
        --out benchmarks/seg_switches.csv
    ARAS_CACHE=<cache of a small run> python benchmarks/bench_seg_switches.py --mix real_cond --settings \
        "batch 8, channels_last (small)" "batch 16, lr x1.41, channels_last"

Each process uses one torch thread (the small profile runs two cells at once, one per core). Slow (minutes per
run): not part of the pipeline.
"""
import argparse, datetime, time
from pathlib import Path

import pandas as pd
import torch

from aras.core import make_run
from aras.data import dataset_root
from aras.seg_matrix import SegmentationMatrix

SEG = {"segmentation.archs": ("Unet",), "segmentation.in_memory": True, "segmentation.num_workers": 0}
SETTINGS = {   # name -> overrides; the learning rate follows the batch by the square-root rule (Adam-type optimisers)
    "batch 8, fp32": {"segmentation.channels_last": False},
    "batch 8, channels_last (small)": {},
    "batch 16, lr x1.41, channels_last": {"segmentation.batch_size": 16, "segmentation.lr": 1e-3 * 2 ** 0.5,
                                         "segmentation.channels_last": True},
    "batch 32, lr x2, channels_last": {"segmentation.batch_size": 32, "segmentation.lr": 2e-3,
                                       "segmentation.channels_last": True},
    # bf16 autocast: fast only on CPUs with bf16 matrix units (AMX, AVX512-BF16); elsewhere it is slower than fp32
    "batch 8, bf16": {"segmentation.amp": "bf16", "segmentation.channels_last": False},
    "batch 16, lr x1.41, channels_last, bf16": {"segmentation.batch_size": 16, "segmentation.lr": 1e-3 * 2 ** 0.5,
                                               "segmentation.channels_last": True, "segmentation.amp": "bf16"},
}


def train_cell(root: Path | None, name: str, run_seed: int, mix: str = "real") -> dict:
    """Train and test the small profile's Unet on `mix` under setting `name`. `root` None: the toyland run in the cache
    (its synthetic sets, for an augmented mix); cells of other settings get folders of their own."""
    run = make_run("small", data_root=root, out_dir=Path("/tmp") / "aras-bench-seg", overrides={**SEG, **SETTINGS[name]})
    m = SegmentationMatrix(run, root or dataset_root(run))
    cell = m.cells([mix], archs=["Unet"], seeds=[m.seeds[run_seed]])[0]
    t0 = time.time()
    r = m.train([cell], progress=False)[0]
    return dict(setting=name, mix=mix, run_seed=int(cell["seed"]), epochs_run=r["epochs_run"], best_epoch=r["best_epoch"],
                images_seen=r.get("images_seen"), test_f1=100 * r["test"]["f1"], seconds=r["seconds"],
                wall=time.time() - t0, measured=datetime.date.today().isoformat())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", help="the small profile's prepared ARAS400k layout (default: the cache's toyland run)")
    ap.add_argument("--mix", default="real", help="training set: real, or an augmented mix once chapter 04b has run")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--run-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/seg_switches.csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.settings:
        for k in args.run_seeds:
            rows.append(train_cell(Path(args.data_root) if args.data_root else None, name, k, args.mix))
            print({k_: (round(v, 2) if isinstance(v, float) else v) for k_, v in rows[-1].items()}, flush=True)
    df = pd.DataFrame(rows)
    base = df[df.setting == args.settings[0]].wall.mean()
    summary = df.groupby("setting", sort=False).agg(wall=("wall", "mean"), epochs=("epochs_run", "mean"),
                                                    test_f1=("test_f1", "mean"), test_f1_sd=("test_f1", "std"))
    summary["speed_vs_first"] = base / summary.wall
    print(summary.round(2).to_string())
    out = Path(args.out)
    df.to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
