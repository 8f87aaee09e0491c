"""``ocean.integrations.got10k`` run by the real got10k toolkit (``ExperimentOTB``) on a local OTB set made of
real OTB clips (8 frames each): the toolkit's report equals ``ocean score`` on the same result files, the boxes
are those of the project's own tracker, and nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import got10k.datasets.otb
import numpy as np
import pytest
from conftest import SHARED

from jobs.cli import main
from ocean.benchmarks.protocols import track_sequence
from ocean.benchmarks.readers import read_benchmark
from ocean.checkpoint import load_model
from ocean.config import layered_tracker_config
from ocean.integrations import benchmark_key
from ocean.integrations.got10k import OceanTracker, is_one_based, local_otb_experiment

OTB = SHARED / "data" / "real_sequences" / "otb"
FRAMES = 8


def _no_download(*args, **kwargs):
    raise AssertionError(f"the got10k toolkit tried to download {args}")


@pytest.fixture(scope="module")
def otb_root(tmp_path_factory) -> Path:
    """Girl (tab-separated, CRLF ground truth) and Skiing, their first FRAMES frames, in OTB's layout."""
    if not OTB.is_dir():
        pytest.skip(f"{OTB} is absent (the shared real sequences)")
    root = tmp_path_factory.mktemp("otb")
    for name in ("Girl", "Skiing"):
        (root / name / "img").mkdir(parents=True)
        for f in sorted((OTB / name / "img").iterdir())[:FRAMES]:
            shutil.copy(f, root / name / "img" / f.name)
        lines = (OTB / name / "groundtruth_rect.txt").read_bytes().splitlines(keepends=True)[:FRAMES]
        (root / name / "groundtruth_rect.txt").write_bytes(b"".join(lines))
    return root


def test_benchmark_names_and_origin():
    assert [benchmark_key(n) for n in ("OTB2015", "otb", "GOT-10k", "VOT2018", None)] == \
        ["otb", "otb", "got10k", "vot2018", None]
    with pytest.raises(ValueError, match="unknown benchmark 'OTB2013'"):
        benchmark_key("OTB2013")
    # OTB / LaSOT / UAV / DTB70 ground truth is 1-based, GOT-10k and VOT 0-based (formats.md §0)
    assert [is_one_based(n) for n in ("OTB2015", "lasot", "uav123", "dtb70", "GOT-10k", "vot2018", None)] == \
        [True, True, True, True, False, False, False]


def test_experiment_otb_report_equals_ocean_score(otb_root, ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(got10k.datasets.otb, "download", _no_download)
    from got10k.experiments import ExperimentOTB

    with pytest.raises(AssertionError, match="tried to download"):  # why local_otb_experiment exists
        ExperimentOTB(str(otb_root), version=2015, result_dir=str(tmp_path / "r0"), report_dir=str(tmp_path / "p0"))

    experiment = local_otb_experiment(str(otb_root), 2015, str(tmp_path / "results"), str(tmp_path / "reports"))
    tracker = OceanTracker(ckpts[0], benchmark="OTB2015", device="cpu")
    assert tracker.cfg == layered_tracker_config(load_model(ckpts[0])[1].tracker, "otb")
    experiment.run(tracker)
    overall = experiment.report([tracker.name])["Ocean"]["overall"]
    result_dir = tmp_path / "results" / "OTB2015" / "Ocean"
    assert sorted(p.name for p in result_dir.glob("*.txt")) == ["Girl.txt", "Skiing.txt"]

    capsys.readouterr()
    assert main(["score", "--benchmark", "otb", "--dataset", str(otb_root), "--results", str(result_dir),
                 "--json", str(tmp_path / "score.json")]) == 0
    ours = json.loads((tmp_path / "score.json").read_text())
    assert ours["success_auc"] == pytest.approx(overall["success_score"], abs=1e-12)
    assert ours["precision"] == pytest.approx(overall["precision_score"], abs=1e-12)
    assert 0 < ours["success_auc"] < 1  # the boxes are neither all right nor all wrong: the test can fail

    # the toolkit's boxes are what `ocean evaluate` tracks on the same frames (1-based in OTB's files)
    net, cfg = load_model(ckpts[0])
    for seq in read_benchmark("otb", otb_root):
        mine = track_sequence(net, layered_tracker_config(cfg.tracker, "otb"), "otb", seq)["boxes_xywh"]
        toolkit = np.loadtxt(result_dir / f"{seq.name}.txt", delimiter=",")
        np.testing.assert_allclose(toolkit, mine + [1, 1, 0, 0], atol=6e-4)  # written with %.3f


@pytest.fixture(scope="module")
def got10k_root(bench, tmp_path_factory) -> Path:
    """The synthetic GOT-10k val split's first sequence, its first FRAMES frames (labels cut to match)."""
    src = Path(bench["got10k"])
    name = (src / "list.txt").read_text().split()[0]
    root = tmp_path_factory.mktemp("got10k")
    seq = root / "val" / name
    seq.mkdir(parents=True)
    (root / "val" / "list.txt").write_text(name + "\n")
    for f in sorted((src / name).glob("*.jpg"))[:FRAMES]:
        shutil.copy(f, seq / f.name)
    for f in (src / name).iterdir():
        if f.suffix in (".txt", ".label"):
            (seq / f.name).write_text("".join(f.read_text().splitlines(keepends=True)[:FRAMES]))
        elif f.suffix == ".ini":
            shutil.copy(f, seq / f.name)
    return root


def test_experiment_got10k_val_report_equals_ocean_score(got10k_root, ckpts, tmp_path, capsys):
    """GOT-10k's 0-based boxes, cover labels and clipping (formats.md §2.3), on synthetic val frames: the
    tracker's own results, then (an untrained tracker loses the target at once) the ground truth jittered."""
    from got10k.experiments import ExperimentGOT10k

    experiment = ExperimentGOT10k(str(got10k_root), subset="val", result_dir=str(tmp_path / "results"),
                                  report_dir=str(tmp_path / "reports"))
    tracker = OceanTracker(ckpts[0], benchmark="GOT-10k", device="cpu")
    assert not tracker.shift.any()
    experiment.run(tracker)
    result_dir = tmp_path / "results" / "GOT-10k" / "Ocean"
    net, cfg = load_model(ckpts[0])
    (seq,) = read_benchmark("got10k", got10k_root / "val")
    mine = track_sequence(net, layered_tracker_config(cfg.tracker, "got10k"), "got10k", seq)["boxes_xywh"]
    boxes_file = result_dir / seq.name / f"{seq.name}_001.txt"
    np.testing.assert_allclose(np.loadtxt(boxes_file, delimiter=","), mine, atol=6e-4)  # 0-based, %.3f

    rng = np.random.default_rng(0)
    gt = np.loadtxt(got10k_root / "val" / seq.name / "groundtruth.txt", delimiter=",")
    for results in ("tracker", "jittered ground truth"):
        if results != "tracker":
            jitter = rng.normal(0.0, 0.15, gt.shape) * gt[:, [2, 3, 2, 3]]
            np.savetxt(boxes_file, gt + jitter, fmt="%.3f", delimiter=",")
        overall = experiment.report([tracker.name])["Ocean"]["overall"]
        capsys.readouterr()
        assert main(["score", "--benchmark", "got10k", "--dataset", str(got10k_root / "val"), "--results",
                     str(result_dir), "--json", str(tmp_path / "score.json")]) == 0
        ours = json.loads((tmp_path / "score.json").read_text())
        assert ours["ao"] == pytest.approx(overall["ao"], abs=1e-12), results
        assert ours["sr50"] == pytest.approx(overall["sr"], abs=1e-12), results
    assert 0.2 < ours["ao"] < 0.95 and 0 < ours["sr50"] < 1  # the jittered boxes are partly right
