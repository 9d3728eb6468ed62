"""Calibrate toyland: the converged Real baseline's test macro F1 against toyland difficulty and real train size.

For each toyland `difficulty` (season, vigour, haze and border label noise, notebook 02) the small profile's
toyland is generated and prepared (notebook 03); then, for each real train size, one Unet with the ImageNet
EfficientNet-Lite0 encoder is trained exactly as `aras.segmentation.train_cell` trains the Real cell of the
profile (small: 32 px, batch 8, Dice, AdamW lr 1e-3, up to 20 epochs, early stopping on validation macro F1
with patience 3), and tested on the toyland test split. One row per run is appended to `--out`.

Slow (minutes per run on one core): not part of the pipeline. The data chapter (notebook 03, "Calibrating
toyland") quotes its numbers. Run, e.g.:

    python benchmarks/calibrate_toyland.py --difficulty 0 1 --train 0 256 128 --out benchmarks/toyland_calibration.csv

(`--train 0` = the whole train split.) Each process uses one torch thread; start several for different settings
(e.g. `--run-seeds 0` and `--run-seeds 1` side by side).
"""
import argparse, datetime, time
from pathlib import Path

import pandas as pd
import torch

from aras.core import atomic_path, cache_dir, make_run, settings_hash
from aras.data import data_settings, list_pairs
from aras.prepare import prepare_dataset
from aras.landcover import CLASSES
from aras.seg_matrix import SegmentationMatrix
from aras.toyland import ensure_toyland

SEG = {"segmentation.archs": ("Unet",), "segmentation.in_memory": True, "segmentation.num_workers": 0}
# everything else (image size, batch, epochs, patience) is the profile's own: the Real cell of its matrix


def prepared_toyland(profile: str, difficulty: float, seed: int) -> tuple[Path, float]:
    "Generate and prepare the profile's toyland at `difficulty`; return the ARAS400k root and the seconds it took."
    run = make_run(profile, seed=seed, overrides={"toyland.difficulty": difficulty})
    t0 = time.time()
    raw = ensure_toyland(run.seed, **run.profile.toyland, progress=False)
    key = settings_hash(data_settings(run.profile.data), dict(run.profile.toyland), run.seed)
    root = cache_dir() / "calibration" / f"{profile}-{key}" / "ARAS400k"
    prepare_dataset(raw, root, data_settings(run.profile.data), run.seed, progress=False)
    return root, time.time() - t0


def train_real(profile: str, root: Path, difficulty: float, train_max: int, seed: int, run_seed: int = 0) -> dict:
    "Train and test the small profile's Real Unet on `root` with at most `train_max` real train patches (0: all)."
    view = root.parent / f"train{train_max}" / "ARAS400k"     # its own work folder: runs may go in parallel
    if not view.exists(): view.parent.mkdir(parents=True, exist_ok=True); view.symlink_to(root, target_is_directory=True)
    run = make_run(profile, data_root=view, seed=seed, overrides={**SEG, "toyland.difficulty": difficulty,
                                                                  "data.real_train_max": train_max or None})
    m = SegmentationMatrix(run, view)
    cell = m.cells(["real"], archs=["Unet"], seeds=[m.seeds[run_seed]])[0]
    r = m.train([cell], progress=False)[0]
    return dict(difficulty=difficulty, label_noise_px=run.profile.toyland.label_noise_px, real_train=r["n_train"],
                image_size=run.profile.segmentation.image_size, run_seed=int(cell["seed"]),
                n_val=r["n_val"], n_test=r["n_test"], epochs_run=r["epochs_run"], best_epoch=r["best_epoch"],
                stopped_early=r["stopped_early"], val_f1=100 * r["best_val_f1"], test_f1=100 * r["test"]["f1"],
                **{f"f1_{c}": 100 * v for c, v in zip(CLASSES, r["test"]["f1_per_class"])},
                seconds=r["seconds"], measured=datetime.date.today().isoformat())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="small")
    ap.add_argument("--difficulty", type=float, nargs="+", default=[1.0])
    ap.add_argument("--train", type=int, nargs="+", default=[0], help="real train sizes (0: the whole train split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-seeds", type=int, nargs="+", default=[0], help="which of the matrix's run seeds (0 = its first)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/toyland_calibration.csv")
    ap.add_argument("--data-root", help="an ARAS400k layout prepared already (from toyland at the one --difficulty given)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for d in args.difficulty:
        root, secs = (Path(args.data_root), 0.0) if args.data_root else prepared_toyland(args.profile, d, args.seed)
        sizes = {s: len(list_pairs(root, s)) for s in ("train", "val", "test")}
        print(f"difficulty {d}: toyland + preparation {secs:.0f} s, splits {sizes}", flush=True)
        for n, k in ((n, k) for n in args.train for k in args.run_seeds):
            row = train_real(args.profile, root, d, n, args.seed, k)
            print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            out = Path(args.out)
            old = pd.read_csv(out) if out.exists() else pd.DataFrame()
            with atomic_path(out) as tmp: pd.concat([old, pd.DataFrame([row])]).to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
