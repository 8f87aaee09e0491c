"""Success / precision plots (PNG, matplotlib Agg) and a markdown summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ocean.benchmarks.metrics import PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS
from ocean.benchmarks.scoring import SCORE_KEYS


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
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


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


_COLUMNS = list(SCORE_KEYS)


def summary_table(scores: dict[str, dict]) -> str:
    """Markdown table: one row per tracker (``scores[tracker]`` is a score_benchmark dict), one column
    per metric present in any of them. Fractions printed with 3 decimals; robustness is per 100 frames."""
    cols = [c for c in _COLUMNS if any(c in s for s in scores.values())]
    lines = ["| tracker | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, s in scores.items():
        cells = []
        for c in cols:
            v = s.get(c)
            cells.append("" if v is None else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
