"""The benchmarks beyond OTB / VOT / GOT-10k / LaSOT (formats.md §2.5-§2.11): readers on the real clips in
../shared (skipped when absent) and on tiny trees written here in the real layouts, each toolkit's frame
counting (formats.md §2.8), the evaluation-server zips, `ocean score --submission` and `ocean evaluate`."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from benchmark_trees import write_frames

from jobs.cli import main
from ocean.benchmarks.readers import BENCHMARK_FAMILY, read_benchmark, read_uav_config_seqs
from ocean.benchmarks.results import read_ope_result, write_ope_result
from ocean.benchmarks.scoring import CONVENTIONS, HEADLINE, score_benchmark, score_tracks
from ocean.benchmarks.sequence import AnnotationError, Sequence
from ocean.benchmarks.submission import write_submission
from ocean.config import TRACKER_PRESETS

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_sequences"
NEW = ("lasot_ext", "uav123", "uav20l", "uav123_10fps", "dtb70", "nfs", "tnl2k", "trackingnet")


def _real(sub: str) -> Path:
    path = REAL / sub
    if not path.exists():
        pytest.skip(f"{path} not present (no ../shared in this clone)")
    return path


def _touch(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")  # the readers list frames, they do not open them


def _rows(path: Path, rows, sep=",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(sep.join(str(v) for v in r) + "\n" for r in rows))


# ------------------------------------------------------------------------------------------ real sequences


def test_real_uav123_10fps_dtb70_and_lasot_ext():
    [s] = read_benchmark("uav123_10fps", _real("uav123_10fps"))
    first = [float(v) for v in (REAL / "uav123_10fps/anno/UAV123_10fps/wakeboard7.txt").read_text().split("\n")[0].split(",")]
    assert (s.name, len(s), s.benchmark) == ("wakeboard7", 67, "uav")
    np.testing.assert_allclose(s.gt_xywh[0], [first[0] - 1, first[1] - 1, first[2], first[3]])  # 1-based file
    assert s.frames[0].name == "000001.jpg" and s.frames[-1].name == "000067.jpg" and s.present.all()
    assert s.image_size == (1280, 720)

    [d] = read_benchmark("dtb70", _real("dtb70"))
    assert (d.name, len(d), d.benchmark) == ("Surfing06", 106, "dtb70")
    np.testing.assert_allclose(d.gt_xywh[1], [721.5, 307, 41, 60])  # "722.5,308,41,60" in the file
    assert d.frames[0].name == "00001.jpg"

    [a] = read_benchmark("lasot_ext", _real("lasot"))  # LaSOT's layout (formats.md §2.11)
    assert (a.name, len(a)) == ("airplane-1", 600)


# ------------------------------------------------------------------------------------------ synthetic trees


def test_uav_parts_of_a_video_nan_rows_and_config_seqs(tmp_path):
    root = tmp_path / "UAV123_10fps"
    # uav1_2 starts at frame 519 of data_seq/UAV123_10fps/uav1 (UAV_START_FRAMES, the download's configSeqs.m)
    _rows(root / "anno/UAV123_10fps/uav1_2.txt", [(11, 21, 5, 6), ("NaN",) * 4, (13, 23, 5, 6)])
    _rows(root / "anno/UAV123_10fps/uav2.txt", [(1, 1, 4, 4), (2, 2, 4, 4)])
    _touch(root / "data_seq/UAV123_10fps/uav1", [f"{k:06d}.jpg" for k in range(517, 523)])
    _touch(root / "data_seq/UAV123_10fps/uav2", ["000001.jpg", "000002.jpg"])
    seqs = {s.name: s for s in read_benchmark("uav123_10fps", root)}
    u = seqs["uav1_2"]
    assert [p.name for p in u.frames] == ["000519.jpg", "000520.jpg", "000521.jpg"] and u.start_frame == 519
    assert u.present.tolist() == [True, False, True] and np.isnan(u.gt_xywh[1]).all()
    np.testing.assert_allclose(u.gt_xywh[0], [10, 20, 5, 6])
    # the download's own configSeqs.m wins over the table
    (root / "configSeqs.m").write_text(
        "seqs = {struct('name','uav1_2','path','D:\\data_seq\\UAV123_10fps\\uav1\\','startFrame',517,"
        "'endFrame',519,'nz',6,'ext','jpg','init_rect',[0,0,0,0]),...\n};\n")
    assert read_uav_config_seqs(root / "configSeqs.m") == {"uav1_2": ("uav1", 517, 519)}
    again = {s.name: s for s in read_benchmark("uav123_10fps", root)}
    assert again["uav1_2"].frames[0].name == "000517.jpg" and again["uav2"].start_frame == 1
    # a part whose frames are missing, and a NaN first box, are errors naming the file
    (root / "configSeqs.m").unlink()
    shutil.rmtree(root / "data_seq/UAV123_10fps/uav1")
    with pytest.raises(AnnotationError, match=r"uav1_2.txt: 3 boxes from frame 519 but image 000519.jpg"):
        read_benchmark("uav123_10fps", root)
    _rows(root / "anno/UAV123_10fps/uav2.txt", [("NaN",) * 4, (2, 2, 4, 4)])
    _touch(root / "data_seq/UAV123_10fps/uav1", [f"{k:06d}.jpg" for k in range(519, 522)])
    with pytest.raises(AnnotationError, match="uav2.txt: the first box"):
        read_benchmark("uav123_10fps", root)


def test_uav20l_reads_whole_videos_of_uav123(tmp_path):
    _rows(tmp_path / "anno/UAV20L/car1.txt", [(1, 1, 4, 4)] * 3)
    _rows(tmp_path / "anno/UAV123/car1_2.txt", [(1, 1, 4, 4)] * 2)
    _touch(tmp_path / "data_seq/UAV123/car1", [f"{k:06d}.jpg" for k in range(1, 4)] + ["000751.jpg", "000752.jpg"])
    [s] = read_benchmark("uav20l", tmp_path)
    assert s.name == "car1" and [p.name for p in s.frames] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    [p] = read_benchmark("uav123", tmp_path)  # car1_2 starts at 751 (pytracking's table)
    assert p.frames[0].name == "000751.jpg"
    with pytest.raises(AnnotationError, match="no anno/UAV123_10fps/"):
        read_benchmark("uav123_10fps", tmp_path)


def test_nfs_240_fps_annotation_beside_30_fps_frames(tmp_path):
    seq = tmp_path / "Gymnastics" / "30"
    _touch(seq / "Gymnastics", [f"{k:05d}.jpg" for k in range(1, 4)])
    lines = [f'1 {10 + f} 20 {40 + f} 60 {f} 0 0 0 "person"' for f in range(24)]  # 8 lines per 30 fps frame
    (seq / "Gymnastics.txt").write_text("\n".join(lines) + "\n")
    [s] = read_benchmark("nfs", tmp_path)
    assert (s.name, len(s), s.benchmark) == ("Gymnastics", 3, "nfs")
    np.testing.assert_allclose(s.gt_xywh, [[10, 20, 30, 40], [18, 20, 30, 40], [26, 20, 30, 40]])  # every 8th
    (seq / "Gymnastics.txt").write_text("\n".join(lines[:4]) + "\n")  # one box more than frames: trimmed
    assert len(read_benchmark("nfs", tmp_path)[0]) == 3
    (seq / "Gymnastics.txt").write_text("\n".join(lines[:2]) + "\n")  # one box fewer: frames trimmed
    assert len(read_benchmark("nfs", tmp_path)[0]) == 2
    (seq / "Gymnastics.txt").write_text("\n".join(lines[:1]) + "\n")  # two fewer: an error
    with pytest.raises(AnnotationError, match="1 boxes for 3 frames"):
        read_benchmark("nfs", tmp_path)
    (seq / "Gymnastics.txt").write_text("\n".join(lines[:2] + ["1 a b c d"]) + "\n")
    with pytest.raises(AnnotationError, match="Gymnastics.txt:3: expected"):
        read_benchmark("nfs", tmp_path)


def test_tnl2k_empty_boxes_are_absent(tmp_path):
    seq = tmp_path / "Bullet_video_08_done"
    _touch(seq / "imgs", [f"{k:05d}.png" for k in range(1, 5)])
    _rows(seq / "groundtruth.txt", [(5, 6, 7, 8), (0, 0, 0, 0), (5, 6, 7, 8)])
    (seq / "language.txt").write_text("the bullet\n")
    [s] = read_benchmark("tnl2k", tmp_path)
    assert len(s) == 3 and s.present.tolist() == [True, False, True] and s.frames[0].suffix == ".png"
    np.testing.assert_allclose(s.gt_xywh[0], [5, 6, 7, 8])  # used as written


def test_trackingnet_numeric_frame_order_and_test_split(tmp_path):
    test = tmp_path / "TEST"
    _touch(test / "frames" / "a1", [f"{k}.jpg" for k in range(12)])
    _rows(test / "anno" / "a1.txt", [(1, 2, 3, 4)])
    [s] = read_benchmark("trackingnet", tmp_path)  # the TrackingNet root means its TEST split
    assert [p.stem for p in s.frames] == [str(k) for k in range(12)]  # 10.jpg after 9.jpg, not after 1.jpg
    assert not s.gt_complete and np.isnan(s.gt_xywh[1:]).all()
    _rows(tmp_path / "TRAIN_0" / "anno" / "a1.txt", [(1, 2, 3, 4)] * 12)
    shutil.copytree(test / "frames", tmp_path / "TRAIN_0" / "frames")
    assert read_benchmark("trackingnet", tmp_path / "TRAIN_0")[0].gt_complete
    _rows(test / "anno" / "a1.txt", [(1, 2, 3, 4)] * 2)
    with pytest.raises(AnnotationError, match="2 lines for 12 frames"):
        read_benchmark("trackingnet", test)


def test_every_benchmark_has_a_preset_a_headline_a_convention_and_cli_choices():
    from jobs.evaluate import BENCHMARK_NAMES as EVALUATE
    from jobs.score import BENCHMARK_NAMES as SCORE

    assert set(BENCHMARK_FAMILY) == set(TRACKER_PRESETS) == set(HEADLINE) == set(CONVENTIONS)
    assert set(SCORE) == set(EVALUATE) == set(BENCHMARK_FAMILY)
    # facts §9.5: SOTS rows with SOTS's single size update for the benchmarks TK has no yaml for
    assert TRACKER_PRESETS["nfs"]["penalty_k"] == 0.144 and TRACKER_PRESETS["nfs"]["size_update"] == "single"
    assert TRACKER_PRESETS["lasot_ext"] == TRACKER_PRESETS["lasot"]


# ------------------------------------------------------------------------------------------ frame counting


def _seq(bench: str, gt, present=None) -> Sequence:
    return Sequence("s", bench, [Path(f"{k}.jpg") for k in range(len(gt))], np.array(gt, dtype=float), present=present)


GT4 = [[10, 10, 20, 20]] * 4


@pytest.mark.parametrize(
    ("bench", "gt", "present", "auc", "prec"),
    [
        # UAV: the NaN frame stays in the denominator, a miss for success, a hit for precision (pysot)
        ("uav123", GT4[:1] + [[np.nan] * 4] + GT4[:2], None, 0.75 * 20 / 21, 1.0),
        # LaSOT: the absent frame leaves the numerator only
        ("lasot_ext", GT4, [True, False, True, True], 0.75 * 20 / 21, 0.75),
        # TNL2K: the empty-box frame leaves numerator and denominator
        ("tnl2k", GT4[:1] + [[0, 0, 0, 0]] + GT4[:2], [True, False, True, True], 20 / 21, 1.0),
        # OTB rules (DTB70, NfS, TrackingNet): every frame, the empty box is a miss
        ("dtb70", GT4[:1] + [[0, 0, 0, 0]] + GT4[:2], None, 0.75 * 20 / 21, 0.75),
        ("nfs", GT4, None, 20 / 21, 1.0),
    ],
)
def test_absent_frames_follow_each_toolkit(bench, gt, present, auc, prec):
    seq = _seq(bench, gt, present)
    pred = np.array(GT4, dtype=float)  # perfect on every frame that has a box
    sc = score_tracks(bench, [seq], {"s": pred})
    assert sc["success_auc"] == pytest.approx(auc) and sc["precision"] == pytest.approx(prec)
    assert sc["convention"] == CONVENTIONS[bench] and "frame 1 counts" in sc["convention"]


def test_frame_1_counts_in_one_pass_but_not_in_got10k():
    gt = np.array([[10, 10, 20, 20]] * 5, dtype=float)
    pred = np.vstack([gt[:1], gt[1:] + [100, 100, 0, 0]])  # only frame 1 (the GT init box) overlaps
    one_pass = score_tracks("uav123", [_seq("uav", gt)], {"s": pred})
    assert one_pass["success_auc"] == pytest.approx(1 / 5 * 20 / 21)
    got = Sequence("s", "got10k", [Path(f"{k}.jpg") for k in range(5)], gt, resolution_wh=(640, 480))
    sc = score_tracks("got10k", [got], {"s": pred})
    assert sc["ao"] == 0.0 and "frame 1 excluded" in sc["convention"]


def test_test_splits_are_left_to_the_server():
    seq = Sequence("a1", "trackingnet", [Path(f"{k}.jpg") for k in range(3)],
                   np.vstack([[1, 2, 3, 4], np.full((2, 4), np.nan)]), gt_complete=False)
    sc = score_tracks("trackingnet", [seq], {"a1": np.ones((3, 4))})
    assert sc["num_sequences"] == 0 and "evaluation server" in sc["rejected"]["a1"]


# ------------------------------------------------------------------------------------------ result files, zips


@pytest.mark.parametrize(("bench", "shift"), [("uav123", 1), ("dtb70", 1), ("lasot_ext", 1), ("nfs", 0),
                                              ("tnl2k", 0), ("trackingnet", 0)])
def test_result_files_per_family(tmp_path, bench, shift):
    fam = BENCHMARK_FAMILY[bench]
    boxes = np.array([[1.5, 2, 3, 4], [5, 6, 7, 8]])
    path = write_ope_result(tmp_path, fam, "seq", boxes)
    assert path == tmp_path / "seq.txt"
    np.testing.assert_allclose(np.loadtxt(path, delimiter=","), boxes + [shift, shift, 0, 0])
    np.testing.assert_allclose(read_ope_result(tmp_path, fam, "seq"), boxes)


def test_submission_zips_have_the_servers_layout(tmp_path):
    res = tmp_path / "got"
    for name in ("GOT-10k_Test_000001", "GOT-10k_Test_000002"):
        write_ope_result(res, "got10k", name, np.ones((3, 4)), np.full(3, 0.01))
    z = write_submission("got10k", res, ["GOT-10k_Test_000002", "GOT-10k_Test_000001"], tmp_path / "g.zip")
    with zipfile.ZipFile(z) as f:
        assert sorted(f.namelist()) == [
            "GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt", "GOT-10k_Test_000001/GOT-10k_Test_000001_time.txt",
            "GOT-10k_Test_000002/GOT-10k_Test_000002_001.txt", "GOT-10k_Test_000002/GOT-10k_Test_000002_time.txt"]
        assert f.read("GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt").decode().splitlines()[0] == "1,1,1,1"
    tn = tmp_path / "tn"
    write_ope_result(tn, "trackingnet", "a1", np.ones((2, 4)))
    write_ope_result(tn, "trackingnet", "b2", np.ones((2, 4)))
    with zipfile.ZipFile(write_submission("trackingnet", tn, ["a1", "b2"], tmp_path / "t.zip")) as f:
        assert sorted(f.namelist()) == ["a1.txt", "b2.txt"]  # flat
    with pytest.raises(AnnotationError, match="no result files for 1 of the sequences, e.g. c3"):
        write_submission("trackingnet", tn, ["a1", "b2", "c3"], tmp_path / "x.zip")
    with pytest.raises(ValueError, match="no evaluation-server submission"):
        write_submission("otb", tn, ["a1"], tmp_path / "y.zip")


def test_ocean_score_uav_and_trackingnet_submission(tmp_path, capsys):
    root = tmp_path / "UAV123"
    gt = [(11, 21, 5, 6), ("NaN",) * 4, (13, 23, 5, 6)]
    _rows(root / "anno/UAV123/uav2.txt", gt)
    _touch(root / "data_seq/UAV123/uav2", [f"{k:06d}.jpg" for k in range(1, 4)])
    res = tmp_path / "res"
    _rows(res / "uav2.txt", [(11, 21, 5, 6), (50, 50, 5, 6), (13, 23, 5, 6)])  # 1-based, like the GT
    rc = main(["score", "--benchmark", "uav123", "--dataset", str(root), "--results", str(res),
               "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "s.json").read_text())
    assert rc == 0 and s["success_auc"] == pytest.approx(2 / 3 * 20 / 21) and s["precision"] == 1.0
    assert "convention: " in out and "NaN GT frames" in out and s == score_benchmark("uav123", root, res)
    assert main(["score", "--benchmark", "uav123", "--dataset", str(root), "--results", str(res), "--json",
                 str(tmp_path / "s.json"), "--submission", str(tmp_path / "u.zip")]) == 2
    assert "uav123 has no evaluation server" in capsys.readouterr().err

    test = tmp_path / "TEST"
    _touch(test / "frames" / "a1", [f"{k}.jpg" for k in range(3)])
    _rows(test / "anno" / "a1.txt", [(1, 2, 3, 4)])
    tres = tmp_path / "tres"
    write_ope_result(tres, "trackingnet", "a1", np.ones((3, 4)))
    rc = main(["score", "--benchmark", "trackingnet", "--dataset", str(test), "--results", str(tres),
               "--json", str(tmp_path / "t.json"), "--submission", str(tmp_path / "sub" / "tn.zip")])
    assert rc == 0 and "submission for the evaluation server" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "sub" / "tn.zip") as f:
        assert f.namelist() == ["a1.txt"]


def test_evaluate_writes_the_trackingnet_submission(ckpts, tmp_path):
    from pipelines.evaluate import EvaluateSettings, evaluate

    test = tmp_path / "TrackingNet" / "TEST"
    for name in ("a1", "b2"):
        write_frames(test / "frames" / name, range(11), digits=1)  # 0.jpg ... 10.jpg
        _rows(test / "anno" / f"{name}.txt", [(20, 14, 16, 12)])  # TEST: the first box only
    report = evaluate(EvaluateSettings(ckpts[:1], {"trackingnet": str(tmp_path / "TrackingNet")}, str(tmp_path / "o"),
                                       local=True, log_mlflow=False, progress=False))
    s = report["scores"][ckpts[0]]["trackingnet"]
    assert s["num_sequences"] == 0 and report["failed"] == [] and "TEST split" in s["convention"]
    assert Path(s["submission"]) == tmp_path / "o" / "checkpoint_e1" / "trackingnet" / "submission.zip"
    with zipfile.ZipFile(s["submission"]) as f:
        assert sorted(f.namelist()) == ["a1.txt", "b2.txt"]
        rows = [r.split(",") for r in f.read("a1.txt").decode().splitlines()]
        assert len(rows) == 11 and rows[0] == ["20", "14", "16", "12"]  # frame 1 is the given box, unshifted


def test_write_frames_helper_layout(tmp_path):  # the synthetic frames the DTB70-style tree needs
    paths = write_frames(tmp_path / "Seq" / "img", range(1, 3), digits=5)
    _rows(tmp_path / "Seq" / "groundtruth_rect.txt", [(2, 3, 10, 12), (3, 3, 10, 12)])
    [s] = read_benchmark("dtb70", tmp_path)
    assert s.frames == paths and s.image_size == (64, 48)
    np.testing.assert_allclose(s.gt_xywh[0], [1, 2, 10, 12])
