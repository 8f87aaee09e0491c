"""Score existing result files of any tracker against a benchmark (the API behind ``ocean score``)."""

from __future__ import annotations

from pathlib import Path

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
HEADLINE = {"otb": "success_auc", "lasot": "success_auc", "got10k": "ao", "vot2018": "eao", "vot2019": "eao"}


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


def score_sequences(benchmark: str, sequences: list[Sequence], results_dir: Path) -> dict:
    """Score ``sequences`` with the result files of one tracker in ``results_dir``.

    Returns a JSON-ready dict (all rates are fractions 0..1; VOT robustness is failures per 100 frames):
    OTB/LaSOT ``success_auc``, ``precision``, ``norm_precision``; GOT-10k ``ao``, ``sr50``, ``sr75``;
    VOT ``eao``, ``accuracy``, ``robustness``, ``num_failures``. Always ``benchmark``, ``num_sequences``,
    ``per_sequence`` {name: {...}}, ``curves`` (for plots) and ``rejected`` {name: reason} for sequences
    whose result file is missing or malformed (scored without them; the caller decides).
    """
    family = BENCHMARK_FAMILY[benchmark]
    results_dir = Path(results_dir)
    rejected: dict[str, str] = {}
    per_seq: dict[str, dict] = {}
    out: dict = {"benchmark": benchmark}
    if family == "vot":
        trajs, regions, sizes = {}, {}, {}
        for s in sequences:
            try:
                t = read_vot_result(results_dir, s.name)
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
    elif family == "got10k":
        pooled = []
        fps = []
        for s in sequences:
            try:
                if not s.gt_complete:
                    raise AnnotationError(
                        "only the first GT line exists (GOT-10k test split): submit the result files to the "
                        "evaluation server instead"
                    )
                pred = read_ope_result(results_dir, "got10k", s.name)
                if len(pred) != len(s):
                    raise AnnotationError(f"{len(pred)} result lines for {len(s)} frames")
                ious = got10k_ious(s.gt_xywh, pred, s.image_size, s.present)
            except (OSError, ValueError) as e:
                rejected[s.name] = str(e)
                continue
            pooled.append(ious)
            seq_sum = got10k_summary(ious)
            times = read_got10k_times(results_dir, s.name)
            entry = {k: seq_sum[k] for k in ("ao", "sr50", "sr75")}
            entry["length"] = len(s)
            if times is not None and np.any(times > 0):
                t = times[times > 0]
                entry["speed_fps"] = float(np.mean(1.0 / t))  # got10k toolkit: mean of 1/time
                fps.append(t)
            per_seq[s.name] = entry
        if pooled:
            summary = got10k_summary(np.concatenate(pooled))
            out.update({k: summary[k] for k in ("ao", "sr50", "sr75")})
            out["curves"] = {"success_curve": summary["success_curve"]}
            if fps:
                out["speed_fps"] = float(np.mean(1.0 / np.concatenate(fps)))
    else:
        scores = []
        for s in sequences:
            try:
                pred = read_ope_result(results_dir, family, s.name)
                if len(pred) != len(s):
                    raise AnnotationError(f"{len(pred)} result lines for {len(s)} frames")
            except (OSError, ValueError) as e:
                rejected[s.name] = str(e)
                continue
            # LaSOT: absent frames filtered, full denominator (pysot, ocean_facts §12.2); OTB: all frames
            present = s.present if family == "lasot" else None
            sc = ope_sequence(s.gt_xywh, pred, present, origin=1.0)  # pysot reads 1-based OTB/LaSOT files
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
            out["curves"] = {
                k: summary[k] for k in ("success_curve", "precision_curve", "norm_precision_curve")
            }
    out["num_sequences"] = len(per_seq)
    out["per_sequence"] = per_seq
    out["rejected"] = rejected
    return _jsonable(out)


def score_benchmark(benchmark: str, dataset_root: Path, results_dir: Path) -> dict:
    """Read ``benchmark`` (otb, vot2018, vot2019, got10k, lasot) from ``dataset_root`` (the folder holding
    the sequences: an OTB folder, a VOT ``sequences`` folder, ``GOT-10k/val``, the LaSOT root) and score
    the result files of ONE tracker in ``results_dir`` (layouts in :mod:`ocean.benchmarks.results`).
    See :func:`score_sequences` for the returned keys."""
    if benchmark not in BENCHMARK_FAMILY:
        raise ValueError(f"unknown benchmark {benchmark!r}; one of {list(BENCHMARKS)}")
    return score_sequences(benchmark, read_benchmark(benchmark, Path(dataset_root)), Path(results_dir))
