"The notebooks as a reader and papermill meet them: one parameters cell each, committed clean, runnable on a published layout."
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from aras.cli import main, pipeline_notebooks

NBS = Path(__file__).resolve().parents[1] / "nbs"
REQUIRED = ("profile", "data_root", "out_dir", "seed", "device")


@pytest.mark.parametrize("nb", sorted(NBS.glob("[0-9][0-9]*_*.ipynb")), ids=lambda p: p.name)
def test_first_code_cell_is_the_parameters_cell(nb):
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is cells[0]
    src = "".join(tagged[0]["source"])
    assert all(f"{name} =" in src for name in REQUIRED)
    assert not any(c.get("outputs") or c.get("execution_count") for c in cells)   # committed without outputs


def test_data_notebook_runs_on_an_existing_published_layout(prepared, tmp_path, capsys):
    "With data_root pointing at a finished ARAS400k layout (no manifest, a synth split), nothing is prepared."
    src_root, _ = prepared
    root = tmp_path / "ARAS400k"
    for split in ("train", "val", "test"):
        shutil.copytree(src_root / split, root / split)
    shutil.copytree(src_root / "class_percentages", root / "class_percentages")
    shutil.copytree(src_root / "train", root / "synth")                 # stands in for synthetic samples
    shutil.copy(src_root / "class_percentages" / "train.csv", root / "class_percentages" / "synth.csv")
    code = main(["reproduce", "--profile", "smoke", "--only", "03", "--data-root", str(root), "--out", str(tmp_path / "fig"),
                 "--runs", str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr()
    assert not (root / "manifest.json").exists()                        # read, not prepared
    t0 = pd.read_csv(tmp_path / "fig" / "smoke" / "tables" / "table0_dataset_summary.csv").set_index("quantity")
    n = sum(len(list((root / s / "images").glob("*.png"))) for s in ("train", "val", "test"))
    assert t0.loc["Kept", "aras"] == n and pd.isna(t0.loc["Patches extracted (256x256)", "aras"])
    assert t0.loc["Area of kept patches (km2)", "aras"] == pytest.approx(n * 128**2 * 100 / 1e6)
    assert t0.loc["Split: synth", "aras"] == len(list((root / "synth" / "images").glob("*.png")))
    assert (tmp_path / "fig" / "smoke" / "fig3_class_composition.pdf").exists()
