"""ADA's 'bgc' pipeline (`aras.ada`, chapter 04c_ada) against NVlabs' StyleGAN3 `training/augment.py`.

The reference's formulas are written out again here, in numpy, from `AugmentPipe.forward` and its matrix
helpers (`scale2d_inv`, `rotate2d_inv`, `translate2d_inv`, `translate3d`, `scale3d`, `rotate3d`), and each
transform is checked on fixed inputs with one parameter set at a time; the probabilities by simulation.
"""
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aras.ada import BGC, bgc_apply, bgc_augment, bgc_params
from aras.core import ArasError
from aras.gan_nets import AdaAugment

LUMA = np.array([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)


def _image(n=3, size=16, seed=0):
    "Fixed random RGB images in [-1, 1] whose channels and rows differ (so flips and turns show)."
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _params(n, **values):
    "Identity parameters for `n` images with the named ones set (the same value for every image)."
    prm = bgc_params(n, 0.0)
    for name, value in values.items():
        prm[name] = torch.tensor(value, dtype=torch.float32).expand_as(prm[name]).clone()
    return prm


# --- the reference's matrices, written out ------------------------------------------------------------

def _ref_translate3d(b):
    m = np.eye(4)
    m[:3, 3] = b
    return m


def _ref_scale3d(c):
    return np.diag([c, c, c, 1.0])


def _ref_rotate3d(theta):
    "augment.py `rotate3d(v, theta)` about the luma axis v, element by element."
    vx, vy, vz = LUMA[:3]
    s, c = math.sin(theta), math.cos(theta)
    cc = 1 - c
    return np.array([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                     [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                     [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                     [0, 0, 0, 1]])


def _ref_colour(b=0.0, c=1.0, flip=0, theta=0.0, s=1.0):
    "augment.py's C: each transform left-multiplied: brightness, contrast, luma flip, hue, saturation."
    vv = np.outer(LUMA, LUMA)
    mat = _ref_translate3d(b)
    mat = _ref_scale3d(c) @ mat
    mat = (np.eye(4) - 2 * vv * flip) @ mat
    mat = _ref_rotate3d(theta) @ mat
    return (vv + (np.eye(4) - vv) * s) @ mat


def _apply_colour(x, mat):
    "C[:3, :3] @ rgb + C[:3, 3] on every pixel (augment.py, 'Execute color transformations')."
    rgb = x.double().numpy().reshape(x.shape[0], 3, -1)
    out = np.einsum("ij,bjk->bik", mat[:3, :3], rgb) + mat[:3, 3:]
    return torch.from_numpy(out.reshape(x.shape))


def _ref_scale2d(sx, sy):
    return np.diag([sx, sy, 1.0])


def _ref_rotate2d(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _ref_translate2d(tx, ty):
    return np.array([[1.0, 0, tx], [0, 1, ty], [0, 0, 1]])


# --- colour -------------------------------------------------------------------------------------------

def test_brightness_adds_b_to_every_channel():
    x = _image()
    prm = _params(3, brightness=0.0)
    prm["brightness"] = torch.tensor([0.3, -0.25, 0.05])
    want = _apply_colour(x, _ref_colour(b=0.3))[0]
    got = bgc_apply(x, prm)
    assert torch.allclose(got, x + prm["brightness"].view(-1, 1, 1, 1), atol=1e-6)
    assert torch.allclose(got[0].double(), want, atol=1e-6)


def test_contrast_multiplies_around_zero_not_around_the_mean():
    x = _image() * 0.5 + 0.3                                          # a mean far from 0
    got = bgc_apply(x, _params(3, contrast=math.log2(1.7)))
    assert torch.allclose(got, 1.7 * x, atol=1e-6)
    mu = x.mean((1, 2, 3), keepdim=True)
    assert not torch.allclose(got, mu + 1.7 * (x - mu), atol=1e-2)   # what the simplified pipeline does


def test_luma_flip_negates_the_grey_part_and_keeps_the_colour_part():
    grey = torch.tensor([0.4, -0.2, 0.7]).view(3, 1, 1, 1) * torch.ones(3, 3, 8, 8)
    chroma = _image(3, 8)
    chroma = chroma - chroma.mean(1, keepdim=True)                    # orthogonal to (1, 1, 1)
    got = bgc_apply(grey + chroma, _params(3, lumaflip=1.0))
    assert torch.allclose(got, -grey + chroma, atol=1e-6)
    want = _apply_colour(grey + chroma, _ref_colour(flip=1))
    assert torch.allclose(got.double(), want, atol=1e-6)


@pytest.mark.parametrize("theta", [0.7, -2.5, 2 * math.pi / 3])
def test_hue_rotation_is_the_reference_rotation_about_the_luma_axis(theta):
    x = _image()
    got = bgc_apply(x, _params(3, hue=theta))
    assert torch.allclose(got.double(), _apply_colour(x, _ref_colour(theta=theta)), atol=1e-5)
    assert torch.allclose(got.mean(1), x.mean(1), atol=1e-6)          # luma (the channel mean) kept
    assert torch.allclose(got.norm(dim=1), x.norm(dim=1), atol=1e-5)  # a rotation keeps lengths
    assert not torch.allclose(got, x, atol=1e-2)


def test_hue_rotation_by_zero_or_a_full_turn_is_the_identity_and_a_third_turn_permutes_rgb():
    x = _image()
    assert torch.equal(bgc_apply(x, _params(3, hue=0.0)), x)
    assert torch.allclose(bgc_apply(x, _params(3, hue=2 * math.pi)), x, atol=1e-5)
    assert torch.allclose(bgc_apply(x, _params(3, hue=2 * math.pi / 3)), x[:, [2, 0, 1]], atol=1e-5)


def test_saturation_zero_gives_the_grey_image_and_s_scales_the_colour_part():
    x = _image()
    grey = x.mean(1, keepdim=True).expand_as(x)
    assert torch.allclose(bgc_apply(x, _params(3, saturation=-math.inf)), grey, atol=1e-6)
    got = bgc_apply(x, _params(3, saturation=math.log2(2.5)))
    assert torch.allclose(got, grey + 2.5 * (x - grey), atol=1e-5)


def test_colour_transforms_compose_in_the_reference_order():
    x = _image()
    prm = _params(3, brightness=0.2, contrast=math.log2(1.4), lumaflip=1.0, hue=1.1,
                  saturation=math.log2(0.6))
    want = _apply_colour(x, _ref_colour(b=0.2, c=1.4, flip=1, theta=1.1, s=0.6))
    assert torch.allclose(bgc_apply(x, prm).double(), want, atol=1e-5)


# --- pixel blitting -----------------------------------------------------------------------------------

def _ref_gather(x, g_inv, pad=None):
    "out[y, x] = in[G_inv @ (x, y, 1)] in centred pixel coordinates, read at whole pixels (np.pad mirrors)."
    S = x.shape[-1]
    c = (S - 1) / 2
    ys, xs = np.meshgrid(np.arange(S) - c, np.arange(S) - c, indexing="ij")
    src = np.einsum("ij,jhw->ihw", g_inv, np.stack([xs, ys, np.ones_like(xs)]))
    ix = np.rint(src[0] + c).astype(int)
    iy = np.rint(src[1] + c).astype(int)
    img = x.numpy()
    m = 0 if pad is None else pad
    img = np.pad(img, ((0, 0), (m, m), (m, m)), mode="reflect")
    return torch.from_numpy(img[:, iy + m, ix + m].copy())


@pytest.mark.parametrize("flip", [0, 1])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_xflip_and_quarter_turns_are_the_reference_matrices_exactly(flip, k):
    x = _image(1)
    got = bgc_apply(x, _params(1, xflip=float(flip), rotate90=float(k)))
    # scale2d_inv(1 - 2i, 1) @ rotate2d_inv(-pi/2 k)
    g_inv = _ref_scale2d(1 - 2 * flip, 1) @ _ref_rotate2d(math.pi / 2 * k)
    assert torch.equal(got[0], _ref_gather(x[0], g_inv))


@pytest.mark.parametrize("t", [(0.125, 0.0), (-0.07, 0.11), (0.0, -0.125)])
def test_integer_translation_rounds_to_pixels_and_mirrors_exactly(t):
    x = _image(1)
    got = bgc_apply(x, _params(1, xint=list(t)))
    # translate2d_inv(round(tx W), round(ty H))
    g_inv = _ref_translate2d(-round(t[0] * 16), -round(t[1] * 16))
    assert torch.equal(got[0], _ref_gather(x[0], g_inv, pad=3))
    assert not torch.equal(got, x)


# --- general geometric transformations -----------------------------------------------------------------

def _smooth(xs, ys, ch):
    "A smooth, non-symmetric function of centred pixel coordinates: bilinear sampling of it is nearly exact."
    return np.sin(0.21 * xs + 0.13 * ys + ch) + 0.5 * np.cos(0.17 * ys - 0.07 * xs)


@pytest.mark.parametrize("values", [
    {"rotate_pre": 0.5}, {"rotate_post": -2.0}, {"xfrac": [0.06, -0.04]}, {"scale": 0.3},
    {"aniso": -0.25, "rotate_pre": 0.4, "rotate_post": 1.0},
    {"scale": -0.2, "rotate_pre": -0.6, "aniso": 0.2, "rotate_post": 0.3, "xfrac": [-0.03, 0.05]}])
def test_geometric_warp_matches_the_analytic_warp_away_from_the_borders(values):
    S = 32
    c = (S - 1) / 2
    ys, xs = np.meshgrid(np.arange(S) - c, np.arange(S) - c, indexing="ij")
    x = torch.from_numpy(np.stack([_smooth(xs, ys, ch) for ch in range(3)])[None]).float()
    v = {"scale": 0.0, "rotate_pre": 0.0, "aniso": 0.0, "rotate_post": 0.0, "xfrac": [0.0, 0.0], **values}
    s, a = 2.0 ** v["scale"], 2.0 ** v["aniso"]
    g_inv = (_ref_scale2d(1 / s, 1 / s) @ _ref_rotate2d(v["rotate_pre"]) @ _ref_scale2d(1 / a, a)
             @ _ref_rotate2d(v["rotate_post"]) @ _ref_translate2d(-v["xfrac"][0] * S, -v["xfrac"][1] * S))
    src = np.einsum("ij,jhw->ihw", g_inv, np.stack([xs, ys, np.ones_like(xs)]))
    want = np.stack([_smooth(src[0], src[1], ch) for ch in range(3)])
    inside = (np.abs(src[0]) < c - 1) & (np.abs(src[1]) < c - 1)       # no padding involved
    assert inside.sum() > 200
    got = bgc_apply(x, _params(1, **values))[0].numpy()
    err = np.abs(got - want)[:, inside]
    assert err.max() < 0.02
    assert np.abs(x[0].numpy() - want)[:, inside].max() > 0.1           # the warp moved something


# --- probabilities and distributions ---------------------------------------------------------------------

N_SIM = 200_000   # a share's standard error is at most sqrt(0.25 / N) = 0.0011: 0.005 is 4.5 of them


def test_each_transform_fires_with_the_reference_probability_at_p_one_half():
    torch.manual_seed(0)
    prm = bgc_params(N_SIM, 0.5)
    share = {k: float((v != 0).reshape(N_SIM, -1).any(1).double().mean()) for k, v in prm.items()}
    p_rot = 1 - math.sqrt(1 - 0.5)                                     # P(pre OR post) = p
    want = {"xflip": 0.25, "rotate90": 0.375, "xint": 0.5, "scale": 0.5, "rotate_pre": p_rot, "aniso": 0.5,
            "rotate_post": p_rot, "xfrac": 0.5, "brightness": 0.5, "contrast": 0.5, "lumaflip": 0.25,
            "hue": 0.5, "saturation": 0.5}
    assert share.keys() == want.keys()
    for name, p in want.items():
        assert abs(share[name] - p) < 0.005, (name, share[name], p)
    any_rot = float(((prm["rotate_pre"] != 0) | (prm["rotate_post"] != 0)).double().mean())
    assert abs(any_rot - 0.5) < 0.005
    turns = torch.bincount(prm["rotate90"].long(), minlength=4).double() / N_SIM
    assert torch.allclose(turns, torch.tensor([0.625, 0.125, 0.125, 0.125], dtype=torch.float64), atol=0.005)


def test_kept_parameters_have_the_reference_distributions():
    torch.manual_seed(1)
    prm = bgc_params(N_SIM, 1.0)
    std = {"scale": 0.2, "aniso": 0.2, "xfrac": 0.125, "brightness": 0.2, "contrast": 0.5, "saturation": 1.0,
           "xint": 0.125 / math.sqrt(3), "hue": math.pi / math.sqrt(3), "rotate_pre": math.pi / math.sqrt(3)}
    for name, sd in std.items():                                      # relative standard error ~ 0.3 %
        kept = prm[name][prm[name] != 0]
        assert abs(float(kept.std()) / sd - 1) < 0.02, (name, float(kept.std()), sd)
    assert float(prm["xint"].abs().max()) <= 0.125 and float(prm["hue"].abs().max()) <= math.pi
    assert set(prm["xflip"].unique().tolist()) == {0.0, 1.0}


def test_the_pipeline_flips_about_p_over_two_of_the_images():
    "4000 images: the share's standard error is 0.007, so 0.03 is 4.4 of them; p (0.5) is far outside."
    torch.manual_seed(2)
    x = _image(1, 4).expand(4000, -1, -1, -1)
    got = bgc_augment(x, 0.5, {"xflip": 1})
    flipped = (got == x.flip(3)).flatten(1).all(1)
    assert ((got == x).flatten(1).all(1) | flipped).all()
    assert abs(float(flipped.double().mean()) - 0.25) < 0.03


def test_multipliers_switch_transforms_off():
    torch.manual_seed(3)
    prm = bgc_params(1000, 1.0, mult={"hue": 1})
    assert all(float(v.abs().sum()) == 0 for k, v in prm.items() if k != "hue")
    assert float((prm["hue"] != 0).double().mean()) == 1.0
    names = ["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
             "lumaflip", "hue", "saturation"]
    assert BGC == dict.fromkeys(names, 1)                              # augment.py's 'bgc' multipliers


# --- the module as a whole ------------------------------------------------------------------------------

def test_p_zero_is_the_identity():
    x = _image()
    assert torch.equal(bgc_augment(x, 0.0), x)
    aug = AdaAugment(pipeline="bgc")
    assert torch.equal(aug(x), x)
    aug.p.fill_(1.0)
    assert not torch.allclose(aug(x), x)


def test_gradients_flow_to_the_input():
    x = _image(2, 6).double().requires_grad_(True)
    prm = _params(2, xflip=1.0, rotate90=1.0, xint=[0.2, 0.0], scale=0.3, rotate_pre=0.4, aniso=0.2,
                  rotate_post=-0.3, xfrac=[0.05, 0.02], brightness=0.1, contrast=0.5, lumaflip=1.0, hue=0.8,
                  saturation=0.4)
    assert torch.autograd.gradcheck(lambda t: bgc_apply(t, prm), (x,))
    torch.manual_seed(4)
    y = bgc_augment(x, 1.0)
    grad, = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0).all()


class _HostTraffic(TorchDispatchMode):
    "Counts reads of a tensor's value to the host (a sync on a GPU) and tensors made from host data (copies)."
    def __init__(self):
        super().__init__()
        self.reads = 0
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        self.copies += func is torch.ops.aten.lift_fresh.default
        return func(*args, **(kwargs or {}))


def test_runs_on_the_inputs_device_and_reads_or_copies_nothing_from_the_host():
    "`meta` stands in for a GPU: a CPU tensor mixed into the forward raises there."
    x = torch.randn(4, 3, 16, 16, device="meta")
    y = bgc_augment(x, 0.7)
    assert y.device.type == "meta" and y.shape == x.shape
    with _HostTraffic() as traffic:
        bgc_augment(_image(), 0.7)
    assert (traffic.reads, traffic.copies) == (0, 0)


def test_ada_augment_selects_the_pipeline_and_refuses_unknown_ones():
    x = _image(8)
    aug = AdaAugment(pipeline="bgc")
    aug.p.fill_(0.6)
    torch.manual_seed(5)
    got = aug(x)
    torch.manual_seed(5)
    assert torch.equal(got, bgc_augment(x, 0.6))
    assert AdaAugment().pipeline == "aras"
    with pytest.raises(ArasError, match="pipeline"):
        AdaAugment(pipeline="bcg")


def test_non_square_or_non_rgb_batches_are_refused():
    with pytest.raises(ArasError, match="square RGB"):
        bgc_augment(torch.zeros(2, 1, 8, 8), 0.5)
    with pytest.raises(ArasError, match="square RGB"):
        bgc_augment(torch.zeros(2, 3, 8, 16), 0.5)
