"""Ablations (pipelines/ablate.py): row switches, budget split, table format; one tiny Tune grid end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ocean.config import apply_overrides, smoke
from pipelines.ablate import (
    COMPONENT_ROWS,
    AblationError,
    cumulative_overrides,
    format_table,
    group_rows,
    mix_weights,
    plan_rows,
    split_budget,
    study_rows,
)

ALL = ["ytbb", "vid", "det", "coco", "got10k", "lasot"]


def _delta(a: list[str], b: list[str]) -> set[str]:
    """The key=value items of b that are not in a."""
    return set(b) - set(a)


def test_component_rows_are_cumulative_switch_deltas():
    rows = plan_rows("components", smoke(), ALL, include_online=True, log=lambda *a: None)
    names = [r.spec.key for r in rows]
    assert names == ["baseline", "centralized", "combination", "object_aware", "online"]
    ov = {r.spec.key: [o for o in r.overrides if not o.startswith("data.")] for r in rows}
    assert ov["baseline"] == ["labels.cls_rule=in_box", "model.head.combination=single", "model.head.align=false",
                              "tracker.use_align=false", "tracker.online=false"]
    # each row = the previous row + exactly its paper switch (Table 4), nothing else changes
    assert _delta(ov["baseline"], ov["centralized"]) == {"labels.cls_rule=l1_cells"}
    assert _delta(ov["centralized"], ov["combination"]) == {"model.head.combination=dilated3"}
    assert _delta(ov["combination"], ov["object_aware"]) == {"model.head.align=true", "tracker.use_align=true"}
    # the official online tracker never uses p_o (facts §4.3): use_align goes back off
    assert _delta(ov["object_aware"], ov["online"]) == {"tracker.online=true", "tracker.use_align=false"}
    for a, b in zip(names, names[1:], strict=False):
        assert len(ov[a]) == len(ov[b]) == 5  # every row sets every switch
    # the configs really carry the switches
    cfg = apply_overrides(smoke(), rows[0].overrides)
    assert (cfg.labels.cls_rule, cfg.model.head.combination, cfg.model.head.align) == ("in_box", "single", False)
    cfg = apply_overrides(smoke(), rows[3].overrides)
    assert (cfg.labels.cls_rule, cfg.model.head.combination, cfg.model.head.align, cfg.tracker.use_align) == \
        ("l1_cells", "dilated3", True, True)
    assert [r.tracker_overrides for r in rows][3] == ["tracker.use_align=true", "tracker.online=false"]


def test_online_row_only_when_available_and_shares_the_training():
    assert [r.key for r in study_rows("components", include_online=False)] == \
        ["baseline", "centralized", "combination", "object_aware"]
    rows = plan_rows("components", smoke(), ALL, include_online=True, log=lambda *a: None)
    groups = group_rows(rows, smoke())
    # + online changes only the tracker: one training for rows 4 and 5, four trainings in all
    assert list(groups) == ["components.baseline", "components.centralized", "components.combination",
                            "components.object_aware"]
    assert groups["components.object_aware"]["rows"] == ["components.object_aware", "components.online"]


def test_cumulative_overrides_later_value_wins_in_first_position():
    specs = [COMPONENT_ROWS[0], COMPONENT_ROWS[1]]
    out = cumulative_overrides(specs)
    assert out["centralized"][0] == "labels.cls_rule=l1_cells"


def test_budget_split_by_hand():
    # 16 pairs over weights 200 / 400 / 100: exact 4.571 / 9.143 / 2.286 -> 4 / 9 / 2 = 15, the largest
    # remainder (0.571, vid) gets the 16th
    assert split_budget({"vid": 200, "got10k": 400, "coco": 100}, 16) == {"vid": 5, "got10k": 9, "coco": 2}
    assert split_budget({"a": 1, "b": 1}, 3) == {"a": 2, "b": 1}  # tie: the first name
    # LaSOT (0 in the official mix) takes GOT-10k's weight
    assert mix_weights({"got10k": 160, "lasot": 0, "vid": 110}, ["lasot", "vid"]) == {"lasot": 160.0, "vid": 110.0}


def test_data_rows_skip_missing_datasets_and_keep_the_total():
    rows = plan_rows("data", smoke(), ["vid", "coco", "got10k"], pairs_per_epoch=30, log=lambda *a: None)
    by = {r.spec.key: r for r in rows}
    assert by["siamrpnpp"].skipped.startswith("reference")
    assert by["lasot"].skipped and "lasot" in by["lasot"].skipped
    assert by["ytb_vid_det_coco"].pairs_per_epoch == {"vid": 20, "coco": 10}  # 200:100 of the smoke mix
    assert by["got10k"].pairs_per_epoch == {"vid": 9, "coco": 4, "got10k": 17}  # 200:100:400 -> 8.57/4.29/17.14
    for r in (by["ytb_vid_det_coco"], by["got10k"]):
        assert sum(r.pairs_per_epoch.values()) == 30
        (item,) = r.overrides
        assert item.startswith("data.pairs_per_epoch=")
        mix = json.loads(item.split("=", 1)[1])
        assert set(mix) == set(smoke().data.pairs_per_epoch) and sum(mix.values()) == 30
    with pytest.raises(AblationError, match="no row"):
        plan_rows("data", smoke(), ["lasot"], log=lambda *a: None)


def test_row_filter_and_errors():
    rows = plan_rows("components", smoke(), ALL, rows=["baseline", "+centralized"], log=lambda *a: None)
    assert [r.spec.key for r in rows] == ["baseline", "centralized"]
    assert rows[1].overrides[0] == "labels.cls_rule=l1_cells"  # still cumulative from the baseline
    with pytest.raises(AblationError, match="unknown rows"):
        plan_rows("components", smoke(), ALL, rows=["lasot"], log=lambda *a: None)
    with pytest.raises(AblationError, match="unknown study"):
        plan_rows("tables", smoke(), ALL, log=lambda *a: None)


def test_switches_cannot_be_overridden(tmp_path):
    from pipelines.ablate import ablate

    with pytest.raises(AblationError, match="switches"):
        ablate(str(tmp_path), {"otb": str(tmp_path)}, str(tmp_path / "o"), overrides=["model.head.align=false"])
    with pytest.raises(AblationError, match="validation"):
        ablate(str(tmp_path), {"otb": str(tmp_path)}, str(tmp_path / "o"), validation="vot2018")


def test_table_puts_the_paper_beside_ours():
    rows = [
        {"number": 1, "label": "baseline", "paper": 0.358, "status": "ok",
         "scores": {"vot2018": {"eao": 0.1}, "otb": {"success_auc": 0.25}}, "switches": ["labels.cls_rule=in_box"]},
        {"number": 2, "label": "+ centralized sampling", "paper": 0.396, "status": "ok",
         "scores": {"vot2018": {"eao": 0.125}, "otb": {"success_auc": 0.5}}, "switches": []},
        {"number": 3, "label": "+ feature combination", "paper": 0.438, "status": "failed", "note": "boom",
         "scores": {}, "switches": []},
    ]
    text = format_table("components", rows, ["otb", "vot2018"], "vot2018")
    lines = text.splitlines()
    assert lines[0] == "### Component-wise analysis (paper Table 4)"
    assert lines[2] == ("| # | row | paper VOT2018 EAO | paper Δ | ours vot2018 EAO | ours Δ | ours otb success AUC "
                        "| status | switches |")
    assert lines[4] == "| ① | baseline | 0.358 |  | 0.100 |  | 0.250 | ok | `labels.cls_rule=in_box` |"
    # paper delta 0.396 - 0.358 = +0.038; ours 0.125 - 0.100 = +0.025
    assert lines[5] == "| ② | + centralized sampling | 0.396 | +0.038 | 0.125 | +0.025 | 0.500 | ok |  |"
    assert lines[6] == "| ③ | + feature combination | 0.438 | +0.042 | — |  | — | failed (boom) |  |"


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
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)  # ray_stack.md §4: 4 logical CPUs
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
    code = main(["ablate", "--data", str(pairs), "--benchmark", f"otb={root / 'benchmarks' / 'otb'}",
                 "--out", str(out), "--study", "components", "--rows", "baseline,+centralized",
                 "--preset", "smoke", "--epochs", "1", "--pairs-per-epoch", "4", "--max-sequences", "1",
                 "--workers", "1", "--set", "optim.batch_size=4", "--mlflow-uri", mlflow_server.uri, "--quiet"])
    assert code == 0
    report = json.loads((out / "ablation.json").read_text())
    rows = report["rows"]["components"]
    assert [r["key"] for r in rows] == ["baseline", "centralized"]
    assert all(r["status"] == "ok" for r in rows)
    assert len(report["trials"]) == 2 and all(t["error"] is None for t in report["trials"])
    md = (out / "ablation.md").read_text()
    assert "| ① | baseline | 0.358 |" in md and "| ② | + centralized sampling | 0.396 | +0.038 |" in md
    for r in rows:
        auc = r["scores"]["otb"]["success_auc"]
        assert 0.0 <= auc <= 1.0
        assert f"{auc:.3f}" in md.split(r["label"], 1)[1].splitlines()[0]  # ours beside the paper's
        assert r["epochs"] == 1 and Path(r["checkpoint"]).name == "epoch-0001.pt"
    assert rows[0]["checkpoint"] != rows[1]["checkpoint"]  # two trainings

    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(report["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["ocean.kind"] == "ablation"
    assert parent.data.params["study"] == "components" and parent.data.params["epochs"] == "1"
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
        train_run = client.get_run(child.data.tags["ocean.training_run_id"])
        assert train_run.data.tags["mlflow.parentRunId"] == child.info.run_id
        assert train_run.data.params["labels.cls_rule"] == child.data.params["switch.labels.cls_rule"]
        eval_run = client.get_run(child.data.tags["ocean.evaluation_run_id"])
        assert eval_run.data.tags["mlflow.parentRunId"] == child.info.run_id
        assert eval_run.data.tags["ocean.training_run_id"] == train_run.info.run_id
