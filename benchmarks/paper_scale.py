"""Paper-scale rehearsal of the evaluation stages: time and peak memory of each, at the paper's sizes and at a tiny size.

Inputs are synthetic stand-ins of the paper's sizes (no model runs): 400k caption embeddings (MiniLM, 384-d), 50k x 2048
features per set (Inception-sized), an 80k real training set for nearest neighbours, 4 x 40k points for Figure 4. Each
stage runs in its own process, so its peak resident memory (ru_maxrss) is its own. A GPU user can read off what a stage
costs before renting one; times here are 2 CPU cores. Run: ``python benchmarks/paper_scale.py [--stages a b] [--tiny]``.
Writes ``benchmarks/paper_scale.csv``.
"""
import argparse, json, resource, subprocess, sys, time
from pathlib import Path

import numpy as np

PAPER = dict(captions=400_000, emb_dim=384, n_set=50_000, dim=2048, n_train=80_000, n_test=10_000, fig4_per_set=40_000,
             fig4_dim=64, ci_rows=5000, silhouette_max=10_000)
TINY = dict(captions=2_000, emb_dim=384, n_set=500, dim=2048, n_train=800, n_test=100, fig4_per_set=400, fig4_dim=64,
            ci_rows=5000, silhouette_max=10_000)


def feats(n, d, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d)).astype(np.float32)


def stage(name: str, S: dict) -> str:
    "Run one stage; return what it computed, in words."
    import torch
    from aras import distributional as DM, metric_studies as MS
    torch.set_num_threads(2)
    if name == "caption diversity":
        from aras.caption_scores import semantic_diversity
        e = feats(S["captions"], S["emb_dim"]); e /= np.linalg.norm(e, axis=1, keepdims=True)
        return f"{semantic_diversity(e):.4f} over {len(e):,} captions"
    real, fake = feats(S["n_set"], S["dim"]), feats(S["n_set"], S["dim"], 0.05, 1)
    if name == "FID": return f"{DM.fid_from_features(real, fake):.3f}"
    if name == "KID (poly, 100 subsets of 1000)": return f"{DM.kid(real, fake, 'poly', min(1000, len(real)), 100)[0]:.5f}"
    if name == "CMMD": return f"{DM.cmmd(real[:, :768], fake[:, :768]):.4f} (768-d, CLIP-sized)"
    if name == "precision/recall/density/coverage": return json.dumps({k: round(v, 4) for k, v in DM.prdc(real, fake, 3).items()})
    if name == "one interval replicate (all set metrics)":
        m = min(S["n_set"] // 2, S["ci_rows"]); pair, rng = DM.SetPair(real, fake), np.random.default_rng(0)
        i, j = (np.sort(rng.choice(S["n_set"], m, replace=False)) for _ in range(2))
        pair.metrics(i, j, DM.SET_METRICS, 3)
        return f"{m} rows per set; an interval is n_boot (1000) of these"
    if name == "real floor (one pair of real subsets)":
        pool = feats(S["n_train"], S["dim"])
        return json.dumps({k: round(v, 4) for k, v in DM.real_floor(pool, S["n_set"], S["n_set"], reps=1)[0].items()})
    if name == "nearest-neighbour pairing + CSLS":
        train, test = feats(S["n_train"], 1280, seed=2), feats(S["n_test"], 1280, seed=3)
        q = feats(S["n_set"], 1280, 0.05, 4)
        d = MS.nn_pairing(q, train, test, 20); c = MS.csls_nearest(q, train)
        return f"{len(d):,} queries vs {len(train):,} train, {len(test):,} test (1280-d); CSLS agrees with NN on {np.mean(c == d.nn_train):.2f}"
    if name == "hubness (NN and CSLS)":
        q, r = feats(S["n_set"], 1280, seed=5), feats(S["n_set"], 1280, seed=6)
        return json.dumps({k: round(MS.hubness(q, r, csls_k=ck)["max_share_1nn"], 4) for k, ck in (("nn", None), ("csls", 10))})
    if name == "Figure 4: t-SNE + silhouettes":
        from aras.seg_tables import embed_features
        groups = {f"set{k}": feats(S["fig4_per_set"], S["fig4_dim"], 0.1 * k, 10 + k) for k in range(4)}
        _, emb, sil = embed_features(groups, methods=("t-SNE",), silhouette_max=S["silhouette_max"], threads=2)
        return f"{len(emb['t-SNE']):,} points; silhouettes on {int(sil.n_silhouette.iloc[0]):,}"
    raise SystemExit(f"unknown stage {name!r}")


STAGES = ["caption diversity", "FID", "KID (poly, 100 subsets of 1000)", "one interval replicate (all set metrics)", "CMMD",
          "Figure 4: t-SNE + silhouettes", "precision/recall/density/coverage", "nearest-neighbour pairing + CSLS",
          "hubness (NN and CSLS)", "real floor (one pair of real subsets)"]     # cheapest first: a capped run measures most


def child(name, size):
    t0 = time.time(); what = stage(name, PAPER if size == "paper" else TINY)
    print(json.dumps(dict(stage=name, size=size, seconds=round(time.time() - t0, 1),
                          peak_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2), result=what)))


def save(df):
    "Write the stages measured now into `paper_scale.csv`, keeping the rows of stages not run this time."
    f = Path(__file__).with_name("paper_scale.csv")
    import pandas as pd
    kept = pd.read_csv(f) if f.exists() else df.iloc[:0]
    pd.concat([kept[~kept.stage.isin(df.stage)], df], ignore_index=True).to_csv(f, index=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="*", default=STAGES); ap.add_argument("--tiny", action="store_true", help="tiny size only")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(*a.child)
    import pandas as pd
    rows = []
    for name in a.stages:
        for size in (("tiny",) if a.tiny else ("tiny", "paper")):
            out = subprocess.run([sys.executable, __file__, "--child", name, size], capture_output=True, text=True)
            if out.returncode: rows.append(dict(stage=name, size=size, result="FAILED: " + out.stderr.strip().splitlines()[-1]))
            else: rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{name} [{size}]: {rows[-1].get('seconds', '-')} s, peak {rows[-1].get('peak_gb', '-')} GB; {rows[-1]['result']}", flush=True)
        if not a.tiny: save(pd.DataFrame(rows))                                   # after each stage
    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False))


if __name__ == "__main__":
    main()
