import json
import numpy as np
import rasterio

from aras.landcover import WORLDCOVER
from aras.toyland import PIXEL_DEG, ensure_toyland, generate_toyland, tile_ids, tile_name


def _read(raw, tile, kind):
    with rasterio.open(raw / ("worldcover_2021" if kind == "Map" else "S2RGB_2021") / tile_name(tile, kind)) as src:
        return src.read(), src.profile, src.bounds


def test_same_seed_same_tiles_other_seed_other_tiles(tmp_path):
    a = generate_toyland(tmp_path / "a", seed=1, n_tiles=1, tile_px=256, progress=False)
    b = generate_toyland(tmp_path / "b", seed=1, n_tiles=1, tile_px=256, progress=False)
    c = generate_toyland(tmp_path / "c", seed=2, n_tiles=1, tile_px=256, progress=False)
    t = tile_ids(1)[0]
    for kind in ("Map", "S2RGBNIR"):
        assert np.array_equal(_read(a, t, kind)[0], _read(b, t, kind)[0])
        assert not np.array_equal(_read(a, t, kind)[0], _read(c, t, kind)[0])


def test_files_look_like_esa_worldcover(toy_raw):
    names = sorted(p.name for p in toy_raw.rglob("*.tif"))
    assert len(names) == 8 and "ESA_WorldCover_10m_2021_v200_N39E027_S2RGBNIR.tif" in names
    lc, lp, lb = _read(toy_raw, "N39E027", "Map")
    s2, sp, sb = _read(toy_raw, "N39E027", "S2RGBNIR")
    assert lp["crs"].to_epsg() == sp["crs"].to_epsg() == 4326
    assert lc.dtype == np.uint8 and lc.shape[0] == 1 and s2.dtype == np.uint16 and s2.shape[0] == 4
    assert (lb.left, lb.top) == (27.0, 42.0) and abs(lp["transform"].a - PIXEL_DEG) < 1e-15
    # the S2 grid is offset from the land-cover grid: alignment must use the bounds
    assert np.isclose(sb.left - lb.left, 11 * PIXEL_DEG) and np.isclose(lb.top - sb.top, 7 * PIXEL_DEG)


def test_every_worldcover_code_and_both_kinds_of_gap_occur(toy_raw):
    codes = set()
    for t in tile_ids(4): codes |= set(np.unique(_read(toy_raw, t, "Map")[0]).tolist())
    assert codes == set(WORLDCOVER)                         # 11 classes, rare ones included, and 0
    s2_gap = (_read(toy_raw, "N39E036", "S2RGBNIR")[0] == 0).all(axis=0).mean()
    assert 0.05 < s2_gap < 0.3


def test_reflectance_depends_on_class(toy_raw):
    lc = _read(toy_raw, "N39E036", "Map")[0][0, 7:, 11:]    # the same ground in both grids
    s2 = _read(toy_raw, "N39E036", "S2RGBNIR")[0][:, :-7, :-11].astype(float)
    valid = s2[3] > 0
    nir = lambda codes: np.median(s2[3][np.isin(lc, codes) & valid])
    red = lambda codes: np.median(s2[0][np.isin(lc, codes) & valid])
    assert nir(80) < 500 and nir([10, 30, 40]) > 2000         # water dark, vegetation bright in NIR
    assert nir(10) / red(10) > 5 > nir(80) / red(80)          # a vegetation index separates them


def test_ensure_toyland_generates_once(tmp_path):
    raw = ensure_toyland(seed=0, n_tiles=1, tile_px=256, root=tmp_path, progress=False)
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["settings"]["tile_px"] == 256
    stamp = (raw / "manifest.json").stat().st_mtime_ns
    assert ensure_toyland(seed=0, n_tiles=1, tile_px=256, root=tmp_path, progress=False) == raw
    assert (raw / "manifest.json").stat().st_mtime_ns == stamp
    assert ensure_toyland(seed=1, n_tiles=1, tile_px=256, root=tmp_path, progress=False) != raw
