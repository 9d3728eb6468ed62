import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from aras.cli import main, pipeline_notebooks
from aras.core import ArasError


def _nb(path, *sources, params=True):
    nb = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_code_cell('profile = "smoke"\nout_dir = None')] if params else []
    if params: cells[0].metadata["tags"] = ["parameters"]
    nb.cells = cells + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def nbs(tmp_path):
    d = tmp_path / "nbs"; d.mkdir()
    _nb(d / "00_first.ipynb", "from pathlib import Path\nPath('first.txt').write_text(profile)")
    _nb(d / "01_second.ipynb", "x = 1", "def boom():\n    raise ValueError('bad toyland')\nboom()")
    _nb(d / "02_third.ipynb", "Path('third.txt').write_text('no')")
    _nb(d / "90_tooling.ipynb", "raise SystemExit('tooling notebooks are not part of the pipeline')")
    return d


def test_pipeline_selection(nbs):
    assert [p.name[:2] for p in pipeline_notebooks(nbs)] == ["00", "01", "02"]
    assert [p.name[:2] for p in pipeline_notebooks(nbs, only=["0", "2"])] == ["00", "02"]
    assert [p.name[:2] for p in pipeline_notebooks(nbs, start="01")] == ["01", "02"]
    with pytest.raises(ArasError, match="no notebook numbered 05"):
        pipeline_notebooks(nbs, only=["05"])


def test_reproduce_runs_in_order_and_stops_at_the_failing_cell(nbs, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["reproduce", "--profile", "paper", "--nbs", str(nbs), "--runs", str(runs)])
    out, err = capsys.readouterr()
    assert code == 1
    assert (nbs / "first.txt").read_text() == "paper"                   # parameters reached the notebook
    assert not (nbs / "third.txt").exists()                             # nothing ran after the failure
    assert "FAILED: 01_second.ipynb, cell 3" in err and "ValueError: bad toyland" in err
    assert "cell starts: def boom():" in err
    lines = {l.split()[0]: l.split()[1:3] for l in out.splitlines() if l.strip().endswith(".ipynb") is False and ".ipynb" in l}
    assert lines["00_first.ipynb"][0] == "ok" and lines["01_second.ipynb"][0] == "failed"
    assert lines["02_third.ipynb"][:2] == ["not", "run"]
    executed = nbformat.read(runs / "01_second.ipynb", as_version=4)
    assert any(c.metadata.get("tags") == ["injected-parameters"] for c in executed.cells)


def test_reproduce_only_and_dry_run(nbs, tmp_path, capsys):
    assert main(["reproduce", "--nbs", str(nbs), "--runs", str(tmp_path / "r"), "--only", "00"]) == 0
    out = capsys.readouterr().out
    assert "00_first.ipynb     ok" in out and "01_second" not in out
    assert main(["reproduce", "--nbs", str(nbs), "--from", "01", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "01_second.ipynb" in out and "00_first" not in out


def test_bad_input_is_one_line_and_exit_status_2(nbs, tmp_path, capsys):
    assert main(["reproduce", "--nbs", str(nbs), "--only", "07"]) == 2
    assert "error: no notebook numbered 07" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2
    assert "train.zip: missing" in capsys.readouterr().err


def _one_line(capsys):
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, (out, err)
    return err


def test_an_archive_that_is_a_folder_is_one_line_and_exit_status_2(tmp_path, capsys):
    (tmp_path / "train.zip").mkdir()                          # was an IsADirectoryError traceback
    assert main(["verify", str(tmp_path), "--files", "train.zip"]) == 2
    assert "train.zip: a folder, not the archive" in _one_line(capsys)


def test_unknown_archive_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path), "--files", "bogus.zip"]) == 2
    err = _one_line(capsys)
    assert "error: bogus.zip is not one of the published archives" in err
    assert all(n in err for n in ("train.zip", "val.zip", "test.zip", "synth.zip"))


@pytest.mark.parametrize("opt", ["--only", "--from"])
def test_non_numeric_notebook_is_one_line_and_exit_status_2(nbs, capsys, opt):
    assert main(["reproduce", "--nbs", str(nbs), opt, "abc", "--dry-run"]) == 2
    err = _one_line(capsys)
    assert "error: abc is not a notebook number (have 00, 01, 02)" in err


@pytest.mark.parametrize("dry", [["--dry-run"], []])
def test_missing_raw_dir_is_refused_before_any_notebook_runs(nbs, tmp_path, capsys, dry):
    missing = tmp_path / "does" / "not" / "exist"
    args = ["reproduce", "--nbs", str(nbs), "--runs", str(tmp_path / "r"), "--only", "00",
            "--raw-dir", str(missing), "--data-root", str(tmp_path / "data"), *dry]
    assert main(args) == 2
    err = _one_line(capsys)
    assert f"error: {missing}: raw tile folder does not exist" in err
    assert not (nbs / "first.txt").exists() and not (tmp_path / "r").exists()

def test_toyland_command_writes_tiles(tmp_path, capsys):
    assert main(["toyland", str(tmp_path / "t"), "--tiles", "1", "--px", "128"]) == 0
    assert len(list((tmp_path / "t").rglob("*.tif"))) == 2


def test_every_set_option_is_kept():
    "`--set a=1 --set b=2` and `--set a=1 b=2` mean the same (a repeated --set once kept only the last)."
    from aras.cli import _parser
    args = _parser().parse_args(["reproduce", "--set", "gan.synth.source=published", "--set", "segmentation.n_seeds=1", "seed=2"])
    assert args.overrides == ["gan.synth.source=published", "segmentation.n_seeds=1", "seed=2"]


def test_version_and_a_book_of_a_run(tmp_path, capsys):
    import nbformat
    with pytest.raises(SystemExit) as e: main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == "aras 0.1.0"
    runs = tmp_path / "runs"; runs.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Data preparation")]), runs / "03_data.ipynb")
    assert main(["docs", "--runs", str(runs), "--out", str(tmp_path / "book")]) == 0
    assert "the book:" in capsys.readouterr().out and (tmp_path / "book" / "03_data.html").exists()
    assert main(["docs", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "b")]) == 2
    assert "no executed notebooks here (run `aras reproduce` first)" in capsys.readouterr().err


FAKE_SRUN = """#!/usr/bin/env bash
# srun on a fake cluster: the job step once per node, all at once, on this machine
while [[ "$1" == --* ]]; do shift; done
pids=(); for n in $(seq "$SLURM_NNODES"); do "$@" & pids+=($!); done
code=0; for p in "${pids[@]}"; do wait "$p" || code=$?; done; exit $code
"""


def test_slurm_script_runs_a_stage_over_two_nodes(prepared, tmp_path):
    """scripts/slurm.sh as sbatch runs it, with srun and scontrol faked to put two nodes on localhost: the torchrun agents
    meet at the c10d rendezvous on the "head node" and deal the feature batches, every feature written once."""
    import os, subprocess, sys
    from launch import free_port
    bin_ = tmp_path / "bin"; bin_.mkdir()
    (bin_ / "srun").write_text(FAKE_SRUN)
    (bin_ / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'localhost\\nlocalhost\\n'\n")
    for f in bin_.iterdir(): f.chmod(0o755)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[1-2]",
           "SLURM_JOB_ID": "7", "SLURM_SUBMIT_DIR": str(root), "ARAS_RDZV_PORT": str(free_port()),
           "ARAS_VENV": str(Path(sys.executable).parents[1]), "ARAS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = ["metrics", "--profile", "smoke", "--data-root", str(prepared[0]), "--set", "metrics.spaces=('lite0',)",
            "metrics.n_images=6", "metrics.batch_size=4"]
    p = subprocess.run(["bash", str(root / "scripts" / "slurm.sh"), *args], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "aras metrics: 2 nodes x 1 processes, rendezvous at localhost:" in p.stdout
    assert "rank 0 of 2: features of" in p.stdout and "rank 1 of 2: features of" in p.stdout
    n = int(p.stdout.split("rank 0 of 2: features of ")[1].split()[0])
    assert len(list((tmp_path / "cache" / "features").rglob("*.npy"))) == 2 * n            # lite0 + logits, each image once
    bad = subprocess.run(["bash", str(root / "scripts" / "slurm.sh"), "train"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown stage train" in bad.stderr


def test_timings_keep_each_notebooks_latest_seconds_over_partial_reruns(tmp_path):
    from aras.cli import record_timings
    row = lambda nb, status, s: dict(notebook=nb, status=status, seconds=s, output="")
    record_timings([row("03_data.ipynb", "ok", 3.0), row("04_gan.ipynb", "ok", 40.0)], tmp_path)
    f = record_timings([row("04_gan.ipynb", "failed", 1.5)], tmp_path)      # `--only 04` again
    df = pd.read_csv(f)
    assert df.notebook.tolist() == ["03_data.ipynb", "04_gan.ipynb"]
    assert df.seconds.tolist() == [3.0, 1.5] and df.status.tolist() == ["ok", "failed"]
    assert "cpu_seconds" in df and df.cpu_seconds.isna().all()            # rows without CPU time: empty, not 0
    f = record_timings([dict(row("04_gan.ipynb", "ok", 40.0), cpu_seconds=75.5)], tmp_path)
    assert pd.read_csv(f).set_index("notebook").cpu_seconds.loc["04_gan.ipynb"] == 75.5


def test_run_notebook_counts_the_cpu_seconds_of_its_kernel(tmp_path):
    "A notebook that keeps one core busy for about a second reports about that much CPU time, not zero or the parent's."
    import nbformat
    from aras.cli import run_notebook
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass")])
    nb.metadata["kernelspec"] = dict(name="python3", display_name="Python 3", language="python")
    nbformat.write(nb, tmp_path / "busy.ipynb")
    r = run_notebook(tmp_path / "busy.ipynb", tmp_path / "out" / "busy.ipynb", {}, tmp_path)
    assert r["status"] == "ok" and 1.0 <= r["cpu_seconds"] <= r["seconds"] * 2.5, r


def _stamp_nb(path, seconds=2.5):
    "A notebook that uses `seconds` of CPU (however busy the machine) and writes when it ran (its name.txt: start end)."
    _nb(path, "import time\nfrom pathlib import Path\nt0, c0 = time.time(), time.process_time()\n"
              "while time.process_time() - c0 < %s: pass\n"
              "Path('%s.txt').write_text(f'{t0} {time.time()}')" % (seconds, path.stem))


@pytest.mark.parametrize("lanes", [1, 2])
def test_chapters_that_do_not_need_each_other_run_at_once(tmp_path, monkeypatch, capsys, lanes):
    import aras.cli as cli
    d = tmp_path / "nbs"; d.mkdir()
    for n in ("00_first", "01_second", "02_third"): _stamp_nb(d / f"{n}.ipynb")
    monkeypatch.setitem(cli.AFTER, "01_second", None)                 # needs nothing: beside 00_first
    assert main(["reproduce", "--nbs", str(d), "--runs", str(tmp_path / "r"), "--lanes", str(lanes)]) == 0
    (a0, a1), (b0, b1), (c0, c1) = [map(float, (d / f"{n}.txt").read_text().split()) for n in ("00_first", "01_second", "02_third")]
    assert (b0 < a1) == (lanes == 2)                                  # 01 started before 00 ended only with 2 lanes
    assert c0 >= max(a1, b1)                                          # 02 needs both (the default: every chapter before it)
    t = pd.read_csv(tmp_path / "r" / "timings.csv")
    assert (t.status == "ok").all() and t.cpu_seconds.between(2.4, 5.5).all(), t   # each kernel's own CPU, not its neighbour's


def test_a_failure_beside_a_running_chapter_lets_it_finish_and_starts_nothing_new(tmp_path, monkeypatch, capsys):
    import aras.cli as cli
    d = tmp_path / "nbs"; d.mkdir()
    _stamp_nb(d / "00_slow.ipynb", 3)
    _nb(d / "01_bad.ipynb", "raise ValueError('bad')")
    _stamp_nb(d / "02_after.ipynb", 0.1)
    monkeypatch.setitem(cli.AFTER, "01_bad", None)
    assert main(["reproduce", "--nbs", str(d), "--runs", str(tmp_path / "r"), "--lanes", "2"]) == 1
    assert (d / "00_slow.txt").exists() and not (d / "02_after.txt").exists()
    t = pd.read_csv(tmp_path / "r" / "timings.csv").set_index("notebook").status
    assert t.to_dict() == {"00_slow.ipynb": "ok", "01_bad.ipynb": "failed"}
    assert "FAILED: 01_bad.ipynb, cell 2" in capsys.readouterr().err   # after the injected parameters
