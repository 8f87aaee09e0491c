"""ocean ablate (pipelines/ablate.py): one tiny Tune grid end to end (bad requests: tests/unit/test_ablate_cli.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ocean.config import smoke
from pipelines.raysession import local_niceness

# --------------------------------------------------------------------------------------------------------
# End to end (slow): a 2-trial Tune grid on tiny synthetic data, MLflow on a real server


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import ray

    from data_prep.synthetic import generate
    from pipelines.prepare import PrepareSettings, prepare

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    root = tmp_path_factory.mktemp("ablate-synth")
    generate(root, size="tiny")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,  # ray_stack.md §4: 4 logical CPUs
             **local_niceness())  # workers at the test's niceness, §11
    pairs = root / "pairs"
    prepare(PrepareSettings({"got10k": str(root / "got10k")}, str(pairs), smoke(), pairs={"got10k": 12}, seed=0,
                            progress=False, log=None))
    yield root, pairs
    ray.shutdown()


@pytest.mark.slow
def test_two_row_grid_end_to_end(tiny, tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    from jobs.cli import main

    root, pairs = tiny
    out = tmp_path / "abl"
    # epochs 1-2 on otb (the selection benchmark), got10k only at each row's best epoch (facts §11.4)
    code = main(["ablate", "--data", str(pairs), "--benchmark", f"otb={root / 'benchmarks' / 'otb'}",
                 "--benchmark", f"got10k={root / 'benchmarks' / 'got10k' / 'val'}", "--validation", "otb",
                 "--out", str(out), "--study", "components", "--rows", "baseline,+centralized",
                 "--preset", "smoke", "--epochs", "1-2", "--pairs-per-epoch", "4", "--max-sequences", "1",
                 "--workers", "1", "--set", "optim.batch_size=4", "--mlflow-uri", mlflow_server.uri, "--quiet"])
    assert code == 0
    report = json.loads((out / "ablation.json").read_text())
    rows = report["rows"]["components"]
    assert [r["key"] for r in rows] == ["baseline", "centralized"]
    assert all(r["status"] == "ok" for r in rows)
    assert len(report["trials"]) == 2 and all(t["error"] is None for t in report["trials"])
    md = (out / "ablation.md").read_text()
    assert "| ① | baseline | 0.358 |" in md and "| ② | + centralized sampling | 0.396 | +0.038 |" in md
    assert "| best epoch |" in md and "the checkpoints of epochs 1-2 tracked on otb" in md
    assert (out / "ablation-epochs.png").read_bytes()[:4] == b"\x89PNG"
    for r in rows:
        auc = r["scores"]["otb"]["success_auc"]
        assert 0.0 <= auc <= 1.0
        line = md.split(r["label"], 1)[1].splitlines()[0]
        assert f"{auc:.3f}" in line and f"| {r['best_epoch']} of 2 |" in line  # ours beside the paper's
        # the reported otb score is the best of the two epochs', and its checkpoint the one got10k was run with
        assert r["epochs_evaluated"] == [1, 2] and r["missing_epochs"] == []
        assert auc == max(r["epoch_scores"].values()) == r["epoch_scores"][str(r["best_epoch"])]
        assert r["epochs"] == 2 and Path(r["checkpoint"]).name == f"epoch-{r['best_epoch']:04d}.pt"
        assert set(r["scores"]) == {"otb", "got10k"} and 0.0 <= r["scores"]["got10k"]["ao"] <= 1.0
        got10k = json.loads((out / "eval" / f"components-{r['key']}" / "best" / Path(r["checkpoint"]).stem
                             / "got10k" / "summary.json").read_text())
        assert got10k["ao"] == pytest.approx(r["scores"]["got10k"]["ao"])
    assert rows[0]["checkpoint"] != rows[1]["checkpoint"]  # two trainings

    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(report["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["ocean.kind"] == "ablation"
    assert parent.data.params["study"] == "components" and parent.data.params["epochs"] == "2"
    assert parent.data.params["epoch_range"] == "1-2" and parent.data.metrics["baseline.best_epoch"] in (1, 2)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"ablation.md", "ablation.json"}
    assert parent.data.metrics["baseline.otb.success_auc"] == pytest.approx(rows[0]["scores"]["otb"]["success_auc"])
    children = report["mlflow"]["child_run_ids"]
    assert set(children) == {"components.baseline", "components.centralized"}
    for row, name in zip(rows, ["components.baseline", "components.centralized"], strict=True):
        child = client.get_run(children[name])
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["switch.labels.cls_rule"] == ("in_box" if row["key"] == "baseline" else "l1_cells")
        assert child.data.params["switch.model.head.combination"] == "single"
        assert child.data.metrics["otb.success_auc"] == pytest.approx(row["scores"]["otb"]["success_auc"])
        assert child.data.metrics["best_epoch"] == row["best_epoch"]
        history = client.get_metric_history(child.info.run_id, "epochs.otb.success_auc")
        assert {m.step: m.value for m in history} == pytest.approx({int(e): v for e, v in row["epoch_scores"].items()})
        best_eval = client.get_run(child.data.tags["ocean.evaluation_best_run_id"])
        assert best_eval.data.tags["mlflow.parentRunId"] == child.info.run_id
        train_run = client.get_run(child.data.tags["ocean.training_run_id"])
        assert train_run.data.tags["mlflow.parentRunId"] == child.info.run_id
        assert train_run.data.params["labels.cls_rule"] == child.data.params["switch.labels.cls_rule"]
        eval_run = client.get_run(child.data.tags["ocean.evaluation_run_id"])
        assert eval_run.data.tags["mlflow.parentRunId"] == child.info.run_id
        assert eval_run.data.tags["ocean.training_run_id"] == train_run.info.run_id
