"The published archives in any of their possible layouts; real splits published without class percentages."
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aras import captioning as K
from aras import prepare as PR
from aras.core import ArasDataError
from aras.landcover import CLASSES, labels_to_rgb

EXPECTED = {f"ARAS400k/{s}/{sub}/{n}.png" for s in ("train", "val") for sub in ("images", "masks")
            for n in "ab"}
EXPECTED |= {"ARAS400k/class_percentages/train.csv", "ARAS400k/class_percentages/val.csv"}


def _pngs(tmp_path) -> dict:
    "Two 8x8 image/mask pairs as PNG bytes, by the name they have inside an archive."
    out = {}
    for k, n in enumerate("ab"):
        for sub, arr in (("images", np.full((8, 8, 3), 40 * k, np.uint8)),
                         ("masks", labels_to_rgb(np.full((8, 8), k + 1, np.uint8)))):
            p = tmp_path / f"{sub}-{n}.png"
            Image.fromarray(arr).save(p)
            out[f"{sub}/{n}.png"] = p.read_bytes()
    return out


def _zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _archives(tmp_path, layout: str) -> list:
    "A train and a val archive in one layout: `top` (a top folder), `bare` (`<split>/...`), `per_split`."
    pngs, out = _pngs(tmp_path), []
    for split in ("train", "val"):
        csv = {f"class_percentages/{split}.csv": f"filename,{','.join(CLASSES)}\n"}
        if layout == "per_split":                  # images/ and masks/ at the top, the split in the name only
            members = {**pngs, **csv}
            name = f"ARAS400k_{split}.zip" if split == "val" else f"{split}.zip"
        else:
            prefix = {"top": "ARAS400k-v1/", "bare": "", "aras": "ARAS400k/"}[layout]
            members = {f"{prefix}{split}/{k}": v for k, v in pngs.items()}
            members |= {f"{prefix}{k}": v for k, v in csv.items()}
            name = f"{split}.zip"
        (tmp_path / "zips" / layout).mkdir(parents=True, exist_ok=True)
        out.append(_zip(tmp_path / "zips" / layout / name, members))
    return out


def _tree(folder) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("layout", ["top", "bare", "per_split"])
def test_every_archive_layout_unpacks_to_the_published_tree(tmp_path, layout):
    reference, dest = tmp_path / "reference", tmp_path / "dest"
    for z in _archives(tmp_path, "aras"):                         # as the authors' README describes it
        PR.extract_archive(z, reference)
    (dest / "ARAS400k" / "test" / "images").mkdir(parents=True)
    (dest / "ARAS400k" / "test" / "images" / "kept.png").write_bytes(b"already here")
    (dest / "notes.txt").write_text("mine")
    roots = [PR.extract_archive(z, dest) for z in _archives(tmp_path, layout)]
    assert _tree(reference) == EXPECTED
    assert _tree(dest) == EXPECTED | {"ARAS400k/test/images/kept.png", "notes.txt"}
    assert roots == [dest / "ARAS400k"] * 2
    assert (dest / "ARAS400k" / "test" / "images" / "kept.png").read_bytes() == b"already here"
    member = "ARAS400k/val/masks/b.png"
    assert (dest / member).read_bytes() == (reference / member).read_bytes()


def test_one_split_archive_without_a_split_name_is_refused_and_leaves_nothing(tmp_path):
    z = _zip(tmp_path / "aras_data.zip", _pngs(tmp_path))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(ArasDataError, match=r"aras_data\.zip: images/, masks/ at its top: .*says which"):
        PR.extract_archive(z, dest)
    assert _tree(dest) == {"notes.txt"}
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]


def test_split_named_by_the_top_folder_when_the_archive_name_says_none(tmp_path):
    pngs = _pngs(tmp_path)
    z = _zip(tmp_path / "download.zip", {f"ARAS400k_test/{k}": v for k, v in pngs.items()})
    root = PR.extract_archive(z, tmp_path / "dest")
    assert _tree(root) == {f"test/{k}" for k in pngs}


def _val_copy(prepared, dest, with_csv: bool):
    src, _ = prepared
    shutil.copytree(src / "val", dest / "val")
    if with_csv:
        (dest / "class_percentages").mkdir(parents=True)
        shutil.copy(src / "class_percentages" / "val.csv", dest / "class_percentages" / "val.csv")
    return dest


def test_real_split_without_its_csv_takes_the_compositions_from_the_masks(prepared, tmp_path, capsys):
    with_csv = _val_copy(prepared, tmp_path / "with" / "ARAS400k", True)
    without = _val_copy(prepared, tmp_path / "without" / "ARAS400k", False)
    from_csv = K.subset_items("real", with_csv, tmp_path, real_splits=("val",))
    assert capsys.readouterr().out == ""
    from_masks = K.subset_items("real", without, tmp_path, real_splits=("val",))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert "val" in lines[0] and "class_percentages/val.csv" in lines[0] and "from the masks" in lines[0]
    assert len(from_masks) == len(from_csv) > 0
    assert from_masks.filename.tolist() == from_csv.filename.tolist()
    expected = from_csv[list(CLASSES)].to_numpy(float)
    np.testing.assert_allclose(from_masks[list(CLASSES)].to_numpy(float), expected, atol=1e-9)
    lazy = K.subset_items("real", without, tmp_path, real_splits=("val",), decode=False)   # as the CLI does
    assert lazy[list(CLASSES)].isna().all().all()
    filled = K.with_composition(lazy)
    np.testing.assert_allclose(filled[list(CLASSES)].to_numpy(float), expected, atol=1e-9)
    pd.testing.assert_series_equal(filled.filename, from_csv.filename)


def test_figure_3_compositions_come_from_the_masks_where_a_split_has_no_csv(prepared, tmp_path, capsys):
    "Chapters 03a and 05b draw Figure 3 from the masks of a split without its CSV: the same shares, and one line."
    import shutil
    from aras.prepare import composition_frame
    root = tmp_path / "ARAS400k"
    shutil.copytree(prepared[0], root)
    with_csv = composition_frame(root, ["val"])
    (root / "class_percentages" / "val.csv").unlink()
    from_masks = composition_frame(root, ["val"])
    assert "val: " in capsys.readouterr().out and len(from_masks) == len(with_csv) > 0
    key = ["filename", "class"]
    a, b = with_csv.sort_values(key).reset_index(drop=True), from_masks.sort_values(key).reset_index(drop=True)
    assert (a[key] == b[key]).all().all() and np.allclose(a.percent, b.percent, atol=0.01)
