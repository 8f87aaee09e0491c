"""Evaluation protocols: one-pass (OTB, LaSOT, GOT-10k) and VOT supervised (baseline) runs.

Any object with ``init(image_bgr_uint8, box_xywh) -> None`` and
``track(image_bgr_uint8) -> (box_xywh, score)`` works (:class:`Tracker`); boxes are 0-based pixel
x,y,w,h. Image loading is timed apart from the tracker calls, so ``times_s`` (and the fps computed from
it) is model + tracker time only. :func:`track_sequence` runs the Ocean tracker on one sequence with the
benchmark's protocol and returns plain data (what evaluation and tuning workers ship back).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ocean.benchmarks.readers import BENCHMARK_FAMILY
from ocean.benchmarks.regions import polygon_overlap_continuous, polygon_to_init_box_xywh
from ocean.benchmarks.sequence import Sequence, read_image
from ocean.config import TrackerConfig

# ocean_facts §9.4 / formats.md §2.2: re-initialise this many frames after a failure
VOT_SKIP_FRAMES = 5
# VOT trajectory codes (formats.md §2.2; ocean_facts §12.4)
VOT_INIT, VOT_FAILURE, VOT_SKIPPED = 1, 2, 0


class Tracker(Protocol):
    def init(self, image: np.ndarray, box_xywh: np.ndarray) -> None: ...

    def track(self, image: np.ndarray) -> tuple[np.ndarray, float]: ...


def load_image(path: Path) -> np.ndarray:
    """BGR uint8 image (H, W, 3); FileNotFoundError naming the file when it cannot be read."""
    import cv2

    img = read_image(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img


@dataclass
class OnePassResult:
    """boxes_xywh (N, 4) 0-based; scores (N,) (NaN on frame 0); times_s (N,) tracker seconds per frame
    (frame 0 = init); load_s (N,) image-loading seconds per frame."""

    boxes_xywh: np.ndarray
    scores: np.ndarray
    times_s: np.ndarray
    load_s: np.ndarray

    @property
    def fps(self) -> float:
        """Frames per second of the tracker alone (no image loading)."""
        total = float(np.sum(self.times_s))
        return len(self.times_s) / total if total > 0 else float("inf")


@dataclass
class VotResult:
    """trajectory: N entries, each [1], [2], [0] or a (4,) 0-based x,y,w,h array (VOT result format);
    times_s / load_s: (N,) seconds (0 on skipped frames); num_failures: count of code-2 frames."""

    trajectory: list[np.ndarray]
    times_s: np.ndarray
    load_s: np.ndarray
    num_failures: int

    @property
    def fps(self) -> float:
        ran = self.times_s[self.times_s > 0]
        total = float(np.sum(ran))
        return len(ran) / total if total > 0 else float("inf")


@dataclass(frozen=True)
class Step:
    """What a protocol asks of its tracker next: ``init(image, box)`` when ``box`` is set, else ``track(image)``.

    The protocols below are generators of Steps: whoever drives one (:func:`drive` with one tracker, or
    :mod:`ocean.batch_tracker` with K videos per network forward) sends back, for each Step,
    ``(box_xywh, score, seconds)`` (``box`` / ``score`` None after an init; ``seconds`` the tracker's time).
    """

    image: np.ndarray
    box: np.ndarray | None = None


Answer = tuple[Any, Any, float]  # (box_xywh or None, score or None, tracker seconds)


def drive(steps: Generator[Step, Answer, Any], tracker: Tracker) -> Any:
    """Run a protocol generator with one tracker; returns the generator's result."""
    answer: Answer | None = None
    try:
        while True:
            step = steps.send(answer)  # type: ignore[arg-type]  # the first send is None
            t0 = time.perf_counter()
            if step.box is not None:
                tracker.init(step.image, step.box)
                answer = (None, None, time.perf_counter() - t0)
            else:
                box, score = tracker.track(step.image)
                answer = (box, score, time.perf_counter() - t0)
    except StopIteration as stop:
        return stop.value


def one_pass_steps(seq: Sequence) -> Generator[Step, Answer, OnePassResult]:
    """One-pass evaluation: init on frames[0] with the GT box; the output of frame 0 is that GT box
    (ocean_facts §9.4); every later frame is tracked."""
    n = len(seq)
    boxes = np.zeros((n, 4))
    scores = np.full(n, np.nan)
    times = np.zeros(n)
    loads = np.zeros(n)
    for f, path in enumerate(seq.frames):
        t0 = time.perf_counter()
        img = load_image(path)
        loads[f] = time.perf_counter() - t0
        if f == 0:
            init_box = seq.init_box_xywh
            _, _, times[f] = yield Step(img, init_box.copy())
            boxes[0] = init_box
        else:
            box, score, times[f] = yield Step(img)
            boxes[f] = np.asarray(box, dtype=np.float64).reshape(4)
            scores[f] = float(score)
    return OnePassResult(boxes, scores, times, loads)


def run_one_pass(tracker: Tracker, seq: Sequence) -> OnePassResult:
    """:func:`one_pass_steps` with one tracker."""
    return drive(one_pass_steps(seq), tracker)


def vot_supervised_steps(seq: Sequence) -> Generator[Step, Answer, VotResult]:
    """VOT supervised ("baseline") protocol as the official Ocean test script (ocean_facts §9.4).

    Frame ``start`` (initially 0): init from the GT region (polygon -> box, facts §9.1), write 1. Later
    frames: track; if the shapely overlap (unbounded) with the GT region is exactly 0 write 2 and set
    start = f + 5; the frames in between are written 0 and not loaded.
    """
    regions = seq.vot_regions()
    n = len(seq)
    traj: list[np.ndarray] = []
    times = np.zeros(n)
    loads = np.zeros(n)
    start = 0
    failures = 0
    for f in range(n):
        if f < start:
            traj.append(np.array([VOT_SKIPPED], dtype=np.float64))
            continue
        t0 = time.perf_counter()
        img = load_image(seq.frames[f])
        loads[f] = time.perf_counter() - t0
        if f == start:
            _, _, times[f] = yield Step(img, polygon_to_init_box_xywh(regions[f]))
            traj.append(np.array([VOT_INIT], dtype=np.float64))
        else:
            box, _score, times[f] = yield Step(img)  # the overlap check below is the protocol's, not timed
            box = np.asarray(box, dtype=np.float64).reshape(4)
            if polygon_overlap_continuous(regions[f], box) > 0:
                traj.append(box)
            else:
                traj.append(np.array([VOT_FAILURE], dtype=np.float64))
                failures += 1
                start = f + VOT_SKIP_FRAMES
    return VotResult(traj, times, loads, failures)


def run_vot_supervised(tracker: Tracker, seq: Sequence) -> VotResult:
    """:func:`vot_supervised_steps` with one tracker."""
    return drive(vot_supervised_steps(seq), tracker)


def protocol_steps(benchmark: str, seq: Sequence) -> Generator[Step, Answer, OnePassResult | VotResult]:
    """The benchmark's protocol for ``seq``: VOT supervised for the vot family, else one-pass."""
    return vot_supervised_steps(seq) if BENCHMARK_FAMILY[benchmark] == "vot" else one_pass_steps(seq)


def track_result(r: OnePassResult | VotResult, nonfinite_frames: int) -> dict[str, Any]:
    """A protocol's result as the plain data :func:`track_sequence` returns."""
    if isinstance(r, VotResult):
        out = {
            "trajectory": [np.asarray(t, dtype=np.float64) for t in r.trajectory],
            "num_failures": int(r.num_failures),
        }
    else:
        out = {"boxes_xywh": r.boxes_xywh}
    out["times_s"] = r.times_s
    out["nonfinite_frames"] = int(nonfinite_frames)
    return out


def track_sequence(
    net: Any, tracker_cfg: TrackerConfig, benchmark: str, seq: Sequence, device: str = "cpu"
) -> dict[str, Any]:
    """Run one sequence with the Ocean tracker and the benchmark's protocol (one-pass, or VOT supervised
    for vot*).

    Returns plain data: ``boxes_xywh`` (N, 4) 0-based (one-pass) or ``trajectory`` (VOT entries [1], [2],
    [0] or x,y,w,h), ``times_s`` (N,) tracker seconds per frame (no image loading), ``num_failures``
    (VOT) and ``nonfinite_frames`` (frames whose score map had no finite value).
    """
    from ocean.tracker import OceanTracker  # ocean.tracker imports ocean.benchmarks.regions

    tracker = OceanTracker(net, tracker_cfg, device=device)
    r = drive(protocol_steps(benchmark, seq), tracker)
    return track_result(r, tracker.nonfinite_frames)
