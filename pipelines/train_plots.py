"""The training curves of a finished run: drawn from its history and its MLflow metrics, written to
``OUT/plots/`` and logged to the run under ``plots/``."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ocean import storage
from ocean.training_plots import plot_training

log = logging.getLogger("pipelines.train")


def _logged_series(run, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value)]}`` of the run's metrics named ``prefix<name>`` (the last value logged at a
    step wins: a resumed run may have redone some)."""
    client = run.client
    keys = [k for k in client.get_run(run.run_id).data.metrics if k.startswith(prefix)]
    out = {}
    for key in keys:
        by_step = {}
        for m in sorted(client.get_metric_history(run.run_id, key), key=lambda m: (m.step, m.timestamp)):
            by_step[int(m.step)] = float(m.value)
        out[key[len(prefix):]] = sorted(by_step.items())
    return out


def write_training_plots(run, history: Sequence[Mapping], out: str, title: str = "Training") -> list[str]:
    """``OUT/plots/training_loss.png`` and ``training_lr.png`` (:func:`ocean.training_plots.plot_training`)
    from ``history`` and the run's per-step losses and per-group lrs, also logged to ``run`` under ``plots/``.
    Returns the written URIs. A failure here is reported (warning, with the cause) and returns [], so that
    a finished training is never failed by its plots."""
    try:
        steps, groups = {}, {}
        if run is not None:
            steps, groups = _logged_series(run, "step/loss_"), _logged_series(run, "lr/")
        with tempfile.TemporaryDirectory(prefix="ocean-train-plots-") as tmp:
            files = plot_training(history, Path(tmp), steps, groups, title)
            uris = []
            for f in files:
                uri = storage.join(out, "plots", f.name)
                storage.write_bytes(uri, f.read_bytes())
                uris.append(uri)
            if files and run is not None:
                run.log_artifacts(tmp, artifact_path="plots")
        if uris:
            log.info("training plots: %s", ", ".join(uris))
        return uris
    except Exception as exc:  # noqa: BLE001 -- plots are a report; the checkpoints are already written
        log.warning("training plots not written (%s: %s)", type(exc).__name__, exc)
        return []
