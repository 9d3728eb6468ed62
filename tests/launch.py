"""torchrun launches for the multi-process tests: two processes on one node, or two one-process "nodes" on localhost
that meet at a c10d rendezvous, as two machines of a cluster do (gloo on CPU)."""
import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(module_args: list, env: dict, nodes: int = 1, procs: int = 2, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `python -m <module_args>` as `procs` ranks in all: on one node (`--standalone`), or split over `nodes` launches
    of `procs // nodes` processes each, started at once and joined by a c10d rendezvous on localhost. Returns the result
    with every launch's output joined (stdout, stderr) and the first non-zero exit code."""
    base = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        return subprocess.run(base + ["--standalone", f"--nproc_per_node={procs}", "-m", *module_args], env=env,
                              capture_output=True, text=True, timeout=timeout)
    rdzv = [f"--nnodes={nodes}", f"--nproc_per_node={procs // nodes}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=aras-test", "--max_restarts=0"]
    launches = [subprocess.Popen(base + rdzv + [f"--node_rank={i}", "-m", *module_args], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(nodes)]
    outs = [p.communicate(timeout=timeout) for p in launches]
    code = next((p.returncode for p in launches if p.returncode), 0)
    return subprocess.CompletedProcess(launches[0].args, code, "".join(o for o, _ in outs), "".join(e for _, e in outs))


def torchrun_script(tmp_path, name: str, source: str, procs: int = 2) -> dict:
    "Write `source` as `<name>.py` in `tmp_path`, run it on `procs` local processes, return the dict rank 0 prints after RESULT."
    import json
    (tmp_path / f"{name}.py").write_text(source)
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    p = torchrun([name], {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}, procs=procs)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.split("RESULT ")[1].splitlines()[0])
