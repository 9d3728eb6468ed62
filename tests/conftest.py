"Shared fixtures: a small toyland and a dataset prepared from it, made once per test session."
import importlib.util
import os
import time
from pathlib import Path

import pytest

from aras.core import get_profile
from aras.data import data_settings
from aras.prepare import prepare_dataset
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


@pytest.fixture(scope="session")
def published(prepared, tmp_path_factory):
    """A layout that looks like the unzipped ARAS400k archives: the prepared train/val/test splits and class percentages,
    no manifest, and a `synth/` split of 3 x train unconditional 'samples' (real pairs rotated, image and mask together),
    named as StyleGAN3's gen_images.py names them (`seed0000.png`), with `class_percentages/synth.csv`."""
    import shutil
    import numpy as np
    import pandas as pd
    from PIL import Image
    from aras.data import list_pairs, read_pair
    from aras.landcover import composition_row, labels_to_rgb
    src, _ = prepared
    root = tmp_path_factory.mktemp("published") / "ARAS400k"
    for split in ("train", "val", "test"): shutil.copytree(src / split, root / split)
    shutil.copytree(src / "class_percentages", root / "class_percentages")
    train, rows = list_pairs(src, "train"), []
    for sub in ("images", "masks"): (root / "synth" / sub).mkdir(parents=True)
    for k in range(3 * len(train)):
        img, lab = read_pair(*train.iloc[k % len(train)][["image", "mask"]])
        img, lab = (np.ascontiguousarray(np.rot90(a, 1 + k // len(train))) for a in (img, lab))
        name = f"seed{k:04d}.png"
        Image.fromarray(img).save(root / "synth" / "images" / name)
        Image.fromarray(labels_to_rgb(lab)).save(root / "synth" / "masks" / name)
        rows.append(composition_row(name, lab))
    pd.DataFrame(rows).to_csv(root / "class_percentages" / "synth.csv", index=False)
    return root


# --- a headless browser, for the pages aras writes (the rating page, the book) ---------------------------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _browser_missing() -> str:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)"
    if importlib.util.find_spec("selenium") is None: return "needs the Python package selenium (a dev requirement)"
    return ""


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    downloads = tmp_path / "downloads"; downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1000,900", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)   # no selenium-manager
    drv.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    drv.downloads = downloads
    yield drv
    drv.quit()


def _wait(cond, timeout=15, what="the page"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v: return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
