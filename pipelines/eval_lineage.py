"""MLflow for ``ocean evaluate``: the checkpoints of a training run, their links back, the evaluation's runs.

:func:`checkpoints_of_run` finds the checkpoints a training run logged; each evaluated checkpoint is linked
back to its training run and data manifest; :func:`log_evaluation` logs one parent run per evaluation and one
child per checkpoint (their tags, params, metrics and artifacts: its docstring). URIs with credentials are
logged without them. An exception marks the parent and children FAILED.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocean.benchmarks.report import all_failed, metrics
from ocean.benchmarks.scoring import HEADLINE
from ocean.checkpoint import LINK_KEYS, CheckpointInfo, epoch_from_name, list_checkpoints
from ocean.storage import StorageError
from pipelines.eval_registry import register_best


class LineageError(ValueError):
    """A training run that does not exist, or logged no (or not the requested) checkpoints."""


class NoCheckpointYet(LineageError):
    """The training run exists but has no checkpoint (yet: ``ocean evaluate --follow`` waits for one)."""


def _safe_uri(uri: str) -> str:
    """A URI fit for a tag or param: unchanged unless it carries credentials (then without query / user)."""
    from pipelines.tracking import REDACTED, public_uri, scrub

    return public_uri(uri) if scrub({"uri": uri})["uri"] == REDACTED else uri


def checkpoints_of_run(
    mlflow_uri: str, run_id: str, epochs: Sequence[int] | None = None
) -> list[tuple[int | None, str]]:
    """``(epoch, checkpoint uri)`` pairs logged by training run ``run_id``, sorted by epoch, optionally
    only ``epochs``. Looked up, in this order (the first that gives any wins):

    1. a JSON artifact ``checkpoints.json`` of the run: ``[{"epoch": e, "uri": u}, ...]``, ``{"checkpoints":
       [...]}`` or ``{"<epoch>": "<uri>"}`` (``ocean train`` logs it when it ends);
       then the ``epoch-NNNN.pt`` files under the run's ``ocean.out`` tag (``OUT/checkpoints/``): what a
       training still going has written so far (each file appears whole, :mod:`ocean.checkpoint`);
    2. a tag or param ``checkpoint_uris`` holding the same JSON;
    3. tags / params named ``checkpoint.e<N>`` / ``checkpoint_uri.<N>`` / ``checkpoint_e<N>`` (one per epoch);
    4. checkpoint files logged as artifacts (``*.pt``, ``*.pth``), epochs from their names.

    LineageError when the run does not exist, has no checkpoint, or lacks a requested epoch.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=mlflow_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise LineageError(
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
                raise LineageError(f"--run {run_id}: checkpoints.json is malformed ({exc})") from None
    keyed = {**run.data.params, **run.data.tags}
    if not found and run.data.tags.get("ocean.out"):  # a training still going: its checkpoint files so far
        try:
            found.update(list_checkpoints(run.data.tags["ocean.out"]))
        except (StorageError, OSError, ValueError) as exc:
            raise LineageError(f"--run {run_id}: cannot list its checkpoints: {exc}") from None
    if not found and "checkpoint_uris" in keyed:
        try:
            from_json(json.loads(keyed["checkpoint_uris"]))
        except json.JSONDecodeError:
            raise LineageError(f"--run {run_id}: checkpoint_uris is not JSON") from None
    if not found:
        pattern = re.compile(r"^checkpoint(?:_uri)?[._\-]?e?(\d+)$")
        for k, v in keyed.items():
            m = pattern.match(k)
            if m:
                found[int(m.group(1))] = v
    if not found:
        root = run.info.artifact_uri.rstrip("/")
        readable = "://" not in root or root.startswith(("file://", "s3://"))
        cache = None if readable else tempfile.mkdtemp(prefix="ocean-run-ckpt-")  # proxied artifacts: download
        for path in artifacts:
            if path.endswith((".pt", ".pth")):
                uri = f"{root}/{path}" if readable else client.download_artifacts(run_id, path, cache)
                found[epoch_from_name(path)] = uri
    if not found:
        raise NoCheckpointYet(
            f"--run {run_id}: the run logged no checkpoint (no checkpoints.json artifact, checkpoint files under "
            "its ocean.out, checkpoint_uris tag/param, checkpoint.e<N> tags or *.pt artifacts)"
        )
    if epochs is not None:
        missing = sorted(set(epochs) - {e for e in found if e is not None})
        if missing:
            raise LineageError(
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


def log_evaluation(
    uri: str,
    experiment: str,
    run_name: str,
    infos: list[CheckpointInfo],
    report: dict,
    out_dir: Path,
    training_run_id: str | None,
    register: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Log an evaluation ``report`` (with its files under ``out_dir``); returns ``{tracking_uri,
    experiment_id, parent_run_id, child_run_ids, links, registered}``. With ``register=(NAME, ALIAS)`` and a
    best checkpoint, that checkpoint is logged as an ``mlflow.pytorch`` model and registered
    (:func:`pipelines.eval_registry.register_best`; ``registered`` is its result, else None).

    Parent: tags ``ocean.kind=evaluation``, ``ocean.benchmarks`` (and ``ocean.training_run_id`` with ``--run``);
    params checkpoints, benchmarks, workers, local, validation; metrics sequences_reused, items_retried,
    workers_lost (pipelines.eval_actors), failed_sequences of sequences_total; every headline metric
    ``<benchmark>.<metric>`` with ``step=epoch`` (MLflow's metric-vs-epoch chart); with a best checkpoint the
    tags ``best_checkpoint`` / ``best_epoch`` / ``best_metric`` and the metric ``best.<benchmark>.<metric>``;
    artifacts evaluation.json, per_sequence.csv and plots/; it ends FAILED when every sequence failed. Child:
    tags ``ocean.kind=evaluation-checkpoint``, ``ocean.checkpoint_uri`` / ``_name``, ``ocean.epoch``, the links
    (``ocean.training_run_id``, ``ocean.manifest_sha256``), ``is_best``; params checkpoint_uri, epoch,
    ``tracker.<benchmark>.<key>``; metrics ``<benchmark>.<metric>``, ``<benchmark>.failed_sequences``;
    artifacts ``evaluation/`` (the checkpoint's output folder). Failed sequences: :func:`_log_failures` on
    both. An exception marks the parent and children FAILED.
    """
    from pipelines.tracking import RunLogger

    parent_tags = {"ocean.kind": "evaluation", "ocean.benchmarks": ",".join(report["benchmarks"])}
    if training_run_id:
        parent_tags["ocean.training_run_id"] = training_run_id
    now = int(time.time() * 1000)
    children: dict[str, RunLogger] = {}
    links: dict[str, dict[str, str]] = {}
    with RunLogger.start(uri, experiment, run_name, tags=parent_tags) as parent:
        try:
            parent.log_params(
                {
                    "checkpoints": ",".join(_safe_uri(i.uri) for i in infos),
                    "benchmarks": json.dumps(report["benchmarks"]),
                    "workers": report["timing"]["workers"],
                    "local": report["timing"]["local"],
                    "batch_sequences": report["timing"].get("batch_sequences", 1),
                    "validation": report.get("validation"),
                }
            )
            t = report["timing"]
            counts = {"failed_sequences": len(report["failed"]), "sequences_total": report.get("sequences_total", 0)}
            parent.log_metrics({k: t[k] for k in ("sequences_reused", "items_retried", "workers_lost") if k in t}
                               | counts, timestamp_ms=now)
            _log_failures(parent, report["failed"], {i.uri: i.name for i in infos})
            for info in infos:
                links[info.uri] = _training_run_links(parent.client, info, training_run_id)
                children[info.uri] = _log_checkpoint(parent, run_name, info, links[info.uri], report, now)
                children[info.uri].log_artifacts(out_dir / info.name, artifact_path="evaluation")
                children[info.uri].finish()
            _log_best(parent, report.get("best"), children, now)
            registered = register_best(parent, children, report.get("best"), links, *register) if register else None
            for path in ("evaluation.json", "per_sequence.csv"):
                parent.log_artifact(out_dir / path)
            if (out_dir / "plots").is_dir():
                parent.log_artifacts(out_dir / "plots", artifact_path="plots")
        except Exception:
            for child in children.values():
                child.finish("FAILED")
            raise
    if all_failed(report):  # nothing was scored: the evaluation failed
        parent.fail(f"every one of the {report['sequences_total']} sequences failed (failed_sequences.json)")
    return {
        "tracking_uri": _safe_uri(uri),
        "experiment_id": parent.experiment_id,
        "parent_run_id": parent.run_id,
        "child_run_ids": {u: c.run_id for u, c in children.items()},
        "links": links,
        "registered": registered,
    }


def _log_checkpoint(parent, run_name: str, info: CheckpointInfo, links: dict[str, str], report: dict, now: int):
    """The child run of one checkpoint with its tags, params and metrics (the parent gets the headline
    metric at ``step=epoch``)."""
    tags = {
        "ocean.kind": "evaluation-checkpoint",
        "ocean.checkpoint_uri": _safe_uri(info.uri),
        "ocean.checkpoint_name": info.name,
    }
    if info.epoch is not None:
        tags["ocean.epoch"] = str(info.epoch)
    tags.update(links)
    child = parent.child(f"{run_name}/{info.name}", tags=tags)
    params = {"checkpoint_uri": _safe_uri(info.uri), "epoch": str(info.epoch)}
    values: dict[str, float] = {}
    for bench, scores in report["scores"][info.uri].items():
        for k, v in report["checkpoints"][info.uri]["tracker"][bench].items():
            params[f"tracker.{bench}.{k}"] = str(v)
        for k, v in metrics(scores).items():
            values[f"{bench}.{k}"] = v
            if info.epoch is not None and k == HEADLINE[bench]:
                parent.log_metrics({f"{bench}.{k}": v}, step=info.epoch, timestamp_ms=now)
        values[f"{bench}.failed_sequences"] = float(len(scores.get("failed") or {}))
    _log_failures(child, [f for f in report["failed"] if f["checkpoint"] == info.uri], None)
    child.log_metrics(values, step=info.epoch or 0, timestamp_ms=now)
    child.log_params(params)
    return child


def _log_failures(run, failed: list[dict], names: dict[str, str] | None) -> None:
    """Tag ``ocean.failed_sequences`` ([checkpoint/]benchmark/sequence, ...) and log failed_sequences.json."""
    if failed:
        what = [f"{names[f['checkpoint']] + '/' if names else ''}{f['benchmark']}/{f['sequence']}" for f in failed]
        run.set_tags({"ocean.failed_sequences": ", ".join(what)})
        run.log_text(json.dumps([{**f, "checkpoint": _safe_uri(f["checkpoint"])} for f in failed], indent=2),
                     "failed_sequences.json")


def _log_best(parent, best: dict | None, children: dict, now: int) -> None:
    if not best:
        return
    parent.set_tags(
        {
            "best_checkpoint": _safe_uri(best["checkpoint"]),
            "best_epoch": str(best["epoch"]),
            "best_metric": f"{best['benchmark']}.{best['metric']}",
        }
    )
    parent.log_metrics({f"best.{best['benchmark']}.{best['metric']}": best["value"]}, timestamp_ms=now)
    children[best["checkpoint"]].set_tags({"is_best": "true"})
