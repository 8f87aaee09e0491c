"""MLflow for the jobs: where runs go (:func:`tracking_uri`) and one run at a time (:class:`RunLogger`).

:class:`RunLogger` is the only place that opens, resumes, logs to and closes MLflow runs: params are
scrubbed of credentials and cut to MLflow's limit here, metrics go in batches, every run carries the
project's tags and MLflow's standard source tags, and a run left by an exception is marked FAILED. It
crosses Ray as ``(uri, run_id)``; the client is rebuilt in each process.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ocean.config import flatten
from ocean.storage import REDACTED, is_uri, public_uri, scrub  # noqa: F401  (REDACTED: for callers)

MAX_PARAM_CHARS = 6000  # MLflow's param value limit (mlflow.utils.validation MAX_PARAM_VAL_LENGTH)


def tracking_uri(explicit: str | None = None, out: str | None = None) -> str:
    """``explicit``, else ``$MLFLOW_TRACKING_URI``, else a sqlite store (``OUT/mlflow.db`` for a local
    ``out``, ``./mlruns.db`` otherwise); always absolute, so a Ray worker whose working directory differs
    logs to the same store (ray-project/ray#45456). A plain path becomes ``sqlite:///ABS``."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        if out is not None and (not is_uri(out) or str(out).startswith("file://")):
            folder = Path(urllib.parse.urlparse(out).path if is_uri(out) else out).expanduser().resolve()
            uri = f"sqlite:///{folder / 'mlflow.db'}"
        else:
            uri = f"sqlite:///{Path('mlruns.db').resolve()}"
    if "://" not in uri:  # a bare file name or folder
        path = Path(uri).expanduser().resolve()
        uri = f"sqlite:///{path}" if path.suffix == ".db" else f"file://{path}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///"):]
        uri = f"sqlite:///{Path(rel).expanduser().resolve()}"
    return uri


# MLflow 3's UI opens an experiment in its model-training view, not the GenAI one, by this tag (ray_stack.md §5.1).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (sqlite: its folder and schema) and the experiment once, on the driver, before any
    worker touches it (parallel first uses race on sqlite's schema migration: ray_stack.md §5, mlflow#6490),
    tagged as a model-training experiment (:data:`EXPERIMENT_KIND`); returns the experiment id."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made before the tag was set: MLflow 3 would open it as GenAI
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):  # artifacts next to the database, not in the working directory
        artifact_location = str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name)
    try:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:  # created concurrently by another driver
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def config_params(cfg, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Flattened config (plus ``extra`` run settings) as MLflow params, scrubbed and stringified."""
    return _cut({**flatten(cfg), **(extra or {})})


def code_version(repo: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the source tree (``-dirty`` with uncommitted changes), else ``unknown``."""
    root = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def run_tags(**extra: Any) -> dict[str, str]:
    """Tags every run carries: ``ocean.code_version``, ``ocean.package_version``, plus ``extra``."""
    try:
        from importlib.metadata import version

        pkg = version("ocean-ray")
    except Exception:
        pkg = "unknown"
    tags = {"ocean.code_version": code_version(), "ocean.package_version": pkg, **extra}
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in scrub(tags).items()}


def find_run(uri: str, experiment_id: str, tag: str, value: str) -> str | None:
    """The newest run of the experiment whose tag ``tag`` equals ``value`` (None if there is none)."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs(
        [experiment_id], filter_string=f"tags.`{tag}` = '{value}'", order_by=["attributes.start_time DESC"],
        max_results=1)
    return runs[0].info.run_id if runs else None


class TrackingStoreError(ValueError):
    """A tracking store that is a file on the driver's machine, on a Ray cluster of several nodes."""


def require_shared_store(uri: str, nodes: int) -> None:
    """Refuse a ``sqlite:`` / ``file:`` store (or a plain path) when the Ray cluster has ``nodes`` > 1: the
    processes that log from other nodes (training rank 0, Tune trials) would each write a file of their own
    machine, or fail. Raises :class:`TrackingStoreError` naming the store, the nodes and the fix."""
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    local = scheme in ("sqlite", "file") or (scheme == "" and not uri.startswith("databricks"))
    if nodes > 1 and local:
        raise TrackingStoreError(
            f"the MLflow store {public_uri(uri)} is a file on this machine, but the Ray cluster has {nodes} "
            "nodes whose processes log to it: set MLFLOW_TRACKING_URI (or --mlflow-uri) to an MLflow "
            "tracking server every node can reach, e.g. http://HOST:5000")


# ----------------------------------------------------------------------------------------------------------
# One run

_BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits per call


def _cut(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v)[:MAX_PARAM_CHARS] for k, v in scrub(dict(values)).items()}


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags (what the fluent API sets): user, entry point, git commit."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    tags = {"mlflow.user": user, "mlflow.source.type": "JOB",
            "mlflow.source.name": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"}
    commit = code_version()
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


class RunLogger:
    """One MLflow run, addressed by ``(uri, run_id)``; cheap to pickle (the client is not sent).

    Open with :meth:`start` (new, or resumed by a tag), :meth:`attach` (an existing run, e.g. in a Ray
    worker) or :meth:`child`. Used as a context manager it ends FINISHED, or FAILED with an ``ocean.error``
    tag when the block raises, or KILLED when the job is stopped (KeyboardInterrupt, SystemExit).
    """

    def __init__(self, uri: str, run_id: str, experiment_id: str | None = None) -> None:
        self.uri = uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.resumed = False  # True when start() reopened an existing run (resume_key)
        self._client = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, *, tags: Mapping[str, Any] | None = None,
              parent: RunLogger | str | None = None, resume_key: tuple[str, str] | None = None) -> RunLogger:
        """A new run in ``experiment`` (created when missing), or with ``resume_key=(tag, value)`` the newest
        run carrying that tag, reopened as RUNNING (``resumed`` is then True). A new run gets :func:`run_tags`,
        :func:`source_tags`, ``tags`` and ``mlflow.parentRunId`` for ``parent``; a reopened one keeps its
        tags and only has the standard ones refreshed (code version, source)."""
        from mlflow.tracking import MlflowClient

        exp_id = ensure_experiment(uri, experiment)
        client = MlflowClient(tracking_uri=uri)
        all_tags = {**source_tags(), **run_tags(**dict(tags or {}))}
        if resume_key is not None:
            all_tags.setdefault(resume_key[0], resume_key[1])
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent.run_id if isinstance(parent, RunLogger) else str(parent)
        run_id = find_run(uri, exp_id, *resume_key) if resume_key is not None else None
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            logger = cls(uri, run_id, exp_id)
            logger._client, logger.resumed = client, True
            logger.set_tags({**source_tags(), **run_tags()})
            return logger
        run = client.create_run(exp_id, run_name=run_name, tags=_cut(all_tags))
        logger = cls(uri, run.info.run_id, exp_id)
        logger._client = client
        return logger

    @classmethod
    def attach(cls, uri: str, run_id: str) -> RunLogger:
        """The existing run ``run_id`` (nothing is created)."""
        return cls(uri, run_id)

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> RunLogger:
        """A new run nested under this one, in the same experiment."""
        exp_id = self.experiment_id or self.client.get_run(self.run_id).info.experiment_id
        all_tags = {**source_tags(), **run_tags(**dict(tags or {})), "mlflow.parentRunId": self.run_id}
        run = self.client.create_run(exp_id, run_name=run_name, tags=_cut(all_tags))
        logger = type(self)(self.uri, run.info.run_id, exp_id)
        logger._client = self._client
        return logger

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def __getstate__(self) -> dict:
        return {"uri": self.uri, "run_id": self.run_id, "experiment_id": self.experiment_id}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"], state["run_id"], state["experiment_id"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uri={public_uri(self.uri)!r}, run_id={self.run_id!r})"

    # ------------------------------------------------------------------ logging

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params, scrubbed and cut to :data:`MAX_PARAM_CHARS`, in batches."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _cut(params).items()]
        for i in range(0, len(items), _BATCH["params"]):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH["params"]])

    def log_config(self, cfg, extra: Mapping[str, Any] | None = None) -> None:
        """The flattened config (``optim.base_lr`` ...) plus ``extra`` run settings as params."""
        self.log_params(config_params(cfg, dict(extra or {})))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None,
                    timestamp_ms: int | None = None) -> None:
        """Metrics in one batch (per 1000) at ``step`` (default 0) and ``timestamp_ms`` (default now)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        items = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), _BATCH["metrics"]):
            self.client.log_batch(self.run_id, metrics=items[i:i + _BATCH["metrics"]])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in _cut(tags).items()]
        for i in range(0, len(items), _BATCH["tags"]):
            self.client.log_batch(self.run_id, tags=items[i:i + _BATCH["tags"]])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    # ------------------------------------------------------------------ ending

    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def fail(self, error: BaseException | str) -> None:
        """Tag ``ocean.error`` (``Type: message``) and end the run FAILED."""
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        self.set_tags({"ocean.error": text})
        self.finish("FAILED")

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            try:  # an error -> FAILED; stopped (SIGTERM, Ctrl-C: KeyboardInterrupt, SystemExit) -> KILLED
                self.fail(exc) if isinstance(exc, Exception) else self.finish("KILLED")
            except Exception:  # the store itself may be what failed: keep the original error
                pass
        else:
            self.finish()


class _NullClient:
    """Accepts every MlflowClient call and does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class NullRunLogger(RunLogger):
    """A :class:`RunLogger` that logs nothing (``log_mlflow=False``)."""

    def __init__(self, uri: str = "", run_id: str = "", experiment_id: str | None = None) -> None:
        super().__init__(uri, run_id, experiment_id)
        self._client = _NullClient()

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> RunLogger:
        return NullRunLogger()

    def status(self) -> str:
        return "NONE"
