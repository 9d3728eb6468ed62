"Statistical figures drawn with seaborn (notebooks 05b, 07b, 08a): what each draws is the table it is given."
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

from aras import agreement as AG  # noqa: E402
from aras import metric_studies as MS  # noqa: E402
from aras import seg_tables as T  # noqa: E402
from aras.landcover import CLASSES  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _points(ax) -> np.ndarray:
    "Every scatter point of an axes, (n, 2), whatever collection drew it."
    offsets = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    return np.concatenate(offsets) if offsets else np.zeros((0, 2))


def _segments(ax) -> list:
    "Every line segment of the axes' line collections (error bars, ranges), as ((x0, y0), (x1, y1))."
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    return [tuple(map(tuple, s)) for c in lines for s in c.get_segments()]


def _sorted_rows(a) -> list:
    return sorted(map(tuple, np.round(np.asarray(a, float), 9)))


# ---- 05b: per-class gain -------------------------------------------------------------------------------
def _gain_table() -> pd.DataFrame:
    "Two mixes that ran (4 and 2 pairs) and one that did not, over the seven classes."
    rng, rows = np.random.default_rng(0), []
    for mix, pairs in (("Uncond. 1x", 4), ("Real + Cond.", 2), ("Uncond. 3x", 0)):
        for c in CLASSES:
            rows.append(dict(mix=mix, mix_key=mix, cls=c, gain=rng.normal(0, 5) if pairs else np.nan,
                             sd=rng.uniform(0.5, 2) if pairs else np.nan, pairs=pairs,
                             paper_gain=rng.normal(0, 3)))
    return pd.DataFrame(rows)


def test_per_class_gain_figure_draws_the_tables_gains_sd_ranges_and_paper_diamonds():
    gain = _gain_table()
    fig = T.plot_per_class_gain(gain, absent=("Barren",))
    ax = fig.axes[0]
    mixes, where = list(dict.fromkeys(gain.mix)), {}
    for k, c in enumerate(CLASSES):                     # per class, the diamonds left to right: the mixes
        d = sorted((x, y) for x, y in _points(ax) if round(x) == k)
        np.testing.assert_allclose([y for _, y in d], gain[gain.cls == c].paper_gain)
        where |= {(m, c): x for m, (x, _) in zip(mixes, d)}
    def key(x):
        return next(k for k, v in where.items() if abs(v - x) < 1e-9)
    row = gain.set_index(["mix", "cls"])
    shown = row[row.gain.notna() & (row.index.get_level_values("cls") != "Barren")]
    bars = {key(b.get_x() + b.get_width() / 2): b.get_height() for b in ax.patches}
    assert sorted(bars) == sorted(shown.index)          # none for the absent class or the mix not run
    np.testing.assert_allclose([bars[k] for k in shown.index], shown.gain)
    ranges = {key(x0): (y0, y1) for (x0, y0), (x1, y1) in _segments(ax)}
    assert sorted(ranges) == sorted(shown.index)
    sd_range = np.c_[shown.gain - shown.sd, shown.gain + shown.sd]
    np.testing.assert_allclose([ranges[k] for k in shown.index], sd_range)
    legend = [t.get_text() for t in fig.legends[0].texts]
    assert legend == ["Uncond. 1x (n=4)", "Real + Cond. (n=2)", "Uncond. 3x (n=0)", "paper (Mean row)"]
    assert "Barren (absent)" in [t.get_text() for t in ax.get_xticklabels()]


# ---- 08a: metrics against people and against utility ----------------------------------------------------
def _rated() -> tuple[pd.DataFrame, pd.DataFrame]:
    "Nine rated images of three sets with two metric columns (one value missing), and an agreement table."
    data = pd.DataFrame(dict(set=["real_test"] * 3 + ["uncond"] * 3 + ["cond"] * 3,
                             kind=["real"] * 3 + ["synthetic"] * 6,
                             mean_score=[4.5, 4.0, 3.5, 2.0, 2.5, 1.5, 3.0, 3.5, 2.0],
                             entropy=[6.1, 5.2, 7.3, 4.4, 5.5, 6.6, 5.0, 4.1, 6.2],
                             psnr_nn=[20.0, 21.5, np.nan, 15.0, 16.5, 17.0, 18.0, 19.5, 14.0]))
    rows = [dict(metric=m, scope=s, n_items=n, spearman_rho=r, spearman_lo=r - 0.2, spearman_hi=r + 0.1,
                 kendall_tau=r / 2, kendall_lo=r / 2 - 0.1, kendall_hi=r / 2 + 0.1, note="")
            for s in ("all", "synthetic") for m, n, r in (("entropy", 9, 0.25), ("psnr_nn", 8, 0.5))]
    table = pd.DataFrame(rows)
    table.loc[3, ["spearman_rho", "note"]] = [np.nan, "constant metric on the rated images"]
    return data, table


@pytest.mark.parametrize("scope", ["all", "synthetic"])
def test_agreement_figure_plots_each_rated_image_at_its_metric_and_mean_score(scope):
    data, table = _rated()
    fig = AG.agreement_figure(data, table, scope=scope)
    d = data if scope == "all" else data[data.kind == scope]
    t = table[table.scope == scope].set_index("metric")
    assert len(fig.axes) == 2
    for ax, m in zip(fig.axes, ("entropy", "psnr_nn")):
        ok = d[m].notna()
        assert _sorted_rows(_points(ax)) == _sorted_rows(np.c_[d[m][ok], d.mean_score[ok]])
        r = t.loc[m]
        rho = f"ρ {r.spearman_rho:.2f} [{r.spearman_lo:.2f}, {r.spearman_hi:.2f}]"
        tau = f"τ {r.kendall_tau:.2f} [{r.kendall_lo:.2f}, {r.kendall_hi:.2f}], n {r.n_items}"
        assert ax.get_title() == f"{m}\n" + (r.note if np.isnan(r.spearman_rho) else f"{rho}\n{tau}")


def test_utility_figure_plots_each_training_set_at_its_score_interval_and_f1():
    rng = np.random.default_rng(1)
    mixes, f1 = ["Real", "Uncond. 1x", "Real + Cond."], [71.0, 36.0, 74.0]
    u = pd.DataFrame([dict(space=sp, metric=m, mix=x, value=v, ci_low=v - 1, ci_high=v + 2, f1=f)
                      for sp in ("lite0", "clip") for m in ("FID", "recall")
                      for x, f, v in zip(mixes, f1, rng.uniform(5, 50, 3))])
    agree = pd.DataFrame(dict(space=["lite0", "clip", "lite0"], metric=["FID", "FID", "recall"],
                              spearman_rho=[-1.0, 0.5, 0.25]))
    fig = AG.utility_figure(u, agree, metrics=("FID", "recall"), ncol=2)
    panels = [("lite0", "FID", "-1.00"), ("lite0", "recall", "0.25"), ("clip", "FID", "0.50"),
              ("clip", "recall", "nan")]
    titles = [f"{m}, {sp} space: Spearman rho {r}" for sp, m, r in panels]
    assert [ax.get_title() for ax in fig.axes] == titles
    for ax, (sp, m, _) in zip(fig.axes, panels):
        d = u[(u.space == sp) & (u.metric == m)]
        assert _sorted_rows(_points(ax)) == _sorted_rows(np.c_[d.value, d.f1])
        drawn = [(x0, y0, x1, y1) for (x0, y0), (x1, y1) in _segments(ax)]
        assert _sorted_rows(drawn) == _sorted_rows(np.c_[d.ci_low, d.f1, d.ci_high, d.f1])
        assert sorted(t.get_text() for t in ax.texts) == ["Real", "Real + C", "U 1x"]


# ---- 08a: the realism scores of each set -----------------------------------------------------------------
def test_rating_distribution_bars_are_each_sets_share_of_scores():
    scores = {("real_test", "real"): [5, 5, 4, 3], ("uncond", "synthetic"): [1, 2, 2, 3, 3, 3]}
    rows = [dict(rater=f"r{k % 2}", task="score", set=s, kind=kind, score=v)
            for (s, kind), vs in scores.items() for k, v in enumerate(vs)]
    rows.append(dict(rater="r0", task="2afc", set="uncond", kind="synthetic", score=pd.NA))
    ratings = pd.DataFrame(rows).astype({"score": "Int64"})
    fig = AG.rating_distribution_figure(ratings)
    ax = fig.axes[0]
    bars = [b for b in ax.patches if b.get_height()]
    drawn = {(round(b.get_x() + b.get_width() / 2), round(b.get_height(), 9)) for b in bars}
    assert drawn == {(v, round(vs.count(v) / len(vs), 9)) for vs in scores.values() for v in set(vs)}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real_test", "uncond"]    # real sets first
    assert ax.get_title().endswith("(2 rater(s), 10 scores)")


# ---- 07b: entropy bias -----------------------------------------------------------------------------------
def test_entropy_bias_figure_draws_each_pairings_least_squares_line():
    rng = np.random.default_rng(2)
    scatter = {}
    for p, slope in (("Cond. - its source real", 0.1), ("Uncond. - nearest real (lite0)", -2.0)):
        ent = rng.uniform(4, 7, 30)
        scatter[p] = (ent, {"ssim": slope * ent + rng.normal(0, 0.05, 30),
                            "psnr": 30 + slope * ent + rng.normal(0, 1, 30)})
    eb = pd.DataFrame([dict(pairing=p, metric=m, r=0.5, p="0.001") for p in scatter for m in ("ssim", "psnr")]
                      + [dict(pairing="perturbed: rot90 1", metric="ssim", r=-0.9, p="0.5")])    # no scatter
    fig = MS.plot_entropy_bias(scatter, eb)
    for ax, m in zip(fig.axes, ("ssim", "psnr")):
        assert ax.get_title() == f"{m}\nC0: r = 0.50 (p 0.001)\nC1: r = 0.50 (p 0.001)"
        pairs = np.concatenate([np.c_[e, s[m]] for e, s in scatter.values()])
        assert _sorted_rows(_points(ax)) == _sorted_rows(pairs)
        fits = sorted(np.polyfit(*line.get_data(), 1)[0] for line in ax.lines)
        least_squares = sorted(np.polyfit(e, s[m], 1)[0] for e, s in scatter.values())
        np.testing.assert_allclose(fits, least_squares, rtol=1e-9)
