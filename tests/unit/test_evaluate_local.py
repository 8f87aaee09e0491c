"""Batch evaluation (pipelines.evaluate / ocean evaluate), no servers: inputs, the local loop against the
sequential scorer and `ocean score`, and fitting the workers to a cluster (the 2-node Ray cluster + MLflow
server end to end: tests/integration/test_evaluate_cluster.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_trees import METRICS

from jobs.cli import main as cli_main
from ocean.config import TrackerConfig, layered_tracker_config
from pipelines.evaluate import EvaluateSettings, EvaluationError, evaluate

# ----------------------------------------------------------------------------------------------------------
# Inputs


def test_tracker_config_layers_checkpoint_then_preset_then_overrides():
    base = TrackerConfig(lr=0.5, min_size=7.0, context_amount=0.4)
    otb = layered_tracker_config(base, "otb")
    # preset values (facts §9.3 OTB2015 row) replace the checkpoint's; untouched fields stay the checkpoint's
    assert (otb.penalty_k, otb.lr, otb.window_influence, otb.small_sz) == (0.087, 0.408, 0.366, 271)
    assert otb.size_update == "double" and otb.min_size == 7.0 and otb.context_amount == 0.4
    over = layered_tracker_config(base, "vot2018", {"window_influence": 0.25, "use_align": False})
    assert over.window_influence == 0.25 and over.use_align is False and over.penalty_k == 0.021
    same = layered_tracker_config(base, "vot2018", ["tracker.window_influence=0.25", "use_align=false"])
    assert same == over
    assert layered_tracker_config(base, "got10k", {"tracker": {"lr": 0.1}}).lr == 0.1
    with pytest.raises(ValueError, match="no_such_key"):
        layered_tracker_config(base, "otb", {"no_such_key": 1})
    with pytest.raises(ValueError, match="tracker.lr: expected a finite number"):
        layered_tracker_config(base, "otb", ["tracker.lr=fast"])


def test_bad_inputs_give_clear_errors(bench, ckpts, tmp_path, capsys):
    otb = {"otb": bench["otb"]}
    with pytest.raises(EvaluationError, match="missing.pt: no such file"):
        evaluate(
            EvaluateSettings(
                [str(tmp_path / "missing.pt")], otb, str(tmp_path / "o"), local=True, log_mlflow=False
            )
        )
    not_ckpt = tmp_path / "garbage.pt"
    torch.save({"weights": 1}, not_ckpt)
    with pytest.raises(EvaluationError, match="garbage.pt: not an ocean-ray checkpoint"):
        evaluate(EvaluateSettings([str(not_ckpt)], otb, str(tmp_path / "o"), local=True, log_mlflow=False))
    with pytest.raises(EvaluationError, match="benchmark otb: root .*nowhere is not a folder"):
        evaluate(
            EvaluateSettings(
                ckpts[:1],
                {"otb": str(tmp_path / "nowhere")},
                str(tmp_path / "o"),
                local=True,
                log_mlflow=False,
            )
        )
    with pytest.raises(EvaluationError, match="benchmark lasot: cannot read"):
        evaluate(
            EvaluateSettings(
                ckpts[:1], {"lasot": bench["otb"]}, str(tmp_path / "o"), local=True, log_mlflow=False
            )
        )
    with pytest.raises(EvaluationError, match="unknown benchmark 'otb2013'"):
        evaluate(
            EvaluateSettings(
                ckpts[:1], {"otb2013": bench["otb"]}, str(tmp_path / "o"), local=True, log_mlflow=False
            )
        )
    with pytest.raises(EvaluationError, match="validation benchmark 'vot2018' is not one of"):
        evaluate(
            EvaluateSettings(
                ckpts[:1], otb, str(tmp_path / "o"), local=True, log_mlflow=False, validation="vot2018"
            )
        )
    # tracker hyper-parameters are layered (ocean.config.layered_tracker_config) and checked before tracking
    with pytest.raises(EvaluationError, match="tracker hyper-parameters: .*no_such_key"):
        evaluate(
            EvaluateSettings(
                ckpts[:1],
                otb,
                str(tmp_path / "o"),
                tracker_overrides={"no_such_key": 1},
                local=True,
                log_mlflow=False,
            )
        )
    with pytest.raises(EvaluationError, match="tracker hyper-parameters: .*tracker.lr: expected a finite number"):
        evaluate(
            EvaluateSettings(
                ckpts[:1],
                otb,
                str(tmp_path / "o"),
                tracker_overrides=["tracker.lr=fast"],
                local=True,
                log_mlflow=False,
            )
        )
    assert not (tmp_path / "o").exists()  # nothing was tracked or written
    # the command line: status 2 and the message, no traceback
    code = cli_main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
            "--benchmark",
            f"otb={bench['otb']}",
            "--out",
            str(tmp_path / "o"),
            "--local",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "ocean evaluate: error: checkpoint" in err and "no such file" in err
    code = cli_main(
        ["evaluate", "--checkpoint", ckpts[0], "--benchmark", "otb", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "expected NAME=ROOT" in capsys.readouterr().err
    code = cli_main(
        [
            "evaluate",
            "--checkpoint",
            ckpts[0],
            "--benchmark",
            f"otb={bench['otb']}",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "optim.base_lr=1",
        ]
    )
    assert code == 2 and "only tracker.* keys" in capsys.readouterr().err
    code = cli_main(["evaluate", "--checkpoint", ckpts[0], "--benchmark", f"otb={bench['otb']}", "--out",
                     str(tmp_path / "o"), "--title", "vot2018=my clips"])
    err = capsys.readouterr().err
    assert code == 2 and "--title 'vot2018=my clips': unknown name 'vot2018'; one of otb" in err, err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def plot_titles(monkeypatch) -> dict[str, list[str]]:
    """``{file name: the titles of its axes}`` of every plot saved while the test runs (one list per name,
    appended in order when several folders hold a plot of that name)."""
    from ocean.benchmarks import plots

    drawn: dict[str, list[str]] = {}
    real_save = plots.save

    def spy(fig, out_path):
        drawn.setdefault(Path(out_path).name, []).extend(ax.get_title() for ax in fig.axes)
        return real_save(fig, out_path)

    monkeypatch.setattr(plots, "save", spy)
    return drawn


def test_cli_title_names_the_data_in_the_plots(bench, ckpts, tmp_path, plot_titles):
    code = cli_main(["evaluate", "--checkpoint", ckpts[0], "--checkpoint", ckpts[1], "--benchmark",
                     f"otb={bench['otb']}", "--benchmark", f"lasot={bench['lasot']}", "--out", str(tmp_path / "o"),
                     "--local", "--no-mlflow", "--quiet", "--max-sequences", "1",
                     "--title", "otb=my clips (OTB protocol)"])
    assert code == 0
    titles = [t for per_file in plot_titles.values() for t in per_file]
    # each checkpoint's plots, both checkpoints' plots, and the metric per epoch (epochs 1 and 2)
    assert titles.count("Success plot of OPE on my clips (OTB protocol)") == 3
    assert titles.count("Success plot of OPE on LaSOT") == 3
    assert "my clips (OTB protocol): success AUC" in titles and "LaSOT: success AUC" in titles
    assert not any("OTB-100" in t for t in titles)


# ----------------------------------------------------------------------------------------------------------
# The local loop: identical to the sequential scorer and to `ocean score`


def test_local_loop_matches_sequential_tracker_and_ocean_score(bench, ckpts, tmp_path, plot_titles):
    from ocean.benchmarks import read_benchmark, run_one_pass, write_ope_result
    from ocean.checkpoint import load_model
    from ocean.config import layered_tracker_config
    from ocean.tracker import OceanTracker

    out = tmp_path / "eval"
    report = evaluate(
        EvaluateSettings(
            ckpts[:1],
            bench,
            str(out),
            local=True,
            log_mlflow=False,
            max_sequences=1,
            tracker_overrides={"window_influence": 0.3},
            progress=False,
            titles={"lasot": "synthetic LaSOT"},
        )
    )
    name = "checkpoint_e1"
    assert report["timing"]["sequences"] == 4 and report["timing"]["model_loads"] == 1
    assert report["failed"] == []

    # 1. The sequential scorer by hand: same tracker (OTB preset + override), same frames, 1 thread.
    seq = read_benchmark("otb", Path(bench["otb"]))[0]
    net, ocean_cfg = load_model(ckpts[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the checkpoint's tracker section (smoke: 3 scales), the OTB preset, the override
        cfg = layered_tracker_config(ocean_cfg.tracker, "otb", {"window_influence": 0.3})
        res = run_one_pass(OceanTracker(net, cfg), seq)
    finally:
        torch.set_num_threads(threads)
    expected = write_ope_result(tmp_path / "by_hand", "otb", seq.name, res.boxes_xywh)
    got = out / name / "otb" / "results" / f"{seq.name}.txt"
    assert got.read_bytes() == expected.read_bytes()
    assert report["scores"][ckpts[0]]["otb"]["tracker"]["window_influence"] == 0.3

    # 2. `ocean score` on the written files gives the summary's numbers, for every benchmark format.
    for b, root in bench.items():
        summary = json.loads((out / name / b / "summary.json").read_text())
        # with max_sequences the dataset has more sequences than were run: score through a 1-sequence copy
        assert summary["num_sequences"] == 1 and summary["rejected"] == {}
        scored = tmp_path / f"score_{b}.json"
        assert (
            cli_main(
                [
                    "score",
                    "--benchmark",
                    b,
                    "--dataset",
                    root,
                    "--results",
                    str(out / name / b / "results"),
                    "--json",
                    str(scored),
                ]
            )
            == 0
        )
        again = json.loads(scored.read_text())
        # the unevaluated sequences show up as rejected (no result file); the evaluated one scores the same
        assert set(again["per_sequence"]) == set(summary["per_sequence"])
        assert len(again["rejected"]) == 1
        for k in METRICS:
            assert again.get(k) == summary.get(k), (b, k)
        assert again["per_sequence"] == summary["per_sequence"]
    # the formats themselves: OTB/LaSOT 1-based, GOT-10k with a timing file, VOT trajectory codes
    first = np.loadtxt(got, delimiter=",")[0]
    np.testing.assert_allclose(first, seq.gt_xywh[0] + [1, 1, 0, 0])
    got10k_dir = out / name / "got10k" / "results"
    assert len(list(got10k_dir.glob("*/*_time.txt"))) == 1
    vot_files = list((out / name / "vot2018" / "results" / "baseline").glob("*/*_001.txt"))
    assert len(vot_files) == 1 and vot_files[0].read_text().splitlines()[0] == "1"
    # plots and tables
    for p in ("otb/success.png", "otb/precision.png", "got10k/success.png", "lasot/precision.png"):
        assert (out / name / p).stat().st_size > 1000
    assert not (out / name / "vot2018" / "success.png").exists()
    for p in ("lasot/norm_precision.png", "vot2018/eao_curve.png", "vot2018/accuracy_robustness.png"):
        assert (out / name / p).stat().st_size > 1000
    # `titles` names the data in its plots: the synthetic set is not LaSOT (nor the OTB files OTB-100)
    assert sorted(plot_titles["precision.png"]) == ["Precision plot of OPE on OTB-100",
                                                     "Precision plot of OPE on synthetic LaSOT"]
    rows = (out / "per_sequence.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("checkpoint,epoch,benchmark,sequence")


def test_a_failing_sequence_is_recorded_not_fatal(bench, ckpts, tmp_path):
    import shutil

    root = tmp_path / "otb"
    shutil.copytree(bench["otb"], root)
    frames = sorted((root / "Disc1" / "img").iterdir())
    frames[5].write_bytes(b"not a jpeg")  # the reader keeps the path; the tracker cannot read it
    report = evaluate(
        EvaluateSettings(
            ckpts[:1], {"otb": str(root)}, str(tmp_path / "o"), local=True, log_mlflow=False, progress=False
        )
    )
    assert [f["sequence"] for f in report["failed"]] == ["Disc1"]
    assert "cannot read image" in report["failed"][0]["error"]
    s = report["scores"][ckpts[0]]["otb"]
    assert s["num_sequences"] == 1 and "Diamond2" in s["per_sequence"] and "Disc1" in s["failed"]
    assert "Disc1" in s["rejected"]  # no result file: `ocean score` would reject it the same way


def test_got10k_test_split_is_tracked_for_the_server_not_scored(bench, ckpts, tmp_path):
    import shutil

    root = tmp_path / "test"
    shutil.copytree(bench["got10k"], root)
    for gt in root.glob("*/groundtruth.txt"):  # the test split ships only the first box
        gt.write_text(gt.read_text().splitlines()[0] + "\n")
    report = evaluate(
        EvaluateSettings(
            ckpts[:1],
            {"got10k": str(root)},
            str(tmp_path / "o"),
            local=True,
            log_mlflow=False,
            max_sequences=1,
            progress=False,
        )
    )
    s = report["scores"][ckpts[0]]["got10k"]
    assert s["num_sequences"] == 0 and s.get("ao") is None and report["failed"] == []
    ((name, why),) = s["rejected"].items()
    assert "evaluation server" in why
    boxes = np.loadtxt(
        tmp_path / "o" / "checkpoint_e1" / "got10k" / "results" / name / f"{name}_001.txt", delimiter=","
    )
    assert boxes.shape == (30, 4)  # every frame, 0-based, as the server expects
    with zipfile.ZipFile(s["submission"]) as z:  # the server's zip: a folder per sequence at its top level
        assert sorted(z.namelist()) == [f"{name}/{name}_001.txt", f"{name}/{name}_time.txt"]


def test_workers_fit_the_cluster(caplog):
    from pipelines.eval_workers import ClusterTooSmall, _fitting_workers

    assert _fitting_workers({"CPU": 8.0}, workers=2, n_items=10, cpus_per_worker=1.0, gpus_per_worker=0.0) == 2
    # capped by the cluster's CPUs and by the items, with a warning
    assert _fitting_workers({"CPU": 3.0}, workers=4, n_items=10, cpus_per_worker=1.5, gpus_per_worker=0.0) == 2
    assert "2 workers (cluster CPUs 3 / 1.5 per worker, 10 items)" in caplog.text
    assert _fitting_workers({"CPU": 8.0}, workers=4, n_items=3, cpus_per_worker=1.0, gpus_per_worker=0.0) == 3
    assert _fitting_workers({"CPU": 8.0, "GPU": 1.0}, 4, 10, cpus_per_worker=1.0, gpus_per_worker=1.0) == 1
    with pytest.raises(ClusterTooSmall, match="fewer than cpus_per_worker=4"):
        _fitting_workers({"CPU": 2.0}, 2, 10, cpus_per_worker=4.0, gpus_per_worker=0.0)
    with pytest.raises(ClusterTooSmall, match="no GPU"):
        _fitting_workers({"CPU": 8.0}, 2, 10, cpus_per_worker=1.0, gpus_per_worker=1.0)
