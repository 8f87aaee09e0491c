"""The Ray Tune trial of ``ocean ablate``: one training and the evaluation of each row that shares it.

``Tuner(TorchTrainer(...))`` fails under Train V2 (ray_stack.md §5), so the trial is a Tune FUNCTION
trainable (reserving 0.1 CPU: it only drives) that calls :func:`pipelines.train.train` -- which builds and
fits its own ``TorchTrainer`` -- and then :func:`pipelines.evaluate.evaluate` on the final checkpoint once
per row. ``train()`` takes no Ray Train callbacks, so the trial reports once, at the end (the rows'
scores); per-epoch metrics go to MLflow from rank 0 as for every training. Each row's MLflow run (created
on the driver) gets its status, scores and links; the training and evaluation runs are nested under it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ocean import storage
from ocean.ablation import TrainingGroup, slug
from ocean.benchmarks.scoring import HEADLINE
from pipelines.tracking import RunLogger


@dataclass(frozen=True)
class AblationTrialSettings:
    """What every trial of an ablation grid needs (sent once through Ray's object store).

    ``groups``: the trainings by name; ``tracker_overrides`` and ``row_runs``: per row name, its tracker
    overrides (evaluation) and its MLflow run; ``primary``: the benchmark whose headline score a trial
    reports to Tune. The rest are the :class:`pipelines.ablate.AblateSettings` fields of the same names.
    """

    groups: dict[str, TrainingGroup]
    tracker_overrides: dict[str, list[str]]
    row_runs: dict[str, RunLogger]
    primary: str
    data: str
    out: str
    benchmarks: dict[str, str]
    workers: int
    use_gpu: bool
    seed: int
    max_sequences: int | None
    mlflow_uri: str
    experiment: str
    verbose: bool


def ablation_trial(config: dict[str, Any], *, settings: AblationTrialSettings) -> None:
    """Tune function trainable: one training (``pipelines.train.train``, its own TorchTrainer) and one
    evaluation per row of the group ``config["group"]``; reports the rows' scores once at the end."""
    from ray import tune

    from pipelines.console import worker_logging
    from pipelines.train import TrainSettings, train

    s = settings
    t0 = time.time()
    name = config["group"]
    worker_logging(f"trial {name}")  # this trial's and its training's records on the driver's console
    group = s.groups[name]
    runs = s.row_runs
    rows_out: dict[str, dict[str, Any]] = {}
    current = list(group.rows)
    try:
        for row in current:
            runs[row].set_tags({"ocean.ablate.status": "training"})
        res = train(TrainSettings(s.data, storage.join(s.out, "train", slug(name)), group.cfg, workers=s.workers,
                                  use_gpu=s.use_gpu, seed=s.seed, mlflow_uri=s.mlflow_uri, experiment=s.experiment,
                                  run_name=f"ablate-{slug(name)}-train", verbose=s.verbose))
        RunLogger.attach(s.mlflow_uri, res["mlflow_run_id"]).set_tags({"mlflow.parentRunId": runs[current[0]].run_id})
        checkpoint = res["checkpoints"][-1]
        for row in current:
            rows_out[row] = _evaluate_row(s, row, res, checkpoint)
    except BaseException as exc:
        for row in current:
            if row not in rows_out:
                try:
                    runs[row].set_tags({"ocean.ablate.status": "failed"})
                    runs[row].fail(exc)
                except Exception:  # pragma: no cover - MLflow unreachable: the Tune error still says why
                    pass
        raise
    first = rows_out[current[0]]["scores"].get(s.primary, {}).get(HEADLINE[s.primary])
    tune.report({"score": float(first) if first is not None else float("nan"), "rows": rows_out,
                 "trial_wall_s": time.time() - t0})


def _evaluate_row(s: AblationTrialSettings, row: str, res: Mapping[str, Any], checkpoint: str) -> dict[str, Any]:
    """Evaluate ``checkpoint`` with ``row``'s tracker overrides; the row's run gets its scores and links."""
    from ocean.benchmarks.report import METRIC_KEYS
    from pipelines.evaluate import EvaluateSettings, evaluate

    run = s.row_runs[row]
    run.set_tags({"ocean.ablate.status": "evaluating"})
    ev = evaluate(EvaluateSettings([checkpoint], s.benchmarks, storage.join(s.out, "eval", slug(row)),
                                   tracker_overrides=s.tracker_overrides[row], workers=s.workers,
                                   use_gpu=s.use_gpu, mlflow_uri=s.mlflow_uri, max_sequences=s.max_sequences,
                                   experiment=s.experiment, run_name=f"ablate-{slug(row)}-eval",
                                   training_run_id=res["mlflow_run_id"], progress=s.verbose))
    scores = {b: {k: float(v) for k, v in sc.items() if k in METRIC_KEYS and isinstance(v, (int, float)) and v == v}
              for b, sc in ev["scores"][checkpoint].items()}
    eval_run = (ev.get("mlflow") or {}).get("parent_run_id")
    if eval_run:
        RunLogger.attach(s.mlflow_uri, eval_run).set_tags({"mlflow.parentRunId": run.run_id})
    metrics = {f"{b}.{k}": v for b, sc in scores.items() for k, v in sc.items()}
    final_loss = res.get("final_loss")
    if isinstance(final_loss, (int, float)) and final_loss == final_loss:
        metrics["train.final_loss"] = float(final_loss)
    run.log_metrics(metrics)
    run.set_tags({"ocean.training_run_id": res["mlflow_run_id"], "ocean.evaluation_run_id": eval_run or "",
                  "ocean.checkpoint_uri": checkpoint.split("?", 1)[0], "ocean.ablate.status": "ok"})
    run.finish()
    return {"scores": scores, "training_run_id": res["mlflow_run_id"], "evaluation_run_id": eval_run,
            "checkpoint": checkpoint.split("?", 1)[0], "epochs": res["epochs"], "final_loss": final_loss,
            "failed_sequences": len(ev.get("failed", []))}
