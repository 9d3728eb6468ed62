"""The paper profile rehearsed before anyone rents a GPU: every pipeline notebook once with `--profile paper`, where
`--set` shrinks only counts and budgets. The code paths stay the paper's: 256 px patches, per-patch max scaling, 8x8
split blocks' code, StyleGAN2 at cbase 16384 with path-length regularisation and ADA, the authors' SPADE with the VGG19
loss, `preload=False`, data-loader workers, all six smp architectures on EfficientNet-B7 and all six mixes, the five
captioners and CLIP from local folders, every feature space. The pretrained models are random stand-ins saved under
the names the profile looks for (`tests/tiny_models.py::paper_weights`), so the numbers mean nothing; what is tested
is that a paper run gets through every chapter. About 26 minutes on one core (the test command runs it beside the
other tests), 9 of them the 39 EfficientNet-B7 segmentation cells (marked slow; CI runs it)."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from aras.cli import main, pipeline_notebooks
from aras.core import get_profile, parse_overrides
from tiny_models import paper_weights

REHEARSAL = [
    # data: 4 toyland tiles of 1024 px (9 patches of 256 px each); split blocks of 2 x 2 patches, so that val and
    # test are 4 patches each rather than a whole tile (the paper's 8 x 8 blocks need tiles of 2048+ px)
    "toyland.n_tiles=4", "toyland.tile_px=1024", "data.split_block=2",
    # GANs at the paper's widths: 2 steps each (the first with both regularisers), FID on 8 and 4 samples
    "gan.uncond.batch=4", "gan.uncond.kimg=0.008", "gan.uncond.snap_kimg=0.004", "gan.uncond.log_every=1",
    "gan.uncond.fid.every_kimg=0.004", "gan.uncond.fid.n_fake=8",
    "gan.cond.batch=2", "gan.cond.kimg=0.004", "gan.cond.snap_kimg=0.002", "gan.cond.log_every=1",
    "gan.cond.fid.every_kimg=0.002", "gan.cond.fid.n_fake=4",
    # segmentation: all 6 architectures x 6 mixes, 1 seed, 1 step each; the compute-matched control for one architecture
    "segmentation.epochs=1", "segmentation.steps_per_epoch=1", "segmentation.batch_size=2", "segmentation.eval_batch_size=4",
    "segmentation.n_seeds=1", "segmentation.bootstrap=50", "segmentation.permutations=50", "segmentation.num_workers=2",
    "segmentation.fig4_max_per_set=16", "segmentation.compute_matched_archs=('Unet',)",
    "captioning.n_images=2", "captioning.batch_size=2", "captioning.clip_batch_size=2",
    "metrics.n_images=8", "metrics.batch_size=4", "metrics.kid_subset_size=4", "metrics.kid_subsets=2", "metrics.is_splits=2",
    "metrics.n_boot=4", "metrics.n_perm=20", "metrics.perturb.n_images=4", "metrics.ppl.n=4", "metrics.ppl.batch=2",
    "metrics.nn_repeats=2", "metrics.per_image_max=4", "metrics.human.n_per_set=2", "metrics.human.n_boot=50",
]


def test_rehearsal_changes_only_counts_and_budgets():
    "Every override names a count, a size of the toy data or a budget; none is a `method` change or a code-path switch."
    paper = get_profile("paper")
    for s in REHEARSAL:
        key = s.split("=")[0]
        assert key.split(".")[-1] in {"n_tiles", "tile_px", "split_block", "batch", "kimg", "snap_kimg", "log_every", "every_kimg",
                                      "n_fake", "epochs", "steps_per_epoch", "batch_size", "eval_batch_size", "n_seeds", "bootstrap",
                                      "permutations", "num_workers", "fig4_max_per_set", "compute_matched_archs", "n_images",
                                      "clip_batch_size", "kid_subset_size", "kid_subsets", "is_splits", "n_boot", "n_perm", "n",
                                      "nn_repeats", "per_image_max", "n_per_set"}, key
    rehearsed = get_profile("paper", parse_overrides(REHEARSAL))
    assert not rehearsed.method_changes and rehearsed.data.patch_size == 256 and not rehearsed.gan.preload
    assert rehearsed.segmentation.archs == paper.segmentation.archs and rehearsed.segmentation.mixes == paper.segmentation.mixes


@pytest.mark.slow
def test_every_chapter_runs_at_the_paper_profile(tmp_path_factory, monkeypatch, capsys):
    work = tmp_path_factory.mktemp("rehearsal")
    paper_weights(work / "weights", work / "torch")
    for k, v in dict(ARAS_CACHE=work / "cache", ARAS_WEIGHTS=work / "weights", TORCH_HOME=work / "torch").items():
        monkeypatch.setenv(k, str(v))
    try:
        code = main(["reproduce", "--profile", "paper", "--runs", str(work / "runs"), "--out", str(work / "fig"), "--set", *REHEARSAL])
        out, err = capsys.readouterr()
        assert code == 0, out[-3000:] + err[-3000:]    # the run's table, then the failing cell and its error (stderr)
        ran = sorted(p.name for p in (work / "runs").glob("*.ipynb"))
        assert ran == [p.name for p in pipeline_notebooks(Path(__file__).resolve().parents[1] / "nbs")]   # every chapter, executed
        tab = work / "fig" / "paper" / "tables"
        gan = pd.read_csv(tab / "gan_training_summary.csv").set_index("model")
        assert gan.px.tolist() == [256, 256] and (gan.kimg_reached > 0).all()
        runs = pd.read_csv(tab / "seg_runs.csv")
        assert set(runs.arch) == set(get_profile("paper").segmentation.archs) and runs.mix.nunique() == 6
        results = [json.loads(f.read_text()) for f in (work / "cache").rglob("result.json")]
        assert results and all("efficientnet-b7.imagenet.safetensors" in r["weights_source"] for r in results)
        captioners = pd.read_csv(tab / "table2_captioners.csv")
        assert {"Qwen3-4B", "Gemma3-4B", "Qwen3-VL-8B"} <= set(captioners[captioners.source == "this run"].model)   # from local folders
        spaces = pd.read_csv(tab / "metrics_extractors.csv")
        assert len(spaces) == len(get_profile("paper").metrics.spaces) and (spaces.status == "ok").all(), spaces.to_string()
    finally:
        for d in ("cache", "weights", "torch"):     # ~10 GB of EfficientNet-B7 checkpoints, ~1.4 GB of stand-in weights
            shutil.rmtree(work / d, ignore_errors=True)
