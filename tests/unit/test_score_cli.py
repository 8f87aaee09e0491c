"""Protocols with oracle / failing trackers, result-file round trips, and ``ocean score`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_trees import (
    make_got10k_sequence,
    make_lasot_sequence,
    make_otb_sequence,
    make_vot_sequence,
    moving_boxes_xywh,
)

from jobs.cli import main
from ocean.benchmarks.protocols import run_one_pass, run_vot_supervised
from ocean.benchmarks.readers import read_got10k, read_lasot, read_otb, read_vot
from ocean.benchmarks.results import (
    read_got10k_times,
    read_ope_result,
    read_vot_result,
    write_ope_result,
    write_vot_result,
)
from ocean.benchmarks.sequence import AnnotationError


class OracleTracker:
    """Returns the GT box of each frame (optionally shifted); checks the images it is given."""

    def __init__(self, gt_xywh: np.ndarray, shift=(0.0, 0.0)):
        self.gt, self.shift = gt_xywh, np.array([*shift, 0, 0])
        self.f = 0
        self.inits: list[tuple[int, np.ndarray]] = []

    def init(self, image, box_xywh):
        assert image.dtype == np.uint8 and image.ndim == 3
        self.inits.append((self.f, np.array(box_xywh)))

    def track(self, image):
        assert image.dtype == np.uint8
        self.f += 1
        return self.gt[self.f] + self.shift, 1.0


def test_one_pass_oracle_and_otb_round_trip(tmp_path):
    gt = moving_boxes_xywh(6)
    make_otb_sequence(tmp_path / "otb", "Walking", gt)
    (seq,) = read_otb(tmp_path / "otb")
    res = run_one_pass(OracleTracker(seq.gt_xywh), seq)
    np.testing.assert_allclose(res.boxes_xywh, gt)
    assert np.isnan(res.scores[0]) and np.all(res.scores[1:] == 1.0)
    assert res.times_s.shape == (6,) and res.load_s.shape == (6,) and np.all(res.load_s > 0)
    path = write_ope_result(tmp_path / "res", "otb", "Walking", res.boxes_xywh)
    # OTB result files are 1-based: first line is the 0-based GT + 1 on x, y
    first = [float(v) for v in path.read_text().splitlines()[0].split(",")]
    np.testing.assert_allclose(first, gt[0] + [1, 1, 0, 0])
    np.testing.assert_allclose(read_ope_result(tmp_path / "res", "otb", "Walking"), gt)


def test_result_round_trips_each_format(tmp_path):
    boxes = moving_boxes_xywh(4) + 0.25
    for family, base in (("lasot", 1), ("got10k", 0)):
        p = write_ope_result(tmp_path, family, "s-1", boxes, times_s=np.array([0.5, 0.01, 0.02, 0.03]))
        np.testing.assert_allclose(read_ope_result(tmp_path, family, "s-1"), boxes)
        first = [float(v) for v in p.read_text().splitlines()[0].split(",")]
        np.testing.assert_allclose(first, boxes[0] + [base, base, 0, 0])
    assert (tmp_path / "s-1" / "s-1_001.txt").is_file()
    np.testing.assert_allclose(read_got10k_times(tmp_path, "s-1"), [0.5, 0.01, 0.02, 0.03])
    traj = [np.array([1.0]), boxes[1], np.array([2.0]), np.array([0.0]), np.array([1.0])]
    p = write_vot_result(tmp_path / "trk", "bag", traj)
    assert p == tmp_path / "trk" / "baseline" / "bag" / "bag_001.txt"
    assert p.read_text().splitlines()[:3] == ["1", "11.25,8.75,16.25,12.25", "2"]
    back = read_vot_result(tmp_path / "trk", "bag")
    assert [r.tolist() for r in back] == [r.tolist() for r in traj]
    p.write_text("1\n3\n")
    with pytest.raises(AnnotationError, match="record 2 is the code 3"):
        read_vot_result(tmp_path / "trk", "bag")


def test_vot_protocol_failure_skip_and_reinit(tmp_path):
    n = 14
    gt = moving_boxes_xywh(n)
    make_vot_sequence(tmp_path / "seqs", "ball", gt)
    (seq,) = read_vot(tmp_path / "seqs")

    class Failing:
        """Tracks perfectly but loses the target on the 3rd track() call after each init."""

        def __init__(self):
            self.frame = None
            self.calls = 0
            self.init_frames = []

        def init(self, image, box_xywh):
            # box centre identifies the frame of this moving target (x grows 1 px per frame)
            cx = box_xywh[0] + box_xywh[2] / 2
            self.frame = int(round(cx - (gt[0, 0] + gt[0, 2] / 2)))
            self.init_frames.append(self.frame)
            self.calls = 0

        def track(self, image):
            self.frame += 1
            self.calls += 1
            if self.calls == 3:
                return np.array([60.0, 40.0, 2.0, 2.0]), 0.0
            return gt[self.frame].copy(), 1.0

    trk = Failing()
    res = run_vot_supervised(trk, seq)
    codes = [int(r[0]) if r.size == 1 else "box" for r in res.trajectory]
    # init 0, boxes 1-2, failure at 3, skip 4-7, re-init at 3 + 5 = 8, boxes 9-10, failure 11, skip 12-13
    assert codes == [1, "box", "box", 2, 0, 0, 0, 0, 1, "box", "box", 2, 0, 0]
    assert trk.init_frames == [0, 8]
    assert res.num_failures == 2
    assert np.all(res.times_s[[4, 5, 6, 7, 12, 13]] == 0) and np.all(res.load_s[[4, 5, 6, 7]] == 0)
    write_vot_result(tmp_path / "results" / "failing", "ball", res.trajectory)
    out = tmp_path / "score.json"
    rc = main(
        [
            "score",
            "--benchmark",
            "vot2018",
            "--dataset",
            str(tmp_path / "seqs"),
            "--results",
            str(tmp_path / "results" / "failing"),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["num_failures"] == 2
    assert s["robustness"] == pytest.approx(100 * 2 / 14)
    # every tracked frame lies in a 10-frame burn-in: no accuracy for the sequence (null in JSON), and
    # the overall value counts it as 0 as mmtracking's eval_sot_accuracy_robustness does
    assert s["per_sequence"]["ball"]["accuracy"] is None
    assert s["accuracy"] == 0.0
    assert s["eao_interval"] == [100, 356]


def test_score_cli_otb_lasot_got10k_with_plots(tmp_path):
    gt = moving_boxes_xywh(5)
    # OTB: one perfect sequence, one shifted by 30 px (IoU 0, precision miss)
    make_otb_sequence(tmp_path / "otb", "Bolt", gt)
    make_otb_sequence(tmp_path / "otb", "Coke", gt)
    res = tmp_path / "res_otb" / "oracle"
    for s in read_otb(tmp_path / "otb"):
        shift = (0.0, 0.0) if s.name == "Bolt" else (30.0, 0.0)
        r = run_one_pass(OracleTracker(s.gt_xywh, shift), s)
        write_ope_result(res, "otb", s.name, r.boxes_xywh)
    out = tmp_path / "otb.json"
    plots = tmp_path / "plots"
    rc = main(
        [
            "score",
            "--benchmark",
            "otb",
            "--dataset",
            str(tmp_path / "otb"),
            "--results",
            str(res),
            "--json",
            str(out),
            "--plots",
            str(plots),
        ]
    )
    assert rc == 0
    s = json.loads(out.read_text())
    # Bolt: all 5 frames IoU 1 -> AUC 20/21; Coke: frame 0 is the GT (IoU 1), 4 frames IoU 0
    assert s["per_sequence"]["Bolt"]["success_auc"] == pytest.approx(20 / 21)
    assert s["per_sequence"]["Coke"]["success_auc"] == pytest.approx((20 / 21) / 5)
    assert s["success_auc"] == pytest.approx((20 / 21 + 4 / 21) / 2)
    assert s["precision"] == pytest.approx((1.0 + 0.2) / 2)
    assert (plots / "success.png").stat().st_size > 1000 and (plots / "precision.png").is_file()
    assert "| oracle |" in (plots / "summary.md").read_text()

    # LaSOT: absent frames are dropped but stay in the denominator
    make_lasot_sequence(tmp_path / "lasot", "cup-1", gt, [0, 0, 1, 1, 0], [0] * 5)
    (seq,) = read_lasot(tmp_path / "lasot")
    write_ope_result(
        tmp_path / "res_lasot", "lasot", "cup-1", run_one_pass(OracleTracker(seq.gt_xywh), seq).boxes_xywh
    )
    out = tmp_path / "lasot.json"
    assert (
        main(
            [
                "score",
                "--benchmark",
                "lasot",
                "--dataset",
                str(tmp_path / "lasot"),
                "--results",
                str(tmp_path / "res_lasot"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())
    assert s["success_auc"] == pytest.approx((20 / 21) * 3 / 5)
    assert s["precision"] == pytest.approx(3 / 5)

    # GOT-10k val: first frame excluded, pooled over sequences, time file read
    val = tmp_path / "got" / "val"
    make_got10k_sequence(val, "GOT-10k_Val_000001", gt)
    make_got10k_sequence(val, "GOT-10k_Val_000002", gt)
    for s_ in read_got10k(val):
        shift = (0.0, 0.0) if s_.name.endswith("1") else (8.0, 0.0)  # IoU 8*12 / (2*192 - 96) = 1/3
        r = run_one_pass(OracleTracker(s_.gt_xywh, shift), s_)
        write_ope_result(tmp_path / "res_got", "got10k", s_.name, r.boxes_xywh, np.full(5, 0.01))
    out = tmp_path / "got.json"
    assert (
        main(
            [
                "score",
                "--benchmark",
                "got10k",
                "--dataset",
                str(val),
                "--results",
                str(tmp_path / "res_got"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())
    assert s["ao"] == pytest.approx((4 * 1.0 + 4 / 3) / 8)
    assert s["sr50"] == pytest.approx(0.5) and s["sr75"] == pytest.approx(0.5)
    assert s["speed_fps"] == pytest.approx(100.0)
    assert s["per_sequence"]["GOT-10k_Val_000002"]["ao"] == pytest.approx(1 / 3)


def test_score_cli_records_missing_results_and_strict(tmp_path, capsys):
    gt = moving_boxes_xywh(4)
    make_otb_sequence(tmp_path / "otb", "Bolt", gt)
    make_otb_sequence(tmp_path / "otb", "Coke", gt)
    res = tmp_path / "res"
    write_ope_result(res, "otb", "Bolt", gt)
    out = tmp_path / "s.json"
    args = [
        "score",
        "--benchmark",
        "otb",
        "--dataset",
        str(tmp_path / "otb"),
        "--results",
        str(res),
        "--json",
        str(out),
    ]
    assert main(args) == 0
    s = json.loads(out.read_text())
    assert s["num_sequences"] == 1 and "Coke" in s["rejected"] and "no result file" in s["rejected"]["Coke"]
    assert "1 sequences rejected" in capsys.readouterr().err
    assert main([*args, "--strict"]) == 1
    # GOT-10k test split cannot be scored locally: every sequence rejected with the reason, exit 1
    test = tmp_path / "got_test"
    make_got10k_sequence(test, "GOT-10k_Test_000001", gt, test=True)
    write_ope_result(tmp_path / "res_t", "got10k", "GOT-10k_Test_000001", gt)
    assert (
        main(
            [
                "score",
                "--benchmark",
                "got10k",
                "--dataset",
                str(test),
                "--results",
                str(tmp_path / "res_t"),
                "--json",
                str(out),
            ]
        )
        == 1
    )
    assert "evaluation server" in json.loads(out.read_text())["rejected"]["GOT-10k_Test_000001"]
    # a malformed dataset is a clear error, not a traceback
    assert (
        main(
            [
                "score",
                "--benchmark",
                "vot2018",
                "--dataset",
                str(tmp_path / "otb"),
                "--results",
                str(res),
                "--json",
                str(out),
            ]
        )
        == 2
    )


def test_score_tracks_in_memory_equals_the_result_files(tmp_path):
    """score_tracks on in-memory results gives exactly score_sequences' dict on the same results written
    as files (boxes on a 0.25 px grid survive the 4-decimal files), for every format; a prefix of the
    sequences scores that prefix; a sequence without a result is rejected."""
    from ocean.benchmarks.scoring import HEADLINE, score_sequences, score_tracks

    gt = moving_boxes_xywh(12)
    shifted = gt + [2.25, -1.5, 0.75, 0.0]
    make_otb_sequence(tmp_path / "otb", "Bolt", gt)
    make_otb_sequence(tmp_path / "otb", "Coke", gt)
    make_lasot_sequence(tmp_path / "lasot", "cup-1", gt, [0] * 4 + [1] * 2 + [0] * 6, [0] * 12)
    make_got10k_sequence(tmp_path / "got", "GOT-10k_Val_000001", gt)
    make_got10k_sequence(tmp_path / "got", "GOT-10k_Val_000002", gt)
    make_vot_sequence(tmp_path / "vot", "ball", gt)
    cases = {
        "otb": read_otb(tmp_path / "otb"),
        "lasot": read_lasot(tmp_path / "lasot"),
        "got10k": read_got10k(tmp_path / "got"),
        "vot2018": read_vot(tmp_path / "vot"),
    }
    times = np.array([0.5, *([0.02] * 11)])
    for bench, seqs in cases.items():
        folder = tmp_path / "res" / bench
        tracks = {}
        for i, s in enumerate(seqs):
            boxes = shifted if i % 2 else s.gt_xywh
            if bench == "vot2018":
                traj = [np.array([1.0]), *boxes[1:4], np.array([2.0]), *[np.array([0.0])] * 4, np.array([1.0])]
                tracks[s.name] = [*traj, *boxes[10:]]
                write_vot_result(folder, s.name, tracks[s.name])
            else:
                tracks[s.name] = boxes
                write_ope_result(folder, bench, s.name, boxes, times)
        in_memory = score_tracks(bench, seqs, tracks, {s.name: times for s in seqs})
        from_files = score_sequences(bench, seqs, folder)
        assert in_memory == from_files, bench
        assert json.dumps(in_memory) == json.dumps(from_files)  # same key order too
        # 12 frames: shorter than any VOT EAO interval, so the EAO is undefined (None); robustness is not
        key = "robustness" if bench == "vot2018" else HEADLINE[bench]
        assert in_memory[key] is not None and in_memory["rejected"] == {}
        first = score_tracks(bench, seqs[:1], tracks, {s.name: times for s in seqs})
        assert first == score_sequences(bench, seqs[:1], folder) and first["num_sequences"] == 1
    # GOT-10k without times: no speed, same accuracy
    got = score_tracks("got10k", cases["got10k"], {s.name: gt for s in cases["got10k"]})
    assert "speed_fps" not in got and got["ao"] == pytest.approx(1.0)
    # a prefix of the sequences, as a tuning trial scores while it runs
    bolt = score_tracks("otb", cases["otb"][:1], {"Bolt": gt})
    assert bolt["num_sequences"] == 1 and bolt["success_auc"] == pytest.approx(20 / 21)
    # a missing track, a wrong length, and a reason given by the caller
    s = score_tracks("otb", cases["otb"], {"Bolt": gt[:5]}, rejected={"Coke": "unreadable"})
    assert s["num_sequences"] == 0 and "success_auc" not in s
    assert s["rejected"] == {"Bolt": "5 result lines for 12 frames", "Coke": "unreadable"}
    s = score_tracks("otb", cases["otb"], {"Coke": gt})
    assert list(s["per_sequence"]) == ["Coke"] and "no result for sequence Bolt" in s["rejected"]["Bolt"]
