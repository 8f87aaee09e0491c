"""Dataset readers on hand-made trees, on synthetic trees (counts reconcile with the manifest) and on the
real annotation samples in ../shared (skipped when absent)."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep.readers import RejectionLog, read_tracks
from data_prep.readers import rejections as R
from data_prep.readers.image_header import image_size

SHARED = Path(__file__).resolve().parents[3] / "shared"
SAMPLES = SHARED / "data" / "real_samples"
SYNTH_SEED = 1  # the seed of conftest's `synth` tree in this module


def _samples(sub: str) -> Path:
    path = SAMPLES / sub
    if not path.exists():
        pytest.skip(f"{path} not present (no ../shared in this clone)")
    return path


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # readers never open images, so empty files stand in for frames


# ------------------------------------------------------------------ hand-made trees


def test_got10k_boxes_and_presence_from_absence_label(tmp_path: Path) -> None:
    seq = tmp_path / "train" / "GOT-10k_Train_000001"
    (seq).mkdir(parents=True)
    (tmp_path / "train" / "list.txt").write_text("GOT-10k_Train_000001\n")
    (seq / "groundtruth.txt").write_text("1,2,3,4\n0,0,0,0\n10.5,20,5,6\n")
    (seq / "absence.label").write_text("0\n1\n0\n")
    (seq / "meta_info.ini").write_text("[METAINFO]\nobject_class: cat\nresolution: (640, 480)\n")
    for i in (1, 2, 3):
        _touch(seq / f"{i:08d}.jpg")
    log = RejectionLog()
    tracks = list(read_tracks("got10k", tmp_path, on_reject=log))
    assert len(tracks) == 1 and len(log) == 0
    t = tracks[0]
    assert t.video == "train/GOT-10k_Train_000001" and t.track_id == "0"
    # 0-based x,y,w,h -> x1,y1,x2,y2; the zero box on the absent frame is kept, not rejected
    np.testing.assert_allclose(t.boxes_xyxy, [[1, 2, 4, 6], [0, 0, 0, 0], [10.5, 20, 15.5, 26]])
    assert t.present.tolist() == [True, False, True]
    assert t.image_size == (640, 480) and t.meta["object_class"] == "cat"
    assert [f.frame_id for f in t.frames] == ["00000001", "00000002", "00000003"]


def test_lasot_one_based_boxes_and_flags(tmp_path: Path) -> None:
    seq = tmp_path / "cat" / "cat-3"
    (seq / "img").mkdir(parents=True)
    (seq / "groundtruth.txt").write_text("10,20,30,40\n1,1,0,0\n5,6,7,8\n")
    (seq / "full_occlusion.txt").write_text("0,1,0\n")
    (seq / "out_of_view.txt").write_text("0,0,1\n")
    (seq / "nlp.txt").write_text("a cat\n")
    for i in (1, 2, 3):
        _touch(seq / "img" / f"{i:08d}.jpg")
    [t] = list(read_tracks("lasot", tmp_path))
    np.testing.assert_allclose(t.boxes_xyxy[0], [9, 19, 39, 59])  # 1-based -> 0-based corners
    np.testing.assert_allclose(t.boxes_xyxy[2], [4, 5, 11, 13])
    assert t.present.tolist() == [True, False, False]
    assert t.video == "cat/cat-3" and t.meta["nlp"] == "a cat" and t.meta["class"] == "cat"


def _got10k_train(root: Path, names: list[str]) -> None:
    (root / "train").mkdir(parents=True)
    (root / "train" / "list.txt").write_text("".join(n + "\n" for n in names))
    for n in names:
        (root / "train" / n / "groundtruth.txt").parent.mkdir(parents=True)
        (root / "train" / n / "groundtruth.txt").write_text("1,2,3,4\n")
        _touch(root / "train" / n / "00000001.jpg")


def test_got10k_vot_exclusion_list(tmp_path: Path) -> None:
    from data_prep.readers.got10k import VOT_EXCLUDE_LIST, vot_excluded

    names = VOT_EXCLUDE_LIST.read_text().splitlines()  # formats.md §1.7: pytracking's list, unchanged
    assert len(names) == len(set(names)) == 1000 and names == sorted(names)
    assert names[0] == "GOT-10k_Train_000004" and names[-1] == "GOT-10k_Train_009334"
    assert all(n.startswith("GOT-10k_Train_") for n in names) and vot_excluded() == set(names)
    _got10k_train(tmp_path, ["GOT-10k_Train_000001", "GOT-10k_Train_000004", "GOT-10k_Train_000013"])
    assert [t.video for t in read_tracks("got10k", tmp_path)] == [
        "train/GOT-10k_Train_000001", "train/GOT-10k_Train_000004", "train/GOT-10k_Train_000013"]
    kept = [t.video for t in read_tracks("got10k", tmp_path, exclude_vot=True)]
    assert kept == ["train/GOT-10k_Train_000001"]


def _lasot_seq(root: Path, name: str) -> None:
    seq = root / name.split("-")[0] / name
    _touch(seq / "img" / "00000001.jpg")
    (seq / "groundtruth.txt").write_text("1,2,3,4\n")
    (seq / "full_occlusion.txt").write_text("0\n")
    (seq / "out_of_view.txt").write_text("0\n")


def test_lasot_training_split_by_default_and_all(tmp_path: Path) -> None:
    from data_prep.readers import config_reader_options
    from data_prep.readers.lasot import TRAIN_SPLIT_LIST
    from ocean.config import OceanConfig, apply_overrides

    names = TRAIN_SPLIT_LIST.read_text().splitlines()  # formats.md §1.7: 1,120 names, 16 per category
    cats = {n.rsplit("-", 1)[0] for n in names}
    assert len(names) == len(set(names)) == 1120 and len(cats) == 70
    assert "airplane-1" not in names and "airplane-2" in names  # airplane-1 is a test video
    for n in ("airplane-1", "airplane-2"):
        _lasot_seq(tmp_path, n)
    # training: the official split unless data.lasot_split=all; no training_set.txt -> the shipped list
    cfg = OceanConfig()
    opts = config_reader_options(cfg.data, ["lasot", "got10k"])
    assert opts == {"lasot": {"split": "train"}}
    assert [t.video for t in read_tracks("lasot", tmp_path, **opts["lasot"])] == ["airplane/airplane-2"]
    every = config_reader_options(apply_overrides(cfg, ["data.lasot_split=all"]).data, ["lasot"])["lasot"]
    assert [t.video for t in read_tracks("lasot", tmp_path, **every)] == ["airplane/airplane-1", "airplane/airplane-2"]
    (tmp_path / "training_set.txt").write_text("airplane-1\n")  # the download's own list wins
    assert [t.video for t in read_tracks("lasot", tmp_path, split="train")] == ["airplane/airplane-1"]
    vot = config_reader_options(apply_overrides(cfg, ["data.got10k_vot_exclude=true"]).data, ["got10k"])
    assert vot == {"got10k": {"exclude_vot": True}}
    given = config_reader_options(cfg.data, ["lasot"], {"lasot": {"split": "all"}})  # explicit options win
    assert given == {"lasot": {"split": "all"}}
    with pytest.raises(ValueError, match="one of train, test, all"):
        list(read_tracks("lasot", tmp_path, split="val"))


@pytest.mark.parametrize("name", ["got10k", "lasot"])
def test_missing_and_empty_groundtruth_are_rejected_not_fatal(tmp_path: Path, name: str) -> None:
    if name == "got10k":
        seqs = [tmp_path / "train" / f"GOT-10k_Train_00000{i}" for i in (1, 2, 3)]
        (tmp_path / "train").mkdir()
        (tmp_path / "train" / "list.txt").write_text("".join(f"{s.name}\n" for s in seqs))
    else:
        seqs = [tmp_path / "cat" / f"cat-{i}" for i in (1, 2, 3)]
    for s in seqs:
        _touch(s / ("" if name == "got10k" else "img") / "00000001.jpg")
    (seqs[1] / "groundtruth.txt").write_text("\n\n")  # blank lines only: empty
    (seqs[2] / "groundtruth.txt").write_text("1,2,3,4\n")
    log = RejectionLog()
    tracks = list(read_tracks(name, tmp_path, on_reject=log))
    assert [t.video.split("/")[-1] for t in tracks] == [seqs[2].name]
    assert log.by_reason() == {R.EMPTY_SEQUENCE: 1, R.MISSING_ANNOTATION: 1}
    sources = {r.reason: r.source for r in log.items}
    assert sources[R.MISSING_ANNOTATION] == str(seqs[0] / "groundtruth.txt")
    assert sources[R.EMPTY_SEQUENCE] == str(seqs[1])


def _xml(objs: list[tuple[int, tuple[int, int, int, int]]]) -> str:
    body = "".join(
        f"<object><trackid>{tid}</trackid><name>n1</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><occluded>0</occluded></object>"
        for tid, b in objs
    )
    return f"<annotation><size><width>100</width><height>80</height></size>{body}</annotation>"


def test_vid_snippets_split_at_gaps_and_single_frames_dropped(tmp_path: Path) -> None:
    rel = Path("ILSVRC2015_VID_train_0000") / "ILSVRC2015_train_00000007"
    ann = tmp_path / "Annotations" / "VID" / "train" / rel
    data = tmp_path / "Data" / "VID" / "train" / rel
    ann.mkdir(parents=True)
    # trackid 0 in frames 0,1,2 | 4 | 6,7 ; trackid 1 in frames 0..7
    for i in range(8):
        objs = [(1, (10, 10, 20 + i, 30))]
        if i in (0, 1, 2, 4, 6, 7):
            objs.append((0, (i, 1, 50, 60)))
        (ann / f"{i:06d}.xml").write_text(_xml(objs))
        _touch(data / f"{i:06d}.JPEG")
    log = RejectionLog()
    tracks = list(read_tracks("vid", tmp_path, on_reject=log))
    by_id = {t.track_id: t for t in tracks}
    assert sorted(by_id) == ["0", "0-2", "1"]
    assert [f.frame_id for f in by_id["0"].frames] == ["000000", "000001", "000002"]
    assert [f.frame_id for f in by_id["0-2"].frames] == ["000006", "000007"]
    assert len(by_id["1"]) == 8
    np.testing.assert_allclose(by_id["0-2"].boxes_xyxy[0], [6, 1, 50, 60])
    assert by_id["1"].image_size == (100, 80)
    assert log.by_reason() == {R.SINGLE_FRAME_SNIPPET: 1}
    assert by_id["1"].video == f"train/{rel.as_posix()}"


def test_det_one_track_per_object(tmp_path: Path) -> None:
    rel = "ILSVRC2014_train_0000/ILSVRC2014_train_00000001"
    xml = tmp_path / "Annotations" / "DET" / "train" / f"{rel}.xml"
    xml.parent.mkdir(parents=True)
    xml.write_text(_xml([(0, (1, 2, 30, 40)), (0, (5, 5, 5, 9))]).replace("<trackid>0</trackid>", ""))
    _touch(tmp_path / "Data" / "DET" / "train" / f"{rel}.JPEG")
    log = RejectionLog()
    [t] = list(read_tracks("det", tmp_path, on_reject=log))
    assert t.video == f"train/{rel}" and t.track_id == "0" and t.frames[0].frame_id == "000000"
    np.testing.assert_allclose(t.boxes_xyxy, [[1, 2, 30, 40]])
    assert log.by_reason() == {R.NON_POSITIVE_SIZE: 1}  # xmin == xmax


def test_ytbb_frames_naming_variants(tmp_path: Path) -> None:
    (tmp_path / "yt_bb_detection_train.csv").write_text(
        "abcdefghijk,0,3,cat,0,present,0.1,0.5,0.25,0.75\nabcdefghijk,1000,3,cat,0,absent,-1,-1,-1,-1\n"
        "zzzzzzzzzzz,0,1,dog,2,present,0,1,0,1\n"
    )
    img = np.zeros((40, 200, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    (tmp_path / "frames" / "abcdefghijk").mkdir(parents=True)
    (tmp_path / "frames" / "abcdefghijk" / "abcdefghijk_0.jpg").write_bytes(buf.tobytes())
    (tmp_path / "frames" / "abcdefghijk" / "1000.jpg").write_bytes(buf.tobytes())
    (tmp_path / "frames" / "zzzzzzzzzzz_0.jpg").write_bytes(buf.tobytes())  # flat variant
    tracks = {t.key: t for t in read_tracks("ytbb", tmp_path)}
    t = tracks["ytbb/abcdefghijk/3_0"]
    np.testing.assert_allclose(t.boxes_xyxy[0], [20, 10, 100, 30])  # x from xmin,xmax; y from ymin,ymax
    assert t.present.tolist() == [True, False] and t.image_size == (200, 40)
    assert [f.frame_id for f in t.frames] == ["0", "1000"]
    np.testing.assert_allclose(tracks["ytbb/zzzzzzzzzzz/1_2"].boxes_xyxy[0], [0, 0, 200, 40])


def test_readers_are_lazy_and_validate_arguments(tmp_path: Path, synth: tuple[Path, dict]) -> None:
    out, _ = synth
    gen = read_tracks("got10k", out / "got10k")
    assert isinstance(gen, types.GeneratorType)
    assert next(gen).dataset == "got10k"
    with pytest.raises(KeyError):
        read_tracks("imagenet", tmp_path)
    with pytest.raises(FileNotFoundError):
        next(read_tracks("coco", tmp_path))


def test_image_header_size(tmp_path: Path) -> None:
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".jpg", ".png"):
        (tmp_path / f"a{ext}").write_bytes(cv2.imencode(ext, img)[1].tobytes())
        assert image_size(tmp_path / f"a{ext}") == (53, 37)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    assert image_size(tmp_path / "bad.jpg") is None


# ------------------------------------------------------------------ synthetic trees (incl. broken set)


CASES = [("got10k", {}), ("lasot", {}), ("vid", {}), ("det", {}), ("coco", {}),
         ("ytbb", {"media": "frames"}), ("ytbb", {"media": "videos"})]


@pytest.mark.parametrize(("name", "opts"), CASES)
def test_synthetic_counts_reconcile_with_manifest(synth: tuple[Path, dict], name: str, opts: dict) -> None:
    out, manifest = synth
    expected = manifest["datasets"][name]["expected"]
    if name == "ytbb":
        if opts["media"] not in manifest["ytbb_media"]:
            pytest.skip("OpenCV here cannot write mp4v")
        expected = expected[opts["media"]]
    log = RejectionLog()
    tracks = list(read_tracks(name, out / name, on_reject=log, **opts))
    got = {"tracks": len(tracks), "frames": sum(len(t) for t in tracks), "rejections": log.by_reason()}
    assert got == expected
    for t in tracks:  # every yielded present box is usable
        b = t.boxes_xyxy[t.present]
        assert np.isfinite(b).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    # each broken item the reader must catch is named by at least one rejection of that reason
    reasons = {r.reason for r in log.items}
    for item in manifest["broken_items"]:
        if item["dataset"] == name and item["stage"] == "reader" and item.get("media", opts.get("media")) == opts.get("media"):
            assert item["reason"] in reasons


def test_synthetic_decode_stage_items_pass_readers(synth: tuple[Path, dict]) -> None:
    """Readers never decode: corrupt / truncated JPEGs are in tracks; odd names are read normally."""
    out, manifest = synth
    paths = set()
    for name in ("got10k", "lasot", "vid", "det", "coco"):
        for t in read_tracks(name, out / name):
            paths.update(Path(f.path).resolve() for f in t.frames)
    items = [i for i in manifest["broken_items"] if i["stage"] in ("decode", "none") and i["dataset"] != "ytbb"]
    assert {i["kind"] for i in items} >= {"corrupt_jpeg", "truncated_jpeg", "odd_name"}
    for item in items:
        src = (out / item["source"]).resolve()
        if item["kind"] == "odd_name" and src.is_dir():
            assert any(str(p).startswith(str(src)) for p in paths)
        else:
            assert src in paths
        if item["kind"] == "corrupt_jpeg":
            assert cv2.imread(str(src)) is None


def test_synthetic_lasot_absent_boxes_do_not_decide_presence(synth: tuple[Path, dict]) -> None:
    out, _ = synth
    for t in read_tracks("lasot", out / "lasot", sequences=None):
        seq = out / "lasot" / t.video
        flags = np.array(
            [int(v) for v in (seq / "full_occlusion.txt").read_text().strip().split(",")]
        ) | np.array([int(v) for v in (seq / "out_of_view.txt").read_text().strip().split(",")])
        if t.video.startswith("broken/"):
            continue  # frames were dropped from this one
        assert t.present.tolist() == (flags == 0).tolist()


# ------------------------------------------------------------------ real samples


def _lasot_from_toolkit(tmp_path: Path, name: str) -> Path:
    src = _samples("lasot_annotations")
    cls = name.split("-")[0]
    seq = tmp_path / cls / name
    seq.mkdir(parents=True)
    shutil.copy(src / f"{name}.txt", seq / "groundtruth.txt")
    absent = (src / "absent" / f"{name}.txt").read_text().split()
    # native LaSOT flag files are one comma-separated line (formats.md §1.2)
    (seq / "full_occlusion.txt").write_text(",".join(absent) + "\n")
    (seq / "out_of_view.txt").write_text(",".join("0" * len(absent)) + "\n")
    return seq


@pytest.mark.parametrize(("name", "frames", "absent"), [("coin-3", 1020, 52), ("shark-3", 1000, 8),
                                                          ("yoyo-15", 1000, 33), ("airplane-1", 2788, 0)])
def test_real_lasot_annotations(tmp_path: Path, name: str, frames: int, absent: int) -> None:
    seq = _lasot_from_toolkit(tmp_path, name)
    log = RejectionLog()
    [t] = list(read_tracks("lasot", tmp_path, on_reject=log, check_images=False))
    assert len(t) == frames and int((~t.present).sum()) == absent and len(log) == 0
    first = [float(v) for v in (seq / "groundtruth.txt").read_text().splitlines()[0].split(",")]
    np.testing.assert_allclose(t.boxes_xyxy[0], [first[0] - 1, first[1] - 1, first[0] - 1 + first[2],
                                                 first[1] - 1 + first[3]])
    if name == "shark-3":  # 0,0,0,0 boxes on frames 978-985 (1-based) are absent, not rejected
        assert (~t.present).nonzero()[0].tolist() == list(range(977, 985))


def test_real_coco_subset(tmp_path: Path) -> None:
    src = _samples("coco_subset") / "instances_val2017_1img-sample.json"
    (tmp_path / "annotations").mkdir()
    shutil.copy(src, tmp_path / "annotations" / "instances_val2017.json")
    log = RejectionLog()
    tracks = list(read_tracks("coco", tmp_path, split="val2017", on_reject=log, check_images=False))
    assert len(tracks) == 15 and log.by_reason() == {R.CROWD: 1}
    t = tracks[0]
    # bbox [80.0, 6.49, 223.89, 223.36] -> corners, floats kept (facts §7.1: COCO boxes stay float)
    np.testing.assert_allclose(t.boxes_xyxy[0], [80.0, 6.49, 303.89, 229.85])
    assert t.image_size == (320, 240) and t.meta["category"] == "person"
    assert t.video == "val2017/000000448263" and t.frames[0].path.endswith("val2017/000000448263.jpg")
    assert len({tr.track_id for tr in tracks}) == 15


def test_real_ytbb_rows_with_header(tmp_path: Path) -> None:
    src = _samples("youtube_bb_subset") / "ytbb_subset.csv"
    shutil.copy(src, tmp_path / "yt_bb_detection_validation.csv")
    rows = [r.split(",") for r in src.read_text().splitlines()[1:] if r.strip()]
    jpg = cv2.imencode(".jpg", np.zeros((24, 32, 3), np.uint8))[1].tobytes()
    for r in rows:  # extracted frames, 32x24, one per annotated timestamp
        p = tmp_path / "frames" / r[0] / f"{r[1]}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpg)
    log = RejectionLog()
    tracks = list(read_tracks("ytbb", tmp_path, split="validation", on_reject=log))
    assert len(log) == 0  # the added header line is skipped, not rejected
    assert sum(len(t) for t in tracks) == len(rows) == 322
    assert len(tracks) == len({(r[0], r[2], r[4]) for r in rows})
    t = next(t for t in tracks if t.video == "FcmfoPqPxB8" and t.track_id == "0_0")
    np.testing.assert_allclose(t.boxes_xyxy[0], [0.21 * 32, 0.0, 0.686 * 32, 24.0])  # xmin,xmax,ymin,ymax
    assert t.present[:4].tolist() == [True, True, True, False]  # row 4 is 'absent'
    n_absent = sum(r[5] in ("absent", "uncertain") for r in rows)  # the real file has 6 'uncertain' rows
    assert sum(r[5] == "uncertain" for r in rows) == 6
    assert sum(int((~tr.present).sum()) for tr in tracks) == n_absent


def test_real_ytbb_missing_videos_are_counted(tmp_path: Path) -> None:
    src = _samples("youtube_bb_subset") / "ytbb_subset.csv"
    (tmp_path / "videos").mkdir()
    log = RejectionLog()
    tracks = list(read_tracks("ytbb", src, media="videos", videos_dir=tmp_path / "videos", on_reject=log))
    rows = [r.split(",") for r in src.read_text().splitlines()[1:] if r.strip()]
    assert tracks == [] and log.by_reason() == {R.MISSING_VIDEO: len({(r[0], r[2], r[4]) for r in rows})}
    assert json.dumps([r.source for r in log.items])  # sources are plain strings
