"""Batch evaluation (pipelines.evaluate / ocean evaluate) with servers: training-run lineage and links on an
MLflow server, the 2-node Ray cluster against the local loop, results on S3 (the local loop and inputs:
tests/unit/test_evaluate_local.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_trees import METRICS

from ocean.checkpoint import save_checkpoint
from ocean.config import smoke
from ocean.model import build_model
from pipelines.eval_lineage import LineageError, checkpoints_of_run
from pipelines.evaluate import EvaluateSettings, evaluate

REPO = Path(__file__).resolve().parents[2]


def result_files(folder: Path) -> dict[str, bytes]:
    """Every result file under ``folder`` except the GOT-10k timing files (wall-clock, not results)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.txt"))
        if not p.name.endswith("_time.txt")
    }


# ----------------------------------------------------------------------------------------------------------
# Ray (2 nodes) + MLflow server


MANIFEST = "cd" * 32


def _training_run(mlflow_uri: str, listing_json, tmp_path: Path, tags: dict | None = None) -> str:
    """A stand-in training run that logged its checkpoints as a ``checkpoints.json`` artifact (a list of
    URIs, as pipelines.train logs it) and its data manifest hash as a tag."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("fake-train") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("fake-train")
    run = client.create_run(
        exp_id, run_name="train", tags={"ocean.manifest_sha256": MANIFEST, **(tags or {})}
    )
    listing = tmp_path / "checkpoints.json"
    listing.write_text(json.dumps(listing_json))
    client.log_artifact(run.info.run_id, str(listing))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.mark.slow
def test_checkpoints_of_a_training_run(mlflow_server, ckpts, tmp_path):
    run_id = _training_run(mlflow_server.uri, ckpts, tmp_path)  # ["/…/checkpoint_e1.pt", ...]
    assert checkpoints_of_run(mlflow_server.uri, run_id) == [(1, ckpts[0]), (2, ckpts[1]), (3, ckpts[2])]
    assert checkpoints_of_run(mlflow_server.uri, run_id, [3, 1]) == [(1, ckpts[0]), (3, ckpts[2])]
    with pytest.raises(LineageError, match=r"no checkpoint for epochs \[7\]"):
        checkpoints_of_run(mlflow_server.uri, run_id, [1, 7])
    with pytest.raises(LineageError, match="no such MLflow run"):
        checkpoints_of_run(mlflow_server.uri, "0" * 32)
    # [{"epoch", "uri"}] entries: the epoch given wins over the name
    listing = [{"epoch": 10, "uri": "s3://b/x/last.pt"}, {"epoch": 4, "uri": "s3://b/x/e4.pt"}]
    run_id = _training_run(mlflow_server.uri, listing, tmp_path)
    assert checkpoints_of_run(mlflow_server.uri, run_id) == [(4, "s3://b/x/e4.pt"), (10, "s3://b/x/last.pt")]
    # per-epoch tags, the other documented convention
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.create_run(client.get_experiment_by_name("fake-train").experiment_id)
    client.set_tag(run.info.run_id, "checkpoint.e5", "s3://b/run/e5.pt")
    client.set_tag(run.info.run_id, "checkpoint.e4", "s3://b/run/e4.pt")
    assert checkpoints_of_run(mlflow_server.uri, run.info.run_id) == [
        (4, "s3://b/run/e4.pt"),
        (5, "s3://b/run/e5.pt"),
    ]


@pytest.mark.slow
def test_ray_two_nodes_equals_local_loop_and_logs_to_mlflow(
    ray_cluster, mlflow_server, bench, ckpts, tmp_path
):
    from mlflow import MlflowClient

    two = {"otb": bench["otb"], "vot2018": bench["vot2018"]}
    local = evaluate(
        EvaluateSettings(
            ckpts, two, str(tmp_path / "local"), local=True, log_mlflow=False, progress=False, max_sequences=1
        )
    )

    run_id = _training_run(mlflow_server.uri, ckpts, tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "jobs.evaluate",
        "--run",
        run_id,
        "--epochs",
        "all",
        "--benchmark",
        f"otb={two['otb']}",
        "--benchmark",
        f"vot2018={two['vot2018']}",
        "--out",
        str(tmp_path / "ray"),
        "--workers",
        "2",
        "--ray-address",
        ray_cluster.address,
        "--max-sequences",
        "1",
        "--mlflow-uri",
        mlflow_server.uri,
        "--experiment",
        "eval-test",
        "--validation",
        "otb",
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=ray_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "ray" / "evaluation.json").read_text())

    # Two actors on the two nodes, each checkpoint loaded at most once per worker.
    timing = report["timing"]
    assert timing["workers"] == 2 and not timing["local"]
    assert len(timing["node_ids"]) == 2 and len(timing["worker_ids"]) == 2
    assert 3 <= timing["model_loads"] <= 6
    # Identical to the local loop: result files byte for byte, scores exactly.
    for name in ("checkpoint_e1", "checkpoint_e2", "checkpoint_e3"):
        assert result_files(tmp_path / "ray" / name) == result_files(tmp_path / "local" / name)
        assert result_files(tmp_path / "ray" / name)  # not vacuous
    for uri in ckpts:
        for b in two:
            for k in METRICS:
                assert report["scores"][uri][b].get(k) == local["scores"][uri][b].get(k), (uri, b, k)

    # The best epoch on the validation benchmark, computed by hand from the summaries.
    aucs = {e: local["scores"][u]["otb"]["success_auc"] for e, u in zip((1, 2, 3), ckpts, strict=True)}
    best_epoch = max(aucs, key=lambda e: (aucs[e], -e))
    assert report["best"]["epoch"] == best_epoch and report["best"]["metric"] == "success_auc"

    # MLflow: parent + one child per checkpoint, linked to the training run, with metrics and artifacts.
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    m = report["mlflow"]
    parent = client.get_run(m["parent_run_id"])
    assert parent.data.tags["best_epoch"] == str(best_epoch)
    assert parent.data.tags["best_checkpoint"] == ckpts[best_epoch - 1]
    assert parent.data.tags["ocean.training_run_id"] == run_id
    history = client.get_metric_history(parent.info.run_id, "otb.success_auc")
    assert sorted((h.step, h.value) for h in history) == sorted(aucs.items())
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/metric_vs_epoch.png" in parent_files and "plots/otb_success.png" in parent_files
    assert {"plots/otb_norm_precision.png", "plots/vot2018_eao_curve.png",
            "plots/vot2018_accuracy_robustness.png"} <= parent_files
    # MLflow 3 opens the experiment as model training, not GenAI (ray_stack.md §5.1)
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "evaluation.json",
        "per_sequence.csv",
    }
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3
    by_epoch = {int(c.data.tags["ocean.epoch"]): c for c in children}
    assert sorted(by_epoch) == [1, 2, 3]
    for epoch, child in by_epoch.items():
        tags = child.data.tags
        # data manifest -> training run -> checkpoint -> this evaluation
        assert tags["ocean.training_run_id"] == run_id
        assert tags["ocean.manifest_sha256"] == MANIFEST
        assert tags["ocean.checkpoint_uri"] == ckpts[epoch - 1]
        assert (tags.get("is_best") == "true") == (epoch == best_epoch)
        assert child.data.metrics["otb.success_auc"] == aucs[epoch]
        assert (
            child.data.metrics["vot2018.robustness"]
            == local["scores"][ckpts[epoch - 1]]["vot2018"]["robustness"]
        )
        assert child.data.params["tracker.otb.penalty_k"] == "0.087"
        files = {a.path for a in client.list_artifacts(child.info.run_id, "evaluation/otb")}
        assert {
            "evaluation/otb/summary.json",
            "evaluation/otb/per_sequence.csv",
            "evaluation/otb/success.png",
            "evaluation/otb/precision.png",
            "evaluation/otb/results",
        } <= files
        vot_files = {a.path for a in client.list_artifacts(child.info.run_id, "evaluation/vot2018")}
        assert {"evaluation/vot2018/eao_curve.png", "evaluation/vot2018/accuracy_robustness.png"} <= vot_files


@pytest.mark.slow
def test_links_from_checkpoint_entries_and_from_the_training_folder(mlflow_server, bench, tmp_path):
    """Without --run: a checkpoint's own ``mlflow_run_id`` / ``manifest_sha256`` entries, or the training
    run whose ``ocean.out`` tag is the folder holding ``checkpoints/epoch-NNNN.pt`` (pipelines.train)."""
    from mlflow import MlflowClient

    train_out = tmp_path / "train-out"
    found_by_folder = train_out / "checkpoints" / "epoch-0002.pt"
    own_entries = tmp_path / "elsewhere" / "model.pt"
    torch.manual_seed(7)
    net = build_model(smoke().model)
    save_checkpoint(str(found_by_folder), net, smoke(), epoch=2)
    save_checkpoint(
        str(own_entries),
        net,
        smoke(),
        epoch=5,
        mlflow_run_id="run-in-another-store",
        manifest_sha256="ef" * 32,
    )
    run_id = _training_run(mlflow_server.uri, [str(found_by_folder)], tmp_path, {"ocean.out": str(train_out)})
    report = evaluate(
        EvaluateSettings(
            [str(found_by_folder), str(own_entries)],
            {"otb": bench["otb"]},
            str(tmp_path / "o"),
            local=True,
            max_sequences=1,
            mlflow_uri=mlflow_server.uri,
            experiment="eval-links",
            progress=False,
        )
    )
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    by_folder = client.get_run(report["mlflow"]["child_run_ids"][str(found_by_folder)]).data.tags
    assert by_folder["ocean.training_run_id"] == run_id and by_folder["ocean.manifest_sha256"] == MANIFEST
    assert by_folder["ocean.epoch"] == "2"
    own = client.get_run(report["mlflow"]["child_run_ids"][str(own_entries)]).data.tags
    assert (
        own["ocean.training_run_id"] == "run-in-another-store" and own["ocean.manifest_sha256"] == "ef" * 32
    )
    # the same weights give the same numbers under both names
    s = report["scores"]
    assert s[str(found_by_folder)]["otb"]["success_auc"] == s[str(own_entries)]["otb"]["success_auc"]


@pytest.mark.slow
def test_results_to_s3(s3_env, bench, ckpts, tmp_path):
    report = evaluate(
        EvaluateSettings(
            ckpts[:1],
            {"otb": bench["otb"]},
            "s3://ocean-runs/eval-test",
            local=True,
            max_sequences=1,
            log_mlflow=False,
            progress=False,
        )
    )
    keys = set(s3_env.keys("ocean-runs", "eval-test/"))
    seq = next(iter(report["scores"][ckpts[0]]["otb"]["per_sequence"]))
    assert {
        f"eval-test/checkpoint_e1/otb/results/{seq}.txt",
        "eval-test/checkpoint_e1/otb/summary.json",
        "eval-test/checkpoint_e1/otb/success.png",
        "eval-test/evaluation.json",
        "eval-test/per_sequence.csv",
    } <= keys
    summary = json.loads(
        s3_env.client()
        .get_object(Bucket="ocean-runs", Key="eval-test/checkpoint_e1/otb/summary.json")["Body"]
        .read()
    )
    assert summary["success_auc"] == report["scores"][ckpts[0]]["otb"]["success_auc"]
    assert report["checkpoints"][ckpts[0]]["dir"] == "s3://ocean-runs/eval-test/checkpoint_e1"
    assert all(p.startswith("s3://ocean-runs/eval-test/") for p in report["plots"])
