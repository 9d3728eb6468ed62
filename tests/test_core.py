import json
import numpy as np
import pandas as pd
import pytest

from aras.core import (ArasError, atomic_path, get_profile, make_run, markdown_table, save_table,
                       settings_hash, write_json)


def test_profiles_hold_the_paper_settings():
    tiny, paper = get_profile("tiny"), get_profile("paper")
    assert paper.data.patch_size == 256 and paper.data.scaling == "patch_max"   # the authors' PNG scaling
    assert tiny.data.scaling == "fixed" and tiny.data.class_merge == paper.data.class_merge == "paper"
    assert tiny.data.water_max == paper.data.water_max == 0.9


def test_profile_overrides_are_copies_and_checked():
    assert get_profile("tiny", **{"data.water_max": 0.5}).data.water_max == 0.5
    assert get_profile("tiny").data.water_max == 0.9
    with pytest.raises(ArasError, match="no setting 'data.bogus'"):
        get_profile("tiny", **{"data.bogus": 1})
    with pytest.raises(ArasError, match="unknown profile 'big'"):
        get_profile("big")


def test_run_writes_under_the_figures_root_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ARAS_FIGURES", str(tmp_path / "f"))
    run = make_run("paper", seed=5)
    assert run.fig_dir == tmp_path / "f" / "paper" and run.table_dir.is_dir() and run.seed == 5


def test_atomic_path_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "t.json"
    write_json({"v": 1}, target)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_tables_are_written_as_csv_and_markdown(tmp_path):
    run = make_run("tiny", out_dir=tmp_path)
    df = pd.DataFrame({"quantity": ["kept", "share"], "aras": [1234.0, 0.5], "paper": [100240, np.nan]})
    save_table(df, "table_t", run)
    assert pd.read_csv(run.table_dir / "table_t.csv").equals(df)
    md = (run.table_dir / "table_t.md").read_text()
    assert "| kept       | 1234.00 | 100,240 |" in md and "nan" not in md


def test_markdown_table_formats_whole_numbers_without_decimals():
    md = markdown_table(pd.DataFrame({"n": [157283.0, 7063.0], "pct": [100.0, 4.49]}))
    assert "157,283" in md and "4.49" in md and "157,283.00" not in md


def test_settings_hash_is_order_independent_and_sensitive():
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 1.5})
