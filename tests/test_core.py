import json
import os
import re
import subprocess
import sys
import numpy as np
import pandas as pd
import pytest

from aras.core import (ArasError, atomic_path, get_profile, make_run, markdown_table, save_table,
                       settings_hash, write_json)
from aras.runtime import process_share


def test_profiles_hold_the_paper_settings():
    small, paper = get_profile("smoke"), get_profile("paper")
    assert paper.data.patch_size == 256 and paper.data.scaling == "patch_max"   # the authors' PNG scaling
    assert small.data.scaling == "fixed" and small.data.class_merge == "paper"          # small: the text's merge
    assert paper.data.class_merge == "script" and paper.data.nodata == "authors"       # paper: the authors' script
    assert get_profile("paper_text").data.class_merge == "paper"                       # the text, one layer away
    assert small.data.water_max == paper.data.water_max == 0.9


def test_profile_overrides_are_copies_and_checked():
    assert get_profile("smoke", **{"data.water_max": 0.5}).data.water_max == 0.5
    assert get_profile("smoke").data.water_max == 0.9
    with pytest.raises(ArasError, match="no setting 'data.bogus'"):
        get_profile("smoke", **{"data.bogus": 1})
    with pytest.raises(ArasError, match="unknown profile 'big'"):
        get_profile("big")


@pytest.mark.parametrize("key,value,words", [
    ("gan.uncond.kimg", -5, "gan.uncond.kimg must be above 0, got -5"),            # trained nothing, exit 0, before
    ("data.water_max", 7, "data.water_max must be in [0, 1], got 7"),               # kept all-water patches, before
    ("data.patch_size", 0, "data.patch_size must be above 0, got 0"),               # ZeroDivisionError, before
    ("data.patch_size", -256, "data.patch_size must be above 0, got -256"),         # a bare AssertionError, before
    ("data.split_fractions", (0.5, 0.5), "data.split_fractions must be three fractions"),   # IndexError, before
    ("segmentation.epochs", -3, "segmentation.epochs must be at least 1, got -3"),
    ("gan.cond.fid.alpha", 1.5, "gan.cond.fid.alpha must be strictly between 0 and 1, got 1.5"),
])
def test_a_setting_out_of_range_is_refused_naming_it(key, value, words):
    with pytest.raises(ArasError, match=re.escape(f"profile 'small': {words}")):
        get_profile("small", **{key: value})
    assert get_profile("small", **{"data.water_max": 1.0, "data.real_train_max": None}).data.water_max == 1.0   # edges pass


@pytest.mark.parametrize("argv", [
    ["aras.gan", "--kind", "uncond", "--data-root", "nowhere", "--set", "gan.uncond.kimg=-5"],
    ["aras.gan", "--kind", "uncond", "--data-root", "nowhere", "--set", "gan.uncond.kimg=abc"],
    ["aras.seg_matrix", "train", "--set", "segmentation.epochs=-3"],
    ["aras.metrics", "--set", "metrics.n_images=0"],
    ["aras.captioning", "--set", "captioning.batch_size=0"],
])
def test_every_command_line_refuses_a_bad_setting_in_one_line_with_exit_2(argv, tmp_path):
    p = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "ARAS_CACHE": str(tmp_path / "cache")})
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"python -m {argv[0]}: error: profile"), p.stderr
    assert argv[-1].split("=")[0] in lines[0]


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
    run = make_run("smoke", out_dir=tmp_path)
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


def test_profiles_are_paper_plus_scale_overrides_and_name_method_changes():
    from aras.profiles import PAPER, PROFILES
    assert PROFILES["paper"] == [] and get_profile("paper").data.scaling == PAPER["data"]["scaling"]
    small = get_profile("small")
    assert small.method_changes["data.scaling"].startswith("toyland") and small.data.scaling == "fixed"
    assert "segmentation.n_seeds" not in small.method_changes      # scale, not method
    assert get_profile("smoke").smoke and not small.smoke and not get_profile("paper").smoke
    with pytest.raises(ArasError, match="is now 'smoke'"):
        get_profile("tiny")
    referee = get_profile("referee")                                   # the small run, sized to decide (issue 26)
    assert referee.method_changes == small.method_changes and referee.data.real_train_max == small.data.real_train_max
    assert referee.segmentation.n_seeds == 40 and referee.data.split_fractions[2] > small.data.split_fractions[2]


def test_one_override_parser_for_every_command_line():
    from aras.core import parse_overrides
    assert parse_overrides(["gan.uncond.kimg=20", "segmentation.archs=('Unet',)", "data.scaling=fixed"]) == \
        {"gan.uncond.kimg": 20, "segmentation.archs": ("Unet",), "data.scaling": "fixed"}
    with pytest.raises(ArasError, match="expected KEY=VALUE"):
        parse_overrides(["gan.uncond.kimg"])
    run = make_run("smoke", overrides=["gan.uncond.kimg=7"])
    assert run.profile.gan.uncond.kimg == 7 and run.profile.overrides == {"gan.uncond.kimg": 7}


def test_smoke_outputs_say_they_are_not_results(tmp_path):
    save_table(pd.DataFrame({"a": [1]}), "t", make_run("smoke", out_dir=tmp_path))
    save_table(pd.DataFrame({"a": [1]}), "t", make_run("small", out_dir=tmp_path))
    assert "not results" in (tmp_path / "smoke" / "tables" / "t.md").read_text()
    assert "not results" not in (tmp_path / "small" / "tables" / "t.md").read_text()


def test_settings_are_typed_and_overrides_checked_against_the_types():
    import dataclasses
    from aras.profiles import PAPER, Settings
    from aras.settings_checks import setting_type
    assert PAPER == dataclasses.asdict(Settings())                 # the dict every chapter reads is the dataclass's
    assert setting_type("segmentation.epochs") is int and setting_type("gan.cond.fid.every_kimg") is float
    for key, bad in [("segmentation.epochs", "ten"), ("data.split_block", 2.5), ("segmentation.augment", "no"),
                     ("gan.uncond.betas", 0.5), ("metrics.human.perturb_px", "64")]:
        with pytest.raises(ArasError, match=f"setting {key} expects"):
            get_profile("smoke", **{key: bad})
    ok = get_profile("smoke", **{"gan.uncond.kimg": 2, "segmentation.archs": ["Unet"], "metrics.image_px": None,
                                 "segmentation.compile": "eager", "segmentation.amp": "bf16"})
    assert ok.gan.uncond.kimg == 2 and ok.segmentation.archs == ["Unet"] and ok.metrics.image_px is None


def test_a_bare_cuda_device_becomes_this_ranks_gpu(monkeypatch):
    "Under torchrun (LOCAL_RANK), every entry point's 'cuda' is the rank's own GPU; cpu stays cpu."
    from aras.runtime import init_distributed, local_device
    monkeypatch.delenv("LOCAL_RANK", raising=False); monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert [local_device(d) for d in ("cuda", "cuda:1", "cpu")] == ["cuda", "cuda:1", "cpu"]
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert [local_device(d) for d in ("cuda", "cuda:0", "cpu")] == ["cuda:3", "cuda:3", "cpu"]
    share = lambda *args: process_share("python -m aras.x", "", ["--profile", "smoke", *args])[1].device
    assert share("--device", "cuda") == "cuda:3" and share() == "cpu"      # captioning, metrics, gan sample
    assert init_distributed("cuda") == "cuda:3"                            # gan and segmentation training


def test_work_dir_is_the_same_for_a_relative_and_an_absolute_data_root(tmp_path, monkeypatch):
    "work_dir hashes the resolved data root, as `aras reproduce` passes it: torchrun's ranks find that work."
    monkeypatch.chdir(tmp_path); (tmp_path / "data").mkdir()
    rel, absolute = make_run("smoke", "data"), make_run("smoke", tmp_path / "data")
    assert rel.work_dir == absolute.work_dir == make_run("smoke", "./data/../data").work_dir
    resolved = settings_hash(str((tmp_path / "data").resolve()))
    assert absolute.work_dir.name == f"smoke-{resolved}-s0"                    # as before for a resolved root
    assert make_run("smoke").work_dir.name == f"smoke-{settings_hash('None')}-s0"   # the default run's folder
