"""`aras score` on several processes (issue 30): torchrun's ranks compute every feature into the cache, each its
share of fixed batches; one process then reads them all and writes the report one process alone writes. On the
CPU (gloo), on small folders of 32 px patches."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import aras.metrics as M
from aras.cli import _parser, main
from aras.core import get_profile
from aras.score import score
from launch import probe_records, probed, torchrun
from test_score import _fields, _geotiffs, _pngs
from test_segmentation import _one_thread  # noqa: F401  (autouse: one torch thread, as each rank has)

TABLES = ("score_metrics", "score_orientation", "score_nearest", "score_entropy_bias")


@pytest.fixture
def forwards(monkeypatch):
    "The batch sizes of every extractor forward pass made in this process."
    seen, call = [], M.Extractor.__call__
    monkeypatch.setattr(M.Extractor, "__call__", lambda self, x: seen.append(len(x)) or call(self, x))
    return seen


def _features(cache: Path) -> dict:
    "Every cached feature, by its path under the cache (space id / content hash)."
    root = cache / "features"
    return {str(f.relative_to(root)): np.load(f) for f in root.rglob("*.npy")}


def test_nproc_2_computes_the_features_on_two_ranks_and_the_report_equals_one_process(tmp_path, monkeypatch, capfd,
                                                                                         forwards):
    """`--nproc 2`: two torchrun ranks compute every feature (24 + 24 images and the orientation study's 10 lists
    of 12, in 2 spaces), the report's process computes none, and features and tables equal one process alone."""
    real, fake = _pngs(tmp_path / "real", _fields(0, 24, 32)), _pngs(tmp_path / "fake", _fields(1, 24, 32))
    opts = [str(real), str(fake), "--spaces", "lite0", "lite0-logits", "--profile", "smoke",
            "--set", "metrics.batch_size=8"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "ranks"))
    assert main(["score", *opts, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    out = capfd.readouterr().out
    assert forwards == []                                                   # all read from the ranks' cache
    for r in (0, 1):
        assert f"rank {r} of 2: features of 168 images in 2 spaces done" in out
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "alone"))
    assert main(["score", *opts, "--out", str(tmp_path / "one")]) == 0
    assert sum(forwards) == 2 * 168                                          # alone: every image in both spaces
    two, one = _features(tmp_path / "ranks"), _features(tmp_path / "alone")
    assert len(one) == 2 * 168 and two.keys() == one.keys()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-6, atol=1e-6, err_msg=k)
    for t in TABLES:
        a, b = (pd.read_csv(tmp_path / d / f"{t}.csv") for d in ("two", "one"))
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)


def test_torchrun_ranks_prepare_once_on_rank_0_and_one_process_then_computes_nothing(tmp_path, monkeypatch, forwards):
    """`torchrun -m aras.score` on GeoTIFF samples (stretched into PNG copies): rank 0 writes every copy, rank 1 none
    (it waits at a barrier), both compute features, and a one-process `score` afterwards makes no forward pass."""
    real, fake = _pngs(tmp_path / "real", _fields(2, 8, 32)), _geotiffs(tmp_path / "fake", _fields(3, 8, 32))
    opts = [str(real), str(fake), "--spaces", "lite0", "--profile", "smoke", "--set", "metrics.batch_size=4"]
    env = {**os.environ, "ARAS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{tmp_path / 'probe'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = torchrun(probed(tmp_path / "probe", ["aras.score", *opts]), env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = probe_records(tmp_path)
    copies = [[f for f in r["written"] if "/score/" in f and f.endswith(".png")] for r in recs]
    assert [r["exit"] for r in recs] == [0, 0] and len(copies[0]) == 8 and copies[1] == []
    feats = [[f for f in r["written"] if f.endswith(".npy")] for r in recs]
    assert len(feats[0]) + len(feats[1]) == 16 + 10 * 4 and min(map(len, feats)) > 0   # each its share, once
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))
    settings = get_profile("smoke", {"metrics.batch_size": 4}).metrics
    rep = score(real, fake, spaces=("lite0",), settings=settings, progress=False)
    assert forwards == [] and len(rep.sets["fake"]) == 8


def test_the_torchrun_step_parses_the_options_of_aras_score_as_given():
    "`score_argv` gives each rank the command line it was given (less --out and --nproc), whatever options."
    from aras.score import score_argv
    given = ["score", "r", "f", "--held-out", "v", "t", "--spaces", "lite0", "--range", "0", "3000", "--fake-range",
             "1", "2.5", "--bands", "3", "2", "1", "--domain-record", "d.json", "--seed", "3", "--device", "cuda",
             "--weights", "w", "--set", "metrics.n_images=10", "metrics.batch_size=4", "--out", "o", "--nproc", "4"]
    a = _parser().parse_args(given)
    again = _parser().parse_args(["score", *score_argv(a)])
    assert {**vars(again), "out": "o", "nproc": 4} == vars(a)
    assert score_argv(_parser().parse_args(["score", "r", "f"]))[:2] == ["r", "f"]


def test_nproc_errors_are_one_line_before_any_process_starts(tmp_path, capsys):
    "A folder without images, too few GPUs, or no processes: one line on stderr and exit 2."
    fake = _pngs(tmp_path / "fake", _fields(4, 4, 32))
    (tmp_path / "empty").mkdir()
    cases = [(["score", str(tmp_path / "empty"), str(fake), "--nproc", "2"], "empty: no images"),
             (["score", str(fake), str(fake), "--spaces", "lite0", "--nproc", "64", "--device", "cuda"],
              "--nproc 64 with --device cuda: this machine has"),
             (["score", str(fake), str(fake), "--nproc", "0"], "--nproc 0: give 1 or more processes")]
    for argv, why in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
