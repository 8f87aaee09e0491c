"""Evaluation protocols: one-pass (OTB, LaSOT, GOT-10k) and VOT supervised (baseline) runs.

Any object with ``init(image_bgr_uint8, box_xywh) -> None`` and
``track(image_bgr_uint8) -> (box_xywh, score)`` works (:class:`Tracker`); boxes are 0-based pixel
x,y,w,h. Image loading is timed apart from the tracker calls, so ``times_s`` (and the fps computed from
it) is model + tracker time only. :func:`track_sequence` runs the Ocean tracker on one sequence with the
benchmark's protocol and returns plain data (what evaluation and tuning workers ship back).
"""

from __future__ import annotations

import time
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


def run_one_pass(tracker: Tracker, seq: Sequence) -> OnePassResult:
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
        t1 = time.perf_counter()
        if f == 0:
            init_box = seq.init_box_xywh
            tracker.init(img, init_box.copy())
            boxes[0] = init_box
        else:
            box, score = tracker.track(img)
            boxes[f] = np.asarray(box, dtype=np.float64).reshape(4)
            scores[f] = float(score)
        t2 = time.perf_counter()
        loads[f], times[f] = t1 - t0, t2 - t1
    return OnePassResult(boxes, scores, times, loads)


def run_vot_supervised(tracker: Tracker, seq: Sequence) -> VotResult:
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
        t1 = time.perf_counter()
        if f == start:
            tracker.init(img, polygon_to_init_box_xywh(regions[f]))
            times[f] = time.perf_counter() - t1
            traj.append(np.array([VOT_INIT], dtype=np.float64))
        else:
            box, _score = tracker.track(img)
            times[f] = time.perf_counter() - t1  # the overlap check below is the protocol's, not timed
            box = np.asarray(box, dtype=np.float64).reshape(4)
            if polygon_overlap_continuous(regions[f], box) > 0:
                traj.append(box)
            else:
                traj.append(np.array([VOT_FAILURE], dtype=np.float64))
                failures += 1
                start = f + VOT_SKIP_FRAMES
        loads[f] = t1 - t0
    return VotResult(traj, times, loads, failures)


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
    if BENCHMARK_FAMILY[benchmark] == "vot":
        r = run_vot_supervised(tracker, seq)
        out = {
            "trajectory": [np.asarray(t, dtype=np.float64) for t in r.trajectory],
            "num_failures": int(r.num_failures),
        }
    else:
        r = run_one_pass(tracker, seq)
        out = {"boxes_xywh": r.boxes_xywh}
    out["times_s"] = r.times_s
    out["nonfinite_frames"] = int(tracker.nonfinite_frames)
    return out
