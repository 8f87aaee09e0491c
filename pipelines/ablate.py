"""``ocean ablate``: the paper's ablations (Table 4 components, Table 5 data) as a Ray Tune grid, in MLflow.

:func:`ablate` runs named steps over one :class:`AblateSettings`: plan (rows, switches and budgets:
:mod:`ocean.ablation`; bad input raises AblationError before any run) -> connect (start or join Ray; refuse
an MLflow store the other nodes cannot reach) -> open the MLflow runs -> run the grid -> collect -> write the
paper's table with our numbers beside the paper's. The grid is over *trainings*: rows whose training
configuration is identical share one trial (:mod:`pipelines.ablate_trial`), evaluated once per row.
``max_concurrent_trials`` defaults to 1 (small machines); raise it on a cluster. The MLflow runs and the
output layout: :func:`ablate`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.pair_index import datasets_present
from ocean import storage
from ocean.ablation import (
    EPOCH_PLOT,
    STUDIES,
    AblationError,
    PlannedRow,
    TrainingGroup,
    base_config,
    check_budget,
    epoch_window,
    format_report,
    group_of,
    group_rows,
    headline_metrics,
    plan_rows,
    primary_benchmark,
    slug,
    table_rows,
    write_epoch_plot,
)
from ocean.config import OceanConfig
from ocean.datapath import check_readable_folder
from ocean.epoch_range import EpochRange
from ocean.storage import StorageError, public_uri
from pipelines.console import forward_worker_logs
from pipelines.tracking import RunLogger, require_shared_store, tracking_uri


@dataclass(frozen=True)
class AblateSettings:
    """An ablation run (see :func:`ablate`).

    data: prepared pair records (``ocean prepare --out``), folder or ``s3://``. benchmarks: ``{name: root}``
    to evaluate on (otb, vot2018, vot2019, got10k, lasot). out: folder or ``s3://`` URI for every training,
    evaluation and the tables. study: "components", "data" or "both". preset: "paper" or "smoke";
    overrides: ``key=value`` config overrides applied before the row switches (a study switch may not be
    overridden). epochs: the epochs evaluated (``EpochRange`` or ``"30-50"``, ``"30-50:5"``, ``"5"``): each
    row trains to the last and reports the best on ``validation`` (facts §11.4); default the preset's last
    epoch only. pairs_per_epoch / max_sequences: the budget (:func:`ocean.ablation.plan_rows`).
    workers / use_gpu: training DDP workers and evaluation actors; one GPU each with ``use_gpu``.
    validation: the benchmark that picks each row's epoch ("ours" column; default vot2018, else the first).
    rows: run only these row keys (e.g. ``["baseline", "+centralized"]``). max_concurrent_trials: Tune
    trials at once (1: one training at a time, for small machines).
    """

    data: str
    benchmarks: dict[str, str]
    out: str
    study: str = "components"
    preset: str = "paper"
    epochs: EpochRange | str | int | None = None
    pairs_per_epoch: int | None = None
    workers: int = 2
    use_gpu: bool = False
    gpu_wait_s: float = 0.0  # --wait-for-gpus: pipelines.raysession.require_gpus
    max_sequences: int | None = None
    mlflow_uri: str | None = None
    validation: str | None = None
    overrides: Sequence[str] = ()
    ray_address: str | None = None
    rows: Sequence[str] | None = None
    max_concurrent_trials: int = 1
    seed: int = 0
    experiment: str = "ocean-ablate"
    verbose: bool = True


@dataclass(frozen=True)
class _Plan:
    """The validated request: base config, datasets present, rows, trainings and budget."""

    base: OceanConfig
    primary: str
    present: dict[str, int]
    planned: list[PlannedRow]
    groups: dict[str, TrainingGroup]
    total: int
    studies: list[str]
    epochs: EpochRange
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    @property
    def runnable(self) -> list[PlannedRow]:
        return [r for r in self.planned if not r.skipped]


def ablate(settings: AblateSettings) -> dict[str, Any]:
    """Run the paper's ablation ``settings.study``.

    Returns the report written to ``OUT/ablation.json``: ``rows`` {study: [row dicts]}, ``markdown``,
    ``mlflow`` {tracking_uri, experiment_id, parent_run_id, child_run_ids}, ``trials``, ``budget``.
    Raises AblationError on bad input (before any run) and TrackingStoreError for a sqlite / file MLflow
    store on a Ray cluster of several nodes (the trials log from any node); a failed trial is recorded, not
    raised, unless every trial failed.

    MLflow (store of :func:`pipelines.tracking.tracking_uri`, created once on the driver before any trial; on
    a Ray cluster of several nodes a tracking server, since trials log from any node): one parent run
    (``ocean.kind=ablation``; params: study, preset, budgets; the table, ``ablation.json`` and the epoch plot
    as artifacts; metrics ``<row>.<benchmark>.<metric>``, ``<row>.best_epoch``) and one child run per row,
    created on the driver before the trials start (params: every switch as ``switch.<key>`` and the budget;
    metrics ``<benchmark>.<metric>`` at the best epoch, ``best_epoch``, ``epochs.<benchmark>.<metric>`` per
    epoch; tags ``ocean.training_run_id``, ``ocean.evaluation_run_id`` (+ ``ocean.evaluation_best_run_id``),
    ``ocean.checkpoint_uri``). The training and evaluation runs are nested under the row's child.

    Output layout (``OUT`` a folder or ``s3://bucket/prefix``)::

        OUT/ablation.md, OUT/ablation.json        the table(s) and every number behind them
        OUT/ablation-epochs.png                   each row's selection score per epoch (a range of epochs)
        OUT/train/<group>/...                     each training (pipelines.train layout; re-runs resume)
        OUT/eval/<row>/...                        the epochs on the selection benchmark (pipelines.evaluate
        OUT/eval/<row>/best/...                   layout); the best epoch on the other benchmarks
        OUT/tune/...                              Ray Tune's experiment folder
    """
    s = settings
    log = logging.getLogger(__name__).info if s.verbose else (lambda *a, **k: None)
    plan = _plan(s, log)
    _connect(s)
    with _parent_run(s, plan) as parent:
        row_runs: dict[str, RunLogger] = {}
        try:
            _open_row_runs(s, plan, parent, row_runs)
            grid, wall = _run_grid(s, plan, parent.uri, row_runs)
        except BaseException as exc:
            for run in row_runs.values():
                if run.status() == "RUNNING":
                    run.finish("FAILED" if isinstance(exc, Exception) else "KILLED")
            raise
        report = _report(s, plan, _collect(plan, grid, row_runs), wall, parent, row_runs)
        _write(s, report, parent)
        if not any(r["status"] == "ok" for st in plan.studies for r in report["rows"][st]):
            raise RuntimeError("ocean ablate: every trial failed: " + "; ".join(
                f"{t['group']}: {t['error']}" for t in report["trials"] if t["error"]))
    return report


def _plan(s: AblateSettings, log) -> _Plan:
    """Validate the request and plan the rows and trainings; AblationError before anything runs."""
    primary = primary_benchmark(dict(s.benchmarks), s.validation)
    if s.max_concurrent_trials < 1 or s.workers < 1:
        raise AblationError("max_concurrent_trials and workers must be >= 1")
    for name, root in sorted(s.benchmarks.items()):  # an unreadable root (folder or s3://) before any training
        try:
            check_readable_folder(str(root), f"benchmark {name}: root")
        except (StorageError, ValueError) as exc:
            raise AblationError(str(exc)) from None
    window = epoch_window(s.epochs)
    base = base_config(s.preset, s.overrides, window.last if window else None, s.study)
    present = datasets_present(s.data)
    log(f"prepared data: {present}")
    planned = plan_rows(s.study, base, list(present), pairs_per_epoch=s.pairs_per_epoch, rows=s.rows, log=log)
    groups = group_rows(planned, base)
    total = int(s.pairs_per_epoch) if s.pairs_per_epoch else int(sum(base.data.pairs_per_epoch.values()))
    check_budget(groups, total)
    studies = list(STUDIES) if s.study == "both" else [s.study]
    window = window or EpochRange(base.optim.epochs, base.optim.epochs)
    log(f"each row: epochs {window} evaluated on {primary}, the best kept (facts §11.4)")
    return _Plan(base, primary, present, planned, groups, total, studies, window)


def _connect(s: AblateSettings) -> None:
    """Start (or join) Ray; refuse a tracking store that is a file here when the cluster has other nodes."""
    from pipelines.raysession import alive_nodes, ensure_ray, require_gpus

    ensure_ray(s.ray_address)
    require_gpus(s.workers if s.use_gpu else 0, wait_s=s.gpu_wait_s)  # else every trial's training waits for them forever
    require_shared_store(tracking_uri(s.mlflow_uri, s.out), alive_nodes())


def _parent_run(s: AblateSettings, plan: _Plan) -> RunLogger:
    """The study's MLflow run (the store and experiment created here, once, on the driver: ray_stack.md §5)."""
    run = RunLogger.start(tracking_uri(s.mlflow_uri, s.out), s.experiment, f"ablate-{s.study}-{plan.stamp}",
                          tags={"ocean.kind": "ablation", "ocean.study": s.study, "ocean.data": public_uri(s.data),
                                "ocean.out": public_uri(s.out)})
    run.log_params({
        "study": s.study, "preset": s.preset, "epochs": plan.base.optim.epochs, "epoch_range": str(plan.epochs),
        "pairs_per_epoch": plan.total,
        "max_sequences": s.max_sequences, "workers": s.workers, "use_gpu": s.use_gpu, "primary": plan.primary,
        "benchmarks": json.dumps(sorted(s.benchmarks)), "rows": ",".join(r.name for r in plan.runnable),
        "skipped": ",".join(r.name for r in plan.planned if r.skipped), "overrides": json.dumps(list(s.overrides)),
        "max_concurrent_trials": s.max_concurrent_trials, "seed": s.seed, "data": public_uri(s.data)})
    return run


def _open_row_runs(s: AblateSettings, plan: _Plan, parent: RunLogger, row_runs: dict[str, RunLogger]) -> None:
    """One child run per runnable row, in paper order, into ``row_runs`` (row name -> run) as it goes."""
    for row in plan.runnable:
        run = row_runs[row.name] = parent.child(f"ablate-{slug(row.name)}", tags={
            "ocean.kind": "ablation-row", "ocean.study": row.spec.study, "ocean.row": row.spec.key,
            "ocean.ablate.status": "queued"})
        run.log_params({"row": row.spec.key, "study": row.spec.study, "number": row.spec.number,
                        "label": row.spec.label, "paper.vot2018_eao": row.spec.paper,
                        **{f"switch.{o.split('=', 1)[0]}": o.split("=", 1)[1] for o in row.overrides},
                        "optim.epochs": plan.base.optim.epochs, "epochs.evaluated": str(plan.epochs),
                        "budget.pairs_per_epoch": plan.total,
                        "max_sequences": s.max_sequences, "group": group_of(plan.groups, row.name)})


def _run_grid(s: AblateSettings, plan: _Plan, uri: str, row_runs: dict[str, RunLogger]):
    """The Tune grid over the trainings (Ray is up: :func:`_connect`); returns the grid and its wall time."""
    from ray import tune

    from pipelines.ablate_trial import AblationTrialSettings, ablation_trial

    trial = AblationTrialSettings(
        groups=plan.groups, tracker_overrides={r.name: r.tracker_overrides for r in plan.runnable},
        row_runs=row_runs, primary=plan.primary, data=s.data, out=s.out, benchmarks=dict(s.benchmarks),
        epochs=plan.epochs, workers=s.workers, use_gpu=s.use_gpu, seed=s.seed, max_sequences=s.max_sequences, mlflow_uri=uri,
        experiment=s.experiment, verbose=s.verbose)
    trainable = tune.with_resources(tune.with_parameters(ablation_trial, settings=trial), {"CPU": 0.1})
    tune_fs, tune_path = storage.resolve(storage.join(s.out, "tune"))
    if not storage.is_uri(s.out):
        Path(tune_path).mkdir(parents=True, exist_ok=True)
        tune_fs = None
    tuner = tune.Tuner(
        trainable,
        param_space={"group": tune.grid_search(list(plan.groups))},
        tune_config=tune.TuneConfig(max_concurrent_trials=s.max_concurrent_trials,
                                    reuse_actors=True),  # one trial process: torch imported once
        run_config=tune.RunConfig(name=f"ablate-{s.study}-{plan.stamp}", storage_path=tune_path,
                                  storage_filesystem=tune_fs, verbose=1 if s.verbose else 0),
    )
    t0 = time.time()
    with forward_worker_logs():  # the trials' trainings on this console
        grid = tuner.fit()
    return grid, time.time() - t0


def _collect(plan: _Plan, grid, row_runs: dict[str, RunLogger]) -> tuple[dict[str, dict], list[dict]]:
    """Each row's result (ok, or failed with the trial's error: its run is then marked FAILED) and the trials."""
    results: dict[str, dict[str, Any]] = {}
    trials = []
    for res in grid:
        group = (res.config or {}).get("group")
        metrics = res.metrics or {}
        err = None if res.error is None else f"{type(res.error).__name__}: {res.error}"
        rows = plan.groups[group].rows if group in plan.groups else []
        trials.append({"group": group, "rows": rows, "error": err, "wall_s": metrics.get("trial_wall_s")})
        for row in rows:
            if row in (metrics.get("rows") or {}):
                results[row] = {**metrics["rows"][row], "status": "ok"}
            else:
                results[row] = {"status": "failed", "error": err or "the trial reported nothing"}
                if row_runs[row].status() == "RUNNING":
                    row_runs[row].fail(err or "no report")
    return results, trials


def _report(s: AblateSettings, plan: _Plan, collected: tuple[dict[str, dict], list[dict]], wall: float,
            parent: RunLogger, row_runs: dict[str, RunLogger]) -> dict[str, Any]:
    results, trials = collected
    budget = {"epochs": plan.base.optim.epochs, "epoch_range": str(plan.epochs), "pairs_per_epoch": plan.total,
              "max_sequences": s.max_sequences}
    report: dict[str, Any] = {
        "study": s.study, "studies": plan.studies, "preset": s.preset, "benchmarks": dict(s.benchmarks),
        "primary": plan.primary, "budget": budget,
        "rows": table_rows(plan.studies, plan.planned, results, {k: r.run_id for k, r in row_runs.items()}),
        "trials": trials, "wall_s": round(wall, 1), "data_datasets": plan.present, "overrides": list(s.overrides),
    }
    report["markdown"] = format_report(report)
    report["mlflow"] = {"tracking_uri": public_uri(parent.uri), "experiment_id": parent.experiment_id,
                        "parent_run_id": parent.run_id, "child_run_ids": {k: r.run_id for k, r in row_runs.items()}}
    return report


def _write(s: AblateSettings, report: dict[str, Any], parent: RunLogger) -> None:
    """``OUT/ablation.md``, ``OUT/ablation.json`` and the epoch plot; the same and the headline scores on the
    parent run."""
    text = json.dumps(report, indent=1, default=str)
    with tempfile.TemporaryDirectory(prefix="ocean-ablate-") as tmp:
        if write_epoch_plot(report, Path(tmp, EPOCH_PLOT)):
            storage.write_bytes(storage.join(s.out, EPOCH_PLOT), Path(tmp, EPOCH_PLOT).read_bytes())
            parent.log_artifact(Path(tmp, EPOCH_PLOT))
    storage.write_bytes(storage.join(s.out, "ablation.md"), report["markdown"].encode())
    storage.write_bytes(storage.join(s.out, "ablation.json"), text.encode())
    parent.log_metrics(headline_metrics(report))
    parent.log_text(report["markdown"], "ablation.md")
    parent.log_text(text, "ablation.json")
