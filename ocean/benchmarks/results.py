"""Result files in each toolkit's own format (formats.md §2; ocean_facts §9.2 item 9).

``tracker_dir`` is the folder of ONE tracker (``results/<tracker>``). OTB, DTB70, UAV123 and LaSOT files are
**1-based** (as the pysot / OTB toolkits and Ocean write them, like their ground truth), GOT-10k and VOT files
**0-based**, NfS, TNL2K and TrackingNet files in the ground truth's own coordinates, unshifted; writers take and
readers return 0-based boxes, and the +1 / -1 happens only here. The layouts: :func:`ope_result_path`
(OTB, LaSOT, GOT-10k) and :func:`vot_result_path`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ocean.benchmarks.readers import BENCHMARK_FAMILY, read_numeric_lines
from ocean.benchmarks.sequence import AnnotationError

ONE_BASED = {"otb": True, "lasot": True, "uav": True, "got10k": False, "vot": False, "nfs": False, "tnl2k": False,
             "trackingnet": False}
# families whose one-pass result is one flat ``<tracker>/<seq>.txt`` per sequence (formats.md §2)
FLAT_FAMILIES = ("otb", "lasot", "uav", "nfs", "tnl2k", "trackingnet")
_SHIFT = np.array([1.0, 1.0, 0.0, 0.0])


def _fmt(values: np.ndarray) -> str:
    return ",".join(f"{float(v):.4f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v)) for v in values)


def _write_lines(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(_fmt(np.asarray(r).ravel()) + "\n" for r in rows))
    return path


def ope_result_path(tracker_dir: Path, family: str, seq_name: str) -> Path:
    """Where the one-pass result of ``seq_name`` lives for a one-pass ``family``.

    OTB, LaSOT, UAV, NfS, TNL2K, TrackingNet: ``<tracker>/<seq>.txt``, x,y,w,h (+1 on x, y where
    :data:`ONE_BASED`). GOT-10k:
    ``<tracker>/<seq>/<seq>_001.txt``, x,y,w,h **0-based**, beside ``<tracker>/<seq>/<seq>_time.txt``,
    seconds per frame (the evaluation server's layout).
    """
    tracker_dir = Path(tracker_dir)
    if family in FLAT_FAMILIES:
        return tracker_dir / f"{seq_name}.txt"
    if family == "got10k":
        return tracker_dir / seq_name / f"{seq_name}_001.txt"
    raise ValueError(f"no one-pass result layout for {family!r}")


def write_ope_result(
    tracker_dir: Path, family: str, seq_name: str, boxes_xywh: np.ndarray, times_s: np.ndarray | None = None
) -> Path:
    """Write (N, 4) 0-based boxes in ``family``'s layout (+1 to x, y where :data:`ONE_BASED`); GOT-10k also writes
    ``<seq>_time.txt`` when ``times_s`` (N,) is given. Returns the box file path."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    if ONE_BASED[family]:
        boxes = boxes + _SHIFT
    path = _write_lines(ope_result_path(tracker_dir, family, seq_name), boxes)
    if family == "got10k" and times_s is not None:
        t = np.asarray(times_s, dtype=np.float64).ravel()
        (path.parent / f"{seq_name}_time.txt").write_text("".join(f"{v:.8f}\n" for v in t))
    return path


def read_ope_result(tracker_dir: Path, family: str, seq_name: str) -> np.ndarray:
    """(N, 4) 0-based boxes of one sequence; commas, tabs or spaces accepted (published raw results
    use all three). AnnotationError naming file and line when malformed; FileNotFoundError if absent."""
    path = ope_result_path(tracker_dir, family, seq_name)
    if not path.is_file():
        raise FileNotFoundError(f"no result file {path}")
    rows = read_numeric_lines(path, (4,))
    if not rows:
        raise AnnotationError(f"{path}: empty result file")
    boxes = np.stack(rows)
    return boxes - _SHIFT if ONE_BASED[family] else boxes


def read_got10k_times(tracker_dir: Path, seq_name: str) -> np.ndarray | None:
    """(N,) seconds per frame from ``<seq>_time.txt`` (first column when several runs), or None."""
    path = Path(tracker_dir) / seq_name / f"{seq_name}_time.txt"
    if not path.is_file():
        return None
    rows = read_numeric_lines(path, tuple(range(1, 100)))
    return np.array([r[0] for r in rows])


def vot_result_path(tracker_dir: Path, seq_name: str) -> Path:
    """``<tracker>/baseline/<seq>/<seq>_001.txt``; ``tracker_dir`` may also be the ``baseline`` folder.

    One line per frame: ``1`` init, ``2`` failure, ``0`` skipped, else x,y,w,h (or a polygon), **0-based**.
    """
    tracker_dir = Path(tracker_dir)
    base = tracker_dir if tracker_dir.name == "baseline" else tracker_dir / "baseline"
    return base / seq_name / f"{seq_name}_001.txt"


def write_vot_result(tracker_dir: Path, seq_name: str, trajectory: list[np.ndarray]) -> Path:
    """Write a VOT trajectory: entries [1]/[2]/[0] or 0-based x,y,w,h (or polygon) arrays."""
    return _write_lines(vot_result_path(tracker_dir, seq_name), trajectory)


def read_vot_result(tracker_dir: Path, seq_name: str) -> list[np.ndarray]:
    """Trajectory of one sequence: (1,) code arrays (only 0, 1, 2 allowed) or (4,)/(8,) regions."""
    path = vot_result_path(tracker_dir, seq_name)
    if not path.is_file():
        raise FileNotFoundError(f"no result file {path}")
    rows = read_numeric_lines(path, (1, 4, 6, 8))
    for i, r in enumerate(rows):
        if r.size == 1 and r[0] not in (0.0, 1.0, 2.0):
            raise AnnotationError(f"{path}: record {i + 1} is the code {r[0]:g}; only 0, 1, 2 exist")
    return rows


def write_track(tracker_dir: Path, benchmark: str, seq_name: str, track: dict) -> Path:
    """Write one :func:`ocean.benchmarks.protocols.track_sequence` result (``boxes_xywh`` or
    ``trajectory``) in ``benchmark``'s layout; GOT-10k also gets its ``times_s`` file."""
    family = BENCHMARK_FAMILY[benchmark]
    if family == "vot":
        return write_vot_result(tracker_dir, seq_name, track["trajectory"])
    times = track["times_s"] if family == "got10k" else None
    return write_ope_result(tracker_dir, family, seq_name, track["boxes_xywh"], times)
