"""Data lineage in MLflow: the pair store as an MLflow dataset, and the prepare run that wrote it.

``ocean prepare`` logs the store (``OUT``, identified by the sha256 of its ``manifest.json``) as a dataset
input of its own run (context ``preparation``) and leaves :data:`PREPARE_RECORD` beside the manifest; a
training run logs the same dataset (context ``training``) and tags the prepare run
(:func:`link_training_data`), found from that record or, in the training's own store, by the digest tag.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from ocean import storage
from pipelines.tracking import RunLogger, public_uri

PREPARE_RECORD = "mlflow_run.json"  # OUT/mlflow_run.json: the MLflow run that prepared OUT
DIGEST_CHARS = 32  # MLflow caps a dataset digest at 36 characters (mlflow_lineage.md §1)
MANIFEST_TAG = "ocean.manifest_sha256"


def dataset_name(data: str) -> str:
    """``pairs:<last folder of the store>`` (``pairs:v1`` for ``s3://bucket/pairs/v1``)."""
    path = public_uri(data).split("://", 1)[-1].rstrip("/")
    return f"pairs:{PurePosixPath(path).name or path}"


def pair_dataset(data: str, manifest_sha: str):
    """The pair store ``data`` as an MLflow ``MetaDataset``: its source is the store's URI (credentials and
    query removed), its digest the manifest's sha256 cut to :data:`DIGEST_CHARS`."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = public_uri(data) if storage.is_uri(data) else str(Path(data).expanduser().resolve())
    with warnings.catch_warnings():  # a local path matches two registered local sources, the same class
        warnings.simplefilter("ignore", UserWarning)
        resolved = resolve_dataset_source(source)
    return MetaDataset(resolved, name=dataset_name(data), digest=manifest_sha[:DIGEST_CHARS])


def log_dataset(run: RunLogger, data: str, manifest_sha: str, context: str) -> None:
    """Log the pair store as a dataset input of ``run`` with ``mlflow.data.context`` = ``context``."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entity = pair_dataset(data, manifest_sha)._to_mlflow_entity()
    run.client.log_inputs(run.run_id, datasets=[DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])


def write_prepare_record(out: str, run: RunLogger, manifest_sha: str) -> None:
    """``OUT/mlflow_run.json``: the prepare run (id, experiment, store without credentials) and the manifest
    digest it logged."""
    record = {"run_id": run.run_id, "experiment_id": run.experiment_id, "tracking_uri": public_uri(run.uri),
              "manifest_sha256": manifest_sha, "dataset": dataset_name(out)}
    if read_prepare_record(out) != record:  # a re-run of a finished job leaves OUT as it is
        storage.write_bytes(storage.join(out, PREPARE_RECORD), json.dumps(record, indent=1).encode())


def read_prepare_record(data: str) -> dict[str, Any] | None:
    """``DATA/mlflow_run.json`` as a dict, None when there is none or it is not JSON."""
    try:
        record = json.loads(storage.read_bytes(storage.join(data, PREPARE_RECORD)))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def find_prepare_run(uri: str, data: str, manifest_sha: str) -> dict[str, str] | None:
    """``{"run_id", "tracking_uri"}`` of the run that prepared ``data``: the record beside the manifest when
    its digest is this manifest's, else the newest finished run of the store ``uri`` tagged
    ``ocean.kind=prepare`` with this digest; None when neither exists."""
    record = read_prepare_record(data)
    if record and record.get("manifest_sha256") == manifest_sha and record.get("run_id"):
        return {"run_id": str(record["run_id"]), "tracking_uri": str(record.get("tracking_uri", ""))}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(
            experiments, filter_string=f"tags.`ocean.kind` = 'prepare' and tags.`{MANIFEST_TAG}` = '{manifest_sha}'"
            " and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1)
    except MlflowException:
        return None
    return {"run_id": runs[0].info.run_id, "tracking_uri": public_uri(uri)} if runs else None


def link_training_data(run: RunLogger, data: str, manifest_sha: str | None) -> str | None:
    """Log the pair store as the training run's dataset input (context ``training``) and tag
    ``ocean.prepare_run_id`` (and ``ocean.prepare_tracking_uri`` when that run is in another store);
    returns the prepare run id, None when it is unknown. Nothing is logged without a manifest."""
    if not manifest_sha:
        return None
    log_dataset(run, data, manifest_sha, "training")
    found = find_prepare_run(run.uri, data, manifest_sha)
    if found is None:
        return None
    tags = {"ocean.prepare_run_id": found["run_id"]}
    if found["tracking_uri"] and found["tracking_uri"] != public_uri(run.uri):
        tags["ocean.prepare_tracking_uri"] = found["tracking_uri"]
    run.set_tags(tags)
    return found["run_id"]
