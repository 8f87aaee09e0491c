"""Ray Tune pieces of ``ocean tune-tracker``: the trial function, its MLflow callback, the results read back.

:func:`tracker_trial` tracks the validation sequences with one hyper-parameter set and reports the running
score after each; its settings cross Ray once as a :class:`TrialSettings` (``tune.with_parameters``).
:class:`TrialLogger` logs every trial from the driver as an MLflow child run of the search's parent run.
:func:`trial_rows` reads the Tune result grid back as trial rows (:mod:`ocean.tuning`).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from ocean.benchmarks.sequence import Sequence
from ocean.tuning import METRIC, TIME_ATTR, ModelBlob, ParamSpec, SearchSetup, evaluate_config, snap
from pipelines.tracking import RunLogger

log = logging.getLogger(__name__)


def tune_domain(spec: ParamSpec):
    """The Ray Tune domain of ``spec`` (Optuna gets a stepped FloatDistribution / a CategoricalDistribution)."""
    if spec.kind == "choice":
        return tune.choice(list(spec.values))
    return tune.quniform(spec.low, spec.high, spec.q)


# ----------------------------------------------------------------------------------------------------------
# The trial


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial needs besides its hyper-parameters (sent once through Ray's object store)."""

    model: ModelBlob
    sequences: list[Sequence]
    benchmark: str
    setup: SearchSetup
    device: str


_NET_CACHE: dict[str, Any] = {}  # per worker process: checkpoint key -> built network


def _network(model: ModelBlob, device: str):
    """Build (once per worker process and device) the network from the shipped config + state dict."""
    key = f"{model.key}@{device}"
    if key not in _NET_CACHE:
        from ocean.config import from_dict
        from ocean.model import build_model

        cfg = from_dict(model.config)
        model_cfg = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, pretrained=None))
        net = build_model(model_cfg)
        net.load_state_dict(model.state)
        _NET_CACHE.clear()  # one checkpoint per tuning run: keep only the current one
        _NET_CACHE[key] = net.to(device).eval()
    return _NET_CACHE[key]


def tracker_trial(config: dict[str, Any], *, settings: TrialSettings) -> None:
    """Ray Tune function trainable: one hyper-parameter set over the validation sequences, in the search's
    fixed order.

    Reports ``score`` (running objective), ``sequences_done``, ``trial_cpu_s`` and ``trial_wall_s`` after
    each sequence; ASHA may stop the trial after any report.
    """
    import torch

    torch.set_num_threads(1)  # fractional-CPU trials must not fight over cores (ray_stack.md §2)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    net = _network(settings.model, settings.device)
    tracker = settings.setup.tracker(config)

    def report(done: int, score: float, _result: dict) -> None:
        tune.report({METRIC: score, TIME_ATTR: done, "trial_cpu_s": time.process_time() - cpu0,
                     "trial_wall_s": time.perf_counter() - wall0})

    evaluate_config(net, tracker, settings.benchmark, settings.sequences, settings.device, on_sequence=report)


# ----------------------------------------------------------------------------------------------------------
# Early stopping that spares the defaults


class DefaultsCompleteASHA(AsyncHyperBandScheduler):
    """ASHA (``AsyncHyperBandScheduler``) that never stops the defaults' trial early.

    The defaults are trial 0 and the search's baseline: the summary compares the best trial with them and
    ``best_tracker.json`` is never worse than them. A baseline stopped after its first rung has a running
    score over fewer sequences, which is not comparable with the completed trials' scores over all of them
    (on two synthetic GOT-10k sequences the running score after one was 0.440, after both 0.225). The
    defaults' results still enter the rungs, so they still stop worse trials; only the STOP decision about
    the defaults themselves is turned into CONTINUE. A proposal equal to the defaults is treated alike.
    """

    def __init__(self, *, space: dict[str, ParamSpec], defaults: dict[str, Any], time_attr: str, max_t: int,
                 **asha: Any):
        super().__init__(time_attr=time_attr, max_t=max_t, **asha)
        self._space = space
        self._defaults = snap(space, defaults)
        self._clock, self._last = time_attr, max_t

    def _is_defaults(self, config: dict[str, Any] | None) -> bool:
        try:
            return bool(config) and snap(self._space, config) == self._defaults
        except (KeyError, TypeError, ValueError):
            return False

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and self._is_defaults(trial.config) \
                and result.get(self._clock, self._last) < self._last:
            if isinstance(getattr(self, "_num_stopped", None), int):  # ASHA's count in its debug string
                self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


# ----------------------------------------------------------------------------------------------------------
# MLflow: one child run per trial, from the driver


class TrialLogger(tune.Callback):
    """Tune callback logging every trial as a child run of ``parent`` (created lazily; pickles as ids).

    Each child: params = the trial's values, metric ``score`` with ``step = sequences done``, tags
    ``ocean.tune.trial_id`` and ``ocean.tune.status`` completed / stopped_early / error.
    ``MLflowLoggerCallback`` cannot nest runs under a parent and logs every Tune result field as a metric
    (ray_stack.md §8 lists its open issues). MLflow errors are counted in ``failures`` and printed: logging must not kill the tuning run.
    """

    def __init__(self, parent: RunLogger, space: dict[str, ParamSpec], num_sequences: int,
                 tags: dict[str, str] | None = None) -> None:
        self.parent, self.space, self.num_sequences, self.tags = parent, space, num_sequences, dict(tags or {})
        self.runs: dict[str, RunLogger] = {}
        self.last_done: dict[str, int] = {}
        self.failures = 0

    def _safe(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # counted and printed; the search goes on
            self.failures += 1
            log.warning(f"MLflow logging failed ({type(exc).__name__}: {exc})")
            return None

    def _run(self, trial) -> RunLogger | None:
        if trial.trial_id not in self.runs:
            run = self._safe(self.parent.child, f"trial-{trial.trial_id}",
                             tags={**self.tags, "ocean.tune.trial_id": trial.trial_id})
            if run is None:
                return None
            self.runs[trial.trial_id] = run
            self._safe(run.log_params, snap(self.space, trial.config))
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run = self._run(trial)
        if run is None or METRIC not in result:
            return
        step = int(result.get(TIME_ATTR, 0))
        self.last_done[trial.trial_id] = step
        self._safe(run.log_metrics, {METRIC: float(result[METRIC]), TIME_ATTR: float(step)}, step=step)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run = self._run(trial)
        if run is None:
            return
        done = self.last_done.get(trial.trial_id, 0)
        status = "completed" if done >= self.num_sequences else "stopped_early"
        self._safe(run.set_tags, {"ocean.tune.status": status})
        self._safe(run.finish, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run = self._run(trial)
        if run is None:
            return
        self._safe(run.set_tags, {"ocean.tune.status": "error"})
        self._safe(run.finish, "FAILED")


# ----------------------------------------------------------------------------------------------------------
# The results


def _creation_index(result) -> tuple[int, str]:
    """Sort key = the order Tune created the trial in: the counter that starts its experiment tag, which
    Tune puts in the trial folder name ``<trainable>_<trial_id>_<counter>_<params>_<date>``."""
    name = Path(str(result.path)).name if result.path else ""
    trial_id = (result.metrics or {}).get("trial_id", "")
    tail = name.split(f"{trial_id}_", 1)[1] if trial_id and f"{trial_id}_" in name else ""
    head = tail.split("_", 1)[0]
    return (int(head) if head.isdigit() else sys.maxsize, name)


def trial_rows(grid, space: dict[str, ParamSpec], num_sequences: int) -> list[dict]:
    """One row per trial of the Tune result grid (in the grid's order; ``order`` = creation order)."""
    rows: list[dict] = []
    for res in grid:
        m = res.metrics or {}
        cfg = res.config or {}
        done = int(m.get(TIME_ATTR, 0) or 0)
        status = "error" if res.error else ("completed" if done >= num_sequences else "stopped_early")
        rows.append({"trial_id": m.get("trial_id", ""), "order": _creation_index(res), "status": status,
                     TIME_ATTR: done, METRIC: None if m.get(METRIC) is None else float(m[METRIC]),
                     "params": snap(space, cfg) if cfg else {},
                     "wall_s": float(m.get("trial_wall_s", 0.0) or 0.0),
                     "cpu_s": float(m.get("trial_cpu_s", 0.0) or 0.0),
                     "error": None if res.error is None else f"{type(res.error).__name__}: {res.error}"})
    return rows
