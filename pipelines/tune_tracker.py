"""``ocean tune-tracker``: search a checkpoint's tracker hyper-parameters with Ray Tune, logged to MLflow.

:func:`tune_tracker` runs named steps over one :class:`TuneTrackerSettings`: validate -> prepare (validation
sequences in a seeded order, the checkpoint, the search space around the benchmark's defaults) -> search
(Optuna TPE + ASHA, as TK ``tracking/tune_tpe.py``, facts §11.1) -> collect -> write -> log. Trial 0 is the
benchmark's defaults, so the best trial is never worse than the defaults; bad input raises TuneTrackerError
before any trial. The search-free parts (spaces, scoring, reports) are in :mod:`ocean.tuning`; the trial
function and its MLflow callback in :mod:`pipelines.tune_trials`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocean.benchmarks.scoring import HEADLINE
from ocean.benchmarks.sequence import Sequence
from ocean.config import layered_tracker_config
from ocean.storage import public_uri
from ocean.tuning import (
    METRIC,
    SPACES,
    TIME_ATTR,
    TRIAL_KEYS,
    ModelBlob,
    SearchSetup,
    TuneTrackerError,
    best_tracker_json,
    eao_undefined_warning,
    load_model_blob,
    number_trials,
    pick_best,
    plot_score_vs_trial,
    read_validation,
    search_setup,
    sequence_order,
    trial_cost,
    trials_csv,
)
from pipelines.tracking import NullRunLogger, RunLogger, tracking_uri

log = logging.getLogger(__name__)

OUTPUT_FILES = ("best_tracker.json", "trials.csv", "score_vs_trial.png", "tune_summary.json")


@dataclass(frozen=True)
class TuneTrackerSettings:
    """A tuning run (see :func:`tune_tracker`).

    trials: number of trials (the first one is the default hyper-parameters). max_concurrent: trials at
    once (TPE suggestions then depend on finishing order; 1 makes the search deterministic for a seed).
    space: ``official`` (facts §11.1) or ``sots`` (facts §11.2). seed: seeds the TPE sampler and the
    sequence order. grace_period: ASHA's first rung in sequences (default: a quarter of the sequences, at
    least 1); later rungs at grace_period * reduction_factor^k; max_t = number of sequences.
    cpus_per_trial / gpus_per_trial: Ray resources per trial (GPU only with ``use_gpu``).
    max_sequences: first N sequences of the seeded order (smoke runs). tracker_overrides: ``tracker.KEY=VALUE``.
    """

    checkpoint: str
    benchmark: str
    root: str
    out: str
    trials: int = 20
    max_concurrent: int = 2
    space: str = "official"
    seed: int = 0
    mlflow_uri: str | None = None
    use_gpu: bool = False
    gpu_wait_s: float = 0.0  # --wait-for-gpus: pipelines.raysession.require_gpus
    grace_period: int | None = None
    reduction_factor: float = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.25
    ray_address: str | None = None
    experiment: str = "ocean-tune-tracker"
    log_mlflow: bool = True
    max_sequences: int | None = None
    verbose: int = 1
    tracker_overrides: tuple[str, ...] = ()  # --config / --tracker-config / --set


@dataclass(frozen=True)
class _Search:
    """What validation produced: the ordered sequences, their split, the model and the search setup."""

    sequences: list[Sequence]
    split: str
    model: ModelBlob
    setup: SearchSetup
    grace: int


def tune_tracker(settings: TuneTrackerSettings) -> dict[str, Any]:
    """Search the tracker hyper-parameters of ``settings.checkpoint`` on the validation benchmark
    ``settings.benchmark`` at ``settings.root`` and write the results under ``settings.out``.

    Returns the summary written to ``OUT/tune_summary.json`` (best params and score, default score, the
    trials, cost, file locations, MLflow ids). TuneTrackerError on bad input, before any trial.

    Outputs (``OUT`` a folder or ``s3://...``; S3 output is staged in a temporary folder and uploaded)::

        OUT/best_tracker.json     {"tracker": {...}}: TrackerConfig keys only (ocean track / evaluate --tracker-config)
        OUT/trials.csv            one row per trial: params, score, sequences done, status, seconds
        OUT/score_vs_trial.png    final score of every trial, best so far
        OUT/tune_summary.json     settings, best, defaults, cost (trials, stopped early, CPU/GPU-hours, wall time)
        OUT/ray_results/...       Ray Tune's own experiment folder (local OUT only)
    """
    from ocean.storage import OutputStore

    s = settings
    t_start = time.perf_counter()
    _validate(s)
    search = _prepare(s)
    store = OutputStore.from_uri(s.out)
    staging = Path(store.root) if store.kind == "local" else Path(tempfile.mkdtemp(prefix="ocean-tune-"))
    staging.mkdir(parents=True, exist_ok=True)
    with _parent_run(s, search) as run:
        grid = _run_search(s, search, staging, run)
        rows, best_row, default_row = _collect(grid, search)
        cost = trial_cost(rows, cpus_per_trial=s.cpus_per_trial, gpus_per_trial=s.gpus_per_trial,
                          use_gpu=s.use_gpu, wall_s=time.perf_counter() - t_start)
        summary = _summary(s, search, rows, best_row, default_row, cost, _mlflow_ids(run, s.log_mlflow))
        _write(staging, summary, rows, search)
        _log_results(run, best_row, default_row, cost, staging)
    if store.kind != "local":
        for name in OUTPUT_FILES:
            store.write(name, (staging / name).read_bytes())
        shutil.rmtree(staging, ignore_errors=True)
    summary["out"] = store.uri
    return summary


def _validate(s: TuneTrackerSettings) -> None:
    if s.trials < 1:
        raise TuneTrackerError(f"trials must be >= 1, got {s.trials}")
    if s.max_concurrent < 1:
        raise TuneTrackerError(f"max_concurrent must be >= 1, got {s.max_concurrent}")
    if s.space not in SPACES:
        raise TuneTrackerError(f"unknown search space {s.space!r}; one of {list(SPACES)}")
    if s.reduction_factor <= 1:
        raise TuneTrackerError(f"reduction_factor must be > 1, got {s.reduction_factor}")


def _prepare(s: TuneTrackerSettings) -> _Search:
    """Validation sequences (seeded order), checkpoint, search around the defaults of `ocean evaluate`."""
    seqs, split = read_validation(s.benchmark, s.root)
    log.warning(f"tuning on the validation set {split}")
    warning = eao_undefined_warning(s.benchmark, seqs)
    if warning:
        log.warning(warning)
    seqs = [seqs[i] for i in sequence_order(len(seqs), s.seed)][: s.max_sequences or None]
    model, ocean_cfg = load_model_blob(s.checkpoint)
    try:
        base = layered_tracker_config(ocean_cfg.tracker, s.benchmark, list(s.tracker_overrides))
    except ValueError as exc:
        raise TuneTrackerError(f"tracker hyper-parameters: {exc}") from None
    setup = search_setup(base, ocean_cfg.model.head.align, s.space, s.benchmark)
    for name, change in setup.widened.items():
        log.info(f"the default {name}={setup.defaults[name]} lies outside the {s.space} space; widened "
                 f"{change} so the defaults can be trial 0")
    n = len(seqs)
    grace = max(1, min(n, s.grace_period if s.grace_period is not None else n // 4))
    return _Search(seqs, split, model, setup, grace)


def _parent_run(s: TuneTrackerSettings, search: _Search) -> RunLogger:
    """The parent MLflow run with the search's settings as params (a NullRunLogger without MLflow).

    MLflow (created once on the driver before any trial, ray_stack.md §5): a parent run (space, settings, best
    params, best / default score, cost, artifacts) and one child run per trial
    (:class:`pipelines.tune_trials.TrialLogger`).
    """
    if not s.log_mlflow:
        return NullRunLogger()
    run = RunLogger.start(tracking_uri(s.mlflow_uri, s.out), s.experiment, f"tune-tracker-{s.benchmark}-{s.space}",
                          tags={"ocean.kind": "tune-tracker", "ocean.checkpoint": public_uri(s.checkpoint),
                                "ocean.benchmark": s.benchmark})
    setup = search.setup
    run.log_params({
        "checkpoint": public_uri(s.checkpoint), "benchmark": s.benchmark, "root": public_uri(str(s.root)), "space": s.space,
        "trials": s.trials, "max_concurrent": s.max_concurrent, "seed": s.seed,
        "num_sequences": len(search.sequences), "grace_period": search.grace,
        "reduction_factor": s.reduction_factor, "cpus_per_trial": s.cpus_per_trial, "use_gpu": s.use_gpu,
        **{f"space.{k}": v.describe() for k, v in setup.space.items()},
        **{f"fixed.{k}": v for k, v in setup.fixed.items()}})
    return run


def _run_search(s: TuneTrackerSettings, search: _Search, staging: Path, run: RunLogger):
    """Run the Tune experiment: TPE proposals from the defaults on, ASHA over sequences; the result grid.

    As the official tuning script (TK ``tracking/tune_tpe.py``, facts §11.1) on current Ray: Optuna's TPE
    (``OptunaSearch`` with a seeded ``TPESampler``) proposes the values of a search space of
    :mod:`ocean.tuning`; ``AsyncHyperBandScheduler`` with ``time_attr="sequences_done"`` stops bad trials
    early, every trial tracking the validation sequences in one fixed seeded order so rungs compare trials on
    the same sequences. Trial 0 is the benchmark's defaults (``points_to_evaluate``); the scheduler
    (:class:`~pipelines.tune_trials.DefaultsCompleteASHA`) never stops it early, so the baseline's score
    covers every sequence, as the best trial's does. Each trial reserves
    ``cpus_per_trial`` CPUs (and ``gpus_per_trial`` with ``use_gpu``) and runs torch with one thread; the
    weights travel once through Ray's object store.
    """
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from pipelines.raysession import ensure_ray, require_gpus
    from pipelines.tune_trials import (
        DefaultsCompleteASHA,
        TrialLogger,
        TrialSettings,
        tracker_trial,
        tune_domain,
    )

    ensure_ray(s.ray_address)
    require_gpus(s.gpus_per_trial if s.use_gpu else 0, wait_s=s.gpu_wait_s)  # MissingGpus: a usage error
    available = ray.cluster_resources()
    if available.get("CPU", 0) < s.cpus_per_trial:
        raise TuneTrackerError(f"the Ray cluster has {available.get('CPU', 0):g} CPUs, a trial needs "
                               f"{s.cpus_per_trial:g}")
    resources = {"CPU": float(s.cpus_per_trial), **({"GPU": float(s.gpus_per_trial)} if s.use_gpu else {})}
    n, setup = len(search.sequences), search.setup
    trial = TrialSettings(search.model, search.sequences, s.benchmark, setup, "cuda" if s.use_gpu else "cpu")
    trainable = tune.with_resources(tune.with_parameters(tracker_trial, settings=trial), resources)
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=s.seed), points_to_evaluate=[setup.defaults])
    scheduler = DefaultsCompleteASHA(space=setup.space, defaults=setup.defaults, time_attr=TIME_ATTR, max_t=n,
                                     grace_period=search.grace, reduction_factor=s.reduction_factor)
    callbacks = [TrialLogger(run, setup.space, n, tags={"ocean.kind": "tune-tracker-trial",
                                                        "ocean.benchmark": s.benchmark})] if s.log_mlflow else []
    tuner = tune.Tuner(
        trainable,
        param_space={k: tune_domain(v) for k, v in setup.space.items()},
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=s.trials, max_concurrent_trials=s.max_concurrent,
                                    reuse_actors=True),  # one worker process per slot: torch imported once
        run_config=tune.RunConfig(name=f"tune-tracker-{s.benchmark}-{s.space}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str((staging / "ray_results").resolve()),
                                  callbacks=callbacks, verbose=s.verbose),
    )
    return tuner.fit()


def _mlflow_ids(run: RunLogger, logged: bool) -> dict[str, Any]:
    if not logged:
        return {}
    uri = run.uri if run.uri.startswith("sqlite:") else public_uri(run.uri)
    return {"tracking_uri": uri, "experiment_id": run.experiment_id, "parent_run_id": run.run_id}


def _collect(grid, search: _Search) -> tuple[list[dict], dict, dict | None]:
    """The trial rows in creation order, the best trial and the defaults' trial."""
    from pipelines.tune_trials import trial_rows

    rows = trial_rows(grid, search.setup.space, len(search.sequences))
    rows = number_trials(rows, search.setup.space, search.setup.defaults)
    best_row, default_row = pick_best(rows)
    return rows, best_row, default_row


def _summary(s: TuneTrackerSettings, search: _Search, rows: list[dict], best_row: dict, default_row: dict | None,
             cost: dict[str, float], ml: dict[str, Any]) -> dict[str, Any]:
    setup = search.setup
    return {
        "checkpoint": s.checkpoint, "benchmark": s.benchmark, "root": public_uri(str(s.root)), "split": search.split,
        "objective": HEADLINE[s.benchmark], "space": s.space,
        "search_space": {k: v.describe() for k, v in setup.space.items()}, "space_widened": setup.widened,
        "fixed": setup.fixed, "sequences": [q.name for q in search.sequences], "seed": s.seed,
        "grace_period": search.grace, "reduction_factor": s.reduction_factor, "max_concurrent": s.max_concurrent,
        "best": {"trial": best_row["trial"], "score": best_row[METRIC], "params": best_row["params"]},
        "default": None if default_row is None else {"trial": default_row["trial"], "score": default_row[METRIC],
                                                     "status": default_row["status"], "params": setup.defaults},
        "cost": cost,
        "trials": [{k: r[k] for k in TRIAL_KEYS} for r in rows],
        "files": {"best_tracker": "best_tracker.json", "trials_csv": "trials.csv", "plot": "score_vs_trial.png",
                  "summary": "tune_summary.json"},
        "mlflow": ml,
    }


def _write(staging: Path, summary: dict[str, Any], rows: list[dict], search: _Search) -> None:
    best = search.setup.tracker(summary["best"]["params"])
    (staging / "best_tracker.json").write_text(json.dumps(best_tracker_json(best), indent=2) + "\n")
    (staging / "trials.csv").write_text(trials_csv(rows, list(search.setup.space)))
    plot_score_vs_trial(rows, staging / "score_vs_trial.png",
                        f"{summary['benchmark']} {summary['objective']} ({summary['space']} space, "
                        f"{len(search.sequences)} sequences)")
    (staging / "tune_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _log_results(run: RunLogger, best_row: dict, default_row: dict | None, cost: dict[str, float],
                 staging: Path) -> None:
    metrics = {"best_score": best_row[METRIC], **{f"cost.{k}": float(v) for k, v in cost.items()}}
    if default_row is not None and default_row[METRIC] is not None:
        metrics["default_score"] = default_row[METRIC]
    run.log_metrics(metrics)
    run.log_params({f"best.{k}": v for k, v in best_row["params"].items()})
    for name in OUTPUT_FILES:
        run.log_artifact(staging / name)

