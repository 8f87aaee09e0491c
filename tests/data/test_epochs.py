"""One epoch's input: batch plan, epoch composition, split per rank, work items and the batch function."""

from __future__ import annotations

import numpy as np
import pytest
from pair_records import write_pairs

from data_prep.epochs import (
    BatchPlan,
    batch_plan,
    epoch_selection,
    epoch_share,
    items_batch,
    rank_rows,
    read_and_augment,
    rows_independent,
    stream_items,
    work_item,
)
from data_prep.pair_index import TrainingDataError, list_pair_files, load_pair_index, read_pair_index
from ocean.config import AugmentConfig


def test_batch_plan_keeps_the_global_batch():
    assert batch_plan(256, 8) == BatchPlan(256, 8, 32, 32, 1)  # facts §8: 8 GPUs x 32
    assert batch_plan(256, 2, max_worker_batch=32) == BatchPlan(256, 2, 128, 32, 4)
    assert batch_plan(16, 2, max_worker_batch=3) == BatchPlan(16, 2, 8, 2, 4)  # 8 = 4 x 2, 2 <= 3
    assert batch_plan(12, 4, max_worker_batch=2) == BatchPlan(12, 4, 3, 1, 3)
    with pytest.raises(ValueError, match="not divisible"):
        batch_plan(16, 3)


def test_epoch_selection_counts_fresh_and_reproducible():
    keys = np.arange(1, 101, dtype=np.uint64)
    names = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10)
    sel0, counts = epoch_selection(keys, names, {"a": 20, "b": 50, "d": 5}, seed=3, epoch=0)
    assert counts == {"a": {"wanted": 20, "available": 60, "taken": 20},
                      "b": {"wanted": 50, "available": 30, "taken": 30},  # fewer than wanted: all of them
                      "c": {"wanted": 0, "available": 10, "taken": 0},
                      "d": {"wanted": 5, "available": 0, "taken": 0}}
    assert len(sel0) == 50 and len(np.unique(sel0)) == 50
    assert set(sel0[sel0 > 60].tolist()) == set(range(61, 91))
    again, _ = epoch_selection(keys[::-1], names[::-1], {"a": 20, "b": 50, "d": 5}, seed=3, epoch=0)
    assert np.array_equal(again, sel0)  # independent of the file / row order
    sel1, _ = epoch_selection(keys, names, {"a": 20, "b": 50}, seed=3, epoch=1)
    assert set(sel1[sel1 <= 60].tolist()) != set(sel0[sel0 <= 60].tolist())  # a fresh subset
    only_a, _ = epoch_selection(keys, names, {"a": 20}, seed=3, epoch=0)
    assert set(only_a.tolist()) == set(sel0[sel0 <= 60].tolist())  # b's count does not move a's draw


def test_rank_rows_equal_whole_batches():
    plan = batch_plan(8, 2)
    sel = np.arange(30, dtype=np.uint64)
    r0, steps = rank_rows(sel, 0, plan)
    r1, _ = rank_rows(sel, 1, plan)
    assert steps == 3 and len(r0) == len(r1) == 12  # 30 // 8 = 3 steps of 2 x 4
    assert not set(r0.tolist()) & set(r1.tolist())
    with pytest.raises(TrainingDataError, match="fewer than one global batch"):
        rank_rows(sel[:7], 0, plan)


def test_epoch_share_splits_row_groups_and_keeps_whole_batches(tmp_path):
    write_pairs(tmp_path, {"got10k": 48}, per_file=8)  # 6 files = 6 row groups of 8
    fs, files = list_pair_files(str(tmp_path))
    index = load_pair_index(fs, files)
    plan = batch_plan(8, 2)
    for epoch in (0, 1):
        selection, _ = epoch_selection(index.keys, index.datasets, {"got10k": 36}, 5, epoch)
        shares = [epoch_share(index, {"got10k": 36}, 5, epoch, r, plan, item_pairs=6) for r in (0, 1)]
        assert [s.steps for s in shares] == [4, 4]  # 36 // 8 whole global batches
        mine = [s.positions for s in shares]
        assert len(mine[0]) == len(mine[1]) == 16 and not set(mine[0].tolist()) & set(mine[1].tolist())
        assert set(index.keys[np.concatenate(mine)].tolist()) <= set(selection.tolist())
        units = [set(index.unit[m].tolist()) for m in mine]
        assert len(units[0] & units[1]) <= 1  # ranks read (almost) disjoint row groups, at most one shared
        for s in shares:  # items end on row-group boundaries, each has >= 6 pairs except the last
            assert all(len(it) >= 6 for it in s.items[:-1])
            seen = [set(index.unit[it].tolist()) for it in s.items]
            assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
        again = epoch_share(index, {"got10k": 36}, 5, epoch, 0, plan, item_pairs=6)
        assert np.array_equal(again.positions, mine[0])  # deterministic from (seed, epoch, rank)
    e0 = epoch_share(index, {"got10k": 36}, 5, 0, 0, plan, item_pairs=6).positions
    e1 = epoch_share(index, {"got10k": 36}, 5, 1, 0, plan, item_pairs=6).positions
    assert set(e0.tolist()) != set(e1.tolist())  # a fresh draw every epoch


def test_read_and_augment_follows_the_item(pairs_dir):
    fs, files = list_pair_files(str(pairs_dir))
    assert len(files) == 4  # 56 rows, 16 per file
    index = load_pair_index(fs, files)
    keys, names = read_pair_index(fs, files)
    assert len(keys) == 56 and (names == "got10k").sum() == 40 and np.array_equal(keys, index.keys)
    share = epoch_share(index, {"got10k": 16}, 1, 3, 0, batch_plan(8, 1), item_pairs=100)
    assert share.steps == 2 and len(share.items) == 1
    item = work_item(index, share, 0)
    out = read_and_augment(items_batch([item]), files=index.files, filesystem=fs, augment=AugmentConfig().__dict__, seed=1,
                           exemplar_size=127, search_size=255)
    assert set(out) == {"template", "search", "search_box", "search_shift", "valid", "negative", "epoch", "pair_key"}
    assert not out["negative"].any()  # negative_prob 0: the official positive pairs only
    assert out["template"].shape == (16, 127, 127, 3) and out["search"].shape == (16, 255, 255, 3)
    assert out["valid"].all() and (out["epoch"] == 3).all()
    assert np.array_equal(out["pair_key"].view(np.uint64), index.keys[share.items[0]])  # the item's order
    # the box follows the target: the yellow square in the search image lies inside the box
    img, box = out["search"][0], out["search_box"][0]
    yellow = (img[..., 0] < 90) & (img[..., 1] > 150) & (img[..., 2] > 180)
    ys, xs = np.nonzero(yellow)
    assert len(xs) > 100
    assert box[0] - 3 <= np.median(xs) <= box[2] + 3 and box[1] - 3 <= np.median(ys) <= box[3] + 3


def test_stream_items_split_the_first_item_into_the_same_rows(pairs_dir):
    """The stream's first item as pieces of 1, 1, 2 micro-batches and the rest: the same pairs in the same
    order, and (pairs independent of each other) bit-identical decode + augment output; later items whole."""
    fs, files = list_pair_files(str(pairs_dir))
    index = load_pair_index(fs, files)
    plan = batch_plan(4, 1)
    shares = [epoch_share(index, {"got10k": 36, "coco": 12}, 1, e, 0, plan, item_pairs=20) for e in (0, 1)]
    whole = stream_items(index, shares, plan.micro_batch, split_first=False)
    assert whole == [work_item(index, s, i) for s in shares for i in range(len(s.items))]
    split = stream_items(index, shares, plan.micro_batch, split_first=True)
    first = len(shares[0].items[0])
    sizes = [len(it["locations"]) // 32 for it in split]  # 4 uint64 per pair
    assert first > 16 and sizes[:4] == [4, 4, 8, first - 16] and split[4:] == whole[1:]
    assert all(it["epoch"] == 0 for it in split[:4])
    assert b"".join(it["locations"] for it in split[:4]) == whole[0]["locations"]

    def run(items, augment):
        return read_and_augment(items_batch(items), files=index.files, filesystem=fs, augment=augment.__dict__, seed=1,
                                exemplar_size=127, search_size=255)

    cfg = AugmentConfig()
    assert rows_independent(cfg)
    got, want = run(split[:4], cfg), run(whole[:1], cfg)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    # negative pairs take another pair's template from the same item: never split then
    negatives = AugmentConfig(negative_prob=0.5)
    assert not rows_independent(negatives)
    got, want = run(split[:4], negatives), run(whole[:1], negatives)
    assert want["negative"].any() and not np.array_equal(got["template"], want["template"])


def test_invalid_rows_are_replaced_and_an_all_invalid_batch_is_flagged():
    import torch

    from data_prep.epochs import repair_invalid

    batch = {"search_box": torch.tensor([[1.0, 1, 2, 2], [float("nan")] * 4, [3.0, 3, 4, 4]]),
             "valid": torch.tensor([True, False, True])}
    fixed, n_bad, all_bad = repair_invalid(dict(batch))
    assert n_bad == 1 and not all_bad
    assert torch.isfinite(fixed["search_box"]).all() and fixed["search_box"][0].tolist() == [1, 1, 2, 2]
    _, n_bad, all_bad = repair_invalid({"search_box": torch.full((2, 4), float("nan")),
                                         "valid": torch.tensor([False, False])})
    assert n_bad == 2 and all_bad
