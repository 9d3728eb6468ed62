"""What a kimg of GAN training costs on this machine, for both models at 32 and 64 px (the `small` profile's
widths), and what one FID evaluation in the Lite0 space costs; optionally the paper's settings too.

Steady state, not step 0 extrapolated: `--warmup` steps first, then `--steps` timed steps numbered from 1, a
multiple of every regulariser interval (R1 every `r1_interval`, path length every `pl_interval`, ADA's update
every `ada_interval`), so lazy regularisers cost what they cost in training. Each row reports wall seconds and
process CPU seconds per kimg: when other jobs load the machine, wall time grows with the load while CPU time
stays close to the idle cost, so `cpu s/kimg / threads-speedup` is the idle estimate (the script prints the
load average and the 1- vs 2-thread speedup measured in the same run). Ratios (64 px / 32 px) come from the
same run, so they are meaningful even on a loaded machine.

`--speed` adds the GPU-practice switches (bf16 autocast, channels_last), each timed against the same model without
it at the largest resolution, in the same run (on a CPU they say what oneDNN does with bf16; on a GPU, what tensor
cores do). `torch.compile` is not timed: on a CPU its compile time would dominate a run this short.

Run: ``python benchmarks/bench_gan.py [--steps 32] [--warmup 4] [--threads 1 2] [--speed] [--paper]``.
"""
import argparse, os, time
from pathlib import Path

import torch

from aras.core import get_profile, weights_dir
from aras.gan import TASKS


def steady_cost(kind, cfg, steps, warmup, device="cpu"):
    "Wall and CPU seconds per kimg of `steps` training steps after `warmup` steps, on random images and masks."
    task = TASKS[kind](cfg, device)
    b, r = cfg.batch, cfg.resolution
    reals = torch.rand(b, 3, r, r, device=device) * 2 - 1
    labels = torch.randint(0, 7, (b, r, r), device=device)
    for s in range(warmup): task.train_step(reals, labels, s + 1, b, 10_000)   # step 0 (all regularisers) not timed
    w, c = time.perf_counter(), time.process_time()
    for s in range(1, steps + 1): task.train_step(reals, labels, s, b, 10_000)
    kimg = steps * b / 1000
    return (time.perf_counter() - w) / kimg, (time.process_time() - c) / kimg


def fid_eval_cost(n=64, resolution=32):
    "Wall and CPU seconds per image of the Lite0 feature extractor (the FID tracker's cost), images at `resolution`."
    from aras.metrics import lite0_extractor
    ext = lite0_extractor()
    x = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8)
    ext(x[:8])
    w, c = time.perf_counter(), time.process_time()
    for k in range(0, n, 32): ext(x[k:k + 32])
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n


def lcm_intervals(cfg):
    out = 1
    for k in ("r1_interval", "pl_interval", "ada_interval"):
        v = int(cfg.get(k) or 1)
        out = out * v // torch.gcd(torch.tensor(out), torch.tensor(v)).item()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=32, help="timed steps (rounded up to a multiple of the regulariser intervals)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--profile", default="small")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="profile overrides, e.g. gan.uncond.batch=32")
    ap.add_argument("--speed", action="store_true", help="also amp=bf16 and channels_last against the same model without them")
    ap.add_argument("--paper", action="store_true", help="also the paper's models, steady state (regularisers at their intervals)")
    ap.add_argument("--paper-kinds", nargs="+", default=["uncond", "cond"], help="which models the --paper rows time")
    ap.add_argument("--no-sweep", action="store_true", help="only the --speed / --paper rows (no resolution sweep, no FID row)")
    ap.add_argument("--paper-batch", type=int, default=4, help="per-device batch of the --paper rows (the paper: 32 per GPU "
                    "for StyleGAN2 at batch 256 on 8 GPUs; 4 fits a CPU in minutes)")
    args = ap.parse_args()
    from aras.core import parse_overrides
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
    rows = {}
    for threads in ([] if args.no_sweep else args.threads):
        torch.set_num_threads(threads)
        for res in args.resolutions:
            for kind in ("uncond", "cond"):
                cfg = get_profile(args.profile, {**parse_overrides(args.set), f"gan.{kind}.resolution": res}).gan[kind]
                k = lcm_intervals(cfg) if kind == "uncond" else 1
                steps = -(-args.steps // k) * k
                wall, cpu = steady_cost(kind, cfg, steps, args.warmup)
                rows[threads, res, kind] = wall, cpu
                print(f"{threads} thread(s) {kind:6s} {res:3d} px batch {cfg.batch:3d} {steps:3d} steps: "
                      f"{wall:7.1f} s/kimg wall  {cpu:7.1f} s/kimg CPU", flush=True)
    for threads in args.threads:
        for kind in ("uncond", "cond"):
            lo, hi = (rows.get((threads, r, kind)) for r in (args.resolutions * 2)[:2])
            if len(args.resolutions) > 1 and lo and hi: print(f"ratio {args.resolutions[1]} / {args.resolutions[0]} px, {kind}, {threads} thread(s): "
                                f"wall {hi[0] / lo[0]:.2f}x  CPU {hi[1] / lo[1]:.2f}x")
    if 1 in args.threads and 2 in args.threads:
        for (t, res, kind), (wall, cpu) in rows.items():
            if t == 2: print(f"2 threads vs 1, {kind} {res} px: wall speedup {rows[1, res, kind][0] / wall:.2f}x, "
                             f"CPU {cpu / rows[1, res, kind][1]:.2f}x")
    if args.speed:
        torch.set_num_threads(max(args.threads)); res = max(args.resolutions)
        # every row names both switches: the profiles turn them on, so an empty override would not be fp32
        switches = dict(baseline=dict(amp=None, channels_last=False), amp_bf16=dict(amp="bf16", channels_last=False),
                        channels_last=dict(amp=None, channels_last=True), both=dict(amp="bf16", channels_last=True))
        for kind in ("uncond", "cond"):
            base = None
            for name, sw in switches.items():
                over = {**parse_overrides(args.set), f"gan.{kind}.resolution": res, **{f"gan.{kind}.{k}": v for k, v in sw.items()}}
                cfg = get_profile(args.profile, over).gan[kind]
                steps = -(-args.steps // lcm_intervals(cfg)) * lcm_intervals(cfg) if kind == "uncond" else args.steps
                wall, cpu = steady_cost(kind, cfg, steps, args.warmup)
                base = base or (wall, cpu)
                print(f"speed {kind:6s} {res:3d} px {name:13s}: {wall:7.1f} s/kimg wall  {cpu:7.1f} s/kimg CPU  "
                      f"speed-up vs baseline: wall {base[0] / wall:.2f}x  CPU {base[1] / cpu:.2f}x", flush=True)
    for res in ([] if args.no_sweep else args.resolutions):
        w, c = fid_eval_cost(resolution=res)
        print(f"Lite0 features ({res} px images, resized to 224): {w * 1000:.0f} ms/image wall, {c * 1000:.0f} ms/image CPU")
    if args.paper:
        torch.set_num_threads(max(args.threads))
        for kind in args.paper_kinds:
            over = {f"gan.{kind}.batch": args.paper_batch}
            if kind == "cond" and not get_profile("paper").gan.cond.vgg_weights and not (weights_dir() / "vgg19.pth").exists():
                import tempfile, torchvision                 # timing only: the loss costs the same with random weights
                over["gan.cond.vgg_weights"] = str(Path(tempfile.mkdtemp()) / "vgg19.pth")
                torch.save(torchvision.models.vgg19().state_dict(), over["gan.cond.vgg_weights"])
                print("paper cond: no VGG19 weights here; a random-weight VGG19 (the same cost) for this timing", flush=True)
            cfg = get_profile("paper", over).gan[kind]
            steps = lcm_intervals(cfg) if kind == "uncond" else 2          # 16 steps: R1 once, path length 4 times, ADA 4 times
            wall, cpu = steady_cost(kind, cfg, steps, 1)
            print(f"paper {kind} {cfg.resolution} px batch {args.paper_batch} ({cfg.amp or 'fp32'}, channels_last "
                  f"{cfg.channels_last}), {steps} steady steps: {wall / 60:.1f} min/kimg wall, "
                  f"{cpu / 60:.1f} min/kimg CPU -> {cfg.kimg:g} kimg in {cfg.kimg * wall / 3600:.0f} h on this device", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
