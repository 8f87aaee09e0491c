"""``ocean prepare`` as an MLflow run: opened once the job's fingerprint is known (a re-run of the same job
into the same output reopens it), closed with the counts, the rejects summary, the manifest and the pair
store as a dataset (:mod:`pipelines.lineage`)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from data_prep.pair_index import manifest_sha256
from ocean import storage
from pipelines import tracking
from pipelines.lineage import MANIFEST_TAG, log_dataset, write_prepare_record
from pipelines.tracking import NullRunLogger, RunLogger, public_uri

if TYPE_CHECKING:
    from pipelines.prepare import PrepareSettings


def open_prepare_run(s: PrepareSettings, job_doc: dict, roots: dict[str, str]) -> RunLogger:
    """The prepare run of this job and output (``ocean.kind=prepare``), new with its params, or reopened by
    its key (``ocean.prepare_key`` = output + job fingerprint); a :class:`NullRunLogger` with
    ``log_mlflow=False``."""
    if not s.log_mlflow:
        return NullRunLogger()
    uri = tracking.tracking_uri(s.mlflow_uri, s.out)
    key = hashlib.sha1(f"{public_uri(s.out)}|{job_doc['fingerprint']}".encode()).hexdigest()[:16]
    tags = {"ocean.kind": "prepare", "ocean.out": public_uri(s.out), "ocean.job_fingerprint": job_doc["fingerprint"],
            "mlflow.runName": s.run_name}
    run = RunLogger.start(uri, s.experiment, s.run_name, tags=tags, resume_key=("ocean.prepare_key", key))
    if not run.resumed:
        run.log_config(s.cfg, {
            "prepare.out": public_uri(s.out), "prepare.seed": s.seed, "prepare.shard_pairs": s.shard_pairs,
            "prepare.jpeg_quality": s.jpeg_quality, "prepare.listing": s.listing,
            "prepare.datasets": json.dumps({n: public_uri(r) for n, r in roots.items()}),
            "prepare.pairs": json.dumps(s.pairs or {}), "prepare.reader_options": json.dumps(s.reader_options or {})})
    if s.log:
        s.log(f"MLflow {public_uri(uri)} experiment {s.experiment!r} run {run.run_id}"
              + (" (continued)" if run.resumed else ""))
    return run


def prepare_metrics(manifest: dict, run_info: dict[str, Any]) -> dict[str, float]:
    """Counts as metrics: ``totals.*``, ``<dataset>.<count>``, ``<dataset>.rejected.<reason>`` (decode),
    ``<dataset>.reader_rejected.<reason>``, ``<dataset>.pairs_dropped.<reason>``, and the job's
    ``run.seconds`` / ``run.shards_run`` / ``run.shards_skipped`` / ``run.nodes``."""
    out: dict[str, float] = {f"totals.{k}": float(v) for k, v in manifest.get("totals", {}).items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, d in manifest.get("datasets", {}).items():
        for k, v in d.items():
            if isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                out[f"{name}.{k}"] = float(v)
            elif isinstance(v, dict) and k in ("rejected", "reader_rejected", "pairs_dropped"):
                out[f"{name}.{k}_total"] = float(sum(v.values()))
                out.update({f"{name}.{k}.{reason}": float(n) for reason, n in v.items()})
    out.update({f"run.{k}": float(run_info[k]) for k in ("seconds", "shards_run", "shards_skipped", "nodes")
                if isinstance(run_info.get(k), (int, float))})
    return out


def log_prepare_result(run: RunLogger, s: PrepareSettings, manifest: dict, run_info: dict[str, Any],
                       summary_lines: list[str]) -> None:
    """Metrics, the manifest and a rejects summary as artifacts, the pair store as the run's dataset
    (context ``prepared``), the manifest digest tag, and ``OUT/mlflow_run.json``."""
    if isinstance(run, NullRunLogger):
        return
    digest = manifest_sha256(s.out)
    run.log_metrics(prepare_metrics(manifest, run_info))
    run.log_text(storage.read_bytes(storage.join(s.out, "manifest.json")).decode(), "manifest.json")  # as stored
    run.log_text("\n".join(summary_lines) + "\n", "rejects_summary.txt")
    run.set_tags({MANIFEST_TAG: digest or "none"})
    if digest:
        log_dataset(run, s.out, digest, "prepared")
        write_prepare_record(s.out, run, digest)
