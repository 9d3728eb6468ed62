"""The compute floor of the small profile: can a converged run fit the 30-minute goal on 2 CPU cores?

Measures, on one torch thread, what one training image costs each model at the small profile's own settings
(segmentation Unet + Lite0 at 32 px with its optimiser and loss; the unconditional StyleGAN2 and the
conditional SPADE training steps; Lite0 features at 224 px), then multiplies by the work a converged run
needs, read from a run's committed tables (`figures/small/tables`: images seen by every segmentation run,
kimg at each GAN's FID plateau). The sum, halved for 2 cores (a perfect split; real runs lose some), is a
lower bound on the wall time of the training alone, before setup, data, captioning and metrics.

    python benchmarks/compute_floor.py [--tables figures/small/tables] [--timings runs/small/timings.csv]
                                       [--budget-min 30] [--cores 2]

With `--timings` (the seconds per chapter `aras reproduce` writes to `runs/<profile>/timings.csv`), it also prints
each chapter's wall time against its training floor: the GAN chapter trains both GANs at once, one core each
(floor: the slower of the two), the segmentation matrix spreads its runs over the cores (floor: all the images
seen / cores). Run it on an otherwise idle machine, right after the run: it times one process on one core.
"""
import argparse, time
from pathlib import Path

import pandas as pd
import torch

from aras.core import get_profile, parse_overrides
from aras.runtime import autocast
from aras.gan_tasks import SpadeTask, StyleGANTask
from aras.segmentation import build_model


def per_image_seconds(step, batch: int, warmup: int = 3, reps: int = 10, repeats: int = 5) -> float:
    """Seconds per training image of `step()` (one optimiser step on `batch` images), after `warmup` steps: the median
    of `repeats` timings of `reps` steps (one timing of 10 steps moved by up to 8% between invocations minutes apart)."""
    import statistics
    for _ in range(warmup): step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(reps): step()
        times.append((time.perf_counter() - t0) / (reps * batch))
    return statistics.median(times)


def seg_step(P):
    "One training step of the small profile's segmentation model (the loss and optimiser of `train_cell`)."
    import segmentation_models_pytorch as smp
    m = build_model(P.archs[0], P.encoder); opt = torch.optim.AdamW(m.parameters(), lr=float(P.lr))
    loss, b, s = smp.losses.DiceLoss("multiclass"), int(P.batch_size), int(P.image_size)
    x, y = torch.randn(b, 3, s, s), torch.randint(0, 7, (b, s, s))
    if P.get("channels_last"):      # the profile's layout and precision, as `train_epoch` applies them
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    def step():
        opt.zero_grad()
        with autocast("cpu", P.get("amp")): out = m(x)
        loss(out.float(), y).backward(); opt.step()
    return step, b


def gan_step(task_cls, cfg):
    "One training step (G and D, with the profile's regularisation schedule) of a GAN task."
    task, b, r = task_cls(cfg), int(cfg.batch), int(cfg.resolution)
    x, y, k = torch.rand(b, 3, r, r) * 2 - 1, torch.randint(0, 7, (b, r, r)), [0]
    def step():
        task.train_step(x, y, k[0], b, k[0] * b); k[0] += 1
    return step, b


def chapter_table(timings: pd.DataFrame, df: pd.DataFrame, cores: int) -> pd.DataFrame:
    """Per chapter of a run: wall seconds, the cores it kept busy (CPU / wall), the training floor (seconds,
    where a chapter trains) and their ratio."""
    core_s = df.set_index("stage").core_min * 60
    floors = {"04b_gan_training.ipynb": core_s.filter(like="GAN").max(),        # both at once, one core each
              "05a_seg_matrix.ipynb": core_s.filter(like="segmentation").sum() / cores}
    t = timings[["notebook", "seconds"]].copy()
    if "cpu_seconds" in timings: t["cores_busy"] = timings.cpu_seconds / timings.seconds   # runs since 7 Dec
    t["floor_s"] = t.notebook.map(floors)
    t["wall_over_floor"] = t.seconds / t.floor_s
    # with gan.segment_ahead 04b's idle core trains 05a's cells: the two chapters share one floor
    gans = core_s.filter(like="GAN")
    both = dict(notebook="04b + 05a", seconds=t.set_index("notebook").seconds.reindex(list(floors)).sum(),
                floor_s=max(gans.max(), (gans.sum() + core_s.filter(like="segmentation").sum()) / cores))
    if "cores_busy" in t:
        both["cores_busy"] = timings.set_index("notebook").cpu_seconds.reindex(list(floors)).sum() / both["seconds"]
    both["wall_over_floor"] = both["seconds"] / both["floor_s"]
    total = pd.DataFrame([dict(notebook="total", seconds=t.seconds.sum(), floor_s=both["floor_s"])])
    t = pd.concat([t, pd.DataFrame([both])], ignore_index=True)
    if "cores_busy" in t: total["cores_busy"] = timings.cpu_seconds.sum() / total.seconds.iloc[0]
    return pd.concat([t, total.assign(wall_over_floor=total.seconds / total.floor_s)], ignore_index=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables", default="figures/small/tables")
    ap.add_argument("--timings", default=None, help="runs/<profile>/timings.csv of the run whose tables these are")
    ap.add_argument("--budget-min", type=float, default=30.0)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="profile overrides (e.g. the switches off)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1); torch.manual_seed(0)
    P = get_profile("small", parse_overrides(a.set))
    cost = {"segmentation (Unet, Lite0, 32 px)": per_image_seconds(*seg_step(P.segmentation)),
            "uncond GAN (StyleGAN2, 32 px)": per_image_seconds(*gan_step(StyleGANTask, P.gan.uncond)),
            "cond GAN (SPADE, 32 px)": per_image_seconds(*gan_step(SpadeTask, P.gan.cond))}
    t = Path(a.tables)
    runs, gans = pd.read_csv(t / "seg_runs.csv"), pd.read_csv(t / "gan_training_summary.csv").set_index("model")
    work = {"segmentation (Unet, Lite0, 32 px)": (float(runs.images_seen.sum()), f"{len(runs)} runs, their images seen"),
            **{k: (g.kimg_reached * 1000, f"{g.kimg_reached:g} kimg ({g.stopped_by})") for k, g in
               (("uncond GAN (StyleGAN2, 32 px)", gans.loc["uncond"]), ("cond GAN (SPADE, 32 px)", gans.loc["cond"]))}}
    rows = [dict(stage=k, img_per_s=1 / cost[k], images=n, why=why, core_min=n * cost[k] / 60) for k, (n, why) in work.items()]
    df = pd.DataFrame(rows)
    total = df.core_min.sum()
    print(df.round(1).to_string(index=False))
    print(f"\ntraining alone: {total:.0f} core-minutes -> at least {total / a.cores:.0f} min of wall time on {a.cores} cores "
          f"(perfect split), against a {a.budget_min:g}-minute goal for the whole run ({a.budget_min * a.cores:g} core-minutes), "
          f"{total / (a.budget_min * a.cores):.1f}x the budget before setup, data, captioning and metrics")
    inrun = {k: gans.loc[m].images_per_s for k, m in (("uncond GAN (StyleGAN2, 32 px)", "uncond"), ("cond GAN (SPADE, 32 px)", "cond"))}
    print("\nGAN training in the run (FID tracking, snapshots and logs included) against the step alone:")
    for k, v in inrun.items():
        print(f"  {k}: {v:.1f} images/s in the run, {1 / cost[k]:.1f} for the step alone: {1 / cost[k] / v:.2f}x")
    if a.timings:
        print("\nper chapter, wall time against the training floor measured above:")
        print(chapter_table(pd.read_csv(a.timings), df, a.cores).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
