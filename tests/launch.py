"""torchrun launches for the multi-process tests: processes on one node, or several "nodes" on localhost
that meet at a c10d rendezvous, as machines of a cluster do (gloo on CPU). Each node's agent runs in a
working directory of its own, as on separate machines, sharing only what the environment points at
(ARAS_CACHE); `probed` runs an entry point under a probe that records what each rank saw (its ranks, its
GPU, the files it wrote)."""
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(module_args: list, env: dict, nodes: int = 1, procs: int = 2, timeout: float = 900,
             cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m <module_args>` as `procs` ranks in all: on one node (`--standalone`, in `cwd`), or
    split over `nodes` launches of `procs // nodes` processes each, started at once and joined by a c10d
    rendezvous on localhost, node i's agent in `cwd/node<i>` (a temporary folder without `cwd`). Returns
    the result with every launch's output joined (stdout, stderr) and the first non-zero exit code."""
    base = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        one = ["--standalone", f"--nproc_per_node={procs}", "-m", *module_args]
        return subprocess.run(base + one, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    rdzv = [f"--nnodes={nodes}", f"--nproc_per_node={procs // nodes}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=aras-test", "--max_restarts=0"]
    with tempfile.TemporaryDirectory(prefix="aras-agents-") as tmp:
        dirs = [Path(cwd or tmp) / f"node{i}" for i in range(nodes)]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        launches = [subprocess.Popen(base + rdzv + [f"--node_rank={i}", "-m", *module_args], env=env, cwd=d,
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for i, d in enumerate(dirs)]
        outs = [p.communicate(timeout=timeout) for p in launches]
    code = next((p.returncode for p in launches if p.returncode), 0)
    return subprocess.CompletedProcess(launches[0].args, code, "".join(o for o, _ in outs),
                                       "".join(e for _, e in outs))


def torchrun_script(tmp_path, name: str, source: str, procs: int = 2) -> dict:
    """Write `source` as `<name>.py` in `tmp_path`, run it on `procs` local processes, return the dict rank 0
    prints after RESULT."""
    (tmp_path / f"{name}.py").write_text(source)
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    p = torchrun([name], {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}, procs=procs)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.split("RESULT ")[1].splitlines()[0])


PROBE = '''"""python -m rank_probe MODULE ARGS: run `python -m MODULE ARGS` as torchrun started it, then write
rank<RANK>.json into the working directory: the ranks this process had in its environment and in the process
group, the GPU `aras` would give it, its working directory, and the files it wrote (Python's audit events)."""
import json
import os
import runpy
import sys
import torch.distributed as dist
from aras.runtime import local_device

KEYS = ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
rec = dict(env={k: os.environ.get(k) for k in KEYS}, cuda=local_device("cuda"), cwd=os.getcwd(), opened=[],
           renamed=[], group=None)
WRITE = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT


def audit(event, args):
    "Every open for writing and every rename, whichever library does it."
    if event == "open" and isinstance(args[0], str) and (args[2] or 0) & WRITE:
        rec["opened"].append(os.path.abspath(args[0]))
    elif event == "os.rename" and isinstance(args[1], str):
        rec["renamed"].append([os.path.abspath(args[0]), os.path.abspath(args[1])])


destroy = dist.destroy_process_group


def recorded_destroy(*a, **k):
    "The ranks the process group gave this process, read before the group goes."
    rec["group"] = dict(rank=dist.get_rank(), world=dist.get_world_size(), backend=dist.get_backend())
    return destroy(*a, **k)


sys.addaudithook(audit)
dist.destroy_process_group = recorded_destroy
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code or 0
rec["exit"] = code
text = json.dumps(rec)                       # before the record's own file is opened
with open(f"rank{os.environ.get('RANK', 0)}.json", "w") as fh:
    fh.write(text)
sys.exit(code)
'''


def probed(folder, module_args: list) -> list:
    "Module arguments that run `module_args` under `rank_probe`, written to `folder` (on PYTHONPATH)."
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "rank_probe.py").write_text(PROBE)
    return ["rank_probe", *module_args]


def probe_records(folder) -> list:
    "The records `rank_probe` left in `folder`, by rank; `written`: the files each left (renames followed)."
    recs = [json.loads(f.read_text()) for f in Path(folder).glob("rank*.json")]
    for r in recs:
        moved = {src for src, _ in r["renamed"]}
        r["written"] = sorted({p for p in r["opened"] if p not in moved} | {dst for _, dst in r["renamed"]})
    return sorted(recs, key=lambda r: int(r["env"]["RANK"]))
