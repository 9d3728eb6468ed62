"`aras score` on folders a user would bring: 16-bit GeoTIFFs of another sensor, 8-bit PNGs, copies, bad stretches."
import numpy as np
import pandas as pd
import pytest
import rasterio
from PIL import Image

from aras.cli import main
from aras.core import ArasDataError, get_profile
from aras.distributional import set_metrics
from aras.metrics import extract_features, get_extractor
from aras.score import prepare_set, score

N = 12


def _fields(seed: int, n: int = N, px: int = 64) -> list[np.ndarray]:
    "Smooth random 'landscapes' (uint8 RGB): blocks of colour blurred by upsampling."
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((px, px), Image.BILINEAR)))
    return out


def _pngs(folder, images):
    folder.mkdir(parents=True)
    for i, a in enumerate(images): Image.fromarray(a).save(folder / f"p{i:03d}.png")
    return folder


def _geotiffs(folder, images, scale: float = 40.0, dtype="uint16"):
    "4-band GeoTIFFs (R, G, B, NIR) of reflectance-like values: another sensor's stored type and range."
    folder.mkdir(parents=True)
    for i, a in enumerate(images):
        bands = np.concatenate([a.transpose(2, 0, 1), a[None, ..., 0]]).astype(np.float64) * scale
        with rasterio.open(folder / f"t{i:03d}.tif", "w", driver="GTiff", width=a.shape[1], height=a.shape[0],
                           count=4, dtype=dtype) as dst:
            dst.write(bands.astype(dtype))
    return folder


def test_an_8bit_png_set_is_used_as_stored_so_chapter_07s_cached_features_apply(tmp_path):
    real = _pngs(tmp_path / "real", _fields(0))
    paths, rad = prepare_set(real, "real", px=None, work=tmp_path / "w")
    assert rad.source == "8-bit, as stored"
    assert paths == sorted(str(p) for p in real.glob("*.png"))        # the user's own files, not copies


def test_16bit_geotiffs_are_stretched_from_their_own_range_to_the_same_images(tmp_path):
    imgs = _fields(1)
    tifs = _geotiffs(tmp_path / "tif", imgs, scale=40.0)                 # 0..10200 stored
    paths, rad = prepare_set(tifs, "tif", px=None, work=tmp_path / "w")
    assert rad.dtype == "uint16" and rad.source.startswith("read from the data")
    back = np.stack([np.asarray(Image.open(p)) for p in paths]).astype(int)
    want = np.stack(imgs).astype(int)
    assert np.corrcoef(back.ravel(), want.ravel())[0, 1] > 0.999         # one linear stretch of the same pixels
    assert back.min() == 0 and back.max() == 255                        # the percentile range fills the 8 bits


def test_a_fixed_sentinel2_stretch_on_8bit_data_is_refused_naming_a_file(tmp_path):
    tifs = _geotiffs(tmp_path / "dn", _fields(2), scale=1.0, dtype="uint8")   # 8-bit digital numbers (Landsat-like)
    with pytest.raises(ArasDataError, match=r"\.tif: the stretch 0-3000 \(given\) leaves \d+ of 12 images nearly black"):
        prepare_set(tifs, "dn", px=None, work=tmp_path / "w", value_range=(0, 3000))
    assert prepare_set(tifs, "dn", px=None, work=tmp_path / "w2")[1].source == "8-bit, as stored"


def test_score_gives_set_metrics_of_the_features_of_the_files_it_was_given(tmp_path):
    real, fake = _pngs(tmp_path / "real", _fields(3)), _pngs(tmp_path / "fake", _fields(4))
    S = get_profile("smoke").metrics
    rep = score(real, fake, spaces=("lite0",), settings=S, progress=False, work=tmp_path / "w")
    lite = get_extractor("lite0")
    f = [extract_features(lite, rep.sets[k], progress=False) for k in ("real", "fake")]
    direct = pd.DataFrame(set_metrics(*f, S)).set_index("metric")
    got = rep.metrics.set_index("metric")
    for m in ("FID", "KID (poly)", "CMMD", "precision"):
        assert got.loc[m, "value"] == pytest.approx(direct.loc[m, "value"], rel=1e-12)
    assert np.asarray(rep.sets["real"]).size == N and "lite0+rot8" not in set(rep.metrics.space)


def test_a_fake_folder_of_copies_is_flagged_by_the_memorisation_check(tmp_path):
    real = _pngs(tmp_path / "real", _fields(5, n=16))
    rep = score(real, real, spaces=("lite0",), settings=get_profile("smoke").metrics, progress=False, work=tmp_path / "w")
    assert rep.memorisation["share_below"] == 1.0
    assert rep.nearest.distance.max() == pytest.approx(0, abs=1e-5)


def test_the_command_writes_the_report_and_bad_input_ends_in_one_line(tmp_path, capsys):
    real = _geotiffs(tmp_path / "real", _fields(6), scale=40.0)
    fake = _pngs(tmp_path / "fake", _fields(7))
    out = tmp_path / "report"
    assert main(["score", str(real), str(fake), "--out", str(out), "--spaces", "lite0", "--profile", "smoke"]) == 0
    text = (out / "score.md").read_text()
    assert "In lite0, FID" in text and "real-vs-real floor" in text and "Rotating or flipping" in text
    assert {p.name for p in out.iterdir()} >= {"score.md", "score_metrics.csv", "score_orientation.csv",
                                                "score_nearest.csv", "score_pairs.png"}
    assert str(tmp_path) not in text                                     # no machine paths in the report
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["score", str(tmp_path / "empty"), str(fake)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty: no images" in err[0]


def test_the_blank_check_decodes_a_sample_one_image_at_a_time(tmp_path, monkeypatch):
    "A large set is judged on a seeded sample of 500 images, each decoded alone: never the whole set in memory."
    import aras.score as S
    good = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(good).save(tmp_path / "g.png")
    decoded = []
    real_load = S.load_image
    monkeypatch.setattr(S, "load_image", lambda p: decoded.append(p) or real_load(p))
    paths = [tmp_path / "g.png"] * 2000
    S.check_stretch(paths, paths, S.read_radiometry([tmp_path / "g.png"]))
    assert len(decoded) == 500                                        # a sample, not the 2000
    S.check_stretch(paths[:40], paths[:40], S.read_radiometry([tmp_path / "g.png"]))
    assert len(decoded) == 540                                        # a small set: every image
