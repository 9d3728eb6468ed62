"Human judgment (notebook 08): items, the rating page (in a real browser), the ratings CSV, summaries, agreement with metrics."
import base64
import importlib.util
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

import aras.alignment as A
from aras.core import ArasDataError, ArasError

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def per_image(tmp_path_factory):
    "Six real 24 px and 2 x 5 synthetic 8 px PNGs of distinct content, with two metrics (one with a NaN)."
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for s, kind, n, px in (("real_test", "real", 6, 24), ("uncond", "synthetic", 5, 8), ("cond", "synthetic", 5, 8)):
        for k in range(n):
            p = d / s / f"{k:03d}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (px, px, 3), dtype=np.uint8)).save(p)
            rows.append(dict(image=str(p), set=s, kind=kind))
    df = pd.DataFrame(rows)
    df["entropy"] = rng.normal(6, 1, len(df))
    df["psnr_nn"] = np.arange(len(df), dtype=float)[::-1]
    df.loc[3, "psnr_nn"] = np.nan
    return A.with_item_ids(df)


@pytest.fixture(scope="module")
def items(per_image):
    return A.rating_items(per_image, n_per_set=4, seed=0)


def test_item_ids_follow_content(per_image, tmp_path):
    p = Path(per_image.image[0])
    shutil.copy(p, tmp_path / "moved.png")
    assert A.item_id(tmp_path / "moved.png") == per_image.item[0] and per_image.item.is_unique
    assert len(per_image.item[0]) == 12
    with pytest.raises(ArasDataError, match="nothere.png"):
        A.item_id(tmp_path / "nothere.png")


def test_rating_items_deterministic_per_set(per_image, items):
    assert items.groupby("set").size().to_dict() == {"cond": 4, "real_test": 4, "uncond": 4}
    again = A.rating_items(per_image.sample(frac=1, random_state=3), n_per_set=4, seed=0)
    assert again.item.tolist() == items.item.tolist()                      # row order does not matter
    other = A.rating_items(per_image, n_per_set=4, seed=1)
    assert other.item.tolist() != items.item.tolist()
    fewer = A.rating_items(per_image[per_image.set != "cond"], n_per_set=4, seed=0)
    assert fewer.item.tolist() == items[items.set != "cond"].item.tolist()  # a set's draw ignores the other sets


def test_read_per_image_missing_names_notebook_07(tmp_path):
    with pytest.raises(ArasError, match="run the metrics chapter first.*07"):
        A.read_per_image(tmp_path / "metrics" / "per_image.csv")
    pd.DataFrame(dict(image=["a.png"], set=["x"], kind=["fake"], m=[1.0])).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ArasDataError, match=r"p.csv, line 2: kind 'fake'"):
        A.read_per_image(tmp_path / "p.csv")


def test_csv_round_trip_and_sources(items, per_image, tmp_path, capsys):
    sim = A.simulate_ratings(items, n_raters=3, seed=0)
    assert len(sim) == 3 * (8 + 12) and set(sim.rater) == {"SIM-01", "SIM-02", "SIM-03"}
    for r, g in sim.groupby("rater"):
        A.write_ratings(g, tmp_path / f"aras_ratings_{r}.csv")
    one = A.read_ratings(tmp_path / "aras_ratings_SIM-01.csv", per_image)
    pd.testing.assert_frame_equal(one, sim[sim.rater == "SIM-01"].reset_index(drop=True))
    for source in (tmp_path, str(tmp_path / "aras_ratings_*.csv"), sorted(tmp_path.glob("*.csv"))):
        pd.testing.assert_frame_equal(A.read_ratings(source, items), sim)
    both = A.read_ratings([tmp_path / "aras_ratings_SIM-01.csv", tmp_path / "aras_ratings_SIM-01.csv"])
    assert len(both) == 20                                                 # the same path twice is read once
    A.write_ratings(sim[sim.rater == "SIM-01"].head(5), tmp_path / "partial_export.csv")
    capsys.readouterr()
    again = A.read_ratings(tmp_path)                                       # a halfway export beside the full one
    assert len(again) == len(sim) and "dropped 5 exact duplicate row(s)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again.sort_values(["rater", "task", "trial"]).reset_index(drop=True),
                                  sim.sort_values(["rater", "task", "trial"]).reset_index(drop=True))


def _bad(tmp_path, frame, name="bad.csv"):
    return A.write_ratings(frame, tmp_path / name)


@pytest.mark.parametrize("case,pattern", [
    ("missing column", r"bad.csv: missing column\(s\) \['correct'\]"),
    ("score 7", r"bad.csv: 1 problem\(s\) in the ratings: line {score_line}: score '7' is not a whole number from 1 to 5"),
    ("unknown item", r"bad.csv: 1 problem\(s\).*line 3: unknown item 'ffffffffffff'"),
    ("bad correct", r"line 2: correct '0' disagrees with the choice"),
    ("wrong set", r"line 2: item '\w+' is in set 'uncond' \(synthetic\), not 'cond'"),
    ("bad time", r"line 4: timestamp 'yesterday' is not an ISO 8601"),
    ("short row", r"line 3: 3 fields, the header has 13"),
    ("empty", r"bad.csv: empty file"),
])
def test_bad_ratings_name_file_and_line(items, tmp_path, case, pattern):
    sim = A.simulate_ratings(items, n_raters=1, seed=0, n_pairs=2).head(6)
    score_line = int(np.flatnonzero(sim.task.eq("score"))[0]) + 2
    f = tmp_path / "bad.csv"
    if case == "missing column": sim.drop(columns="correct").to_csv(f, index=False)
    elif case == "score 7": _bad(tmp_path, sim.assign(score=sim.score.mask(sim.index == score_line - 2, 7)))
    elif case == "unknown item":                                       # row 1's synthetic image renamed everywhere in the row
        _bad(tmp_path, sim.assign(**{c: sim[c].mask((sim.index == 1) & sim[c].eq(sim.item[1]), "ffffffffffff")
                                     for c in ("item", "choice", "left_item")}))
    elif case == "bad correct":
        _bad(tmp_path, sim.assign(correct=sim.correct.mask(sim.index == 0, 1 - sim.correct[0])))
    elif case == "wrong set":
        uncond = items[items.set == "uncond"].item.iloc[0]
        fixed = sim.copy()
        fixed.loc[0, ["item", "set"]] = [uncond, "cond"]
        if fixed.choice[0] != fixed.other_item[0]: fixed.loc[0, "choice"] = uncond
        _bad(tmp_path, fixed)
    elif case == "bad time": _bad(tmp_path, sim.assign(timestamp=sim.timestamp.mask(sim.index == 2, "yesterday")))
    elif case == "short row":
        _bad(tmp_path, sim); lines = f.read_text().splitlines(); lines[2] = "a,b,c"; f.write_text("\n".join(lines) + "\n")
    elif case == "empty": f.write_text("")
    with pytest.raises(ArasDataError, match=pattern.format(score_line=score_line)):
        A.read_ratings(f, items)


def test_conflicting_answers_are_an_error(items, tmp_path):
    sim = A.simulate_ratings(items, n_raters=1, seed=0)
    A.write_ratings(sim.head(4), tmp_path / "a.csv")
    A.write_ratings(sim.head(4).assign(rt_ms=sim.rt_ms.head(4) + 1), tmp_path / "b.csv")
    with pytest.raises(ArasDataError, match=r"rater 'SIM-01' answered 2afc trial 1 twice.*a.csv, line 2 and .*b.csv, line 2"):
        A.read_ratings(tmp_path)


def test_cluster_bootstrap_holds_estimate_and_is_deterministic(items):
    sim = A.simulate_ratings(items, n_raters=6, seed=4, noise=1.0)
    s1, per_item = A.human_summary(sim, n_boot=300, seed=0)
    s2, _ = A.human_summary(sim, n_boot=300, seed=0)
    s3, _ = A.human_summary(sim, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(s1, s2)
    assert not np.allclose(s1.score_lo, s3.score_lo)
    assert ((s1.score_lo <= s1.mean_score) & (s1.mean_score <= s1.score_hi)).all()
    f = s1.dropna(subset=["fooled_rate"])
    assert len(f) == 3 and ((f.fooled_lo <= f.fooled_rate) & (f.fooled_rate <= f.fooled_hi)).all()
    t = s1.set_index("set")
    sc = sim[sim.task == "score"]
    assert t.loc["uncond", "mean_score"] == pytest.approx(sc[sc.set == "uncond"].score.mean())
    a = sim[(sim.task == "2afc") & (sim.set == "cond")]
    assert t.loc["cond", "fooled_rate"] == pytest.approx(1 - a.correct.mean())
    assert t.loc["all synthetic", "n_2afc"] == 6 * 8 and t.loc["real_test", "n_2afc"] == 0
    assert per_item.mean_score.tolist() == pytest.approx(sc.groupby(["item", "set"]).score.mean().tolist())
    # the interval is over raters: the same answers under one rater id give no interval
    one, _ = A.human_summary(sim.assign(rater="R"), n_boot=300, seed=0)
    assert one.score_lo.isna().all() and one.note.str.contains("one rater").all()
    lo, hi = A.rater_bootstrap([[1, 2], [3, 4], [5, 6]], [[2, 2], [4, 4], [6, 6]], n_boot=200, seed=0)
    assert lo.shape == (2,) and (lo <= hi).all()


def test_agreement_equals_scipy_on_per_item_means(items, per_image, tmp_path):
    sim = A.read_ratings(A.write_ratings(A.simulate_ratings(items, n_raters=4, seed=5, realism="entropy", noise=0.6),
                                         tmp_path / "sim.csv"), per_image)
    t = A.metric_human_agreement(per_image, sim, n_boot=300, seed=0).set_index(["metric", "scope"])
    means = sim[sim.task == "score"].groupby(["item", "set", "kind"]).score.mean().rename("y").reset_index()
    j = means.merge(per_image, on=["item", "set"], suffixes=("", "_pi"))
    for m in ("entropy", "psnr_nn"):
        for scope, d in (("all", j), ("synthetic", j[j.kind == "synthetic"])):
            d = d.dropna(subset=[m])
            r = t.loc[(m, scope)]
            assert r.n_items == len(d)
            rho, tau = stats.spearmanr(d[m], d.y), stats.kendalltau(d[m], d.y)
            assert (r.spearman_rho, r.spearman_p) == pytest.approx((rho.statistic, rho.pvalue), abs=1e-12)
            assert (r.kendall_tau, r.kendall_p) == pytest.approx((tau.statistic, tau.pvalue), abs=1e-12)
            assert r.spearman_lo <= r.spearman_rho <= r.spearman_hi and r.kendall_lo <= r.kendall_tau <= r.kendall_hi
    assert t.loc[("entropy", "all"), "spearman_rho"] > 0.5                  # the raters followed entropy, with noise
    again = A.metric_human_agreement(per_image, sim, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(again, t.reset_index()[again.columns])


def test_monotone_raters_give_exactly_one_and_too_few_items_give_a_note(items, per_image):
    follow = A.simulate_ratings(items, n_raters=8, seed=0, realism="psnr_nn", noise=0, rater_sd=0)
    r = A.metric_human_agreement(per_image, follow, n_boot=100, seed=0).set_index(["metric", "scope"]).loc[("psnr_nn", "all")]
    assert (r.spearman_rho, r.kendall_tau, r.spearman_lo, r.kendall_hi) == pytest.approx((1, 1, 1, 1))
    few = follow[follow.item.isin(items.item[:2])]
    t = A.metric_human_agreement(per_image, few, n_boot=10, seed=0)
    assert t.spearman_rho.isna().all() and t.note.str.contains("fewer than 3").all()


def test_ratings_of_other_images_are_rejected(items, per_image):
    sim = A.simulate_ratings(items, n_raters=1, seed=0)
    with pytest.raises(ArasDataError, match="not in the per-image table"):
        A.metric_human_agreement(per_image[per_image.set != "cond"], sim, n_boot=10)


def test_page_is_self_contained(items, tmp_path):
    page = A.write_rating_page(items, tmp_path / "page.html", seed=3)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text and " src=" not in text
    data = A.page_data(page)
    assert sorted(data["images"]) == sorted(items.item) and data["n_pairs"] == 8 and data["seed"] == 3
    sizes = {Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).size for u in data["images"].values()}
    assert sizes == {(8, 8)}                                               # real 24 px patches shown at the synthetic size
    assert all(u.startswith("data:image/png;base64,") for u in data["images"].values())
    assert A.write_rating_page(items, tmp_path / "again.html", seed=3).read_bytes() == page.read_bytes()
    with pytest.raises(ArasDataError, match="need real and synthetic"):
        A.write_rating_page(items[items.kind == "real"], tmp_path / "x.html", n_pairs=3)


# ---------------------------------------------------------------------------------------------- the page in a browser

def _browser_missing() -> str:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)"
    if importlib.util.find_spec("selenium") is None: return "needs the Python package selenium (a dev requirement)"
    return ""


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    downloads = tmp_path / "downloads"; downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1000,900", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)   # no selenium-manager
    drv.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    drv.downloads = downloads
    yield drv
    drv.quit()


def _wait(cond, timeout=15, what="the page"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v: return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(bool(_browser_missing()), reason=_browser_missing() or "browser present")
def test_rating_page_in_a_browser_writes_a_csv_the_analysis_reads(browser, items, per_image, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    page = A.write_rating_page(items, tmp_path / "metrics_rating_page.html", seed=7)
    browser.get(page.as_uri())
    body = browser.find_element(By.TAG_NAME, "body")
    done = lambda: int(body.get_attribute("data-done"))
    # per-rater randomisation: reproducible for one id, different between ids
    plan = lambda r: browser.execute_script(f"return makePlan('{r}').map(t => t.task + t.item + t.left_item)")
    assert plan("tester-1") == plan("tester-1") != plan("tester-2")
    browser.find_element(By.ID, "start").click()                         # no id yet: refused with a message
    assert "rater id" in browser.find_element(By.ID, "intro-msg").text and body.get_attribute("data-task") == "intro"
    browser.find_element(By.ID, "rater").send_keys("tester-1", Keys.ENTER)
    expected, n_trials = [], 8 + 12
    for k in range(n_trials):
        if k == 5:                                                       # a reload loses nothing
            browser.refresh()
            body = browser.find_element(By.TAG_NAME, "body")
            assert browser.find_element(By.ID, "rater").get_attribute("value") == "tester-1"
            browser.find_element(By.ID, "start").click()
            assert done() == 5
        task = body.get_attribute("data-task")
        if task == "2afc":
            side = "left" if k % 2 == 0 else "right"
            left, right = (browser.find_element(By.ID, s).get_attribute("data-item") for s in ("left", "right"))
            expected.append(dict(task="2afc", choice=left if side == "left" else right, left_item=left, pair={left, right}))
            if k % 3 == 0: browser.find_element(By.ID, side).click()
            else: body.send_keys(Keys.ARROW_LEFT if side == "left" else Keys.ARROW_RIGHT)
        else:
            assert task == "score"
            score = k % 5 + 1
            expected.append(dict(task="score", score=score, item=browser.find_element(By.ID, "single").get_attribute("data-item")))
            if k % 3 == 0: browser.find_element(By.CSS_SELECTOR, f'#score-buttons button[data-score="{score}"]').click()
            else: body.send_keys(str(score))
        _wait(lambda: done() == k + 1, what=f"answer {k + 1} to register")
    assert body.get_attribute("data-task") == "done"
    browser.find_element(By.ID, "export").click()
    csv_path = browser.downloads / "aras_ratings_tester-1.csv"
    _wait(lambda: csv_path.exists() and not list(browser.downloads.glob("*.crdownload")) and csv_path.stat().st_size > 0,
          what="the CSV download")

    r = A.read_ratings(csv_path, per_image)
    assert len(r) == n_trials and (r.rater == "tester-1").all()
    assert r.task.tolist() == ["2afc"] * 8 + ["score"] * 12
    assert r.groupby("task").trial.apply(list).to_dict() == {"2afc": list(range(1, 9)), "score": list(range(1, 13))}
    afc, sc = r[r.task == "2afc"], r[r.task == "score"]
    for (_, row), e in zip(afc.iterrows(), expected[:8]):
        assert row.choice == e["choice"] and row.left_item == e["left_item"] and {row["item"], row.other_item} == e["pair"]
        assert row.correct == int(e["choice"] == row.other_item) and row.kind == "synthetic"
    assert sc.score.tolist() == [e["score"] for e in expected[8:]] and sc.item.tolist() == [e["item"] for e in expected[8:]]
    assert sorted(sc.item) == sorted(items.item) and sorted(afc.item) == sorted(items[items.kind == "synthetic"].item)
    assert set(afc.other_item) <= set(items[items.kind == "real"].item)
    assert (r.rt_ms >= 0).all() and pd.to_datetime(r.timestamp).is_monotonic_increasing

    summary, per_item = A.human_summary(r, n_boot=100, seed=0)
    s = summary.set_index("set")
    assert s.loc["all synthetic", "fooled_rate"] == pytest.approx(1 - afc.correct.mean())
    assert s.loc["all real", "mean_score"] == pytest.approx(sc[sc.kind == "real"].score.mean())
    assert summary.score_lo.isna().all()                                   # one rater: no interval over raters
    agree = A.metric_human_agreement(per_image, r, n_boot=100, seed=0).set_index(["metric", "scope"])
    j = sc.merge(per_image, on=["item", "set"]).dropna(subset=["psnr_nn"])
    assert agree.loc[("psnr_nn", "all"), "spearman_rho"] == pytest.approx(stats.spearmanr(j.psnr_nn, j.score).statistic)
    assert agree.loc[("psnr_nn", "all"), "n_items"] == len(j)
