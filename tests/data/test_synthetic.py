"""Synthetic generator: determinism, layouts and flag files, benchmark coordinate conventions, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep.synthetic import SIZES, generate
from data_prep.synthetic_scene import SHAPES, render_scene, shape_mask

ANNOTATION_SUFFIXES = {".txt", ".label", ".ini", ".xml", ".json", ".csv", ".tag"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiny")
    return out, generate(out, seed=7, size="tiny", broken=True)


def _annotation_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in ANNOTATION_SUFFIXES}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, tiny: tuple[Path, dict]) -> None:
    out, _ = tiny
    again = tmp_path / "again"
    generate(again, seed=7, size="tiny", broken=True)
    a, b = _annotation_files(out), _annotation_files(again)
    assert len(a) > 50 and a == b
    jpgs = sorted(p.relative_to(out) for p in (out / "got10k").rglob("*.jpg"))
    assert all((out / p).read_bytes() == (again / p).read_bytes() for p in jpgs[:20])
    other = tmp_path / "other"
    generate(other, seed=8, size="tiny")
    c = _annotation_files(other)
    assert c["got10k/train/GOT-10k_Train_000001/groundtruth.txt"] != a["got10k/train/GOT-10k_Train_000001/groundtruth.txt"]


def test_shape_masks_touch_every_edge() -> None:
    for shape in SHAPES:
        m = shape_mask(shape, 32) > 0.05  # anti-aliased: a triangle's apex is a partial pixel
        ys, xs = np.nonzero(m)
        assert (xs.min(), xs.max(), ys.min(), ys.max()) == (0, 31, 0, 31), shape


def test_scene_flags_and_first_frame() -> None:
    rng = np.random.default_rng(3)
    s = render_scene(rng, 30, (256, 192), n_targets=2)
    assert len(s.frames) == 30 and s.frames[0].shape == (192, 256, 3) and s.frames[0].dtype == np.uint8
    assert s.boxes_xywh.shape == (2, 30, 4) and not s.absent[:, 0].any()
    assert (s.absent == (s.out_of_view | s.full_occlusion)).all()
    assert not (s.out_of_view & s.full_occlusion).any()
    # out of view means no overlap of the box with the image
    x, y, w, h = np.moveaxis(s.boxes_xywh, -1, 0)
    overlaps = (x + w > 0) & (y + h > 0) & (x < 256) & (y < 192)
    assert (~overlaps <= s.out_of_view).all()


def test_targets_are_drawn_where_the_box_says() -> None:
    """With a flat background and no distractors, the pixels that changed are the target's tight box."""
    rng = np.random.default_rng(0)
    s = render_scene(rng, 1, (128, 96), n_distractors=0, events=False)
    bg_rng = np.random.default_rng(0)
    s2 = render_scene(bg_rng, 1, (128, 96), n_targets=0, n_distractors=0, events=False)
    diff = np.abs(s.frames[0].astype(int) - s2.frames[0].astype(int)).sum(-1) > 30
    ys, xs = np.nonzero(diff)
    x, y, w, h = s.boxes_xywh[0, 0]
    assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
    assert xs.max() - xs.min() >= w - 4 and ys.max() - ys.min() >= h - 4


def test_training_layouts_have_real_file_names(tiny: tuple[Path, dict]) -> None:
    out, m = tiny
    n = SIZES["tiny"].frames
    seq = out / "got10k" / "train" / "GOT-10k_Train_000001"
    for f in ("00000001.jpg", f"{n:08d}.jpg", "groundtruth.txt", "absence.label", "cover.label",
              "cut_by_image.label", "meta_info.ini"):
        assert (seq / f).is_file(), f
    assert (seq / "meta_info.ini").read_text().startswith("[METAINFO]\n")
    absent = np.array([int(v) for v in (seq / "absence.label").read_text().split()])
    cover = np.array([int(v) for v in (seq / "cover.label").read_text().split()])
    assert len(absent) == len(cover) == n and (cover[absent == 1] == 0).all()
    assert (out / "got10k" / "val" / "list.txt").read_text().splitlines()[0] == "GOT-10k_Val_000001"
    lasot = sorted((out / "lasot").glob("*/*-1"))[0]
    assert len((lasot / "full_occlusion.txt").read_text().splitlines()) == 1  # one comma-separated line
    assert (out / "coco" / "train2017").is_dir() and (out / "coco" / "annotations" / "instances_train2017.json").is_file()
    assert (out / "vid" / "Data" / "VID" / "train" / "ILSVRC2015_VID_train_0000" / "ILSVRC2015_train_00000000" /
            "000000.JPEG").is_file()
    csv_first = (out / "ytbb" / "yt_bb_detection_train.csv").read_text().splitlines()[0].split(",")
    assert len(csv_first) == 10 and csv_first[1] == "0"  # no header line
    if "videos" in m["ytbb_media"]:
        video = sorted((out / "ytbb" / "videos").glob("*.mp4"))[0]
        cap = cv2.VideoCapture(str(video))
        spec = SIZES["tiny"]
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == spec.ytbb_seconds * spec.ytbb_fps
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == spec.frame_size
        cap.release()
    # targets do leave / get hidden somewhere in the training data, and the flags say so
    total_absent = sum(int(v) for p in (out / "got10k").rglob("absence.label") for v in p.read_text().split())
    assert total_absent > 0


def test_benchmark_layouts(tiny: tuple[Path, dict]) -> None:
    out, m = tiny
    n = SIZES["tiny"].frames
    otb = m["benchmarks"]["otb"]
    for name in otb["sequences"]:
        seq = out / "benchmarks" / "otb" / name
        assert (seq / "img" / "0001.jpg").is_file() and (seq / "img" / f"{n:04d}.jpg").is_file()
        lines = (seq / "groundtruth_rect.txt").read_text().splitlines()
        assert len(lines) == n
    vot = out / "benchmarks" / "vot2018" / "sequences"
    names = (vot / "list.txt").read_text().split()
    assert names == m["benchmarks"]["vot2018"]["sequences"]
    assert (vot / names[0] / "color" / "00000001.jpg").is_file() and (vot / names[1] / "00000001.jpg").is_file()
    poly = [float(v) for v in (vot / names[0] / "groundtruth.txt").read_text().splitlines()[0].split(",")]
    assert len(poly) == 8 and poly[0] == poly[6] and poly[1] == poly[3] and poly[2] == poly[4]
    got = out / "benchmarks" / "got10k" / "val"
    assert (got / "list.txt").read_text().split() == m["benchmarks"]["got10k"]["sequences"]
    lasot = out / "benchmarks" / "lasot"
    for name in (lasot / "testing_set.txt").read_text().split():
        seq = lasot / name.rsplit("-", 1)[0] / name
        for f in ("groundtruth.txt", "full_occlusion.txt", "out_of_view.txt", "nlp.txt", "img/00000001.jpg"):
            assert (seq / f).is_file()


def test_otb_is_one_based_and_vot_zero_based(tiny: tuple[Path, dict]) -> None:
    """The same seed renders the same scene: OTB lines are the scene boxes + (1, 1, 0, 0)."""
    out, m = tiny
    from data_prep.synthetic import _rng

    scene = render_scene(_rng(7, "otb", 0), SIZES["tiny"].frames, SIZES["tiny"].frame_size, full_occlusion=False)
    if scene.absent[0].any():
        scene = render_scene(_rng(7, "otb", 0), SIZES["tiny"].frames, SIZES["tiny"].frame_size, events=False)
    name = m["benchmarks"]["otb"]["sequences"][0]
    rows = np.array([[float(v) for v in line.replace("\t", ",").split(",")]
                     for line in (out / "benchmarks" / "otb" / name / "groundtruth_rect.txt").read_text().splitlines()])
    np.testing.assert_allclose(rows, scene.boxes_xywh[0] + [1, 1, 0, 0])


def test_manifest_lists_broken_items(tiny: tuple[Path, dict]) -> None:
    out, m = tiny
    on_disk = json.loads((out / "synth_manifest.json").read_text(encoding="utf-8"))
    assert on_disk == m and m["schema"] == 1 and m["seed"] == 7 and m["broken"] is True
    kinds = {i["kind"] for i in m["broken_items"]}
    assert kinds >= {"corrupt_jpeg", "truncated_jpeg", "missing_frame", "malformed_line", "nan_box",
                     "negative_box", "zero_box", "outside_box", "empty_sequence", "odd_name", "missing_video"}
    for item in m["broken_items"]:
        src = out / item["source"].split(":")[0].split("#")[0]
        if item["kind"] in ("missing_frame", "missing_video"):
            assert not src.exists()
        else:
            assert src.exists(), item
        if item["kind"] == "truncated_jpeg":
            assert not src.read_bytes().endswith(b"\xff\xd9")  # no JPEG end-of-image marker
    for name, info in m["datasets"].items():
        if name == "ytbb":
            continue
        by_reason: dict[str, int] = {}
        for item in m["broken_items"]:
            if item["dataset"] == name and item["stage"] == "reader":
                by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + item["count"]
        extra = {"crowd": 1} if name == "coco" else {}  # clean COCO holds one crowd region
        assert info["expected"]["rejections"] == dict(sorted({**by_reason, **extra}.items())), name


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from jobs.cli import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--seed", "2"]) == 0
    assert (tmp_path / "s" / "synth_manifest.json").is_file()
    assert "got10k" in capsys.readouterr().out


def test_frame_size_override_changes_only_the_frames_size(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "wide", seed=4, size="tiny", frame_size=(200, 100))
    assert manifest["frame_size"] == [200, 100] and SIZES["tiny"].frame_size != (200, 100)
    frame = next((tmp_path / "wide" / "got10k" / "train").glob("GOT-10k_Train_*/00000001.jpg"))
    assert cv2.imread(str(frame)).shape == (100, 200, 3)
    videos = list((tmp_path / "wide" / "got10k" / "train").glob("GOT-10k_Train_*"))
    assert len(videos) == SIZES["tiny"].got10k_train and len(manifest["datasets"]) == 6  # same counts as tiny


def test_variety_changes_the_training_data_only(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    """generate(variety=True): busier training scenes (issue 14), the same benchmarks, and the manifest's
    expected counts still what the readers must yield (no rejection that no broken item explains)."""
    out, m = tiny
    v = generate(tmp_path / "v", seed=7, size="tiny", broken=True, variety=True)
    assert v["variety"] is True and m["variety"] is False
    bench = out / "benchmarks" / "otb"
    for gt in bench.rglob("groundtruth_rect.txt"):
        assert (tmp_path / "v" / gt.relative_to(out)).read_bytes() == gt.read_bytes()
    first = "got10k/train/GOT-10k_Train_000001/00000001.jpg"
    assert (tmp_path / "v" / first).read_bytes() != (out / first).read_bytes()
    for name in ("got10k", "lasot", "vid", "det"):
        assert v["datasets"][name]["expected"]["rejections"] == m["datasets"][name]["expected"]["rejections"], name


def test_variety_scenes_are_busier_and_wider() -> None:
    def edges(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img.astype(np.float32), axis=1)).mean())

    plain = [render_scene(np.random.default_rng([1, k]), 2, (160, 120)) for k in range(12)]
    busy = [render_scene(np.random.default_rng([1, k]), 2, (160, 120), variety=True) for k in range(12)]
    assert np.mean([edges(s.frames[0]) for s in busy]) > 1.1 * np.mean([edges(s.frames[0]) for s in plain])
    aspect = [b[0, 0, 2] / b[0, 0, 3] for b in (s.boxes_xywh for s in busy)]
    assert max(aspect) / min(aspect) > 2.0


def test_busy_share_changes_only_the_training_backgrounds(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    """generate(busy=s): busy training backgrounds (issue 14 item 5). The benchmarks stay the same, the
    expected rejections too, and a share outside [0, 1] is refused."""
    out, m = tiny
    b = generate(tmp_path / "b", seed=7, size="tiny", broken=True, busy=1.0)
    assert b["busy"] == 1.0 and m["busy"] == 0.0
    for gt in (out / "benchmarks").rglob("*.txt"):
        assert (tmp_path / "b" / gt.relative_to(out)).read_bytes() == gt.read_bytes(), gt
    bench_frame = next((out / "benchmarks" / "otb").rglob("*.jpg"))
    assert (tmp_path / "b" / bench_frame.relative_to(out)).read_bytes() == bench_frame.read_bytes()
    first = "got10k/train/GOT-10k_Train_000001/00000001.jpg"
    assert (tmp_path / "b" / first).read_bytes() != (out / first).read_bytes()
    for name in ("got10k", "lasot", "vid", "det", "coco"):  # other scenes, so other counts (e.g. VID tracks
        # in view), but no rejection that no broken item explains
        assert b["datasets"][name]["expected"]["rejections"] == m["datasets"][name]["expected"]["rejections"], name
    with pytest.raises(ValueError, match="busy"):
        generate(tmp_path / "x", seed=7, size="tiny", busy=1.5)


def test_busy_scenes_have_busy_backgrounds_and_busy_zero_draws_nothing_more() -> None:
    def edges(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img.astype(np.float32), axis=1)).mean())

    plain = [render_scene(np.random.default_rng([2, k]), 2, (160, 120)) for k in range(12)]
    zero = [render_scene(np.random.default_rng([2, k]), 2, (160, 120), busy=0.0) for k in range(12)]
    for p, z in zip(plain, zero, strict=True):
        np.testing.assert_array_equal(p.frames[0], z.frames[0])
    busy = [render_scene(np.random.default_rng([2, k]), 2, (160, 120), busy=1.0) for k in range(12)]
    assert np.mean([edges(s.frames[0]) for s in busy]) > 1.3 * np.mean([edges(s.frames[0]) for s in plain])
    sides = [s.boxes_xywh[0, 0, 2] for s in busy]  # the default look's target sizes (0.14-0.26 of 120 px, +-20 %)
    assert 0.8 * 0.14 * 120 - 1 <= min(sides) and max(sides) <= 1.2 * 0.26 * 120 + 1


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_synth_refuses_a_busy_share_outside_0_1_with_one_line(tmp_path, capsys, value):
    from jobs.cli import main

    try:
        status = main(["synth", "--out", str(tmp_path / "s"), "--busy", value])
    except SystemExit as exc:  # argparse's own refusal (not a number)
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ocean synth: error:") and "--busy" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "s" / "synth_manifest.json").exists()


def test_scenes_multiplies_the_training_scenes_and_keeps_the_first_ones(tiny: tuple[Path, dict],
                                                                        tmp_path: Path) -> None:
    """generate(scenes=k): k times the training videos and images (issue 14 item 5: more distinct scenes for
    the same pairs per epoch). Every scene of scenes=1 is drawn the same, the benchmarks are unchanged, and
    a k whose generator indices would collide is refused."""
    out, m = tiny
    two = generate(tmp_path / "two", seed=7, size="tiny", broken=True, scenes=2)
    assert two["scenes"] == 2 and m["scenes"] == 1
    spec = SIZES["tiny"]
    train = sorted(p.name for p in (tmp_path / "two" / "got10k" / "train").glob("GOT-10k_Train_*"))
    assert len(train) == len(list((out / "got10k" / "train").glob("GOT-10k_Train_*"))) + spec.got10k_train
    assert two["datasets"]["lasot"]["expected"]["tracks"] > m["datasets"]["lasot"]["expected"]["tracks"]
    for name in ("det", "coco"):
        assert two["datasets"][name]["files"] > m["datasets"][name]["files"], name
    for rel in ("got10k/train/GOT-10k_Train_000001/00000001.jpg", "got10k/train/GOT-10k_Train_000001/groundtruth.txt",
                "got10k/val/GOT-10k_Val_000001/00000003.jpg", "lasot/disc/disc-1/groundtruth.txt",
                "vid/Data/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000/000000.JPEG"):
        assert (tmp_path / "two" / rel).read_bytes() == (out / rel).read_bytes(), rel
    for f in (out / "benchmarks").rglob("*"):
        if f.is_file():
            assert (tmp_path / "two" / f.relative_to(out)).read_bytes() == f.read_bytes(), f
    with pytest.raises(ValueError, match="scenes must be at most 49"):
        generate(tmp_path / "x", seed=7, size="tiny", scenes=50)
    with pytest.raises(ValueError, match="scenes must be a whole number"):
        generate(tmp_path / "x", seed=7, size="tiny", scenes=0)


@pytest.mark.parametrize("value", ["0", "34", "two"])
def test_synth_refuses_a_bad_scenes_count_with_one_line(tmp_path, capsys, value):
    from jobs.cli import main

    try:
        status = main(["synth", "--out", str(tmp_path / "s"), "--size", "small", "--scenes", value])
    except SystemExit as exc:  # argparse's own refusal (not a whole number)
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ocean synth: error:") and "--scenes" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "s" / "synth_manifest.json").exists()


def test_look_alike_is_the_sprite_recoloured_and_mirrored() -> None:
    """look_alike(): the target's mask and pattern, flipped, hue turned by 40-140 degrees (issue 14 item 5:
    a near twin the network has to tell apart)."""
    from data_prep.synthetic_scene import look_alike, texture

    rng = np.random.default_rng(3)
    mask = shape_mask("triangle")
    for k in range(8):
        tex = texture(np.random.default_rng([4, k]))
        twin_mask, twin = look_alike(rng, mask, tex)
        flips = [f for f in (1, 0, -1) if np.array_equal(cv2.flip(twin_mask, f), mask)]
        assert flips, "the mask is the target's, mirrored"
        back = cv2.flip(twin, flips[0])
        hue = cv2.cvtColor(tex, cv2.COLOR_BGR2HSV)[..., 0].astype(int)
        hue_back = cv2.cvtColor(back, cv2.COLOR_BGR2HSV)[..., 0].astype(int)
        sat = cv2.cvtColor(tex, cv2.COLOR_BGR2HSV)[..., 1] > 80  # hue is defined where there is colour
        turn = np.median(((hue_back - hue) % 180)[sat])
        assert 20 <= turn <= 70, turn  # OpenCV hue units (2 degrees)
        assert not np.array_equal(twin, tex)


def test_lookalike_share_redraws_distractors_and_zero_draws_nothing_more() -> None:
    plain = [render_scene(np.random.default_rng([5, k]), 3, (160, 120), busy=0.5) for k in range(6)]
    zero = [render_scene(np.random.default_rng([5, k]), 3, (160, 120), busy=0.5, lookalike=0.0) for k in range(6)]
    twins = [render_scene(np.random.default_rng([5, k]), 3, (160, 120), busy=0.5, lookalike=1.0) for k in range(6)]
    for p, z, t in zip(plain, zero, twins, strict=True):
        np.testing.assert_array_equal(p.frames[2], z.frames[2])
        np.testing.assert_array_equal(p.boxes_xywh, t.boxes_xywh)  # the targets move as before
    assert sum(not np.array_equal(p.frames[0], t.frames[0]) for p, t in zip(plain, twins, strict=True)) >= 5


def test_lookalike_changes_only_the_training_scenes(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    out, m = tiny
    la = generate(tmp_path / "la", seed=7, size="tiny", lookalike=1.0)
    assert la["lookalike"] == 1.0 and m["lookalike"] == 0.0
    bench_frame = next((out / "benchmarks" / "otb").rglob("*.jpg"))
    assert (tmp_path / "la" / bench_frame.relative_to(out)).read_bytes() == bench_frame.read_bytes()
    first = "got10k/train/GOT-10k_Train_000001/00000001.jpg"
    assert (tmp_path / "la" / first).read_bytes() != (out / first).read_bytes()
    with pytest.raises(ValueError, match="lookalike must be a share"):
        generate(tmp_path / "x", seed=7, size="tiny", lookalike=-0.5)


def test_random_masks_touch_every_edge_and_vary() -> None:
    from data_prep.synthetic_scene import random_mask, wide_texture

    rng = np.random.default_rng(8)
    masks = [random_mask(rng) for _ in range(10)]
    for m in masks:
        assert m.shape == (64, 64) and m.dtype == np.float32
        assert m[0].max() > 0.3 and m[-1].max() > 0.3 and m[:, 0].max() > 0.3 and m[:, -1].max() > 0.3
        assert 0.2 < m.mean() < 0.95
    assert len({round(float(m.mean()), 3) for m in masks}) == len(masks)
    textures = [wide_texture(rng) for _ in range(12)]
    assert all(t.shape == (64, 64, 3) and t.dtype == np.uint8 for t in textures)
    # more than two colours in some of them (texture() draws two, plus grain)
    assert max(len(np.unique(t.reshape(-1, 3) // 64, axis=0)) for t in textures) > 4


def test_wide_targets_share_redraws_shapes_and_zero_draws_nothing_more(tiny: tuple[Path, dict],
                                                                         tmp_path: Path) -> None:
    plain = [render_scene(np.random.default_rng([6, k]), 3, (160, 120), busy=0.5) for k in range(6)]
    zero = [render_scene(np.random.default_rng([6, k]), 3, (160, 120), busy=0.5, wide_targets=0.0) for k in range(6)]
    wide = [render_scene(np.random.default_rng([6, k]), 3, (160, 120), busy=0.5, wide_targets=1.0) for k in range(6)]
    for p, z in zip(plain, zero, strict=True):
        np.testing.assert_array_equal(p.frames[2], z.frames[2])
    assert sum(not np.array_equal(p.frames[0], w.frames[0]) for p, w in zip(plain, wide, strict=True)) == 6
    out, m = tiny
    g = generate(tmp_path / "w", seed=7, size="tiny", wide_targets=1.0)
    assert g["wide_targets"] == 1.0 and m["wide_targets"] == 0.0
    bench_frame = next((out / "benchmarks" / "otb").rglob("*.jpg"))
    assert (tmp_path / "w" / bench_frame.relative_to(out)).read_bytes() == bench_frame.read_bytes()
    with pytest.raises(ValueError, match="wide_targets must be a share"):
        generate(tmp_path / "x", seed=7, size="tiny", wide_targets=2)
