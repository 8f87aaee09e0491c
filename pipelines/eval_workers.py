"""The workers of ``ocean evaluate``: :class:`SequenceRunner` tracks (checkpoint, sequence) items, as Ray
actors (:func:`pipelines.eval_actors.run_ray`, which survive lost workers) or in this process
(:func:`run_local`), and returns one :class:`SequenceResult` per item, never raising for a bad sequence or
checkpoint.

A runner loads each checkpoint's model once and keeps the last ``model_cache`` models (a small LRU), so a
worker that takes many sequences of one checkpoint pays the model load once. Items are typed dataclasses
(:class:`WorkItem`); the sequences travel as frame paths.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ocean.benchmarks.protocols import track_sequence
from ocean.benchmarks.sequence import Sequence
from ocean.checkpoint import CheckpointInfo
from ocean.config import TrackerConfig

log = logging.getLogger(__name__)


class ClusterTooSmall(ValueError):
    """The Ray cluster cannot hold one worker of the size asked for."""


@dataclass(frozen=True)
class WorkItem:
    """One (checkpoint, sequence) pair and the tracker hyper-parameters to run it with."""

    checkpoint: str
    benchmark: str
    sequence: Sequence
    tracker: TrackerConfig


@dataclass(frozen=True)
class SequenceResult:
    """What a worker returns for one item: ``track`` is :func:`track_sequence`'s dict (empty on error);
    ``error`` says what failed (None when it ran); ``wall_s`` / ``cpu_s`` the item's seconds in the worker,
    ``load_s`` of them loading the model (``model_loaded``)."""

    checkpoint: str
    benchmark: str
    sequence: str
    worker: str
    node: str | None
    model_loaded: bool = False
    load_s: float = 0.0
    error: str | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    track: dict[str, Any] = field(default_factory=dict)


def work_items(
    infos: Iterable[CheckpointInfo],
    sequences: Mapping[str, list[Sequence]],
    trackers: Mapping[str, Mapping[str, TrackerConfig]],
) -> list[WorkItem]:
    """Checkpoint-major order, longest sequences first inside a checkpoint (load balance at the tail), so
    each worker loads each checkpoint at most once."""
    return [
        WorkItem(i.uri, b, s, trackers[i.uri][b])
        for i in infos
        for b, seqs in sequences.items()
        for s in sorted(seqs, key=lambda s: -len(s))
    ]


class SequenceRunner:
    """Tracks (checkpoint, sequence) items, loading each checkpoint's model once (LRU of ``model_cache``).

    The same class is the Ray actor (``ray.remote(SequenceRunner)``) and the local loop's worker.
    ``threads``: ``torch.set_num_threads`` in this process (1 per worker: two workers on 2 cores must not
    fight over threads, ray_stack.md §2). ``device``: ``"cpu"`` or ``"cuda"`` (the model is loaded there
    with ``map_location``).
    """

    def __init__(
        self, threads: int = 1, device: str = "cpu", model_cache: int = 2, set_threads: bool = True
    ) -> None:
        import torch

        if set_threads:
            torch.set_num_threads(max(1, int(threads)))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("use_gpu: no CUDA device is visible to this worker")
        self.device = device
        self.model_cache = max(1, int(model_cache))
        self._models: OrderedDict[str, Any] = OrderedDict()
        self.loads = 0

    def _model(self, uri: str) -> tuple[Any, float, bool]:
        from ocean.checkpoint import load_model

        if uri in self._models:
            self._models.move_to_end(uri)
            return self._models[uri], 0.0, False
        t0 = time.perf_counter()
        net, _cfg = load_model(uri, map_location=self.device)
        seconds = time.perf_counter() - t0
        self._models[uri] = net
        while len(self._models) > self.model_cache:
            self._models.popitem(last=False)
        self.loads += 1
        return net, seconds, True

    def run(self, item: WorkItem) -> SequenceResult:
        """Track one item; never raises for a bad sequence or checkpoint: ``error`` says what failed."""
        t0 = time.perf_counter()
        c0 = time.process_time()  # this process's CPU seconds (1 torch thread: the tracking's own)
        base = self._base(item)
        loaded, load_s = False, 0.0
        try:
            net, load_s, loaded = self._model(item.checkpoint)
            track = track_sequence(net, item.tracker, item.benchmark, item.sequence, self.device)
        except Exception as exc:  # recorded per sequence; one bad video must not kill the evaluation
            return SequenceResult(
                **base,
                model_loaded=loaded,
                load_s=load_s,
                error=f"{type(exc).__name__}: {exc}",
                wall_s=time.perf_counter() - t0,
                cpu_s=time.process_time() - c0,
            )
        return SequenceResult(
            **base,
            model_loaded=loaded,
            load_s=load_s,
            wall_s=time.perf_counter() - t0,
            cpu_s=time.process_time() - c0,
            track=track,
        )

    def run_batch(self, items: list[WorkItem], batch: int) -> list[SequenceResult]:
        """Track ``items`` ``batch`` at a time in lockstep (:meth:`track_many`); one result per item."""
        results: list[SequenceResult] = []
        self.track_many(items, batch, results.append)
        return results

    def track_many(self, items: Iterable[WorkItem], batch: int, on_result: Callable[[SequenceResult], None]) -> None:
        """Track ``items`` with :func:`ocean.batch_tracker.track_batched`: ``batch`` sequences advance in
        lockstep with one search forward per step, and the next item joins as soon as one ends. Results
        (boxes identical to :meth:`run`'s) come in the order the sequences end; ``wall_s`` / ``cpu_s`` are
        each sequence's own work plus its share of the forwards it took part in, and its model load."""
        from ocean.batch_tracker import BatchJob, track_batched

        meta: dict[int, tuple[WorkItem, bool, float, float]] = {}

        def jobs():
            for i, item in enumerate(items):
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    net, load_s, loaded = self._model(item.checkpoint)
                except Exception as exc:  # recorded per sequence, as run() does
                    on_result(SequenceResult(**self._base(item), error=f"{type(exc).__name__}: {exc}",
                                             wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0))
                    continue
                meta[i] = (item, loaded, load_s, time.process_time() - c0)
                yield BatchJob(i, net, item.tracker, item.benchmark, item.sequence)

        for out in track_batched(jobs(), batch, self.device):
            item, loaded, load_s, load_cpu = meta.pop(out.key)
            error = None if out.error is None else f"{type(out.error).__name__}: {out.error}"
            on_result(SequenceResult(**self._base(item), model_loaded=loaded, load_s=load_s, error=error,
                                     wall_s=out.wall_s + load_s, cpu_s=out.cpu_s + load_cpu,
                                     track=out.track if out.track is not None else {}))

    def _base(self, item: WorkItem) -> dict[str, Any]:
        return {"checkpoint": item.checkpoint, "benchmark": item.benchmark, "sequence": item.sequence.name,
                "worker": self.ping(), "node": _ray_node_id()}

    def ping(self) -> str:
        import socket

        return f"{socket.gethostname()}:{os.getpid()}"


def _ray_node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray; Ray is not imported for that)."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    except Exception:
        return None


def run_local(
    items: list[WorkItem], threads: int, device: str, on_result: Callable[[SequenceResult], None], batch: int = 1
) -> int:
    """The plain loop: one SequenceRunner in this process (torch threads restored afterwards); ``batch`` > 1:
    that many sequences in lockstep, the next joining as one ends (:meth:`SequenceRunner.track_many`)."""
    import torch

    previous = torch.get_num_threads()
    try:
        runner = SequenceRunner(threads, device, set_threads=True)
        if batch > 1:
            runner.track_many(items, batch, on_result)
            return 1
        for item in items:
            on_result(runner.run(item))
        return 1
    finally:
        torch.set_num_threads(previous)


def _fitting_workers(
    total: Mapping[str, float], workers: int, n_items: int, cpus_per_worker: float, gpus_per_worker: float
) -> int:
    """How many of the ``workers`` asked for fit the cluster's CPUs / GPUs (and are worth starting)."""
    fit = int(total.get("CPU", 0) // cpus_per_worker) if cpus_per_worker > 0 else workers
    if fit == 0:
        raise ClusterTooSmall(
            f"the Ray cluster has {total.get('CPU', 0):g} CPUs, fewer than cpus_per_worker={cpus_per_worker:g}"
        )
    if gpus_per_worker > 0:
        fit = min(fit, int(total.get("GPU", 0) // gpus_per_worker))
        if fit == 0:
            raise ClusterTooSmall("use_gpu: the Ray cluster has no GPU")
    n = max(1, min(workers, n_items, fit))
    if n < workers:
        log.warning(
            f"{n} workers (cluster CPUs {total.get('CPU', 0):g} / {cpus_per_worker:g} per worker, "
            f"{n_items} items)",
        )
    return n


def timing(
    results: Iterable[SequenceResult],
    items: list[WorkItem],
    track_seconds: float,
    startup_seconds: float,
    workers: int,
    local: bool,
    device: str,
    *,
    reused: int = 0,
    retried: int = 0,
    lost: int = 0,
    batch: int = 1,
) -> dict[str, Any]:
    """The ``timing`` entry of an evaluation report (``total_seconds`` is added by the driver): ``results``
    of the ``items`` tracked now; ``reused`` stored results, ``retried`` items run again after ``lost``
    worker calls (:mod:`pipelines.eval_actors`); ``batch`` sequences in lockstep per worker."""
    results = list(results)
    n_items = len(items)
    loads = [r for r in results if r.model_loaded]
    return {
        "sequences": n_items + reused,
        "sequences_tracked": n_items,
        "sequences_reused": reused,
        "items_retried": retried,
        "workers_lost": lost,
        "tracking_seconds": round(track_seconds, 3),
        "worker_startup_seconds": round(startup_seconds, 3),
        "sequences_per_second": round(n_items / track_seconds, 4) if track_seconds > 0 else None,
        "frames": int(sum(len(it.sequence) for it in items)),
        "model_loads": len(loads),
        "model_load_seconds": round(sum(r.load_s for r in loads), 3),
        # CPU seconds the workers spent per sequence: unlike seq/s, barely affected by other load
        "cpu_seconds_per_sequence": round(sum(r.cpu_s for r in results) / max(len(results), 1), 4),
        "workers": workers,
        "batch_sequences": int(batch),
        "local": bool(local),
        "device": device,
        "worker_ids": sorted({r.worker for r in results}),
        "node_ids": sorted({r.node for r in results if r.node}),
    }
