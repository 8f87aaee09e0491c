"""The data-preparation job on Ray: dataset downloads -> parquet pair shards on a local disk or S3.

:func:`run_prepare` reads as its steps over one :class:`PrepareSettings`: validate the settings and the
output; list and plan every dataset on the driver (:mod:`data_prep.listing`); claim ``OUT`` for this job
(:mod:`data_prep.manifest`); crop the shards not done yet in plain Ray tasks (why not Ray Data:
:func:`_run_tasks`), one per shard, largest first (:func:`process_shard` around
:func:`data_prep.shards.write_shard`); collect their sidecars; write the manifest last. A shard task keeps one
core busy (one OpenCV thread, :func:`shard_task_cpus`) and the malloc thresholds of
:func:`pipelines.raysession.keep_large_buffers_in_heap`.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from data_prep.listing import (
    DatasetState,
    dataset_roots,
    list_datasets,
    read_table,
    shard_tasks,
    shards_to_run,
    spill_folder,
)
from data_prep.manifest import claim_output, done_shards, job_document, write_manifest
from data_prep.pairs import pair_counts
from data_prep.shards import DEFAULT_SHARD_PAIRS, CropSettings, ShardTask, write_shard
from ocean.storage import OutputStore
from pipelines.listing import RayLister
from pipelines.raysession import ensure_ray, keep_large_buffers_in_heap

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
        max_in_flight: shard tasks submitted at once (default twice the cluster's CPUs / task_cpus).
        progress: show a tqdm bar of shards on stderr.
        log: where one-line messages go (None: silent).
        listing: ``"ray"``: annotation files are parsed by Ray tasks, split by sequence folders
            (:mod:`pipelines.listing`); ``"driver"``: by the driver alone. Both give the same plan.
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
    log: Callable[[str], None] | None = print
    listing: str = "ray"


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
    ``seconds`` (all), ``seconds_listing`` (list + plan), ``seconds_crop`` (submitting the first shard task to
    the last result, Ray start excluded), ``driver_cpu_seconds_crop`` (the driver's CPU time in that phase),
    ``timeline`` (per shard task: shard, pid, start / end in seconds from the phase's start, CPU seconds),
    ``task_cpus`` (CPUs each shard task reserved), ``workers`` (per pid: node, shards, seconds, CPU seconds in
    shard tasks, peak RSS in MB),
    ``nodes`` (distinct Ray nodes that ran shards) and ``driver_peak_rss_mb``.
    """
    s = settings
    t_start = time.perf_counter()
    say = s.log or (lambda _msg: None)
    roots, crop_settings, store = _validate(s)
    fs = store.filesystem()
    spill_dir = spill_folder()
    started_ray = ensure_ray(s.ray_address, quiet=False) if s.listing == "ray" else False
    try:
        lister = RayLister() if s.listing == "ray" else read_table
        states = list_datasets(roots, s.cfg, s.seed, pair_counts(s.cfg.data, s.pairs), s.shard_pairs,
                               s.reader_options, spill_dir, say, lister, explicit=s.pairs or ())
        t_listed = time.perf_counter()
        job_doc = job_document(states, roots, s.cfg, crop_settings, s.seed, s.shard_pairs, s.reader_options)
        claim_output(store, job_doc, fs)
        done = done_shards(store, states, job_doc["fingerprint"], fs)
        total = sum(len(st.shards) for st in states.values())
        say(f"{total} shards, {len(done)} already done" if done else f"{total} shards")
        crop = _crop_shards(s, store, states, done, job_doc["fingerprint"], crop_settings, total)
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
    if crop.failed:
        raise ShardFailed(f"{len(crop.failed)} of {total} shards failed ({', '.join(crop.failed[:5])}"
                          f"{', ...' if len(crop.failed) > 5 else ''}); the others are stored: re-run the same "
                          "command to finish the job")
    manifest = write_manifest(store, states, done, job_doc, roots, fs)
    run_info = {
        "seconds": time.perf_counter() - t_start, "seconds_listing": t_listed - t_start,
        **crop.info(), "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    run_info["shards_skipped"] = total - run_info["shards_run"]
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
                 done: dict[str, dict], job: str, crop_settings: CropSettings, total: int) -> _CropPhase:
    """The shards not in ``done`` as Ray tasks, largest first; their sidecars are added to ``done``."""
    todo = shards_to_run(states, done)
    crop = _CropPhase(done)
    if todo:
        crop.run(store, shard_tasks(states, todo, job), total, crop_settings, ray_address=settings.ray_address,
                 task_cpus=settings.task_cpus, max_in_flight=settings.max_in_flight, progress=settings.progress)
    return crop


def process_shard(store: OutputStore, task: ShardTask, settings: CropSettings) -> dict:
    """The shard task: :func:`data_prep.shards.write_shard` with one OpenCV thread and large freed buffers
    kept in the heap. Returns the sidecar plus ``runtime`` (pid, node, wall start / end, CPU seconds, peak RSS
    of this process), not stored."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from Ray tasks; one OpenCV thread per task
    keep_large_buffers_in_heap()  # a fresh mmap + page faults per decoded frame otherwise (BENCHMARKS.md)
    wall0, c0 = time.time(), time.process_time()
    sidecar = write_shard(store, task, settings)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except ImportError:
        node = "local"
    return {**sidecar, "runtime": {"pid": os.getpid(), "node": node, "start": wall0, "end": time.time(),
                                   "cpu_seconds": time.process_time() - c0, "peak_rss_mb": peak_kb / 1024.0}}



def _run_tasks(store: OutputStore, tasks: Iterable[ShardTask], total: int, settings: CropSettings, *,
               task_cpus: float, max_in_flight: int | None, on_result: Callable[[dict], None],
               progress: bool, initial: int) -> list[str]:
    """Submit shard tasks with at most ``max_in_flight`` running; return the names of failed shards.

    Why Ray tasks and not Ray Data: the unit of work is a whole shard whose output is a file the task writes
    itself (Ray Data's writer names files randomly, ray_stack.md §2), the input is a small plan rather than a
    dataset to read, and the driver needs every shard's exact result for the manifest. Plain tasks give that
    with a bounded window of in-flight tasks (streaming, constant driver memory), retries on worker / node
    loss, and none of the 2-core actor-pool / read-task deadlocks (ray_stack.md §2).
    """
    import ray
    from tqdm import tqdm

    remote = ray.remote(process_shard).options(num_cpus=task_cpus, max_retries=3, retry_exceptions=False)
    if max_in_flight is None:
        max_in_flight = max(2, int(2 * ray.cluster_resources().get("CPU", 2) / max(task_cpus, 1e-3)))
    store_ref = ray.put(store)
    settings_ref = ray.put(settings)
    pending: dict = {}
    failed: list[str] = []
    bar = tqdm(total=total, initial=initial, desc="shards", unit="shard", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    def collect(block: bool) -> None:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
        for ref in ready:
            name = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # a bug or a lost node after retries: report, finish the others
                failed.append(name)
                print(f"shard {name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                      file=sys.stderr)
            else:
                on_result(result)
            bar.update(1)

    try:
        for task in tasks:
            while len(pending) >= max_in_flight:
                collect(block=True)
            pending[remote.remote(store_ref, task, settings_ref)] = task.name
        while pending:
            collect(block=True)
    finally:
        bar.close()
    return failed


def shard_task_cpus() -> float:
    """CPUs a shard task reserves by default: 1, except on a one-node cluster with more logical CPUs than this
    machine has cores, where it is logical CPUs / cores, so that no more shard tasks run at once than there are
    cores. A shard task keeps one core busy (one OpenCV thread), and the local Ray of
    :mod:`pipelines.raysession` has at least 4 logical CPUs (ray_stack.md §2): 4 shard tasks time-sliced on 2
    cores cost more CPU per frame and gave fewer frames/s than 2 (BENCHMARKS.md). On several nodes the other
    nodes' cores are not known here (``ray start`` gives a node one logical CPU per core), so it stays 1.
    """
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cores = os.cpu_count() or 1
    if len(nodes) != 1:
        return 1.0
    logical = float(nodes[0].get("Resources", {}).get("CPU", 0.0))
    return logical / cores if logical > cores else 1.0


class _CropPhase:
    """The crop step on Ray, and its timings: results go into ``done``; each shard task run's ``runtime`` (pid,
    node, start / end, CPU seconds, peak RSS) is kept, per worker process figures are derived from them."""

    def __init__(self, done: dict[str, dict]) -> None:
        self.done = done
        self.failed: list[str] = []
        self.runs: list[dict] = []  # per shard task: its ``runtime`` and shard name
        self.seconds = self.driver_cpu_seconds = 0.0
        self.epoch = time.time()
        self.task_cpus: float | None = None

    def run(self, store: OutputStore, tasks: Iterable[ShardTask], total: int, settings: CropSettings, *,
            ray_address: str | None, task_cpus: float | None, max_in_flight: int | None, progress: bool) -> None:
        started_ray = ensure_ray(ray_address, quiet=False)
        task_cpus = self.task_cpus = shard_task_cpus() if task_cpus is None else task_cpus
        t0, self.epoch, cpu0 = time.perf_counter(), time.time(), time.process_time()
        try:
            self.failed = _run_tasks(store, tasks, total, settings, task_cpus=task_cpus,
                                     max_in_flight=max_in_flight, on_result=self._on_result, progress=progress,
                                     initial=len(self.done))
            self.seconds, self.driver_cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            if started_ray:
                import ray

                ray.shutdown()

    def _on_result(self, result: dict) -> None:
        self.runs.append({"shard": result["shard"], **result.pop("runtime")})
        self.done[result["shard"]] = result

    def info(self) -> dict:
        workers: dict[int, dict] = {}
        for r in self.runs:
            w = workers.setdefault(r["pid"], {"node": r["node"], "shards": 0, "seconds": 0.0, "cpu_seconds": 0.0,
                                              "peak_rss_mb": 0.0})
            w["shards"] += 1
            w["seconds"] += r["end"] - r["start"]
            w["cpu_seconds"] += r["cpu_seconds"]
            w["peak_rss_mb"] = max(w["peak_rss_mb"], r["peak_rss_mb"])
        timeline = [{"shard": r["shard"], "pid": r["pid"], "start": r["start"] - self.epoch,
                     "end": r["end"] - self.epoch, "cpu_seconds": r["cpu_seconds"]} for r in self.runs]
        return {"seconds_crop": self.seconds, "driver_cpu_seconds_crop": self.driver_cpu_seconds,
                "task_cpus": self.task_cpus, "workers": workers, "timeline": timeline,
                "nodes": len({w["node"] for w in workers.values()}), "shards_run": len(self.runs)}


__all__ = ["PrepareSettings", "prepare", "run_prepare", "process_shard", "shard_task_cpus", "ShardFailed"]
