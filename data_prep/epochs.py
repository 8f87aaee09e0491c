"""One training epoch's input: the batch plan, the epoch's pairs, each rank's share and the batch function.

Every choice is a deterministic function of the prepared pair index, the config and ``(seed, epoch, rank)``:
the same on every rank and every re-run. The global batch is fixed whatever the number of workers
(:func:`batch_plan`); each epoch draws a fresh per-dataset subset of the pool (:func:`epoch_selection`), split
into equal rank parts cut into work items (:func:`epoch_share`, :func:`work_item`) that
:func:`read_and_augment` reads and augments inside Ray Data tasks. No Ray, and no torch at import.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_prep.pair_index import PairIndex, TrainingDataError, read_pair_rows
from ocean.config import AugmentConfig

# Pairs per Ray Data work item (one task): well under a second of decode + augment at the bare loop's speed
# (BENCHMARKS.md, training input), and several of `ocean prepare`'s 256-row row groups
# (data_prep.shards.ROW_GROUP_ROWS) at the pool_factor 4 density (DataConfig) mixed into each micro-batch.
ITEM_PAIRS = 128

# The start of a stream: its first work item runs as pieces of 1, 1, 2, 4, ... micro-batches (then the rest
# of the item), so the first batch waits for one micro-batch of decode + augment instead of a whole item
# (BENCHMARKS.md, training input: first-epoch start-up; what is left of it: ray_stack.md §2.8).
START_PIECES = (1, 1, 2, 4)


@dataclass(frozen=True)
class BatchPlan:
    """How the fixed global batch is spread: ``global_batch = workers x micro_batch x accumulate``."""

    global_batch: int
    workers: int
    per_worker: int
    micro_batch: int
    accumulate: int

    def describe(self) -> str:
        acc = f" in {self.accumulate} micro-batches of {self.micro_batch}" if self.accumulate > 1 else ""
        return (f"global batch {self.global_batch} = {self.workers} workers x {self.per_worker} pairs{acc} "
                f"(fixed by optim.batch_size whatever the number of workers)")


def batch_plan(global_batch: int, workers: int, max_worker_batch: int | None = None) -> BatchPlan:
    """Per-worker batch ``global / workers`` and the smallest gradient accumulation that keeps each
    micro-batch at or below ``max_worker_batch`` (an exact divisor, so the global batch is exact).

    ``optim.batch_size`` is the *global* batch whatever the number of workers (facts §8: 32 x 8 GPUs = 256);
    per worker ``batch / workers`` pairs per step, in ``accumulate`` micro-batches when that exceeds
    ``max_worker_batch``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if global_batch % workers:
        raise ValueError(f"optim.batch_size {global_batch} is not divisible by {workers} workers: the global "
                         f"batch is fixed, pick a worker count that divides it")
    per_worker = global_batch // workers
    cap = per_worker if not max_worker_batch else int(max_worker_batch)
    if cap < 1:
        raise ValueError(f"max_worker_batch must be >= 1, got {max_worker_batch}")
    accumulate = next(a for a in range(1, per_worker + 1) if per_worker % a == 0 and per_worker // a <= cap)
    return BatchPlan(global_batch, workers, per_worker, per_worker // accumulate, accumulate)


def epoch_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of an epoch (every pair gets new crop jitter every epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0] >> 1)


def epoch_selection(keys: np.ndarray, datasets: np.ndarray, pairs_per_epoch: dict[str, int], seed: int,
                    epoch: int) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """The pairs of one epoch (facts §7.4: per-dataset counts, fresh every epoch).

    Args:
        keys: ``(N,)`` uint64 pair keys of the prepared pool; datasets: ``(N,)`` their dataset names.
        pairs_per_epoch: wanted pairs per dataset (``DataConfig.pairs_per_epoch``); datasets absent from it
            contribute nothing.

    Returns:
        ``(selection (M,) uint64 in a random order, {dataset: {"wanted", "available", "taken"}})``. A
        dataset with fewer pairs than wanted gives all it has. Each dataset draws from its own generator
        ``(seed, epoch, crc32(name))`` over its keys in sorted order, without replacement, so the result
        depends neither on the file order nor on the other datasets: a fresh subset every epoch, the same
        on every rank and every re-run.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    datasets = np.asarray(datasets).astype(str)
    parts, counts = [], {}
    for name in sorted(set(pairs_per_epoch) | set(np.unique(datasets).tolist())):
        wanted = int(pairs_per_epoch.get(name, 0))
        pool = np.sort(keys[datasets == name])
        take = min(wanted, len(pool))
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), zlib.crc32(name.encode())]))
        parts.append(pool[np.sort(rng.choice(len(pool), take, replace=False))] if take else pool[:0])
        counts[name] = {"wanted": wanted, "available": int(len(pool)), "taken": int(take)}
    selection = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)])).permutation(len(selection))
    return selection[order], counts


def rank_rows(selection: np.ndarray, rank: int, plan: BatchPlan) -> tuple[np.ndarray, int]:
    """This rank's keys of the epoch and the number of optimizer steps (whole global batches only)."""
    steps = len(selection) // plan.global_batch
    if steps == 0:
        raise TrainingDataError(f"an epoch has {len(selection)} pairs, fewer than one global batch of "
                                f"{plan.global_batch}: prepare more pairs or lower optim.batch_size")
    n = steps * plan.per_worker
    return selection[rank * n:(rank + 1) * n], steps


@dataclass(frozen=True)
class EpochShare:
    """One rank's part of one epoch.

    Attributes:
        epoch: 0-based epoch; steps: optimizer steps (the same on every rank).
        items: the work items in stream order, each ``(n,)`` int64 index positions (:class:`PairIndex`) in the
            order the pairs are yielded; together ``steps x per_worker`` pairs.
        composition: ``{dataset: {"wanted", "available", "taken"}}`` of the whole epoch (all ranks).
    """

    epoch: int
    steps: int
    items: tuple[np.ndarray, ...]
    composition: dict[str, dict[str, int]]

    @property
    def positions(self) -> np.ndarray:
        return np.concatenate(self.items) if self.items else np.zeros(0, np.int64)


def epoch_share(index: PairIndex, pairs_per_epoch: dict[str, int], seed: int, epoch: int, rank: int,
                plan: BatchPlan, item_pairs: int = ITEM_PAIRS) -> EpochShare:
    """This rank's pairs of ``epoch``, cut into work items, in the order the stream yields them.

    1. :func:`epoch_selection` (the same draw on every rank, fresh every epoch);
    2. ordered by row group, the row groups in a random order of ``(seed, epoch)`` (pairs inside a row group
       keep the selection's random order), then split by :func:`rank_rows` into equal contiguous parts: a
       rank reads only about ``1 / workers`` of the row groups, not every file;
    3. cut at row-group boundaries into items of at least ``item_pairs`` pairs (one Ray Data task each),
       each item's pairs shuffled with a generator of ``(seed, epoch, rank)`` so that a micro-batch mixes
       the item's row groups.
    """
    selection, composition = epoch_selection(index.keys, index.datasets, pairs_per_epoch, seed, epoch)
    positions = index.positions(selection)
    units = index.unit[positions]
    present = np.unique(units)
    unit_order = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 1])).permutation(len(present))
    positions = positions[np.argsort(unit_order[np.searchsorted(present, units)], kind="stable")]
    mine, steps = rank_rows(positions, rank, plan)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 2, int(rank)]))
    items, start = [], 0
    cuts = np.flatnonzero(index.unit[mine][1:] != index.unit[mine][:-1]) + 1
    for end in [*cuts.tolist(), len(mine)]:
        if end - start >= item_pairs or (end == len(mine) and end > start):
            items.append(mine[start:end][rng.permutation(end - start)])
            start = end
    return EpochShare(int(epoch), steps, tuple(items), composition)


def work_item(index: PairIndex, share: EpochShare, item: int) -> dict[str, Any]:
    """One Ray Data input row: ``{"epoch": int, "locations": bytes}``, the bytes an ``(n, 4)`` uint64 array
    of (file, row group, row, key) per pair, in yield order (bytes: a ragged array would need a tensor
    extension type)."""
    pos = share.items[item]
    loc = np.stack([index.file[pos].astype(np.uint64), index.row_group[pos].astype(np.uint64),
                    index.row[pos].astype(np.uint64), index.keys[pos]], axis=1)
    return {"epoch": share.epoch, "locations": loc.tobytes()}


def items_batch(items: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Work items (:func:`work_item`) as the batch Ray Data's ``map_batches(batch_format="numpy")`` hands
    :func:`read_and_augment`: ``epoch`` int64 and ``locations`` an object array of the items' bytes. For code
    that runs the stream's function outside Ray Data (the head start, benchmarks, tests)."""
    return {"epoch": np.array([it["epoch"] for it in items], dtype=np.int64),
            "locations": np.array([it["locations"] for it in items], dtype=object)}


def rows_independent(augment: AugmentConfig) -> bool:
    """Whether every pair's output depends only on the pair itself (and the epoch's seed), not on the other
    pairs of its work item: true unless negative pairs are on (``negative_prob > 0``: a negative takes the
    template of another pair of the same batch, ``data_prep.augment.negative_partners``). Only then can a work
    item be split into smaller tasks without changing what they yield."""
    return float(augment.negative_prob) <= 0.0


def stream_items(index: PairIndex, shares: list[EpochShare], micro_batch: int, *,
                 split_first: bool) -> list[dict[str, Any]]:
    """The Ray Data input rows of a whole stream (:func:`work_item` of every item of every share, in order).

    With ``split_first`` (allowed only when :func:`rows_independent`), the stream's first item is cut into
    pieces of :data:`START_PIECES` micro-batches and the rest of the item: the same pairs in the same order,
    so the same output rows, but the first batch is ready after one micro-batch of work.
    """
    rows = [work_item(index, s, i) for s in shares for i in range(len(s.items))]
    if not split_first or not rows:
        return rows
    share = shares[0]
    pos = share.items[0]
    cuts = np.cumsum([p * int(micro_batch) for p in START_PIECES])
    cuts = cuts[cuts < len(pos)].tolist()
    pieces = [work_item(index, EpochShare(share.epoch, share.steps, (part,), share.composition), 0)
              for part in np.split(pos, cuts)]
    return pieces + rows[1:]


def read_and_augment(batch: dict[str, Any], *, files: tuple[str, ...], filesystem, augment: dict[str, Any],
                     seed: int, exemplar_size: int, search_size: int,
                     digests: tuple[str | None, ...] = ()) -> dict[str, np.ndarray]:
    """The batch function over work items (:func:`work_item`; run by the stream's Ray Data tasks through
    ``pipelines.train_input.read_and_augment_task``): read the items' pairs
    (:func:`read_pair_rows`, checking each file once per process against ``digests``, the manifest's sha256),
    decode and augment them (``data_prep.augment.augment_pairs``, seed
    :func:`epoch_seed` of the item's epoch and each pair's id) and return numeric columns only (string columns break
    ``iter_torch_batches``, ray_stack.md §2).

    Returns ``template`` ``(B, 127, 127, 3)`` uint8 BGR, ``search`` ``(B, 255, 255, 3)`` uint8 BGR,
    ``search_box`` ``(B, 4)`` float32 xyxy in search pixels, ``search_shift`` ``(B, 2)`` float32 (facts §5.2),
    ``valid`` ``(B,)`` bool (False where a JPEG did not decode), ``negative`` ``(B,)`` bool (a negative pair,
    ``AugmentConfig.negative_prob``), ``epoch`` ``(B,)`` int64 and ``pair_key``
    ``(B,)`` int64 (the uint64 key's bits), in the items' order.
    """
    from data_prep.augment import augment_pairs

    cfg = AugmentConfig(**augment)
    parts = []
    for epoch, raw in zip(np.asarray(batch["epoch"]).tolist(), batch["locations"], strict=True):
        loc = np.frombuffer(raw, dtype=np.uint64).reshape(-1, 4)
        out = augment_pairs(read_pair_rows(filesystem, files, loc, digests), cfg, epoch_seed(seed, epoch),
                            exemplar_size=exemplar_size, search_size=search_size)
        parts.append({"template": out["template"], "search": out["search"], "search_box": out["search_box"],
                      "search_shift": out["shift"], "valid": out["valid"], "negative": out["negative"],
                      "epoch": np.full(len(loc), epoch, np.int64), "pair_key": loc[:, 3].view(np.int64)})
    if len(parts) == 1:  # the usual case (batch_size=1): no 60 MB copy
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def repair_invalid(batch: dict) -> tuple[dict, int, bool]:
    """Rows whose JPEG did not decode are replaced by copies of valid rows (counted); an all-invalid batch
    keeps a dummy box and must be skipped on every rank. Returns ``(batch, n_invalid, all_invalid)``."""
    import torch

    valid = batch.pop("valid")
    n_bad = int((~valid).sum())
    if n_bad == 0:
        return batch, 0, False
    good = torch.nonzero(valid).flatten()
    if len(good) == 0:
        batch["search_box"] = torch.tensor([[100.0, 100.0, 150.0, 150.0]]).expand_as(batch["search_box"]).clone()
        return batch, n_bad, True
    src = good[torch.arange(len(valid)) % len(good)]
    idx = torch.where(valid, torch.arange(len(valid)), src)
    return {k: v[idx] for k, v in batch.items()}, n_bad, False
