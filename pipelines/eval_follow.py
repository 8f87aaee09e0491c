"""``ocean evaluate --run RUN --follow``: evaluate a training run's checkpoints as they appear.

:func:`follow_run` polls: it reads the run's MLflow status, then lists its checkpoints
(:func:`pipelines.eval_lineage.checkpoints_of_run`; while training is going, the files under its output
folder). When checkpoints of the requested epochs appeared, a round evaluates the new ones into OUT (each
checkpoint's own ``OUT/<checkpoint>/`` files; its headline scores are logged) and logs nothing to MLflow.
The last round evaluates every checkpoint listed, reusing the stored sequences (:mod:`pipelines.eval_store`:
only what no round tracked is tracked), so OUT's summary, ``evaluation.json`` and ``metric_vs_epoch.png``
cover all of them, and logs the MLflow evaluation (and registers the best checkpoint) once, as a plain
``ocean evaluate --run`` would. Following stops when the run is no longer
RUNNING (after one more listing), when every requested epoch -- without ``--epochs``, the run's last
epoch (its ``optim.epochs`` param) -- has been evaluated, when no new checkpoint appeared for ``idle_s``
seconds (a training killed hard leaves its run RUNNING), or on Ctrl-C while waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ocean.benchmarks.report import format_score
from ocean.benchmarks.scoring import HEADLINE
from pipelines.eval_lineage import LineageError, NoCheckpointYet, checkpoints_of_run
from pipelines.evaluate import EvaluateSettings, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FollowSettings:
    """Follow training run ``run_id`` in the MLflow store ``mlflow_uri``: evaluate ``epochs`` (None: every
    epoch) as they appear, listing every ``poll_s`` seconds; stop after ``idle_s`` seconds without a new
    checkpoint (None: wait while the run is RUNNING)."""

    mlflow_uri: str
    run_id: str
    epochs: Sequence[int] | None = None
    poll_s: float = 30.0
    idle_s: float | None = 7200.0


@dataclass
class _State:
    rounds: list[dict[str, Any]] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)


def follow_run(fs: FollowSettings, template: EvaluateSettings, *, evaluate_fn: Callable | None = None,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
               ) -> dict[str, Any]:
    """Evaluate run ``fs.run_id``'s checkpoints as they appear (``template``: the evaluation, its
    ``checkpoints`` ignored). Returns the last round's ``evaluate`` report plus ``follow``: ``rounds`` (per
    round the epochs evaluated and the new ones), ``stopped`` (ended / complete / idle / interrupted),
    ``missing`` (requested epochs that never appeared). LineageError for an unknown run, or when it stops
    without any checkpoint."""
    st, last_new, evaluate_fn = _State(), clock(), evaluate_fn or evaluate
    while True:
        status, last_epoch = _run_state(fs)
        pairs = _listing(fs)
        epochs = [e for e, _ in pairs]
        new = [e for e in epochs if e not in st.evaluated]
        wanted = list(fs.epochs) if fs.epochs is not None else ([last_epoch] if last_epoch else [])
        reason = ("ended" if status != "RUNNING" else
                  "complete" if wanted and set(wanted) <= set(epochs) else None)
        if reason is None and new:
            _round(fs, template, pairs, new, st, evaluate_fn, final=False)
            last_new = clock()
            log.info(f"run {fs.run_id}: epochs {epochs} evaluated; waiting for "
                     + (f"epochs {sorted(set(wanted) - set(epochs))}" if wanted else "new checkpoints")
                     + f" (every {fs.poll_s:g} s while the run is RUNNING)")
        if reason is None and fs.idle_s is not None and clock() - last_new > fs.idle_s:
            reason = "idle"
            log.warning(f"run {fs.run_id}: no new checkpoint for {fs.idle_s:g} s while it is still RUNNING; "
                        "stopping (--follow-idle to wait longer)")
        if reason is None:
            try:
                sleep(fs.poll_s)
                continue
            except KeyboardInterrupt:
                reason = "interrupted"
                log.warning(f"run {fs.run_id}: interrupted; finishing with the checkpoints evaluated so far")
                pairs = [(e, u) for e, u in pairs if e in st.evaluated]
        if not pairs:
            raise LineageError(f"--run {fs.run_id}: stopped following ({reason}) before any checkpoint appeared")
        report = _round(fs, template, pairs, new if reason != "interrupted" else [], st, evaluate_fn, final=True)
        missing = sorted(set(fs.epochs or ()) - set(e for e, _ in pairs))
        if missing:
            log.warning(f"run {fs.run_id}: epochs {missing} never appeared (stopped: {reason})")
        return {**report, "follow": {"rounds": st.rounds, "stopped": reason, "missing": missing}}


def _round(fs: FollowSettings, template: EvaluateSettings, pairs: list[tuple[int, str]], new: list[int],
           st: _State, evaluate_fn: Callable, *, final: bool) -> dict[str, Any]:
    """A round: the ``new`` epochs of ``pairs`` without MLflow, or (``final``) every one of ``pairs``, the
    stored sequences reused, with MLflow and the registry as the template says."""
    todo = pairs if final else [(e, u) for e, u in pairs if e in new]
    log.info(f"run {fs.run_id}: {'last round' if final else 'round'} {len(st.rounds) + 1}: epochs "
             f"{[e for e, _ in todo]} ({len(new)} new)")
    settings = dataclasses.replace(
        template, checkpoints=[u for _, u in todo], resume=template.resume or bool(st.rounds),
        **({} if final else {"log_mlflow": False, "register_name": None}))
    report = evaluate_fn(settings)
    st.rounds.append({"epochs": [e for e, _ in todo], "new": list(new), "final": final})
    st.evaluated = sorted(set(st.evaluated) | {e for e, _ in todo})
    if not final:
        for e, u in todo:
            scores = (report.get("scores") or {}).get(u, {})
            log.info(f"epoch {e}: " + ", ".join(f"{b} {HEADLINE[b]} {format_score(sc.get(HEADLINE[b]))}"
                                                 for b, sc in scores.items() if b in HEADLINE))
    return report


def _run_state(fs: FollowSettings) -> tuple[str, int | None]:
    """``(MLflow status, the run's last epoch from its optim.epochs param or None)``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient(tracking_uri=fs.mlflow_uri).get_run(fs.run_id)
    except MlflowException as exc:
        raise LineageError(f"--run {fs.run_id}: no such MLflow run ({str(exc).splitlines()[0]})") from None
    try:
        last = int(run.data.params.get("optim.epochs", ""))
    except ValueError:
        last = None
    return run.info.status, last


def _listing(fs: FollowSettings) -> list[tuple[int, str]]:
    """The run's checkpoints of the requested epochs present now, oldest first ([] before the first)."""
    try:
        pairs = checkpoints_of_run(fs.mlflow_uri, fs.run_id)
    except NoCheckpointYet:
        return []
    wanted = None if fs.epochs is None else set(fs.epochs)
    return [(e, u) for e, u in pairs if e is not None and (wanted is None or e in wanted)]
