"""jobs/common.py: the shared NAME=VALUE parsers, tracker overrides and the one-line usage errors."""

from __future__ import annotations

import json

import pytest

from jobs import cli
from jobs.common import (
    UsageError,
    absolute,
    name_value,
    parse_count_values,
    parse_name_values,
    tracker_overrides,
)
from ocean.config import TRACKER_PRESETS, TrackerConfig, layered_tracker_config, tracker_override_strings


def test_name_values():
    assert name_value(" got10k = /d/GOT ", "--dataset") == ("got10k", "/d/GOT")
    assert name_value("x=a=b", "--dataset") == ("x", "a=b")
    for bad in ("got10k", "=x", "x=", " = "):
        with pytest.raises(UsageError, match="expected NAME=VALUE"):
            name_value(bad, "--dataset")
    assert parse_name_values(["OTB=/a", "lasot=/b"], "--benchmark", ("otb", "lasot")) == {"otb": "/a", "lasot": "/b"}
    with pytest.raises(UsageError, match="unknown name 'nfs'"):
        parse_name_values(["nfs=/a"], "--benchmark", ("otb",))
    with pytest.raises(UsageError, match="otb given twice"):
        parse_name_values(["otb=/a", "otb=/b"], "--benchmark")
    assert parse_count_values(["got10k=10", "coco=0"], "--pairs") == {"got10k": 10, "coco": 0}
    with pytest.raises(UsageError, match="not an integer"):
        parse_count_values(["got10k=ten"], "--pairs")
    with pytest.raises(UsageError, match=">= 0"):
        parse_count_values(["got10k=-1"], "--pairs")


def test_tracker_overrides_and_layering(tmp_path):
    f = tmp_path / "best.json"
    f.write_text(json.dumps({"tracker": {"lr": 0.5, "online_params": {"seed": 7}}}))
    items = tracker_overrides(str(f), ["tracker.window_influence=0.2"])
    assert items == ["tracker.lr=0.5", "tracker.online_params.seed=7", "tracker.window_influence=0.2"]
    with pytest.raises(UsageError, match="only tracker"):
        tracker_overrides(None, ["optim.epochs=3"])
    with pytest.raises(UsageError, match="--tracker-config"):
        tracker_overrides(str(tmp_path / "missing.json"), [])
    cfg = layered_tracker_config(TrackerConfig(lr=0.1, min_size=5.0), "otb", items)
    assert cfg.lr == 0.5 and cfg.window_influence == 0.2 and cfg.online_params.seed == 7
    assert cfg.penalty_k == TRACKER_PRESETS["otb"]["penalty_k"] and cfg.min_size == 5.0  # base kept
    assert layered_tracker_config(None, "vot2018", {"lr": 0.3}).lr == 0.3
    assert layered_tracker_config(None, None, {"tracker": {"use_align": True}}).use_align is True
    assert tracker_override_strings(["lr=0.2", "tracker.ratio=0.9"]) == ["tracker.lr=0.2", "tracker.ratio=0.9"]
    with pytest.raises(ValueError, match="unknown config key"):
        layered_tracker_config(None, None, ["tracker.nope=1"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        layered_tracker_config(None, "otb2013")
    with pytest.raises(ValueError, match="key=value"):
        tracker_override_strings(["lr"])


def test_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("runs") == str(tmp_path / "runs")
    assert absolute("s3://b/p?endpoint_override=h:1") == "s3://b/p?endpoint_override=h:1"
    assert absolute(None) is None


def test_usage_error_is_one_line_and_exit_2(monkeypatch, capsys):
    import jobs.info as info

    def boom(args):
        raise UsageError("--thing 'x': bad")

    monkeypatch.setattr(info, "run", boom)
    assert cli.main(["info"]) == 2
    assert capsys.readouterr().err == "ocean info: error: --thing 'x': bad\n"
