"""Training curves (PNG): the losses and the learning rate per epoch from a run's history (the per-epoch
metrics every training checkpoint carries), and the losses per optimizer step where they were logged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ocean.benchmarks import plots
from ocean.benchmarks.plots import PANEL, pyplot

# The loss terms a training step reports (ocean.engine), as history keys and their names on the plots.
LOSS_TERMS = {"loss": "total", "loss_reg": "regression (IoU)", "loss_cls": "classification", "loss_align": "alignment"}


def epoch_series(history: Sequence[Mapping]) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(epoch, value), ...]}`` of the loss terms and ``lr`` in ``history`` (the last entry of an
    epoch wins: a resumed run may have redone one), epochs ascending."""
    by_epoch = {int(h["epoch"]): h for h in history if "epoch" in h}
    out: dict[str, list[tuple[int, float]]] = {}
    for key in (*LOSS_TERMS, "lr"):
        pts = [(e, float(h[key])) for e, h in sorted(by_epoch.items()) if isinstance(h.get(key), (int, float))]
        if pts:
            out[key] = pts
    return out


def plot_training(history: Sequence[Mapping], out_dir: Path,
                  step_losses: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                  group_lrs: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                  title: str = "Training") -> list[Path]:
    """``out_dir/training_loss.png`` (mean loss per epoch, each term; beside it the loss per step when
    ``step_losses`` ``{term: [(global step, value)]}`` is given) and ``out_dir/training_lr.png`` (the
    epoch's base lr, and each parameter group's lr from ``group_lrs`` ``{group: [(epoch, lr)]}``; log
    scale). Returns the files written (none without any epoch)."""
    series = epoch_series(history)
    if not series:
        return []
    plt = pyplot()
    out_dir = Path(out_dir)
    written = []
    steps = {k: sorted(v) for k, v in (step_losses or {}).items() if v}
    panels = 2 if steps else 1
    fig, axes = plt.subplots(1, panels, figsize=(PANEL[0] * panels, PANEL[1]), squeeze=False)
    ax = axes[0][0]
    for key, name in LOSS_TERMS.items():
        if key in series:
            pts = series[key]
            ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", linewidth=2 if key == "loss" else 1.2,
                    label=f"{name} [last {pts[-1][1]:.4f}]")
    ax.set(xlabel="epoch", ylabel="loss (mean over the epoch's steps)", title=f"{title}: loss per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=9)
    if steps:
        ax = axes[0][1]
        for key, pts in steps.items():
            ax.plot([s for s, _ in pts], [v for _, v in pts], linewidth=2 if key == "total" else 1.0,
                    label=LOSS_TERMS.get(f"loss_{key}", key) if key != "total" else "total")
        ax.set(xlabel="optimizer step", ylabel="loss (one step)", title=f"{title}: loss per logged step")
        ax.grid(True, alpha=0.4)
        ax.legend(fontsize=9)
    written.append(plots.save(fig, out_dir / "training_loss.png"))

    fig, ax = plt.subplots(figsize=PANEL)
    if "lr" in series:
        pts = series["lr"]
        ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", linewidth=2, color="black",
                label=f"base lr [last {pts[-1][1]:.3g}]")
    for group, pts in sorted((group_lrs or {}).items()):
        pts = sorted(pts)
        if pts:
            ax.plot([e for e, _ in pts], [v for _, v in pts], marker=".", linewidth=1.2, linestyle="--",
                    label=f"group {group} [last {pts[-1][1]:.3g}]")
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="learning rate (log scale)", title=f"{title}: learning rate per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    written.append(plots.save(fig, out_dir / "training_lr.png"))
    return written
