"""The quickstart summary carries the held-out scenes' scores as their own rows, offline and online (issue 14)."""

from __future__ import annotations

from pathlib import Path

from pipelines.quickstart import SUMMARY_ROWS, build_summary, format_summary


def test_heldout_row_in_summary_and_table(tmp_path: Path) -> None:
    ot = {"success_auc": 0.6, "precision": 0.9, "norm_precision": 0.8, "success_curve": [0.1]}
    scores = {"final.pt": {"otb": ot, "heldout": {"success_auc": 0.21, "precision": 0.28},
                           "heldout_online": {"success_auc": 0.31, "precision": 0.38}},
              "untrained.pt": {"otb": ot, "heldout": {"success_auc": 0.03, "precision": 0.02},
                               "heldout_online": {"success_auc": 0.13, "precision": 0.12}}}
    summary = build_summary(tmp_path, "pairs", {"datasets": {}}, {"epochs": 5, "losses": [1.0]},
                            {"scores": scores, "plots": []}, "final.pt", "untrained.pt", "sqlite:///x.db",
                            {"seed": 0, "size": "small"})
    assert list(summary["benchmarks"]) == list(SUMMARY_ROWS) and SUMMARY_ROWS[-2:] == ("heldout", "heldout_online")
    assert summary["benchmarks"]["heldout"] == {"trained": {"success_auc": 0.21, "precision": 0.28},
                                               "untrained": {"success_auc": 0.03, "precision": 0.02}}
    assert "success_curve" not in summary["benchmarks"]["otb"]["trained"]
    table = format_summary(summary)
    assert "| heldout | success_auc * | 0.030 | 0.210 |" in table
    assert "| heldout_online | success_auc * | 0.130 | 0.310 |" in table
