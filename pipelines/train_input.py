"""One training rank's input stream: a single Ray Data pipeline for all of its remaining epochs.

pair index -> per epoch this rank's work items (``data_prep.epochs.epoch_share``, ``stream_items``) ->
``ray.data.from_items`` -> ``map_batches(read_and_augment_task)``: read only the items' row groups, decode +
augment (CPU tasks) -> ``iter_batches(batch_size=None)``: each task's output block as it is, order
preserved -> :class:`pipelines.stream_start.HeadStart`, which decodes the stream's first few micro-batches in this process while Ray
Data starts its tasks -> :class:`EpochFeed`, which cuts the blocks into micro-batches (one copy each, no Arrow
re-batching) and checks that each belongs to the epoch asked for; a failed decode task comes out as a
TrainingDataError with the task's own cause (:func:`failure_cause`), which the driver finds again behind Ray
Train's wrapper (:func:`training_data_error`). No torch at import: the decode tasks import this module.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from data_prep.epochs import (
    ITEM_PAIRS,
    BatchPlan,
    EpochShare,
    epoch_share,
    read_and_augment,
    rows_independent,
    stream_items,
)
from data_prep.pair_index import PairIndex, TrainingDataError
from ocean.config import OceanConfig
from pipelines.raysession import IDLE_SCHEDULING_SLEEP_S, calm_idle_scheduling_loop
from pipelines.stream_start import HeadStart, node_task_cpus

log = logging.getLogger(__name__)

def read_and_augment_task(batch: dict[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
    """The stream's ``map_batches`` function: ``data_prep.epochs.read_and_augment`` in a Ray Data task whose
    malloc keeps large buffers in the heap and whose OpenCV runs on one thread."""
    import cv2

    from pipelines.raysession import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()  # decoded 433 px crops and augment buffers are >= 128 KB: no mmap per array
    cv2.setNumThreads(1)  # parallelism comes from the tasks; a Ray worker's OpenCV would run one thread per core
    # (its pthreads pool ignores OMP_NUM_THREADS, ray_stack.md §2.8)
    return read_and_augment(batch, **kwargs)


def pair_stream(index: PairIndex, fs, cfg: OceanConfig, plan: BatchPlan, *, seed: int, rank: int, start: int,
                prefetch: int = 2, data_cpus: float | None = None, item_pairs: int = ITEM_PAIRS,
                idle_sleep_s: float = IDLE_SCHEDULING_SLEEP_S, head_start: bool = True) -> EpochFeed:
    """Build this rank's input pipeline once, for epochs ``start .. cfg.optim.epochs - 1``.

    Ray Data runs over the work items of every remaining epoch (:func:`epoch_share`, :func:`stream_items`):
    ``from_items -> map_batches(read_and_augment_task) (CPU tasks) -> iter_batches(batch_size=None)``, with
    ``prefetch`` micro-batches (in whole work items) fetched ahead. Order is preserved, and every epoch holds a
    whole number of micro-batches, so each batch belongs to one epoch and epochs follow each other without a
    new plan, a file listing or a pipeline start between them. When pairs do not depend on each other
    (:func:`rows_independent`), the stream's first item runs as small pieces so the first batch comes early.
    With ``head_start`` the first item (those pieces, :data:`~data_prep.epochs.START_PIECES`: up to 8
    micro-batches; the whole item when pairs depend on each other) is decoded in this process, on a thread,
    while Ray Data starts its tasks for the rest (:class:`pipelines.stream_start.HeadStart`): the same rows, bit for bit, without
    waiting for Ray's fresh workers to import ``ray.data`` (ray_stack.md §2.8).
    A resumed run starts the stream at its first unfinished epoch. ``idle_sleep_s`` > 0: the scheduling loop,
    which runs in this process, sleeps that long after a quick step that changed nothing instead of spinning
    (:func:`pipelines.raysession.calm_idle_scheduling_loop`; 0 leaves Ray Data's loop as it is). ``data_cpus``:
    the logical CPUs each task reserves; None: two tasks per physical core of this machine (:func:`pipelines.stream_start.node_task_cpus`).
    """
    import ray.data

    shares = [epoch_share(index, cfg.data.pairs_per_epoch, seed, e, rank, plan, item_pairs)
              for e in range(start, cfg.optim.epochs)]
    items = stream_items(index, shares, plan.micro_batch, split_first=rows_independent(cfg.augment))
    if not items:
        return EpochFeed(iter(()), shares, plan)
    if idle_sleep_s > 0:
        calm_idle_scheduling_loop(idle_sleep_s)
    kwargs = {"files": index.files, "digests": index.sha256, "filesystem": fs,
              "augment": dataclasses.asdict(cfg.augment), "seed": seed, "exemplar_size": cfg.model.exemplar_size,
              "search_size": cfg.model.search_size}
    # the first item: its pieces when rows are independent (at most START_PIECES of them), else all of it
    pieces = len(items) - sum(len(s.items) for s in shares) + 1
    local = items[:pieces] if head_start else []
    remote = items[len(local):]
    blocks: Iterable[dict[str, np.ndarray]] = ()
    if remote:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = True  # epoch after epoch, batches never mix two epochs
        ds = ray.data.from_items(remote, override_num_blocks=len(remote))
        cpus = node_task_cpus() if data_cpus is None else float(data_cpus)
        ds = ds.map_batches(read_and_augment_task, batch_size=1, batch_format="numpy", num_cpus=cpus,
                            fn_kwargs=kwargs)
        # each task's block as it is, cut by EpochFeed: no Arrow re-batching in the driver. With batch_size=None
        # Ray Data counts prefetch in blocks and waits for that many before the first (ray_stack.md §2.8): the
        # micro-batches asked for, in whole work items
        ahead = max(1, -(-int(prefetch) * plan.micro_batch // int(item_pairs)))
        blocks = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=ahead)
    if local:
        log.debug("rank %d: the stream's first %d work items are decoded in this process while its tasks start",
                  rank, len(local))
        return EpochFeed(HeadStart(local, blocks, kwargs), shares, plan)
    return EpochFeed(iter(blocks), shares, plan)


# "module.Class: message" lines of a remote traceback: Ray Data's UserCodeException reaches the consumer without
# the exception it wraps; only the text of its RayTaskError carries it (checked with Ray 2.60)
_RAISED = re.compile(r"^((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Invalid)): (.+)$", re.MULTILINE)


def failure_cause(exc: BaseException) -> str:
    """What went wrong behind ``exc``: a :class:`TrainingDataError`'s message when one is behind it
    (:func:`training_data_error`), else the first exception a remote traceback names (Ray Data's wrapper
    says only "UDF failed to process a data block"), else ``exc``'s own first line."""
    found = training_data_error(exc)
    if found is not None:
        return str(found)
    for e in _chain(exc):
        m = _RAISED.search(str(e))
        if m and "UserCodeException" not in m.group(1):
            return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def training_data_error(exc: BaseException | None) -> TrainingDataError | None:
    """A :class:`TrainingDataError` behind ``exc`` -- in its chain, Ray task errors' ``cause``, Ray Train's
    ``WorkerGroupError.worker_failures`` / ``ControllerError.controller_failure``, or named in the text of a
    remote traceback -- as one, else None."""
    for e in _chain(exc):
        if isinstance(e, TrainingDataError):
            return e
        m = re.search(r"^(?:[\w]+\.)*TrainingDataError: (.+)$", str(e), re.MULTILINE)
        if m:
            return TrainingDataError(m.group(1))
    return None


def _chain(exc: BaseException | None) -> list[BaseException]:
    todo, seen, out = [exc], set(), []
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        out.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None)]
        todo += list((getattr(e, "worker_failures", None) or {}).values())
    return out


def cut_micro_batches(blocks: Iterator[dict[str, np.ndarray]], size: int) -> Iterator[dict[str, np.ndarray]]:
    """Rows of ``blocks`` (dicts of equal-length arrays, in order) regrouped into batches of ``size`` rows, in
    the same order; a batch may span blocks, and the last one is shorter when the rows run out. Each batch is
    one new writable copy (``np.concatenate`` of the pieces), so it holds no reference to the blocks (read-only
    object-store memory)."""
    block: dict[str, np.ndarray] = {}
    at = rows = 0
    while True:
        pieces, need = [], size
        while need:
            if at == rows:
                try:
                    block = next(blocks)
                except StopIteration:
                    break
                at, rows = 0, len(next(iter(block.values()))) if block else 0
                continue
            take = min(need, rows - at)
            pieces.append({k: v[at:at + take] for k, v in block.items()})
            at, need = at + take, need - take
        if not pieces:
            return
        yield {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
        if need:
            return


class EpochFeed:
    """Micro-batches of one rank, epoch after epoch, from a single iterator of blocks (:func:`pair_stream`).

    :meth:`next` cuts the blocks into micro-batches (:func:`cut_micro_batches`), checks that every batch belongs
    to the epoch asked for and removes the bookkeeping columns (``epoch``; ``pair_key`` is kept in
    :attr:`last_keys`).
    """

    def __init__(self, blocks, shares: list[EpochShare], plan: BatchPlan):
        self._blocks = blocks
        self._batches = cut_micro_batches(blocks, plan.micro_batch)
        self.shares = {s.epoch: s for s in shares}
        self.plan = plan
        self.last_keys: np.ndarray = np.zeros(0, np.uint64)

    def share(self, epoch: int) -> EpochShare:
        return self.shares[epoch]

    def next(self, epoch: int, step: int) -> dict:
        """The next micro-batch of ``epoch`` (``template``, ``search``, ``search_box``, ``search_shift``,
        ``valid``, ``negative`` CPU tensors)."""
        import torch

        try:
            batch = next(self._batches)
        except StopIteration:
            raise TrainingDataError(f"the input stream ended early at epoch {epoch} step {step}") from None
        except Exception as exc:  # Ray Data's "UDF failed to process a data block": name the cause itself
            raise TrainingDataError(f"the input stream failed at epoch {epoch} step {step}: "
                                    f"{failure_cause(exc)}") from None
        epochs = batch.pop("epoch")
        if len(epochs) != self.plan.micro_batch or bool((epochs != epoch).any()):
            raise TrainingDataError(f"input stream out of step at epoch {epoch} step {step}: got a batch of "
                                    f"{len(epochs)} pairs of epochs {sorted(set(epochs.tolist()))}")
        self.last_keys = batch.pop("pair_key").view(np.uint64)
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def close(self) -> None:
        """Stop the pipeline early (a stopped run, a benchmark): closes the block generator, which shuts
        down its Ray Data execution and prefetch thread."""
        self._batches.close()
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()
        self._blocks = iter(())
        self._batches = cut_micro_batches(self._blocks, self.plan.micro_batch)
