"""Batch evaluation of checkpoints on benchmarks: Ray-parallel (or a plain in-process loop), logged to MLflow.

The unit of work is one (checkpoint, sequence) pair. It is run by a :class:`SequenceRunner`, which loads
each checkpoint's model once and keeps the last ``model_cache`` models (a small LRU), so a worker that
takes many sequences of one checkpoint pays the model load once:

* Ray (default): ``workers`` actors of :class:`SequenceRunner` (``cpus_per_worker`` logical CPUs each,
  ``torch.set_num_threads(threads_per_worker)`` inside, one GPU each with ``use_gpu``), spread over the
  nodes, fed by a ``ray.util.ActorPool``. Work items are ordered checkpoint by checkpoint (longest
  sequences first), so each worker loads each checkpoint at most once.
* ``local=True``: the same :class:`SequenceRunner` in this process, in a plain loop (issue 3's
  "plain loop"). Same code per sequence, same thread count, so the numbers are identical.

Workers only *track*: they return boxes (0-based x,y,w,h) or VOT trajectories; the driver writes the
result files in each toolkit's own format (:mod:`ocean.benchmarks.results`) and scores them with the
same :func:`ocean.benchmarks.score_sequences` that ``ocean score`` uses, so the summary is exactly what
``ocean score`` reports on the written files.

Output layout (``OUT`` a folder or ``s3://bucket/prefix``; S3 output is staged in a temporary folder and
uploaded at the end)::

    OUT/<checkpoint-name>/<benchmark>/results/...       the tracker's result files (``ocean score --results``)
    OUT/<checkpoint-name>/<benchmark>/summary.json      ``ocean score`` keys + checkpoint + tracker config
    OUT/<checkpoint-name>/<benchmark>/per_sequence.csv  one row per sequence
    OUT/<checkpoint-name>/<benchmark>/{success,precision}.png   (not for VOT: no such curves)
    OUT/plots/<benchmark>_{success,precision}.png       all checkpoints in one plot
    OUT/plots/metric_vs_epoch.png                       headline metric per benchmark vs epoch (>= 2 epochs)
    OUT/per_sequence.csv, OUT/evaluation.json           everything, one file each

Benchmark roots and checkpoints must be readable from every Ray node (a shared folder, or ``s3://`` for
checkpoints); the sequences are read on the driver and shipped to workers as frame paths.

MLflow (the store of :func:`pipelines.tracking.tracking_uri`: ``mlflow_uri``, ``$MLFLOW_TRACKING_URI``
or ``OUT/mlflow.db``; ``log_mlflow=False`` turns it off): one parent run per evaluation
and one nested child run per checkpoint, tagged with the training run it came from
(``ocean.training_run_id``: the checkpoint's ``mlflow_run_id`` entry, else ``--run``, else the run whose
``ocean.out`` tag is the checkpoint's training folder ``OUT/checkpoints/epoch-NNNN.pt``), the data
manifest hash (``ocean.manifest_sha256``: the checkpoint's entry or that run's tag), the checkpoint URI
and its epoch;
metrics ``<benchmark>.<metric>``; artifacts: the summaries, per-sequence CSV and plots. The parent also
gets every headline metric with ``step=epoch`` (MLflow's own metric-vs-epoch chart), the
metric-vs-epoch PNG and, with ``validation``, the tags ``best_epoch`` / ``best_checkpoint``; the best
child gets ``is_best=true``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ocean.benchmarks.protocols import track_sequence
from ocean.benchmarks.readers import BENCHMARK_FAMILY, read_benchmark
from ocean.benchmarks.scoring import HEADLINE, SCORE_KEYS
from ocean.benchmarks.sequence import AnnotationError, Sequence
from ocean.config import TRACKER_PRESETS, OceanConfig, TrackerConfig, apply_overrides

# The metric that ranks checkpoints on each benchmark (the paper's headline numbers, facts §12).
# Metrics `ocean score` writes, in table order, plus the VOT failure count.
METRIC_KEYS = (*SCORE_KEYS, "num_failures")
# Checkpoint entries written by training that link an evaluation back to it (ocean.checkpoint ``extra``).
LINK_KEYS = {"mlflow_run_id": "ocean.training_run_id", "manifest_sha256": "ocean.manifest_sha256"}


class EvaluationError(ValueError):
    """Bad input to an evaluation (missing checkpoint, unreadable benchmark root, unknown name...)."""


# ----------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class CheckpointInfo:
    """What the driver needs about one checkpoint (read once, weights dropped).

    Attributes:
        uri: path or URI as given.
        name: folder name under OUT (unique within one evaluation).
        epoch: the ``epoch`` entry of the checkpoint, else a number parsed from the file name
            (``checkpoint_e12.pt``, ``epoch-3.pt``), else None.
        tracker: the checkpoint's ``tracker`` config section (the base of the tracker hyper-parameters).
        links: ``{"mlflow_run_id": ..., "manifest_sha256": ...}`` entries present in the checkpoint.
    """

    uri: str
    name: str
    epoch: int | None
    tracker: TrackerConfig
    links: dict[str, str] = field(default_factory=dict)


_EPOCH_IN_NAME = re.compile(r"(?:^|[_\-.])(?:e|ep|epoch)[_\-]?(\d+)$", re.IGNORECASE)


def _stem(uri: str) -> str:
    base = uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\.(pt|pth|ckpt|tar)$", "", base) or "checkpoint"


def epoch_from_name(uri: str) -> int | None:
    """``.../checkpoint_e12.pt`` -> 12, ``epoch-3.pt`` -> 3; None when the name carries no epoch."""
    m = _EPOCH_IN_NAME.search(_stem(uri))
    return int(m.group(1)) if m else None


def checkpoint_names(uris: SequenceABC[str]) -> list[str]:
    """A unique, filesystem-safe folder name per checkpoint: the file stem, prefixed with its parent
    folder when two stems collide (``run1-last``, ``run2-last``), then numbered if still ambiguous."""

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "checkpoint"

    stems = [safe(_stem(u)) for u in uris]
    names = []
    for u, s in zip(uris, stems, strict=True):
        if stems.count(s) > 1:
            parts = u.split("?", 1)[0].rstrip("/").split("/")
            s = safe(f"{parts[-2]}-{s}") if len(parts) > 1 else s
        names.append(s)
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}-{seen[n]}")
    return out


def inspect_checkpoint(uri: str, name: str) -> CheckpointInfo:
    """Read a checkpoint on the driver (CPU) to check it and take its config, epoch and links."""
    from ocean import storage
    from ocean.checkpoint import load_checkpoint
    from ocean.config import from_dict

    try:
        if not storage.exists(uri):
            raise EvaluationError(f"checkpoint {uri}: no such file or object")
        ckpt = load_checkpoint(uri, "cpu")
        cfg = from_dict(ckpt["config"])
    except EvaluationError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise EvaluationError(f"checkpoint {uri}: cannot load it ({exc})") from None
    epoch = ckpt.get("epoch")
    epoch = int(epoch) if isinstance(epoch, (int, np.integer)) else epoch_from_name(uri)
    links = {k: str(ckpt[k]) for k in LINK_KEYS if ckpt.get(k)}
    return CheckpointInfo(uri, name, epoch, cfg.tracker, links)


def _override_strings(overrides: Mapping[str, Any] | SequenceABC[str] | None) -> list[str]:
    """``{"window_influence": 0.3}`` or ``["tracker.window_influence=0.3", "lr=0.5"]`` -> ``tracker.k=v``."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        if isinstance(overrides.get("tracker"), Mapping):  # {"tracker": {...}} as `ocean tune-tracker` saves
            overrides = overrides["tracker"]
        items = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()]
    else:
        items = list(overrides)
    out = []
    for item in items:
        if "=" not in item:
            raise EvaluationError(f"tracker override {item!r} is not of the form key=value")
        key = item.strip()
        out.append(key if key.startswith("tracker.") else f"tracker.{key}")
    return out


def resolve_tracker_config(
    base: TrackerConfig, benchmark: str, overrides: Mapping[str, Any] | SequenceABC[str] | None = None
) -> TrackerConfig:
    """The tracker hyper-parameters for ``benchmark``, layered as ``ocean track`` does: the checkpoint's
    tracker section -> that benchmark's official preset (facts §9.3) -> ``overrides`` (a dict of
    TrackerConfig fields, ``{"tracker": {...}}``, or ``tracker.KEY=VALUE`` strings; types checked)."""
    cfg = dataclasses.replace(base, **TRACKER_PRESETS[benchmark])
    try:
        return apply_overrides(OceanConfig(tracker=cfg), _override_strings(overrides)).tracker
    except (KeyError, ValueError) as exc:
        raise EvaluationError(f"tracker hyper-parameters: {exc}") from None


def read_benchmarks(
    benchmarks: Mapping[str, str], max_sequences: int | None = None
) -> dict[str, list[Sequence]]:
    """``{name: root}`` -> ``{name: sequences}`` (the first ``max_sequences`` of each when given);
    EvaluationError naming the benchmark and root when a name is unknown or a root is unreadable."""
    out = {}
    for name, root in benchmarks.items():
        if name not in BENCHMARK_FAMILY:
            raise EvaluationError(f"unknown benchmark {name!r}; one of {sorted(BENCHMARK_FAMILY)}")
        if not Path(root).is_dir():
            raise EvaluationError(f"benchmark {name}: root {root} is not a folder")
        try:
            seqs = read_benchmark(name, Path(root))
        except (OSError, AnnotationError, ValueError) as exc:
            raise EvaluationError(f"benchmark {name}: cannot read {root} ({exc})") from None
        # GOT-10k test (first GT row only) is tracked and written for the evaluation server; scoring lists
        # its sequences under ``rejected`` with that reason (ocean.benchmarks.scoring).
        if not seqs:
            raise EvaluationError(f"benchmark {name}: no sequences under {root}")
        out[name] = seqs[:max_sequences] if max_sequences else seqs
    return out


# ----------------------------------------------------------------------------------------------------------
# The unit of work


@dataclass
class WorkItem:
    """One (checkpoint, sequence) pair. ``tracker`` is a TrackerConfig as a dict (plain data across Ray)."""

    checkpoint: str
    benchmark: str
    sequence: Sequence
    tracker: dict[str, Any]


class SequenceRunner:
    """Tracks (checkpoint, sequence) items, loading each checkpoint's model once (LRU of ``model_cache``).

    The same class is the Ray actor (``ray.remote(SequenceRunner)``) and the local loop's worker.
    ``threads``: ``torch.set_num_threads`` in this process (1 per worker: two workers on 2 cores must not
    fight over threads, ray_stack.md §2). ``device``: ``"cpu"`` or ``"cuda"`` (the model is loaded there
    with ``map_location``).
    """

    def __init__(
        self, threads: int = 1, device: str = "cpu", model_cache: int = 2, set_threads: bool = True
    ) -> None:
        import torch

        if set_threads:
            torch.set_num_threads(max(1, int(threads)))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("use_gpu: no CUDA device is visible to this worker")
        self.device = device
        self.model_cache = max(1, int(model_cache))
        self._models: OrderedDict[str, Any] = OrderedDict()
        self.loads = 0

    def _model(self, uri: str) -> tuple[Any, float, bool]:
        from ocean.checkpoint import load_model

        if uri in self._models:
            self._models.move_to_end(uri)
            return self._models[uri], 0.0, False
        t0 = time.perf_counter()
        net, _cfg = load_model(uri, map_location=self.device)
        seconds = time.perf_counter() - t0
        self._models[uri] = net
        while len(self._models) > self.model_cache:
            self._models.popitem(last=False)
        self.loads += 1
        return net, seconds, True

    def run(self, item: WorkItem) -> dict[str, Any]:
        """Track one item; never raises for a bad sequence or checkpoint: ``error`` says what failed."""
        import socket

        t0 = time.perf_counter()
        c0 = time.process_time()  # this process's CPU seconds (1 torch thread: the tracking's own)
        base = {
            "checkpoint": item.checkpoint,
            "benchmark": item.benchmark,
            "sequence": item.sequence.name,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "node": _ray_node_id(),
            "model_loaded": False,
            "load_s": 0.0,
        }
        try:
            net, load_s, loaded = self._model(item.checkpoint)
            base.update(model_loaded=loaded, load_s=load_s)
            out = track_sequence(
                net, TrackerConfig(**item.tracker), item.benchmark, item.sequence, self.device
            )
        except Exception as exc:  # recorded per sequence; one bad video must not kill the evaluation
            return {
                **base,
                "error": f"{type(exc).__name__}: {exc}",
                "wall_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
            }
        return {
            **base,
            **out,
            "error": None,
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
        }

    def ping(self) -> str:
        import socket

        return f"{socket.gethostname()}:{os.getpid()}"


def _ray_node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def _run_local(items: list[WorkItem], threads: int, device: str, on_result: Callable[[dict], None]) -> int:
    """The plain loop: one SequenceRunner in this process (torch threads restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    try:
        runner = SequenceRunner(threads, device, set_threads=True)
        for item in items:
            on_result(runner.run(item))
        return 1
    finally:
        torch.set_num_threads(previous)


def _run_ray(
    items: list[WorkItem],
    *,
    workers: int,
    threads: int,
    device: str,
    cpus_per_worker: float,
    gpus_per_worker: float,
    ray_address: str | None,
    on_result: Callable[[dict], None],
    on_ready: Callable[[float], None],
) -> int:
    """``workers`` SequenceRunner actors spread over the cluster; returns the number of actors used."""
    import ray
    from ray.util import ActorPool

    from pipelines.raysession import ensure_ray

    started_here = not ray.is_initialized()
    ensure_ray(ray_address)
    try:
        total = ray.cluster_resources()
        fit = int(total.get("CPU", 0) // cpus_per_worker) if cpus_per_worker > 0 else workers
        if fit == 0:
            raise EvaluationError(
                f"the Ray cluster has {total.get('CPU', 0):g} CPUs, fewer than "
                f"cpus_per_worker={cpus_per_worker:g}"
            )
        if gpus_per_worker > 0:
            fit = min(fit, int(total.get("GPU", 0) // gpus_per_worker))
            if fit == 0:
                raise EvaluationError("use_gpu: the Ray cluster has no GPU")
        n = max(1, min(workers, len(items), fit))
        if n < workers:
            print(
                f"evaluate: {n} workers (cluster CPUs {total.get('CPU', 0):g} / {cpus_per_worker:g} per worker, "
                f"{len(items)} items)",
                file=sys.stderr,
            )
        actor_cls = ray.remote(SequenceRunner)
        actors = [
            actor_cls.options(
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, scheduling_strategy="SPREAD"
            ).remote(threads, device)
            for _ in range(n)
        ]
        try:
            t0 = time.perf_counter()
            ray.get([a.ping.remote() for a in actors])  # start-up (imports, torch) is not tracking time
            on_ready(time.perf_counter() - t0)
            pool = ActorPool(actors)
            for result in pool.map_unordered(lambda a, it: a.run.remote(it), items):
                on_result(result)
        finally:
            for a in actors:
                ray.kill(a)
        return n
    finally:
        if started_here:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------------------
# Writing, scoring, plots


def _write_result(tracker_dir: Path, benchmark: str, seq_name: str, result: dict) -> None:
    from ocean.benchmarks.results import write_ope_result, write_vot_result

    family = BENCHMARK_FAMILY[benchmark]
    if family == "vot":
        write_vot_result(tracker_dir, seq_name, result["trajectory"])
    else:
        write_ope_result(
            tracker_dir,
            family,
            seq_name,
            result["boxes_xywh"],
            result["times_s"] if family == "got10k" else None,
        )


def _metrics(scores: dict) -> dict[str, float]:
    return {k: float(scores[k]) for k in METRIC_KEYS if isinstance(scores.get(k), (int, float))}


def _plot_curves(
    curves_by_name: dict[str, dict], benchmark: str, out_dir: Path, prefix: str = ""
) -> list[Path]:
    """Success (and precision) PNGs for the curves ``score_sequences`` returns; none for VOT."""
    from ocean.benchmarks.metrics import GOT10K_PLOT_THRESHOLDS
    from ocean.benchmarks.plots import plot_precision, plot_success

    written = []
    success = {n: np.asarray(c["success_curve"]) for n, c in curves_by_name.items() if "success_curve" in c}
    if success:
        th = GOT10K_PLOT_THRESHOLDS if benchmark == "got10k" else None
        written.append(
            plot_success(
                success, out_dir / f"{prefix}success.png", f"Success plot ({benchmark})", thresholds=th
            )
        )
    precision = {
        n: np.asarray(c["precision_curve"]) for n, c in curves_by_name.items() if "precision_curve" in c
    }
    if precision:
        written.append(
            plot_precision(precision, out_dir / f"{prefix}precision.png", f"Precision plot ({benchmark})")
        )
    return written


def plot_metric_vs_epoch(
    points: dict[str, list[tuple[int, float]]], out_path: Path, best: dict | None = None
) -> Path:
    """One panel per benchmark: its headline metric against the epoch; the best epoch is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = sorted(points)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        pts = sorted(points[name])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        if best and best["benchmark"] == name:
            ax.axvline(best["epoch"], color="tab:red", linestyle="--", label=f"best epoch {best['epoch']}")
            ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=HEADLINE[name], title=name)
        ax.grid(True, alpha=0.4)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


_CSV_COLUMNS = [
    "checkpoint",
    "epoch",
    "benchmark",
    "sequence",
    "length",
    "success_auc",
    "precision",
    "norm_precision",
    "ao",
    "sr50",
    "sr75",
    "accuracy",
    "robustness",
    "num_failures",
    "tracker_fps",
    "nonfinite_frames",
    "worker",
    "error",
]


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in _CSV_COLUMNS})
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# MLflow (store / experiment / scrubbing from pipelines.tracking)


def _safe_uri(uri: str) -> str:
    """A URI fit for a tag or param: unchanged unless it carries credentials (then without query / user)."""
    from pipelines.tracking import REDACTED, public_uri, scrub

    return public_uri(uri) if scrub({"uri": uri})["uri"] == REDACTED else uri


def checkpoints_of_run(
    mlflow_uri: str, run_id: str, epochs: SequenceABC[int] | None = None
) -> list[tuple[int | None, str]]:
    """``(epoch, checkpoint uri)`` pairs logged by training run ``run_id``, sorted by epoch, optionally
    only ``epochs``. Looked up, in this order (the first that gives any wins):

    1. a JSON artifact ``checkpoints.json`` of the run: ``[{"epoch": e, "uri": u}, ...]``, ``{"checkpoints":
       [...]}`` or ``{"<epoch>": "<uri>"}``;
    2. a tag or param ``checkpoint_uris`` holding the same JSON;
    3. tags / params named ``checkpoint.e<N>`` / ``checkpoint_uri.<N>`` / ``checkpoint_e<N>`` (one per epoch);
    4. checkpoint files logged as artifacts (``*.pt``, ``*.pth``), epochs from their names.

    EvaluationError when the run does not exist, has no checkpoint, or lacks a requested epoch.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=mlflow_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise EvaluationError(
            f"--run {run_id}: no such MLflow run at {_safe_uri(mlflow_uri)} ({str(exc).splitlines()[0]})"
        ) from None
    found: dict[int | None, str] = {}

    def from_json(data: Any) -> None:
        if isinstance(data, dict) and "checkpoints" in data:
            data = data["checkpoints"]
        if isinstance(data, dict):
            for k, v in data.items():
                found[int(k) if str(k).isdigit() else epoch_from_name(str(v))] = str(v)
        elif isinstance(data, list):
            for entry in data:
                if isinstance(entry, dict) and "uri" in entry:
                    e = entry.get("epoch")
                    found[int(e) if e is not None else epoch_from_name(entry["uri"])] = str(entry["uri"])
                elif isinstance(entry, str):
                    found[epoch_from_name(entry)] = entry

    artifacts = {a.path: a for a in _list_artifacts(client, run_id)}
    if "checkpoints.json" in artifacts:
        with tempfile.TemporaryDirectory(prefix="ocean-run-") as tmp:
            local = client.download_artifacts(run_id, "checkpoints.json", tmp)
            try:
                from_json(json.loads(Path(local).read_text()))
            except (json.JSONDecodeError, ValueError, TypeError) as exc:
                raise EvaluationError(f"--run {run_id}: checkpoints.json is malformed ({exc})") from None
    keyed = {**run.data.params, **run.data.tags}
    if not found and "checkpoint_uris" in keyed:
        try:
            from_json(json.loads(keyed["checkpoint_uris"]))
        except json.JSONDecodeError:
            raise EvaluationError(f"--run {run_id}: checkpoint_uris is not JSON") from None
    if not found:
        pattern = re.compile(r"^checkpoint(?:_uri)?[._\-]?e?(\d+)$")
        for k, v in keyed.items():
            m = pattern.match(k)
            if m:
                found[int(m.group(1))] = v
    if not found:
        root = run.info.artifact_uri.rstrip("/")
        readable = "://" not in root or root.startswith(("file://", "s3://"))
        cache = (
            None if readable else tempfile.mkdtemp(prefix="ocean-run-ckpt-")
        )  # proxied artifacts: download
        for path in artifacts:
            if path.endswith((".pt", ".pth")):
                uri = f"{root}/{path}" if readable else client.download_artifacts(run_id, path, cache)
                found[epoch_from_name(path)] = uri
    if not found:
        raise EvaluationError(
            f"--run {run_id}: the run logged no checkpoint (no checkpoints.json artifact, "
            "checkpoint_uris tag/param, checkpoint.e<N> tags or *.pt artifacts)"
        )
    if epochs is not None:
        missing = sorted(set(epochs) - {e for e in found if e is not None})
        if missing:
            raise EvaluationError(
                f"--run {run_id}: no checkpoint for epochs {missing}; the run has "
                f"{sorted(e for e in found if e is not None)}"
            )
        found = {e: u for e, u in found.items() if e in set(epochs)}
    return sorted(found.items(), key=lambda t: (t[0] is None, t[0] or 0))


def _training_run_links(client, info: CheckpointInfo, training_run_id: str | None) -> dict[str, str]:
    """``{tag: value}`` linking a checkpoint to its training run and data manifest, first found wins:

    1. the checkpoint's own ``mlflow_run_id`` / ``manifest_sha256`` entries;
    2. the training run given (``--run``);
    3. a run whose ``ocean.out`` tag is the checkpoint's training output (``OUT/checkpoints/epoch-NNNN.pt``,
       the layout of :mod:`pipelines.train`), newest first.

    The manifest hash, when not in the checkpoint, is the training run's ``ocean.manifest_sha256`` tag.
    """
    from mlflow.exceptions import MlflowException

    from pipelines.tracking import public_uri

    links = {LINK_KEYS[k]: v for k, v in info.links.items()}
    run_id = links.get("ocean.training_run_id") or training_run_id
    if run_id is None:
        parts = info.uri.split("?", 1)[0].rstrip("/").rsplit("/", 2)
        if len(parts) == 3 and parts[1] == "checkpoints":
            out = parts[0] if "://" in parts[0] else str(Path(parts[0]).expanduser().resolve())
            try:
                for exp in client.search_experiments():
                    runs = client.search_runs(
                        [exp.experiment_id],
                        filter_string=f"tags.`ocean.out` = '{public_uri(out)}'",
                        order_by=["attributes.start_time DESC"],
                        max_results=1,
                    )
                    if runs:
                        run_id = runs[0].info.run_id
                        break
            except MlflowException:
                run_id = None
    if run_id is None:
        return links
    links["ocean.training_run_id"] = run_id
    if "ocean.manifest_sha256" not in links:
        try:
            manifest = client.get_run(run_id).data.tags.get("ocean.manifest_sha256")
        except MlflowException:  # the training run lives in another store
            manifest = None
        if manifest and manifest != "none":
            links["ocean.manifest_sha256"] = manifest
    return links


def _list_artifacts(client, run_id: str, path: str | None = None, depth: int = 2) -> list:
    out = []
    for a in client.list_artifacts(run_id, path):
        if a.is_dir and depth > 0:
            out += _list_artifacts(client, run_id, a.path, depth - 1)
        elif not a.is_dir:
            out.append(a)
    return out


def _log_to_mlflow(
    uri: str,
    experiment: str,
    run_name: str,
    infos: list[CheckpointInfo],
    report: dict,
    out_dir: Path,
    training_run_id: str | None,
) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from pipelines.tracking import ensure_experiment, run_tags

    exp_id = ensure_experiment(uri, experiment)
    client = MlflowClient(tracking_uri=uri)
    benchmarks = report["benchmarks"]
    parent = client.create_run(
        exp_id,
        run_name=run_name,
        tags=run_tags(
            **{
                "ocean.kind": "evaluation",
                "ocean.benchmarks": ",".join(benchmarks),
                **({"ocean.training_run_id": training_run_id} if training_run_id else {}),
            }
        ),
    )
    pid = parent.info.run_id
    now = int(time.time() * 1000)
    children: dict[str, str] = {}
    links: dict[str, dict[str, str]] = {}
    try:
        client.log_batch(
            pid,
            params=[
                Param("checkpoints", ",".join(_safe_uri(i.uri) for i in infos)[:6000]),
                Param("benchmarks", json.dumps(benchmarks)[:6000]),
                Param("workers", str(report["timing"]["workers"])),
                Param("local", str(report["timing"]["local"])),
                Param("validation", str(report.get("validation"))),
            ],
        )
        for info in infos:
            entry = report["checkpoints"][info.uri]
            tags = {
                "mlflow.parentRunId": pid,
                "ocean.kind": "evaluation-checkpoint",
                "ocean.checkpoint_uri": _safe_uri(info.uri),
                "ocean.checkpoint_name": info.name,
            }
            if info.epoch is not None:
                tags["ocean.epoch"] = str(info.epoch)
            links[info.uri] = _training_run_links(client, info, training_run_id)
            tags.update(links[info.uri])
            child = client.create_run(exp_id, run_name=f"{run_name}/{info.name}", tags=run_tags(**tags))
            cid = child.info.run_id
            children[info.uri] = cid
            params = [Param("checkpoint_uri", _safe_uri(info.uri)[:6000]), Param("epoch", str(info.epoch))]
            metrics = []
            for bench, scores in report["scores"][info.uri].items():
                for k, v in entry["tracker"][bench].items():
                    params.append(Param(f"tracker.{bench}.{k}", str(v)))
                for k, v in _metrics(scores).items():
                    metrics.append(Metric(f"{bench}.{k}", v, now, info.epoch or 0))
                    if info.epoch is not None and k == HEADLINE[bench]:
                        client.log_metric(pid, f"{bench}.{k}", v, now, step=info.epoch)
            client.log_batch(cid, metrics=metrics, params=params)
            client.log_artifacts(cid, str(out_dir / info.name), artifact_path="evaluation")
            client.set_terminated(cid)
        best = report.get("best")
        if best:
            client.set_tag(pid, "best_checkpoint", _safe_uri(best["checkpoint"]))
            client.set_tag(pid, "best_epoch", str(best["epoch"]))
            client.set_tag(pid, "best_metric", f"{best['benchmark']}.{best['metric']}")
            client.log_metric(pid, f"best.{best['benchmark']}.{best['metric']}", best["value"], now)
            client.set_tag(children[best["checkpoint"]], "is_best", "true")
        for path in ("evaluation.json", "per_sequence.csv"):
            client.log_artifact(pid, str(out_dir / path))
        if (out_dir / "plots").is_dir():
            client.log_artifacts(pid, str(out_dir / "plots"), artifact_path="plots")
        client.set_terminated(pid)
    except Exception:
        client.set_terminated(pid, status="FAILED")
        for cid in children.values():
            client.set_terminated(cid, status="FAILED")
        raise
    return {
        "tracking_uri": _safe_uri(uri),
        "experiment_id": exp_id,
        "parent_run_id": pid,
        "child_run_ids": children,
        "links": links,
    }


# ----------------------------------------------------------------------------------------------------------
# The API


def evaluate(
    checkpoints: list[str],
    benchmarks: dict[str, str],
    out: str,
    *,
    tracker_overrides: Mapping[str, Any] | SequenceABC[str] | None = None,
    workers: int = 2,
    use_gpu: bool = False,
    mlflow_uri: str | None = None,
    validation: str | None = None,
    local: bool = False,
    ray_address: str | None = None,
    max_sequences: int | None = None,
    cpus_per_worker: float = 1.0,
    threads_per_worker: int = 1,
    experiment: str = "ocean-evaluate",
    run_name: str | None = None,
    training_run_id: str | None = None,
    log_mlflow: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``checkpoints`` (paths or URIs) on ``benchmarks`` (``{name: root}``, names otb, vot2018,
    vot2019, got10k, lasot; roots as for ``ocean score --dataset``) and write everything under ``out``.

    Args:
        tracker_overrides: applied on top of each benchmark's preset (see :func:`resolve_tracker_config`).
        workers: Ray actors (each loads a checkpoint's model once); capped by the cluster's CPUs / GPUs.
        use_gpu: one GPU per worker (``cuda`` in the local loop).
        mlflow_uri: tracking URI; default as :func:`pipelines.tracking.tracking_uri`
            (``$MLFLOW_TRACKING_URI``, else ``OUT/mlflow.db``). ``log_mlflow=False`` logs nothing.
        validation: a benchmark of ``benchmarks`` whose headline metric (HEADLINE) picks the best checkpoint.
        local: a plain loop in this process instead of Ray (same code per sequence, same numbers).
        max_sequences: evaluate only the first N sequences of each benchmark (smoke runs).
        cpus_per_worker / threads_per_worker: Ray CPUs reserved per actor / torch threads inside it.
        training_run_id: MLflow run id of the training run (``ocean evaluate --run``); a checkpoint's own
            ``mlflow_run_id`` entry wins.

    Returns a JSON-ready dict: ``scores`` {checkpoint uri: {benchmark: ``ocean score`` dict + ``tracker``}},
    ``checkpoints`` {uri: {name, epoch, links, dir, tracker}}, ``best`` (with ``validation``), ``plots``
    (paths), ``failed`` ([{checkpoint, benchmark, sequence, error}]), ``timing`` (seconds, sequences per
    second, model loads, workers) and ``mlflow`` (run ids) or None.
    Raises EvaluationError for bad input, before any tracking starts.
    """
    t_start = time.perf_counter()
    if not checkpoints:
        raise EvaluationError("no checkpoint to evaluate")
    if not benchmarks:
        raise EvaluationError("no benchmark given")
    if validation is not None and validation not in benchmarks:
        raise EvaluationError(
            f"validation benchmark {validation!r} is not one of the evaluated benchmarks {sorted(benchmarks)}"
        )
    if len(set(checkpoints)) != len(checkpoints):
        raise EvaluationError("the same checkpoint is given twice")
    if workers < 1:
        raise EvaluationError("workers must be at least 1")
    if use_gpu and local:
        import torch

        if not torch.cuda.is_available():
            raise EvaluationError("use_gpu with local=True: no CUDA device is available here")
    sequences = read_benchmarks(benchmarks, max_sequences)
    names = checkpoint_names(checkpoints)
    infos = [inspect_checkpoint(u, n) for u, n in zip(checkpoints, names, strict=True)]
    trackers = {
        i.uri: {b: resolve_tracker_config(i.tracker, b, tracker_overrides) for b in benchmarks} for i in infos
    }
    if log_mlflow:
        from pipelines.tracking import tracking_uri

        mlflow_uri = tracking_uri(mlflow_uri, out)

    from ocean import storage

    remote_out = storage.is_uri(out) and not str(out).startswith("file://")
    staging = Path(tempfile.mkdtemp(prefix="ocean-eval-")) if remote_out else None
    out_dir = staging if staging is not None else Path(storage.resolve(out)[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    store = None
    if remote_out:
        from pipelines.storage import OutputStore

        store = OutputStore.from_uri(out)
        store.check_writable()

    # Checkpoint-major order, longest sequences first inside a checkpoint (load balance at the tail).
    items = [
        WorkItem(i.uri, b, s, dataclasses.asdict(trackers[i.uri][b]))
        for i in infos
        for b, seqs in sequences.items()
        for s in sorted(seqs, key=lambda s: -len(s))
    ]
    by_uri = {i.uri: i for i in infos}
    results: dict[tuple[str, str, str], dict] = {}
    done = [0]

    def on_result(r: dict) -> None:
        info = by_uri[r["checkpoint"]]
        if r["error"] is None:
            _write_result(out_dir / info.name / r["benchmark"] / "results", r["benchmark"], r["sequence"], r)
        results[(r["checkpoint"], r["benchmark"], r["sequence"])] = r
        done[0] += 1
        if progress:
            status = "ok" if r["error"] is None else f"FAILED ({r['error']})"
            print(
                f"[{done[0]}/{len(items)}] {info.name} {r['benchmark']}/{r['sequence']}: {status} "
                f"({r['wall_s']:.1f} s, {r['worker']})",
                file=sys.stderr,
                flush=True,
            )

    device = "cuda" if use_gpu else "cpu"
    t_track = time.perf_counter()
    startup = [0.0]

    def on_ready(seconds: float) -> None:  # the Ray workers are up: tracking time starts now
        nonlocal t_track
        startup[0] = seconds
        t_track = time.perf_counter()

    if local:
        used_workers = _run_local(items, threads_per_worker, device, on_result)
    else:
        used_workers = _run_ray(
            items,
            workers=workers,
            threads=threads_per_worker,
            device=device,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=1.0 if use_gpu else 0.0,
            ray_address=ray_address,
            on_result=on_result,
            on_ready=on_ready,
        )
    track_seconds = time.perf_counter() - t_track

    from ocean.benchmarks.plots import summary_table
    from ocean.benchmarks.scoring import score_sequences

    scores: dict[str, dict[str, dict]] = {}
    rows: list[dict] = []
    failed: list[dict] = []
    plots: list[str] = []
    curves_by_bench: dict[str, dict[str, dict]] = {b: {} for b in benchmarks}
    checkpoints_out: dict[str, dict] = {}
    for info in infos:
        scores[info.uri] = {}
        for bench, seqs in sequences.items():
            bench_dir = out_dir / info.name / bench
            tracker_dir = bench_dir / "results"
            tracker_dir.mkdir(parents=True, exist_ok=True)
            s = score_sequences(bench, seqs, tracker_dir)
            errors = {
                n: r["error"]
                for (u, b, n), r in results.items()
                if u == info.uri and b == bench and r["error"]
            }
            s["failed"] = errors
            s["checkpoint"] = info.uri
            s["epoch"] = info.epoch
            s["tracker"] = dataclasses.asdict(trackers[info.uri][bench])
            (bench_dir / "summary.json").write_text(json.dumps(s, indent=2))
            scores[info.uri][bench] = s
            failed += [
                {"checkpoint": info.uri, "benchmark": bench, "sequence": n, "error": e}
                for n, e in errors.items()
            ]
            bench_rows = []
            for seq in seqs:
                r = results.get((info.uri, bench, seq.name), {})
                per = s["per_sequence"].get(seq.name, {})
                times = np.asarray(r.get("times_s", []), dtype=np.float64)
                ran = times[times > 0]
                bench_rows.append(
                    {
                        "checkpoint": info.name,
                        "epoch": info.epoch,
                        "benchmark": bench,
                        "sequence": seq.name,
                        "length": len(seq),
                        **{k: per.get(k) for k in _CSV_COLUMNS if k in per and k != "length"},
                        "tracker_fps": round(len(ran) / float(ran.sum()), 2)
                        if ran.size and ran.sum() > 0
                        else None,
                        "nonfinite_frames": r.get("nonfinite_frames"),
                        "worker": r.get("worker"),
                        "error": r.get("error") or s["rejected"].get(seq.name),
                    }
                )
            (bench_dir / "per_sequence.csv").write_text(_csv(bench_rows))
            rows += bench_rows
            if s.get("curves"):
                curves_by_bench[bench][info.name] = s["curves"]
                plots += [str(p) for p in _plot_curves({info.name: s["curves"]}, bench, bench_dir)]
        checkpoints_out[info.uri] = {
            "name": info.name,
            "epoch": info.epoch,
            "links": info.links,
            "dir": str(out_dir / info.name),
            "tracker": {b: dataclasses.asdict(t) for b, t in trackers[info.uri].items()},
        }
    for bench, curves in curves_by_bench.items():
        if len(curves) > 1:
            plots += [str(p) for p in _plot_curves(curves, bench, out_dir / "plots", prefix=f"{bench}_")]

    best = None
    if validation is not None:
        metric = HEADLINE[validation]
        ranked = [(scores[i.uri][validation].get(metric), i) for i in infos]
        ranked = [(v, i) for v, i in ranked if isinstance(v, (int, float))]
        if ranked:
            value, info = max(ranked, key=lambda t: t[0])  # first of equal values: checkpoint order
            best = {
                "benchmark": validation,
                "metric": metric,
                "value": float(value),
                "checkpoint": info.uri,
                "name": info.name,
                "epoch": info.epoch,
            }
    epochs = {i.epoch for i in infos if i.epoch is not None}
    if len(epochs) >= 2:
        points = {
            b: [
                (i.epoch, scores[i.uri][b][HEADLINE[b]])
                for i in infos
                if i.epoch is not None and isinstance(scores[i.uri][b].get(HEADLINE[b]), (int, float))
            ]
            for b in benchmarks
        }
        points = {b: p for b, p in points.items() if p}
        if points:
            plots.append(str(plot_metric_vs_epoch(points, out_dir / "plots" / "metric_vs_epoch.png", best)))

    n_items = len(items)
    loads = [r for r in results.values() if r.get("model_loaded")]
    timing = {
        "sequences": n_items,
        "tracking_seconds": round(track_seconds, 3),
        "worker_startup_seconds": round(startup[0], 3),
        "sequences_per_second": round(n_items / track_seconds, 4) if track_seconds > 0 else None,
        "frames": int(sum(len(it.sequence) for it in items)),
        "model_loads": len(loads),
        "model_load_seconds": round(sum(r["load_s"] for r in loads), 3),
        # CPU seconds the workers spent per sequence: unlike seq/s, barely affected by other load
        "cpu_seconds_per_sequence": round(
            sum(r["cpu_s"] for r in results.values()) / max(len(results), 1), 4
        ),
        "workers": used_workers,
        "local": bool(local),
        "device": device,
        "worker_ids": sorted({r["worker"] for r in results.values()}),
        "node_ids": sorted({r["node"] for r in results.values() if r.get("node")}),
    }
    (out_dir / "per_sequence.csv").write_text(_csv(rows))
    table = {f"{by_uri[u].name} / {b}": s for u, per in scores.items() for b, s in per.items()}
    (out_dir / "summary.md").write_text(summary_table(table))
    report: dict[str, Any] = {
        "out": str(out),
        "benchmarks": dict(benchmarks),
        "validation": validation,
        "scores": scores,
        "checkpoints": checkpoints_out,
        "best": best,
        "plots": plots,
        "failed": failed,
        "timing": timing,
        "mlflow": None,
    }
    (out_dir / "evaluation.json").write_text(json.dumps(_without_curves(report), indent=2))
    if log_mlflow and mlflow_uri:
        report["mlflow"] = _log_to_mlflow(
            mlflow_uri,
            experiment,
            run_name or f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}",
            infos,
            report,
            out_dir,
            training_run_id,
        )
        (out_dir / "evaluation.json").write_text(json.dumps(_without_curves(report), indent=2))
    if store is not None:
        assert staging is not None
        for f in sorted(p for p in staging.rglob("*") if p.is_file()):
            store.write(f.relative_to(staging).as_posix(), f.read_bytes())
        shutil.rmtree(staging, ignore_errors=True)
        report["plots"] = [p.replace(str(staging), str(out)) for p in plots]
        for entry in report["checkpoints"].values():
            entry["dir"] = entry["dir"].replace(str(staging), str(out))
    timing["total_seconds"] = round(time.perf_counter() - t_start, 3)
    return report


def _without_curves(report: dict) -> dict:
    """evaluation.json keeps metrics and per-sequence values but not the (long) curves."""
    slim = dict(report)
    slim["scores"] = {
        u: {b: {k: v for k, v in s.items() if k != "curves"} for b, s in per.items()}
        for u, per in report["scores"].items()
    }
    return slim
