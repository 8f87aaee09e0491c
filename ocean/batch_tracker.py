"""Batched multi-sequence tracking: K videos advance in lockstep, one network forward per step for all.

Each video keeps its own :class:`ocean.tracker.OceanTracker` (state, window, online module) and its own
protocol generator (:func:`ocean.benchmarks.protocols.protocol_steps`); the tracker's steps
(``prepare_template`` / ``prepare_search`` / ``output_maps`` / ``score_to_box``) run per video exactly as in
``OceanTracker.init`` / ``track``, and only the search forward is shared: per step, the search crops of
the videos that track go through one forward against their own stacked template kernels (``OceanNet.track_with``; the depth-wise
correlation pairs kernel row i with search row i); the template branch runs per video (once per start).
Videos with different networks or search sizes S are grouped: one forward per (network, S). A video that
searches several scales (``tracker.scales``, facts §9.6) sends one crop per scale, each row with its kernels.

A video that ends or fails leaves at once and the next job takes its slot for the next step, so the batch
stays full while jobs remain. A batched forward that raises is re-run one video at a time, so a diverged
score map (``FloatingPointError``: the frame keeps its state, as ``OceanTracker.track``) or a failure hits
only its own video. The online module (paper Sec. 4.2) runs per video inside ``score_to_box``; its
classifier is not batched. A network without ``template_kernels`` / ``track_with`` runs its videos one at
a time (``drive``).

Per-frame ``times_s`` and each job's ``wall_s`` / ``cpu_s`` are the video's own work plus an equal share of
each forward it took part in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ocean.benchmarks.protocols import Step, drive, protocol_steps, track_result
from ocean.benchmarks.sequence import Sequence
from ocean.config import TrackerConfig
from ocean.tracker import OceanTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchJob:
    """One video to track: ``key`` comes back with its outcome; ``net`` in eval mode."""

    key: Any
    net: Any
    tracker: TrackerConfig
    benchmark: str
    sequence: Sequence


@dataclass
class BatchOutcome:
    """``track``: :func:`ocean.benchmarks.protocols.track_result`'s dict, or None with ``error`` set."""

    key: Any
    track: dict[str, Any] | None = None
    error: BaseException | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0


def batchable(net: Any) -> bool:
    """Whether ``net`` has the batched tracking contract (``template_kernels`` / ``track_with``)."""
    return callable(getattr(net, "template_kernels", None)) and callable(getattr(net, "track_with", None))


@dataclass
class _Video:
    job: BatchJob
    tracker: OceanTracker
    steps: Any  # the protocol generator
    step: Step | None = None
    kernels: Any = None
    x: torch.Tensor | None = None
    scale_z: float = 0.0
    maps: Any = None
    frame_s: float = 0.0  # this step's tracker seconds (the protocol's times_s)
    answer: Any = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    failed: BaseException | None = field(default=None)


class _Timer:
    """Adds the wall / CPU seconds of a ``with`` block to videos (split equally) and their frame time."""

    def __init__(self, videos: list[_Video]) -> None:
        self.videos = videos

    def __enter__(self) -> _Timer:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        n = max(len(self.videos), 1)
        wall, cpu = (time.perf_counter() - self.t0) / n, (time.process_time() - self.c0) / n
        for v in self.videos:
            v.wall_s += wall
            v.cpu_s += cpu
            v.frame_s += wall


def stack_rows(parts: list[Any]) -> Any:
    """Concatenate along dim 0, leaf by leaf, nested lists / tuples of tensors (template kernels)."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, 0) if len(parts) > 1 else first
    return type(first)(stack_rows([p[i] for p in parts]) for i in range(len(first)))


def take_row(tree: Any, i: int) -> Any:
    """Row ``i`` (kept as a batch of 1) of every tensor in a nested list / tuple / dict (None stays None)."""
    return take_rows(tree, i, i + 1)


def take_rows(tree: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every tensor in a nested list / tuple / dict (None stays None)."""
    if tree is None:
        return None
    if isinstance(tree, torch.Tensor):
        return tree[start:stop]
    if isinstance(tree, dict):
        return {k: take_rows(v, start, stop) for k, v in tree.items()}
    return type(tree)(take_rows(v, start, stop) for v in tree)


def track_batched(jobs: Iterable[BatchJob], batch: int, device: str | torch.device | None = None,
                  ) -> Iterator[BatchOutcome]:
    """Track ``jobs`` ``batch`` at a time (module docstring); yields one outcome per job as it ends."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    pending = iter(jobs)
    active: list[_Video] = []
    warned = False
    while True:
        while len(active) < batch:
            job = next(pending, None)
            if job is None:
                break
            if not batchable(job.net):
                if not warned:
                    log.warning("this network has no batched tracking (template_kernels / track_with): "
                                "its videos run one at a time")
                    warned = True
                yield _sequential(job, device)
                continue
            video, done = _start(job, device)
            if done is not None:
                yield done
            else:
                active.append(video)
        if not active:
            return
        _advance(active)
        still = []
        for v in active:
            done = _next_step(v)
            if done is None:
                still.append(v)
            else:
                yield done
        active = still


def _sequential(job: BatchJob, device: Any) -> BatchOutcome:
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        tracker = OceanTracker(job.net, job.tracker, device=device)
        track = track_result(drive(protocol_steps(job.benchmark, job.sequence), tracker), tracker.nonfinite_frames)
        return BatchOutcome(job.key, track, None, time.perf_counter() - t0, time.process_time() - c0)
    except Exception as exc:  # recorded per video, as the one-at-a-time worker does
        return BatchOutcome(job.key, None, exc, time.perf_counter() - t0, time.process_time() - c0)


def _start(job: BatchJob, device: Any) -> tuple[_Video, BatchOutcome | None]:
    """A new video: its tracker, its protocol, the first step asked (loads frame 0)."""
    video = _Video(job, None, None)  # type: ignore[arg-type]
    with _Timer([video]):
        try:
            video.tracker = OceanTracker(job.net, job.tracker, device=device)
            video.steps = protocol_steps(job.benchmark, job.sequence)
            video.step = next(video.steps)
        except StopIteration as stop:  # an empty sequence
            return video, _outcome(video, stop.value)
        except Exception as exc:
            video.failed = exc
    return video, (_outcome(video) if video.failed is not None else None)


def _advance(active: list[_Video]) -> None:
    """One lockstep step: every video's crop, the shared forwards, every video's own score-to-box."""
    for v in active:
        v.frame_s, v.maps, v.x = 0.0, None, None
        with _Timer([v]):
            try:
                if v.step.box is not None:
                    v.x = v.tracker.prepare_template(v.step.image, v.step.box)
                else:
                    v.x, v.scale_z = v.tracker.prepare_search(v.step.image)
            except Exception as exc:
                v.failed = exc
    ok = [v for v in active if v.failed is None]
    inits = [v for v in ok if v.step.box is not None]
    tracks = [v for v in ok if v.step.box is None]
    for v in inits:
        _template_forward(v)
    for group in _groups(tracks, lambda v: (id(v.job.net), v.tracker.state.search_size)):
        _track_forward(group)
    for v in ok:
        if v.failed is not None:
            continue
        box = score = None
        with _Timer([v]):
            try:
                if v.step.box is not None:
                    v.tracker.start_online(v.step.image, v.step.box)
                else:
                    box, score = v.tracker.score_to_box(v.step.image, v.maps, v.scale_z)
            except Exception as exc:
                v.failed = exc
        v.answer = (box, score, v.frame_s)  # the frame's tracker seconds, score-to-box included


def _groups(videos: list[_Video], key: Any) -> list[list[_Video]]:
    out: dict[Any, list[_Video]] = {}
    for v in videos:
        out.setdefault(key(v), []).append(v)
    return list(out.values())


def _template_forward(v: _Video) -> None:
    """The template branch, one video at a time: it runs once per (re)start, and a batch of templates would
    round differently from one (mkldnn picks its kernels by shape), changing every later frame."""
    with _Timer([v]):
        try:
            with torch.inference_mode():
                v.kernels = v.job.net.template_kernels(v.x)
        except Exception as exc:
            v.failed = exc


def _track_forward(group: list[_Video]) -> None:
    net = group[0].job.net
    # a video's crops are rows of the batch, one per search scale (tracker.scales), each with its kernels
    rows = [len(v.x) for v in group]
    try:
        with _Timer(group), torch.inference_mode():
            out = net.track_with(stack_rows([v.kernels for v, n in zip(group, rows, strict=True) for _ in range(n)]),
                                 torch.cat([v.x for v in group], 0))
    except Exception:
        for v in group:  # one at a time: a diverged map or a failure hits only its own video
            _track_one(net, v)
        return
    start = 0
    for v, n in zip(group, rows, strict=True):
        with _Timer([v]), torch.inference_mode():
            v.maps = v.tracker.output_maps(take_rows(out, start, start + n))
        start += n


def _track_one(net: Any, v: _Video) -> None:
    with _Timer([v]):
        try:
            with torch.inference_mode():
                v.maps = v.tracker.output_maps(net.track_with(v.kernels, v.x))
        except FloatingPointError:  # ocean.model.NonFiniteOutputError: the frame keeps its state (facts §16)
            v.maps = None
        except Exception as exc:
            v.failed = exc


def _next_step(v: _Video) -> BatchOutcome | None:
    """Send the answer, get the next step (loads the next frame); an outcome when the video ended."""
    if v.failed is not None:
        return _outcome(v)
    result = None
    with _Timer([v]):
        try:
            v.step = v.steps.send(v.answer)
        except StopIteration as stop:
            v.step = None
            result = stop.value
        except Exception as exc:
            v.failed = exc
    if v.failed is not None:
        return _outcome(v)
    return _outcome(v, result) if v.step is None else None


def _outcome(v: _Video, result: Any = None) -> BatchOutcome:
    if v.failed is not None or result is None:
        err = v.failed or RuntimeError("the protocol ended without a result")
        return BatchOutcome(v.job.key, None, err, v.wall_s, v.cpu_s)
    track = track_result(result, v.tracker.nonfinite_frames)
    return BatchOutcome(v.job.key, track, None, v.wall_s, v.cpu_s)


def boxes_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute box difference (px) between two :func:`track_result` dicts of one sequence (inf
    when their shapes or VOT codes differ)."""
    if "boxes_xywh" in a or "boxes_xywh" in b:
        x, y = np.asarray(a.get("boxes_xywh")), np.asarray(b.get("boxes_xywh"))
        return float(np.max(np.abs(x - y))) if x.shape == y.shape and x.size else float("inf")
    ta, tb = a.get("trajectory", []), b.get("trajectory", [])
    if len(ta) != len(tb) or any(np.shape(p) != np.shape(q) for p, q in zip(ta, tb, strict=True)):
        return float("inf")
    return max((float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(ta, tb, strict=True)),
               default=0.0)
