"""Plots (PNG, matplotlib Agg) of scored evaluations: success, precision and normalised-precision curves
(OTB, LaSOT, GOT-10k), the expected-overlap curve and the accuracy-robustness plot (VOT), and a headline
metric against the epoch. Every legend carries the score the tables report, formatted as they format it
(:func:`ocean.benchmarks.report.format_score`), never a value recomputed from the drawn curve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ocean.benchmarks.metrics import (
    EAO_INTERVALS,
    GOT10K_PLOT_THRESHOLDS,
    NORM_PRECISION_THRESHOLDS,
    PRECISION_INDEX,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
)
from ocean.benchmarks.report import format_score
from ocean.benchmarks.scoring import HEADLINE

DPI = 120
PANEL = (6.4, 4.8)  # inches per plot or panel: 768 x 576 px at DPI, readable in MLflow's artifact view
TITLES = {"otb": "OTB-100", "lasot": "LaSOT", "got10k": "GOT-10k val", "vot2018": "VOT2018", "vot2019": "VOT2019",
          "lasot_ext": "LaSOT_ext", "uav123": "UAV123", "uav20l": "UAV20L", "uav123_10fps": "UAV123@10fps",
          "dtb70": "DTB70", "nfs": "NfS (30 fps)", "tnl2k": "TNL2K", "trackingnet": "TrackingNet"}
# Axis and legend names of the metrics (what each number is; rates are fractions, VOT robustness per 100 frames).
METRIC_LABELS = {
    "success_auc": "success AUC",
    "precision": "precision @ 20 px",
    "norm_precision": "norm. precision @ 0.20",
    "ao": "AO (average overlap)",
    "sr50": "SR@0.50",
    "sr75": "SR@0.75",
    "eao": "EAO",
    "accuracy": "accuracy",
    "robustness": "robustness (failures / 100 frames)",
}


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_path: Path) -> Path:
    """Write ``fig`` as a PNG (folders created) and close it."""
    plt = pyplot()
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path


def legend_label(name: str, value: Any) -> str:
    """``name [score]`` with the score as the tables show it."""
    return f"{name} [{format_score(value)}]"


def _ranked(scores: Mapping[str, Any]) -> list[str]:
    """Names by descending score (undefined scores last), as the toolkits order their legends."""
    def key(n):
        v = scores.get(n)
        return -v if isinstance(v, (int, float)) and not math.isnan(v) else math.inf
    return sorted(scores, key=key)


def _curve_plot(curves: Mapping[str, np.ndarray], thresholds: np.ndarray, scores: Mapping[str, Any],
                score_name: str, xlabel: str, ylabel: str, title: str, out_path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=PANEL)
    for name in _ranked({n: scores.get(n) for n in curves}):
        ax.plot(thresholds, np.asarray(curves[name], dtype=np.float64), label=legend_label(name, scores.get(name)),
                linewidth=2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(thresholds[0], thresholds[-1]), ylim=(0, 1.02))
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best", fontsize=9, title=score_name, title_fontsize=9)  # where it hides no curve
    return save(fig, out_path)


def plot_success(curves: dict[str, np.ndarray], out_path: Path, title: str = "Success plot",
                 thresholds: np.ndarray | None = None, scores: Mapping[str, Any] | None = None,
                 score_name: str = "AUC") -> Path:
    """One line per tracker: fraction of frames with IoU > θ (pysot ``draw_success_precision``). The legend
    gives ``scores`` (default: the curve's mean, which is the OPE success AUC); ``thresholds`` defaults to the
    21 OPE thresholds; GOT-10k passes its 101 thresholds with its AO as the score (got10k toolkit
    ``plot_curves``), not the curve's mean."""
    th = SUCCESS_THRESHOLDS if thresholds is None else thresholds
    scores = scores if scores is not None else {n: float(np.mean(c)) for n, c in curves.items()}
    return _curve_plot(curves, th, scores, score_name, "Overlap threshold (IoU)", "Success rate (fraction of frames)",
                       title, out_path)


def plot_precision(curves: dict[str, np.ndarray], out_path: Path, title: str = "Precision plot",
                   scores: Mapping[str, Any] | None = None) -> Path:
    """One line per tracker: fraction of frames with centre error <= t px (t = 0..50); the legend gives the
    value at 20 px (``scores``, default read off the curve; facts §12.1)."""
    scores = scores if scores is not None else {n: float(c[PRECISION_INDEX]) for n, c in curves.items()}
    return _curve_plot(curves, PRECISION_THRESHOLDS, scores, "precision @ 20 px",
                       "Location error threshold (px)", "Precision (fraction of frames)", title, out_path)


def plot_norm_precision(curves: dict[str, np.ndarray], out_path: Path, title: str = "Normalized precision plot",
                        scores: Mapping[str, Any] | None = None) -> Path:
    """One line per tracker: fraction of frames whose centre error, in units of the GT box size, is <= t
    (t = 0..0.50); the legend gives the value at 0.20 (facts §12.2: what pysot's and pytracking's LaSOT plots
    report; ``scores``, default read off the curve)."""
    scores = scores if scores is not None else {n: float(c[PRECISION_INDEX]) for n, c in curves.items()}
    return _curve_plot(curves, NORM_PRECISION_THRESHOLDS, scores, "norm. precision @ 0.20",
                       "Normalized location error threshold (× GT box size)", "Precision (fraction of frames)",
                       title, out_path)


def plot_eao(curves: dict[str, np.ndarray], interval: tuple[int, int], out_path: Path,
             title: str = "Expected average overlap", scores: Mapping[str, Any] | None = None) -> Path:
    """One line per tracker: the expected average overlap Φ(L) against the sequence length L (frames);
    the EAO interval [low, high] shaded and, per tracker, its EAO (``scores``; the mean of Φ over the
    interval, facts §12.4) drawn as a dashed level across it and given in the legend."""
    from ocean.benchmarks.metrics import eao_from_curve

    plt = pyplot()
    lo, hi = interval
    scores = scores if scores is not None else {
        n: eao_from_curve(np.asarray(c, dtype=np.float64), interval) for n, c in curves.items()}
    fig, ax = plt.subplots(figsize=PANEL)
    longest = max(len(np.asarray(c)) for c in curves.values()) - 1 if curves else 0
    reach = f"; Φ ends at L = {longest} (longest sequence)" if longest < hi else ""
    ax.axvspan(lo, hi, color="0.9", zorder=0, label=f"EAO interval [{lo}, {hi}]{reach}")
    for name in _ranked({n: scores.get(n) for n in curves}):
        phi = np.asarray(curves[name], dtype=np.float64)
        lengths = np.arange(len(phi))
        (line,) = ax.plot(lengths[1:], phi[1:], linewidth=2, label=legend_label(name, scores.get(name)))
        eao = scores.get(name)
        if isinstance(eao, (int, float)) and not math.isnan(eao):
            ax.hlines(eao, lo, min(hi, len(phi) - 1), colors=line.get_color(), linestyles="--", linewidth=1.2)
    ax.set(xlabel="Sequence length L (frames)", ylabel="Expected average overlap Φ(L)", title=title,
           xlim=(0, max(longest, hi) * 1.05), ylim=(0, 1.02))
    ax.set_axisbelow(True)
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper right", fontsize=9, title="EAO", title_fontsize=9)
    return save(fig, out_path)


def plot_accuracy_robustness(points: dict[str, tuple[float, float]], out_path: Path,
                             title: str = "Accuracy-robustness", eao: Mapping[str, Any] | None = None) -> Path:
    """One labelled point per tracker: accuracy (mean overlap, y) against robustness (failures per 100
    frames, x, drawn decreasing so that the better trackers sit at the top right, as in the VOT AR plot);
    ``points`` is ``{name: (accuracy, robustness)}``; the legend gives both values (and the EAO if given)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=PANEL)
    eao = eao or {}
    valid = {n: p for n, p in points.items()
             if all(isinstance(v, (int, float)) and not math.isnan(v) for v in p)}  # undefined: not drawn
    worst = max([1.0] + [rob for _, rob in valid.values()])
    seen: dict[tuple[str, str], int] = {}  # points drawn at the same place: their names are stacked
    for name in _ranked({n: (eao.get(n) if eao else valid[n][0]) for n in valid}):
        acc, rob = valid[name]
        extra = f", EAO {format_score(eao[name])}" if name in eao else ""
        ax.plot([rob], [acc], marker="o", markersize=9, linestyle="none", alpha=0.8,
                label=f"{name} [A {format_score(acc)}, R {format_score(rob)}{extra}]")
        where = (format_score(acc), format_score(rob))
        seen[where] = seen.get(where, -1) + 1
        near_right = rob < 0.2 * worst  # label to the left of a point close to the right edge
        ax.annotate(name, (rob, acc), textcoords="offset points", ha="right" if near_right else "left",
                    xytext=(-8 if near_right else 8, 6 + 12 * seen[where]), fontsize=9)
    ax.set(xlabel="Robustness: failures per 100 frames (fewer to the right)", ylabel="Accuracy (mean overlap)",
           title=title, xlim=(worst * 1.15, 0), ylim=(-0.03, 1.02))
    ax.grid(True, alpha=0.4)
    if valid:
        ax.legend(loc="best", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no tracker has a defined accuracy and robustness", ha="center", transform=ax.transAxes)
    return save(fig, out_path)


def plot_curves(scores_by_name: Mapping[str, Mapping[str, Any]], benchmark: str, out_dir: Path,
                prefix: str = "", dataset: str | None = None) -> list[Path]:
    """The plots of one benchmark for one or more trackers, from :func:`ocean.benchmarks.scoring.score_tracks`
    dicts (their ``curves`` and scores; the legends give the dicts' own scores) -> ``out_dir/<prefix>NAME.png``:
    OTB / LaSOT ``success``, ``precision``, ``norm_precision``; GOT-10k ``success`` (101 thresholds, AO in
    the legend); VOT ``eao_curve`` and ``accuracy_robustness``. Trackers without curves are left out.
    ``dataset`` names the data in the titles when it is not the benchmark itself (data in the benchmark's
    layout: the quickstart's synthetic sets, the held-out scenes); default the benchmark's own name."""
    out_dir = Path(out_dir)
    bench = dataset or TITLES.get(benchmark, benchmark)
    has = {n: s for n, s in scores_by_name.items() if s.get("curves")}

    def pick(curve: str, score: str) -> tuple[dict, dict]:
        names = [n for n, s in has.items() if s["curves"].get(curve) is not None]
        return {n: np.asarray(has[n]["curves"][curve], dtype=np.float64) for n in names}, \
            {n: has[n].get(score) for n in names}

    written = []
    if benchmark.startswith("vot"):
        curves, eao = pick("eao_curve", "eao")
        interval = next((tuple(has[n]["eao_interval"]) for n in curves if has[n].get("eao_interval")),
                        EAO_INTERVALS.get(benchmark))
        if curves and interval:
            written.append(plot_eao(curves, interval, out_dir / f"{prefix}eao_curve.png",
                                    f"Expected average overlap on {bench}", eao))
        points = {n: (s.get("accuracy"), s.get("robustness")) for n, s in has.items()}
        if points:
            written.append(plot_accuracy_robustness(points, out_dir / f"{prefix}accuracy_robustness.png",
                                                    f"Accuracy-robustness on {bench} (better: top right)",
                                                    {n: s.get("eao") for n, s in has.items()}))
        return written
    curves, score = pick("success_curve", "ao" if benchmark == "got10k" else "success_auc")
    if curves:
        th = GOT10K_PLOT_THRESHOLDS if benchmark == "got10k" else None
        what = f"Success plot on {bench}" if benchmark == "got10k" else f"Success plot of OPE on {bench}"
        written.append(plot_success(curves, out_dir / f"{prefix}success.png", what,
                                    th, score, "AO" if benchmark == "got10k" else "AUC"))
    curves, score = pick("precision_curve", "precision")
    if curves:
        written.append(plot_precision(curves, out_dir / f"{prefix}precision.png",
                                      f"Precision plot of OPE on {bench}", score))
    curves, score = pick("norm_precision_curve", "norm_precision")
    if curves:
        written.append(plot_norm_precision(curves, out_dir / f"{prefix}norm_precision.png",
                                           f"Normalized precision plot of OPE on {bench}", score))
    return written


def plot_metric_vs_epoch(points: dict[str, list[tuple[int, float]]], out_path: Path, best: dict | None = None,
                         titles: Mapping[str, str] | None = None) -> Path:
    """One panel per benchmark (two per row): its headline metric against the epoch, each point labelled
    with its value. Measured epochs (>= 1) are joined by a line; epoch 0 (the untrained model) is a
    separate marker and a dotted baseline, never joined to the first measured epoch (no trend is drawn that
    was not measured). The best epoch is marked. ``titles``: ``{benchmark: the data's name}`` for panels of
    data that is not the benchmark itself, as ``plot_curves``'s ``dataset``."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    names = sorted(points)
    cols = min(2, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL[0] * cols, PANEL[1] * 0.85 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        metric = HEADLINE[name]
        pts = sorted(points[name])
        base = [v for e, v in pts if e == 0]
        trained = [(e, v) for e, v in pts if e != 0]
        if base:
            ax.axhline(base[-1], color="0.45", linestyle=":", linewidth=1.5,
                       label=f"untrained (epoch 0) [{format_score(base[-1])}]")
            ax.plot([0], [base[-1]], marker="s", color="0.45", linestyle="none")
        if trained:
            ax.plot([e for e, _ in trained], [v for _, v in trained], marker="o", color="tab:blue", linewidth=2,
                    label=f"trained, last epoch {trained[-1][0]} [{format_score(trained[-1][1])}]")
        for e, v in pts:
            ax.annotate(format_score(v), (e, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
        if best and best["benchmark"] == name and best.get("epoch") is not None:
            ax.axvline(best["epoch"], color="tab:red", linestyle="--",
                       label=f"best epoch {best['epoch']} [{format_score(best['value'])}]")
        epochs = [e for e, _ in pts]
        pad = max(0.5, 0.07 * (max(epochs) - min(epochs)))  # room for the value labels at both ends
        ax.set_xlim(min(epochs) - pad, max(epochs) + pad)
        values = [v for _, v in pts]
        top = max(values) if values else 1.0
        ax.set_ylim(0, max(top * 1.5, 0.05))  # room above the points for their values and the legend
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        label = METRIC_LABELS.get(metric, metric)
        ax.set(xlabel="epoch", ylabel=label, title=f"{(titles or {}).get(name) or TITLES.get(name, name)}: {label}")
        ax.grid(True, alpha=0.4)
        ax.legend(fontsize=9, loc="upper left")
    fig.suptitle("Headline metric per checkpoint epoch")
    return save(fig, out_path)
