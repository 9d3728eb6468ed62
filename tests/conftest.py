"Shared fixtures: a small toyland and a dataset prepared from it, made once per test session."
import os
import pytest

from aras.core import get_profile
from aras.data import data_settings, prepare_dataset
from aras.toyland import generate_toyland


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    "No test writes into the project's figures/ or the user's cache."
    monkeypatch.setenv("ARAS_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def toy_raw(tmp_path_factory):
    "Four 512 px toyland tile pairs (coast, farmland, highland with a no-data corner, lakes with an S2 gap)."
    return generate_toyland(tmp_path_factory.mktemp("toyland"), seed=0, n_tiles=4, tile_px=512, progress=False)


def small_settings(**kw):
    s = data_settings(get_profile("smoke").data)
    s.update(patch_size=128, **kw)
    return s


@pytest.fixture(scope="session")
def prepared(toy_raw, tmp_path_factory):
    "The ARAS400k layout prepared from the small toyland with 128 px patches; returns (root, patches)."
    root = tmp_path_factory.mktemp("prepared") / "ARAS400k"
    return root, prepare_dataset(toy_raw, root, small_settings(), seed=0, progress=False)
