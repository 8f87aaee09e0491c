"""The network in MLflow: a checkpoint logged as an ``mlflow.pytorch`` model, registered under an alias,
loaded back by ``models:/`` or ``runs:/`` URI; and a run's system metrics.

A logged model is the pickled :class:`ocean.model.OceanNet` (``load_model`` gives the network itself, with
``template`` / ``track`` for the tracker; mlflow_lineage.md §2), its signature taken from a real
template / search pair of the training data when readable, the whole config as
:data:`CONFIG_FILE` beside it and as the model's params.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ocean.config import OceanConfig, from_dict, to_dict
from pipelines.tracking import RunLogger, config_params

CONFIG_FILE = "ocean_config.json"  # the OceanConfig, in the model's extra_files/
MODEL_URI_SCHEMES = ("models:/", "runs:/")
SYSTEM_METRICS_INTERVAL_S = 10.0  # MLflow's own default sampling interval (mlflow_lineage.md §3)


def is_model_uri(text: str | None) -> bool:
    """True for an MLflow model URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/PATH``)."""
    return bool(text) and str(text).startswith(MODEL_URI_SCHEMES)


@contextlib.contextmanager
def _fluent(uri: str, experiment_id: str | None) -> Iterator[None]:
    """MLflow's fluent functions (``mlflow.pytorch.log_model``, ``load_model``) pointed at ``uri`` and
    ``experiment_id`` for the block, and put back after it (the experiment through ``MLFLOW_EXPERIMENT_ID``,
    which ``log_model`` reads when no run is active: mlflow_lineage.md §2); the environment is restored too."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    names = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")  # set_tracking_uri writes (and unsets) the latter
    old = {k: os.environ.get(k) for k in names}
    if experiment_id is not None:
        os.environ["MLFLOW_EXPERIMENT_ID"] = str(experiment_id)
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def example_inputs(cfg: OceanConfig, data: str | None = None, seed: int = 0):
    """``(template (1,3,E,E), search (1,3,S,S))`` float32 BGR 0-255, the network's input: the first pair of
    the pair store ``data`` augmented as training does, or mid-grey crops when ``data`` is None or cannot be
    read."""
    import numpy as np

    e, s = cfg.model.exemplar_size, cfg.model.search_size
    if data:
        try:
            import pyarrow.parquet as pq

            from data_prep.augment import augment_pairs
            from data_prep.pair_index import list_pair_files

            fs, files = list_pair_files(data)
            row = pq.ParquetFile(fs.open_input_file(files[0])).read_row_group(0).slice(0, 1).to_pydict()
            out = augment_pairs(row, cfg.augment, seed, chw_float=True, exemplar_size=e, search_size=s)
            if bool(out["valid"][0]):
                return out["template"].astype(np.float32), out["search"].astype(np.float32)
        except Exception as exc:  # only the example is lost: fall back to grey crops of the same shapes
            logging.getLogger(__name__).info("no example pair from %s (%s); using grey crops", data, exc)
    return np.full((1, 3, e, e), 117.0, np.float32), np.full((1, 3, s, s), 117.0, np.float32)


def _signature(net, template, search):
    """The model signature: named tensor inputs ``template`` / ``search``, outputs ``cls`` / ``reg`` (/ ``align``)."""
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        out = net(torch.from_numpy(template), torch.from_numpy(search))
    return infer_signature({"template": template, "search": search},
                           {k: v.numpy() for k, v in out.items() if v is not None})


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("torch", "numpy", "cloudpickle", "ocean-ray"):
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            pass
    return reqs


def log_checkpoint_model(run: RunLogger, checkpoint: str, name: str = "model", *, data: str | None = None,
                         tags: Mapping[str, Any] | None = None, step: int = 0) -> dict[str, str]:
    """Log the network of ``checkpoint`` as an ``mlflow.pytorch`` model of ``run`` (a LoggedModel named
    ``name``); returns ``{"model_id", "model_uri"}``. The checkpoint file itself is left where it is."""
    import mlflow.pytorch

    from ocean.checkpoint import load_model

    net, cfg = load_model(checkpoint)
    template, search = example_inputs(cfg, data)
    signature = _signature(net, template, search)
    experiment = run.experiment_id or run.client.get_run(run.run_id).info.experiment_id
    with tempfile.TemporaryDirectory(prefix="ocean-model-") as tmp, _fluent(run.uri, experiment):
        config_file = Path(tmp, CONFIG_FILE)
        config_file.write_text(json.dumps(to_dict(cfg), indent=1))
        quiet = logging.getLogger("mlflow.pytorch")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its pickle-format warning: chosen on purpose, mlflow_lineage.md §2
        try:
            info = mlflow.pytorch.log_model(
                net, name=name, run_id=run.run_id, signature=signature, serialization_format="pickle",
                extra_files=[str(config_file)], pip_requirements=_requirements(), params=config_params(cfg),
                tags={k: str(v) for k, v in (tags or {}).items()}, step=step)
        finally:
            quiet.setLevel(level)
    return {"model_id": info.model_id, "model_uri": info.model_uri}


def register_model(uri: str, model: Mapping[str, str], run_id: str, name: str, alias: str,
                   tags: Mapping[str, Any], description: str) -> str:
    """Register the logged ``model`` (:func:`log_checkpoint_model`'s result) as a new version of ``name``
    (created when missing) with ``tags`` and ``description``, and point ``alias`` at it; returns the
    version."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Ocean tracker checkpoints registered by ocean evaluate")
    with _fluent(uri, None):  # the store resolves models:/m-<id> through the fluent tracking URI
        version = client.create_model_version(name, model["model_uri"], run_id=run_id, description=description,
                                              tags={k: str(v) for k, v in tags.items()}, model_id=model["model_id"])
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def load_logged_model(model_uri: str, tracking_uri: str, map_location: str = "cpu"):
    """``(OceanNet in eval mode on map_location, OceanConfig)`` of an MLflow model URI logged by
    :func:`log_checkpoint_model` (``models:/NAME@best``, ``models:/NAME/3``, ``runs:/RUN/model``,
    ``models:/m-<id>``). Raises ValueError naming the URI when it cannot be resolved or holds no config."""
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="ocean-model-") as tmp, _fluent(tracking_uri, None):
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp,
                                                        tracking_uri=tracking_uri)
            net = mlflow.pytorch.load_model(local, map_location=map_location)
        except (MlflowException, OSError) as exc:
            raise ValueError(f"{model_uri}: not loadable from the MLflow store {tracking_uri} "
                             f"({str(exc).splitlines()[0]})") from None
        found = sorted(Path(local).rglob(CONFIG_FILE))
        if not found:
            raise ValueError(f"{model_uri}: the model has no {CONFIG_FILE} (not logged by ocean)")
        cfg = from_dict(json.loads(found[0].read_text()))
    return net.to(map_location).eval(), cfg


@contextlib.contextmanager
def system_metrics(run: RunLogger | None, enabled: bool = True,
                   interval_s: float = SYSTEM_METRICS_INTERVAL_S, node: str | None = None) -> Iterator[bool]:
    """Log this machine's CPU, memory, disk, network (and NVIDIA GPU, with ``pynvml``) as ``system/...``
    metrics of ``run`` every ``interval_s`` seconds for the block (MLflow's ``SystemMetricsMonitor``,
    resuming its step count on a reopened run); yields whether it runs (needs ``psutil``)."""
    if run is None or not enabled or not run.run_id:
        yield False
        return
    try:
        import psutil  # noqa: F401  (the monitor's only requirement)
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        logging.getLogger(__name__).warning("system metrics off: psutil is not installed")
        yield False
        return
    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=interval_s, resume_logging=True, node_id=node,
                                   tracking_uri=run.uri)
    monitor.start()
    try:
        yield True
    finally:
        monitor.finish()
