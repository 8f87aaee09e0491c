"""Report formats of an evaluation (ocean.benchmarks.report): CSV rows, tables, best checkpoint, epochs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ocean.benchmarks.report import (
    CSV_COLUMNS,
    METRIC_KEYS,
    best_checkpoint,
    epoch_points,
    headline_table,
    metrics,
    per_sequence_csv,
    sequence_row,
    summary_table,
    without_curves,
)


def _scores(auc, ao=None):
    return {
        "otb": {"success_auc": auc, "num_sequences": 1, "curves": {"success_curve": [1.0]},
                "per_sequence": {"Bolt": {"success_auc": auc, "precision": 0.5, "length": 3}},
                "rejected": {"Coke": "no result file"}},
        "got10k": {"ao": ao, "num_sequences": 0 if ao is None else 1, "per_sequence": {}, "rejected": {}},
    }


def test_sequence_row_and_csv():
    s = _scores(0.25)["otb"]
    times = np.array([0.5, 0.1, 0.0, 0.1])  # frame 0 (init) counts; a skipped frame (0 s) does not
    row = sequence_row("ck", 3, "otb", "Bolt", 4, s, {"times_s": times, "nonfinite_frames": 0}, "h:1")
    assert row["success_auc"] == 0.25 and row["precision"] == 0.5 and row["length"] == 4
    assert row["tracker_fps"] == round(3 / 0.7, 2) and row["worker"] == "h:1" and row["error"] is None
    # no track (the sequence failed): the tracking error, else the scorer's reason
    assert sequence_row("ck", 3, "otb", "Coke", 4, s)["error"] == "no result file"
    assert sequence_row("ck", 3, "otb", "Coke", 4, s, error="boom")["error"] == "boom"
    text = per_sequence_csv([row, sequence_row("ck", None, "otb", "Coke", 4, s)])
    lines = text.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[2] == "ck,,otb,Coke,4,,,,,,,,,,,,,no result file"


def test_metrics_tables_and_without_curves():
    assert METRIC_KEYS[-1] == "num_failures"
    # undefined values (None in a JSON-ready score dict) and non-metrics are left out
    assert metrics({"success_auc": 0.5, "ao": None, "num_failures": 3, "num_sequences": 2}) == {
        "success_auc": 0.5, "num_failures": 3.0}
    assert summary_table({"a": {"success_auc": 0.25}, "b": {"ao": 0.5}}) == (
        "| tracker | success_auc | ao |\n|---|---|---|\n| a | 0.250 |  |\n| b |  | 0.500 |\n")
    report = {"scores": {"u1": _scores(0.25, 0.5)}, "checkpoints": {"u1": {"name": "ck", "epoch": 2}}}
    assert headline_table(report) == (
        "| checkpoint | epoch | benchmark | sequences | failed | headline | value |\n|---|---|---|---|---|---|---|\n"
        "| ck | 2 | otb | 1 | 0 | success_auc | 0.250 |\n| ck | 2 | got10k | 1 | 0 | ao | 0.500 |\n")
    slim = without_curves({"x": 1, **report})
    assert "curves" not in slim["scores"]["u1"]["otb"] and "curves" in report["scores"]["u1"]["otb"]
    assert slim["x"] == 1 and slim["checkpoints"] is report["checkpoints"]


def test_best_checkpoint_and_epoch_points():
    c = [SimpleNamespace(uri=f"u{e}", name=f"e{e}", epoch=e) for e in (1, 2, 3)]
    scores = {"u1": _scores(0.2, 0.1), "u2": _scores(0.4, None), "u3": _scores(0.4, 0.3)}
    best = best_checkpoint("otb", c, scores)
    # the first of equal values wins (checkpoint order)
    assert best == {"benchmark": "otb", "metric": "success_auc", "value": 0.4, "checkpoint": "u2", "name": "e2",
                    "epoch": 2}
    assert best_checkpoint("got10k", c, scores)["epoch"] == 3
    assert best_checkpoint("got10k", c[1:2], scores) is None
    assert epoch_points(c, scores, ["otb", "got10k"]) == {
        "otb": [(1, 0.2), (2, 0.4), (3, 0.4)], "got10k": [(1, 0.1), (3, 0.3)]}
    assert epoch_points(c[1:2], scores, ["got10k"]) == {}
