"""`ocean evaluate --set tracker.online=true` on the 2-node Ray cluster with an MLflow server: the online
module runs in the Ray workers (its config crosses Ray as a TrackerConfig with its online section, the
``'dict' object has no attribute 'filter_size'`` of issue 14), on OTB and VOT with the official online entry,
and a failed sequence is counted in MLflow; an evaluation whose every sequence failed ends FAILED there.
The local loop on all four layouts: tests/unit/test_online_everywhere.py (its tiny trees and FAST_ONLINE)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmark_trees import FAST_ONLINE, make_otb_sequence, make_vot_sequence, moving_boxes_xywh, vot_polygons

REPO = Path(__file__).resolve().parents[2]
FRAMES = 8


def test_online_on_ray_counts_a_failed_sequence_in_mlflow(ray_cluster, mlflow_server, ckpts, tmp_path):
    from mlflow import MlflowClient

    from ocean.checkpoint import inspect_checkpoint
    from pipelines.eval_lineage import log_evaluation

    boxes = moving_boxes_xywh(FRAMES)
    make_otb_sequence(tmp_path / "otb", "Walk", boxes)
    make_otb_sequence(tmp_path / "otb", "Run", boxes)
    sorted((tmp_path / "otb" / "Run" / "img").iterdir())[3].write_bytes(b"not a jpeg")
    make_vot_sequence(tmp_path / "vot", "walk", vot_polygons(boxes))
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "jobs.evaluate", "--checkpoint", ckpts[0], "--benchmark", f"otb={tmp_path / 'otb'}",
           "--benchmark", f"vot2018={tmp_path / 'vot'}", "--out", str(out), "--workers", "1",
           "--ray-address", ray_cluster.address, "--mlflow-uri", mlflow_server.uri, "--experiment", "eval-online",
           "--quiet"]
    for item in FAST_ONLINE:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, env=ray_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a partial failure is not a failed evaluation
    assert "| otb | 1 | 1 |" in proc.stdout and "| vot2018 | 1 | 0 |" in proc.stdout
    report = json.loads((out / "evaluation.json").read_text())
    assert not report["timing"]["local"]
    assert [(f["benchmark"], f["sequence"]) for f in report["failed"]] == [("otb", "Run")]
    assert "cannot read image" in report["failed"][0]["error"]
    scores = report["scores"][ckpts[0]]
    assert scores["otb"]["per_sequence"].keys() == {"Walk"} and scores["vot2018"]["num_sequences"] == 1
    assert scores["vot2018"]["tracker"]["online"] and scores["vot2018"]["tracker"]["penalty_k"] == 0.187

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    parent = client.get_run(report["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["failed_sequences"] == 1 and parent.data.metrics["sequences_total"] == 3
    assert parent.data.tags["ocean.failed_sequences"] == "checkpoint_e1/otb/Run"
    assert "failed_sequences.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    child = client.get_run(report["mlflow"]["child_run_ids"][ckpts[0]])
    assert child.data.metrics["otb.failed_sequences"] == 1 and child.data.metrics["vot2018.failed_sequences"] == 0
    assert child.data.tags["ocean.failed_sequences"] == "otb/Run"
    assert child.data.params["tracker.vot2018.online"] == "True"

    # The same report with every sequence failed: the parent run ends FAILED, saying so.
    report["failed"] += [{"checkpoint": ckpts[0], "benchmark": b, "sequence": s, "error": "E"}
                         for b, s in (("otb", "Walk"), ("vot2018", "walk"))]
    logged = log_evaluation(mlflow_server.uri, "eval-online", "all-failed", [inspect_checkpoint(ckpts[0], "checkpoint_e1")],
                            report, out, None)
    failed = client.get_run(logged["parent_run_id"])
    assert failed.info.status == "FAILED" and failed.data.metrics["failed_sequences"] == 3
    assert failed.data.tags["ocean.error"].startswith("every one of the 3 sequences failed")
