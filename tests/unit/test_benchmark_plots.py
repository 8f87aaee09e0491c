"""The plots: what each one draws (the curves and points behind it, read back from the figure before it is
saved) and that its legend shows the same scores, formatted the same way, as the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ocean.benchmarks import plots
from ocean.benchmarks.metrics import EAO_INTERVALS, GOT10K_PLOT_THRESHOLDS, NORM_PRECISION_THRESHOLDS
from ocean.benchmarks.report import format_score, headline_table, summary_table
from ocean.benchmarks.scoring import score_tracks
from ocean.benchmarks.sequence import Sequence

WH = (640, 360)


@pytest.fixture
def drawn(monkeypatch):
    """``{file name: figure facts}`` of every plot saved while the test runs: per axes its title, axis
    labels, limits, y scale, lines ``(label, x, y)``, legend texts, and the shaded spans ``(x0, x1)``."""
    seen: dict[str, list[dict]] = {}
    real_save = plots.save

    def capture(fig, out_path):
        facts = []
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            legend = ax.get_legend()
            facts.append({
                "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                "xlim": ax.get_xlim(), "yscale": ax.get_yscale(),
                "lines": [(ln.get_label(), np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
                          for ln in ax.get_lines()],
                "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                "spans": [tuple(p.get_x() + np.array([0, p.get_width()])) for p in ax.patches
                          if hasattr(p, "get_width")],
                "size_px": tuple(fig.get_size_inches() * plots.DPI),
            })
        seen[Path(out_path).name] = facts
        return real_save(fig, out_path)

    monkeypatch.setattr(plots, "save", capture)
    return seen


def _sequence(name: str, family: str, n: int, rng: np.random.Generator) -> Sequence:
    xy = np.clip(np.cumsum(rng.normal(0, 2, (n, 2)), axis=0) + [300, 150], 0, [WH[0] - 100, WH[1] - 100])
    gt = np.hstack([xy, np.tile([60.0, 40.0], (n, 1))])
    return Sequence(name, family, [Path(f"/none/{k}.jpg") for k in range(n)], gt, resolution_wh=WH)


def _vot_trajectory(seq: Sequence, fail_every: int) -> list[np.ndarray]:
    """Boxes shifted by 10 px, a failure every ``fail_every`` tracked frames, re-initialised 5 frames later."""
    traj, f, since = [], 0, 0
    while f < len(seq):
        if since == 0:
            traj.append(np.array([1.0]))
        elif since == fail_every:
            traj.append(np.array([2.0]))
            skip = min(4, len(seq) - f - 1)
            traj += [np.array([0.0])] * skip
            f += 1 + skip
            since = 0
            continue
        else:
            traj.append(seq.gt_xywh[f] + [10.0, 0, 0, 0])
        f += 1
        since += 1
    return traj


def test_eao_curve_is_the_scored_curve_and_its_interval_mean_is_the_eao(drawn, tmp_path):
    rng = np.random.default_rng(0)
    seqs = [_sequence(f"v{i}", "vot", 420, rng) for i in range(3)]
    scores = {name: score_tracks("vot2018", seqs, {s.name: _vot_trajectory(s, every) for s in seqs})
              for name, every in (("often", 60), ("rarely", 250))}
    written = plots.plot_curves(scores, "vot2018", tmp_path, prefix="vot2018_")
    assert [p.name for p in written] == ["vot2018_eao_curve.png", "vot2018_accuracy_robustness.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    (ax,) = drawn["vot2018_eao_curve.png"]
    lo, hi = EAO_INTERVALS["vot2018"]
    assert ax["spans"] == [(lo, hi)] and ax["xlim"][1] >= hi
    assert "Sequence length" in ax["xlabel"] and "(frames)" in ax["xlabel"] and "VOT2018" in ax["title"]
    curves = {label.split(" [")[0]: (x, y) for label, x, y in ax["lines"] if " [" in label}
    for name, s in scores.items():
        phi = np.asarray(s["curves"]["eao_curve"])
        x, y = curves[name]
        np.testing.assert_array_equal(x, np.arange(1, len(phi)))  # Φ(L) from L = 1 (frame 0 is the init)
        np.testing.assert_allclose(y, phi[1:])
        assert np.mean(y[lo - 1 : hi]) == pytest.approx(s["eao"])  # x = L: the mean over [lo, hi] is the EAO
        assert f"{name} [{format_score(s['eao'])}]" in ax["legend"]
    assert scores["rarely"]["eao"] > scores["often"]["eao"]  # the data is not degenerate
    assert ax["legend"].index(f"rarely [{format_score(scores['rarely']['eao'])}]") < ax["legend"].index(
        f"often [{format_score(scores['often']['eao'])}]")  # best first, as the toolkits order them

    (ar,) = drawn["vot2018_accuracy_robustness.png"]
    assert ar["xlim"][0] > ar["xlim"][1] == 0  # fewer failures to the right
    points = {label.split(" [")[0]: (x[0], y[0]) for label, x, y in ar["lines"]}
    for name, s in scores.items():
        assert points[name] == pytest.approx((s["robustness"], s["accuracy"]))
        assert (f"{name} [A {format_score(s['accuracy'])}, R {format_score(s['robustness'])}, "
                f"EAO {format_score(s['eao'])}]") in ar["legend"]
    assert "failures per 100 frames" in ar["xlabel"] and "Accuracy" in ar["ylabel"]


def test_got10k_legend_is_the_ao_the_table_shows_not_the_curve_mean(drawn, tmp_path):
    """The legend said 0.333 where the AO was 0.331: it showed the mean of the 101-threshold curve, about
    (100 AO + 0.5 P(IoU > 0)) / 101, which is not the AO away from 0.5. The legend gives the AO (got10k toolkit)."""
    rng = np.random.default_rng(3)
    seqs = [_sequence(f"g{i}", "got10k", 80, rng) for i in range(3)]
    tracks = {s.name: s.gt_xywh + rng.normal(0, 20, (len(s), 4)) * [1, 1, 0, 0] for s in seqs}  # AO ~ 0.32
    sc = score_tracks("got10k", seqs, tracks)
    curve = np.asarray(sc["curves"]["success_curve"])
    assert format_score(np.mean(curve)) != format_score(sc["ao"])  # the two computations differ here
    plots.plot_curves({"t": sc}, "got10k", tmp_path)
    (ax,) = drawn["success.png"]
    (label, x, y), = ax["lines"]
    np.testing.assert_allclose(x, GOT10K_PLOT_THRESHOLDS)
    np.testing.assert_allclose(y, curve)
    assert ax["legend"] == [f"t [{format_score(sc['ao'])}]"]
    assert f"| {format_score(sc['ao'])} |" in summary_table({"t": sc})
    headline = headline_table({"scores": {"u": {"got10k": sc}}, "checkpoints": {"u": {"name": "t", "epoch": 1}}})
    rows = [line for line in headline.splitlines() if line.startswith("|")]
    assert rows[-1].endswith(f"| ao | {format_score(sc['ao'])} |")  # `ocean evaluate` prints this
    assert headline.splitlines()[-1] == f"- got10k: {sc['convention']}"  # and how GOT-10k counts frames


def test_normalised_precision_plot_gives_the_value_at_0_20(drawn, tmp_path):
    rng = np.random.default_rng(5)
    seqs = [_sequence(f"l{i}", "lasot", 60, rng) for i in range(2)]
    scores = {f"t{k}": score_tracks("lasot", seqs, {s.name: s.gt_xywh + [k * 6.0, 0, 0, 0] for s in seqs})
              for k in range(3)}
    written = plots.plot_curves(scores, "lasot", tmp_path)
    assert [p.name for p in written] == ["success.png", "precision.png", "norm_precision.png"]
    (ax,) = drawn["norm_precision.png"]
    assert "LaSOT" in ax["title"] and "Normalized" in ax["title"] and "GT box size" in ax["xlabel"]
    for label, x, y in ax["lines"]:
        name = label.split(" [")[0]
        np.testing.assert_allclose(x, NORM_PRECISION_THRESHOLDS)
        np.testing.assert_allclose(y, scores[name]["curves"]["norm_precision_curve"])
        assert label == f"{name} [{format_score(scores[name]['norm_precision'])}]" and y[20] == pytest.approx(
            scores[name]["norm_precision"])
    assert [t.split(" [")[0] for t in ax["legend"]] == ["t0", "t1", "t2"]  # best first
    (succ,) = drawn["success.png"]
    assert sorted(succ["legend"]) == sorted(f"{n} [{format_score(s['success_auc'])}]" for n, s in scores.items())


def test_metric_vs_epoch_draws_the_untrained_model_apart(drawn, tmp_path):
    points = {"otb": [(0, 0.05), (5, 0.31), (10, 0.42)], "got10k": [(0, 0.02), (5, 0.3308)],
              "vot2018": [(5, 0.2)], "lasot": [(0, 0.01), (5, 0.2), (10, 0.25)]}
    best = {"benchmark": "got10k", "metric": "ao", "value": 0.3308, "epoch": 5}
    plots.plot_metric_vs_epoch(points, tmp_path / "m.png", best)
    axes = {ax["title"].split(":")[0]: ax for ax in drawn["m.png"]}
    assert set(axes) == {"OTB-100", "GOT-10k val", "VOT2018", "LaSOT"}
    for ax in axes.values():
        assert ax["size_px"][0] >= 1400 and ax["size_px"][1] >= 800  # 2 x 2 panels of 768 px width
    otb = axes["OTB-100"]
    joined = [(x, y) for label, x, y in otb["lines"] if label.startswith("trained")]
    (x, y), = joined
    assert list(x) == [5, 10] and list(y) == [0.31, 0.42]  # epoch 0 is not joined to epoch 5
    assert "untrained (epoch 0) [0.050]" in otb["legend"]
    got = axes["GOT-10k val"]
    assert "best epoch 5 [0.331]" in got["legend"] and "trained, last epoch 5 [0.331]" in got["legend"]
    assert got["ylabel"] == "AO (average overlap)"
    assert not any(t.startswith("untrained") for t in axes["VOT2018"]["legend"])
    plots.plot_metric_vs_epoch(points, tmp_path / "named.png", best, titles={"otb": "the held-out scenes"})
    assert sorted(ax["title"] for ax in drawn["named.png"]) == [
        "GOT-10k val: AO (average overlap)", "LaSOT: success AUC", "VOT2018: EAO", "the held-out scenes: success AUC"]


def test_training_plots_draw_the_history_and_the_logged_steps(drawn, tmp_path):
    from ocean.training_plots import plot_training

    history = [{"epoch": e, "loss": 1.0 / e, "loss_reg": 0.5 / e, "loss_cls": 0.4 / e, "loss_align": 0.1 / e,
                "lr": 1e-3 * e} for e in (1, 2, 3)]
    history.insert(2, {**history[1], "loss": 9.0})  # an epoch redone after a resume: the last entry wins
    history[1], history[2] = history[2], history[1]
    steps = {"total": [(k, 2.0 - 0.1 * k) for k in range(12)], "reg": [(k, 1.0) for k in range(12)]}
    written = plot_training(history, tmp_path, steps, {"head": [(1, 1e-3), (2, 2e-3), (3, 3e-3)]}, "Training t")
    assert [p.name for p in written] == ["training_loss.png", "training_lr.png"]
    epoch_ax, step_ax = drawn["training_loss.png"]
    lines = {label.split(" [")[0]: (x, y) for label, x, y in epoch_ax["lines"]}
    assert list(lines["total"][0]) == [1, 2, 3] and list(lines["total"][1]) == [1.0, 0.5, 1 / 3]
    assert "regression (IoU)" in lines and epoch_ax["xlabel"] == "epoch"
    step_lines = {label: (x, y) for label, x, y in step_ax["lines"]}
    assert list(step_lines["total"][1]) == [2.0 - 0.1 * k for k in range(12)]
    assert step_ax["xlabel"] == "optimizer step"
    (lr_ax,) = drawn["training_lr.png"]
    assert lr_ax["yscale"] == "log" and "learning rate" in lr_ax["ylabel"]
    assert {label.split(" [")[0] for label, _, _ in lr_ax["lines"]} == {"base lr", "group head"}
    assert plot_training([], tmp_path / "none") == []


def test_score_cli_writes_the_vot_plots(drawn, tmp_path):
    from benchmark_trees import make_vot_sequence, moving_boxes_xywh

    from jobs.cli import main
    from ocean.benchmarks.readers import read_vot
    from ocean.benchmarks.results import write_vot_result

    gt = moving_boxes_xywh(12)
    make_vot_sequence(tmp_path / "vot", "ball", gt)
    (seq,) = read_vot(tmp_path / "vot")
    traj = [np.array([1.0])] + [b + [1.0, 0, 0, 0] for b in gt[1:6]] + [np.array([2.0])] + [np.array([0.0])] * 4 \
        + [np.array([1.0])]
    write_vot_result(tmp_path / "res", seq.name, traj)
    rc = main(["score", "--benchmark", "vot2018", "--dataset", str(tmp_path / "vot"), "--results",
               str(tmp_path / "res"), "--json", str(tmp_path / "s.json"), "--plots", str(tmp_path / "plots"),
               "--title", "my VOT-layout clips"])
    assert rc == 0
    assert (tmp_path / "plots" / "eao_curve.png").stat().st_size > 10_000
    assert (tmp_path / "plots" / "accuracy_robustness.png").stat().st_size > 10_000
    assert drawn["eao_curve.png"][0]["title"] == "Expected average overlap on my VOT-layout clips"


def test_titles_name_the_data_when_it_is_not_the_benchmark(drawn, tmp_path):
    """Data in a benchmark's layout that is not the benchmark (the quickstart's held-out scenes, scored as
    OTB) was titled "OTB-100". ``dataset`` names it in every title; without it the benchmark's name stays."""
    rng = np.random.default_rng(7)
    seqs = [_sequence(f"o{i}", "otb", 50, rng) for i in range(2)]
    sc = score_tracks("otb", seqs, {s.name: s.gt_xywh + [4.0, 0, 0, 0] for s in seqs})
    plots.plot_curves({"t": sc}, "otb", tmp_path / "standard")
    assert [ax["title"] for ax in drawn["success.png"]] == ["Success plot of OPE on OTB-100"]
    written = plots.plot_curves({"t": sc}, "otb", tmp_path / "named", dataset="the held-out scenes (OTB protocol)")
    assert {"success.png", "precision.png"} <= {p.name for p in written}
    for p in written:
        (ax,) = drawn[p.name]
        assert ax["title"].endswith(" on the held-out scenes (OTB protocol)") and "OTB-100" not in ax["title"]
