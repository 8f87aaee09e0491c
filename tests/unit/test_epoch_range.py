"""Epoch ranges and the best epoch (ocean/epoch_range.py), the ablation table's best-epoch column and epoch
plot (ocean/ablation.py), and the --epochs flags of `ocean ablate` / `ocean evaluate` (one line, status 2)."""

from __future__ import annotations

import pytest

from ocean.ablation import (
    EPOCH_PLOT,
    epoch_window,
    format_report,
    format_table,
    headline_metrics,
    write_epoch_plot,
)
from ocean.epoch_range import EpochRange, best_epoch, parse_epoch_range, select_checkpoints


def test_epoch_ranges_parse_and_print():
    assert parse_epoch_range("30-50").epochs == list(range(30, 51))
    assert parse_epoch_range(" 30 - 50 : 5 ").epochs == [30, 35, 40, 45, 50]
    assert parse_epoch_range("30-48:5").epochs == [30, 35, 40, 45]  # a range, like range(): 48 is not hit
    assert parse_epoch_range("7") == EpochRange(7, 7) and parse_epoch_range(7).single
    assert [str(parse_epoch_range(t)) for t in ("30-50", "30-50:5", "7", "7-7")] == ["30-50", "30-50:5", "7", "7"]
    for bad, why in [("0", "start at 1"), ("0-5", "start at 1"), ("50-30", "ends before it starts"),
                     ("3-5:0", "step must be at least 1"), ("", "expected N, A-B"), ("abc", "expected N, A-B"),
                     ("1.5", "expected N, A-B"), ("-3", "expected N, A-B"), ("3-", "expected N, A-B"),
                     ("3:2", "expected N, A-B"), ("1,2", "expected N, A-B")]:
        with pytest.raises(ValueError, match=why) as info:
            parse_epoch_range(bad)
        assert "\n" not in str(info.value)
    assert epoch_window(None) is None and epoch_window("2-4") == EpochRange(2, 4)
    from ocean.ablation import AblationError

    with pytest.raises(AblationError, match="epochs '4-2': the range ends before it starts"):
        epoch_window("4-2")


def test_checkpoints_of_the_range_and_the_best_epoch():
    found = [(e, f"/r/checkpoints/epoch-{e:04d}.pt") for e in (1, 2, 3, 5)] + [(None, "/r/final.pt")]
    chosen, missing = select_checkpoints(found, EpochRange(2, 6, 2))
    assert chosen == [(2, "/r/checkpoints/epoch-0002.pt")] and missing == [4, 6]
    assert select_checkpoints(found, [5, 1])[0] == [(1, found[0][1]), (5, found[3][1])]
    assert [e for e, _ in select_checkpoints(found, None)[0]] == [1, 2, 3, 5]
    assert best_epoch({30: 0.41, 31: 0.45, 32: 0.43}) == (31, 0.45)
    assert best_epoch({32: 0.45, 30: 0.45, 31: 0.2}) == (30, 0.45)  # a tie: the earliest epoch
    assert best_epoch({1: None, 2: float("nan"), 3: 0.1}) == (3, 0.1)
    assert best_epoch({1: None}) is None and best_epoch({}) is None


def _report(epoch_scores: dict[str, dict[str, float]], best: dict[str, int], window: str) -> dict:
    rows = []
    for n, (key, label, paper) in enumerate([("baseline", "baseline", 0.358),
                                             ("centralized", "+ centralized sampling", 0.396)], start=1):
        e = best.get(key)
        rows.append({"key": key, "number": n, "label": label, "paper": paper, "status": "ok", "switches": [],
                     "best_epoch": e, "epoch_scores": epoch_scores.get(key, {}),
                     "scores": {"vot2018": {"eao": epoch_scores[key][str(e)]}, "otb": {"success_auc": 0.5 + n / 10}}})
    return {"studies": ["components"], "rows": {"components": rows}, "primary": "vot2018", "preset": "smoke",
            "benchmarks": {"vot2018": "V", "otb": "O"},
            "budget": {"epochs": int(window.split("-")[-1].split(":")[0]), "epoch_range": window,
                       "pairs_per_epoch": 16, "max_sequences": None}}


def test_the_table_shows_each_rows_best_epoch_and_the_plot_its_scores(tmp_path):
    scores = {"baseline": {"3": 0.20, "4": 0.31, "5": 0.25}, "centralized": {"3": 0.28, "4": 0.27, "5": 0.35}}
    report = _report(scores, {"baseline": 4, "centralized": 5}, "3-5")
    table = format_table("components", report["rows"]["components"], ["vot2018", "otb"], "vot2018")
    head, rule, *body = table.splitlines()[2:]
    assert head.split(" | ")[4:7] == ["ours vot2018 EAO", "ours Δ", "best epoch"]
    assert rule.count("|") == head.count("|")
    assert body[0].split(" | ")[4:8] == ["0.310", "", "4 of 3", "0.600"]
    assert body[1].split(" | ")[4:8] == ["0.350", "+0.040", "5 of 3", "0.700"]
    md = format_report(report)
    assert "checkpoints of epochs 3-5 tracked on vot2018, the one with the best EAO kept" in md
    assert "otb tracked with that checkpoint only" in md and EPOCH_PLOT in md
    assert headline_metrics(report) == {"baseline.vot2018.eao": 0.31, "baseline.otb.success_auc": 0.6,
                                        "baseline.best_epoch": 4.0, "centralized.vot2018.eao": 0.35,
                                        "centralized.otb.success_auc": 0.7, "centralized.best_epoch": 5.0}
    png = write_epoch_plot(report, tmp_path / EPOCH_PLOT)
    assert png and (tmp_path / EPOCH_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one epoch per row: the epoch alone, no plot
    single = _report({"baseline": {"5": 0.3}, "centralized": {"5": 0.4}}, {"baseline": 5, "centralized": 5}, "5")
    md = format_report(single)
    assert "the checkpoint of epoch 5, evaluated on vot2018, otb" in md and EPOCH_PLOT not in md
    assert format_table("components", single["rows"]["components"], ["vot2018"], "vot2018").splitlines()[4] \
        .split(" | ")[6] == "5"
    assert write_epoch_plot(single, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_bad_epochs_flags_are_one_line_and_status_2(tmp_path, capsys):
    from jobs.cli import main
    from jobs.evaluate import parse_epochs

    for bad in ("50-30", "x", "0", "3-5:0"):
        code = main(["ablate", "--data", str(tmp_path), "--benchmark", f"otb={tmp_path}", "--out",
                     str(tmp_path / "o"), "--epochs", bad])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"ocean ablate: error: --epochs '{bad}'")
    assert parse_epochs("all") is None and parse_epochs("5, 1,30-50:10") == [1, 5, 30, 40, 50]
    from jobs.common import UsageError

    with pytest.raises(UsageError, match="--epochs '3,x'"):
        parse_epochs("3,x")
