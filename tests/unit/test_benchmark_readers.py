"""Benchmark readers on tiny generated trees in each real layout, and on the real sample annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_trees import (
    IMAGE_WH,
    make_got10k_sequence,
    make_lasot_sequence,
    make_otb_sequence,
    make_vot_sequence,
    moving_boxes_xywh,
    write_frames,
)

from ocean.benchmarks.readers import (
    OTB_START_FRAMES,
    read_benchmark,
    read_got10k,
    read_lasot,
    read_lasot_toolkit_annotation,
    read_otb,
    read_vot,
)
from ocean.benchmarks.sequence import AnnotationError

SHARED = Path(__file__).resolve().parents[3] / "shared"
REAL = SHARED / "data" / "real_samples"


def test_otb_separators_one_based_two_targets_and_start_frame(tmp_path):
    gt = moving_boxes_xywh(4)
    make_otb_sequence(tmp_path, "Basketball", gt, sep=",")
    make_otb_sequence(tmp_path, "Car4", gt, sep="\t")
    make_otb_sequence(tmp_path, "Deer", gt, sep=" ")
    make_otb_sequence(tmp_path, "Jogging", gt, gt_file="groundtruth_rect.1.txt")
    make_otb_sequence(tmp_path, "Jogging", gt + [5, 0, 0, 0], gt_file="groundtruth_rect.2.txt")
    # Tiger1 starts at frame 6 (OTB2015.json): 8 images, 3 GT lines -> frames 6, 7, 8
    make_otb_sequence(tmp_path, "Tiger1", gt[:3], n_images=8)
    seqs = {s.name: s for s in read_otb(tmp_path)}
    assert sorted(seqs) == ["Basketball", "Car4", "Deer", "Jogging-1", "Jogging-2", "Tiger1"]
    for name in ("Basketball", "Car4", "Deer", "Jogging-1"):
        np.testing.assert_allclose(seqs[name].gt_xywh, gt)  # written 1-based, read 0-based
        assert len(seqs[name]) == 4 and seqs[name].present.all()
    np.testing.assert_allclose(seqs["Jogging-2"].gt_xywh[:, 0], gt[:, 0] + 5)
    t = seqs["Tiger1"]
    assert t.start_frame == 6 and [p.name for p in t.frames] == ["0006.jpg", "0007.jpg", "0008.jpg"]
    assert t.image_size == IMAGE_WH


def test_otb_errors_name_file_and_line(tmp_path):
    d = make_otb_sequence(tmp_path, "Bolt", moving_boxes_xywh(3))
    (d / "groundtruth_rect.txt").write_text("1,2,3,4\n1,2,x,4\n1,2,3,4\n")
    with pytest.raises(AnnotationError, match=r"groundtruth_rect\.txt:2: not a number"):
        read_otb(tmp_path)
    (d / "groundtruth_rect.txt").write_text("1,2,3,4\n1,2,3\n1,2,3,4\n")
    with pytest.raises(AnnotationError, match=r"groundtruth_rect\.txt:2: expected 4 values, got 3"):
        read_otb(tmp_path)
    (d / "groundtruth_rect.txt").write_text("1,2,3,4\n" * 5)  # more boxes than images
    with pytest.raises(AnnotationError, match="image 0004 is missing"):
        read_otb(tmp_path)


def test_vot_flat_and_color_polygons_and_boxes(tmp_path):
    poly = np.array([[10, 20, 30, 20, 30, 40, 10, 40]] * 3, dtype=float)
    make_vot_sequence(tmp_path, "ants1", poly, color_dir=False)
    make_vot_sequence(tmp_path, "bag", moving_boxes_xywh(3), color_dir=True)
    seqs = read_vot(tmp_path)
    assert [s.name for s in seqs] == ["ants1", "bag"]
    a, b = seqs
    assert a.gt_poly.shape == (3, 8)
    np.testing.assert_allclose(a.gt_xywh[0], [10, 20, 20, 20])  # axis-aligned extent
    assert b.gt_poly is None and b.vot_regions().shape == (3, 4)
    assert b.frames[0].parent.name == "color"
    assert read_benchmark("vot2019", tmp_path)[0].name == "ants1"


def test_vot_rejects_mixed_widths_and_wrong_counts(tmp_path):
    d = make_vot_sequence(tmp_path, "x", moving_boxes_xywh(3))
    (d / "groundtruth.txt").write_text("1,2,3,4\n1,2,3,4,5,6,7,8\n1,2,3,4\n")
    with pytest.raises(AnnotationError, match="mixes 4-value and 8-value"):
        read_vot(tmp_path)
    (d / "groundtruth.txt").write_text("1,2,3,4\n1,2,3,4\n")
    with pytest.raises(AnnotationError, match="2 lines for 3 frames"):
        read_vot(tmp_path)


def test_got10k_val_and_test(tmp_path):
    gt = moving_boxes_xywh(5)
    val = tmp_path / "val"
    make_got10k_sequence(val, "GOT-10k_Val_000001", gt, cover=np.array([8, 8, 0, 4, 8]))
    (s,) = read_got10k(val)
    np.testing.assert_allclose(s.gt_xywh, gt)  # 0-based, unchanged
    np.testing.assert_array_equal(s.present, [True, True, False, True, True])
    assert s.gt_complete and s.resolution_wh == IMAGE_WH
    test = tmp_path / "test"
    make_got10k_sequence(test, "GOT-10k_Test_000001", gt, test=True)
    (t,) = read_got10k(test)
    assert not t.gt_complete and len(t) == 5
    np.testing.assert_allclose(t.init_box_xywh, gt[0])
    assert np.isnan(t.gt_xywh[1:]).all()


def test_lasot_presence_from_flags_not_boxes(tmp_path):
    gt = moving_boxes_xywh(6)
    gt[2] = [-1, -1, 0, 0]  # written as the real "0,0,0,0" on an absent frame
    fo = [0, 0, 1, 0, 0, 0]
    oov = [0, 0, 0, 0, 1, 0]  # frame 4 is absent with an ordinary-looking box
    make_lasot_sequence(tmp_path, "airplane-1", gt, fo, oov)
    make_lasot_sequence(tmp_path, "coin-3", gt, [0] * 6, [0] * 6)
    seqs = {s.name: s for s in read_lasot(tmp_path)}
    np.testing.assert_array_equal(seqs["airplane-1"].present, [True, True, False, True, False, True])
    assert seqs["coin-3"].present.all()
    np.testing.assert_allclose(seqs["airplane-1"].gt_xywh[0], gt[0])
    (tmp_path / "testing_set.txt").write_text("coin-3\n")
    assert [s.name for s in read_lasot(tmp_path)] == ["coin-3"]
    (tmp_path / "testing_set.txt").write_text("coin-3\nyoyo-15\n")
    with pytest.raises(AnnotationError, match="yoyo-15"):
        read_lasot(tmp_path)


def test_lasot_flag_count_mismatch_is_an_error(tmp_path):
    d = make_lasot_sequence(tmp_path, "cat-1", moving_boxes_xywh(3), [0, 0, 0], [0, 0, 0])
    (d / "out_of_view.txt").write_text("0,0\n")
    with pytest.raises(AnnotationError, match="out_of_view.txt: 2 flags for 3 frames"):
        read_lasot(tmp_path)


def test_image_size_is_lazy_and_cached(tmp_path):
    make_vot_sequence(tmp_path, "s", moving_boxes_xywh(2))
    (s,) = read_vot(tmp_path)
    assert s._image_size is None
    write_frames(tmp_path / "s", [1], wh=(32, 16))  # overwritten before the first access
    assert s.image_size == (32, 16)
    assert s._image_size == (32, 16)


# --- real samples (skipped in a clone without ../shared) ------------------------------------------------


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real_samples not present")
def test_real_lasot_toolkit_annotations():
    annos = REAL / "lasot_annotations"
    gt, present = read_lasot_toolkit_annotation(annos, "coin-3")
    assert len(gt) == 1020 and int((~present).sum()) == 52
    absent = np.flatnonzero(~present) + 1  # 1-based frame numbers
    assert absent.min() == 529 and absent.max() == 1007
    gt, present = read_lasot_toolkit_annotation(annos, "shark-3")
    np.testing.assert_array_equal(np.flatnonzero(~present) + 1, np.arange(978, 986))
    gt, present = read_lasot_toolkit_annotation(annos, "airplane-1")
    assert present.all() and len(gt) == 2788
    np.testing.assert_allclose(gt[0], [366, 100, 41, 16])  # "367,101,41,16" 1-based


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real_samples not present")
def test_otb_start_frames_and_two_target_names_match_real_json(tmp_path):
    data = json.loads((REAL / "otb2015_annotations_json" / "OTB2015.json").read_text())
    starts = {}
    for v in data.values():
        first = int(Path(v["image_files"][0]).stem)
        if first != 1:
            starts[v["name"]] = first
        assert len(v["image_files"]) == len(v["gt_rect"])
    assert starts == OTB_START_FRAMES
    # two-target folders: keys jogging_1/2, skating2_1/2, human4_2 -> our <Seq>-<k>
    seq = data["jogging_2"]
    d = tmp_path / "Jogging"
    write_frames(d / "img", range(1, 4), digits=4)
    for k in ("1", "2"):
        rows = data[f"jogging_{k}"]["gt_rect"][:3]
        (d / f"groundtruth_rect.{k}.txt").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    seqs = {s.name: s for s in read_otb(tmp_path)}
    np.testing.assert_allclose(seqs["Jogging-2"].gt_xywh[0], np.array(seq["init_rect"]) - [1, 1, 0, 0])
