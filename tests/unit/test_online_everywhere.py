"""`tracker.online=true` in every tracking command and on every benchmark layout, the official online VOT
configuration (facts §10.4), and how an evaluation counts failed sequences (every one failed: exit 1).

The evaluations run the real online module on tiny trees of the real layouts (tests/benchmark_trees.py,
8 frames of 64 x 48) with an untrained smoke checkpoint, the online module shrunk by FAST_ONLINE so that
each sequence takes a fraction of a second. Ray and MLflow: tests/integration/test_evaluate_online.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from benchmark_trees import (
    FAST_ONLINE,
    make_got10k_sequence,
    make_lasot_sequence,
    make_otb_sequence,
    make_vot_sequence,
    moving_boxes_xywh,
    vot_polygons,
)

from jobs.cli import main as cli_main
from ocean.config import ONLINE_TRACKER_PRESETS, TRACKER_PRESETS, TrackerConfig, layered_tracker_config

FRAMES = 8


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, str]:
    """One 8-frame sequence in each benchmark layout (formats.md §2)."""
    root = tmp_path_factory.mktemp("trees")
    boxes = moving_boxes_xywh(FRAMES)
    make_otb_sequence(root / "otb", "Walk", boxes)
    make_vot_sequence(root / "vot", "walk", vot_polygons(boxes))
    make_got10k_sequence(root / "got10k", "GOT-10k_Val_000001", boxes)
    make_lasot_sequence(root / "lasot", "walker-1", boxes, [0] * FRAMES, [0] * FRAMES)
    return {"otb": str(root / "otb"), "vot2018": str(root / "vot"), "got10k": str(root / "got10k"),
            "lasot": str(root / "lasot")}


def _evaluate(ckpt: str, benchmarks: dict[str, str], out: Path, *extra: str) -> int:
    args = ["evaluate", "--checkpoint", ckpt, "--out", str(out), "--local", "--no-mlflow", *extra]
    for name, root in benchmarks.items():
        args += ["--benchmark", f"{name}={root}"]
    for item in FAST_ONLINE:
        args += ["--set", item]
    return cli_main(args)


# ----------------------------------------------------------------------------------------------------------
# The official online configuration


def test_online_on_a_vot_preset_takes_the_official_online_entry():
    on = layered_tracker_config(None, "vot2018", ["tracker.online=true"])
    # VOT2018ON of facts §9.3, no p_o (facts §10.4), omega' = online_ratio
    assert (on.penalty_k, on.lr, on.window_influence, on.small_sz, on.big_sz) == (0.187, 0.8, 0.64, 271, 287)
    assert on.online and not on.use_align and on.online_weight == 0.5 and on.size_update == "double"
    on19 = layered_tracker_config(None, "vot2019", ["tracker.online=true"])
    assert (on19.penalty_k, on19.lr, on19.window_influence, on19.big_sz, on19.online_weight) == (
        0.06, 0.644, 0.484, 287, 0.7)
    # overrides still come last: a tuned value, or p_o on purpose (then fused as TK `update` would)
    mine = layered_tracker_config(None, "vot2018", ["tracker.online=true", "tracker.penalty_k=0.05",
                                                    "tracker.use_align=true"])
    assert mine.penalty_k == 0.05 and mine.use_align and mine.lr == 0.8
    # online from the checkpoint's own section selects the entry as well
    assert layered_tracker_config(TrackerConfig(online=True), "vot2018").penalty_k == 0.187
    # offline, and the benchmarks without an online entry, keep their preset (with the online map on top)
    assert layered_tracker_config(None, "vot2018").use_align and layered_tracker_config(None, "vot2018").ratio == 0.93
    otb = layered_tracker_config(None, "otb", ["tracker.online=true"])
    assert otb.online and otb.penalty_k == TRACKER_PRESETS["otb"]["penalty_k"]
    assert set(ONLINE_TRACKER_PRESETS) == {"vot2018", "vot2019"}


# ----------------------------------------------------------------------------------------------------------
# ocean evaluate and ocean track with the online module


def test_evaluate_online_on_every_layout(trees, ckpts, tmp_path, capsys):
    out = tmp_path / "o"
    assert _evaluate(ckpts[0], trees, out) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "evaluation.json").read_text())
    assert report["failed"] == [] and report["sequences_total"] == 4
    for bench in trees:
        sc = report["scores"][ckpts[0]][bench]
        assert sc["num_sequences"] == 1 and sc["failed"] == {} and sc["tracker"]["online"] is True
        assert sc["tracker"]["online_params"]["sample_size"] == 64
        assert f"| {bench} | 1 | 0 |" in printed  # sequences scored, failed
    vot = report["scores"][ckpts[0]]["vot2018"]["tracker"]
    assert vot["use_align"] is False and vot["penalty_k"] == 0.187  # VOT2018ON, facts §10.4
    for bench in ("otb", "got10k", "lasot"):  # every frame has a box
        assert report["scores"][ckpts[0]][bench]["per_sequence"]
    vot_file = next((out / "checkpoint_e1" / "vot2018" / "results").rglob("*_001.txt"))
    assert len(vot_file.read_text().splitlines()) == FRAMES


def test_track_online_with_a_vot_preset(trees, ckpts, tmp_path):
    out = tmp_path / "boxes.txt"
    args = ["track", "--checkpoint", ckpts[0], "--frames", str(Path(trees["otb"]) / "Walk" / "img"),
            "--init", "10,8,16,12", "--out", str(out), "--benchmark", "vot2018", "--no-progress"]
    for item in FAST_ONLINE:
        args += ["--set", item]
    assert cli_main(args) == 0
    boxes = np.loadtxt(out, delimiter=",")
    assert boxes.shape == (FRAMES, 4) and np.isfinite(boxes).all()


# ----------------------------------------------------------------------------------------------------------
# Failed sequences


def test_partial_failures_are_counted_and_all_failed_exits_1(trees, ckpts, tmp_path, capsys, caplog):
    root = tmp_path / "otb"
    shutil.copytree(trees["otb"], root)
    make_otb_sequence(root, "Run", moving_boxes_xywh(FRAMES))
    sorted((root / "Walk" / "img").iterdir())[3].write_bytes(b"not a jpeg")  # the tracker cannot read it
    assert _evaluate(ckpts[0], {"otb": str(root)}, tmp_path / "part") == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "part" / "evaluation.json").read_text())
    assert [f["sequence"] for f in report["failed"]] == ["Walk"] and report["sequences_total"] == 2
    assert "| otb | 1 | 1 |" in printed
    assert "1 of 2 sequences failed" in caplog.text
    # --strict turns a partial failure into status 1
    assert _evaluate(ckpts[0], {"otb": str(root)}, tmp_path / "part", "--strict") == 1

    sorted((root / "Run" / "img").iterdir())[3].write_bytes(b"not a jpeg")
    caplog.clear()
    assert _evaluate(ckpts[0], {"otb": str(root)}, tmp_path / "all") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith("every one of the 2 sequences failed") and "cannot read image" in errors[0]


# ----------------------------------------------------------------------------------------------------------
# ocean tune-tracker --set / --config


def test_tune_tracker_takes_tracker_settings(trees, ckpts, tmp_path, capsys):
    from ocean.checkpoint import load_model
    from ocean.config import tracker_file_overrides
    from ocean.tuning import best_tracker_json, evaluate_config
    from pipelines.tune_tracker import TuneTrackerSettings, _prepare

    common = ["tune-tracker", "--checkpoint", ckpts[0], "--benchmark", f"otb={trees['otb']}",
              "--out", str(tmp_path / "t")]
    assert cli_main([*common, "--set", "tracker.online_params.sample_size=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tracker.online_params.sample_size" in err
    assert cli_main([*common, "--set", "model.head.align=false"]) == 2
    assert "only tracker.* keys" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("tracker:\n  online_params:\n    feature_dim: 8\n")
    assert cli_main([*common, "--config", str(config), "--set", "tracker.lr=2"]) == 2
    assert "tracker.lr" in capsys.readouterr().err

    # what a trial runs (pipelines.tune_trials.tracker_trial, without the Tune session and its network
    # cache): the defaults of the search carry the online settings; best_tracker.json keeps them
    search = _prepare(TuneTrackerSettings(ckpts[0], "otb", trees["otb"], str(tmp_path / "t"),
                                          tracker_overrides=FAST_ONLINE))
    tracker = search.setup.tracker(search.setup.defaults)
    assert tracker.online and tracker.online_params.sample_size == 64 and tracker.penalty_k == 0.087
    score = evaluate_config(load_model(ckpts[0])[0], tracker, "otb", search.sequences)
    assert 0.0 <= score <= 1.0
    saved = tmp_path / "best_tracker.json"
    saved.write_text(json.dumps(best_tracker_json(tracker)))
    again = layered_tracker_config(None, "otb", tracker_file_overrides(str(saved)))
    assert again == tracker


def test_the_ablation_online_row_scores_on_vot(trees, tmp_path):
    """The "+ online update" row of `ocean ablate` (Table 4): its checkpoint is the object-aware row's training
    (align head built), its evaluation the row's tracker overrides on VOT2018, as pipelines.ablate_trial runs it."""
    import torch

    from ocean.ablation import plan_rows
    from ocean.checkpoint import save_checkpoint
    from ocean.config import apply_overrides, smoke
    from ocean.model import build_model
    from pipelines.evaluate import EvaluateSettings, evaluate

    rows = {r.spec.key: r for r in plan_rows("components", smoke(), ["got10k"], include_online=True,
                                             log=lambda *a: None)}
    trained = apply_overrides(smoke(), [o for o in rows["online"].overrides if not o.startswith("tracker.")])
    assert trained.model.head.align
    torch.manual_seed(5)
    ckpt = str(tmp_path / "object_aware.pt")
    save_checkpoint(ckpt, build_model(trained.model), trained, epoch=1)
    overrides = rows["online"].tracker_overrides + [o for o in FAST_ONLINE if o.startswith("tracker.online_params")]
    report = evaluate(EvaluateSettings([ckpt], {"vot2018": trees["vot2018"]}, str(tmp_path / "o"), local=True,
                                       log_mlflow=False, progress=False, tracker_overrides=overrides))
    sc = report["scores"][ckpt]["vot2018"]
    assert report["failed"] == [] and sc["num_sequences"] == 1 and isinstance(sc["accuracy"], float)
    assert sc["tracker"]["online"] and not sc["tracker"]["use_align"] and sc["tracker"]["penalty_k"] == 0.187
