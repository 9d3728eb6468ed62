"""scripts/gpu-smoke.sh (issue 31), so that it cannot rot: its tiny run on the CPU goes through every stage
as the GPU run does (both GANs stopped and resumed, segmentation under torchrun, sampling, features,
captions, distances), and a failing stage ends the run with exit 1 and the stage's own error."""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["gan uncond", "gan cond", "segmentation", "sample", "features", "captions", "distances"]


def smoke_module():
    "scripts/gpu_smoke.py as a module (scripts/ is not a package)."
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "scripts" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_gpu_smoke_script_runs_every_stage_at_tiny_sizes_on_the_cpu(tmp_path):
    """About 4 minutes on 2 shared CPU cores. The script checks the GAN resumes (logs 1..2N) and the DDP cell
    itself; here: every stage ran, made something, and reported its speed and peak memory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARAS_SMOKE_TINY": "1"}    # the env var asks for --tiny
    cmd = ["bash", str(ROOT / "scripts" / "gpu-smoke.sh"), "--work", str(tmp_path / "w")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    s = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert (s["profile"], s["device"], s["gpus"]) == ("smoke", "cpu", 2)
    assert [r["stage"] for r in s["stages"]] == STAGES and "[gpu-smoke] passed in" in p.stdout
    rows = {r["stage"]: r for r in s["stages"]}
    assert rows["gan uncond"]["images"] == 2 * 3 * 4 + 4 * 8                # 2 x 3 steps at 4, 4 at 8
    assert rows["gan cond"]["images"] == 2 * 3 * 2 + 4 * 4
    assert all(r["images"] > 0 and r["img_per_s"] > 0 and r["peak_gb"] > 0.1 for r in s["stages"])
    logs = sorted((tmp_path / "w" / "cache").rglob("log.jsonl"))            # the two resumed runs
    steps = [[json.loads(x)["step"] for x in f.read_text().splitlines()] for f in logs]
    assert steps == [[1, 2, 3, 4, 5, 6]] * 2
    cell = json.loads(next((tmp_path / "w" / "cache").rglob("result.json")).read_text())
    assert cell["world_size"] == 2 and cell["arch"] == "Unet"               # one cell: DDP over 2 ranks
    for stage, line in (("features", "features of"), ("captions", "done"), ("distances", "lpips: 8 pairs")):
        assert line in (tmp_path / "w" / "logs" / f"{stage}.log").read_text(), stage


def test_a_failing_stage_stops_the_smoke_run_with_its_error(tmp_path, capsys):
    "A stage's non-zero exit is a StageFailed naming the stage and carrying the entry point's one-line error."
    gs = smoke_module()
    ctx = dict(work=tmp_path, cuda=False)
    with pytest.raises(gs.StageFailed) as e:
        gs.run_stage(ctx, "gan uncond", "aras.gan", ["--kind", "uncond", "--data-root", str(tmp_path / "x")])
    assert str(e.value).startswith("gan uncond: exit 2") and "python -m aras.gan: error:" in str(e.value)
    assert "python -m aras.gan: error:" in (tmp_path / "logs" / "gan-uncond.log").read_text()
    assert gs.main(["--tiny", "--work", str(tmp_path / "w"), "--set", "gan.uncond.resolution=48"]) == 1
    err = capsys.readouterr().err
    assert "[gpu-smoke] FAILED: profile 'smoke': gan.uncond.resolution must be a power of two" in err
    assert not (tmp_path / "w").exists()                                           # refused before any work


def test_peak_memory_at_the_paper_batch_is_read_off_a_line_through_two_measured_batches():
    gs = smoke_module()
    gb = 2**30
    assert gs.fit_at({4: 3 * gb, 8: 5 * gb}, 32) == 17 * gb                 # 1 GB fixed + 0.5 GB an image
    assert gs.fit_at({8: 5 * gb, 4: 3 * gb}, 8) == 5 * gb
    assert gs.fit_at({4: 3 * gb, 8: 2.9 * gb}, 256) == 2.9 * gb             # noise: never a negative slope
