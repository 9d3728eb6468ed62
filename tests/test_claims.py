"Claims report (notebook 09): verdicts from intervals, run-level paired comparisons, not-run rows, the written report."
import numpy as np
import pandas as pd
import pytest

from aras import claims as C
from aras.core import make_run


def _runs(gain=3.0, noise=0.5, seeds=3, archs=("Unet", "FPN", "PAN"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for a in archs:
        for s in range(seeds):
            base = 0.70 + rng.normal(0, 0.02)                       # seed/arch effect shared by the pair
            for mix, g in (("real", 0), ("uncond_1x", -4), ("uncond_3x", -2), ("real_cond", gain),
                           ("real_uncond_3x", gain + 1), ("real_uncond_3x_cond", gain)):
                f1 = base + (g + rng.normal(0, noise)) / 100
                rows.append(dict(mix=mix, arch=a, seed=s, f1=f1, epochs_run=12, best_epoch=6,
                                 **{f"f1_{c}": f1 for c in C.CLASSES}))
    return pd.DataFrame(rows)


def test_paired_gain_recovers_a_known_difference_and_its_interval_covers_it():
    cover = 0
    for k in range(300):
        m, lo, hi, n = C.paired_gain(_runs(gain=3.0, seed=k), "real", "real_cond")
        assert n == 9
        cover += lo <= 3.0 <= hi
    assert 0.92 <= cover / 300 <= 0.98      # a 95% t interval over 9 paired runs covers the truth about 95% of the time


def test_verdicts_follow_the_interval_not_the_point():
    assert C.verdict(0.1, 2.0, ">0") == "holds"
    assert C.verdict(-0.1, 2.0, ">0").startswith("inconclusive")
    assert C.verdict(-2.0, -0.1, ">0") == "contradicted"


def test_claims_table_on_known_runs(tmp_path):
    _runs(gain=3.0, noise=0.3).to_csv(tmp_path / "seg_runs.csv", index=False)
    t = C.claims_table(tmp_path).set_index("claim")
    assert len(t) == len(C.CLAIMS)
    assert t.loc["every augmented mix (Real + Cond., Real + Uncond. 3x, Real + Uncond. 3x + Cond.) scores above Real", "verdict"] == "holds"
    assert t.loc["synthetic-only training scores slightly below Real (Uncond. 1x)", "verdict"] == "holds"
    assert t.loc["more synthetic data helps: Uncond. 3x above Uncond. 1x", "verdict"] == "holds"
    assert t.verdict.str.contains("not run").sum() >= 8          # the tables of 05-08 other than seg_runs are absent


def test_contradicted_when_augmentation_hurts(tmp_path):
    _runs(gain=-3.0, noise=0.3).to_csv(tmp_path / "seg_runs.csv", index=False)
    t = C.claims_table(tmp_path).set_index("claim")
    assert t.loc["every augmented mix (Real + Cond., Real + Uncond. 3x, Real + Uncond. 3x + Cond.) scores above Real", "verdict"] == "contradicted"


def test_a_changed_table_layout_is_a_not_run_row_not_a_crash(tmp_path):
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "seg_runs.csv", index=False)
    t = C.claims_table(tmp_path)
    assert t.verdict.str.startswith("not run").all()


def test_report_is_written_beside_the_figures(tmp_path):
    run = make_run("small", out_dir=tmp_path)
    _runs().to_csv(run.table_dir / "seg_runs.csv", index=False)
    C.write_claims(run)
    md = (run.fig_dir / "claims.md").read_text()
    assert md.startswith("# Claims") and "runs ended on a validation plateau" in md and "Tests:" in md
    assert len(pd.read_csv(run.fig_dir / "claims.csv")) == len(C.CLAIMS)


def test_a_verdict_resting_on_an_unconverged_model_is_not_a_result(tmp_path):
    runs = _runs(gain=3.0, noise=0.3)
    runs.to_csv(tmp_path / "seg_runs.csv", index=False)
    pd.DataFrame(dict(model=["uncond", "cond"], stopped_by=["FID plateau", "kimg budget"], kimg_reached=[12.0, 8.0],
                      fid_best=[60.0, 45.5], fid_real_floor=30.6)).to_csv(tmp_path / "gan_training_summary.csv", index=False)
    t = C.claims_table(tmp_path).set_index("claim")
    aug = "every augmented mix (Real + Cond., Real + Uncond. 3x, Real + Uncond. 3x + Cond.) scores above Real"
    assert t.loc[aug, "verdict"] == ("inconclusive (the cond GAN stopped at its kimg budget before an FID plateau; "
                                     "unconverged, the run reads: holds)")          # the mix uses the conditional samples
    assert t.loc["more synthetic data helps: Uncond. 3x above Uncond. 1x", "verdict"] == "holds"   # unconditional only
    still = runs.index[runs.mix == "uncond_3x"][0]
    runs.assign(converged=runs.index != still).to_csv(tmp_path / "seg_runs.csv", index=False)   # one Uncond. 3x run still learning
    t = C.claims_table(tmp_path).set_index("claim")
    assert t.loc["more synthetic data helps: Uncond. 3x above Uncond. 1x", "verdict"].startswith(
        "inconclusive (1 of 9 segmentation runs on Uncond. 3x did not reach a validation plateau")
    before = "synthetic-only training scores slightly below Real (Uncond. 1x)"      # Real vs Uncond. 1x: not resting on it
    assert t.loc[before, "verdict"] == "holds"
    imagenet = "ImageNet feature-space metrics are unreliable indicators of utility for EO"   # all six sets, if it ran
    assert "Uncond. 3x did not reach" in t.loc[imagenet, "verdict"] or t.loc[imagenet, "verdict"].startswith("not run")
