import numpy as np
import pytest

from aras.core import ArasDataError
from aras.landcover import (CLASSES, NODATA, PALETTE, class_shares, composition_row, labels_to_rgb,
                            merge_classes, rgb_to_labels)

T, S, G, C, B, R, W = range(7)


@pytest.mark.parametrize("rule,wetland", [("paper", T), ("script", G)])
def test_merge_rules_differ_only_in_wetland(rule, wetland):
    codes = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100, 0], np.uint8)
    expect = [T, S, G, C, B, R, R, W, wetland, T, G, NODATA]
    assert merge_classes(codes, rule).tolist() == expect


def test_unknown_codes_and_rules_are_reported():
    with pytest.raises(ArasDataError, match=r"tile_Map.tif: codes \[15, 200\] are not WorldCover classes"):
        merge_classes(np.array([10, 15, 200], np.uint8), source="tile_Map.tif")
    with pytest.raises(ArasDataError, match="unknown class merge 'other'"):
        merge_classes(np.array([10], np.uint8), "other")


def test_published_palette_and_order():
    assert CLASSES == ("Tree", "Shrub", "Grass", "Crop", "Built-up", "Barren", "Water")
    assert PALETTE[1].tolist() == [255, 182, 193] and PALETTE[6].tolist() == [0, 0, 255]


def test_mask_colours_round_trip_on_random_labels():
    labels = np.random.default_rng(0).integers(0, 7, (64, 48)).astype(np.uint8)
    assert (rgb_to_labels(labels_to_rgb(labels)) == labels).all()


def test_unknown_mask_colour_names_file_colour_and_count():
    rgb = labels_to_rgb(np.zeros((4, 4), np.uint8))
    rgb[0, :3] = (12, 34, 56)
    with pytest.raises(ArasDataError, match=r"m\.png: 1 mask colour\(s\) .*\(12, 34, 56\) x3"):
        rgb_to_labels(rgb, "m.png")
    with pytest.raises(ArasDataError, match="must be an RGB image"):
        rgb_to_labels(np.zeros((4, 4), np.uint8), "gray.png")


def test_composition_counts_nodata_only_in_the_denominator():
    m = np.array([[W, W], [T, NODATA]], np.uint8)
    assert class_shares(m).tolist() == [0.25, 0, 0, 0, 0, 0, 0.5]
    row = composition_row("x.png", m)
    assert row["filename"] == "x.png" and row["Water"] == 50.0 and row["Tree"] == 25.0
