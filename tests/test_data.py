import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import rasterio
from PIL import Image
from rasterio.transform import from_origin

import aras.data as D
import aras.dataset as DS
import aras.prepare as PR
from aras.core import ArasDataError
from aras.landcover import CLASSES, PALETTE, labels_to_rgb
from aras.toyland import PIXEL_DEG, tile_name
from conftest import small_settings


def _write(path, array, transform, crs="EPSG:4326"):
    array = array[None] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                       dtype=array.dtype, crs=crs, transform=transform) as dst:
        dst.write(array)


def _index_pair(folder, dx, dy, n=300, tile="N39E027"):
    "A tile pair whose S2 bands hold each pixel's column and row on the land-cover grid, S2 shifted by (dx, dy) px."
    lon, lat = 27.0, 42.0
    _write(folder / tile_name(tile, "Map"), np.full((n, n), 10, np.uint8), from_origin(lon, lat, PIXEL_DEG, PIXEL_DEG))
    rows, cols = np.mgrid[:n, :n].astype(np.float64)
    s2 = np.stack([cols + dx, rows + dy, np.ones_like(cols), np.ones_like(cols)]).astype(np.uint16) + 1
    _write(folder / tile_name(tile, "S2RGBNIR"), s2, from_origin(lon + dx * PIXEL_DEG, lat - dy * PIXEL_DEG, PIXEL_DEG, PIXEL_DEG))
    return D.discover_tiles(folder)[0]


# --- discovery and alignment -------------------------------------------------------------------------

def test_discover_tiles_pairs_by_tile_id(toy_raw):
    pairs = D.discover_tiles(toy_raw)
    assert [p.tile for p in pairs] == ["N39E027", "N39E030", "N39E033", "N39E036"]
    assert all(p.map_path.name.endswith("_Map.tif") and p.s2_path.name.endswith("_S2RGBNIR.tif") for p in pairs)


def test_tiles_with_upper_case_suffixes_count_and_misnamed_ones_are_listed(tmp_path, toy_raw, capsys):
    for kind in ("Map", "S2RGBNIR"):
        src = next(toy_raw.rglob(tile_name("N39E027", kind)))
        shutil.copy(src, tmp_path / src.name.replace(".tif", ".TIF"))           # renamed by another system
        shutil.copy(src, tmp_path / src.name.replace(".tif", " (1).tif"))       # a browser's second download
    assert [p.tile for p in D.discover_tiles(tmp_path)] == ["N39E027"]
    err = capsys.readouterr().err
    assert "2 GeoTIFF(s) not named as ESA's tiles, left out" in err and "_Map (1).tif" in err and "_S2RGBNIR (1).tif" in err


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_a_truncated_map_is_named_as_the_broken_file(tmp_path, toy_raw):
    for kind in ("Map", "S2RGBNIR"): shutil.copy(next(toy_raw.rglob(tile_name("N39E027", kind))), tmp_path)
    m = tmp_path / tile_name("N39E027", "Map"); whole = m.read_bytes()
    for n in range(200, 8000, 100):                      # cut the header after its directory, before its geokeys
        m.write_bytes(whole[:n])
        try:
            with rasterio.open(m) as ds:
                if ds.crs is None: break
        except rasterio.errors.RasterioIOError: pass
    else: raise AssertionError("no cut of the first 8 kB keeps the TIFF directory and loses the geokeys")
    with pytest.raises(ArasDataError, match=r"_Map.tif: no coordinate reference system .*\(a truncated download"):
        D.AlignedPair(D.discover_tiles(tmp_path)[0])        # was: the intact S2RGBNIR file's "CRS differs"


def test_discover_tiles_reports_missing_partner_empty_and_missing_folders(tmp_path, toy_raw):
    shutil.copy(toy_raw / "worldcover_2021" / tile_name("N39E027", "Map"), tmp_path)
    with pytest.raises(ArasDataError, match="N39E027 has only ESA_WorldCover_10m_2021_v200_N39E027_Map.tif"):
        D.discover_tiles(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArasDataError, match="empty: no ESA WorldCover 2021 tiles"):
        D.discover_tiles(tmp_path / "empty")
    with pytest.raises(ArasDataError, match="nowhere: raw tile folder does not exist"):
        D.discover_tiles(tmp_path / "nowhere")


def test_alignment_by_bounds_is_exact_for_offset_grids(tmp_path):
    pair = _index_pair(tmp_path, dx=3, dy=2)
    with D.AlignedPair(pair) as ap:
        assert (ap.window.col_off, ap.window.row_off) == (3, 2)        # land-cover pixels inside both
        codes, s2 = ap.read_strip(1, 64)
        col0, row0 = ap.window.col_off, ap.window.row_off + 64
    cols, rows = np.meshgrid(np.arange(codes.shape[1]) + col0, np.arange(64) + row0)
    assert np.array_equal(s2[0] - 1, cols) and np.array_equal(s2[1] - 1, rows)   # each pixel is the same ground


def test_alignment_resamples_a_half_pixel_offset(tmp_path):
    pair = _index_pair(tmp_path, dx=2.5, dy=0)
    with D.AlignedPair(pair) as ap:
        codes, s2 = ap.read_strip(0, 64)
        col0 = ap.window.col_off
    expect = np.arange(codes.shape[1]) + col0 + 1
    assert np.abs(s2[0, 10, 1:-1].astype(float) - expect[1:-1]).max() <= 1.0


def test_aligned_patches_match_land_cover_better_than_pixel_indices(toy_raw):
    pair = D.discover_tiles(toy_raw)[3]                                 # lakes: many water edges
    with D.AlignedPair(pair) as ap:
        codes, s2 = ap.read_strip(0, 128)
        naive = ap.s2.read(4, window=rasterio.windows.Window(ap.window.col_off, ap.window.row_off, codes.shape[1], 128))
    assert D.nir_water_agreement(codes, s2[3]) > 0.99 > D.nir_water_agreement(codes, naive) + 0.01


def test_tile_in_another_crs_is_refused(tmp_path, toy_raw):
    for kind, sub in (("Map", "worldcover_2021"), ("S2RGBNIR", "S2RGB_2021")):
        shutil.copy(toy_raw / sub / tile_name("N39E030", kind), tmp_path)
    s2_path = tmp_path / tile_name("N39E030", "S2RGBNIR")
    with rasterio.open(s2_path, "r+") as ds: ds.crs = "EPSG:32635"
    with pytest.raises(ArasDataError, match="CRS EPSG:32635 differs from EPSG:4326"):
        D.AlignedPair(D.discover_tiles(tmp_path)[0])


def test_truncated_or_unreadable_tif_names_the_file(tmp_path, toy_raw):
    for kind, sub in (("Map", "worldcover_2021"), ("S2RGBNIR", "S2RGB_2021")):
        shutil.copy(toy_raw / sub / tile_name("N39E030", kind), tmp_path)
    s2_path = tmp_path / tile_name("N39E030", "S2RGBNIR")
    data = s2_path.read_bytes()
    s2_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArasDataError, match="N39E030_S2RGBNIR.tif: "):     # the raster, not only the tile
        with D.AlignedPair(D.discover_tiles(tmp_path)[0]) as ap:
            for i in range(ap.grid(128)[0]): ap.read_strip(i, 128)
    s2_path.write_bytes(b"not a tiff")
    with pytest.raises(ArasDataError, match="S2RGBNIR.tif: not a readable GeoTIFF"):
        D.AlignedPair(D.discover_tiles(tmp_path)[0])


def _pair(folder, codes, s2, s2_pixel=PIXEL_DEG, crs="EPSG:4326", lon=27.0, lat=42.0, tile="N39E027"):
    "A tile pair from arrays: map codes (H, W) and S2 bands (4, h, w) of pixel `s2_pixel`, both from (lon, lat)."
    _write(folder / tile_name(tile, "Map"), codes, from_origin(lon, lat, PIXEL_DEG, PIXEL_DEG), crs)
    _write(folder / tile_name(tile, "S2RGBNIR"), s2, from_origin(lon, lat, s2_pixel, s2_pixel), crs)
    return D.discover_tiles(folder)


def test_a_projected_crs_or_float_pixels_are_refused(tmp_path):
    codes, s2 = np.full((70, 70), 10, np.uint8), np.full((4, 70, 70), 500, np.uint16)
    tiles = _pair(tmp_path / "utm", codes, s2, 10.0, "EPSG:32635", 500_000.0, 4_400_000.0)   # bounds in metres
    with pytest.raises(ArasDataError, match=r"_Map.tif: CRS EPSG:32635 is not geographic; ARAS400k tiles are EPSG:4326"):
        D.AlignedPair(tiles[0])
    tiles = _pair(tmp_path / "float", codes, s2.astype(np.float32) / 1e4)
    with pytest.raises(ArasDataError, match=r"_S2RGBNIR.tif: float32 pixels; .* integer reflectance x 10000"):
        D.AlignedPair(tiles[0])


def test_the_alignment_check_takes_every_valid_input(tmp_path):
    "One patch row, a 20 m S2 raster and an all-no-data first row: the chapter's check reads what preparation reads."
    rng = np.random.default_rng(0)
    water = np.where(rng.random((70, 140)) < 0.3, 80, 10).astype(np.uint8)
    nir = np.where(water == 80, 300, 2500).astype(np.uint16)
    one_row = _pair(tmp_path / "one", water, np.stack([nir] * 4))                       # 70 px: one 64 px patch row
    t = D.alignment_check(one_row, 64).iloc[0]
    assert t["aligned by bounds"] == 1.0 and t["by pixel index"] == 1.0 and t.note == "patch row 0"
    coarse = _pair(tmp_path / "s2-20m", water, np.stack([nir[::2, ::2]] * 4), 2 * PIXEL_DEG)
    t = D.alignment_check(coarse, 64).iloc[0]
    assert t["aligned by bounds"] > 0.5 and np.isnan(t["by pixel index"]) and "no pixel-index read" in t.note
    holed = np.vstack([np.zeros((64, 140), np.uint8), np.vstack([water] * 2)[:76]])     # row 0 all no data
    t = D.alignment_check(_pair(tmp_path / "hole", holed, np.stack([np.vstack([nir] * 2)] * 4)), 64).iloc[0]
    assert t.note == "patch row 1" and t["aligned by bounds"] > 0.5
    tiny = _pair(tmp_path / "tiny", water[:30, :30], np.stack([nir[:30, :30]] * 4))     # smaller than one patch
    assert D.alignment_check(tiny, 64).iloc[0].note == "no patch row with valid pixels"
    with pytest.raises(ArasDataError, match=r"tiny: 0 kept patches of 1 tile\(s\)"):      # not a pandas EmptyDataError
        PR.prepare_dataset(tmp_path / "tiny", tmp_path / "out", small_settings(), progress=False)


def test_area_on_the_globe_beside_the_papers_nominal_pixels(prepared):
    assert PR.geodesic_area_km2(0, 0, 1, 1) == pytest.approx(12_364, rel=1e-3)           # 1 degree square at the equator
    assert PR.geodesic_area_km2(0, 60, 1, 61) == pytest.approx(PR.geodesic_area_km2(0, 0, 1, 1) * np.cos(np.radians(60.5)), rel=2e-3)
    _, patches = prepared
    t = PR.dataset_summary(patches, {"train": 20}, patch_size=128).set_index("quantity")
    k = patches[patches.status == "kept"]
    geo = t.loc["Area of kept patches on the globe (km2)", "aras"]
    assert geo == pytest.approx(PR.geodesic_area_km2(k.left, k.bottom, k.right, k.top).sum())
    assert t.loc["Area of kept patches (km2)", "aras"] / geo > 1.2 and pd.isna(t.loc["Area of kept patches on the globe (km2)", "paper"])


def test_an_archive_without_a_published_md5_is_not_downloaded(tmp_path):
    with pytest.raises(ArasDataError, match=r"bogus.zip: not a published ARAS400k archive \(those are train.zip, val.zip"):
        PR.download_aras400k(tmp_path, ["val.zip", "bogus.zip"], base_url="http://127.0.0.1:9/{name}")
    assert not any(tmp_path.iterdir())                                                 # nothing fetched, not even val.zip


# --- filters, scaling, splits ------------------------------------------------------------------------

def test_patch_status_rules():
    ones = np.ones((4, 10, 10), np.uint16)
    water = np.full((10, 10), 6, np.uint8)
    assert D.patch_status(water, ones) == "water"
    water[0, :10] = 0                                                   # 90% water is not over 90%
    assert D.patch_status(water, ones) == "kept"
    water[0, 0] = 255
    assert D.patch_status(water, ones) == "no_data"
    gap = ones.copy(); gap[:, 5, 5] = 0
    assert D.patch_status(np.zeros((10, 10), np.uint8), gap) == "no_data"
    gap[:3, 5, 5] = 1                                                   # a zero in one band only is data
    assert D.patch_status(np.zeros((10, 10), np.uint8), gap) == "kept"


def test_scalings():
    s2 = np.array([300, 1500, 6000, 9000], np.uint16).reshape(4, 1, 1) * np.ones((1, 2, 2), np.uint16)
    assert D.scale_rgb(s2, "fixed", 3000)[0, 0].tolist() == [26, 128, 255]
    assert D.scale_rgb(s2, "patch_max")[0, 0].tolist() == [12, 63, 255]                  # 12.75 and 63.75, truncated
    with pytest.raises(ArasDataError, match="unknown scaling"):
        D.scale_rgb(s2, "log")


def test_patch_max_is_the_authors_conversion_bit_for_bit():
    "`patch_max` as dataset_creator.py:189, `(s2_patch / s2_patch.max() * 255).astype(np.uint8)`, on random patches."
    r = np.random.default_rng(0)
    for top in (1, 255, 3001, 9999, 65535):
        s2 = r.integers(0, top + 1, (4, 32, 32)).astype(np.uint16); s2[0, 0, 0] = top
        rgb = s2[:3].transpose(1, 2, 0)
        assert np.array_equal(D.scale_rgb(s2, "patch_max"), (rgb / rgb.max() * 255).astype(np.uint8)), top
    assert not D.scale_rgb(np.zeros((4, 2, 2), np.uint16), "patch_max").any()          # an all-zero patch stays 0


def test_splits_deal_whole_blocks_deterministically():
    rng = np.random.default_rng(0)
    df = pd.DataFrame([(t, i, j) for t in ("A", "B", "C") for i in range(10) for j in range(10)
                       if rng.random() > 0.2], columns=["tile", "i", "j"])
    sp = PR.assign_splits(df, (0.8, 0.1, 0.1), block=2, seed=3)
    shares = sp.value_counts(normalize=True)
    assert abs(shares["val"] - 0.1) < 0.03 and abs(shares["test"] - 0.1) < 0.03
    block = df.tile + (df.i // 2).astype(str) + "-" + (df.j // 2).astype(str)
    assert (pd.crosstab(block, sp) > 0).sum(axis=1).max() == 1
    assert sp.equals(PR.assign_splits(df, (0.8, 0.1, 0.1), block=2, seed=3))
    assert not sp.equals(PR.assign_splits(df, (0.8, 0.1, 0.1), block=2, seed=4))


# --- preparing the layout ------------------------------------------------------------------------------

def test_prepared_layout_matches_the_published_format(prepared):
    root, patches = prepared
    assert set(patches.status) == {"kept", "water", "no_data"}
    kept = patches[patches.status == "kept"]
    assert len(patches) == 4 * 3 * 3                                    # (512 - 11) // 128 = 3 per side
    for split in D.SPLITS:
        pct = D.read_class_percentages(root, split)
        pairs = D.list_pairs(root, split)
        assert list(pct.columns) == ["filename", *CLASSES] and sorted(pct.filename) == pairs.filename.tolist()
        assert np.allclose(pct[list(CLASSES)].sum(axis=1), 100, atol=1e-3)
        img, lab = D.read_pair(pairs.image[0], pairs["mask"][0])
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        row = pct.set_index("filename").loc[pairs.filename[0]]
        assert np.allclose(row.values, 100 * np.bincount(lab.ravel(), minlength=7) / lab.size, atol=1e-3)
    assert sum(len(D.list_pairs(root, s)) for s in D.SPLITS) == len(kept)
    assert kept.filename.str.match(r"^N\d{2}E\d{3}_\d{3}_\d{3}\.png$").all()
    assert not list(root.rglob("*.part*")) and not (root / ".staging").exists()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"]["kept"] == len(kept)


def test_water_and_nodata_patches_are_where_toyland_put_them(prepared):
    _, patches = prepared
    by_tile = patches.groupby(["tile", "status"]).size().unstack(fill_value=0)
    assert by_tile.loc["N39E027", "water"] >= 3                         # the coast tile is mostly sea
    assert by_tile.loc["N39E036", "no_data"] >= 3                       # the S2 gap crosses the lakes tile
    assert by_tile.loc["N39E030", "kept"] == 9                          # farmland: nothing to drop


def test_prepare_reuses_a_finished_dataset_and_protects_others(prepared, toy_raw, tmp_path):
    root, patches = prepared
    stamp = (root / "manifest.json").stat().st_mtime_ns
    again = PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
    assert again.equals(pd.read_csv(root / "patches.csv")) and (root / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ArasDataError, match="prepared with other settings"):
        PR.prepare_dataset(toy_raw, root, small_settings(water_max=0.5), seed=0, progress=False)
    other = tmp_path / "published"; (other / "train").mkdir(parents=True)
    with pytest.raises(ArasDataError, match="not made by this preparation"):
        PR.prepare_dataset(toy_raw, other, small_settings(), seed=0, progress=False)


def test_prepare_resumes_after_an_interrupt(toy_raw, tmp_path, monkeypatch, prepared):
    calls, real = [], PR._tile_records
    def flaky(ap, *a, **k):
        calls.append(ap.pair.tile)
        if len(calls) == 3: raise KeyboardInterrupt
        return real(ap, *a, **k)
    monkeypatch.setattr(PR, "_tile_records", flaky)
    root = tmp_path / "ARAS400k"
    with pytest.raises(KeyboardInterrupt):
        PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
    assert not (root / "manifest.json").exists()                        # nothing looks complete
    calls.clear()
    monkeypatch.setattr(PR, "_tile_records", real)
    monkeypatch.setattr(PR, "_tile_records", lambda ap, *a, **k: (calls.append(ap.pair.tile), real(ap, *a, **k))[1])
    patches = PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
    assert calls == ["N39E033", "N39E036"]                              # finished tiles were not redone
    ref_root, ref = prepared
    assert patches.equals(ref)
    for sp in D.SPLITS:
        assert D.read_class_percentages(root, sp).equals(D.read_class_percentages(ref_root, sp))


def test_prepare_resumes_an_interrupt_while_it_moves_patches_into_the_layout(toy_raw, tmp_path, monkeypatch, prepared):
    moved, real = [], Path.replace
    def flaky(self, target):
        if "images" in str(target) and len(moved) == 5: raise KeyboardInterrupt    # the sixth image moved
        if "images" in str(target): moved.append(target)
        return real(self, target)
    monkeypatch.setattr(Path, "replace", flaky)
    root = tmp_path / "ARAS400k"
    with pytest.raises(KeyboardInterrupt):
        PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
    monkeypatch.undo()
    assert not (root / "manifest.json").exists() and any((root / sp).exists() for sp in D.SPLITS)   # halfway published
    patches = PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)   # was: refused
    ref_root, ref = prepared
    assert patches.equals(ref)
    for sp in D.SPLITS:
        assert D.list_pairs(root, sp).filename.tolist() == D.list_pairs(ref_root, sp).filename.tolist()


def test_merge_rule_and_scaling_reach_the_written_files(toy_raw, tmp_path, prepared):
    root = tmp_path / "script"
    patches = PR.prepare_dataset(toy_raw, root, small_settings(class_merge="script", scaling="patch_max"), progress=False)
    ref_root, ref = prepared
    assert patches.status.equals(ref.status)
    wet = ref[(ref.tile == "N39E027") & (ref.status == "kept")]         # the coast has wetland
    diff = (patches.loc[wet.index, "Grass"] - wet["Grass"]).abs().sum()
    assert diff > 0                                                     # wetland went to grass instead of tree
    img = D.read_png(D.list_pairs(root, "train").image[0])
    assert img.max() == 255                                             # each patch scaled by its own maximum


def test_dataset_summary_against_the_paper(prepared):
    _, patches = prepared
    t = PR.dataset_summary(patches, {"train": 20, "val": 3, "test": 3}, patch_size=128).set_index("quantity")
    assert t.loc["Patches extracted (256x256)", "aras"] == len(patches)
    assert t.loc["Kept", "paper"] == 100_240 and round(t.loc["Kept", "paper_pct"], 2) == 63.73
    assert round(t.loc["Area of kept patches (km2)", "paper"]) == 656_933
    assert np.isclose(t.loc["Area of kept patches (km2)", "aras"], t.loc["Kept", "aras"] * 128**2 * 100 / 1e6)
    assert np.isclose(t.loc["Removed: over 90% water", "aras_pct"], 100 * (patches.status == "water").mean())


# --- reading the published layout: bad input -----------------------------------------------------------

@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "ARAS400k"
    for sub in ("images", "masks"): (root / "train" / sub).mkdir(parents=True)
    for k in range(2):
        Image.fromarray(np.full((16, 16, 3), 80, np.uint8)).save(root / "train" / "images" / f"p{k}.png")
        Image.fromarray(labels_to_rgb(np.full((16, 16), k, np.uint8))).save(root / "train" / "masks" / f"p{k}.png")
    return root


def test_dataset_samples_follow_torchgeo_convention(layout):
    ds = DS.ARAS400k(layout, "train")
    s = ds[1]
    assert len(ds) == 2 and sorted(s) == ["image", "mask"]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 16, 16) and (s["image"] == 80).all()
    assert s["mask"].dtype == torch.int64 and (s["mask"] == 1).all()
    img, lab = ds.pair(1)                                              # the decoded files of the same sample
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3) and (lab == 1).all()


def test_dataset_applies_transforms_to_the_sample(layout):
    ds = DS.ARAS400k(layout, "train", transforms=lambda s: {**s, "mask": s["mask"] + 10})
    assert (ds[0]["mask"] == 10).all() and (ds[1]["mask"] == 11).all()


def test_dataset_finds_the_layout_below_root_and_names_a_missing_split(layout):
    assert len(DS.ARAS400k(layout.parent, "train")) == 2                # root above ARAS400k/
    with pytest.raises(ArasDataError, match=r"no val/images and val/masks here, nor val.zip; pass download=True"):
        DS.ARAS400k(layout, "val")
    with pytest.raises(ArasDataError, match="split 'training': ARAS400k has train, val, test, synth"):
        DS.ARAS400k(layout, "training")


def test_dataset_from_a_set_file_reads_the_same_samples(layout, tmp_path):
    ds = DS.ARAS400k(layout, "train")
    ds.pairs.iloc[::-1].to_csv(tmp_path / "set.csv", index=False)
    s = DS.ARAS400k.from_set(tmp_path / "set.csv")
    assert len(s) == 2 and (s[0]["mask"] == ds[1]["mask"]).all() and (s[1]["mask"] == ds[0]["mask"]).all()
    with pytest.raises(ArasDataError, match="set.csv: needs columns image and mask"):
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / "set.csv", index=False); DS.read_set(tmp_path / "set.csv")


def test_dataset_plot_draws_image_mask_prediction_and_the_class_legend(layout):
    ds = DS.ARAS400k(layout, "train")
    s = ds[1]
    fig = ds.plot({**s, "prediction": torch.full_like(s["mask"], 6)}, suptitle="p1")
    assert len(fig.axes) == 3 and [t.get_text() for t in fig.legends[0].get_texts()] == list(CLASSES)
    assert (fig.axes[1].images[0].get_array().data == labels_to_rgb(np.full((16, 16), 1, np.uint8))).all()
    assert (fig.axes[2].images[0].get_array().data == PALETTE[6]).all() and fig._suptitle.get_text() == "p1"
    assert len(ds.plot(s).axes) == 2


def test_image_without_mask_and_mask_without_image(layout):
    (layout / "train" / "masks" / "p1.png").unlink()
    with pytest.raises(ArasDataError, match=r"1 unpaired file\(s\) in .*train: .*images/p1.png: image without its mask$"):
        D.list_pairs(layout, "train")
    (layout / "train" / "masks" / "q.png").write_bytes(b"")
    with pytest.raises(ArasDataError, match=r"2 unpaired .*p1.png: image without its mask; .*masks/q.png: mask without"):
        D.list_pairs(layout, "train")                                      # every unpaired file, in one pass
    lonely = []
    assert D.list_pairs(layout, "train", lonely).filename.tolist() == ["p0.png"] and len(lonely) == 2
    (layout / "train" / "masks" / "q.png").unlink()
    (layout / "train" / "images" / "p1.png").unlink(); (layout / "train" / "images" / "p0.png").unlink()
    with pytest.raises(ArasDataError, match="masks/p0.png: mask without its image"):
        D.list_pairs(layout, "train")


def test_missing_and_empty_split_folders(layout):
    with pytest.raises(ArasDataError, match="val: split folder does not exist"):
        D.list_pairs(layout, "val")
    for p in (layout / "train").rglob("*.png"): p.unlink()
    with pytest.raises(ArasDataError, match="train: no PNG files"):
        D.list_pairs(layout, "train")


def test_truncated_png_unknown_colour_and_size_mismatch(layout):
    img = layout / "train" / "images" / "p0.png"
    img.write_bytes(img.read_bytes()[:60])
    with pytest.raises(ArasDataError, match="p0.png: unreadable or truncated PNG"):
        DS.ARAS400k(layout, "train")[0]
    mask = layout / "train" / "masks" / "p1.png"
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(mask)
    with pytest.raises(ArasDataError, match=r"masks/p1.png: 1 mask colour\(s\) not in the ARAS400k class table: \(7, 7, 7\) x256"):
        DS.ARAS400k(layout, "train")[1]
    Image.fromarray(labels_to_rgb(np.zeros((8, 16), np.uint8))).save(mask)
    with pytest.raises(ArasDataError, match="p1.png: image is 16x16 px but its mask .* is 16x8"):
        DS.ARAS400k(layout, "train")[1]


def test_class_percentage_csv_columns_are_checked(layout):
    (layout / "class_percentages").mkdir()
    csv = layout / "class_percentages" / "train.csv"
    pd.DataFrame({"filename": ["p0.png"], "Tree cover": [50.0], "Water": [50.0]}).to_csv(csv, index=False)
    with pytest.raises(ArasDataError, match=r"train.csv: missing columns \['Shrub', 'Grass', 'Crop', 'Built-up', 'Barren'\]"):
        D.read_class_percentages(layout, "train")
    with pytest.raises(ArasDataError, match="val.csv: class-percentage file does not exist"):
        D.read_class_percentages(layout, "val")


# --- input that cannot corrupt a run (issue 12) ----------------------------------------------------------

def test_class_percentages_are_checked_against_the_masks_row_by_row(layout, tmp_path, monkeypatch):
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))
    (layout / "class_percentages").mkdir()
    csv = layout / "class_percentages" / "train.csv"
    right = pd.DataFrame([dict(filename=f"p{k}.png", **{c: 100.0 * (j == k) for j, c in enumerate(CLASSES)}) for k in range(2)])
    right.to_csv(csv, index=False)
    assert len(PR.check_layout(layout, progress=False)) == 2                 # p0 all Tree, p1 all Shrub: agrees
    wrong = right.copy(); wrong.loc[1, "Water"] = 50.0                       # the second row sums to 150%
    pd.concat([wrong, wrong.iloc[[0]].assign(filename="gone.png")]).to_csv(csv, index=False)
    with pytest.raises(ArasDataError, match=r"2 problem\(s\) \(0 unpaired file\(s\), 0 of 2 pairs .*, 2 in the class-percentage") as e:
        PR.check_layout(layout, progress=False)
    assert "train.csv, line 3: p1.png has 50.0% Water, its mask 0.00% (tolerance 0.5 points)" in str(e.value)
    assert "train.csv, line 4: gone.png is no pair of train/" in str(e.value)
    first = right.copy(); first.loc[0, CLASSES[0]] = 60.0; first.to_csv(csv, index=False)   # was a bare AssertionError
    with pytest.raises(ArasDataError, match=rf"train.csv, line 2: p0.png has 60.0% {CLASSES[0]}, its mask 100.00%"):
        PR.check_layout(layout, progress=False)
    right.iloc[[1]].to_csv(csv, index=False)                                 # a pair without its row
    with pytest.raises(ArasDataError, match=r"train.csv: no row for train/images/p0.png"):
        PR.check_layout(layout, progress=False)


def test_check_layout_reports_every_bad_file_and_caches_the_good_ones(layout, tmp_path, monkeypatch):
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))
    for k in range(2, 6):                                                # six pairs, four of them about to go bad
        for sub in ("images", "masks"):
            shutil.copy(layout / "train" / sub / "p0.png", layout / "train" / sub / f"p{k}.png")
    checked = PR.check_layout(layout, progress=False)
    assert len(checked) == 6 and (checked.px == 16).all()
    calls = []
    monkeypatch.setattr(PR, "_check_pair", lambda i, m: (calls.append(i), (16, "", [100.0] + [0.0] * 6))[1])
    PR.check_layout(layout, progress=False)
    assert calls == []                                                   # unchanged files: read from the cache
    monkeypatch.undo(); monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))
    t = layout / "train"
    (t / "images" / "p2.png").write_bytes((t / "images" / "p2.png").read_bytes()[:60])               # truncated
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(t / "masks" / "p3.png")                   # unknown colour
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(t / "images" / "p4.png")                 # 16-bit
    Image.fromarray(np.full((32, 32, 3), 80, np.uint8)).save(t / "images" / "p5.png")                  # other size
    Image.fromarray(labels_to_rgb(np.zeros((32, 32), np.uint8))).save(t / "masks" / "p5.png")
    shutil.copy(t / "images" / "p0.png", t / "images" / "p6.png")                                      # no mask
    with pytest.raises(ArasDataError, match=r"5 problem\(s\) \(1 unpaired file\(s\), 4 of 6 pairs") as e:
        PR.check_layout(layout, progress=False)                          # pairing and decoding, in one pass
    msg = str(e.value)
    for what in ("p6.png: image without its mask", "p2.png: unreadable or truncated PNG", "p3.png: 1 mask colour(s)",
                 "p4.png: a I;16 PNG", "p5.png: 32 px, the layout's patches are 16 px"):
        assert what in msg, what
    report = pd.read_csv(next((tmp_path / "cache" / "layout_checks").glob("*.bad.csv"))).dropna(subset=["image"])
    (t / "images" / "p6.png").unlink()
    with pytest.raises(ArasDataError, match="no val, test split \\(has train\\); the chapters need train, val, test"):
        PR.check_layout(layout, need=D.SPLITS, progress=False)             # a partial layout fails first, not late
    assert sorted(report.image.map(lambda p: p.split("/")[-1])) == ["p2.png", "p3.png", "p4.png", "p5.png"]


def test_splits_leave_train_a_block_and_too_few_blocks_say_so(toy_raw, tmp_path):
    two = pd.DataFrame(dict(tile="A", i=[0, 0, 2, 2], j=[0, 1, 0, 1]))     # two 2x2 blocks
    assert "train" in set(PR.assign_splits(two, (0.8, 0.1, 0.1), block=2, seed=0))
    one = tmp_path / "one"; one.mkdir()
    for f in sorted(toy_raw.rglob("*N39E027*.tif")): shutil.copy2(f, one / f.name)
    with pytest.raises(ArasDataError, match=r"give splits \{'train': \d+, 'val': \d+, 'test': 0\}|lower data.split_block"):
        PR.prepare_dataset(one, tmp_path / "ARAS400k", small_settings(split_block=8), seed=0, progress=False)


def test_a_resume_with_other_settings_or_raw_files_starts_over(toy_raw, tmp_path, monkeypatch, prepared):
    real = PR._tile_records
    def flaky(ap, *a, **k):
        if ap.pair.tile == "N39E033": raise KeyboardInterrupt
        return real(ap, *a, **k)
    monkeypatch.setattr(PR, "_tile_records", flaky)
    root = tmp_path / "ARAS400k"
    with pytest.raises(KeyboardInterrupt):                               # interrupted with the other scaling
        PR.prepare_dataset(toy_raw, root, small_settings(scaling="patch_max"), seed=0, progress=False)
    monkeypatch.setattr(PR, "_tile_records", real)
    patches = PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
    ref_root, ref = prepared
    assert patches.equals(ref) and not list(root.glob(".staging*"))   # nothing of the first scaling is left in it
    for p in D.list_pairs(ref_root, "train").image:
        assert np.array_equal(D.read_png(p), D.read_png(root / "train" / "images" / p.name))
    copy = tmp_path / "raw-copy"; shutil.copytree(toy_raw, copy)        # the same files elsewhere: the same dataset
    assert PR.prepare_dataset(copy, root, small_settings(), seed=0, progress=False).equals(ref)
    tif = sorted(copy.rglob("*N39E036*S2RGBNIR.tif"))[0]; tif.write_bytes(tif.read_bytes())             # rewritten
    with pytest.raises(ArasDataError, match="from other raw files .*rewritten since: N39E036"):
        PR.prepare_dataset(copy, root, small_settings(), seed=0, progress=False)
    with pytest.raises(ArasDataError, match="needs a data_root"):
        D.require_data_root(copy, None)


def test_aras_own_cache_folder_is_prepared_again_when_stale(toy_raw, tmp_path):
    root = tmp_path / "ARAS400k"
    PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
    made = json.loads((root / "manifest.json").read_text()); made.pop("inputs"); made["key"] = "old"
    (root / "manifest.json").write_text(json.dumps(made))                # as an earlier aras wrote it
    with pytest.raises(ArasDataError, match="by an earlier aras that did not record its raw files"):
        PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
    again = PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False, replace=True)
    assert "inputs" in json.loads((root / "manifest.json").read_text()) and again.equals(pd.read_csv(root / "patches.csv"))


def test_tiles_prepared_in_two_processes_give_the_same_dataset(toy_raw, tmp_path, prepared):
    "Parallel preparation is a speed setting only: records and every written file equal the one-process run."
    ref_root, ref = prepared
    root = tmp_path / "ARAS400k"
    two = PR.prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False, workers=2)
    pd.testing.assert_frame_equal(two, ref)
    for split in ("train", "val", "test"):
        for sub in ("images", "masks"):
            a, b = sorted((ref_root / split / sub).glob("*.png")), sorted((root / split / sub).glob("*.png"))
            assert [p.name for p in a] == [p.name for p in b] and all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert json.loads((root / "manifest.json").read_text())["key"] == json.loads((ref_root / "manifest.json").read_text())["key"]


def _decode_in_child(q):
    from aras.data import decode_many
    q.put(decode_many(lambda k: k + 1, range(5)))


def test_decoding_threads_survive_a_fork():
    "A forked data-loader worker gets its own decoding threads (its parent's do not exist in the child: a shared pool would hang)."
    import multiprocessing as mp
    from aras.data import decode_many
    assert decode_many(str, range(3)) == ["0", "1", "2"]                    # the parent's pool now exists
    ctx = mp.get_context("fork"); q = ctx.Queue()
    p = ctx.Process(target=_decode_in_child, args=(q,)); p.start()
    assert q.get(timeout=60) == [1, 2, 3, 4, 5]
    p.join(10); assert p.exitcode == 0
