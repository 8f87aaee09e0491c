"""The evaluation's best checkpoint into the MLflow model registry.

:func:`register_best` logs the best checkpoint's network as the ``mlflow.pytorch`` model ``model`` of its
evaluation child run (:func:`pipelines.mlflow_models.log_checkpoint_model`), registers it as a new version
of ``NAME`` and points the alias (``best``) at it; the version carries the headline score as a tag and in
its description, and tags naming the checkpoint, its training run and the evaluation.
"""

from __future__ import annotations

from typing import Any

from pipelines.mlflow_models import log_checkpoint_model, register_model
from pipelines.tracking import RunLogger, public_uri

DEFAULT_NAME = "ocean-tracker"
DEFAULT_ALIAS = "best"


def _training_data(client, training_run_id: str | None) -> str | None:
    """The pair store the training run read (its ``ocean.data`` tag), for the model's input example."""
    if not training_run_id:
        return None
    try:
        return client.get_run(training_run_id).data.tags.get("ocean.data")
    except Exception:  # the training run lives in another store: the example falls back to grey crops
        return None


def register_best(parent: RunLogger, children: dict[str, RunLogger], best: dict | None,
                  links: dict[str, dict[str, str]], name: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any] | None:
    """Register ``best`` (``ocean.benchmarks.report.best_checkpoint``'s dict) under ``name`` with ``alias``;
    returns ``{"name", "version", "alias", "model_uri", "model_id", "uri"}`` (``uri``: ``models:/NAME@ALIAS``),
    None without a best checkpoint."""
    if not best:
        return None
    child = children[best["checkpoint"]]
    training_run = links.get(best["checkpoint"], {}).get("ocean.training_run_id")
    score_key = f"{best['benchmark']}.{best['metric']}"
    model = log_checkpoint_model(child, best["checkpoint"], "model", data=_training_data(parent.client, training_run),
                                 step=int(best["epoch"] or 0), tags={
                                     "ocean.checkpoint_uri": public_uri(best["checkpoint"]),
                                     "ocean.epoch": best["epoch"], "ocean.role": "best", score_key: best["value"]})
    tags = {score_key: f"{best['value']:.6f}", "ocean.benchmark": best["benchmark"], "ocean.metric": best["metric"],
            "ocean.checkpoint_uri": public_uri(best["checkpoint"]), "ocean.epoch": best["epoch"],
            "ocean.evaluation_run_id": parent.run_id, "ocean.evaluation_checkpoint_run_id": child.run_id}
    if training_run:
        tags["ocean.training_run_id"] = training_run
    description = (f"best on {best['benchmark']}: {best['metric']} {best['value']:.4f} (epoch {best['epoch']}, "
                   f"{best['name']}); evaluation run {parent.run_id}"
                   + (f", training run {training_run}" if training_run else ""))
    version = register_model(parent.uri, model, child.run_id, name, alias, tags, description)
    registered = {"name": name, "version": version, "alias": alias, "model_uri": model["model_uri"],
                  "model_id": model["model_id"], "uri": f"models:/{name}@{alias}"}
    for run in (parent, child):
        run.set_tags({"ocean.registered_model": f"models:/{name}/{version}", "ocean.registered_alias": alias})
    return registered
