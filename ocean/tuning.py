"""Tracker hyper-parameter search, the parts without Ray: spaces, trial 0, scoring a configuration, reports.

:mod:`pipelines.tune_tracker` drives the search over these plain functions. The spaces are the official ones
(:func:`search_space`, facts §11.1 / §11.2) with the benchmark's default hyper-parameters as trial 0
(:func:`search_setup`, widening a space just enough, :func:`include_point`). Every trial tracks the same
validation sequences (the GOT-10k test split is refused, :func:`read_validation`) in one seeded order
(:func:`sequence_order`) with the checkpoint's network sent once as data (:func:`load_model_blob`), and
:func:`evaluate_config` scores it: the benchmark's :data:`~ocean.benchmarks.scoring.HEADLINE` metric over the
sequences done so far. Trial rows (dicts with :data:`TRIAL_KEYS`) give the best trial, the cost and the
outputs: ``trials.csv``, ``score_vs_trial.png``, ``best_tracker.json`` and the end-of-run report.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocean.benchmarks.metrics import EAO_INTERVALS
from ocean.benchmarks.protocols import track_sequence
from ocean.benchmarks.readers import BENCHMARK_FAMILY, BenchmarkRootError, read_benchmark_root
from ocean.benchmarks.scoring import HEADLINE, score_tracks
from ocean.benchmarks.sequence import Sequence
from ocean.config import TrackerConfig

METRIC = "score"  # the name Tune and MLflow see for the objective
TIME_ATTR = "sequences_done"  # ASHA's clock: sequences tracked so far
SPACES = ("official", "sots")
# TrackerConfig fields always written to best_tracker.json: every scalar field (online_params, a nested
# section that tuning never searches, only when it differs from the defaults: best_tracker_json).
SAVED_KEYS = tuple(f.name for f in dataclasses.fields(TrackerConfig) if f.name != "online_params")
# One trial's row, in the order of tune_summary.json's "trials".
TRIAL_KEYS = ("trial", "trial_id", "status", TIME_ATTR, METRIC, "params", "wall_s", "cpu_s", "error")


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
    if benchmark not in HEADLINE:
        raise TuneTrackerError(f"unknown benchmark {benchmark!r}; one of {sorted(HEADLINE)}")
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


@dataclass(frozen=True)
class SearchSetup:
    """What a search runs: ``base`` (the defaults, online_params included; a trial replaces the
    searched ones), the searched ``space``, ``defaults`` (trial 0), ``fixed`` (the fields not searched) and
    ``widened`` ({name: "old -> new"} where the space had to grow to contain the defaults)."""

    base: TrackerConfig
    space: dict[str, ParamSpec]
    defaults: dict[str, Any]
    fixed: dict[str, Any]
    widened: dict[str, str]

    def tracker(self, params: Mapping[str, Any]) -> TrackerConfig:
        """The tracker configuration of a trial (``params``: the searched values, raw or snapped)."""
        return dataclasses.replace(self.base, **snap(self.space, params))


def search_setup(tracker: TrackerConfig, has_align_head: bool, space: str, benchmark: str) -> SearchSetup:
    """The search over ``space`` around ``tracker`` (the benchmark's defaults: the checkpoint's tracker
    section layered with the benchmark's preset, facts §9.3, what ``ocean evaluate`` uses). p_o is off
    when the model has no align head to mix in."""
    use_align = tracker.use_align and has_align_head
    if tracker.use_align and not has_align_head:
        tracker = dataclasses.replace(tracker, use_align=False)  # the model has no p_o head to mix in
    official = search_space(space, benchmark, use_align)
    scalars = {k: v for k, v in dataclasses.asdict(tracker).items() if k != "online_params"}
    defaults = {k: scalars[k] for k in official}
    searched, widened = include_point(official, defaults)
    fixed = {k: v for k, v in scalars.items() if k not in searched}
    return SearchSetup(tracker, searched, defaults, fixed, widened)  # keeps online_params (--set)


# ----------------------------------------------------------------------------------------------------------
# Validation data


def read_validation(benchmark: str, root: str | Path) -> tuple[list[Sequence], str]:
    """Sequences of the declared validation benchmark and a description of the split.

    Refuses (TuneTrackerError) a GOT-10k root whose sequences lack full ground truth (the test split: only
    the first box is public, facts §12.3) and any unreadable root.
    """
    if benchmark not in HEADLINE:
        raise TuneTrackerError(f"unknown benchmark {benchmark!r}; one of {sorted(HEADLINE)}")
    try:
        root, seqs = read_benchmark_root(benchmark, root)
    except BenchmarkRootError as exc:
        raise TuneTrackerError(str(exc)) from None
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


def eao_undefined_warning(benchmark: str, sequences: list[Sequence]) -> str | None:
    """The warning for VOT sequences too short for that year's EAO interval (facts §12.4), else None."""
    if BENCHMARK_FAMILY[benchmark] != "vot" or max(len(s) for s in sequences) > EAO_INTERVALS[benchmark][0]:
        return None
    return (f"every sequence is at most {EAO_INTERVALS[benchmark][0]} frames, the start of the {benchmark} EAO "
            "interval (facts §12.4): EAO is undefined and counts as 0, so the search cannot rank trials")


def sequence_order(n: int, seed: int) -> list[int]:
    """The fixed order every trial tracks the sequences in (a seeded permutation)."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


# ----------------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class ModelBlob:
    """A checkpoint's network as data: its config dict and state dict, ``key`` naming the checkpoint."""

    key: str
    config: dict[str, Any]
    state: dict[str, Any]


def load_model_blob(checkpoint: str) -> tuple[ModelBlob, Any]:
    """The checkpoint's network as a :class:`ModelBlob` and its OceanConfig; TuneTrackerError when the
    file is missing or unreadable."""
    from ocean.checkpoint import CheckpointError, checkpoint_config, load_checkpoint
    from ocean.storage import is_uri

    if not is_uri(checkpoint) and not Path(checkpoint).is_file():  # an object: load_checkpoint says why not
        raise TuneTrackerError(f"checkpoint {checkpoint}: no such file or object")
    try:
        ckpt = load_checkpoint(checkpoint, map_location="cpu")
        cfg = checkpoint_config(ckpt, checkpoint)
    except CheckpointError as exc:
        raise TuneTrackerError(str(exc)) from None
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise TuneTrackerError(f"checkpoint {checkpoint}: cannot load it ({exc})") from None
    return ModelBlob(model_key(checkpoint, ckpt["config"], ckpt["model"]), ckpt["config"], ckpt["model"]), cfg


def model_key(name: str, config: Mapping[str, Any], state: Mapping[str, Any]) -> str:
    """A key for a network (its name, a digest of its config and of every weight tensor's bytes): a worker
    reuses a cached network only for the same network, even when a file was overwritten at the same path
    or two checkpoints share their weights but not their config (e.g. ``model.head.correlation``)."""
    import torch

    digest = hashlib.sha256(name.encode())
    digest.update(json.dumps(config, sort_keys=True, default=repr).encode())
    for k in sorted(state):
        v = state[k]
        digest.update(k.encode())
        if hasattr(v, "detach"):
            t = v.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(v).encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# The objective


def tuning_score(benchmark: str, sequences: list[Sequence], results: list[dict]) -> float:
    """The objective over the first ``len(results)`` sequences (``results`` as returned by
    :func:`ocean.benchmarks.protocols.track_sequence`, in the order of ``sequences``): the benchmark's
    :data:`HEADLINE` metric from :func:`~ocean.benchmarks.scoring.score_tracks`, an undefined value (EAO
    when every fragment is shorter than the interval's lower bound) counted as 0.0."""
    if not results:
        raise ValueError("no sequences tracked yet")
    done = sequences[: len(results)]
    key = "trajectory" if BENCHMARK_FAMILY[benchmark] == "vot" else "boxes_xywh"
    tracks = {s.name: r[key] for s, r in zip(done, results, strict=False)}
    value = score_tracks(benchmark, done, tracks).get(HEADLINE[benchmark])
    return 0.0 if value is None or math.isnan(value) else float(value)


def evaluate_config(net: Any, tracker: TrackerConfig, benchmark: str, sequences: list[Sequence],
                    device: str = "cpu", on_sequence: Callable[[int, float, dict], None] | None = None) -> float:
    """Track ``sequences`` in order with ``tracker`` and return the objective (:func:`tuning_score`).

    ``on_sequence(done, score, result)`` is called after each sequence with the running score (the trial
    reports it to Tune there). This is exactly what a trial runs; tests use it for the default score.
    """
    import torch

    results: list[dict] = []
    score = 0.0
    with torch.no_grad():
        for i, seq in enumerate(sequences):
            results.append(track_sequence(net, tracker, benchmark, seq, device))
            score = tuning_score(benchmark, sequences, results)
            if on_sequence is not None:
                on_sequence(i + 1, score, results[-1])
    return score


# ----------------------------------------------------------------------------------------------------------
# Trial rows and outputs


def number_trials(rows: list[dict], space: Mapping[str, ParamSpec], defaults: Mapping[str, Any]) -> list[dict]:
    """``rows`` (each with its creation ``order``) sorted and numbered ``trial`` 0.., with ``is_default``
    (trial 0 carrying the defaults: Tune runs ``points_to_evaluate`` first) and ``is_best`` False."""
    rows = sorted(rows, key=lambda r: r["order"])
    for i, r in enumerate(rows):
        r["trial"] = i
        r["is_default"] = i == 0 and r["params"] == snap(space, defaults)
        r["is_best"] = False
    return rows


def pick_best(rows: list[dict]) -> tuple[dict, dict | None]:
    """The best completed trial (marked ``is_best``) and the defaults' trial (None when absent).

    Best = highest score over ALL sequences; ties (to 1e-9: summation order leaves ~1e-13 noise) go to the
    earliest trial, so the defaults (trial 0) win unless something is really better. RuntimeError when no
    trial completed.
    """
    complete = [r for r in rows if r["status"] == "completed" and r[METRIC] is not None]
    if not complete:
        errors = "; ".join(r["error"] for r in rows if r["error"]) or "no trial tracked every sequence"
        raise RuntimeError(f"tune-tracker: no trial completed ({errors})")
    best_row = max(complete, key=lambda r: (round(r[METRIC], 9), -r["trial"]))
    best_row["is_best"] = True
    return best_row, next((r for r in rows if r["is_default"]), None)


def trial_cost(rows: list[dict], *, cpus_per_trial: float, gpus_per_trial: float, use_gpu: bool,
               wall_s: float) -> dict[str, float]:
    """Trials by outcome, sequences tracked, CPU / GPU hours and the wall time of a search."""
    trial_wall = sum(r["wall_s"] for r in rows)
    return {
        "trials": len(rows),
        "trials_completed": sum(r["status"] == "completed" and r[METRIC] is not None for r in rows),
        "trials_stopped_early": sum(r["status"] == "stopped_early" for r in rows),
        "trials_failed": sum(r["status"] == "error" for r in rows),
        "sequences_tracked": sum(r[TIME_ATTR] for r in rows),
        "cpu_hours": sum(r["cpu_s"] for r in rows) / 3600.0,  # measured process CPU time of the trials
        "cpu_hours_reserved": trial_wall * cpus_per_trial / 3600.0,  # trial wall time x CPUs reserved
        "gpu_hours": trial_wall * gpus_per_trial / 3600.0 if use_gpu else 0.0,  # GPU fraction reserved
        "trial_hours": trial_wall / 3600.0,
        "wall_s": wall_s,
    }


def trials_csv(rows: list[dict], names: list[str]) -> str:
    """``trials.csv``: one line per trial, the searched values ``names`` as columns."""
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
    """``{"tracker": {...}}`` with the scalar TrackerConfig fields, and ``online_params`` when it is not the
    default (what ``--tracker-config`` accepts)."""
    values = json.loads(json.dumps(dataclasses.asdict(tracker)))  # tuples -> lists, as the file holds them
    saved = {k: values[k] for k in SAVED_KEYS}
    if tracker.online_params != TrackerConfig().online_params:
        saved["online_params"] = values["online_params"]
    return {"tracker": saved}


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
