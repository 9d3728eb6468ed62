"""The GPU smoke run (issue 31): every stage of aras for a few steps at the paper's widths and resolutions,
through the entry points a cluster run uses, with each stage's peak GPU memory and images per second.

    bash scripts/gpu-smoke.sh            # the paper profile on the visible GPUs (about 5 minutes on one)
    bash scripts/gpu-smoke.sh --tiny     # the same steps at the smoke profile's sizes on the CPU (CI runs it)

Each stage runs in processes of its own (segmentation under torchrun, one process per visible GPU):
  gan uncond   StyleGAN2 for N steps into the folder of a 2N-step run, stopped; the 2N-step run resumes from
               that checkpoint (its log must read steps 1..2N); then 4 fresh steps at twice the batch
  gan cond     the same for the authors' SPADE (with its VGG19 loss)
  segmentation `torchrun -m aras.seg_matrix train`: a Real cell on the paper's encoder, at b and 2b per GPU
  sample       `python -m aras.gan sample`: the synthetic sets from both trained generators
  features     `python -m aras.metrics`: the profile's feature spaces, at its batch
  captions     `python -m aras.captioning`: the profile's captioners (tiny random models)
  distances    chapter 07a's set metrics (FID, KID, CMMD, PRDC, intervals) on those features, and LPIPS
The data are 4 toyland tiles cut into the profile's patches. The pretrained models are random stand-ins saved
under the names the profile looks for (tests/tiny_models.py): Inception, VGG19, LPIPS' VGG16 and
EfficientNet-B7 at full size; the captioners, CLIP and DINOv2 tiny (their memory and speed: not the paper's).
Peak memory is each process's `torch.cuda.max_memory_allocated` (on the CPU: its peak RSS). The GANs and
segmentation run smaller batches than the paper: their peaks at two batches are fitted by a line (fixed + per
image x batch), read at the paper's batch per GPU. Exits 1 at the first failing stage or check.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3                          # GAN steps before the stop and after the resume; a segmentation cell's
GAN_BATCH = dict(uncond=4, cond=2)                 # the smoke's batches (paper: 256 and 50 over all GPUs)
SEG_BATCH = 2                                      # images per GPU (paper: 24 over all GPUs)


# --- inside a stage's process: run an entry point, record its peak memory and time -------------------------

def _target(name: str):
    "An entry point's command line: `aras.<module>`'s `main` (aras.gan: `gan_main`), or `distances_main`."
    if name == "distances":
        return distances_main
    import importlib
    mod = importlib.import_module(name)
    return getattr(mod, "gan_main", None) or mod.main


def exec_stage(record: str, name: str, argv: list) -> int:
    "Run entry point `name` on `argv` in this process; write rank<RANK>.json (seconds, peaks) into `record`."
    import resource
    import torch
    t0 = time.time()
    code = _target(name)(argv) or 0
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    local = int(os.environ.get("LOCAL_RANK", 0))                                # this process's GPU
    rec = dict(rank=int(os.environ.get("RANK", 0)), seconds=round(time.time() - t0, 2), exit=code,
               cuda_peak=torch.cuda.max_memory_allocated(local) if cuda else None,
               rss_peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)    # Linux: in kB
    Path(record).mkdir(parents=True, exist_ok=True)
    (Path(record) / f"rank{rec['rank']}.json").write_text(json.dumps(rec))
    return code


def distances_main(argv=None) -> int:
    "Chapter 07a's set metrics of every set against Real train in each space, and LPIPS on image pairs."
    import aras.distributional as DM
    import aras.metrics as M
    from aras.core import ModelUnavailable
    from aras.runtime import process_share
    from aras.data import dataset_root
    a, run, _, _ = process_share("gpu_smoke.py distances", distances_main.__doc__, argv)
    P = run.profile.metrics
    sets = {k: v for k, v in M.metric_sets(run, dataset_root(run))[0].items() if v}
    kw = dict(clip_model=P.clip_model, dinov2_model=P.dinov2_model, domain_record=str(run.labeller_record))
    n = 0
    for space, ext in M.available_spaces(P.spaces, run.device, a.weights, **kw)[0].items():
        feats = {k: M.extract_features(ext, v, int(P.batch_size), progress=False) for k, v in sets.items()}
        real = M.features_on(feats.pop("Real train"), run.device)
        for k, f in feats.items():
            rows = {r["metric"]: r["value"] for r in DM.set_metrics(real, M.features_on(f, run.device), P)}
            print(f"{space}: Real train vs {k}: FID {rows['FID']:.3g}, KID {rows['KID (poly)']:.3g}")
            n += len(real) + len(f)
    try:
        nets = dict(lpips=M.lpips_model(P.lpips_net, run.device))
    except ModelUnavailable as e:
        print(f"LPIPS not run: {e}")
        nets = {}
    pairs = list(zip(sets["Real train"], sets.get("Uncond.", sets["Real held-out"])))
    x, y = (M.to_tensor([M.load_image(p[i]) for p in pairs]) for i in (0, 1))
    for name, v in M.deep_distances(x, y, nets).items():
        print(f"{name}: {len(v)} pairs, mean {v.mean():.4f}")
    print(f"distances done: {n} feature rows, {len(pairs) * len(nets)} image pairs")
    return 0


# --- the driver: stages -------------------------------------------------------------------------------------

class StageFailed(Exception):
    pass


def run_stage(ctx: dict, name: str, target: str, args: list, procs: int | None = None) -> dict:
    """Run one stage in a process of its own (under torchrun, `procs` processes, when given); its output
    goes to logs/<name>.log. Returns its seconds, peak memory (largest over its processes) and stdout."""
    slug = name.replace(" ", "-")
    record, log = ctx["work"] / "records" / slug, ctx["work"] / "logs" / f"{slug}.log"
    me = [str(Path(__file__).resolve()), "--exec", str(record), target, *args]
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs else []
    print(f"[gpu-smoke] {name} ...", flush=True)
    t0 = time.time()
    p = subprocess.run([sys.executable, *launch, *me], env=dict(os.environ), capture_output=True, text=True)
    seconds = round(time.time() - t0, 2)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(p.stdout + p.stderr)
    if p.returncode:
        raise StageFailed(f"{name}: exit {p.returncode} (log: {log})\n{(p.stdout + p.stderr)[-3000:]}")
    ranks = [json.loads(f.read_text()) for f in sorted(record.glob("rank*.json"))]
    peak = max(r["cuda_peak" if ctx["cuda"] else "rss_peak"] for r in ranks)
    print(f"[gpu-smoke] {name}: {seconds:.1f} s, peak {peak / 2**30:.2f} GB", flush=True)
    return dict(stage=name, seconds=seconds, peak=peak, stdout=p.stdout)


def run_of(ctx: dict, overrides: list):
    "The `Run` the stages make of these overrides (which folders they write), made quietly."
    from aras.core import Run, get_profile, parse_overrides
    prof = get_profile(ctx["profile"], parse_overrides(overrides))
    return Run(prof, ctx["data"], ctx["work"] / "figures", 0)


def base_args(ctx: dict) -> list:
    return ["--profile", ctx["profile"], "--device", ctx["device"], "--data-root", str(ctx["data"])]


def gan_sets(kind: str, batch: int, steps: int, fid_steps: int) -> list:
    "Overrides: `steps` steps of the `kind` GAN at `batch`, FID every `fid_steps` (counts and budgets only)."
    k, kimg, fid = f"gan.{kind}", steps * batch / 1000, fid_steps * batch / 1000
    return [f"{k}.batch={batch}", f"{k}.kimg={kimg:g}", f"{k}.snap_kimg={kimg:g}", f"{k}.log_every=1",
            f"{k}.fid.every_kimg={fid:g}", f"{k}.fid.n_fake=8"]


def read_log(folder: Path) -> list:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]


def gan_stage(ctx: dict, kind: str) -> dict:
    """N steps into the folder of a 2N-step run, stopped there; the 2N-step run resumes and goes on (its log
    must read steps 1..2N); then 4 fresh steps at twice the batch in a folder of their own (memory, speed)."""
    from aras.gan import gan_dir
    b, n, cmd = GAN_BATCH[kind], STEPS, ["--kind", kind, *base_args(ctx)]
    full = gan_sets(kind, b, 2 * n, n) + ctx["sets"]
    out, fast = gan_dir(run_of(ctx, full), kind), ctx["work"] / "gan-2b" / kind
    first = run_stage(ctx, f"gan {kind}", "aras.gan", [*cmd, "--out", str(out), "--set",
                                                       *gan_sets(kind, b, n, n), *ctx["sets"]])
    resumed = run_stage(ctx, f"gan {kind} resumed", "aras.gan", [*cmd, "--set", *full])
    steps = [r["step"] for r in read_log(out)]
    if steps != list(range(1, 2 * n + 1)):
        raise StageFailed(f"gan {kind}: the resumed run's log has steps {steps}, not 1..{2 * n}")
    wide = run_stage(ctx, f"gan {kind} 2b", "aras.gan", [*cmd, "--out", str(fast), "--no-resume", "--set",
                                                         *gan_sets(kind, 2 * b, 4, 4), *ctx["sets"]])
    lg = read_log(fast)                   # steps 2-3: after the first step's warm-up, before the final FID
    speed = (lg[2]["kimg"] - lg[0]["kimg"]) * 1000 / max(lg[2]["sec"] - lg[0]["sec"], 1e-9)
    return dict(stage=f"gan {kind}", seconds=first["seconds"] + resumed["seconds"] + wide["seconds"],
                points={b: first["peak"], 2 * b: wide["peak"]}, img_per_s=speed, images=2 * n * b + 8 * b)


def seg_stage(ctx: dict) -> dict:
    """A Real cell of each architecture over every GPU (one cell: DDP), at b and then 2b images per GPU (the
    batch is split over the processes): the memory fit, and the speed at 2b."""
    res, g = {}, ctx["gpus"]
    for b in (SEG_BATCH, 2 * SEG_BATCH):
        sets = [f"segmentation.batch_size={b * g}", f"segmentation.eval_batch_size={2 * b}",
                "segmentation.epochs=1", f"segmentation.steps_per_epoch={STEPS}", "segmentation.n_seeds=1",
                *ctx["seg_sets"], *ctx["sets"]]
        args = ["train", *base_args(ctx), "--mix", "real", "--seeds", "0", "--set", *sets]
        res[b] = run_stage(ctx, f"segmentation b{b}", "aras.seg_matrix", args, procs=g)
    results = [json.loads(f.read_text()) for f in (ctx["cache"] / "work").rglob("result.json")]
    wide = [r for r in results if r["config"]["batch_size"] == 2 * SEG_BATCH * g]
    ddp = len(wide) == 1                  # one cell: DDP over every process (more: whole cells per process)
    if len(results) != 2 * len(wide) or ddp and {r["world_size"] for r in results} != {g}:
        raise StageFailed(f"segmentation: cells {[(r['arch'], r['world_size']) for r in results]}")
    if any(r["steps"] != STEPS for r in results):
        raise StageFailed(f"segmentation: steps {[r['steps'] for r in results]}, not {STEPS} each")
    speed = sum(r["images_seen"] for r in wide) / sum(r["history"][0]["seconds"] for r in wide)
    return dict(stage="segmentation", seconds=sum(r["seconds"] for r in res.values()), img_per_s=speed,
                points={b: r["peak"] for b, r in res.items()}, images=sum(r["images_seen"] for r in results))


def count_images(folder: Path) -> int:
    "Images (not masks) in a layout's `*/images` folders."
    return sum(1 for f in folder.rglob("*.png") if f.parent.name == "images")


def captions_written(folder: Path) -> int:
    import pandas as pd
    return sum(len(pd.read_csv(f)) for f in folder.rglob("batch*.csv")) if folder.exists() else 0


def later_stages(ctx: dict) -> list:
    "Sampling, features, captions and distances: one process each, from the GANs trained above."
    run = run_of(ctx, ctx["gan_sets"] + ctx["sets"])
    common = [*base_args(ctx), "--set", *ctx["gan_sets"], *ctx["later_sets"], *ctx["sets"]]
    sample = run_stage(ctx, "sample", "aras.gan", ["sample", *common])
    feats = run_stage(ctx, "features", "aras.metrics", common)
    n, spaces = (int(feats["stdout"].split(w)[1].split()[0]) for w in ("features of ", " images in "))
    caps = run_stage(ctx, "captions", "aras.captioning", common)
    dist = run_stage(ctx, "distances", "distances", common)
    out = [dict(sample, images=count_images(run.synthetic_dir)), dict(feats, images=n * spaces),
           dict(caps, images=captions_written(run.work_dir / "captions")),
           dict(dist, images=int(dist["stdout"].split("distances done: ")[1].split()[0]))]
    if not all(s["images"] for s in out):
        raise StageFailed(f"a stage made nothing: {[(s['stage'], s['images']) for s in out]}")
    return out


# --- the driver: set-up and report --------------------------------------------------------------------------

def stand_ins(weights: Path, torch_home: Path, tiny: bool):
    """Random stand-ins for the pretrained models the profile loads (tests/tiny_models.py): all of them for
    the paper; the small ones for the tiny run (captioners, CLIP, DINOv2, LPIPS on SqueezeNet; its encoders
    ship)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_models as T
    from aras.core import get_profile
    P = get_profile("paper")
    if not tiny:
        return T.paper_weights(weights, torch_home)
    for c in P.captioning.captioners:
        if "path" in c and not (weights / c["path"]).exists():
            (T.save_tiny_lm if c["backend"] == "causal_lm" else T.save_tiny_vlm)(weights / c["path"])
    T.save_tiny_clip(weights / P.metrics.clip_model)
    T.save_tiny_dinov2(weights / P.metrics.dinov2_model)
    T.save_random_lpips_backbone(torch_home, "squeeze")


def make_data(ctx: dict):
    "4 toyland tiles cut into the profile's patches, split by 2 x 2 patch blocks (val and test get some)."
    from aras.core import get_profile, parse_overrides
    from aras.data import data_settings
    from aras.prepare import prepare_dataset
    from aras.toyland import generate_toyland
    prof = get_profile(ctx["profile"], parse_overrides(ctx["sets"]))
    toy = dict(prof.toyland, n_tiles=4, tile_px=ctx["tile_px"])
    raw = generate_toyland(ctx["work"] / "toyland", seed=0, progress=False, **toy)
    s = dict(data_settings(prof.data), split_block=2, patch_size=ctx["patch_px"])
    prepare_dataset(raw, ctx["data"], s, seed=0, progress=False)


def fit_at(points: dict, batch: int) -> float:
    "Peak memory at `batch` on the line through the peaks at two batches (never below the larger one)."
    (b1, p1), (b2, p2) = sorted(points.items())
    return p2 + max((p2 - p1) / (b2 - b1), 0.0) * (batch - b2)


def report(ctx: dict, stages: list) -> list:
    "A line per stage: seconds, images, images per second, peak memory; the fitted peak at the paper's batch."
    from aras.core import get_profile
    P, g, rows = get_profile("paper"), ctx["gpus"], []
    paper = {"gan uncond": -(-P.gan.uncond.batch // g), "gan cond": -(-P.gan.cond.batch // g),
             "segmentation": -(-P.segmentation.batch_size // g)}           # per GPU: the first share
    what = "GPU peak" if ctx["cuda"] else "peak RSS (CPU)"
    print(f"\n[gpu-smoke] {ctx['profile']} profile on {ctx['device']}, {g} segmentation processes; {what}:")
    for s in stages:
        peak = max(s["points"].values()) if "points" in s else s["peak"]
        speed = s.get("img_per_s") or s["images"] / s["seconds"]
        row = dict(stage=s["stage"], seconds=s["seconds"], images=s["images"], img_per_s=round(speed, 2),
                   peak_gb=round(peak / 2**30, 3))
        line = f"  {s['stage']:13s} {s['seconds']:7.1f} s {s['images']:6d} images {speed:9.2f} img/s"
        line += f"  peak {peak / 2**30:6.2f} GB"
        if "points" in s and ctx["cuda"]:            # a CPU's RSS holds far more than the batch's tensors
            row.update(batch=max(s["points"]), paper_batch=paper[s["stage"]],
                       paper_gb=round(fit_at(s["points"], paper[s["stage"]]) / 2**30, 2))
            line += f" at batch {row['batch']}; fitted at the paper's {row['paper_batch']}:"
            line += f" {row['paper_gb']} GB"
        print(line)
        rows.append(row)
    return rows


def settings(tiny: bool, device: str, gpus: int, archs) -> dict:
    "What differs between the paper run and the tiny one: profile, sizes, counts, stand-ins (no method)."
    from aras.profiles import PAPER_CAPTIONERS
    tokens = 8 if tiny else 100                    # random captioners never stop early; 100: the paper's cap
    caps = tuple(dict(c, generate=dict(c["generate"], max_new_tokens=tokens)) if "generate" in c else c
                 for c in PAPER_CAPTIONERS)
    later = [f"gan.synth.uncond_ratio={3 if tiny else 5}", f"metrics.n_images={8 if tiny else 160}",
             "metrics.n_boot=20", "metrics.kid_subsets=10", f"captioning.n_images={2 if tiny else 4}",
             f"captioning.batch_size={2 if tiny else 4}", f"captioning.captioners={caps!r}"]
    labeller = "segmentation.labeller='best'"     # the paper's (Segformer) may not be among `archs`
    seg = [f"segmentation.archs={tuple(archs)!r}", labeller] if archs else []
    seg += ["segmentation.num_workers=0", "segmentation.threads_per_run=1"] if tiny else \
        ["segmentation.num_workers=2"]
    if tiny:                                       # the spaces and the LPIPS net that have small stand-ins
        later += ["metrics.batch_size=4", "metrics.spaces=('lite0', 'clip', 'dinov2')",
                  "metrics.lpips_net='squeeze'"]
    return dict(profile="smoke" if tiny else "paper", device=device, tile_px=512 if tiny else 1024, gpus=gpus,
                patch_px=128 if tiny else 256, later_sets=later, seg_sets=seg, cuda=device.startswith("cuda"))


def parse(argv):
    ap = argparse.ArgumentParser(prog="scripts/gpu-smoke.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", default=os.environ.get("ARAS_SMOKE_TINY") == "1",
                    help="the smoke profile's sizes on the CPU (also ARAS_SMOKE_TINY=1)")
    ap.add_argument("--device", help="cuda (default) or cpu; --tiny: cpu")
    ap.add_argument("--work", help="working folder, kept (default: a temporary one, removed after a pass)")
    ap.add_argument("--archs", nargs="+", help="segmentation architectures (default: Unet; 'all': the six)")
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                    help="overrides for every stage, e.g. gan.uncond.amp=bf16")
    return ap.parse_args(argv)


def context(a) -> dict:
    "The run's folders and settings; the stages find the cache, weights and figures through the environment."
    import torch
    from aras.core import get_profile, parse_overrides
    get_profile("smoke" if a.tiny else "paper", parse_overrides(a.set))     # a bad --set stops here, at once
    device = a.device or ("cpu" if a.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StageFailed("no GPU visible: run with --tiny (the CPU) or --device cpu")
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 2 if a.tiny else 1
    work = Path(a.work or tempfile.mkdtemp(prefix="aras-gpu-smoke-")).resolve()
    folders = dict(ARAS_CACHE="cache", ARAS_FIGURES="figures", ARAS_WEIGHTS="weights", TORCH_HOME="torch")
    for k, sub in folders.items():
        os.environ[k] = str(work / sub)
    archs = None if a.archs == ["all"] else a.archs or ["Unet"]
    ctx = dict(settings(a.tiny, device, gpus, archs), work=work, cache=work / "cache", sets=list(a.set),
               data=work / "data" / "ARAS400k", keep=bool(a.work))
    ctx["gan_sets"] = [x for k in ("uncond", "cond") for x in gan_sets(k, GAN_BATCH[k], 2 * STEPS, STEPS)]
    return ctx


def main(argv=None) -> int:
    from aras.core import ArasError
    a, t0 = parse(argv), time.time()
    try:
        ctx = context(a)
        stand_ins(ctx["work"] / "weights", ctx["work"] / "torch", a.tiny)
        make_data(ctx)
        print(f"[gpu-smoke] stand-in weights and data: {time.time() - t0:.1f} s in {ctx['work']}", flush=True)
        stages = [gan_stage(ctx, "uncond"), gan_stage(ctx, "cond"), seg_stage(ctx), *later_stages(ctx)]
    except (StageFailed, ArasError) as e:
        print(f"[gpu-smoke] FAILED: {e}", file=sys.stderr)
        return 1
    rows, total = report(ctx, stages), round(time.time() - t0, 1)
    summary = dict(profile=ctx["profile"], device=ctx["device"], gpus=ctx["gpus"], seconds=total, stages=rows)
    (ctx["work"] / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[gpu-smoke] passed in {total} s")
    if not ctx["keep"]:
        shutil.rmtree(ctx["work"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--exec"]:                # one stage's process (run_stage starts these)
        sys.exit(exec_stage(sys.argv[2], sys.argv[3], sys.argv[4:]))
    sys.exit(main())
