"Claims report (notebook 09) and its statistics (00a): each claim's test in the shape of its words, checked by simulation at the run's sizes."
import numpy as np
import pandas as pd
from scipy import stats

from aras import claims as C
from aras import stats as S
from aras.core import make_run
from aras.seg_tables import contrasts_at, paper_diff

AUG = "every augmented mix (Real + Cond., Real + Uncond. 3x, Real + Uncond. 3x + Cond.) scores above Real"
C1 = "synthetic-only training scores slightly below Real (Uncond. 1x)"
C2 = "more synthetic data helps: Uncond. 3x above Uncond. 1x"


def test_contrast_interval_covers_and_holds_its_level_at_the_run_sizes():
    # the small run: 2 runs per training set, 4 real-containing + 2 synthetic-only sets, 80 test images in 2x2 blocks
    cov = S.contrast_coverage(200, runs=2, families=(4, 2), n_images=80, block=4, seed=11, block_sd=0.5)
    for k in ("within", "across"):
        assert 0.90 <= cov[f"{k} coverage"] <= 0.99, cov
        assert cov[f"{k} one-sided type I"] <= 0.09, cov


def test_smallest_detectable_effect_is_detected_80_percent_of_the_time():
    rng, sd, runs, mixes, hits = np.random.default_rng(0), 1.0, 2, 4, 0
    df = mixes * (runs - 1)
    true_se = sd * np.sqrt(2 / runs)
    delta = S.smallest_detectable(true_se, df)
    crit = stats.t.ppf(0.95, df)
    for _ in range(4000):
        x = rng.normal(0, sd, (mixes, runs)); x[1] += delta            # set 1 is better by delta
        se = np.sqrt(S.pooled_run_variance(list(x))[0] * 2 / runs)
        hits += (x[1].mean() - x[0].mean()) / se > crit
    assert abs(hits / 4000 - 0.80) < 0.03


def test_a_size_a_direction_and_a_similarity_are_three_tests():
    far = dict(diff=-34.8, ci_low=-40.9, ci_high=-28.7, p_greater=1.0, p_less=1e-4, mde=5.0)
    assert S.direction_verdict(far, "<0", -3.31) == "holds"                            # below: yes
    assert S.size_verdict(far, "<0", -3.31).startswith("contradicted: the paper's -3.31 lies outside")   # slightly: no
    near = dict(diff=-3.0, ci_low=-5.0, ci_high=-1.0, p_greater=0.99, p_less=0.005, mde=2.0)
    assert S.size_verdict(near, "<0", -3.31) == "holds"
    assert S.equivalence_verdict(0.10, 0.14, 0.038) == "contradicted"                   # similar: below the margin
    assert S.equivalence_verdict(0.001, 0.03, 0.038) == "holds"
    assert S.equivalence_verdict(0.02, 0.06, 0.038).startswith("cannot tell at this scale")


def test_a_run_too_small_for_the_paper_says_so_with_the_smallest_detectable_effect():
    wide = dict(diff=0.5, ci_low=-8.0, ci_high=9.0, p_greater=0.4, p_less=0.6, mde=6.1)
    assert S.direction_verdict(wide, ">0", 1.63) == "cannot tell at this scale: smallest detectable 6.1 points, the paper's +1.63"
    tight = dict(diff=0.1, ci_low=-0.4, ci_high=0.6, p_greater=0.4, p_less=0.6, mde=0.7)
    assert S.direction_verdict(tight, ">0", 1.63).startswith("contradicted at the paper's size")


def test_claims_table_on_known_contrasts(tmp_path):
    contrasts_at({("uncond_1x", "real"): -3.0, ("uncond_3x", "real"): -2.0, ("uncond_3x", "uncond_1x"): 1.0},
               se=0.3, df=20).to_csv(tmp_path / "seg_contrasts.csv", index=False)
    t = C.claims_table(tmp_path).set_index("claim")
    assert len(t) == len(C.CLAIMS)
    assert t.loc[AUG, "verdict"] == "holds" and t.loc[C1, "verdict"] == "holds" and t.loc[C2, "verdict"] == "holds"
    assert np.isclose(t.loc[AUG, "paper_value"], 1.63)         # a Unet-only run against the paper's Unet rows (mean: 1.07)
    assert "over 6 architectures" in t.loc[AUG, "paper_evidence"]
    contrasts_at({("uncond_1x", "real"): -35.0}, se=0.3, df=20).to_csv(tmp_path / "seg_contrasts.csv", index=False)
    assert C.claims_table(tmp_path).set_index("claim").loc[C1, "verdict"].startswith("contradicted: the paper's")


def test_contradicted_when_augmentation_hurts(tmp_path):
    contrasts_at({}, se=0.3, df=20, default=-3.0).to_csv(tmp_path / "seg_contrasts.csv", index=False)
    t = C.claims_table(tmp_path).set_index("claim")
    assert t.loc[AUG, "verdict"] == "contradicted (Real + Cond., Real + Uncond. 3x, Real + Uncond. 3x + Cond.)"
    contrasts_at({("real_uncond_3x", "real"): 0.1}, se=0.3, df=20, default=-3.0).to_csv(tmp_path / "seg_contrasts.csv",
                                                                                        index=False)
    t = C.claims_table(tmp_path).set_index("claim")                  # every mix that hurts is named, no other
    assert t.loc[AUG, "verdict"] == "contradicted (Real + Cond., Real + Uncond. 3x + Cond.)"


def test_best_augmentation_reports_the_smallest_margin(tmp_path):
    contrasts_at({("real_uncond_3x", "real_cond"): -0.65, ("real_uncond_3x", "real_uncond_3x_cond"): -1.07},
               se=2.0).to_csv(tmp_path / "seg_contrasts.csv", index=False)
    r = C.best_augmentation_claim(C.Tables(tmp_path))
    assert np.isclose(r["ours"], -1.07) and np.isclose(r["paper_value"], paper_diff("real_uncond_3x", "real_uncond_3x_cond", ("Unet",)))
    assert r["verdict"].endswith("(vs Real + Uncond. 3x + Cond.)")          # the shown margin's own verdict, named


def test_rare_classes_leave_out_unlearned_classes_and_split_the_real_runs(tmp_path):
    rows = []
    for s in (0, 1):
        for mix in ("real", *C.AUGMENTED):
            f1 = {c: 0.5 + 0.05 * k for k, c in enumerate(C.CLASSES)}
            f1["Built-up"] = 0.0                                     # never learned: no gain to rank
            if mix != "real": f1 = {c: v + (0.1 - 0.012 * k if v else 0) for k, (c, v) in enumerate(f1.items())}
            rows.append(dict(mix=mix, arch="Unet", seed=s, f1=0.5, **{f"f1_{c}": v for c, v in f1.items()}))
    pd.DataFrame(rows).to_csv(tmp_path / "seg_runs.csv", index=False)
    r = C.rare_class_claim(C.Tables(tmp_path))
    assert "Built-up" in r["note"] and np.isclose(r["ours"], -1.0) and r["verdict"] == "holds"
    assert np.isclose(r["mde"], S.critical_rho(6))


def test_a_metric_that_only_separates_the_groups_is_not_a_ranking():
    metric, f1 = np.array([90., 95, 31, 33, 30, 32]), np.array([.3, .2, .7, .71, .72, .73])
    assert stats.spearmanr(metric, f1).statistic < -0.7                 # pooled over groups it looks reliable
    rho, p, min_p = S.grouped_rho(metric, f1, np.array(list("ssrrrr")))
    assert p > 0.05 and np.isclose(min_p, 1 / 48)


def test_a_changed_table_layout_is_a_not_run_row_not_a_crash(tmp_path):
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "seg_contrasts.csv", index=False)
    t = C.claims_table(tmp_path)
    own = t.paper_evidence.str.len().gt(0) & t.test.str.startswith(("the paper's text", "what the published"))
    assert t[~own].verdict.str.startswith("not").all() and own.sum() == 2      # the paper's text, the referee's question


def test_report_is_written_beside_the_figures(tmp_path):
    run = make_run("small", out_dir=tmp_path)
    contrasts_at({}).to_csv(run.table_dir / "seg_contrasts.csv", index=False)
    pd.DataFrame(dict(model=["uncond"], stopped_by=["FID plateau"], kimg_reached=[11.0], fid_best=[99.3],
                      fid_real_floor=30.6)).to_csv(run.table_dir / "gan_training_summary.csv", index=False)
    C.write_claims(run)
    md = (run.fig_dir / "claims.md").read_text()
    assert md.startswith("# Claims") and "3.2x the real-vs-real floor 30.6: far from the real data" in md
    assert "smallest F1 difference detectable at 80% power" in md and " detectable |" in md.split("\n|---")[0]
    assert len(pd.read_csv(run.fig_dir / "claims.csv")) == len(C.CLAIMS)


def test_a_verdict_resting_on_an_unconverged_model_is_not_a_result(tmp_path):
    contrasts_at({("uncond_1x", "real"): -3.0, ("uncond_3x", "uncond_1x"): 1.0}, se=0.3, df=20).to_csv(
        tmp_path / "seg_contrasts.csv", index=False)
    runs = pd.DataFrame([dict(mix=m, arch="Unet", seed=s, f1=0.7, converged=True) for m in C.ALL_SETS for s in (0, 1)])
    runs.to_csv(tmp_path / "seg_runs.csv", index=False)
    pd.DataFrame(dict(model=["uncond", "cond"], stopped_by=["FID plateau", "kimg budget"], kimg_reached=[12.0, 8.0],
                      fid_best=[60.0, 45.5], fid_real_floor=30.6)).to_csv(tmp_path / "gan_training_summary.csv", index=False)
    t = C.claims_table(tmp_path).set_index("claim")
    assert t.loc[AUG, "verdict"] == ("inconclusive (the cond GAN stopped at its kimg budget before an FID plateau; "
                                     "unconverged, the run reads: holds)")          # the mix uses the conditional samples
    assert t.loc[C2, "verdict"] == "holds for these generators (best training FID uncond 2.0x the real floor)"  # uncond only
    runs.assign(converged=~((runs.mix == "uncond_3x") & (runs.seed == 0))).to_csv(tmp_path / "seg_runs.csv", index=False)
    t = C.claims_table(tmp_path).set_index("claim")
    assert t.loc[C2, "verdict"].startswith("inconclusive (1 of 2 segmentation runs on Uncond. 3x did not reach")
    assert t.loc[C1, "verdict"].startswith("holds for these generators")             # Real vs Uncond. 1x: not resting on it


def test_entropy_difference_interval_holds_its_level_at_the_run_sizes(tmp_path):
    "Claim 14's interval of mean |r| pixel minus feature: 4 fixed pairings of 96, 96, 96 and 16 pairs, no true difference."
    from aras.metric_studies import pearson_table
    pix, feat = C.PIXEL_METRICS, ("cosine distance [lite0]", "cosine distance [domain]", "lite0_distance (uncalibrated)")
    rng = np.random.default_rng(0)
    for shared in (0.0, 0.5):                       # metrics of one pairing independent, or sharing half their noise
        cover = 0
        for k in range(40):
            rows = []
            for pairing, n in zip(C.PRESPECIFIED, (96, 96, 96, 16)):
                x, common = rng.normal(size=n), rng.normal(size=n)
                noise = {m: np.sqrt(shared) * common + np.sqrt(1 - shared) * rng.normal(size=n) for m in pix + feat}
                scores = {m: 0.35 * x + np.sqrt(1 - 0.35**2) * e for m, e in noise.items()}
                rows.append(pearson_table(x, scores, n_boot=50, seed=k, n_perm=10).assign(pairing=pairing, source="toyland"))
            pd.concat(rows).to_csv(tmp_path / "metrics_entropy_bias.csv", index=False)
            r = C.entropy_claim(C.Tables(tmp_path))
            cover += r["ci_low"] <= 0 <= r["ci_high"]
        assert cover / 40 >= 0.88, (shared, cover)
