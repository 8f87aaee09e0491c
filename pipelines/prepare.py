"""The data-preparation job on Ray: dataset downloads -> parquet pair shards on a local disk or S3.

:func:`run_prepare` reads as its steps over one :class:`PrepareSettings`: validate the settings and the
output; list every dataset (annotation files parsed by Ray tasks, :mod:`pipelines.listing`, or by the driver)
and plan it on the driver (:mod:`data_prep.listing`); claim ``OUT`` for this job
(:mod:`data_prep.manifest`); crop the shards not done yet in a Ray Data pipeline of shard work items, largest
first, one task per shard around :func:`data_prep.shards.write_shard` (:mod:`pipelines.prepare_data`);
collect their sidecars as they stream back; write the manifest last. The job is one MLflow run
(:mod:`pipelines.prepare_mlflow`). A shard task keeps one core busy (one
OpenCV thread, :func:`shard_task_cpus`) and the malloc thresholds of
:func:`pipelines.raysession.keep_large_buffers_in_heap`.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from data_prep.listing import (
    DatasetState,
    dataset_roots,
    list_datasets,
    read_table,
    shards_to_run,
    spill_folder,
)
from data_prep.manifest import (
    cap_lines,
    claim_output,
    done_shards,
    job_document,
    rejection_lines,
    write_manifest,
)
from data_prep.pairs import pair_counts
from data_prep.readers import config_reader_options
from data_prep.shards import DEFAULT_SHARD_PAIRS, CropSettings
from ocean.storage import OutputStore
from pipelines.listing import RayLister
from pipelines.prepare_data import CropPhase, process_shard, shard_task_cpus
from pipelines.prepare_mlflow import log_prepare_result, open_prepare_run
from pipelines.raysession import ensure_ray
from pipelines.tracking import NullRunLogger, RunLogger

if TYPE_CHECKING:
    from ocean.config import OceanConfig


class ShardFailed(RuntimeError):
    """One or more shard tasks raised; the others are on disk and a re-run finishes the job."""


@dataclass(frozen=True)
class PrepareSettings:
    """One preparation job.

    Attributes:
        datasets: ``{name: root}`` with name in :data:`data_prep.tracks.DATASETS`.
        out: a folder, ``file://`` URI or ``s3://bucket/prefix`` (endpoint from ``AWS_ENDPOINT_URL`` or
            ``?endpoint_override=host:port&scheme=http``).
        cfg: :class:`ocean.config.OceanConfig` (``data``: pair counts, ranges, crop frame, JPEG quality;
            ``augment``: the stored crop sides; ``model``: exemplar / search sizes).
        pairs: per-dataset pair counts overriding ``pairs_per_epoch * pool_factor`` (all capped: facts §7.6).
        seed: the plan's seed.
        shard_pairs: most pairs per shard.
        jpeg_quality: overrides ``cfg.data.jpeg_quality``.
        ray_address: a Ray cluster to use (default ``$RAY_ADDRESS``, else a local Ray; an already initialised
            Ray is used as it is).
        reader_options: per-dataset reader keyword arguments (e.g. ``{"ytbb": {"media": "videos"}}``).
        task_cpus: CPUs each shard task reserves (default :func:`shard_task_cpus`: 1, or logical CPUs per core
            on a one-node cluster with more logical CPUs than cores).
        max_in_flight: shard tasks in flight at once (default twice the cluster's CPUs / task_cpus).
        progress: show Ray Data's progress (bars on a terminal, else a text block every few seconds).
        log: where one-line messages go (None: silent).
        listing: ``"ray"``: annotation files are parsed by Ray tasks, split by sequence folders
            (:mod:`pipelines.listing`); ``"driver"``: by the driver alone. Both give the same plan.
        mlflow_uri: the MLflow store (default :func:`pipelines.tracking.tracking_uri` of ``out``);
            ``experiment`` / ``run_name``: where the job's run goes (:mod:`pipelines.prepare_mlflow`);
            ``log_mlflow=False``: no run.
    """

    datasets: dict[str, str]
    out: str
    cfg: OceanConfig
    _: KW_ONLY
    pairs: dict[str, int] | None = None
    seed: int = 0
    shard_pairs: int = DEFAULT_SHARD_PAIRS
    jpeg_quality: int | None = None
    ray_address: str | None = None
    reader_options: dict[str, dict] | None = None
    task_cpus: float | None = None
    max_in_flight: int | None = None
    progress: bool = True
    log: Callable[[str], None] | None = logging.getLogger(__name__).info
    listing: str = "ray"
    mlflow_uri: str | None = None
    experiment: str = "ocean-prepare"
    run_name: str = "prepare"
    log_mlflow: bool = True


def prepare(settings: PrepareSettings) -> dict:
    """Prepare parquet pair shards from dataset downloads; return the manifest (also at ``out/manifest.json``).

    Raises:
        ocean.storage.StorageError: the output cannot be written (before any work).
        data_prep.manifest.JobMismatch: ``out`` holds a different job.
        ShardFailed: some shard tasks raised (the rest is stored; re-run to finish).
    """
    manifest, _ = run_prepare(settings)
    return manifest


def run_prepare(settings: PrepareSettings) -> tuple[dict, dict]:
    """The job; returns ``(manifest, run_info)``. Raises as :func:`prepare`.

    ``run_info`` (not stored) holds what varies between runs: ``shards_run``, ``shards_skipped``,
    ``seconds`` (all), ``seconds_listing`` (list + plan), ``seconds_crop`` (putting the shard inputs in the
    object store to the last result, Ray start excluded), ``driver_cpu_seconds_crop`` (the driver's CPU time
    in that phase), ``timeline`` (per shard task: shard, pid, start / end in seconds from the phase's start,
    CPU seconds), ``crop_started_at`` (that start, seconds since the Unix epoch), ``task_cpus`` (CPUs each
    shard task reserved), ``workers`` (per pid: node, shards, seconds, CPU seconds in shard tasks, peak RSS in
    MB), ``nodes`` (distinct Ray nodes that ran shards),
    ``shards_found_stored`` (shard tasks that found their shard already stored, e.g. a retry after a lost
    node), ``data_stats`` (Ray Data's per-operator stats of the crop phase, text), ``driver_peak_rss_mb`` and
    ``mlflow_run_id`` (None without MLflow).
    """
    s = settings
    t_start = time.perf_counter()
    say = s.log or (lambda _msg: None)
    roots, crop_settings, store = _validate(s)
    fs = store.filesystem()
    spill_dir = spill_folder()
    started_ray = ensure_ray(s.ray_address, quiet=False) if s.listing == "ray" else False
    run: RunLogger = NullRunLogger()
    try:
        lister = RayLister() if s.listing == "ray" else read_table
        options = config_reader_options(s.cfg.data, roots, s.reader_options)  # LaSOT train split, VOT exclusion
        states = list_datasets(roots, s.cfg, s.seed, pair_counts(s.cfg.data, s.pairs), s.shard_pairs,
                               options, spill_dir, say, lister, explicit=s.pairs or ())
        t_listed = time.perf_counter()
        job_doc = job_document(states, roots, s.cfg, crop_settings, s.seed, s.shard_pairs, options)
        run = open_prepare_run(s, job_doc, roots)
        claim_output(store, job_doc, fs)
        done = done_shards(store, states, job_doc["fingerprint"], fs)
        total = sum(len(st.shards) for st in states.values())
        say(f"{total} shards, {len(done)} already done" if done else f"{total} shards")
        crop = _crop_shards(s, store, states, done, job_doc["fingerprint"], crop_settings)
    except BaseException as exc:  # the run ends FAILED (or as RunLogger ends a run on this exception)
        run.__exit__(type(exc), exc, exc.__traceback__)
        raise
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
    with run:  # FINISHED, or FAILED with the error
        if crop.failed:
            raise ShardFailed(f"{crop.stopped} ({len(crop.failed)} of {total} shards not done)" if crop.stopped
                              else f"{len(crop.failed)} of {total} shards failed ({', '.join(crop.failed[:5])}"
                              f"{', ...' if len(crop.failed) > 5 else ''}); the others are stored: re-run the "
                              "same command to finish the job")
        manifest = write_manifest(store, states, done, job_doc, roots, fs)
        run_info = {
            "seconds": time.perf_counter() - t_start, "seconds_listing": t_listed - t_start,
            **crop.info(), "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        }
        run_info["shards_skipped"] = total - run_info["shards_run"]
        log_prepare_result(run, s, manifest, run_info, cap_lines(manifest) + rejection_lines(manifest))
    run_info["mlflow_run_id"] = run.run_id or None
    return manifest, run_info


def _validate(settings: PrepareSettings) -> tuple[dict[str, str], CropSettings, OutputStore]:
    """The dataset roots (absolute), the crop settings and the output store, checked writable before any work
    (missing bucket, unreachable endpoint, no write access)."""
    if settings.listing not in ("ray", "driver"):
        raise ValueError(f"listing must be 'ray' or 'driver', got {settings.listing!r}")
    roots = dataset_roots(settings.datasets)
    crop_settings = CropSettings.from_config(settings.cfg, settings.jpeg_quality)
    store = OutputStore.from_uri(settings.out)
    store.check_writable()
    return roots, crop_settings, store


def _crop_shards(settings: PrepareSettings, store: OutputStore, states: dict[str, DatasetState],
                 done: dict[str, dict], job: str, crop_settings: CropSettings) -> CropPhase:
    """The shards not in ``done``, largest first, through the Ray Data pipeline; their sidecars are added to
    ``done``."""
    todo = shards_to_run(states, done)
    crop = CropPhase(done)
    if todo:
        crop.run(store, states, todo, job, crop_settings, ray_address=settings.ray_address,
                 task_cpus=settings.task_cpus, max_in_flight=settings.max_in_flight, progress=settings.progress)
    return crop


__all__ = ["PrepareSettings", "prepare", "run_prepare", "process_shard", "shard_task_cpus", "ShardFailed"]
