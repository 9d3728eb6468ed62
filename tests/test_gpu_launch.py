"""Launching on clusters (issue 31): two agents of two processes each, as two GPU nodes run a stage, and
scripts/slurm.sh's launch line on nodes with GPUs. Everything runs on the CPU (gloo); what a GPU node adds
is checked where it is decided: the LOCAL_RANK each process sees and the `cuda:<LOCAL_RANK>` it is given."""
import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import aras.segmentation as S
from aras.core import make_run
from aras.seg_matrix import SegmentationMatrix
from launch import probe_records, probed, torchrun

SEG = ["segmentation.archs=('FPN',)", "segmentation.compute_matched_archs=('FPN',)",
       "segmentation.image_size=64", "segmentation.epochs=2", "segmentation.steps_per_epoch=1",
       "segmentation.batch_size=8", "segmentation.eval_batch_size=1", "segmentation.threads_per_run=1"]
RUN_FILES = ("best.pt", "last.pt", "result.json", "test_cm.npy")     # a cell's files (last.pt: after epoch 1)


def agents_ranks(recs: dict, agents: Path):
    "Each agent's two processes: LOCAL_RANK 0 and 1, consecutive global ranks, own GPUs, the agent's folder."
    for n, rs in recs.items():
        g = int(rs[0]["env"]["GROUP_RANK"])                      # c10d numbers the agents as they join
        assert [r["env"]["LOCAL_RANK"] for r in rs] == ["0", "1"]
        assert [r["cuda"] for r in rs] == ["cuda:0", "cuda:1"]
        assert [int(r["env"]["RANK"]) for r in rs] == [2 * g, 2 * g + 1]
        assert [r["group"] for r in rs] == [dict(rank=2 * g + i, world=4, backend="gloo") for i in range(2)]
        assert {r["cwd"] for r in rs} == {str(agents / n)}
        assert {r["env"]["GROUP_RANK"] for r in rs} == {str(g)}
        assert sorted(f.name for f in (agents / n).iterdir()) == [f"rank{2 * g + i}.json" for i in range(2)]


def test_two_agents_of_two_ranks_train_one_cell_each_rank_its_own(prepared, tmp_path):
    """`aras.seg_matrix train` on 2 agents x 2 processes (4 ranks, LOCAL_RANK 0 and 1 on each agent), each
    agent in its own working directory, one shared ARAS_CACHE: every rank has its own ranks and GPU, nothing
    lands in an agent's folder, the cell's files are written once (by rank 0), the chapter run afterwards in
    one process finds the cell and writes nothing again, and the gathered test confusion matrices are those
    one process computes from the saved model."""
    cache, agents = tmp_path / "cache", tmp_path / "agents"
    env = {**os.environ, "ARAS_CACHE": str(cache), "ARAS_FIGURES": str(tmp_path / "fig"),
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{tmp_path / 'probe'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["aras.seg_matrix", "train", "--profile", "smoke", "--data-root", str(prepared[0]),
            "--mix", "real", "--seeds", "0", "--set", *SEG]
    p = torchrun(probed(tmp_path / "probe", args), env, nodes=2, procs=4, cwd=agents)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = {n: probe_records(agents / n) for n in ("node0", "node1")}
    agents_ranks(recs, agents)
    ranks = [r for rs in recs.values() for r in rs]
    assert sorted(int(r["env"]["RANK"]) for r in ranks) == [0, 1, 2, 3] and all(r["exit"] == 0 for r in ranks)
    res = json.loads(next(cache.rglob("result.json")).read_text())
    assert res["world_size"] == 4 and res["steps"] == 2 and len(list(cache.rglob("result.json"))) == 1
    writers = Counter(f for r in ranks for f in r["written"] if Path(f).is_relative_to(cache))
    run_dir = res["run_dir"]
    assert {f for f in writers if f.startswith(run_dir)} == {f"{run_dir}/{n}" for n in RUN_FILES}
    assert {r["env"]["RANK"] for r in ranks for f in r["written"] if f.startswith(run_dir)} == {"0"}
    # the set lists: every rank builds the cells and may find a list missing and write it (atomically, the
    # same bytes); every other file of the cache is written by one rank
    assert [f for f, k in writers.items() if k > 1 and Path(f).parent.name != "sets"] == []
    stamps = {f: f.stat().st_mtime_ns for f in cache.rglob("*") if f.is_file()}
    with pytest.MonkeyPatch.context() as mp:                                  # the chapter, one process
        mp.setenv("ARAS_CACHE", str(cache))
        mx = SegmentationMatrix(make_run("smoke", prepared[0], overrides=SEG), prepared[0], "cpu")
        cells = mx.cells(["real"], ["FPN"], [0])
        assert [c["run_dir"] for c in cells] == [res["run_dir"]] and mx.train(cells, progress=False) == [res]
    again = {f: f.stat().st_mtime_ns for f in cache.rglob("*") if f.is_file()}
    assert again == stamps                                                    # nothing written again
    model = S.build_model("FPN", res["config"]["encoder"])
    model.load_state_dict(S.load_checkpoint(Path(res["run_dir"]) / "best.pt", "FPN")["model"])
    ds = S.SegmentationSet(res["config"]["test"], 64, in_memory=True)
    cm, per = S.evaluate(model, ds, res["config"]["norm"], batch_size=1, per_image=True)
    np.testing.assert_array_equal(cm, np.array(res["test_cm"]))
    np.testing.assert_array_equal(per, np.load(Path(res["run_dir"]) / "test_cm.npy"))
    assert len(ds) >= 4 and cm.sum() == len(ds) * 64 * 64                    # every rank had test images


# --- scripts/slurm.sh on GPU nodes -----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
RECORDING_SRUN = """#!/usr/bin/env bash
# srun that runs nothing: it writes its arguments, one a line, and the environment the ranks would get
printf '%s\\n' "$@" > "$SRUN_RECORD"
printf 'ARAS_CACHE=%s\\nOMP_NUM_THREADS=%s\\n' "$ARAS_CACHE" "$OMP_NUM_THREADS" > "$SRUN_RECORD.env"
"""
STAGE = ["segmentation", "train", "--mix", "real", "--profile", "paper", "--device", "cuda", "--data-root",
         "data/ARAS400k"]
JOB = dict(SLURM_NNODES="2", SLURM_NODEID="0", SLURM_JOB_NODELIST="gpu-[a-b]", SLURM_JOB_ID="1234567",
           SLURM_SUBMIT_DIR=str(ROOT), SLURM_GPUS_ON_NODE="2", SLURM_CPUS_PER_TASK="40",
           ARAS_CACHE="shared/aras")


def slurm(tmp_path, args: list, **job):
    """Run scripts/slurm.sh as sbatch does on 2 nodes (`job`: variables to change, None to leave one out);
    return the result, srun's arguments and the environment srun passes on (None when srun did not run)."""
    bin_, rec = tmp_path / "bin", tmp_path / "srun.args"
    bin_.mkdir(exist_ok=True)
    for f in (rec, tmp_path / "srun.args.env"):                         # the record of an earlier call
        f.unlink(missing_ok=True)
    (bin_ / "srun").write_text(RECORDING_SRUN)
    (bin_ / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'gpu-a\\ngpu-b\\n'\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    mine = ("SLURM_", "ARAS_", "OMP_")                                  # none of the test run's own
    env = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
    env.update(JOB, PATH=f"{bin_}:{os.environ['PATH']}", SRUN_RECORD=str(rec), **job)
    env = {k: v for k, v in env.items() if v is not None}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "slurm.sh"), *args], env=env, capture_output=True,
                       text=True, timeout=60)
    if not rec.exists():
        return p, None, None
    ranks_env = dict(x.split("=", 1) for x in (tmp_path / "srun.args.env").read_text().splitlines())
    return p, rec.read_text().splitlines(), ranks_env


def test_slurm_script_starts_one_process_per_gpu_with_its_share_of_the_cpus(tmp_path):
    """Two nodes of 2 GPUs and 40 CPUs: srun starts one agent per node with all 40 CPUs (srun does not
    inherit --cpus-per-task since SLURM 22.05), each agent 2 ranks at a c10d rendezvous on the first node, on
    a port of the job's own; each rank gets 40 / 2 less its 8 loader processes = 12 threads (not the
    submitting shell's OMP_NUM_THREADS) and the cache as an absolute path."""
    args = [*STAGE, "--set", "segmentation.num_workers=8"]
    p, launch, ranks_env = slurm(tmp_path, args, OMP_NUM_THREADS="1")
    assert p.returncode == 0, p.stderr
    python = launch.index(".venv/bin/python")
    assert launch[:python] == ["--kill-on-bad-exit=1", "--nodes=2", "--ntasks-per-node=1",
                               "--cpus-per-task=40"]
    assert launch[python:] == [".venv/bin/python", "-m", "torch.distributed.run", "--nnodes", "2",
                               "--nproc_per_node", "2", "--rdzv_backend", "c10d",
                               "--rdzv_endpoint", f"gpu-a:{20000 + 1234567 % 20000}",
                               "--rdzv_id", "aras-1234567", "-m", "aras.seg_matrix", *args[1:]]
    assert ranks_env == dict(ARAS_CACHE=str(ROOT / "shared" / "aras"), OMP_NUM_THREADS="12")
    assert p.stderr == "" and "2 nodes x 2 processes, rendezvous at gpu-a:" in p.stdout
    assert "12 threads per process" in p.stdout
    _, launch, ranks_env = slurm(tmp_path, ["gan", "--kind", "uncond"])            # no loaders: 40 / 2 each
    assert launch[-3:] == ["aras.gan", "--kind", "uncond"] and ranks_env["OMP_NUM_THREADS"] == "20"


def test_slurm_script_says_what_is_missing(tmp_path):
    "No GPU on a node: a warning, one process; too few CPUs for loaders: a warning; outside a job: refused."
    p, launch, ranks_env = slurm(tmp_path, ["metrics", "--profile", "paper"], SLURM_GPUS_ON_NODE=None,
                                 SLURM_CPUS_PER_TASK=None, SLURM_CPUS_ON_NODE="6")
    assert p.returncode == 0 and "SLURM_GPUS_ON_NODE=(unset)" in p.stderr
    assert "one process per node" in p.stderr
    assert launch[launch.index("--nproc_per_node") + 1] == "1" and "--cpus-per-task=6" in launch
    assert ranks_env["OMP_NUM_THREADS"] == "6"
    p, _, ranks_env = slurm(tmp_path, STAGE, SLURM_CPUS_PER_TASK="16")       # 2 ranks x (16 loaders + 1)
    assert "16 CPUs per node for 2 ranks x (16 loader workers + 1) = 34" in p.stderr
    assert ranks_env["OMP_NUM_THREADS"] == "1"                                      # never 0 or less
    p, launch, _ = slurm(tmp_path, STAGE, SLURM_JOB_ID=None)
    assert p.returncode == 2 and "SLURM_JOB_ID is unset: run this script with sbatch" in p.stderr
    assert launch is None
