"""Batch evaluation of checkpoints on benchmarks: Ray-parallel (or a plain in-process loop), logged to MLflow.

``evaluate(EvaluateSettings(...))``: validate -> read benchmarks -> reuse stored results -> run -> score ->
write -> log. Workers (:mod:`pipelines.eval_workers`; Ray actors that survive lost workers,
:mod:`pipelines.eval_actors`) only *track* (checkpoint, sequence) items; the driver stores each result on the
output as it arrives, in each toolkit's format with a record that lets a re-run skip it
(:mod:`pipelines.eval_store`), and scores the files with :func:`ocean.benchmarks.score_sequences`, so a
summary is exactly what ``ocean score`` reports on them. MLflow (a parent run, one child per checkpoint):
:mod:`pipelines.eval_lineage`. Benchmark roots and checkpoints must be readable from every Ray node (shared
folder, ``s3://``); the output files: :func:`evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocean.benchmarks import report as fmt
from ocean.benchmarks.plots import plot_curves, plot_metric_vs_epoch
from ocean.benchmarks.readers import BenchmarkRootError, read_benchmarks
from ocean.benchmarks.scoring import score_sequences
from ocean.benchmarks.sequence import Sequence as BenchmarkSequence
from ocean.benchmarks.submission import submission_for
from ocean.checkpoint import CheckpointError, CheckpointInfo, checkpoint_names, inspect_checkpoint
from ocean.config import TrackerConfig, layered_tracker_config
from pipelines.eval_actors import RunStats, run_ray
from pipelines.eval_store import ResultStore, item_inputs, open_output, upload_staged
from pipelines.eval_workers import ClusterTooSmall, SequenceResult, WorkItem, run_local, timing, work_items
from pipelines.tracking import tracking_uri

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Bad input to an evaluation (missing checkpoint, unreadable benchmark root, unknown name...)."""


@dataclass(frozen=True)
class EvaluateSettings:
    """Evaluate ``checkpoints`` (paths or URIs) on ``benchmarks`` (``{name: root}``, names otb, vot2018,
    vot2019, got10k, lasot; roots as for ``ocean score --dataset``) and write everything under ``out``.

    ``tracker_overrides`` go on top of each checkpoint's tracker section and benchmark preset
    (:func:`ocean.config.layered_tracker_config`). ``workers``: Ray actors, capped by the cluster's CPUs /
    GPUs (``cpus_per_worker`` each, ``threads_per_worker`` torch threads inside); ``use_gpu``: one GPU each
    (``cuda`` in the local loop). ``mlflow_uri``: default :func:`pipelines.tracking.tracking_uri`;
    ``log_mlflow=False`` logs nothing. ``validation``: the benchmark whose headline metric picks the best
    checkpoint. ``local``: a plain loop in this process (same numbers). ``max_sequences``: the first N
    sequences of each benchmark. ``training_run_id``: ``ocean evaluate --run`` (a checkpoint's own
    ``mlflow_run_id`` entry wins). ``batch_sequences``: sequences each worker tracks in lockstep, one search
    forward for all (:mod:`ocean.batch_tracker`; same boxes). ``titles``: ``{benchmark: name}`` of the data
    in the plots' titles, for data in a benchmark's layout that is not that benchmark (default its name).
    """

    checkpoints: Sequence[str]
    benchmarks: Mapping[str, str]
    out: str
    tracker_overrides: Mapping[str, Any] | Sequence[str] | None = None
    workers: int = 2
    use_gpu: bool = False
    gpu_wait_s: float = 0.0  # --wait-for-gpus: pipelines.raysession.require_gpus
    mlflow_uri: str | None = None
    validation: str | None = None
    local: bool = False
    ray_address: str | None = None
    max_sequences: int | None = None
    cpus_per_worker: float = 1.0
    threads_per_worker: int = 1
    batch_sequences: int = 1
    experiment: str = "ocean-evaluate"
    run_name: str | None = None
    training_run_id: str | None = None
    log_mlflow: bool = True
    progress: bool = True
    resume: bool = True
    register_name: str | None = None  # register the best checkpoint under this name (needs validation)
    register_alias: str = "best"
    titles: Mapping[str, str] | None = None

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"


def evaluate(settings: EvaluateSettings) -> dict[str, Any]:
    """Run the evaluation. Returns a JSON-ready dict: ``scores`` {checkpoint uri: {benchmark: ``ocean
    score`` dict + ``tracker``}}, ``checkpoints`` {uri: {name, epoch, links, dir, tracker}}, ``best`` (with
    ``validation``), ``plots`` (paths), ``failed`` ([{checkpoint, benchmark, sequence, error}]) of
    ``sequences_total`` (checkpoint x sequence items; :func:`ocean.benchmarks.report.all_failed`), ``timing``
    (seconds, sequences per second, model loads, workers; ``sequences_tracked``, ``sequences_reused``,
    ``items_retried`` after ``workers_lost``) and ``mlflow`` (run ids) or None. Raises EvaluationError for
    bad input or an output that cannot be written, before any tracking starts.

    Output layout (``OUT`` a folder or ``s3://bucket/prefix``; each sequence's files are stored as it
    finishes, the rest of S3 output is staged in a temporary folder and uploaded at the end)::

        OUT/<checkpoint-name>/<benchmark>/results/...       the tracker's result files (``ocean score --results``)
        OUT/<checkpoint-name>/<benchmark>/sequences/<seq>.json  what a re-run needs to reuse them (eval_store)
        OUT/<checkpoint-name>/<benchmark>/summary.json      ``ocean score`` keys + checkpoint + tracker config
        OUT/<checkpoint-name>/<benchmark>/per_sequence.csv  one row per sequence
        OUT/<checkpoint-name>/<benchmark>/submission.zip    GOT-10k / TrackingNet test: what the server takes
        OUT/<checkpoint-name>/<benchmark>/*.png             success, precision, norm_precision; VOT eao_curve,
                                                            accuracy_robustness
        OUT/plots/<benchmark>_*.png                         the same plots, all checkpoints in one (>= 2 checkpoints)
        OUT/plots/metric_vs_epoch.png                       headline metric per benchmark vs epoch (>= 2 epochs)
        OUT/per_sequence.csv, OUT/summary.md, OUT/evaluation.json   everything, one file each
    """
    t_start = time.perf_counter()
    s = settings
    _validate(s)
    sequences, infos, trackers = _read_inputs(s)
    mlflow_uri = tracking_uri(s.mlflow_uri, s.out) if s.log_mlflow else None
    items = work_items(infos, sequences, trackers)
    out_dir, staging, results_store = _open_store(s, infos, items)
    reused, todo = _reuse(s, results_store, items)
    results, (track_s, startup_s, stats) = _run(s, infos, todo, results_store)
    run_timing = timing(results.values(), todo, track_s, startup_s, stats.workers, local=s.local, device=s.device,
                        reused=len(reused), retried=stats.retried, lost=stats.lost, batch=s.batch_sequences)
    results.update(reused)
    scores, checkpoints, rows, failed, plots = _score(s, infos, sequences, trackers, results, out_dir)
    best = _rank(s, infos, scores, plots, out_dir)
    report: dict[str, Any] = {
        "out": str(s.out), "benchmarks": dict(s.benchmarks), "validation": s.validation, "scores": scores,
        "checkpoints": checkpoints, "best": best, "plots": plots, "failed": failed, "timing": run_timing,
        "sequences_total": len(items), "mlflow": None,
    }
    _write(report, rows, infos, out_dir)
    if mlflow_uri:
        from pipelines.eval_lineage import log_evaluation

        run_name = s.run_name or f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}"
        report["mlflow"] = log_evaluation(mlflow_uri, s.experiment, run_name, infos, report, out_dir,
                                          s.training_run_id, s.register_name and (s.register_name, s.register_alias))
        (out_dir / "evaluation.json").write_text(json.dumps(fmt.without_curves(report), indent=2))
    if staging is not None:
        upload_staged(report, results_store, staging, s.out)
    report["timing"]["total_seconds"] = round(time.perf_counter() - t_start, 3)
    return report


def _validate(s: EvaluateSettings) -> None:
    if not s.checkpoints:
        raise EvaluationError("no checkpoint to evaluate")
    if not s.benchmarks:
        raise EvaluationError("no benchmark given")
    if s.validation is not None and s.validation not in s.benchmarks:
        raise EvaluationError(f"validation benchmark {s.validation!r} is not one of the evaluated benchmarks "
                              f"{sorted(s.benchmarks)}")
    if len(set(s.checkpoints)) != len(s.checkpoints):
        raise EvaluationError("the same checkpoint is given twice")
    if s.workers < 1 or s.batch_sequences < 1:
        raise EvaluationError("workers and batch_sequences must be at least 1")
    if s.use_gpu and s.local:
        import torch

        if not torch.cuda.is_available():
            raise EvaluationError("use_gpu with local=True: no CUDA device is available here")


def _read_inputs(s: EvaluateSettings) -> tuple[dict, list[CheckpointInfo], dict[str, dict[str, TrackerConfig]]]:
    """The benchmarks' sequences, each checkpoint (read once) and its tracker config per benchmark."""
    names = checkpoint_names(s.checkpoints)
    try:
        sequences = read_benchmarks(s.benchmarks, s.max_sequences)
        infos = [inspect_checkpoint(u, n) for u, n in zip(s.checkpoints, names, strict=True)]
    except (BenchmarkRootError, CheckpointError) as exc:
        raise EvaluationError(str(exc)) from None
    try:
        trackers = {i.uri: {b: layered_tracker_config(i.tracker, b, s.tracker_overrides) for b in s.benchmarks}
                    for i in infos}
    except ValueError as exc:
        raise EvaluationError(f"tracker hyper-parameters: {exc}") from None
    return sequences, infos, trackers


def _open_store(s: EvaluateSettings, infos: list[CheckpointInfo],
                items: list[WorkItem]) -> tuple[Path, Path | None, ResultStore]:
    """``(folder to write and score in, staging folder or None, the per-sequence result store)``."""
    from ocean.storage import StorageError

    try:
        out_dir, staging, store = open_output(s.out)
    except StorageError as exc:
        raise EvaluationError(str(exc)) from None
    names = {i.uri: i.name for i in infos}
    return out_dir, staging, ResultStore(store, out_dir, names, item_inputs(infos, items, s.device))


def _reuse(s: EvaluateSettings, store: ResultStore,
           items: list[WorkItem]) -> tuple[dict[tuple[str, str, str], SequenceResult], list[WorkItem]]:
    """The stored results a re-run can reuse (``resume``), and the items left to track."""
    reused, todo = store.reuse(items) if s.resume else ({}, items)
    if reused and s.progress:
        log.info(f"{len(reused)} of {len(items)} sequences already stored under {s.out}; "
                 f"tracking {len(todo)}")
    return reused, todo


def _run(s: EvaluateSettings, infos: list[CheckpointInfo], items: list[WorkItem], store: ResultStore,
         ) -> tuple[dict[tuple[str, str, str], SequenceResult], tuple[float, float, RunStats]]:
    """Track ``items``, storing each result as it arrives. Returns the results by (checkpoint, benchmark,
    sequence) and (tracking seconds, worker start-up seconds, RunStats)."""
    names = {i.uri: i.name for i in infos}
    results: dict[tuple[str, str, str], SequenceResult] = {}

    def on_result(r: SequenceResult) -> None:
        store.save(r)
        results[(r.checkpoint, r.benchmark, r.sequence)] = r
        if s.progress:
            status = "ok" if r.error is None else f"FAILED ({r.error})"
            log.info(f"[{len(results)}/{len(items)}] {names[r.checkpoint]} {r.benchmark}/{r.sequence}: {status} "
                     f"({r.wall_s:.1f} s, {r.worker})")

    t_track = time.perf_counter()
    startup = 0.0

    def on_ready(seconds: float) -> None:  # the Ray workers are up: tracking time starts now
        nonlocal t_track, startup
        startup = seconds
        t_track = time.perf_counter()

    if not items:
        stats = RunStats(0)
    elif s.local:
        stats = RunStats(run_local(items, s.threads_per_worker, s.device, on_result, s.batch_sequences))
    else:
        try:
            stats = run_ray(items, workers=s.workers, threads=s.threads_per_worker, device=s.device,
                            cpus_per_worker=s.cpus_per_worker, gpus_per_worker=1.0 if s.use_gpu else 0.0,
                            ray_address=s.ray_address, on_result=on_result, on_ready=on_ready,
                            gpu_wait_s=s.gpu_wait_s, batch=s.batch_sequences)
        except ClusterTooSmall as exc:
            raise EvaluationError(str(exc)) from None
    if s.progress and stats.retried:
        log.warning(f"{stats.retried} items run again after {stats.lost} lost worker calls")
    return results, (time.perf_counter() - t_track, startup, stats)


def _score(s: EvaluateSettings, infos: list[CheckpointInfo], sequences: dict[str, list[BenchmarkSequence]],
           trackers: dict[str, dict[str, TrackerConfig]], results: dict[tuple[str, str, str], SequenceResult],
           out_dir: Path) -> tuple[dict, dict, list[dict], list[dict], list[str]]:
    """Score every (checkpoint, benchmark) -> (scores, checkpoints entry, CSV rows, failed, plot paths)."""
    scores: dict[str, dict[str, dict]] = {}
    checkpoints: dict[str, dict] = {}
    rows, failed, plots = [], [], []
    curves_by_bench: dict[str, dict[str, dict]] = {b: {} for b in s.benchmarks}

    def title(bench: str) -> str | None:
        return (s.titles or {}).get(bench)

    for info in infos:
        scores[info.uri] = {}
        for bench, seqs in sequences.items():
            bench_dir = out_dir / info.name / bench
            sc, bench_rows = _score_benchmark(info, bench, seqs, trackers[info.uri][bench], results, bench_dir)
            scores[info.uri][bench] = sc
            failed += [{"checkpoint": info.uri, "benchmark": bench, "sequence": n, "error": e}
                       for n, e in sc["failed"].items()]
            rows += bench_rows
            if sc.get("curves"):
                curves_by_bench[bench][info.name] = sc
                plots += [str(p) for p in plot_curves({info.name: sc}, bench, bench_dir, dataset=title(bench))]
        checkpoints[info.uri] = {
            "name": info.name, "epoch": info.epoch, "links": info.links, "dir": str(out_dir / info.name),
            "tracker": {b: dataclasses.asdict(t) for b, t in trackers[info.uri].items()},
        }
    for bench, curves in curves_by_bench.items():
        if len(curves) > 1:
            plots += [str(p) for p in plot_curves(curves, bench, out_dir / "plots", prefix=f"{bench}_",
                                                  dataset=title(bench))]
    return scores, checkpoints, rows, failed, plots


def _score_benchmark(info: CheckpointInfo, bench: str, seqs: list[BenchmarkSequence], tracker: TrackerConfig,
                     results: dict[tuple[str, str, str], SequenceResult], bench_dir: Path) -> tuple[dict, list[dict]]:
    """``ocean score`` of one checkpoint's files on one benchmark + errors -> summary.json, per_sequence.csv."""
    tracker_dir = bench_dir / "results"
    tracker_dir.mkdir(parents=True, exist_ok=True)
    sc = score_sequences(bench, seqs, tracker_dir)
    sc.update(submission_for(bench, seqs, tracker_dir, bench_dir))  # GOT-10k / TrackingNet test: the server's zip
    sc["failed"] = {n: r.error for (u, b, n), r in results.items() if u == info.uri and b == bench and r.error}
    sc.update(checkpoint=info.uri, epoch=info.epoch, tracker=dataclasses.asdict(tracker))
    (bench_dir / "summary.json").write_text(json.dumps(sc, indent=2))
    rows = []
    for seq in seqs:
        r = results.get((info.uri, bench, seq.name))
        track, worker, error = (r.track, r.worker, r.error) if r is not None else (None, None, None)
        rows.append(fmt.sequence_row(info.name, info.epoch, bench, seq.name, len(seq), sc, track, worker, error))
    (bench_dir / "per_sequence.csv").write_text(fmt.per_sequence_csv(rows))
    return sc, rows


def _rank(s: EvaluateSettings, infos: list[CheckpointInfo], scores: dict, plots: list[str],
          out_dir: Path) -> dict | None:
    """The best checkpoint on the validation benchmark, and the metric-vs-epoch plot (>= 2 epochs)."""
    best = fmt.best_checkpoint(s.validation, infos, scores) if s.validation is not None else None
    if len({i.epoch for i in infos if i.epoch is not None}) >= 2:
        points = fmt.epoch_points(infos, scores, s.benchmarks)
        if points:
            plots.append(str(plot_metric_vs_epoch(points, out_dir / "plots" / "metric_vs_epoch.png", best,
                                                  titles=s.titles)))
    return best


def _write(report: dict, rows: list[dict], infos: list[CheckpointInfo], out_dir: Path) -> None:
    """The files covering every checkpoint: per_sequence.csv, summary.md, evaluation.json."""
    names = {i.uri: i.name for i in infos}
    (out_dir / "per_sequence.csv").write_text(fmt.per_sequence_csv(rows))
    table = {f"{names[u]} / {b}": sc for u, per in report["scores"].items() for b, sc in per.items()}
    (out_dir / "summary.md").write_text(fmt.summary_table(table))
    (out_dir / "evaluation.json").write_text(json.dumps(fmt.without_curves(report), indent=2))
