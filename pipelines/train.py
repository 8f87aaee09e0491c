"""``ocean train``'s driver: train a config on prepared pair records with Ray Train (DDP), resumable.

:func:`train` runs named steps over one :class:`TrainSettings` (validate -> connect -> open the run -> fit ->
collect -> log); it fails before Ray starts on unusable data, right after joining Ray on an MLflow store that
the other nodes cannot reach, and a re-run continues the same run folder and MLflow run. Epoch composition
and batches: :mod:`data_prep.epochs`; a rank's loop: :mod:`pipelines.train_loop`; its input stream:
:mod:`pipelines.train_input`; checkpoint files: :mod:`ocean.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from data_prep.epochs import BatchPlan, batch_plan, epoch_selection, rank_rows
from data_prep.pair_index import TrainingDataError, list_pair_files, manifest_sha256, read_pair_index
from ocean import storage
from ocean.checkpoint import list_checkpoints, newest_readable, remove_stale_temporaries
from ocean.config import OceanConfig
from pipelines import tracking
from pipelines.console import forward_worker_logs
from pipelines.lineage import link_training_data
from pipelines.mlflow_models import SYSTEM_METRICS_INTERVAL_S
from pipelines.raysession import IDLE_SCHEDULING_SLEEP_S
from pipelines.tracking import RunLogger
from pipelines.train_input import training_data_error
from pipelines.train_loop import DIVERGED_FILE, LoopSettings, train_loop
from pipelines.train_plots import write_training_plots


@dataclass(frozen=True)
class TrainSettings:
    """One training run: ``cfg`` on the pair records at ``data``; checkpoints and Ray state under ``out``.

    Attributes:
        data: folder or ``s3://`` URI of pair-record parquet files (``ocean prepare`` output).
        out: folder or ``s3://`` URI for ``checkpoints/epoch-NNNN.pt``, Ray's run state (``ray/``) and, for
            a local folder, the default MLflow store ``mlflow.db``. Re-running with the same ``out`` and
            ``run_name`` resumes at the first unfinished epoch.
        workers: DDP workers (gloo on CPU, NCCL on GPU); ``optim.batch_size`` stays the global batch.
        max_worker_batch: largest micro-batch per worker; above it gradients are accumulated.
        cpus_per_worker: CPUs reserved per training worker (default 0.5 on CPU so Ray Data's decode tasks
            get CPUs on small machines, ray_stack.md §4; 1 with a GPU).
        seed: model init, epoch composition and augmentation seed.
        prefetch_batches: micro-batches each rank's input stream keeps fetched (in whole work items).
        data_cpus: CPUs each decode + augment task of the input stream reserves
            (:func:`pipelines.train_input.pair_stream`); None: two tasks per physical core of the rank's machine
            (:func:`pipelines.stream_start.data_task_cpus`).
        data_idle_sleep_s: the input stream's scheduling loop sleeps this long after a quick step that
            changed nothing instead of spinning (:func:`pipelines.raysession.calm_idle_scheduling_loop`); 0: Ray
            Data's own loop.
        data_head_start: each rank decodes its stream's first work item (up to 8 micro-batches) in its own
            process while Ray Data starts the tasks for the rest (:class:`pipelines.stream_start.HeadStart`;
            the same rows); False: every batch comes from the tasks.
        kill_worker_at: ``(epoch, step, rank)``: that rank SIGKILLs itself once (a marker under ``out``
            remembers it) -- for fault-tolerance tests and drills.
        system_metrics: rank 0 logs its node's CPU, memory, disk, network (and GPU with ``pynvml``) as
            ``system/...`` metrics every ``system_metrics_interval`` seconds
            (:func:`pipelines.mlflow_models.system_metrics`).
    """

    data: str
    out: str
    cfg: OceanConfig
    _: KW_ONLY
    workers: int = 2
    use_gpu: bool = False
    gpu_wait_s: float = 0.0  # --wait-for-gpus: pipelines.raysession.require_gpus
    max_worker_batch: int | None = None
    cpus_per_worker: float | None = None
    seed: int = 0
    ray_address: str | None = None
    mlflow_uri: str | None = None
    experiment: str = "ocean-train"
    run_name: str | None = None
    max_failures: int = 2
    prefetch_batches: int = 2
    data_cpus: float | None = None
    data_idle_sleep_s: float = IDLE_SCHEDULING_SLEEP_S
    data_head_start: bool = True
    kill_worker_at: tuple[int, int, int] | None = None
    verbose: bool = True
    system_metrics: bool = True
    system_metrics_interval: float = SYSTEM_METRICS_INTERVAL_S


def train(settings: TrainSettings) -> dict[str, Any]:
    """Train with Ray Train.

    Steps: validate (batch plan, pair records, the first epoch's draw: fails before Ray starts) -> connect
    (start or join Ray; an MLflow store that is a file here is refused on a cluster of several nodes, where
    rank 0 logs from another node) -> open the run (the run folder, and the MLflow run, created or reopened
    by its tag ``ocean.run_key`` so that a re-run continues it) -> fit (a ``TorchTrainer`` over
    :func:`pipelines.train_loop.train_loop`, which writes ``OUT/checkpoints/epoch-NNNN.pt`` after every epoch
    and resumes from the newest) -> collect (divergence, checkpoints, history) -> log (final checkpoint, its
    URI list and the model file).

    Returns:
        ``{"epochs", "final_loss", "metrics" (last epoch), "losses" (per epoch), "history",
        "checkpoints" (URIs, oldest first), "mlflow_run_id", "mlflow_uri", "model_uri" (the final
        ``mlflow.pytorch`` model, ``models:/m-<id>``), "prepare_run_id", "batch_plan", "resumed_from",
        "orphans_removed", "plots" (``OUT/plots/training_{loss,lr}.png``)}``.

    Raises:
        TrainingDiverged: ``optim.max_bad_steps`` consecutive skipped steps (message names the step).
        TrainingDataError: no or unusable pair records.
        TrackingStoreError: a sqlite / file MLflow store on a Ray cluster of several nodes (before any run).
        MissingGpus: ``use_gpu`` on a cluster that has (and can add) fewer GPUs than ``workers``.
    """
    s = settings
    log = logging.getLogger(__name__).info if s.verbose else (lambda *a, **k: None)
    plan, files, manifest = _validate(s, log)
    _connect(s)
    name = s.run_name or "ocean-train"
    done_before = _prepare_out(s.out)
    run, prepare_run = _open_run(s, plan, len(files), manifest, name, log)
    with run:  # FAILED (and an ocean.error tag) when anything below raises, else FINISHED
        with forward_worker_logs():  # rank 0's resume point and progress on this console
            result = _fit(s, plan, run, name)
        uris, last, orphans = _collect(s.out, result, name)
        model = _log_outputs(run, uris, s.data, int(last["epoch"]))
        plots = write_training_plots(run, last.get("history", []), s.out, f"Training {name}")
    metrics = dict(last.get("metrics", {}))
    history = list(last.get("history", []))
    return {
        "epochs": int(last["epoch"]), "final_loss": metrics.get("loss"), "metrics": metrics,
        "losses": [h["loss"] for h in history], "history": history, "checkpoints": uris,
        "mlflow_run_id": run.run_id, "mlflow_uri": run.uri, "model_uri": model["model_uri"],
        "prepare_run_id": prepare_run, "batch_plan": dataclasses.asdict(plan),
        "resumed_from": done_before[-1][0] if done_before else 0, "orphans_removed": orphans,
        "plots": plots,
    }


def _validate(s: TrainSettings, log) -> tuple[BatchPlan, list[str], str | None]:
    """The batch plan, the pair files and the data manifest's sha256; fails fast (before Ray starts) on
    missing data or an epoch shorter than one global batch."""
    plan = batch_plan(s.cfg.optim.batch_size, s.workers, s.max_worker_batch)
    log(plan.describe())
    fs, files = list_pair_files(s.data)
    storage.OutputStore.from_uri(s.out).check_writable()  # StorageError naming the cause, before Ray starts
    manifest = manifest_sha256(s.data)
    keys, datasets = read_pair_index(fs, files)
    selection, composition = epoch_selection(keys, datasets, s.cfg.data.pairs_per_epoch, s.seed, 0)
    rank_rows(selection, 0, plan)  # fails fast when an epoch is shorter than one global batch
    log(f"{len(keys)} prepared pairs in {len(files)} files; epoch 1 draws "
        + ", ".join(f"{n} {c['taken']}/{c['available']}" for n, c in composition.items() if c["wanted"]))
    short = {n: c for n, c in composition.items() if c["taken"] < c["wanted"]}
    if short:
        logging.getLogger(__name__).warning("fewer prepared pairs than data.pairs_per_epoch asks for: " + ", ".join(
            f"{n} {c['taken']} of {c['wanted']}" for n, c in short.items()))
    return plan, files, manifest


def _say(line: str) -> None:
    """A ``warning: ...`` line at warning level, any other at info."""
    log = logging.getLogger(__name__)
    log.warning(line.removeprefix("warning: ")) if line.startswith("warning: ") else log.info(line)


def _prepare_out(out: str) -> list[tuple[int, str]]:
    """The epoch files already under ``out`` (oldest first); clears what a killed or diverged run left."""
    point, _ = newest_readable(out)  # a damaged newest epoch file: resume from the one before, and say so
    for line in point.messages():  # also said by rank 0 when a restarted worker group resumes
        _say(line)
    done_before = [c for c in list_checkpoints(out) if c[0] <= point.epoch]
    remove_stale_temporaries(out)
    if storage.exists(storage.join(out, DIVERGED_FILE)):  # a re-run tries again from the last good epoch
        fs_out, p = storage.resolve(storage.join(out, DIVERGED_FILE))
        fs_out.delete_file(p)
    return done_before


def _connect(s: TrainSettings) -> None:
    """Start (or join) Ray; then refuse (TrackingStoreError) an MLflow store that is a file on this machine
    when the cluster has other nodes, where rank 0 may run and log."""
    from pipelines.raysession import alive_nodes, ensure_ray, require_gpus

    ensure_ray(s.ray_address)
    require_gpus(s.workers if s.use_gpu else 0, wait_s=s.gpu_wait_s)  # else Ray Train waits for them forever
    tracking.require_shared_store(tracking.tracking_uri(s.mlflow_uri, s.out), alive_nodes())


def _open_run(s: TrainSettings, plan: BatchPlan, n_files: int, manifest: str | None, name: str,
              log) -> tuple[RunLogger, str | None]:
    """The MLflow run keyed by ``(out, run name)``: a new one with tags, params and its dataset input, or
    the earlier one reopened as it is (a re-run continues it); and the prepare run's id when known."""
    uri = tracking.tracking_uri(s.mlflow_uri, s.out)
    run_key = hashlib.sha1(f"{tracking.public_uri(s.out)}|{name}".encode()).hexdigest()[:16]
    tags = {"ocean.run_key": run_key, "ocean.data": tracking.public_uri(s.data),
            "ocean.out": tracking.public_uri(s.out), "mlflow.runName": name, "ocean.manifest_sha256": manifest or "none"}
    run = RunLogger.start(uri, s.experiment, name, tags=tags, resume_key=("ocean.run_key", run_key))
    prepare_run = run.client.get_run(run.run_id).data.tags.get("ocean.prepare_run_id") if run.resumed \
        else link_training_data(run, s.data, manifest)
    if run.resumed:
        log(f"continuing MLflow run {run.run_id}")
    else:
        run.log_config(s.cfg, {
            "run.workers": s.workers, "run.use_gpu": s.use_gpu, "run.seed": s.seed,
            "run.per_worker_batch": plan.per_worker, "run.micro_batch": plan.micro_batch,
            "run.accumulate": plan.accumulate, "run.max_worker_batch": s.max_worker_batch,
            "run.data": tracking.public_uri(s.data), "run.out": tracking.public_uri(s.out),
            "run.manifest_sha256": manifest or "none", "run.pair_files": n_files})
    log(f"MLflow {tracking.public_uri(uri)} experiment {s.experiment!r} run {run.run_id}")
    if prepare_run:
        log(f"data prepared by MLflow run {prepare_run}")
    return run, prepare_run


def _fit(s: TrainSettings, plan: BatchPlan, run: RunLogger, name: str):
    """Run the Ray Train job (Ray is up: :func:`_connect`); returns its ``Result``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage_path, storage_fs = _ray_storage(s.out)
    cpus = s.cpus_per_worker if s.cpus_per_worker is not None else (1.0 if s.use_gpu else 0.5)
    loop = LoopSettings(cfg=s.cfg, data=s.data, out=s.out, seed=s.seed, plan=plan, run=run,
                        prefetch_batches=s.prefetch_batches, data_cpus=s.data_cpus,
                        data_idle_sleep_s=s.data_idle_sleep_s, data_head_start=s.data_head_start,
                        kill_worker_at=tuple(s.kill_worker_at) if s.kill_worker_at else None,
                        system_metrics_interval=s.system_metrics_interval if s.system_metrics else None)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"settings": loop},  # Ray Train takes a dict: the typed settings under one key
        scaling_config=ScalingConfig(num_workers=s.workers, use_gpu=s.use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=s.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    try:
        return trainer.fit()
    except Exception as exc:  # unusable pair records found by a worker: its message, not Ray's wrapper
        cause = training_data_error(exc)
        if cause is None:
            raise
        raise TrainingDataError(str(cause)) from None


def _collect(out: str, result, name: str) -> tuple[list[str], dict, list[str]]:
    """``(checkpoint URIs oldest first, the newest checkpoint, removed Ray orphans)`` after the fit.

    Raises:
        TrainingDiverged: the workers stopped on bad steps (``OUT/DIVERGED.json``).
    """
    from ocean.checkpoint import load_checkpoint
    from ocean.engine import TrainingDiverged

    diverged = storage.join(out, DIVERGED_FILE)
    if storage.exists(diverged):
        raise TrainingDiverged(json.loads(storage.read_bytes(diverged))["error"])
    keep = {result.checkpoint.path} if result.checkpoint is not None else set()
    orphans = clean_ray_orphans(out, name, keep)
    found = list_checkpoints(out)
    if not found:
        raise RuntimeError(f"training finished without writing a checkpoint under {out}")
    return [u for _, u in found], load_checkpoint(found[-1][1]), orphans


def _log_outputs(run: RunLogger, uris: list[str], data: str, epoch: int) -> dict[str, str]:
    """Tag the final checkpoint; log the checkpoint URI list (artifact) and the final checkpoint's network as
    the ``mlflow.pytorch`` model ``model`` of the run (signature from a pair of ``data``); returns
    ``{"model_id", "model_uri"}``."""
    from pipelines.mlflow_models import log_checkpoint_model

    tags = run.client.get_run(run.run_id).data.tags
    if tags.get("ocean.final_checkpoint") == tracking.public_uri(uris[-1]) and tags.get("ocean.final_model_uri"):
        model_uri = tags["ocean.final_model_uri"]  # a re-run that trained nothing: already logged
        return {"model_id": model_uri.removeprefix("models:/"), "model_uri": model_uri}
    run.set_tags({"ocean.final_checkpoint": tracking.public_uri(uris[-1])})
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "checkpoints.json").write_text(json.dumps([tracking.public_uri(u) for u in uris], indent=1))
        run.log_artifact(Path(tmp, "checkpoints.json"))
    model = log_checkpoint_model(run, uris[-1], "model", data=data, step=epoch, tags={
        "ocean.checkpoint_uri": tracking.public_uri(uris[-1]), "ocean.epoch": epoch, "ocean.role": "final"})
    run.set_tags({"ocean.final_model_uri": model["model_uri"]})
    return model


def _ray_storage(out: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Train under ``OUT/ray``."""
    fs, path = storage.resolve(storage.join(out, "ray"))
    if not storage.is_uri(out):
        Path(path).mkdir(parents=True, exist_ok=True)
        return path, None
    return path, fs


def clean_ray_orphans(out: str, name: str, keep: set[str]) -> list[str]:
    """Delete ``OUT/ray/NAME/checkpoint_*`` folders not in ``keep`` (uploaded, never registered, or
    superseded); returns the deleted paths."""
    from pyarrow import fs as pafs

    fs, root = storage.resolve(storage.join(out, "ray", name))
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return []
    keep_names = {Path(k.rstrip("/")).name for k in keep}
    removed = []
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_") \
                and info.base_name not in keep_names:
            fs.delete_dir(info.path)
            removed.append(info.path)
    return removed
