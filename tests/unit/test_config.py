"""Config presets, dotted overrides and the dict round trip."""

from __future__ import annotations

import json

import pytest

from ocean.config import (
    TRACKER_PRESETS,
    apply_overrides,
    flatten,
    from_dict,
    paper,
    preset,
    smoke,
    to_dict,
    tracker_config,
)


def test_paper_preset_holds_the_official_numbers():
    cfg = paper()
    assert cfg.optim.weight_decay == 1e-4 and cfg.optim.unfreeze_epoch == 10  # facts §8
    assert (cfg.loss.weight_reg, cfg.loss.weight_align, cfg.loss.weight_cls) == (1.0, 1.0, 1.0)  # facts §6
    assert sum(cfg.data.pairs_per_epoch.values()) == 600_000  # facts §7.3
    assert cfg.labels.cls_rule == "l1_cells" and cfg.labels.cls_radius_cells == 2  # facts §5.2


def test_smoke_keeps_the_geometry():
    s, p = smoke().model, paper().model
    assert (s.exemplar_size, s.search_size, s.stride) == (p.exemplar_size, p.search_size, p.stride)
    assert s.backbone.width < p.backbone.width


def test_overrides_parse_types_and_reject_unknown_keys():
    cfg = apply_overrides(paper(), [
        "optim.base_lr=0.001", "model.head.align=false", "labels.cls_rule=euclid_px",
        "data.pairs_per_epoch.coco=5", "optim.unfreeze_layers=layer2,layer3", "model.backbone.pretrained=none",
    ])
    assert cfg.optim.base_lr == 0.001 and cfg.model.head.align is False
    assert cfg.labels.cls_rule == "euclid_px" and cfg.data.pairs_per_epoch["coco"] == 5
    assert cfg.optim.unfreeze_layers == ("layer2", "layer3") and cfg.model.backbone.pretrained is None
    with pytest.raises(KeyError, match="optim.nope"):
        apply_overrides(paper(), ["optim.nope=1"])
    with pytest.raises(KeyError):
        apply_overrides(paper(), ["data.pairs_per_epoch.imagenet=5"])
    with pytest.raises(ValueError, match="optim.epochs: expected a positive integer, got 'ten'"):
        apply_overrides(paper(), ["optim.epochs=ten"])
    with pytest.raises(ValueError, match="labels.cls_rule: expected one of l1_cells, euclid_px, in_box"):
        apply_overrides(paper(), ["labels.cls_rule=manhattan"])
    with pytest.raises(ValueError, match="model.head.align: expected true or false, got 'maybe'"):
        apply_overrides(paper(), ["model.head.align=maybe"])
    with pytest.raises(ValueError, match="model.head: is a section"):
        apply_overrides(paper(), ["model.head=1"])


def test_dict_round_trip_is_json_and_exact():
    for cfg in (paper(), smoke(), apply_overrides(paper(), ["optim.unfreeze_layers=layer3"])):
        data = json.loads(json.dumps(to_dict(cfg)))
        assert from_dict(data) == cfg
    with pytest.raises(KeyError):
        from_dict({**to_dict(paper()), "extra": 1})


def test_flatten_and_presets():
    flat = flatten(paper())
    assert flat["optim.base_lr"] == 5e-3 and flat["model.backbone.layout"] == "pysot"
    assert preset("smoke").preset == "smoke"
    with pytest.raises(KeyError):
        preset("huge")


def test_tracker_presets_follow_facts_table():
    vot18 = tracker_config("vot2018")
    assert (vot18.penalty_k, vot18.lr, vot18.window_influence, vot18.ratio) == (0.021, 0.730, 0.321, 0.93)
    assert tracker_config("got10k", lr=0.5).lr == 0.5
    from ocean.benchmarks.readers import BENCHMARK_FAMILY

    assert set(TRACKER_PRESETS) == set(BENCHMARK_FAMILY)  # every benchmark has its preset (facts §9.3, §9.5)
    with pytest.raises(KeyError):
        tracker_config("otb2013")


def test_configuration_reference_is_current():
    from pathlib import Path

    from ocean.config_doc import reference_markdown

    committed = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(), "regenerate: ocean config --reference > docs/configuration.md"
    assert "`optim.weight_decay` | `0.0001`" in committed and "facts §8" in committed


def test_tracker_file_overrides(tmp_path):
    from ocean.config import TrackerConfig, tracker_file_overrides

    f = tmp_path / "best_tracker.json"
    f.write_text(json.dumps({"tracker": {"penalty_k": 0.05, "use_align": True, "size_update": "double",
                                         "online_params": {"rotations": [5, -5]}}}))
    items = tracker_file_overrides(str(f))
    cfg = apply_overrides(paper(), items).tracker
    assert isinstance(cfg, TrackerConfig)
    assert cfg.penalty_k == 0.05 and cfg.use_align is True and cfg.size_update == "double"
    assert cfg.online_params.rotations == (5.0, -5.0)
    f.write_text(json.dumps({"penalty_k": 0.05, "windw": 0.3}))
    with pytest.raises(ValueError, match="tracker.windw: unknown config key"):
        tracker_file_overrides(str(f))
    f.write_text("{not json")
    with pytest.raises(ValueError, match="best_tracker.json: not valid JSON"):
        tracker_file_overrides(str(f))
