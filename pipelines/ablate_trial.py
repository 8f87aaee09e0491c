"""The Ray Tune trial of ``ocean ablate``: one training and the evaluation of each row that shares it.

``Tuner(TorchTrainer(...))`` fails under Train V2 (ray_stack.md §5), so the trial is a Tune FUNCTION
trainable (reserving 0.1 CPU: it only drives) that calls :func:`pipelines.train.train` -- which builds and
fits its own ``TorchTrainer`` -- and then, per row, :func:`pipelines.evaluate.evaluate` on the checkpoints
of the epoch range on the selection benchmark, and on the best of them for the other benchmarks
(facts §11.4). ``train()`` takes no Ray Train callbacks, so the trial reports once, at the end (the rows'
scores); per-epoch metrics go to MLflow from rank 0 as for every training. Each row's MLflow run (created
on the driver) gets its status, scores, best epoch, score per epoch and links; the training and evaluation
runs are nested under it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ocean import storage
from ocean.ablation import TrainingGroup, slug
from ocean.benchmarks.scoring import HEADLINE
from ocean.checkpoint import epoch_from_name
from ocean.epoch_range import EpochRange, best_epoch, select_checkpoints
from pipelines.tracking import RunLogger


@dataclass(frozen=True)
class AblationTrialSettings:
    """What every trial of an ablation grid needs (sent once through Ray's object store).

    ``groups``: the trainings by name; ``tracker_overrides`` and ``row_runs``: per row name, its tracker
    overrides (evaluation) and its MLflow run; ``primary``: the benchmark whose headline score a trial
    reports to Tune and that picks each row's epoch; ``epochs``: the epochs evaluated. The rest are the
    :class:`pipelines.ablate.AblateSettings` fields of the same names.
    """

    groups: dict[str, TrainingGroup]
    tracker_overrides: dict[str, list[str]]
    row_runs: dict[str, RunLogger]
    primary: str
    epochs: EpochRange
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
        chosen, missing = select_checkpoints([(epoch_from_name(u), u) for u in res["checkpoints"]], s.epochs)
        if not chosen:
            raise RuntimeError(f"no checkpoint of epochs {s.epochs} under {storage.join(s.out, 'train', slug(name))}")
        for row in current:
            rows_out[row] = _evaluate_row(s, row, res, chosen, missing)
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


def _evaluate_row(s: AblationTrialSettings, row: str, res: Mapping[str, Any], chosen: list[tuple[int, str]],
                  missing: list[int]) -> dict[str, Any]:
    """Evaluate ``chosen`` ((epoch, checkpoint) pairs) with ``row``'s tracker overrides on the selection
    benchmark, keep the best epoch (facts §11.4) and evaluate it on the other benchmarks (one epoch: all
    benchmarks at once). The row's run gets the scores, ``best_epoch``, the score per epoch (metric
    ``epochs.<benchmark>.<metric>``, step = epoch) and links."""
    run = s.row_runs[row]
    run.set_tags({"ocean.ablate.status": "evaluating"})
    out, metric = storage.join(s.out, "eval", slug(row)), HEADLINE[s.primary]
    others = {b: r for b, r in s.benchmarks.items() if b != s.primary}
    first = _evaluate(s, row, res, [u for _, u in chosen], s.benchmarks if len(chosen) == 1 else
                      {s.primary: s.benchmarks[s.primary]}, out, "eval")
    epoch_scores = {e: first["scores"][u].get(s.primary, {}).get(metric) for e, u in chosen}
    best = best_epoch(epoch_scores)
    if best is None:
        raise RuntimeError(f"row {row}: no checkpoint of epochs {s.epochs} got a {s.primary} {metric}")
    checkpoint = dict(chosen)[best[0]]
    scores = dict(first["scores"][checkpoint])
    eval_runs, failed = {"ocean.evaluation_run_id": first["run_id"]}, first["failed"]
    if len(chosen) > 1 and others:
        second = _evaluate(s, row, res, [checkpoint], others, storage.join(out, "best"), "eval-best")
        scores.update(second["scores"][checkpoint])
        eval_runs["ocean.evaluation_best_run_id"], failed = second["run_id"], failed + second["failed"]
    metrics = {f"{b}.{k}": v for b, sc in scores.items() for k, v in sc.items()}
    final_loss = res.get("final_loss")
    if isinstance(final_loss, (int, float)) and final_loss == final_loss:
        metrics["train.final_loss"] = float(final_loss)
    run.log_metrics({**metrics, "best_epoch": float(best[0])})
    for e, v in epoch_scores.items():
        if isinstance(v, (int, float)) and v == v:
            run.log_metrics({f"epochs.{s.primary}.{metric}": v}, step=e)
    run.set_tags({"ocean.training_run_id": res["mlflow_run_id"], **{k: v or "" for k, v in eval_runs.items()},
                  "ocean.checkpoint_uri": checkpoint.split("?", 1)[0], "ocean.best_epoch": best[0],
                  "ocean.ablate.status": "ok"})
    run.finish()
    return {"scores": scores, "training_run_id": res["mlflow_run_id"], "evaluation_run_id": first["run_id"],
            "evaluation_best_run_id": eval_runs.get("ocean.evaluation_best_run_id"),
            "checkpoint": checkpoint.split("?", 1)[0], "epochs": res["epochs"], "final_loss": final_loss,
            "best_epoch": best[0], "epoch_scores": {str(e): v for e, v in epoch_scores.items()},
            "epochs_evaluated": [e for e, _ in chosen], "missing_epochs": list(missing),
            "failed_sequences": failed}


def _evaluate(s: AblationTrialSettings, row: str, res: Mapping[str, Any], checkpoints: list[str],
              benchmarks: dict[str, str], out: str, kind: str) -> dict[str, Any]:
    """One ``evaluate()`` of ``checkpoints`` on ``benchmarks`` under ``out``, its MLflow run nested under the
    row's; ``{"scores": {checkpoint: {benchmark: {metric: value}}}, "run_id", "failed"}``."""
    from ocean.benchmarks.report import METRIC_KEYS
    from pipelines.evaluate import EvaluateSettings, evaluate

    ev = evaluate(EvaluateSettings(checkpoints, benchmarks, out, tracker_overrides=s.tracker_overrides[row],
                                   workers=s.workers, use_gpu=s.use_gpu, mlflow_uri=s.mlflow_uri,
                                   validation=s.primary if s.primary in benchmarks else None,
                                   max_sequences=s.max_sequences, experiment=s.experiment,
                                   run_name=f"ablate-{slug(row)}-{kind}", training_run_id=res["mlflow_run_id"],
                                   progress=s.verbose))
    eval_run = (ev.get("mlflow") or {}).get("parent_run_id")
    if eval_run:
        RunLogger.attach(s.mlflow_uri, eval_run).set_tags({"mlflow.parentRunId": s.row_runs[row].run_id})
    scores = {c: {b: {k: float(v) for k, v in sc.items() if k in METRIC_KEYS and isinstance(v, (int, float)) and v == v}
                  for b, sc in per.items()} for c, per in ev["scores"].items()}
    return {"scores": scores, "run_id": eval_run, "failed": len(ev.get("failed", []))}
