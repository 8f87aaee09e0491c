"""Training on Ray Train: pair records streamed by Ray Data into DDP workers (issue 5, facts §7.4-§8).

Data path, per rank, built once for all remaining epochs (:func:`pair_stream`)::

    pair index (pair_id, dataset, row-group footers; no JPEG bytes) --> per epoch: this rank's pairs, cut into
    work items --> Ray Data from_items --> map_batches(read_and_augment): read only the items' row groups,
    decode + augment (CPU tasks) --> iter_torch_batches(prefetch), order preserved --> engine.train_step
    (labels from the boxes) --> DDP all-reduce

* **Epoch composition** (:func:`epoch_selection`, facts §7.4): every epoch draws
  ``DataConfig.pairs_per_epoch[dataset]`` pairs per dataset, without replacement, from the prepared pool
  (``pool_factor`` x that many pairs), with a generator seeded by ``(seed, epoch, dataset)``: a fresh subset
  every epoch, the same one on every rank and on every re-run. :func:`epoch_share` orders it by row group
  (row groups in a random order of ``(seed, epoch)``), cuts it to whole global batches and splits it into
  equal contiguous parts, one per rank (:func:`rank_rows`): every rank runs the same number of steps (DDP
  lockstep) and reads only about ``1 / workers`` of the row groups. A rank's part is cut at row-group
  boundaries into work items of about :data:`ITEM_PAIRS` pairs, shuffled inside each item; each pair is
  augmented with the seed ``(seed, epoch)`` and its id (``data_prep.augment.augment_pairs``).
* **One pipeline per rank**: the work items of every remaining epoch feed a single Ray Data execution, so
  there is no per-epoch planning, file listing or task start-up; each epoch is a whole number of
  micro-batches and order is preserved, so batches never straddle epochs (:class:`EpochFeed` checks the
  epoch of every batch). A restarted or re-run training starts the stream at its first unfinished epoch.
* **Batch**: ``optim.batch_size`` is the *global* batch whatever the number of workers (facts §8:
  32 x 8 GPUs = 256). Per worker ``batch / workers`` pairs per step, split into ``accumulate``
  micro-batches when that exceeds ``max_worker_batch`` (:func:`batch_plan`; logged and recorded as params).
* **Schedule**: ``ocean.engine`` (warm-up, log decay, unfreeze with a rebuilt optimizer and a re-wrapped
  DDP -- DDP only registers parameters that require grad when it is built).
* **Bad steps**: a non-finite / exploding loss skips the step on every rank (``agree`` = all-reduce MAX);
  ``optim.max_bad_steps`` consecutive ones stop the run with :class:`ocean.engine.TrainingDiverged`
  naming the step (not retried: every rank stops cleanly and the driver raises).
* **Checkpoints**: after every epoch rank 0 writes ``OUT/checkpoints/epoch-NNNN.pt`` (NNNN = completed
  epochs, an :mod:`ocean.checkpoint` file: model, optimizer, schedule state, epoch, RNG, config, history)
  *before* the epoch's ``ray.train.report``, which every rank enters, so no rank starts epoch e + 1 before
  file e exists. These files are the source of truth for resuming: a restarted worker group
  (``FailureConfig(max_failures)``) and a re-run of the same command both start from the newest file, so
  at most the epoch in progress is lost (Ray's own "latest registered" checkpoint can lag one epoch
  behind, ray_stack.md §4). Ray checkpoints are small pointers to those files (they carry the metrics into
  ``Result.metrics``); unregistered orphan ``checkpoint_*`` folders are deleted after the run.
* **MLflow** (:mod:`pipelines.tracking`): the driver creates or re-opens the run (tag ``ocean.run_key``, so a
  re-run continues the same run) with the flattened config, batch plan, data manifest sha256 and code
  version; rank 0 logs per-step losses, per-epoch losses, lr per group, pairs/s and the fraction of step
  time spent waiting for data; the driver logs checkpoint URIs and the final model file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import signal
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocean import storage  # no torch at import: the Ray Data decode tasks import this module
from ocean.config import AugmentConfig, OceanConfig, from_dict, to_dict

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = "epoch-{:04d}.pt"
DIVERGED_FILE = "DIVERGED.json"
KILLED_MARKER = "killed-once.json"
INDEX_COLUMNS = ("pair_id", "dataset")
# Pair-record columns the decode + augment step reads (data_prep.records schema; the others stay on disk).
AUGMENT_COLUMNS = ("pair_id", "template_jpeg", "search_jpeg", "template_box", "search_box", "template_offset",
                   "search_offset", "template_side", "search_side")
# Pairs per Ray Data work item (one task): about 0.4 s of decode + augment at ~300 pairs/s per core
# (benchmarks/train_input.py bare loop), and several of `ocean prepare`'s 256-row row groups
# (data_prep.shards.ROW_GROUP_ROWS) at the pool_factor 4 density (DataConfig) mixed into each micro-batch.
ITEM_PAIRS = 128
LOG_EVERY_STEPS = 20  # rank 0 flushes per-step metrics to MLflow this often


class TrainingDataError(ValueError):
    """The pair records cannot feed this training run (missing, wrong schema, too few pairs)."""


# --------------------------------------------------------------------------------------------------------
# Plain functions (no Ray): batch plan, epoch composition, pair keys, checkpoint files


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
    micro-batch at or below ``max_worker_batch`` (an exact divisor, so the global batch is exact)."""
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


def pair_keys(pair_ids) -> np.ndarray:
    """``(N,)`` uint64 keys of pair ids: the 16 hex digits themselves (data_prep.pairs.pair_id), else the
    first 8 bytes of their sha1."""
    out = np.empty(len(pair_ids), dtype=np.uint64)
    for i, pid in enumerate(pair_ids):
        text = pid.decode() if isinstance(pid, bytes) else str(pid)
        try:
            out[i] = int(text, 16) if len(text) == 16 else int(hashlib.sha1(text.encode()).hexdigest()[:16], 16)
        except ValueError:
            out[i] = int(hashlib.sha1(text.encode()).hexdigest()[:16], 16)
    return out


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
        ``(seed, epoch, crc32(name))`` over its keys in sorted order, so the result depends neither on the
        file order nor on the other datasets.
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


def checkpoint_uri(out: str, completed_epochs: int) -> str:
    return storage.join(out, CHECKPOINT_DIR, CHECKPOINT_PATTERN.format(completed_epochs))


def list_checkpoints(out: str) -> list[tuple[int, str]]:
    """``[(completed_epochs, uri)]`` of the epoch files under ``OUT/checkpoints``, oldest first."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(storage.join(out, CHECKPOINT_DIR))
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    found = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.File and name.startswith("epoch-") and name.endswith(".pt"):
            try:
                found.append((int(name[len("epoch-"):-len(".pt")]), checkpoint_uri(out, int(name[6:-3]))))
            except ValueError:
                continue
    return sorted(found)


def remove_stale_temporaries(out: str) -> int:
    """Delete ``*.tmp-PID`` files a killed local write left under ``OUT/checkpoints``; returns how many."""
    if storage.is_uri(out) and not out.startswith("file://"):
        return 0  # S3 objects appear only when complete: nothing half-written is visible
    _, root = storage.resolve(storage.join(out, CHECKPOINT_DIR))
    n = 0
    for p in Path(root).glob("*.tmp-*") if Path(root).exists() else []:
        p.unlink(missing_ok=True)
        n += 1
    return n


def list_pair_files(data: str) -> tuple[Any, list[str]]:
    """``(pyarrow filesystem, sorted parquet paths)`` under ``data`` (recursively, ``rejects/`` excluded)."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(data)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except FileNotFoundError:
        raise TrainingDataError(f"no pair records at {data}: run `ocean prepare` first") from None
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                   and "/rejects/" not in i.path[len(root):] and not Path(i.path).name.startswith("."))
    if not files:
        raise TrainingDataError(f"no .parquet pair records under {data}: run `ocean prepare` first")
    return fs, files


def epoch_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of an epoch (every pair gets new crop jitter every epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class PairIndex:
    """Where every prepared pair lives: built from two small columns and the parquet footers (no JPEG bytes).

    Attributes:
        files: parquet paths (on the filesystem :func:`list_pair_files` returned).
        keys: ``(N,)`` uint64 pair keys (:func:`pair_keys`); datasets: ``(N,)`` str dataset names.
        file: ``(N,)`` int64 index into ``files``; row_group: ``(N,)`` int64 row group inside that file;
        row: ``(N,)`` int64 row inside that row group; unit: ``(N,)`` int64 id of the (file, row group), the
        smallest piece a reader fetches.
    """

    files: tuple[str, ...]
    keys: np.ndarray
    datasets: np.ndarray
    file: np.ndarray
    row_group: np.ndarray
    row: np.ndarray
    unit: np.ndarray

    @functools.cached_property
    def _key_order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.keys, kind="stable")
        return order, self.keys[order]

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """``(M,)`` int64 positions in the index of ``keys`` (all present; a duplicated key maps to its first
        occurrence)."""
        order, sorted_keys = self._key_order
        at = np.searchsorted(sorted_keys, np.asarray(keys, dtype=np.uint64))
        pos = order[np.minimum(at, len(order) - 1)]
        if len(pos) and not np.array_equal(self.keys[pos], np.asarray(keys, dtype=np.uint64)):
            raise TrainingDataError("epoch selection names pairs the index does not have")
        return pos.astype(np.int64)


def load_pair_index(fs, files: list[str]) -> PairIndex:
    """Read the :class:`PairIndex` of pair-record files (``pair_id``, ``dataset`` and the footers only)."""
    import pyarrow.parquet as pq

    from data_prep.records import SCHEMA_VERSION, SCHEMA_VERSION_KEY

    keys, names, file_ix, groups, rows, units = [], [], [], [], [], []
    unit = 0
    for f, path in enumerate(files):
        with fs.open_input_file(path) as handle:
            pf = pq.ParquetFile(handle)
            schema = pf.schema_arrow
            version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
            if version != str(SCHEMA_VERSION).encode() or any(c not in schema.names for c in INDEX_COLUMNS):
                raise TrainingDataError(f"{path} is not a pair-record file of schema version {SCHEMA_VERSION} "
                                        f"(metadata {version!r}, columns {schema.names[:6]}...)")
            table = pf.read(columns=list(INDEX_COLUMNS))
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                groups.append(np.full(n, g, np.int64))
                rows.append(np.arange(n, dtype=np.int64))
                units.append(np.full(n, unit, np.int64))
                unit += 1
        keys.append(pair_keys(table.column("pair_id").to_pylist()))
        names.append(np.asarray(table.column("dataset").to_pylist(), dtype=str))
        file_ix.append(np.full(table.num_rows, f, np.int64))

    def cat(parts: list, dtype) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    return PairIndex(tuple(files), cat(keys, np.uint64), cat(names, str), cat(file_ix, np.int64),
                     cat(groups, np.int64), cat(rows, np.int64), cat(units, np.int64))


def read_pair_index(fs, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (N,) uint64, datasets (N,) str)`` from the small columns only (no JPEG bytes are read)."""
    index = load_pair_index(fs, files)
    return index.keys, index.datasets


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


def read_pair_rows(fs, files: list[str] | tuple[str, ...], locations: np.ndarray) -> dict[str, Any]:
    """The :data:`AUGMENT_COLUMNS` of the pairs at ``locations`` (``(n, 4)`` uint64 file, row group, row,
    key), in that order; only the row groups named are read.

    Raises:
        TrainingDataError: a row's ``pair_id`` is not the expected key (the files changed during the run).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    loc = np.asarray(locations, dtype=np.uint64).reshape(-1, 4)
    pieces, order = [], []
    for f in np.unique(loc[:, 0]):
        at = np.flatnonzero(loc[:, 0] == f)
        groups = np.unique(loc[at, 1])
        with fs.open_input_file(files[int(f)]) as handle:
            pf = pq.ParquetFile(handle)
            names = [c for c in AUGMENT_COLUMNS if c in pf.schema_arrow.names]
            table = pf.read_row_groups([int(g) for g in groups], columns=names)
            sizes = [pf.metadata.row_group(int(g)).num_rows for g in groups]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        take = starts[np.searchsorted(groups, loc[at, 1])] + loc[at, 2].astype(np.int64)
        pieces.append(table.take(pa.array(take)).to_pydict())
        order.append(at)
    back = np.argsort(np.concatenate(order), kind="stable").tolist()  # files may differ in nullability: no concat
    batch = {}
    for name in pieces[0]:
        values = [v for piece in pieces for v in piece[name]]
        batch[name] = [values[i] for i in back]
    got = pair_keys(batch["pair_id"])
    if not np.array_equal(got, loc[:, 3]):
        raise TrainingDataError(f"pair records changed during the run: expected pair keys "
                                f"{loc[got != loc[:, 3], 3][:3].tolist()}..., read others")
    return {k: (v if k.endswith("_jpeg") else np.asarray(v)) for k, v in batch.items()}


def read_and_augment(batch: dict[str, Any], *, files: tuple[str, ...], filesystem, augment: dict[str, Any],
                     seed: int, exemplar_size: int, search_size: int) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function over work items (:func:`work_item`): read the items' pairs
    (:func:`read_pair_rows`), decode and augment them (``data_prep.augment.augment_pairs``, seed
    :func:`epoch_seed` of the item's epoch) and return numeric columns only (string columns break
    ``iter_torch_batches``, ray_stack.md §2).

    Returns ``template`` ``(B, 127, 127, 3)`` uint8 BGR, ``search`` ``(B, 255, 255, 3)`` uint8 BGR,
    ``search_box`` ``(B, 4)`` float32 xyxy in search pixels, ``search_shift`` ``(B, 2)`` float32 (facts §5.2),
    ``valid`` ``(B,)`` bool (False where a JPEG did not decode), ``epoch`` ``(B,)`` int64 and ``pair_key``
    ``(B,)`` int64 (the uint64 key's bits), in the items' order.
    """
    from data_prep.augment import augment_pairs
    from pipelines.raysession import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()  # decoded 433 px crops and augment buffers are >= 128 KB: no mmap per array
    cfg = AugmentConfig(**augment)
    parts = []
    for epoch, raw in zip(np.asarray(batch["epoch"]).tolist(), batch["locations"], strict=True):
        loc = np.frombuffer(raw, dtype=np.uint64).reshape(-1, 4)
        out = augment_pairs(read_pair_rows(filesystem, files, loc), cfg, epoch_seed(seed, epoch),
                            exemplar_size=exemplar_size, search_size=search_size)
        parts.append({"template": out["template"], "search": out["search"], "search_box": out["search_box"],
                      "search_shift": out["shift"], "valid": out["valid"],
                      "epoch": np.full(len(loc), epoch, np.int64), "pair_key": loc[:, 3].view(np.int64)})
    if len(parts) == 1:  # the usual case (batch_size=1): no 60 MB copy
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def manifest_sha256(data: str) -> str | None:
    """sha256 of ``DATA/manifest.json`` (the data version a run trained on), None if there is none."""
    try:
        return hashlib.sha256(storage.read_bytes(storage.join(data, "manifest.json"))).hexdigest()
    except FileNotFoundError:
        return None


def parameter_digest(model) -> str:
    """sha1 of every parameter's bytes (ranks with identical weights give identical digests)."""
    h = hashlib.sha1()
    net = getattr(model, "module", model)
    for name, p in sorted(net.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def optimizer_state_by_name(optimizer, model) -> dict[str, dict]:
    """Optimizer per-parameter state keyed by parameter name (survives a change of the trainable set)."""
    net = getattr(model, "module", model)
    names = {id(p): n for n, p in net.named_parameters()}
    return {names[id(p)]: dict(s) for p, s in optimizer.state.items() if id(p) in names}


def load_optimizer_state_by_name(optimizer, model, state: dict[str, dict]) -> int:
    """Put :func:`optimizer_state_by_name` entries back on the same-named parameters; returns how many."""
    net = getattr(model, "module", model)
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    n = 0
    for name, p in net.named_parameters():
        if name in state and id(p) in in_opt:
            optimizer.state[p] = {k: (v.to(p.device) if hasattr(v, "to") else v) for k, v in state[name].items()}
            n += 1
    return n


# --------------------------------------------------------------------------------------------------------
# The input stream of one rank: one Ray Data pipeline for all remaining epochs


def pair_stream(index: PairIndex, fs, cfg: OceanConfig, plan: BatchPlan, *, seed: int, rank: int, start: int,
                prefetch: int = 2, data_cpus: float = 1.0, item_pairs: int = ITEM_PAIRS) -> EpochFeed:
    """Build this rank's input pipeline once, for epochs ``start .. cfg.optim.epochs - 1``.

    Ray Data runs over the work items of every remaining epoch (:func:`epoch_share`, :func:`work_item`):
    ``from_items -> map_batches(read_and_augment) (CPU tasks) -> iter_torch_batches(prefetch)``. Order is
    preserved, and every epoch holds a whole number of micro-batches, so each batch belongs to one epoch and
    epochs follow each other without a new plan, a file listing or a pipeline start between them. A resumed
    run starts the stream at its first unfinished epoch.
    """
    import ray.data

    shares = [epoch_share(index, cfg.data.pairs_per_epoch, seed, e, rank, plan, item_pairs)
              for e in range(start, cfg.optim.epochs)]
    items = [work_item(index, s, i) for s in shares for i in range(len(s.items))]
    if not items:
        return EpochFeed(iter(()), shares, plan)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # epoch after epoch, batches never mix two epochs
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(read_and_augment, batch_size=1, batch_format="numpy", num_cpus=data_cpus, fn_kwargs={
        "files": index.files, "filesystem": fs, "augment": dataclasses.asdict(cfg.augment), "seed": seed,
        "exemplar_size": cfg.model.exemplar_size, "search_size": cfg.model.search_size})
    batches = ds.iter_torch_batches(batch_size=plan.micro_batch, drop_last=False, prefetch_batches=prefetch)
    return EpochFeed(iter(batches), shares, plan)


class EpochFeed:
    """Micro-batches of one rank, epoch after epoch, from a single iterator (:func:`pair_stream`).

    :meth:`next` checks that every batch belongs to the epoch asked for and removes the bookkeeping columns
    (``epoch``; ``pair_key`` is kept in :attr:`last_keys`).
    """

    def __init__(self, batches, shares: list[EpochShare], plan: BatchPlan):
        self._batches = batches
        self.shares = {s.epoch: s for s in shares}
        self.plan = plan
        self.last_keys: np.ndarray = np.zeros(0, np.uint64)

    def share(self, epoch: int) -> EpochShare:
        return self.shares[epoch]

    def next(self, epoch: int, step: int) -> dict:
        """The next micro-batch of ``epoch`` (``template``, ``search``, ``search_box``, ``search_shift``,
        ``valid`` tensors)."""
        try:
            batch = next(self._batches)
        except StopIteration:
            raise TrainingDataError(f"the input stream ended early at epoch {epoch} step {step}") from None
        epochs = batch.pop("epoch")
        if len(epochs) != self.plan.micro_batch or bool((epochs != epoch).any()):
            raise TrainingDataError(f"input stream out of step at epoch {epoch} step {step}: got a batch of "
                                    f"{len(epochs)} pairs of epochs {sorted(set(epochs.tolist()))}")
        self.last_keys = batch.pop("pair_key").numpy().view(np.uint64)
        return batch

    def close(self) -> None:
        """Stop the pipeline early (a stopped run, a benchmark): closes the batch generator, which shuts
        down its Ray Data execution and prefetch thread."""
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()
        self._batches = iter(())


# --------------------------------------------------------------------------------------------------------
# The per-worker function


def _repair_invalid(batch: dict) -> tuple[dict, int, bool]:
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


@dataclass
class _EpochTotals:
    """Per-rank sums of one epoch (all-reduced at its end)."""

    losses: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"total": 0.0, "reg": 0.0, "cls": 0.0, "align": 0.0})
    counted: int = 0
    skipped: int = 0
    invalid: int = 0
    wait_s: float = 0.0
    epoch_s: float = 0.0


class _Worker:
    """One Ray Train worker's state: config, rank, device, the network, the resume point and helpers."""

    def __init__(self, config: dict):
        import ray.train
        import ray.train.torch
        import torch
        import torch.distributed as dist

        from ocean.engine import BadStepGuard
        from ocean.model import build_model

        self.cfg: OceanConfig = from_dict(config["cfg"])
        self.run = config["run"]
        self.out, self.seed = self.run["out"], int(self.run["seed"])
        self.plan = BatchPlan(**self.run["plan"])
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.distributed = self.world > 1 and dist.is_available() and dist.is_initialized()
        self.amp_dtype = torch.bfloat16 if self.device.type == "cuda" else None  # AMP on GPU only
        self.kill = self.run.get("kill_worker_at")
        self.guard = BadStepGuard(self.cfg.optim.max_bad_steps)
        torch.manual_seed(self.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        self.net = build_model(self.cfg.model).to(self.device)
        self.model = self.optimizer = None
        self.start, self.history, self.opt_state = self._resume()
        self._mlflow = None

    def _resume(self) -> tuple[int, list, dict | None]:
        """The newest epoch file, if any: a restarted worker group and a re-run both continue from it."""
        import torch

        from ocean.checkpoint import load_checkpoint

        found = list_checkpoints(self.out)
        if not found:
            return 0, [], None
        ckpt = load_checkpoint(found[-1][1], map_location=self.device)
        self.net.load_state_dict(ckpt["model"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"]["torch"])
        if self.rank == 0:
            print(f"[ocean train] resuming at epoch {int(ckpt['epoch'])} from {found[-1][1]}", flush=True)
        return int(ckpt["epoch"]), list(ckpt.get("history", [])), (ckpt.get("optimizer") or {}).get("state_by_name")

    def agree(self, skip: bool) -> bool:
        """True on every rank when any rank wants to skip the step (all-reduce MAX)."""
        if not self.distributed:
            return skip
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if skip else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Rank 0 logs ``values`` to the run's MLflow run (no-op elsewhere)."""
        if self.rank != 0 or not self.run.get("mlflow_run_id"):
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        self._mlflow = self._mlflow or MlflowClient(self.run["mlflow_uri"])
        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, int(step)) for k, v in values.items() if math.isfinite(float(v))]
        for i in range(0, len(metrics), 900):  # MLflow log_batch takes at most 1000 metrics
            self._mlflow.log_batch(self.run["mlflow_run_id"], metrics=metrics[i:i + 900])

    def begin_epoch(self, epoch: int) -> float:
        """Trainable set, optimizer (built at the start, rebuilt at the unfreeze epoch) and lr of ``epoch``."""
        from ocean.engine import (
            apply_bn_policy,
            build_optimizer,
            needs_new_optimizer,
            set_epoch_lr,
            set_trainable,
        )

        cfg = self.cfg.optim
        if self.optimizer is None or needs_new_optimizer(cfg, epoch):
            if self.optimizer is None:  # start or resume: the saved state, unless this is the rebuild epoch
                carried = None if (needs_new_optimizer(cfg, epoch) and cfg.rebuild_optimizer_at_unfreeze) \
                    else self.opt_state
            else:  # the unfreeze epoch: official rebuild resets momentum (facts §8), else carry it over
                carried = None if cfg.rebuild_optimizer_at_unfreeze else optimizer_state_by_name(self.optimizer,
                                                                                                 self.net)
            self.model = None  # drop the old DDP wrapper (and its hooks) before wrapping again
            set_trainable(self.net, cfg, epoch)
            self.model = self._wrap(self.net)  # DDP registers only the parameters that require grad now
            self.optimizer = build_optimizer(self.model, cfg, epoch)
            if carried:
                load_optimizer_state_by_name(self.optimizer, self.model, carried)
        lr = set_epoch_lr(self.optimizer, cfg, epoch)
        self.model.train()
        apply_bn_policy(self.model, cfg, epoch)
        return lr

    def _wrap(self, module):
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def maybe_kill(self, epoch: int, step: int) -> None:
        """Fault drill: the ``kill_worker_at`` rank SIGKILLs itself once per output folder."""
        if not self.kill or self.rank != self.kill[2] or epoch != self.kill[0] or step != self.kill[1]:
            return
        marker = storage.join(self.out, KILLED_MARKER)
        if not storage.exists(marker):  # once per output folder: the restart must get through
            storage.write_bytes(marker, json.dumps({"epoch": epoch, "step": step, "rank": self.rank}).encode())
            os.kill(os.getpid(), signal.SIGKILL)


def _train_step(w: _Worker, feed: EpochFeed, epoch: int, step: int, totals: _EpochTotals):
    """One optimizer step over ``accumulate`` micro-batches; returns the last ``StepResult``."""
    from ocean.engine import train_step

    result = None
    for micro in range(w.plan.accumulate):
        t0 = time.perf_counter()
        batch = feed.next(epoch, step)
        totals.wait_s += time.perf_counter() - t0
        batch, n_bad, all_bad = _repair_invalid(batch)
        totals.invalid += n_bad
        last = micro == w.plan.accumulate - 1
        with (w.model.no_sync() if (w.distributed and not last) else contextlib.nullcontext()):
            result = train_step(w.model, batch, w.cfg, w.optimizer, device=w.device, amp_dtype=w.amp_dtype,
                                accumulate=w.plan.accumulate, do_step=last,
                                agree=(lambda s: w.agree(True)) if all_bad else w.agree)
        if result.skipped:
            break
    return result


def _run_epoch(w: _Worker, feed: EpochFeed, epoch: int) -> _EpochTotals | None:
    """Every step of ``epoch`` on this rank; None when the bad-step guard stopped the run (every rank stops
    at the same step, and rank 0 has written ``DIVERGED.json``)."""
    from ocean.engine import TrainingDiverged

    steps = feed.share(epoch).steps
    totals = _EpochTotals()
    t_epoch = time.perf_counter()
    for step in range(steps):
        global_step = epoch * steps + step
        w.maybe_kill(epoch, step)
        result = _train_step(w, feed, epoch, step, totals)
        try:
            w.guard.update(result, global_step)
        except TrainingDiverged as exc:
            if w.rank == 0:  # every rank took the same decisions (agree): all stop here, cleanly
                storage.write_bytes(storage.join(w.out, DIVERGED_FILE), json.dumps(
                    {"error": str(exc), "epoch": epoch, "step": global_step}).encode())
            return None
        if result.skipped:
            totals.skipped += 1
            continue
        totals.counted += 1
        for k in totals.losses:
            totals.losses[k] += result.losses.get(k, 0.0)
        if w.rank == 0 and (step % max(1, steps // LOG_EVERY_STEPS) == 0 or step == steps - 1):
            w.log_metrics({f"step/loss_{k}": v for k, v in result.losses.items()}, global_step)
    totals.epoch_s = time.perf_counter() - t_epoch
    return totals


def _epoch_metrics(w: _Worker, epoch: int, lr: float, totals: _EpochTotals, steps: int) -> dict[str, Any]:
    """All-reduce the ranks' totals and gather their parameter digests into the epoch's metrics."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([totals.losses["total"], totals.losses["reg"], totals.losses["cls"], totals.losses["align"],
                      totals.counted, totals.skipped, totals.invalid, totals.wait_s, totals.epoch_s],
                     dtype=torch.float64, device=w.device)
    if w.distributed:
        dist.all_reduce(t)
    t = t.tolist()
    n_ok = max(t[4], 1.0)
    digests = [parameter_digest(w.net)]
    if w.distributed:
        gathered: list[Any] = [None] * w.world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    return {
        "epoch": epoch + 1, "loss": t[0] / n_ok, "loss_reg": t[1] / n_ok, "loss_cls": t[2] / n_ok,
        "loss_align": t[3] / n_ok, "steps": steps, "skipped_steps": int(t[5] / w.world),
        "skipped_total": w.guard.total, "invalid_pairs": int(t[6]), "lr": lr,
        "pairs_per_s": steps * w.plan.global_batch / max(totals.epoch_s, 1e-9),
        "data_wait_fraction": t[7] / max(t[8], 1e-9),
        "params_identical": float(len(set(digests)) == 1),
        "param_digests": digests,
    }


def _finish_epoch(w: _Worker, epoch: int, metrics: dict[str, Any], composition: dict) -> None:
    """Rank 0 writes the epoch file and logs; then every rank enters ``ray.train.report`` (so no rank starts
    the next epoch before the file exists)."""
    import ray.train
    import torch

    from ocean.checkpoint import save_checkpoint
    from ocean.engine import backbone_trainable_layers

    digests = metrics.pop("param_digests")
    w.history.append({**metrics, "composition": composition, "param_digests": digests})
    uri = checkpoint_uri(w.out, epoch + 1)
    pointer = None
    if w.rank == 0:
        optimizer = w.optimizer
        save_checkpoint(uri, w.net, w.cfg, epoch=epoch + 1, optimizer={
                            "state_by_name": optimizer_state_by_name(optimizer, w.net),
                            "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                             for g in optimizer.param_groups]},
                        trainable_layers=list(backbone_trainable_layers(w.cfg.optim, epoch)),
                        scheduler={"epoch": epoch + 1, "lr": metrics["lr"]}, rng={"torch": torch.get_rng_state()},
                        history=w.history, metrics=metrics, seed=w.seed)
        w.log_metrics({**{k: v for k, v in metrics.items() if k != "epoch"},
                       **{f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}}, epoch + 1)
        pointer = tempfile.mkdtemp(prefix="ocean-ckpt-")
        Path(pointer, "pointer.json").write_text(json.dumps({"epoch": epoch + 1, "uri": uri}))
        print(f"[ocean train] epoch {epoch + 1}/{w.cfg.optim.epochs} loss {metrics['loss']:.4f} "
              f"lr {metrics['lr']:.3g} {metrics['pairs_per_s']:.1f} pairs/s data wait "
              f"{100 * metrics['data_wait_fraction']:.0f}% skipped {metrics['skipped_steps']} -> {uri}", flush=True)
    ray.train.report({**metrics, "checkpoint_uri": uri},
                     checkpoint=ray.train.Checkpoint.from_directory(pointer) if pointer else None)


def _train_loop(config: dict) -> None:
    """Ray Train worker: set up (resume), open this rank's input stream once, then per epoch train and
    finish (reduce, checkpoint, report)."""
    w = _Worker(config)
    fs, files = list_pair_files(w.run["data"])
    feed = pair_stream(load_pair_index(fs, files), fs, w.cfg, w.plan, seed=w.seed, rank=w.rank, start=w.start,
                       prefetch=int(w.run["prefetch_batches"]), data_cpus=float(w.run.get("data_cpus", 1.0)))
    try:
        for epoch in range(w.start, w.cfg.optim.epochs):
            lr = w.begin_epoch(epoch)
            totals = _run_epoch(w, feed, epoch)
            if totals is None:  # diverged: every rank stops here
                return
            share = feed.share(epoch)
            _finish_epoch(w, epoch, _epoch_metrics(w, epoch, lr, totals, share.steps), share.composition)
    finally:
        feed.close()  # shut the Ray Data execution down while Ray is still up


# --------------------------------------------------------------------------------------------------------
# The driver


def _ray_storage(out: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Train under ``OUT/ray``."""
    fs, path = storage.resolve(storage.join(out, "ray"))
    if not storage.is_uri(out):
        Path(path).mkdir(parents=True, exist_ok=True)
        return path, None
    return path, fs


def clean_ray_orphans(out: str, name: str, keep: set[str]) -> list[str]:
    """Delete ``OUT/ray/NAME/checkpoint_*`` folders not in ``keep`` (uploaded, never registered, or
    superseded); returns the deleted paths."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(storage.join(out, "ray", name))
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return []
    keep_names = {Path(k.rstrip("/")).name for k in keep}
    removed = []
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_") \
                and info.base_name not in keep_names:
            fs.delete_dir(info.path)
            removed.append(info.path)
    return removed


def train(data: str, out: str, cfg: OceanConfig, *, workers: int = 2, use_gpu: bool = False,
          max_worker_batch: int | None = None, cpus_per_worker: float | None = None, seed: int = 0,
          ray_address: str | None = None, mlflow_uri: str | None = None, experiment: str = "ocean-train",
          run_name: str | None = None, max_failures: int = 2, prefetch_batches: int = 2, data_cpus: float = 1.0,
          kill_worker_at: tuple[int, int, int] | None = None, verbose: bool = True) -> dict[str, Any]:
    """Train ``cfg`` on the pair records at ``data`` with Ray Train; checkpoints and Ray state under ``out``.

    Args:
        data: folder or ``s3://`` URI of pair-record parquet files (``ocean prepare`` output).
        out: folder or ``s3://`` URI for ``checkpoints/epoch-NNNN.pt``, Ray's run state (``ray/``) and, for
            a local folder, the default MLflow store ``mlflow.db``. Re-running with the same ``out`` and
            ``run_name`` resumes at the first unfinished epoch.
        workers: DDP workers (gloo on CPU, NCCL on GPU); ``optim.batch_size`` stays the global batch.
        max_worker_batch: largest micro-batch per worker; above it gradients are accumulated.
        cpus_per_worker: CPUs reserved per training worker (default 0.5 on CPU so Ray Data's decode tasks
            get CPUs on small machines, ray_stack.md §4; 1 with a GPU).
        seed: model init, epoch composition and augmentation seed.
        prefetch_batches: micro-batches each rank's ``iter_torch_batches`` keeps ready.
        data_cpus: CPUs each decode + augment task of the input stream reserves (:func:`pair_stream`).
        kill_worker_at: ``(epoch, step, rank)``: that rank SIGKILLs itself once (a marker under ``out``
            remembers it) -- for fault-tolerance tests and drills.

    Returns:
        ``{"epochs", "final_loss", "metrics" (last epoch), "losses" (per epoch), "history",
        "checkpoints" (URIs, oldest first), "mlflow_run_id", "mlflow_uri", "batch_plan", "resumed_from",
        "orphans_removed"}``.

    Raises:
        TrainingDiverged: ``optim.max_bad_steps`` consecutive skipped steps (message names the step).
        TrainingDataError: no or unusable pair records.
    """
    from mlflow.tracking import MlflowClient
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ocean.engine import TrainingDiverged
    from pipelines import tracking

    log = print if verbose else (lambda *a, **k: None)
    plan = batch_plan(cfg.optim.batch_size, workers, max_worker_batch)
    log(f"[ocean train] {plan.describe()}")
    fs, files = list_pair_files(data)  # fail fast on missing data, before Ray starts
    manifest = manifest_sha256(data)
    keys, datasets = read_pair_index(fs, files)
    selection, composition = epoch_selection(keys, datasets, cfg.data.pairs_per_epoch, seed, 0)
    rank_rows(selection, 0, plan)  # fails fast when an epoch is shorter than one global batch
    log(f"[ocean train] {len(keys)} prepared pairs in {len(files)} files; epoch 1 draws "
        + ", ".join(f"{n} {c['taken']}/{c['available']}" for n, c in composition.items() if c["wanted"]))
    short = {n: c for n, c in composition.items() if c["taken"] < c["wanted"]}
    if short:
        log(f"[ocean train] warning: fewer prepared pairs than data.pairs_per_epoch asks for: {short}")
    name = run_name or "ocean-train"
    done_before = list_checkpoints(out)
    remove_stale_temporaries(out)
    if storage.exists(storage.join(out, DIVERGED_FILE)):  # a re-run tries again from the last good epoch
        fs_out, p = storage.resolve(storage.join(out, DIVERGED_FILE))
        fs_out.delete_file(p)

    uri = tracking.tracking_uri(mlflow_uri, out)
    exp_id = tracking.ensure_experiment(uri, experiment)
    client = MlflowClient(uri)
    run_key = hashlib.sha1(f"{tracking.public_uri(out)}|{name}".encode()).hexdigest()[:16]
    run_id = tracking.find_run(uri, exp_id, "ocean.run_key", run_key)
    if run_id is None:
        tags = tracking.run_tags(**{"ocean.run_key": run_key, "ocean.data": tracking.public_uri(data),
                                    "ocean.out": tracking.public_uri(out), "mlflow.runName": name,
                                    "ocean.manifest_sha256": manifest or "none"})
        run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
        params = tracking.config_params(cfg, {
            "run.workers": workers, "run.use_gpu": use_gpu, "run.seed": seed, "run.per_worker_batch": plan.per_worker,
            "run.micro_batch": plan.micro_batch, "run.accumulate": plan.accumulate,
            "run.max_worker_batch": max_worker_batch, "run.data": tracking.public_uri(data),
            "run.out": tracking.public_uri(out), "run.manifest_sha256": manifest or "none",
            "run.pair_files": len(files)})
        items = list(params.items())
        from mlflow.entities import Param

        for i in range(0, len(items), 90):
            client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 90]])
    else:
        client.update_run(run_id, status="RUNNING")
        log(f"[ocean train] continuing MLflow run {run_id}")
    log(f"[ocean train] MLflow {tracking.public_uri(uri)} experiment {experiment!r} run {run_id}")

    from pipelines.raysession import ensure_ray

    ensure_ray(ray_address)
    storage_path, storage_fs = _ray_storage(out)
    cpus = cpus_per_worker if cpus_per_worker is not None else (1.0 if use_gpu else 0.5)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": to_dict(cfg), "run": {
            "data": data, "out": out, "seed": seed, "plan": dataclasses.asdict(plan),
            "mlflow_uri": uri, "mlflow_run_id": run_id, "prefetch_batches": prefetch_batches,
            "data_cpus": data_cpus,
            "kill_worker_at": list(kill_worker_at) if kill_worker_at else None}},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    try:
        result = trainer.fit()
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    diverged = storage.join(out, DIVERGED_FILE)
    if storage.exists(diverged):
        info = json.loads(storage.read_bytes(diverged))
        client.set_tag(run_id, "ocean.error", info["error"][:5000])
        client.set_terminated(run_id, "FAILED")
        raise TrainingDiverged(info["error"])
    keep = {result.checkpoint.path} if result.checkpoint is not None else set()
    orphans = clean_ray_orphans(out, name, keep)
    found = list_checkpoints(out)
    if not found:
        client.set_terminated(run_id, "FAILED")
        raise RuntimeError(f"training finished without writing a checkpoint under {out}")
    from ocean.checkpoint import load_checkpoint

    last = load_checkpoint(found[-1][1])
    history = list(last.get("history", []))
    uris = [u for _, u in found]
    client.set_tag(run_id, "ocean.final_checkpoint", tracking.public_uri(uris[-1]))
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "checkpoints.json").write_text(json.dumps([tracking.public_uri(u) for u in uris], indent=1))
        client.log_artifact(run_id, str(Path(tmp, "checkpoints.json")))
        final = Path(tmp, "model.pt")
        final.write_bytes(storage.read_bytes(uris[-1]))
        client.log_artifact(run_id, str(final), artifact_path="model")
    client.set_terminated(run_id, "FINISHED")
    metrics = dict(last.get("metrics", {}))
    return {
        "epochs": int(last["epoch"]), "final_loss": metrics.get("loss"), "metrics": metrics,
        "losses": [h["loss"] for h in history], "history": history, "checkpoints": uris,
        "mlflow_run_id": run_id, "mlflow_uri": uri, "batch_plan": dataclasses.asdict(plan),
        "resumed_from": done_before[-1][0] if done_before else 0, "orphans_removed": orphans,
    }
