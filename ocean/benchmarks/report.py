"""Report formats of a scored evaluation: the per-sequence CSV, markdown tables, the metrics logged per
checkpoint, ``evaluation.json`` without curves, and the pick of the best checkpoint / the metric-vs-epoch
points. Inputs are :func:`ocean.benchmarks.scoring.score_sequences` dicts; nothing here reads results.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ocean.benchmarks.scoring import HEADLINE, SCORE_KEYS

# How a score is shown wherever a reader compares it: tables, plot legends (3 decimals, as the pysot and got10k
# toolkits print their legends; pysot ``draw_success_precision``, got10k ``ExperimentGOT10k.plot_curves``).
SCORE_DECIMALS = 3


def format_score(value: Any) -> str:
    """A score as tables and plot legends show it (:data:`SCORE_DECIMALS` decimals; ``n/a`` when undefined)."""
    if not isinstance(value, (int, float)) or value != value:  # None, or NaN
        return "n/a"
    return f"{value:.{SCORE_DECIMALS}f}"


# Metrics `ocean score` writes, in table order, plus the VOT failure count.
METRIC_KEYS = (*SCORE_KEYS, "num_failures")
CSV_COLUMNS = [
    "checkpoint",
    "epoch",
    "benchmark",
    "sequence",
    "length",
    "success_auc",
    "precision",
    "norm_precision",
    "ao",
    "sr50",
    "sr75",
    "accuracy",
    "robustness",
    "num_failures",
    "tracker_fps",
    "nonfinite_frames",
    "worker",
    "error",
]


def metrics(scores: Mapping[str, Any]) -> dict[str, float]:
    """The numeric :data:`METRIC_KEYS` of one score dict (undefined ones left out)."""
    return {k: float(scores[k]) for k in METRIC_KEYS if isinstance(scores.get(k), (int, float))}


def sequence_row(
    checkpoint: str,
    epoch: int | None,
    benchmark: str,
    sequence: str,
    length: int,
    scores: Mapping[str, Any],
    track: Mapping[str, Any] | None = None,
    worker: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One CSV row: the sequence's scores, the tracker's own fps (frames it ran, from ``track["times_s"]``),
    non-finite frames, the worker, and the tracking error or else the scorer's rejection reason."""
    track = track or {}
    per = scores["per_sequence"].get(sequence, {})
    times = np.asarray(track.get("times_s", []), dtype=np.float64)
    ran = times[times > 0]
    return {
        "checkpoint": checkpoint,
        "epoch": epoch,
        "benchmark": benchmark,
        "sequence": sequence,
        "length": length,
        **{k: per.get(k) for k in CSV_COLUMNS if k in per and k != "length"},
        "tracker_fps": round(len(ran) / float(ran.sum()), 2) if ran.size and ran.sum() > 0 else None,
        "nonfinite_frames": track.get("nonfinite_frames"),
        "worker": worker,
        "error": error or scores["rejected"].get(sequence),
    }


def per_sequence_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV text with :data:`CSV_COLUMNS` (None as an empty cell)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def summary_table(scores: dict[str, dict]) -> str:
    """Markdown table: one row per tracker (``scores[tracker]`` is a score_benchmark dict), one column
    per metric present in any of them, as :func:`format_score` shows them; robustness is per 100 frames."""
    cols = [c for c in SCORE_KEYS if any(c in s for s in scores.values())]
    lines = ["| tracker | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, s in scores.items():
        cells = []
        for c in cols:
            v = s.get(c)
            cells.append("" if v is None else format_score(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + convention_notes(scores.values())


def convention_notes(scores: Iterable[Mapping[str, Any]]) -> str:
    """Below a table: how each benchmark in it counts frames (the ``convention`` of its score dicts,
    formats.md §2.8), one markdown bullet per benchmark; empty when no score states one."""
    seen: dict[str, str] = {}
    for s in scores:
        if s.get("convention"):
            seen.setdefault(s.get("benchmark", "?"), s["convention"])
    return "".join(f"\n- {b}: {c}" for b, c in seen.items()) + ("\n" if seen else "")


def headline_table(report: Mapping[str, Any]) -> str:
    """Markdown table of an evaluation report: one row per checkpoint and benchmark with its headline
    metric as :func:`format_score` shows it (as the plot legends do; ``n/a`` when undefined) and the number
    of its sequences whose tracking failed (scored: ``sequences``)."""
    lines = ["| checkpoint | epoch | benchmark | sequences | failed | headline | value |",
             "|---|---|---|---|---|---|---|"]
    for uri, per in report["scores"].items():
        info = report["checkpoints"][uri]
        for bench, s in per.items():
            value = s.get(HEADLINE[bench])
            shown = format_score(value)
            lines.append(
                f"| {info['name']} | {info['epoch']} | {bench} | {s['num_sequences']} | {len(s.get('failed') or {})} "
                f"| {HEADLINE[bench]} "
                f"| {shown} |"
            )
    return "\n".join(lines) + "\n" + convention_notes(s for per in report["scores"].values() for s in per.values())


def all_failed(report: Mapping[str, Any]) -> bool:
    """Every (checkpoint, sequence) item of an evaluation report failed, so nothing was scored: ``ocean
    evaluate`` then exits 1 and its MLflow parent run ends FAILED."""
    return bool(report["failed"]) and len(report["failed"]) >= report.get("sequences_total", 0)


def without_curves(report: dict) -> dict:
    """evaluation.json keeps metrics and per-sequence values but not the (long) curves."""
    slim = dict(report)
    slim["scores"] = {
        u: {b: {k: v for k, v in s.items() if k != "curves"} for b, s in per.items()}
        for u, per in report["scores"].items()
    }
    return slim


def best_checkpoint(validation: str, candidates: Iterable[Any], scores: Mapping[str, dict]) -> dict | None:
    """The candidate (``.uri``, ``.name``, ``.epoch``) with the highest headline metric on ``validation``
    (the first of equal values); None when no candidate has a value."""
    metric = HEADLINE[validation]
    ranked = [(scores[c.uri][validation].get(metric), c) for c in candidates]
    ranked = [(v, c) for v, c in ranked if isinstance(v, (int, float))]
    if not ranked:
        return None
    value, best = max(ranked, key=lambda t: t[0])  # first of equal values: candidate order
    return {
        "benchmark": validation,
        "metric": metric,
        "value": float(value),
        "checkpoint": best.uri,
        "name": best.name,
        "epoch": best.epoch,
    }


def epoch_points(
    candidates: Iterable[Any], scores: Mapping[str, dict], benchmarks: Iterable[str]
) -> dict[str, list[tuple[int, float]]]:
    """``{benchmark: [(epoch, headline value), ...]}`` over the candidates with an epoch and a value;
    benchmarks without any point are left out."""
    candidates = list(candidates)
    points = {
        b: [
            (c.epoch, scores[c.uri][b][HEADLINE[b]])
            for c in candidates
            if c.epoch is not None and isinstance(scores[c.uri][b].get(HEADLINE[b]), (int, float))
        ]
        for b in benchmarks
    }
    return {b: p for b, p in points.items() if p}
