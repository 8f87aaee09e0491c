"""The crop step of the preparation job (:mod:`pipelines.prepare`) as a Ray Data pipeline.

A Dataset of shard work items -- rows ``{"dataset", "index"}``, largest shard first
(:func:`data_prep.listing.shards_to_run`), one row per block -- flows through one cropping map,
:func:`crop_items` (``map_batches`` with one item per batch, so one Ray task per shard reserving
``task_cpus``) in a task pool sized from the cluster's CPUs (:func:`shard_dataset`). Ray Data's streaming
executor submits the tasks as the pool frees, retries lost ones, shows its progress and keeps per-operator
stats (``run_info["data_stats"]``). A task builds its shard's
input from its dataset's :class:`ShardInputs` (the plan and the shards' draws, put in the object store once
per dataset: neither the driver nor the work items hold frame lists), skips a shard whose sidecar of this
job is already stored, else writes it with :func:`data_prep.shards.write_shard` (deterministic files, each
written atomically), and returns the sidecar as one JSON row, which reaches the driver as the shard
finishes. A shard whose task raises comes back as an error row; a task lost with its worker or node is
retried by Ray (:data:`SHARD_TASK_RETRIES`), and one that never returns is reported like a failed shard.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import resource
import time
import warnings
from dataclasses import dataclass

import numpy as np

from data_prep.listing import DatasetState
from data_prep.pairs import DatasetPlan
from data_prep.shards import CropSettings, ShardTask, shard_name, shard_paths, write_shard
from ocean.storage import OutputStore, describe_failure, s3_failure
from pipelines.raysession import ensure_ray, keep_large_buffers_in_heap

log = logging.getLogger("pipelines.prepare")

# Attempts after a system failure (the worker process or its node died) per shard task, Ray's max_retries;
# Ray Data's own default is unlimited, which would loop on a shard that kills its worker every time
# (ray_stack.md §2.7). A task that raises is not retried: the error is the shard's result.
SHARD_TASK_RETRIES = 3

# Shard results in a row that failed on the store itself (endpoint unreachable, access denied) before the job
# stops submitting shards. Each such failure already spent the SDK's own attempts on every request
# (OutputStore.filesystem, 3 per request); one failed shard can be that shard's own problem, and the first
# few results after an outage may come from tasks that began before it, so 3 in a row with one cause mean the
# store is gone for every shard (ray_stack.md §3.5).
MAX_STORE_FAILURES_IN_A_ROW = 3
STORE_FAILURES = ("endpoint unreachable", "access denied", "no such bucket")


@dataclass(frozen=True)
class ShardInputs:
    """What a shard task needs to build its :class:`~data_prep.shards.ShardTask`: one dataset's plan, its
    shards' draw arrays, the job fingerprint and where its frames are read from. Put in the object store once per dataset; its arrays are
    plain numpy / Arrow buffers, which tasks map from the object store without copying (:meth:`of`)."""

    plan: DatasetPlan
    shards: list[np.ndarray]
    job: str
    source: OutputStore | None = None  # where the frames are read from: None (local files) or the S3 store

    @classmethod
    def of(cls, state: DatasetState, job: str) -> ShardInputs:
        """The inputs of one dataset; a spilled table's ``np.memmap`` columns become plain ndarray views (Ray
        pickles a memmap in-band and every task would copy it; ray_stack.md §2.7)."""
        table = copy.copy(state.plan.tracks)
        for name, value in vars(table).items():
            if isinstance(value, np.memmap):
                setattr(table, name, value.view(np.ndarray))
        return cls(dataclasses.replace(state.plan, tracks=table), list(state.shards), job, state.source)

    def task(self, index: int) -> ShardTask:
        return ShardTask(self.plan.dataset, index, self.job, self.plan.videos(self.shards[index]), self.source)


def stored_sidecar(store: OutputStore, name: str, job: str, fs=None) -> dict | None:
    """The sidecar of shard ``name`` when this job already stored it (same job, parquet present), else None."""
    raw = store.read(shard_paths(name)["stats"], fs)
    if raw is None:
        return None
    sidecar = json.loads(raw)
    return sidecar if sidecar.get("job") == job and store.exists(sidecar["path"], fs) else None


def process_shard(store: OutputStore, task: ShardTask | tuple[ShardInputs, int], settings: CropSettings) -> dict:
    """One shard in this process: :func:`data_prep.shards.write_shard` with one OpenCV thread and large freed
    buffers kept in the heap, unless this job's sidecar is already stored (then that, ``runtime.skipped``).
    ``task`` is a built task or ``(inputs, index)``, built here. Returns the sidecar plus ``runtime`` (pid,
    node, wall start / end, CPU seconds, peak RSS of this process, skipped), not stored."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from Ray tasks; one OpenCV thread per task
    keep_large_buffers_in_heap()  # a fresh mmap + page faults per decoded frame otherwise (BENCHMARKS.md)
    wall0, c0 = time.time(), time.process_time()
    if isinstance(task, tuple):
        inputs, index = task
        task = inputs.task(index)
    fs = store.filesystem()
    sidecar = stored_sidecar(store, task.name, task.job, fs)
    skipped = sidecar is not None
    if sidecar is None:
        sidecar = write_shard(store, task, settings)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except ImportError:
        node = "local"
    return {**sidecar, "runtime": {"pid": os.getpid(), "node": node, "start": wall0, "end": time.time(),
                                   "cpu_seconds": time.process_time() - c0, "peak_rss_mb": peak_kb / 1024.0,
                                   "skipped": skipped}}


def crop_items(batch, *, store: OutputStore, settings: CropSettings, inputs: dict):
    """The cropping map: each work item of ``batch`` (a ``pyarrow.Table`` of ``dataset``, ``index``) processed
    by :func:`process_shard`, its inputs from ``inputs[dataset]`` (an ObjectRef of :class:`ShardInputs`).
    Returns a table of ``shard`` and ``result`` (the sidecar with ``runtime``, or ``{"error": ...}``, as JSON)."""
    import pyarrow as pa
    import ray

    names, results = [], []
    for dataset, index in zip(batch.column("dataset").to_pylist(), batch.column("index").to_pylist(), strict=True):
        name = shard_name(dataset, index)
        try:
            result = process_shard(store, (ray.get(inputs[dataset]), index), settings)
        except Exception as exc:  # a bug or an unwritable store: this shard's result; the others go on
            lines = str(exc).splitlines()
            result = {"shard": name, "error": f"{type(exc).__name__}: {lines[0] if lines else ''}"}
            if isinstance(exc, OSError) and s3_failure(exc) in STORE_FAILURES:
                result.update(error=describe_failure(exc), store=s3_failure(exc))
        names.append(name)
        results.append(json.dumps(result))
    return pa.table({"shard": pa.array(names, pa.string()), "result": pa.array(results, pa.string())})


def shard_dataset(todo: list[tuple[str, int]], store: OutputStore, settings: CropSettings, inputs: dict, *,
                  task_cpus: float, max_in_flight: int | None, progress: bool):
    """The pipeline: ``from_items`` (one work item per block, no read task: none of the 2-CPU read / actor
    deadlocks of ray_stack.md §2.3) -> ``map_batches(crop_items)`` in a task pool of ``max_in_flight`` tasks
    (default twice the cluster's CPUs / ``task_cpus``: the tasks Ray runs at once plus as many queued, so a
    finished task's CPU is taken at once; ray_stack.md §2.7). Its DataContext is the Dataset's own copy."""
    import ray

    if max_in_flight is None:
        max_in_flight = max(2, int(2 * ray.cluster_resources().get("CPU", 2) / max(task_cpus, 1e-3)))
    items = [{"dataset": name, "index": int(i)} for name, i in todo]
    with warnings.catch_warnings():  # max_retries has no named parameter in 2.60 (ray_stack.md §2.7)
        warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            crop_items, batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
            fn_kwargs={"store": store, "settings": settings, "inputs": inputs},
            compute=ray.data.TaskPoolStrategy(size=max_in_flight), num_cpus=task_cpus,
            max_retries=SHARD_TASK_RETRIES)
    ctx = ds.context
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    ctx.max_errored_blocks = -1  # a task lost after its retries: report the shard, finish the others
    # Ray Data's per-operator CPU reservation left up to half the CPUs idle with one map operator; the task
    # pool's size bounds the tasks in flight instead (ray_stack.md §2.7)
    ctx.op_resource_reservation_enabled = False
    return ds


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


class CropPhase:
    """The crop step on Ray Data, and its timings: results go into ``done``; each shard task run's
    ``runtime`` (pid, node, start / end, CPU seconds, peak RSS) is kept, per worker process figures are
    derived from them; ``data_stats`` is Ray Data's per-operator summary of the run."""

    def __init__(self, done: dict[str, dict]) -> None:
        self.done = done
        self.failed: list[str] = []
        self.runs: list[dict] = []  # per shard task: its ``runtime`` and shard name
        self.seconds = self.driver_cpu_seconds = 0.0
        self.epoch = time.time()
        self.task_cpus: float | None = None
        self.data_stats = ""
        self.reused = 0
        self.store_failures: list[str] = []  # the causes of the store failures in a row, up to now
        self.stopped: str | None = None  # why the job stopped submitting shards, if it did

    def run(self, store: OutputStore, states: dict[str, DatasetState], todo: list[tuple[str, int]], job: str,
            settings: CropSettings, *, ray_address: str | None, task_cpus: float | None,
            max_in_flight: int | None, progress: bool) -> None:
        """Crop the shards ``todo`` (``(dataset, index)``, in that order)."""
        import ray

        started_ray = ensure_ray(ray_address, quiet=False)
        try:
            self.task_cpus = task_cpus = shard_task_cpus() if task_cpus is None else task_cpus
            t0, self.epoch, cpu0 = time.perf_counter(), time.time(), time.process_time()
            inputs = {name: ray.put(ShardInputs.of(states[name], job)) for name in dict.fromkeys(n for n, _ in todo)}
            ds = shard_dataset(todo, store, settings, inputs, task_cpus=task_cpus, max_in_flight=max_in_flight,
                               progress=progress)
            returned: set[str] = set()
            batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
            for batch in batches:
                for name, raw in zip(batch.column("shard").to_pylist(), batch.column("result").to_pylist(),
                                     strict=True):
                    returned.add(name)
                    self._on_result(name, json.loads(raw))
                if self.stopped:
                    getattr(batches, "close", lambda: None)()  # no more shard tasks: the store is gone
                    break
            lost = [shard_name(n, i) for n, i in todo if shard_name(n, i) not in returned]
            for name in [] if self.stopped else lost:  # after a stop: shards never submitted, not lost
                log.warning(f"shard {name} failed: its task was lost (worker or node died {SHARD_TASK_RETRIES + 1} "
                            "times)")
            self.failed += lost
            self.seconds, self.driver_cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
            self.data_stats = ds.stats()
            log.debug("Ray Data stats of the crop phase:\n%s", self.data_stats)
        finally:
            if started_ray:
                ray.shutdown()

    def _on_result(self, name: str, result: dict) -> None:
        if "error" in result:
            self.failed.append(name)
            store = result.get("store")  # a store failure (s3_failure's kind), None for any other
            same = bool(store) and self.store_failures[-1:] == [store]
            self.store_failures = (self.store_failures + [store]) if same else ([store] if store else [])
            if len(self.store_failures) <= 1:  # one line per cause, not one per shard of an outage
                log.warning(f"shard {name} failed: {result['error']}")
            if len(self.store_failures) >= MAX_STORE_FAILURES_IN_A_ROW and not self.stopped:
                self.stopped = (f"stopped submitting shards: {len(self.store_failures)} in a row failed on the "
                                f"output or input store ({result['error']}); the shards done so far are stored: "
                                "re-run the same command when the store is reachable again")
            return
        self.store_failures = []
        runtime = result.pop("runtime")
        self.reused += bool(runtime.pop("skipped"))
        self.runs.append({"shard": name, **runtime})
        self.done[name] = result

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
                "crop_started_at": self.epoch, "task_cpus": self.task_cpus, "workers": workers,
                "timeline": timeline,
                "nodes": len({w["node"] for w in workers.values()}), "shards_run": len(self.runs),
                "shards_found_stored": self.reused, "data_stats": self.data_stats}
