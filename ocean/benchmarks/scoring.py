"""Scoring one tracker on a benchmark: in-memory results (:func:`score_tracks`) or result files
(:func:`score_sequences`, :func:`score_benchmark`, the API behind ``ocean score``), the same numbers and keys."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ocean.benchmarks.metrics import (
    EAO_INTERVALS,
    got10k_ious,
    got10k_summary,
    ope_sequence,
    ope_summary,
    vot_summary,
)
from ocean.benchmarks.readers import BENCHMARK_FAMILY, read_benchmark
from ocean.benchmarks.results import read_got10k_times, read_ope_result, read_vot_result
from ocean.benchmarks.sequence import AnnotationError, Sequence

BENCHMARKS = tuple(BENCHMARK_FAMILY)
# The metrics ``ocean score`` reports, in table order (ocean_facts §12). Rates are fractions in [0, 1];
# VOT robustness is failures per 100 frames.
SCORE_KEYS = ("success_auc", "precision", "norm_precision", "ao", "sr50", "sr75", "eao", "accuracy", "robustness")
# The headline metric of each benchmark: the paper's first number, and what ranks checkpoints and trials.
HEADLINE = {"otb": "success_auc", "lasot": "success_auc", "got10k": "ao", "vot2018": "eao", "vot2019": "eao",
            **{b: "success_auc" for b in ("lasot_ext", "uav123", "uav20l", "uav123_10fps", "dtb70", "nfs", "tnl2k",
                                          "trackingnet")}}
# How each benchmark counts frames, as its own toolkit does (formats.md §2.8); stored beside every score
# (``convention``). "frame 1" is the initialisation frame, whose result line is the GT box itself.
_OPE = "success: 21 IoU thresholds, IoU > t; precision at 20 px; norm. precision at 0.20 (pysot OPE)"
CONVENTIONS = {
    "otb": f"{_OPE}; frame 1 counts; every frame counts, invalid GT boxes as misses",
    "dtb70": f"{_OPE}; frame 1 counts; every frame counts (OTB rules)",
    "uav123": f"{_OPE}; frame 1 counts; NaN GT frames (target out of view) stay in the denominator: "
              "misses for success, hits for precision (pysot / pytracking UAV rules)",
    "lasot": f"{_OPE}; frame 1 counts; absent frames (full_occlusion or out_of_view) are dropped but the "
             "denominator is every frame (LaSOT toolkit / pysot)",
    "nfs": f"{_OPE}; frame 1 counts; every frame counts (30 fps frames)",
    "tnl2k": f"{_OPE}; frame 1 counts; frames whose GT box is empty (w or h <= 0: target absent) are excluded "
             "from numerator and denominator (pytracking / OSTrack TNL2K rules)",
    "trackingnet": f"{_OPE}; frame 1 counts; every frame counts. The TEST split has no GT beyond frame 1: "
                   "its official scores come from the evaluation server (submission zip)",
    "got10k": "AO, SR0.5, SR0.75 over the pooled frames of all sequences; frame 1 excluded; only frames with "
              "cover.label > 0 (visible); boxes clipped to the image (got10k toolkit). The test split is scored "
              "by the evaluation server (submission zip)",
    "vot2018": "supervised (baseline) protocol: EAO over L in [100, 356], accuracy with a 10-frame burn-in "
               "after each (re)initialisation, robustness = failures per 100 frames",
    "vot2019": "supervised (baseline) protocol: EAO over L in [46, 291], accuracy with a 10-frame burn-in "
               "after each (re)initialisation, robustness = failures per 100 frames",
}
CONVENTIONS.update(lasot_ext=CONVENTIONS["lasot"], uav20l=CONVENTIONS["uav123"], uav123_10fps=CONVENTIONS["uav123"])
# One-pass scoring per family: which frames count (None: all; "drop": absent frames left out of the
# numerator only; "exclude": left out of both) and the origin of the GT file pysot's precision quirk sees.
_OPE_RULES = {"otb": (None, 1.0), "uav": (None, 1.0), "lasot": ("drop", 1.0), "nfs": (None, 0.0),
              "tnl2k": ("exclude", 0.0), "trackingnet": (None, 0.0)}
_SERVER = "only the first GT line exists (a test split): submit the result files to the evaluation server instead"


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            out[k] = [float(x) for x in v]
        elif isinstance(v, dict):
            out[k] = _jsonable(v)
        elif isinstance(v, (np.floating, float)):
            out[k] = None if np.isnan(v) else float(v)
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


def score_tracks(
    benchmark: str,
    sequences: list[Sequence],
    tracks: Mapping[str, Any],
    times: Mapping[str, np.ndarray] | None = None,
    *,
    rejected: Mapping[str, str] | None = None,
) -> dict:
    """Score one tracker's in-memory results on ``sequences`` (any subset or prefix of a benchmark).

    ``tracks``: per sequence name, the (N, 4) 0-based x,y,w,h boxes (one-pass benchmarks) or the VOT
    trajectory (entries [1], [2], [0] or regions, 0-based). ``times``: per name, (N,) tracker seconds per
    frame (GOT-10k ``speed_fps``; optional). ``rejected``: sequences the caller already rejected, with the
    reason (e.g. an unreadable result file). A sequence without a track is rejected too.

    Returns a JSON-ready dict (all rates are fractions 0..1; VOT robustness is failures per 100 frames;
    undefined values, such as an EAO with no fragment long enough, are None):
    one-pass benchmarks (OTB, LaSOT, UAV, DTB70, NfS, TNL2K, TrackingNet) ``success_auc``, ``precision``,
    ``norm_precision``; GOT-10k ``ao``, ``sr50``, ``sr75``; VOT ``eao``, ``accuracy``, ``robustness``,
    ``num_failures``. Always ``benchmark``, ``convention`` (how frames are counted, :data:`CONVENTIONS`),
    ``num_sequences``,
    ``per_sequence`` {name: {...}}, ``curves`` (for plots) and ``rejected`` {name: reason} for sequences
    whose result is missing or malformed (scored without them; the caller decides).
    """
    family = BENCHMARK_FAMILY[benchmark]
    score = {"vot": _score_vot, "got10k": _score_got10k}.get(family, _score_ope)
    out, per_seq, refused = score(benchmark, sequences, tracks, times or {}, dict(rejected or {}))
    out = {"benchmark": benchmark, "convention": CONVENTIONS[benchmark], **out}
    out["num_sequences"] = len(per_seq)
    out["per_sequence"] = per_seq
    out["rejected"] = refused
    return _jsonable(out)


def _track(tracks: Mapping[str, Any], given: dict[str, str], seq: Sequence) -> Any:
    """The track of ``seq``; ValueError with the caller's reason, or for a missing track."""
    if seq.name in given:
        raise ValueError(given[seq.name])
    if seq.name not in tracks:
        raise AnnotationError(f"no result for sequence {seq.name}")
    return tracks[seq.name]


def _score_vot(benchmark, sequences, tracks, times, given):
    out: dict = {}
    per_seq: dict = {}
    rejected: dict[str, str] = {}
    trajs, regions, sizes = {}, {}, {}
    for s in sequences:
        try:
            t = _track(tracks, given, s)
            if len(t) != len(s):
                raise AnnotationError(f"{len(t)} result lines for {len(s)} frames")
            trajs[s.name] = t
            regions[s.name] = s.vot_regions()
            sizes[s.name] = s.image_size
        except (OSError, ValueError) as e:
            rejected[s.name] = str(e)
    if trajs:
        summary = vot_summary(trajs, regions, sizes, EAO_INTERVALS[benchmark])
        out.update({k: summary[k] for k in ("eao", "accuracy", "robustness", "num_failures")})
        out["eao_interval"] = list(EAO_INTERVALS[benchmark])
        out["curves"] = {"eao_curve": summary["eao_curve"]}
        per_seq = summary["per_sequence"]
    return out, per_seq, rejected


def _score_got10k(benchmark, sequences, tracks, times, given):
    out: dict = {}
    per_seq: dict = {}
    rejected: dict[str, str] = {}
    pooled = []
    fps = []
    for s in sequences:
        try:
            if not s.gt_complete:
                raise AnnotationError(_SERVER)
            pred = np.asarray(_track(tracks, given, s), dtype=np.float64)
            if len(pred) != len(s):
                raise AnnotationError(f"{len(pred)} result lines for {len(s)} frames")
            ious = got10k_ious(s.gt_xywh, pred, s.image_size, s.present)
        except (OSError, ValueError) as e:
            rejected[s.name] = str(e)
            continue
        pooled.append(ious)
        seq_sum = got10k_summary(ious)
        seq_times = times.get(s.name)
        seq_times = None if seq_times is None else np.asarray(seq_times, dtype=np.float64)
        entry = {k: seq_sum[k] for k in ("ao", "sr50", "sr75")}
        entry["length"] = len(s)
        if seq_times is not None and np.any(seq_times > 0):
            t = seq_times[seq_times > 0]
            entry["speed_fps"] = float(np.mean(1.0 / t))  # got10k toolkit: mean of 1/time
            fps.append(t)
        per_seq[s.name] = entry
    if pooled:
        summary = got10k_summary(np.concatenate(pooled))
        out.update({k: summary[k] for k in ("ao", "sr50", "sr75")})
        out["curves"] = {"success_curve": summary["success_curve"]}
        if fps:
            out["speed_fps"] = float(np.mean(1.0 / np.concatenate(fps)))
    return out, per_seq, rejected


def _score_ope(benchmark, sequences, tracks, times, given):
    family = BENCHMARK_FAMILY[benchmark]
    out: dict = {}
    per_seq: dict = {}
    rejected: dict[str, str] = {}
    scores = []
    frames_rule, origin = _OPE_RULES[family]
    for s in sequences:
        try:
            if not s.gt_complete:
                raise AnnotationError(_SERVER)
            pred = np.asarray(_track(tracks, given, s), dtype=np.float64)
            if len(pred) != len(s):
                raise AnnotationError(f"{len(pred)} result lines for {len(s)} frames")
        except (OSError, ValueError) as e:
            rejected[s.name] = str(e)
            continue
        # LaSOT: absent frames filtered, full denominator (pysot, ocean_facts §12.2); OTB: all frames;
        # TNL2K: absent frames out of the denominator too (CONVENTIONS)
        gt, present = s.gt_xywh, (s.present if frames_rule == "drop" else None)
        if frames_rule == "exclude":
            gt, pred = gt[s.present], pred[s.present]
        sc = ope_sequence(gt, pred, present, origin=origin)  # pysot reads 1-based OTB/LaSOT/UAV files
        scores.append(sc)
        per_seq[s.name] = {
            "success_auc": sc.success_auc,
            "precision": float(sc.precision[20]),
            "norm_precision": float(sc.norm_precision[20]),
            "length": len(s),
        }
    if scores:
        summary = ope_summary(scores)
        out.update({k: summary[k] for k in ("success_auc", "precision", "norm_precision")})
        out["curves"] = {k: summary[k] for k in ("success_curve", "precision_curve", "norm_precision_curve")}
    return out, per_seq, rejected


def score_sequences(benchmark: str, sequences: list[Sequence], results_dir: Path) -> dict:
    """Score ``sequences`` with the result files of one tracker in ``results_dir`` (layouts in
    :mod:`ocean.benchmarks.results`): read them, then :func:`score_tracks` (same keys). A missing or
    malformed file puts its sequence under ``rejected`` with the reason."""
    family = BENCHMARK_FAMILY[benchmark]
    results_dir = Path(results_dir)
    tracks: dict[str, Any] = {}
    times: dict[str, np.ndarray] = {}
    rejected: dict[str, str] = {}
    for s in sequences:
        if not s.gt_complete:
            continue  # a test split: score_tracks rejects it with that reason, before any file
        try:
            if family == "vot":
                tracks[s.name] = read_vot_result(results_dir, s.name)
            else:
                tracks[s.name] = read_ope_result(results_dir, family, s.name)
        except (OSError, ValueError) as e:
            rejected[s.name] = str(e)
            continue
        if family == "got10k" and len(tracks[s.name]) == len(s):  # the time file is read for scored ones
            seq_times = read_got10k_times(results_dir, s.name)
            if seq_times is not None:
                times[s.name] = seq_times
    return score_tracks(benchmark, sequences, tracks, times, rejected=rejected)


def score_benchmark(benchmark: str, dataset_root: Path, results_dir: Path) -> dict:
    """Read ``benchmark`` (a key of :data:`BENCHMARKS`) from ``dataset_root`` (the folder holding the
    sequences: an OTB folder, a VOT ``sequences`` folder, ``GOT-10k/val``, the LaSOT root, ...; a path or
    ``s3://`` URI; see ``ocean score --help``) and score
    the result files of ONE tracker in ``results_dir`` (layouts in :mod:`ocean.benchmarks.results`).
    See :func:`score_sequences` for the returned keys."""
    if benchmark not in BENCHMARK_FAMILY:
        raise ValueError(f"unknown benchmark {benchmark!r}; one of {list(BENCHMARKS)}")
    from ocean.datapath import check_readable_folder

    root = check_readable_folder(str(dataset_root), f"benchmark {benchmark}: root")  # StorageError before any work
    return score_sequences(benchmark, read_benchmark(benchmark, root), Path(results_dir))
