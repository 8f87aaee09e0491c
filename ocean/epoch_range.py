"""Which epochs' checkpoints to evaluate, and which of them is the best: the official epoch choice.

``--epochs`` takes ``N`` (one epoch), ``A-B`` (every epoch from A to B) or ``A-B:S`` (A, A+S, ... up to B);
:func:`parse_epoch_range` reads it, :func:`select_checkpoints` picks those epochs from a run's
``(epoch, uri)`` list and :func:`best_epoch` keeps the highest score, the earliest epoch on a tie. The
official code tests the checkpoints of epochs 30-50 and keeps the one with the highest EAO (facts §11.3,
§11.4); :func:`plot_epoch_curves` draws a score per epoch for several rows in one figure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

OFFICIAL = "30-50"  # the official epoch test window (facts §11.3 step 2)
_FORM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*(?::\s*(\d+)\s*)?)?$")


@dataclass(frozen=True)
class EpochRange:
    """Epochs ``first``, ``first + step``, ... up to ``last`` (``last`` is also the training's length)."""

    first: int
    last: int
    step: int = 1

    @property
    def epochs(self) -> list[int]:
        return list(range(self.first, self.last + 1, self.step))

    @property
    def single(self) -> bool:
        return self.first == self.last

    def __str__(self) -> str:
        if self.single:
            return str(self.first)
        return f"{self.first}-{self.last}" + (f":{self.step}" if self.step != 1 else "")


def parse_epoch_range(text: str | int) -> EpochRange:
    """``"7"`` -> 7 only, ``"30-50"`` -> 30..50, ``"30-50:5"`` -> 30, 35, ..., 50. Epochs count completed
    epochs (``epoch-0030.pt``), so they start at 1. ValueError (one line) for anything else."""
    m = _FORM.match(str(text))
    if not m:
        raise ValueError(f"{text!r}: expected N, A-B or A-B:STEP (whole numbers, e.g. 30-50 or 30-50:5)")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    step = int(m.group(3)) if m.group(3) is not None else 1
    if first < 1:
        raise ValueError(f"{text!r}: epochs start at 1 (the checkpoint after the first epoch)")
    if last < first:
        raise ValueError(f"{text!r}: the range ends before it starts")
    if step < 1:
        raise ValueError(f"{text!r}: the step must be at least 1")
    return EpochRange(first, last, step)


def select_checkpoints(found: Iterable[tuple[int | None, str]], wanted: EpochRange | Sequence[int] | None,
                       ) -> tuple[list[tuple[int, str]], list[int]]:
    """``(the (epoch, uri) pairs of the wanted epochs that are present, oldest first; the wanted epochs
    that are missing)``; ``wanted`` None keeps every pair with an epoch."""
    present = {e: u for e, u in found if e is not None}
    epochs = sorted(present) if wanted is None else (wanted.epochs if isinstance(wanted, EpochRange)
                                                     else sorted(set(wanted)))
    return [(e, present[e]) for e in epochs if e in present], [e for e in epochs if e not in present]


def best_epoch(scores: Mapping[int, float | None]) -> tuple[int, float] | None:
    """``(epoch, score)`` with the highest score (facts §11.3 step 3; the earliest epoch of equal ones, facts
    §11.4); None when no epoch has a finite score."""
    points = [(e, float(v)) for e, v in sorted(scores.items()) if isinstance(v, (int, float)) and v == v]
    if not points:
        return None
    return max(points, key=lambda p: (p[1], -p[0]))


def plot_epoch_curves(curves: Mapping[str, Mapping[int, float]], best: Mapping[str, int | None], ylabel: str,
                      title: str, out_path: Path) -> Path:
    """One line per name (its score against the epoch), its best epoch ringed; written to ``out_path``."""
    from ocean.benchmarks.plots import DPI, PANEL, pyplot

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=PANEL)
    for i, (name, points) in enumerate(curves.items()):
        pts = sorted((e, v) for e, v in points.items() if isinstance(v, (int, float)) and v == v)
        if not pts:
            continue
        color = f"C{i % 10}"
        b = best.get(name)
        bv = dict(pts).get(b) if b is not None else None
        label = name + (f" [best: epoch {b}, {bv:.3f}]" if bv is not None else "")
        ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", color=color, linewidth=1.8, label=label)
        if bv is not None:
            ax.plot([b], [bv], marker="o", markersize=14, markerfacecolor="none", markeredgewidth=2, color=color)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=8, loc="best")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path
