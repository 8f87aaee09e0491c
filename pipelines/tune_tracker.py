"""Tracker hyper-parameter search with Ray Tune: TPE (Optuna) + ASHA over sequences, logged to MLflow.

The official code tunes the tracker with a Ray 0.6 script (TK ``tracking/tune_tpe.py``, facts §11.1):
HyperOpt TPE proposes ``penalty_k``, ``lr``, ``window_influence``, the search sizes and (VOT + align head)
the p_r / p_o mixing ``ratio``; an AsyncHyperBand scheduler stops bad trials early; the score is EAO on
VOT and success AUC on OTB. This module does the same on current Ray:

* Searcher: :class:`ray.tune.search.optuna.OptunaSearch` with an ``optuna.samplers.TPESampler(seed=...)``
  (Ray Tune's own Optuna integration; TPE like the official HyperOpt searcher).
* Scheduler: :class:`ray.tune.schedulers.AsyncHyperBandScheduler` with ``time_attr="sequences_done"``: every
  trial tracks the validation sequences in ONE fixed, seeded order and reports the running score after each
  sequence, so rungs compare trials on the same sequences and ASHA stops the bad ones after
  ``grace_period`` sequences.
* Spaces (:func:`search_space`): ``official`` = facts §11.1, ``sots`` = facts §11.2. The benchmark's default
  hyper-parameters (the checkpoint's tracker section + that benchmark's official preset, facts §9.3: what
  ``ocean evaluate`` uses) are the FIRST trial (``points_to_evaluate``), so the best trial is never worse
  than the defaults on the validation sequences. Some presets lie outside the official space (facts §11.1:
  OTB S = 271, VOT big_sz 271, GOT-10k wi 0.118); the space is then widened just enough to contain them
  (:func:`include_point`) and the widening is printed and recorded (``space_widened``).
* Objective (:data:`OBJECTIVES`): EAO with that year's interval for VOT (facts §12.4), success AUC for
  OTB / LaSOT, AO for GOT-10k (facts §12.3), always "max".
* Each trial: ``torch.set_num_threads(1)``, ``cpus_per_trial`` logical CPUs (and ``gpus_per_trial`` of a
  GPU with ``use_gpu``); the model's weights travel once through Ray's object store
  (``tune.with_parameters``) and each trial builds the network once.
* MLflow (store from :func:`pipelines.tracking.tracking_uri`; created once on the driver before any trial,
  ray_stack.md §5): a parent run (space, settings, best params, best / default score, cost, artifacts) and
  one nested child run per trial, written by :class:`TrialLogger` -- a Tune callback that logs from the
  driver with ``MlflowClient`` (params = the trial's hyper-parameters, metric ``score`` with
  ``step = sequences done``, tags ``ocean.tune.status`` completed / stopped_early / error).
  ``MLflowLoggerCallback`` was not used: it cannot nest runs under a parent and logs every Tune result
  field as a metric (ray_stack.md §8 lists its open issues).

Outputs (``OUT`` a folder or ``s3://...``; S3 output is staged in a temporary folder and uploaded)::

    OUT/best_tracker.json     {"tracker": {...}}: TrackerConfig keys only (ocean track / evaluate --tracker-config)
    OUT/trials.csv            one row per trial: params, score, sequences done, status, seconds
    OUT/score_vs_trial.png    final score of every trial, best so far
    OUT/tune_summary.json     settings, best, defaults, cost (trials, stopped early, CPU/GPU-hours, wall time)
    OUT/ray_results/...       Ray Tune's own experiment folder (local OUT only)

Tune on a declared VALIDATION benchmark: a GOT-10k root without full ground truth (the test split) is
refused, and a warning names the split that is used.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from ocean.benchmarks.metrics import (
    EAO_INTERVALS,
    got10k_ious,
    got10k_summary,
    ope_sequence,
    ope_summary,
    vot_summary,
)
from ocean.benchmarks.readers import BENCHMARK_FAMILY, read_benchmark
from ocean.benchmarks.sequence import AnnotationError, Sequence
from ocean.config import TRACKER_PRESETS, TrackerConfig

# Headline metric per benchmark = the tuning objective (facts §11.1 objectives; §12 for the metrics).
OBJECTIVES = {"otb": "success_auc", "lasot": "success_auc", "got10k": "ao", "vot2018": "eao", "vot2019": "eao"}
METRIC = "score"  # the name Tune and MLflow see for the objective
TIME_ATTR = "sequences_done"  # ASHA's clock: sequences tracked so far
SPACES = ("official", "sots")
# TrackerConfig fields written to best_tracker.json: every scalar field (online_params is a nested dataclass
# that `ocean track --tracker-config` cannot take as one key, and tuning never changes it).
SAVED_KEYS = tuple(f.name for f in dataclasses.fields(TrackerConfig) if f.name != "online_params")


class TuneTrackerError(ValueError):
    """Bad input to a tuning run (unknown benchmark or space, test split, unreadable root, bad checkpoint)."""


# ----------------------------------------------------------------------------------------------------------
# Search spaces


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyper-parameter: ``quniform(low, high, q)`` (values low + k q) or ``choice(values)``."""

    name: str
    kind: str  # "quniform" | "choice"
    low: float = 0.0
    high: float = 0.0
    q: float = 0.0
    values: tuple = ()

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.values
        return self.low - 1e-9 <= float(value) <= self.high + 1e-9

    def to_tune(self):
        """The Ray Tune domain (Optuna gets a stepped FloatDistribution / a CategoricalDistribution)."""
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return tune.quniform(self.low, self.high, self.q)

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(str(v) for v in self.values) + "}"
        return f"quniform({self.low:g}, {self.high:g}, {self.q:g})"


def _q(name: str, low: float, high: float, q: float) -> ParamSpec:
    return ParamSpec(name, "quniform", low=low, high=high, q=q)


def _choice(name: str, *values: Any) -> ParamSpec:
    return ParamSpec(name, "choice", values=tuple(values))


def tunes_ratio(benchmark: str, use_align: bool) -> bool:
    """ratio (weight of p_r against p_o) is searched only on VOT with the align head (facts §11.1)."""
    return BENCHMARK_FAMILY.get(benchmark) == "vot" and bool(use_align)


def search_space(space: str, benchmark: str, use_align: bool = False) -> dict[str, ParamSpec]:
    """The search space ``space`` (``official`` or ``sots``) for ``benchmark``.

    official (TK tune_tpe.py, facts §11.1): penalty_k quniform(0.001, 0.2, 0.001), lr quniform(0.3, 0.8,
    0.001), window_influence quniform(0.15, 0.65, 0.001), small_sz {255}, big_sz {287, 303, 319}, and ratio
    quniform(0.7, 1.0, 0.01) on VOT with the align head (fixed otherwise).
    sots (SOTS tune_sot.py, facts §11.2): the same three ranges, small_sz {255, 271}, big_sz {271, 287},
    no ratio.
    """
    if benchmark not in OBJECTIVES:
        raise TuneTrackerError(f"unknown benchmark {benchmark!r}; one of {sorted(OBJECTIVES)}")
    common = {
        "penalty_k": _q("penalty_k", 0.001, 0.2, 0.001),  # facts §11.1
        "lr": _q("lr", 0.3, 0.8, 0.001),  # facts §11.1 (scale_lr)
        "window_influence": _q("window_influence", 0.15, 0.65, 0.001),  # facts §11.1
    }
    if space == "official":
        out = {**common, "small_sz": _choice("small_sz", 255),  # facts §11.1
               "big_sz": _choice("big_sz", 287, 303, 319)}  # facts §11.1
        if tunes_ratio(benchmark, use_align):
            out["ratio"] = _q("ratio", 0.7, 1.0, 0.01)  # facts §11.1, VOT with align only
        return out
    if space == "sots":
        return {**common, "small_sz": _choice("small_sz", 255, 271),  # facts §11.2
                "big_sz": _choice("big_sz", 271, 287)}  # facts §11.2
    raise TuneTrackerError(f"unknown search space {space!r}; one of {list(SPACES)}")


def include_point(space: Mapping[str, ParamSpec], point: Mapping[str, Any]) -> tuple[dict[str, ParamSpec], dict]:
    """Widen ``space`` just enough to contain ``point`` (the default hyper-parameters, trial 0).

    A choice gets the missing value added (kept sorted); a quniform range is extended to the value, rounded
    outwards to the step. Returns the new space and ``{name: "old -> new"}`` for every widened parameter.
    """
    out: dict[str, ParamSpec] = {}
    widened: dict[str, str] = {}
    for name, spec in space.items():
        value = point[name]
        if spec.contains(value):
            out[name] = spec
            continue
        if spec.kind == "choice":
            new = dataclasses.replace(spec, values=tuple(sorted({*spec.values, value})))
        else:
            low = min(spec.low, math.floor(float(value) / spec.q + 1e-9) * spec.q)
            high = max(spec.high, math.ceil(float(value) / spec.q - 1e-9) * spec.q)
            digits = _decimals(spec.q)
            new = dataclasses.replace(spec, low=round(low, digits), high=round(high, digits))
        out[name] = new
        widened[name] = f"{spec.describe()} -> {new.describe()}"
    return out, widened


def _decimals(q: float) -> int:
    """Decimal places of a step such as 0.001 (3) or 0.01 (2)."""
    return max(0, -int(math.floor(math.log10(q) + 1e-9)))


def snap(space: Mapping[str, ParamSpec], config: Mapping[str, Any]) -> dict[str, Any]:
    """The searched values of ``config`` cleaned up: quniform values rounded to their step's decimals
    (Optuna returns 0.30100000000000005), choices cast to int when the choices are ints."""
    out = {}
    for name, spec in space.items():
        v = config[name]
        if spec.kind == "quniform":
            out[name] = round(float(v), _decimals(spec.q))
        else:
            out[name] = int(v) if all(isinstance(c, int) for c in spec.values) else v
    return out


# ----------------------------------------------------------------------------------------------------------
# Objective


def running_score(benchmark: str, sequences: list[Sequence], results: list[dict]) -> float:
    """The objective over the first ``len(results)`` sequences (results as returned by
    :func:`ocean.benchmarks.protocols.track_sequence`, in the same order as ``sequences``).

    OTB / LaSOT: success AUC (mean of per-sequence 21-threshold curves, pysot, facts §12.1/§12.2; LaSOT
    drops absent frames). GOT-10k: AO over the pooled frames (facts §12.3). VOT: EAO over that year's
    interval (facts §12.4). Undefined values (EAO when every fragment is shorter than the interval's lower
    bound) count as 0.0.
    """
    family = BENCHMARK_FAMILY[benchmark]
    done = list(zip(sequences, results, strict=False))
    if not done:
        raise ValueError("no sequences tracked yet")
    if family == "vot":
        trajs = {s.name: r["trajectory"] for s, r in done}
        regions = {s.name: s.vot_regions() for s, _ in done}
        sizes = {s.name: s.image_size for s, _ in done}
        value = vot_summary(trajs, regions, sizes, EAO_INTERVALS[benchmark])["eao"]
    elif family == "got10k":
        ious = [got10k_ious(s.gt_xywh, r["boxes_xywh"], s.image_size, s.present) for s, r in done]
        value = got10k_summary(np.concatenate(ious))["ao"]
    else:
        present = (lambda s: s.present) if family == "lasot" else (lambda s: None)
        scores = [ope_sequence(s.gt_xywh, r["boxes_xywh"], present(s), origin=1.0) for s, r in done]
        value = ope_summary(scores)["success_auc"]
    value = float(value)
    return 0.0 if math.isnan(value) else value


# ----------------------------------------------------------------------------------------------------------
# Validation data


def read_validation(benchmark: str, root: str | Path) -> tuple[list[Sequence], str]:
    """Sequences of the declared validation benchmark and a description of the split.

    Refuses (TuneTrackerError) a GOT-10k root whose sequences lack full ground truth (the test split: only
    the first box is public, facts §12.3) and any unreadable root.
    """
    if benchmark not in OBJECTIVES:
        raise TuneTrackerError(f"unknown benchmark {benchmark!r}; one of {sorted(OBJECTIVES)}")
    root = Path(root)
    if not root.is_dir():
        raise TuneTrackerError(f"benchmark {benchmark}: root {root} is not a folder")
    try:
        seqs = read_benchmark(benchmark, root)
    except (OSError, AnnotationError, ValueError) as exc:
        raise TuneTrackerError(f"benchmark {benchmark}: cannot read {root} ({exc})") from None
    if not seqs:
        raise TuneTrackerError(f"benchmark {benchmark}: no sequences under {root}")
    if benchmark == "got10k":
        incomplete = [s.name for s in seqs if not s.gt_complete]
        if incomplete:
            raise TuneTrackerError(
                f"refusing to tune on {root}: {len(incomplete)} of {len(seqs)} GOT-10k sequences (e.g. "
                f"{incomplete[0]}) have only the first ground-truth box -- this is the TEST split. Tune on "
                "GOT-10k/val (or a held-out part of GOT-10k/train) and submit test results to the server.")
        split = f"GOT-10k '{root.name}' split ({len(seqs)} sequences, full ground truth)"
    else:
        split = (f"{benchmark} at {root} ({len(seqs)} sequences); {benchmark} has no separate validation "
                 "split, so do not report test numbers on these same sequences")
    return seqs, split


def sequence_order(n: int, seed: int) -> list[int]:
    """The fixed order every trial tracks the sequences in (a seeded permutation)."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


# ----------------------------------------------------------------------------------------------------------
# The trial


_NET_CACHE: dict[str, Any] = {}  # per worker process: checkpoint key -> built network


def _network(model: Mapping[str, Any], device: str):
    """Build (once per worker process and device) the network from the shipped config + state dict."""
    key = f"{model['key']}@{device}"
    if key not in _NET_CACHE:
        from ocean.config import from_dict
        from ocean.model import build_model

        cfg = from_dict(model["config"])
        model_cfg = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, pretrained=None))
        net = build_model(model_cfg)
        net.load_state_dict(model["state"])
        _NET_CACHE.clear()  # one checkpoint per tuning run: keep only the current one
        _NET_CACHE[key] = net.to(device).eval()
    return _NET_CACHE[key]


def evaluate_config(net: Any, tracker: TrackerConfig, benchmark: str, sequences: list[Sequence],
                    device: str = "cpu", on_sequence=None) -> float:
    """Track ``sequences`` in order with ``tracker`` and return the objective (:func:`running_score`).

    ``on_sequence(done, score, result)`` is called after each sequence with the running score (the trial
    reports it to Tune there). This is exactly what a trial runs; tests use it for the default score.
    """
    import torch

    from ocean.benchmarks.protocols import track_sequence

    results: list[dict] = []
    score = 0.0
    with torch.no_grad():
        for i, seq in enumerate(sequences):
            results.append(track_sequence(net, tracker, benchmark, seq, device))
            score = running_score(benchmark, sequences, results)
            if on_sequence is not None:
                on_sequence(i + 1, score, results[-1])
    return score


def tracker_trial(config: dict[str, Any], *, model: dict[str, Any], sequences: list[Sequence], benchmark: str,
                  base: dict[str, Any], space: dict[str, ParamSpec], device: str) -> None:
    """Ray Tune function trainable: one hyper-parameter set over the validation sequences.

    Reports ``score`` (running objective), ``sequences_done``, ``trial_cpu_s`` and ``trial_wall_s`` after
    each sequence; ASHA may stop the trial after any report.
    """
    import torch

    torch.set_num_threads(1)  # fractional-CPU trials must not fight over cores (ray_stack.md §2)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    net = _network(model, device)
    tracker = TrackerConfig(**{**base, **snap(space, config)})

    def report(done: int, score: float, _result: dict) -> None:
        tune.report({METRIC: score, TIME_ATTR: done, "trial_cpu_s": time.process_time() - cpu0,
                     "trial_wall_s": time.perf_counter() - wall0})

    evaluate_config(net, tracker, benchmark, sequences, device, on_sequence=report)


# ----------------------------------------------------------------------------------------------------------
# MLflow: one child run per trial, from the driver


class TrialLogger(tune.Callback):
    """Tune callback logging every trial as a nested MLflow run (created lazily; pickles without a client).

    Child runs: params = the trial's searched values, metric ``score`` (step = sequences done),
    ``sequences_done``, tags ``mlflow.parentRunId`` (nesting), ``ocean.tune.trial_id`` and, at the end,
    ``ocean.tune.status`` (completed / stopped_early / error).
    """

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, space: dict[str, ParamSpec],
                 num_sequences: int, tags: dict[str, str] | None = None) -> None:
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.space, self.num_sequences, self.tags = space, num_sequences, dict(tags or {})
        self.runs: dict[str, str] = {}
        self.last_done: dict[str, int] = {}
        self.failures = 0  # MLflow calls that failed (logging must not kill the tuning run)
        self._client = None

    def __reduce__(self):  # Tune may pickle callbacks with the experiment state: drop the client
        return (_rebuild_logger, (self.uri, self.experiment_id, self.parent_run_id, self.space,
                                  self.num_sequences, self.tags, self.runs, self.last_done))

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _safe(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # counted and printed; the search goes on
            self.failures += 1
            print(f"tune-tracker: MLflow logging failed ({type(exc).__name__}: {exc})", file=sys.stderr)
            return None

    def _run_id(self, trial) -> str | None:
        if trial.trial_id not in self.runs:
            run = self._safe(self.client.create_run, self.experiment_id, run_name=f"trial-{trial.trial_id}",
                             tags={**self.tags, "mlflow.parentRunId": self.parent_run_id,
                                   "ocean.tune.trial_id": trial.trial_id})
            if run is None:
                return None
            self.runs[trial.trial_id] = run.info.run_id
            params = snap(self.space, trial.config)
            self._safe(self.client.log_batch, run.info.run_id,
                       params=_params(params))
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        rid = self._run_id(trial)
        if rid is None or METRIC not in result:
            return
        from mlflow.entities import Metric

        step = int(result.get(TIME_ATTR, 0))
        self.last_done[trial.trial_id] = step
        now = int(time.time() * 1000)
        metrics = [Metric(METRIC, float(result[METRIC]), now, step), Metric(TIME_ATTR, float(step), now, step)]
        self._safe(self.client.log_batch, rid, metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        rid = self._run_id(trial)
        if rid is None:
            return
        done = self.last_done.get(trial.trial_id, 0)
        status = "completed" if done >= self.num_sequences else "stopped_early"
        self._safe(self.client.set_tag, rid, "ocean.tune.status", status)
        self._safe(self.client.set_terminated, rid, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        rid = self._run_id(trial)
        if rid is None:
            return
        self._safe(self.client.set_tag, rid, "ocean.tune.status", "error")
        self._safe(self.client.set_terminated, rid, "FAILED")


def _rebuild_logger(uri, experiment_id, parent_run_id, space, num_sequences, tags, runs, last_done):
    logger = TrialLogger(uri, experiment_id, parent_run_id, space, num_sequences, tags)
    logger.runs, logger.last_done = dict(runs), dict(last_done)
    return logger


def _params(values: Mapping[str, Any]):
    from mlflow.entities import Param

    return [Param(str(k), str(v)[:6000]) for k, v in values.items()]  # MLflow's param value limit


# ----------------------------------------------------------------------------------------------------------
# Outputs


def _trials_csv(rows: list[dict], names: list[str]) -> str:
    cols = ["trial", "trial_id", "status", TIME_ATTR, METRIC, *names, "wall_s", "cpu_s", "is_default", "is_best"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, **r["params"]})
    return buf.getvalue()


def plot_score_vs_trial(rows: list[dict], path: Path, title: str) -> Path:
    """Final score of every trial (hollow = stopped early by ASHA), the best so far, the defaults' score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs = [r["trial"] for r in rows]
    ys = [r[METRIC] if r[METRIC] is not None else np.nan for r in rows]
    full = [r["status"] == "completed" for r in rows]
    ax.scatter([x for x, f in zip(xs, full, strict=True) if f], [y for y, f in zip(ys, full, strict=True) if f],
               label="completed", color="tab:blue")
    ax.scatter([x for x, f in zip(xs, full, strict=True) if not f],
               [y for y, f in zip(ys, full, strict=True) if not f],
               label="stopped early (running score)", facecolors="none", edgecolors="tab:gray")
    best, line = -np.inf, []
    for y, f in zip(ys, full, strict=True):
        if f and not np.isnan(y):
            best = max(best, y)
        line.append(best if np.isfinite(best) else np.nan)
    ax.step(xs, line, where="post", color="tab:green", label="best so far (completed)")
    if rows and rows[0].get("is_default") and ys[0] is not None:
        ax.axhline(ys[0], color="tab:red", linestyle=":", label="defaults (trial 0)")
    ax.set_xlabel("trial")
    ax.set_ylabel(METRIC)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def best_tracker_json(tracker: TrackerConfig) -> dict[str, Any]:
    """``{"tracker": {...}}`` with the scalar TrackerConfig fields (what ``--tracker-config`` accepts)."""
    values = dataclasses.asdict(tracker)
    return {"tracker": {k: values[k] for k in SAVED_KEYS}}


# ----------------------------------------------------------------------------------------------------------
# The API


def _fail_parent(ml: Mapping[str, Any], uri: str | None) -> None:
    """Mark the parent MLflow run FAILED (the tuning run stopped before writing its results)."""
    if ml and uri:
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient(tracking_uri=uri).set_terminated(ml["parent_run_id"], "FAILED")
        except Exception as exc:  # the original error matters more
            print(f"tune-tracker: could not mark the MLflow run failed ({exc})", file=sys.stderr)


def _creation_index(result) -> tuple[int, str]:
    """Sort key = the order Tune created the trial in: the counter that starts its experiment tag, which
    Tune puts in the trial folder name ``<trainable>_<trial_id>_<counter>_<params>_<date>``."""
    name = Path(str(result.path)).name if result.path else ""
    trial_id = (result.metrics or {}).get("trial_id", "")
    tail = name.split(f"{trial_id}_", 1)[1] if trial_id and f"{trial_id}_" in name else ""
    head = tail.split("_", 1)[0]
    return (int(head) if head.isdigit() else sys.maxsize, name)


def _load_checkpoint_blob(checkpoint: str) -> tuple[dict[str, Any], Any]:
    from ocean.checkpoint import load_checkpoint
    from ocean.config import from_dict
    from ocean.storage import exists, is_uri

    if (is_uri(checkpoint) and not exists(checkpoint)) or (not is_uri(checkpoint) and not Path(checkpoint).is_file()):
        raise TuneTrackerError(f"checkpoint {checkpoint}: no such file or object")
    try:
        ckpt = load_checkpoint(checkpoint, map_location="cpu")
        cfg = from_dict(ckpt["config"])
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise TuneTrackerError(f"checkpoint {checkpoint}: cannot load it ({exc})") from None
    import hashlib

    key = hashlib.sha256(f"{checkpoint}:{ckpt.get('epoch')}:{len(ckpt['model'])}".encode()).hexdigest()[:16]
    return {"key": key, "config": ckpt["config"], "state": ckpt["model"]}, cfg


def tune_tracker(checkpoint: str, benchmark: str, root: str, out: str, *, trials: int = 20,
                 max_concurrent: int = 2, space: str = "official", seed: int = 0, mlflow_uri: str | None = None,
                 use_gpu: bool = False, grace_period: int | None = None, reduction_factor: float = 2,
                 cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.25, ray_address: str | None = None,
                 experiment: str = "ocean-tune-tracker", log_mlflow: bool = True,
                 max_sequences: int | None = None, verbose: int = 1) -> dict[str, Any]:
    """Search the tracker hyper-parameters of ``checkpoint`` on the validation benchmark ``benchmark`` at
    ``root`` and write the results under ``out`` (module docstring).

    Args:
        trials: number of trials (the first one is the default hyper-parameters).
        max_concurrent: trials running at once (TPE suggestions then depend on finishing order; 1 makes
            the search deterministic for a seed).
        space: ``official`` (facts §11.1) or ``sots`` (facts §11.2).
        seed: seeds the TPE sampler and the sequence order.
        grace_period: ASHA's first rung in sequences (default: a quarter of the sequences, at least 1);
            later rungs at grace_period * reduction_factor^k; max_t = number of sequences.
        cpus_per_trial / gpus_per_trial: Ray resources per trial (GPU only with ``use_gpu``).
        max_sequences: use only the first N sequences of the seeded order (smoke runs).

    Returns the summary written to ``OUT/tune_summary.json`` (best params and score, default score, the
    trials, cost, file locations, MLflow ids).
    """
    import optuna
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search.optuna import OptunaSearch

    from ocean.storage import OutputStore
    from pipelines.raysession import ensure_ray

    t_start = time.perf_counter()
    if trials < 1:
        raise TuneTrackerError(f"trials must be >= 1, got {trials}")
    if max_concurrent < 1:
        raise TuneTrackerError(f"max_concurrent must be >= 1, got {max_concurrent}")
    if space not in SPACES:
        raise TuneTrackerError(f"unknown search space {space!r}; one of {list(SPACES)}")
    if reduction_factor <= 1:
        raise TuneTrackerError(f"reduction_factor must be > 1, got {reduction_factor}")
    seqs, split = read_validation(benchmark, root)
    print(f"tune-tracker: WARNING: tuning on the validation set {split}", file=sys.stderr)
    if BENCHMARK_FAMILY[benchmark] == "vot" and max(len(s) for s in seqs) <= EAO_INTERVALS[benchmark][0]:
        print(f"tune-tracker: WARNING: every sequence is at most {EAO_INTERVALS[benchmark][0]} frames, the start "
              f"of the {benchmark} EAO interval (facts §12.4): EAO is undefined and counts as 0, so the search "
              "cannot rank trials", file=sys.stderr)
    order = sequence_order(len(seqs), seed)
    seqs = [seqs[i] for i in order][: max_sequences or None]
    model, ocean_cfg = _load_checkpoint_blob(checkpoint)

    # Defaults = checkpoint tracker section -> the benchmark's official preset (facts §9.3), as `ocean evaluate`.
    base_cfg = dataclasses.replace(ocean_cfg.tracker, **TRACKER_PRESETS[benchmark])
    use_align = base_cfg.use_align and ocean_cfg.model.head.align
    if base_cfg.use_align and not ocean_cfg.model.head.align:
        base_cfg = dataclasses.replace(base_cfg, use_align=False)  # the model has no p_o head to mix in
    official = search_space(space, benchmark, use_align)
    base = {k: v for k, v in dataclasses.asdict(base_cfg).items() if k != "online_params"}
    defaults = {k: base[k] for k in official}
    searched, widened = include_point(official, defaults)
    for name, change in widened.items():
        print(f"tune-tracker: the default {name}={defaults[name]} lies outside the {space} space; widened "
              f"{change} so the defaults can be trial 0", file=sys.stderr)
    fixed = {k: v for k, v in base.items() if k not in searched}

    n = len(seqs)
    grace = max(1, min(n, grace_period if grace_period is not None else n // 4))
    device = "cuda" if use_gpu else "cpu"

    # Output: local folder, or a staging folder uploaded to S3 at the end.
    store = OutputStore.from_uri(out)
    staging = Path(store.root) if store.kind == "local" else Path(tempfile.mkdtemp(prefix="ocean-tune-"))
    staging.mkdir(parents=True, exist_ok=True)

    # MLflow store + experiment + parent run, once on the driver before any trial (ray_stack.md §5).
    ml: dict[str, Any] = {}
    uri: str | None = None
    callbacks = []
    if log_mlflow:
        from mlflow.tracking import MlflowClient

        from pipelines.tracking import ensure_experiment, public_uri, run_tags, tracking_uri

        uri = tracking_uri(mlflow_uri, out)
        exp_id = ensure_experiment(uri, experiment)
        client = MlflowClient(tracking_uri=uri)
        tags = run_tags(**{"ocean.kind": "tune-tracker", "ocean.checkpoint": public_uri(checkpoint),
                           "ocean.benchmark": benchmark})
        parent = client.create_run(exp_id, run_name=f"tune-tracker-{benchmark}-{space}", tags=tags)
        ml = {"tracking_uri": uri if uri.startswith("sqlite:") else public_uri(uri), "experiment_id": exp_id, "parent_run_id": parent.info.run_id}
        client.log_batch(parent.info.run_id, params=_params({
            "checkpoint": public_uri(checkpoint), "benchmark": benchmark, "root": str(root), "space": space,
            "trials": trials, "max_concurrent": max_concurrent, "seed": seed, "num_sequences": n,
            "grace_period": grace, "reduction_factor": reduction_factor, "cpus_per_trial": cpus_per_trial,
            "use_gpu": use_gpu, **{f"space.{k}": v.describe() for k, v in searched.items()},
            **{f"fixed.{k}": v for k, v in fixed.items()}}))
        callbacks.append(TrialLogger(uri, exp_id, parent.info.run_id, searched, n,
                                     tags={"ocean.kind": "tune-tracker-trial", "ocean.benchmark": benchmark}))

    import ray

    ensure_ray(ray_address)
    available = ray.cluster_resources()
    if use_gpu and available.get("GPU", 0) < gpus_per_trial:
        _fail_parent(ml, uri)
        raise TuneTrackerError(f"--gpu: the Ray cluster has {available.get('GPU', 0):g} GPUs, a trial needs "
                               f"{gpus_per_trial:g}")
    if available.get("CPU", 0) < cpus_per_trial:
        _fail_parent(ml, uri)
        raise TuneTrackerError(f"the Ray cluster has {available.get('CPU', 0):g} CPUs, a trial needs "
                               f"{cpus_per_trial:g}")
    resources = {"CPU": float(cpus_per_trial), **({"GPU": float(gpus_per_trial)} if use_gpu else {})}
    trainable = tune.with_resources(
        tune.with_parameters(tracker_trial, model=model, sequences=seqs, benchmark=benchmark, base=fixed,
                             space=searched, device=device),
        resources)
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), points_to_evaluate=[defaults])
    scheduler = AsyncHyperBandScheduler(time_attr=TIME_ATTR, max_t=n, grace_period=grace,
                                        reduction_factor=reduction_factor)
    run_name = f"tune-tracker-{benchmark}-{space}-{time.strftime('%Y%m%d-%H%M%S')}"
    tuner = tune.Tuner(
        trainable,
        param_space={k: v.to_tune() for k, v in searched.items()},
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=trials, max_concurrent_trials=max_concurrent,
                                    reuse_actors=True),  # one worker process per slot: torch imported once
        run_config=tune.RunConfig(name=run_name, storage_path=str((staging / "ray_results").resolve()),
                                  callbacks=callbacks, verbose=verbose),
    )
    try:
        grid = tuner.fit()
    except BaseException:
        _fail_parent(ml, uri)
        raise

    # ---- collect: one row per trial, in creation order
    rows: list[dict] = []
    for res in grid:
        m = res.metrics or {}
        cfg = res.config or {}
        done = int(m.get(TIME_ATTR, 0) or 0)
        status = "error" if res.error else ("completed" if done >= n else "stopped_early")
        rows.append({"trial_id": m.get("trial_id", ""), "order": _creation_index(res), "status": status, TIME_ATTR: done,
                     METRIC: None if m.get(METRIC) is None else float(m[METRIC]),
                     "params": snap(searched, cfg) if cfg else {},
                     "wall_s": float(m.get("trial_wall_s", 0.0) or 0.0), "cpu_s": float(m.get("trial_cpu_s", 0.0) or 0.0),
                     "error": None if res.error is None else f"{type(res.error).__name__}: {res.error}"})
    rows.sort(key=lambda r: r["order"])
    for i, r in enumerate(rows):
        r["trial"] = i
        r["is_default"] = i == 0 and r["params"] == snap(searched, defaults)  # points_to_evaluate first
        r["is_best"] = False
    complete = [r for r in rows if r["status"] == "completed" and r[METRIC] is not None]
    if not complete:
        errors = "; ".join(r["error"] for r in rows if r["error"]) or "no trial tracked every sequence"
        _fail_parent(ml, uri)
        raise RuntimeError(f"tune-tracker: no trial completed ({errors})")
    # Best = highest score over ALL sequences; ties (to 1e-9: summation order leaves ~1e-13 noise) go to
    # the earliest trial, so the defaults (trial 0) win unless something is really better.
    best_row = max(complete, key=lambda r: (round(r[METRIC], 9), -r["trial"]))
    best_row["is_best"] = True
    default_row = next((r for r in rows if r["is_default"]), None)
    best_cfg = TrackerConfig(**{**base, **best_row["params"]})

    wall = time.perf_counter() - t_start
    trial_wall = sum(r["wall_s"] for r in rows)
    cost = {
        "trials": len(rows),
        "trials_completed": len(complete),
        "trials_stopped_early": sum(r["status"] == "stopped_early" for r in rows),
        "trials_failed": sum(r["status"] == "error" for r in rows),
        "sequences_tracked": sum(r[TIME_ATTR] for r in rows),
        "cpu_hours": sum(r["cpu_s"] for r in rows) / 3600.0,  # measured process CPU time of the trials
        "cpu_hours_reserved": trial_wall * cpus_per_trial / 3600.0,  # trial wall time x CPUs reserved
        "gpu_hours": trial_wall * gpus_per_trial / 3600.0 if use_gpu else 0.0,  # GPU fraction reserved
        "trial_hours": trial_wall / 3600.0,
        "wall_s": wall,
    }
    summary: dict[str, Any] = {
        "checkpoint": checkpoint, "benchmark": benchmark, "root": str(root), "split": split,
        "objective": OBJECTIVES[benchmark], "space": space,
        "search_space": {k: v.describe() for k, v in searched.items()}, "space_widened": widened,
        "fixed": fixed, "sequences": [s.name for s in seqs], "seed": seed, "grace_period": grace,
        "reduction_factor": reduction_factor, "max_concurrent": max_concurrent,
        "best": {"trial": best_row["trial"], "score": best_row[METRIC], "params": best_row["params"]},
        "default": None if default_row is None else {"trial": default_row["trial"], "score": default_row[METRIC],
                                                     "status": default_row["status"], "params": defaults},
        "cost": cost,
        "trials": [{k: r[k] for k in ("trial", "trial_id", "status", TIME_ATTR, METRIC, "params", "wall_s",
                                      "cpu_s", "error")} for r in rows],
        "files": {"best_tracker": "best_tracker.json", "trials_csv": "trials.csv", "plot": "score_vs_trial.png",
                  "summary": "tune_summary.json"},
        "mlflow": ml,
    }
    (staging / "best_tracker.json").write_text(json.dumps(best_tracker_json(best_cfg), indent=2) + "\n")
    (staging / "trials.csv").write_text(_trials_csv(rows, list(searched)))
    plot_score_vs_trial(rows, staging / "score_vs_trial.png",
                        f"{benchmark} {OBJECTIVES[benchmark]} ({space} space, {n} sequences)")
    (staging / "tune_summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    if ml:
        from mlflow.entities import Metric

        pid = ml["parent_run_id"]
        client = MlflowClient(tracking_uri=uri)
        now = int(time.time() * 1000)
        metrics = {"best_score": best_row[METRIC], **{f"cost.{k}": float(v) for k, v in cost.items()}}
        if default_row is not None and default_row[METRIC] is not None:
            metrics["default_score"] = default_row[METRIC]
        client.log_batch(pid, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         params=_params({f"best.{k}": v for k, v in best_row["params"].items()}))
        for name in ("best_tracker.json", "trials.csv", "score_vs_trial.png", "tune_summary.json"):
            client.log_artifact(pid, str(staging / name))
        client.set_terminated(pid, "FINISHED")

    if store.kind != "local":
        for name in ("best_tracker.json", "trials.csv", "score_vs_trial.png", "tune_summary.json"):
            store.write(name, (staging / name).read_bytes())
        shutil.rmtree(staging, ignore_errors=True)
    summary["out"] = store.uri
    return summary


def format_report(summary: Mapping[str, Any]) -> str:
    """Human-readable lines for the end of a tuning run (best, defaults, cost, files)."""
    cost = summary["cost"]
    best = summary["best"]
    lines = [f"best {summary['objective']} {best['score']:.4f} (trial {best['trial']}): "
             + ", ".join(f"{k}={v}" for k, v in best["params"].items())]
    if summary.get("default"):
        d = summary["default"]
        score = "n/a" if d["score"] is None else f"{d['score']:.4f}"
        lines.append(f"defaults {summary['objective']} {score} (trial {d['trial']}, {d['status']})")
    lines.append(f"cost: {cost['trials']} trials ({cost['trials_completed']} completed, "
                 f"{cost['trials_stopped_early']} stopped early by ASHA, {cost['trials_failed']} failed), "
                 f"{cost['sequences_tracked']} sequences tracked, {cost['cpu_hours']:.4f} CPU-hours measured "
                 f"({cost['cpu_hours_reserved']:.4f} reserved)"
                 + (f", {cost['gpu_hours']:.4f} GPU-hours" if cost.get("gpu_hours") else "")
                 + f", wall {cost['wall_s']:.1f} s")
    out = summary.get("out", "")
    lines.append(f"wrote {os.path.join(out, 'best_tracker.json')} (use with --tracker-config), trials.csv, "
                 "score_vs_trial.png, tune_summary.json")
    if summary.get("mlflow"):
        lines.append(f"MLflow: {summary['mlflow']['tracking_uri']} parent run {summary['mlflow']['parent_run_id']}")
    return "\n".join(lines)
