"""The paper's ablation tables as data (ocean/ablation.py): row switches, budget split, trainings, table format."""

from __future__ import annotations

import json

import pytest

from ocean.ablation import (
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
from ocean.config import apply_overrides, smoke

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
    assert groups["components.object_aware"].rows == ["components.object_aware", "components.online"]


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
    assert lines[2] == ("| # | row | paper VOT2018 EAO | paper Δ | ours vot2018 EAO | ours Δ | best epoch "
                        "| ours otb success AUC | status | switches |")
    assert lines[4] == "| ① | baseline | 0.358 |  | 0.100 |  | — | 0.250 | ok | `labels.cls_rule=in_box` |"
    # paper delta 0.396 - 0.358 = +0.038; ours 0.125 - 0.100 = +0.025
    assert lines[5] == "| ② | + centralized sampling | 0.396 | +0.038 | 0.125 | +0.025 | — | 0.500 | ok |  |"
    assert lines[6] == "| ③ | + feature combination | 0.438 | +0.042 | — |  | — | — | failed (boom) |  |"
