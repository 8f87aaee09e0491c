"""One training rank's input stream: a single Ray Data pipeline for all of its remaining epochs.

pair index -> per epoch this rank's work items (``data_prep.epochs.epoch_share``, ``stream_items``) ->
``ray.data.from_items`` -> ``map_batches(read_and_augment_task)``: read only the items' row groups, decode +
augment (CPU tasks) -> ``iter_batches(batch_size=None)``: each task's output block as it is, order
preserved -> :class:`HeadStart`, which decodes the stream's first few micro-batches in this process while Ray
Data starts its tasks -> :class:`EpochFeed`, which cuts the blocks into micro-batches (one copy each, no Arrow
re-batching) and checks that each belongs to the epoch asked for; a failed decode task comes out as a
TrainingDataError with the task's own cause (:func:`failure_cause`), which the driver finds again behind Ray
Train's wrapper (:func:`training_data_error`). No torch at import: the decode tasks import this module.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import threading
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

log = logging.getLogger(__name__)

# Decode + augment tasks per physical core. With one, every CPU idled ~20 % of the steady state (a task spends
# about a fifth of its life not computing); a second task per core fills those gaps: 1.23x the pairs/s on 2
# cores, the same CPU per pair (BENCHMARKS.md, training input: "Two tasks per CPU").
TASKS_PER_CORE = 2


def data_task_cpus(logical_cpus: float, cores: int) -> float:
    """Logical CPUs a decode task reserves so that :data:`TASKS_PER_CORE` tasks share each physical core of a
    node with ``logical_cpus`` Ray CPUs on ``cores`` cores: 0.5 where Ray counts the cores (a ``ray start``
    node), 1 where the node already counts two logical CPUs per core (``ensure_ray``'s local instance on a
    2-core machine: 4 on 2), within [1 / TASKS_PER_CORE, 1]."""
    return float(min(1.0, max(1.0 / TASKS_PER_CORE, float(logical_cpus) / max(1, int(cores)) / TASKS_PER_CORE)))


def node_task_cpus() -> float:
    """:func:`data_task_cpus` for the machine this process runs on: the Ray CPUs of every alive node at this
    node's address (several ``ray start`` nodes on one machine share its cores, as the test clusters do) and
    the cores this process may use."""
    import os

    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    me = ray.get_runtime_context().get_node_id()
    host = next((n.get("NodeManagerAddress") for n in nodes if n.get("NodeID") == me), None)
    logical = sum(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes if n.get("NodeManagerAddress") == host)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return data_task_cpus(logical or cores, cores)


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
    while Ray Data starts its tasks for the rest (:class:`HeadStart`): the same rows, bit for bit, without
    waiting for Ray's fresh workers to import ``ray.data`` (ray_stack.md §2.8).
    A resumed run starts the stream at its first unfinished epoch. ``idle_sleep_s`` > 0: the scheduling loop,
    which runs in this process, sleeps that long after a quick step that changed nothing instead of spinning
    (:func:`pipelines.raysession.calm_idle_scheduling_loop`; 0 leaves Ray Data's loop as it is). ``data_cpus``:
    the logical CPUs each task reserves; None: two tasks per physical core of this node (:func:`node_task_cpus`).
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


class HeadStart:
    """The blocks of a stream whose first work items are decoded in this process.

    The rest (``remote``, Ray Data's ``iter_batches``) starts at once on a background thread, which asks it for
    its first block: that starts the execution, whose tasks wait for fresh workers to import ``ray.data``
    (1-4 s, ray_stack.md §2.8). Meanwhile a second thread decodes the ``local`` items one after the other
    with :func:`data_prep.epochs.read_and_augment` (OpenCV on one thread, as in the tasks), the function the
    tasks run, so the rows are the same bit for bit; they wait for ``next`` in a queue (at most the first
    item's pairs: ~31 MB for 128 smoke pairs). After the local items the remote blocks follow in order. An
    error on either thread is raised by ``next`` where its block would have been.
    """

    _END = object()

    def __init__(self, local: list[dict[str, Any]], remote: Iterable[dict[str, np.ndarray]],
                 kwargs: dict[str, Any]):
        self._n_local = len(local)
        self.served_locally = 0  # local items handed out so far
        self._decoded: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._remote = iter(remote)
        self._first: Any = self._END
        self._remote_started = False
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._start, name="ocean-stream-start", daemon=True),
                         threading.Thread(target=self._decode, args=(list(local), kwargs),
                                          name="ocean-stream-head", daemon=True)]
        for t in self._threads:
            t.start()

    def _start(self) -> None:
        try:
            self._first = next(self._remote)
        except StopIteration:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised in the consumer, in order
            self._error = exc

    def _decode(self, local: list[dict[str, Any]], kwargs: dict[str, Any]) -> None:
        for item in local:
            if self._stop.is_set():
                return
            try:
                out = read_locally({"epoch": np.array([item["epoch"]]),
                                    "locations": np.array([item["locations"]], dtype=object)}, kwargs)
            except BaseException as exc:  # noqa: BLE001 - raised in the consumer, in order
                self._decoded.put(exc)
                return
            self._decoded.put(out)

    def __iter__(self) -> HeadStart:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.served_locally < self._n_local:
            out = self._decoded.get()
            if isinstance(out, BaseException):
                self._n_local = self.served_locally  # nothing more comes from the local thread
                raise out
            self.served_locally += 1
            return out
        if not self._remote_started:  # the remote part's first block, from the starting thread
            self._remote_started = True
            self._threads[0].join()
            if self._error is not None:
                raise self._error
            if self._first is self._END:
                raise StopIteration
            first, self._first = self._first, self._END
            return first
        return next(self._remote)

    def close(self, wait_s: float = 30.0) -> None:
        """Stop the local decoding, wait for both threads (a generator cannot be closed while it runs), then
        close the remote iterator, which shuts its Ray Data execution down. A remote start still waiting after
        ``wait_s`` (a cluster with no CPU free for the tasks) is left to end with the process: a failing rank
        must not hang on its input stream."""
        self._stop.set()
        for t in self._threads:
            t.join(wait_s)
        if self._threads[0].is_alive():
            log.warning("the input stream's first block is still on its way after %.0f s; leaving it to end "
                        "with the process", wait_s)
            return
        close = getattr(self._remote, "close", None)
        if close is not None:
            close()


def read_locally(batch: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
    """``read_and_augment`` in this process with OpenCV on one thread, as in the stream's tasks (restored
    afterwards: the setting is process-wide)."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return read_and_augment(batch, **kwargs)
    finally:
        cv2.setNumThreads(threads)


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
