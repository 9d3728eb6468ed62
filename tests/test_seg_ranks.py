"""Segmentation on several processes (issue 31): a global batch shared by DDP ranks gives the whole batch's
gradient, whole cells dealt to ranks train as one process trains them, kept DataLoader workers, per-rank
dropout seeds, and the paper profile's speed switches. All on CPU (gloo); GPU-only branches where decided."""
import json
import multiprocessing
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

import aras.gan as G
import aras.seg_matrix as M
import aras.segmentation as S
from aras.core import get_profile, make_run
from aras.data import list_pairs
from launch import torchrun, torchrun_script


GLOBAL_BATCH = '''
import json, pandas as pd, torch, torch.distributed as dist
import segmentation_models_pytorch as smp
import aras.segmentation as S
from aras.runtime import init_distributed
init_distributed()
rank, world = dist.get_rank(), dist.get_world_size()
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=g)
y = torch.randint(0, 5, (5, 16, 16), generator=g)
whole = S.epoch_batches(5, 5, seed=0, epoch=0)
y[whole[0][0], :4] = 5                    # class 5 only in rank 0's images
y[whole[0][4], :4] = 6                    # class 6 only in rank 1's
data = S.SegmentationSet(pd.DataFrame({"image": [], "mask": []}), 16)
data.tensors = (x, y)
cfg = dict(augment=False, grad_clip=1e9, norm=S.LITE_NORM, lr=1e-3, lr_factor=0.1, lr_patience=1)

def build():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 7, 1))

def flat(model): return torch.cat([p.detach().flatten() for p in model.parameters()])

def step(world, batches, loss=None):
    "One SGD step (lr 1: the weights move by the gradient); its loss and the weights after it."
    model = build()
    net, opt = S.speed_up(model, {}, world), torch.optim.SGD(model.parameters(), lr=1.0)
    loss = loss or S._optimisation(model, cfg, world)[2]
    return S.train_epoch(net, model, opt, loss, data, batches, cfg, torch.Generator())[0], flat(model)

mine = S.epoch_batches(5, 5, seed=0, epoch=0, rank=rank, world=world)
loss_r, w_r = step(world, mine)
loss_1, w_1 = step(1, whole)                                        # one process, the whole batch, smp's Dice
_, w_plain = step(world, mine, smp.losses.DiceLoss("multiclass"))   # each rank's own Dice, DDP's mean
sizes = [None] * world
dist.all_gather_object(sizes, [len(b) for b in mine])
gap = lambda a, b: float((a - b).abs().max())
if rank == 0:
    print("RESULT", json.dumps(dict(sizes=sizes, loss=abs(loss_r - loss_1), weights=gap(w_r, w_1),
                                    moved=gap(w_1, flat(build())), plain=gap(w_plain, w_1))))
dist.destroy_process_group()
'''


def test_two_ranks_with_3_and_2_images_take_the_step_of_one_process_with_all_5(tmp_path):
    "A global batch of 5 over 2 gloo ranks (3 + 2 images): the whole batch's Dice loss, and its step."
    r = torchrun_script(tmp_path, "global_batch", GLOBAL_BATCH)
    assert r["sizes"] == [[3], [2]] and r["moved"] > 1e-3                # one step, and it moved the weights
    assert r["loss"] < 1e-6 and r["weights"] < 1e-6
    assert r["plain"] > 1e-4                                             # each rank's own Dice would not do


def test_an_epoch_has_as_many_steps_on_any_number_of_ranks():
    "`batch_size` is the global batch: each rank takes its `rank_batch` share of every batch of one process."
    one = S.epoch_batches(50, 24, seed=3, epoch=1)
    for world in (2, 3, 16):
        parts = [S.epoch_batches(50, 24, seed=3, epoch=1, rank=r, world=world) for r in range(world)]
        assert all(len(p) == len(one) == 3 for p in parts)
        assert [sum((p[k] for p in parts), []) for k in range(3)] == one   # the shares, in rank order
        assert [len(p[0]) for p in parts] == [G.rank_batch(24, r, world) for r in range(world)]
    with pytest.raises(S.ArasError, match="batch 2 is smaller than 4 processes"):
        S.epoch_batches(10, 2, 0, 0, rank=0, world=4)


def test_the_gpu_branches_of_speed_up_switch_tf32_and_sync_batch_norm(monkeypatch):
    "TF32 goes on for a CUDA model that asks for it, never for a CPU one; GPU ranks get SyncBatchNorm."
    def model(): return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    def flags(): return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    before = flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        S.speed_up(model(), {"tf32": True}, 1)                              # a CPU model: nothing
        assert flags() == (False, False)
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))   # as if on a GPU
        monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda m: m)
        S.speed_up(model(), {}, 1)
        assert flags() == (False, False)                                    # not asked
        net = S.speed_up(model(), {"tf32": True}, 2)
        assert flags() == (True, True) and isinstance(net[1], torch.nn.SyncBatchNorm)
        assert not isinstance(S.speed_up(model(), {}, 1)[1], torch.nn.SyncBatchNorm)   # one process
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_set_keeps_its_dataloader_workers_from_one_epoch_to_the_next(prepared):
    "The second pass is served by the first pass's worker, with the second pass's batches; `close` ends it."
    data = S.SegmentationSet(list_pairs(prepared[0], "train").head(6), 32)
    before = multiprocessing.active_children()
    first = list(S.iterate_batches(data, [[0, 1], [2, 3]], num_workers=1))
    workers = [w for w in multiprocessing.active_children() if w not in before]
    second = list(S.iterate_batches(data, [[4, 5], [0, 1]], num_workers=1))
    assert len(workers) == 1 and [w for w in multiprocessing.active_children() if w not in before] == workers
    assert all(torch.equal(a, b) for a, b in zip(second[0], data.batch([4, 5])))
    assert all(torch.equal(a, b) for a, b in zip(second[1], first[0]))
    data.close()
    workers[0].join(timeout=30)
    assert not workers[0].is_alive()


def test_each_rank_drops_out_with_its_own_seed_and_rank_0_keeps_one_processes():
    "The torch seed of each epoch (dropout) is (seed, epoch) on rank 0, as on one process, another on rank 1."
    x, y = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 7, (4, 32, 32))
    sets = {}
    for k in ("train", "val"):
        sets[k] = S.SegmentationSet(pd.DataFrame({"image": ["i.png"] * 4, "mask": ["m.png"] * 4}), 32)
        sets[k].tensors = (x, y)                                            # 4 pairs in memory
    cfg = dict(seed=7, epochs=2, batch_size=2, steps_per_epoch=1, augment=True, grad_clip=1.0,
               norm=S.LITE_NORM, lr=1e-3, lr_factor=0.1, lr_patience=1, val="val.csv")
    class Seeds(S.Callback):
        def __init__(self): self.seen = []
        def before_epoch(self, f): self.seen.append(torch.initial_seed())
    seen = []
    for rank in (0, 1):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 7, 1), torch.nn.Dropout2d(0.5))
        opt, sched, loss = S._optimisation(model, cfg)
        f = S.FitState(cfg, Path("."), model, model, opt, sched, loss, sets, "none", ranks=(rank, 2))
        S.fit(f, [cb := Seeds()])
        seen.append(cb.seen)
    assert seen[0] == [7 * 1009, 7 * 1009 + 1] and seen[1][0] not in seen[0] and len(set(seen[1])) == 2


def test_paper_turns_on_the_safe_speed_switches_and_small_and_smoke_keep_theirs(prepared, tmp_path,
                                                                                monkeypatch):
    "bf16, channels-last and TF32 in the paper profile; small and smoke as before, their cells' hashes too."
    paper, small, smoke = (get_profile(n) for n in ("paper", "small", "smoke"))
    for s in (paper.segmentation, paper.gan.uncond, paper.gan.cond):
        assert (s.amp, s.channels_last, s.compile) == ("bf16", True, False)
    assert paper.segmentation.tf32 and paper.segmentation.distribute == "auto"
    seg = lambda p: (p.segmentation.amp, p.segmentation.channels_last, p.segmentation.tf32)
    assert seg(small) == (None, True, False) and seg(smoke) == (None, False, False)
    assert (small.gan.uncond.amp, small.gan.cond.channels_last) == ("bf16", True)    # as measured for small
    monkeypatch.setenv("ARAS_CACHE", str(tmp_path / "cache"))
    run = lambda tf32: make_run("smoke", data_root=prepared[0], **{"segmentation.tf32": tf32})
    cfgs = {tf32: M.SegmentationMatrix(run(tf32), prepared[0]).cells(["real"])[0] for tf32 in (False, True)}
    assert "tf32" not in cfgs[False] and cfgs[True]["tf32"] is True          # in a cell's hash only when on
    assert S.config_hash(cfgs[True]) != S.config_hash(cfgs[False])


def test_dealing_cells_balances_the_ranks_longest_first():
    costs = [9, 1, 8, 2, 7, 3, 6, 4, 5]
    deal = M.deal_cells(costs, 3)
    assert sorted(sum(deal, [])) == list(range(9))
    assert [sum(costs[i] for i in d) for d in deal] == [16, 15, 14]
    assert [M.spread_cells("auto", n, 2) for n in (1, 2, 5)] == [False, True, True]
    assert [M.spread_cells(d, n, w) for d, n, w in [("cells", 1, 2), ("batch", 9, 2), ("cells", 9, 1)]] == \
        [True, False, False]


def test_torchrun_ranks_train_whole_cells_alone_as_one_process_does(prepared, tmp_path):
    """Two gloo ranks and two cells: each rank trains one cell by itself (world size 1 in its result), rank 0
    reads both results after the barrier, and each cell equals the cell one process trains, bit for bit."""
    env = {**os.environ, "ARAS_CACHE": str(tmp_path / "cache"), "ARAS_FIGURES": str(tmp_path / "fig"),
           "OMP_NUM_THREADS": "1"}
    sets = ["segmentation.archs=('FPN',)", "segmentation.image_size=64", "segmentation.epochs=1",
            "segmentation.steps_per_epoch=1", "segmentation.batch_size=2", "segmentation.eval_batch_size=4",
            "segmentation.threads_per_run=1"]
    args = ["aras.seg_matrix", "train", "--data-root", str(prepared[0]), "--mix", "real", "--seeds", "0", "1"]
    p = torchrun([*args, "--set", *sets], env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rank 0: 1 of 2 cells" in p.stderr and "rank 1: 1 of 2 cells" in p.stderr
    results = [json.loads(f.read_text()) for f in sorted((tmp_path / "cache").rglob("result.json"))]
    assert sorted(r["seed"] for r in results) == [0, 1] and all(r["world_size"] == 1 for r in results)
    assert sorted(re.findall(r"seed (\d): test F1", p.stdout)) == ["0", "1"]    # rank 0 read both results
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                     # as the ranks have (OMP_NUM_THREADS=1): the same sums
    try:
        again = [S.train_cell({**r["config"], "run_dir": str(tmp_path / f"one-{r['seed']}")},
                              eval_batch_size=4, in_memory=True) for r in results]
    finally:
        torch.set_num_threads(threads)
    for r, one in zip(results, again):
        assert one["test_cm"] == r["test_cm"] and one["best_val_f1"] == r["best_val_f1"]
        assert one["history"][0]["train_loss"] == r["history"][0]["train_loss"]


def test_rank_0_alone_writes_the_set_files_and_the_others_wait_for_it(prepared, monkeypatch):
    "Under torchrun only rank 0 stamps the set's files and writes its CSV; every rank passes the barrier and gets its path."
    mx = M.SegmentationMatrix(make_run("smoke", data_root=prepared[0]), prepared[0])
    waits, stamped = [], []
    monkeypatch.setattr(M, "barrier", lambda: waits.append(1))
    monkeypatch.setattr(M, "file_stamps", lambda a, b: stamped.append(len(a)) or ["s"] * len(a))
    monkeypatch.setattr(M, "rank_world", lambda: (1, 2))
    path = mx.write_set("val")
    assert waits == [1] and stamped == [] and not path.exists()         # rank 1: waited, touched nothing
    monkeypatch.setattr(M, "rank_world", lambda: (0, 2))
    assert mx.write_set("val") == path and waits == [1, 1] and stamped == [len(mx.val)]
    assert len(pd.read_csv(path)) == len(mx.val)


def test_an_empty_list_of_mixes_asks_for_no_cells(prepared):
    "The referee profile has no compute-matched mixes: an empty list is none (it once meant all, 80 extra runs)."
    run = make_run("smoke", data_root=prepared[0], **{"segmentation.compute_matched_mixes": ()})
    mx = M.SegmentationMatrix(run, prepared[0])
    assert mx.cells([]) == [] and mx.compute_matched_cells() == []
    assert {c["mix"] for c in mx.cells()} == set(run.profile.segmentation.mixes) - {m for m in run.profile.segmentation.mixes
                                                                                      if mx.missing(m)}
