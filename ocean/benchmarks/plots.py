"""Plots (PNG, matplotlib Agg): success / precision curves of one or more trackers, and a headline
metric against the epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ocean.benchmarks.metrics import GOT10K_PLOT_THRESHOLDS, PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS
from ocean.benchmarks.scoring import HEADLINE


def _save(fig, out_path: Path) -> Path:
    """Write ``fig`` as a PNG (folders created) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path

def _plot(
    curves: dict[str, np.ndarray],
    thresholds: np.ndarray,
    labels: dict[str, str],
    xlabel: str,
    ylabel: str,
    title: str,
    out_path: Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name in sorted(curves, key=lambda n: -float(np.mean(curves[n]))):
        ax.plot(thresholds, curves[name], label=labels[name], linewidth=1.5)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(thresholds[0], thresholds[-1]), ylim=(0, 1.02))
    ax.grid(True, alpha=0.4)
    ax.legend(loc="lower left" if "Success" in title else "lower right", fontsize=8)
    return _save(fig, out_path)


def plot_success(
    curves: dict[str, np.ndarray],
    out_path: Path,
    title: str = "Success plot",
    thresholds: np.ndarray | None = None,
) -> Path:
    """One line per tracker: fraction of frames with IoU > θ; the legend gives the AUC (curve mean).
    ``thresholds`` defaults to the 21 OPE thresholds; pass the 101 GOT-10k ones for that curve."""
    th = SUCCESS_THRESHOLDS if thresholds is None else thresholds
    labels = {n: f"{n} [{np.mean(c):.3f}]" for n, c in curves.items()}
    return _plot(curves, th, labels, "Overlap threshold", "Success rate", title, out_path)


def plot_precision(curves: dict[str, np.ndarray], out_path: Path, title: str = "Precision plot") -> Path:
    """One line per tracker: fraction of frames with centre error <= t px (t = 0..50); the legend gives
    the value at 20 px."""
    labels = {n: f"{n} [{c[20]:.3f}]" for n, c in curves.items()}
    return _plot(
        curves, PRECISION_THRESHOLDS, labels, "Location error threshold (px)", "Precision", title, out_path
    )


def plot_curves(curves_by_name: dict[str, dict], benchmark: str, out_dir: Path, prefix: str = "") -> list[Path]:
    """``out_dir/<prefix>success.png`` and ``<prefix>precision.png`` from the ``curves`` of score dicts
    (one line per name; GOT-10k on its 101 thresholds); none for VOT (no such curves)."""
    out_dir = Path(out_dir)
    written = []
    success = {n: np.asarray(c["success_curve"]) for n, c in curves_by_name.items() if "success_curve" in c}
    if success:
        th = GOT10K_PLOT_THRESHOLDS if benchmark == "got10k" else None
        written.append(
            plot_success(
                success, out_dir / f"{prefix}success.png", f"Success plot ({benchmark})", thresholds=th
            )
        )
    precision = {
        n: np.asarray(c["precision_curve"]) for n, c in curves_by_name.items() if "precision_curve" in c
    }
    if precision:
        written.append(
            plot_precision(precision, out_dir / f"{prefix}precision.png", f"Precision plot ({benchmark})")
        )
    return written


def plot_metric_vs_epoch(
    points: dict[str, list[tuple[int, float]]], out_path: Path, best: dict | None = None
) -> Path:
    """One panel per benchmark: its headline metric against the epoch; the best epoch is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = sorted(points)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        pts = sorted(points[name])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        if best and best["benchmark"] == name:
            ax.axvline(best["epoch"], color="tab:red", linestyle="--", label=f"best epoch {best['epoch']}")
            ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=HEADLINE[name], title=name)
        ax.grid(True, alpha=0.4)
    return _save(fig, out_path)
