"""Synthetic datasets and benchmarks in the real on-disk layouts (formats.md §1 / §2), for tests and smoke runs.

:func:`generate` writes the six training layouts, the four benchmark layouts and ``synth_manifest.json``
(what the readers must yield, and the broken items) under one folder; its docstring gives the tree and the
manifest schema. Everything is deterministic from ``seed`` (each sequence has its own generator), so adding
broken items never changes clean ones. Images are rendered by :mod:`data_prep.synthetic_scene`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path

import cv2
import numpy as np

from data_prep.readers import rejections as R
from data_prep.synthetic_scene import SHAPES, Scene, render_scene

SCHEMA_VERSION = 1
JPEG_QUALITY = 90  # small files; any quality works for the readers


@dataclass(frozen=True)
class SizeSpec:
    """How much to generate. ``frames``: frames per sequence; counts are sequences / images / videos."""

    frame_size: tuple[int, int]
    frames: int
    got10k_train: int
    got10k_val: int
    lasot_classes: int
    lasot_per_class: int
    vid_videos: int
    det_images: int
    coco_images: int
    ytbb_videos: int
    ytbb_seconds: int
    ytbb_fps: int
    bench_sequences: int
    # VOT sequences: the EAO interval starts at 100 frames (VOT2018, facts §12.4), so a benchmark whose
    # sequences are shorter has no defined EAO.
    vot_frames: int = 30


SIZES = {
    "tiny": SizeSpec((256, 192), 30, 4, 2, 2, 2, 3, 6, 6, 3, 12, 4, 2),
    "small": SizeSpec((320, 240), 40, 16, 4, 3, 3, 8, 24, 24, 6, 20, 4, 4, vot_frames=120),
    # the preparation benchmark's set (benchmarks/prep_throughput.py --size medium): 640x360 frames, the size
    # of facts §17's crop511 throughput measurement (decode cost closer to real downloads than 320x240), and
    # 4x the training videos of "small" so the job runs many shards of a realistic size
    "medium": SizeSpec((640, 360), 40, 64, 4, 4, 6, 32, 96, 96, 24, 20, 4, 2, vot_frames=120),
}


def scaled_spec(spec: SizeSpec, scenes: int) -> SizeSpec:
    """``spec`` with ``scenes`` times its training videos and images (the benchmarks unchanged). The scenes'
    generator indices must stay apart: GOT-10k train below the val range (1000 + k), LaSOT below 100 per
    class (index = class x 100 + k); a ``scenes`` that would cross them is a ValueError."""
    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < 1:
        raise ValueError(f"scenes must be a whole number >= 1, not {scenes!r}")
    if spec.got10k_train * scenes >= 1000 or spec.lasot_per_class * scenes >= 100:
        top = min(999 // spec.got10k_train, 99 // spec.lasot_per_class)
        raise ValueError(f"scenes must be at most {top} for this size, not {scenes}")
    return dataclass_replace(
        spec, got10k_train=spec.got10k_train * scenes, lasot_per_class=spec.lasot_per_class * scenes,
        vid_videos=spec.vid_videos * scenes, det_images=spec.det_images * scenes,
        coco_images=spec.coco_images * scenes, ytbb_videos=spec.ytbb_videos * scenes)


# stream ids for per-sequence generators (never reorder: they fix the data for a seed)
_STREAMS = {"got10k": 1, "lasot": 2, "vid": 3, "det": 4, "coco": 5, "ytbb": 6, "otb": 7, "vot": 8,
            "bench_got10k": 9, "bench_lasot": 10, "broken": 11}


# with generate(variety=True) the training datasets' streams render with the wider variety (busy
# backgrounds, more distractors, wider aspect and scale, illumination and blur); benchmark and broken-item
# streams always keep the original look
_TRAINING = frozenset({"got10k", "lasot", "vid", "det", "coco", "ytbb"})


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


def _jpeg(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())  # imencode + write_bytes: works for unicode / space paths too


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _wnid(shape: str) -> str:
    return f"n9{SHAPES.index(shape):07d}"


class _Expect:
    def __init__(self) -> None:
        self.tracks = 0
        self.frames = 0
        self.rejections: Counter[str] = Counter()

    def track(self, n_frames: int) -> None:
        self.tracks += 1
        self.frames += n_frames

    def as_dict(self) -> dict:
        return {"tracks": self.tracks, "frames": self.frames, "rejections": dict(sorted(self.rejections.items()))}


class _Writer:
    def __init__(self, out: Path, seed: int, spec: SizeSpec, broken: bool, variety: bool = False,
                 busy: float = 0.0, lookalike: float = 0.0, wide_targets: float = 0.0) -> None:
        self.out, self.seed, self.spec, self.broken, self.variety, self.busy = out, seed, spec, broken, variety, busy
        self.lookalike, self.wide_targets = lookalike, wide_targets
        self.files: Counter[str] = Counter()
        self.broken_items: list[dict] = []

    def looks(self, training: bool) -> dict:
        """:func:`render_scene`'s look options: the generator's for a training scene, the original look for
        benchmark and broken-item scenes."""
        return {"variety": self.variety and training, "busy": self.busy if training else 0.0,
                "lookalike": self.lookalike if training else 0.0,
                "wide_targets": self.wide_targets if training else 0.0}

    def scene(self, stream: str, index: int, n: int | None = None, **kw) -> Scene:
        kw = {**self.looks(stream in _TRAINING), **kw}
        return render_scene(_rng(self.seed, stream, index), n or self.spec.frames, self.spec.frame_size, **kw)

    def jpeg(self, key: str, path: Path, img: np.ndarray) -> None:
        _jpeg(path, img)
        self.files[key] += 1

    def note(self, dataset: str, path: Path | str, kind: str, stage: str, reason: str | None, count: int) -> None:
        src = path if isinstance(path, str) else path.relative_to(self.out).as_posix()
        self.broken_items.append(
            {"dataset": dataset, "source": src, "kind": kind, "stage": stage, "reason": reason, "count": count}
        )

    def corrupt(self, dataset: str, path: Path, truncated: bool) -> None:
        """Overwrite a written JPEG: truncated (first 40 % of its bytes) or replaced by random bytes."""
        data = path.read_bytes()
        if truncated:
            path.write_bytes(data[: int(len(data) * 0.4)])
            self.note(dataset, path, "truncated_jpeg", "decode", R.TRUNCATED_IMAGE, 0)
        else:
            noise = np.random.default_rng([self.seed, 99, len(data)]).integers(0, 256, 600, dtype=np.uint8)
            path.write_bytes(noise.tobytes())
            self.note(dataset, path, "corrupt_jpeg", "decode", R.UNDECODABLE_IMAGE, 0)


# ---------------------------------------------------------------- GOT-10k / LaSOT sequence folders


def _write_got10k_sequence(w: _Writer, key: str, seq_dir: Path, scene: Scene, index: int) -> None:
    fw, fh = w.spec.frame_size
    for i, img in enumerate(scene.frames):
        w.jpeg(key, seq_dir / f"{i + 1:08d}.jpg", img)  # formats.md §1.1: 8-digit, 1-based
    b = scene.boxes_xywh[0]
    _write(seq_dir / "groundtruth.txt", "".join(f"{x:.4f},{y:.4f},{bw:.4f},{bh:.4f}\n" for x, y, bw, bh in b))
    absent = scene.absent[0]
    _write(seq_dir / "absence.label", "".join(f"{int(a)}\n" for a in absent))
    cover = np.clip(np.round(scene.visible[0] * 8), 0, 8).astype(int)  # formats.md §1.1: eighths visible
    cover[absent] = 0
    _write(seq_dir / "cover.label", "".join(f"{c}\n" for c in cover))
    cut = ((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 0] + b[:, 2] > fw) | (b[:, 1] + b[:, 3] > fh)) & ~absent
    _write(seq_dir / "cut_by_image.label", "".join(f"{int(c)}\n" for c in cut))
    _write(
        seq_dir / "meta_info.ini",
        "[METAINFO]\n"
        f"url: synthetic://seed{w.seed}/{seq_dir.name}\nbegin_time: 0\nend_time: {len(b) / 10:.1f}\n"
        f"anno_fps: 10Hz\nobject_class: {scene.shapes[0]}\nmotion_class: moving\nmajor_class: shape\n"
        f"root_class: object\nmotion_adverb: smoothly\nresolution: ({fw}, {fh})\n",
    )


def _write_lasot_sequence(w: _Writer, key: str, seq_dir: Path, scene: Scene, style: int) -> None:
    for i, img in enumerate(scene.frames):
        w.jpeg(key, seq_dir / "img" / f"{i + 1:08d}.jpg", img)
    lines = []
    for (x, y, bw, bh), gone in zip(scene.boxes_xywh[0], scene.absent[0], strict=True):
        if gone and style % 3 == 0:
            lines.append("0,0,0,0")  # the real data's absent-frame boxes vary (formats.md §1.2)
        elif gone and style % 3 == 1:
            lines.append("1,1,0,0")
        else:
            lines.append(f"{int(x) + 1},{int(y) + 1},{int(bw)},{int(bh)}")  # 1-based (formats.md §1.2)
    _write(seq_dir / "groundtruth.txt", "\n".join(lines) + "\n")
    _write(seq_dir / "full_occlusion.txt", ",".join(str(int(v)) for v in scene.full_occlusion[0]) + "\n")
    _write(seq_dir / "out_of_view.txt", ",".join(str(int(v)) for v in scene.out_of_view[0]) + "\n")
    _write(seq_dir / "nlp.txt", f"the textured {scene.shapes[0]} moving among look-alike shapes\n")


def _got10k(w: _Writer, root: Path, exp: _Expect, bench: bool = False) -> list[str]:
    splits = [("val", w.spec.bench_sequences)] if bench else [("train", w.spec.got10k_train), ("val", w.spec.got10k_val)]
    key = "bench_got10k" if bench else "got10k"
    names_all = []
    for split, count in splits:
        prefix = "GOT-10k_Train_" if split == "train" else "GOT-10k_Val_"
        names = []
        for k in range(count):
            name = f"{prefix}{k + 1:06d}"
            index = k + (0 if split == "train" else 1000)
            _write_got10k_sequence(w, key, root / split / name, w.scene(key, index), index)
            exp.track(w.spec.frames)
            names.append(name)
        if split == "train" and w.broken and not bench:
            names += _got10k_broken(w, root / split, len(names), exp)
        _write(root / split / "list.txt", "".join(n + "\n" for n in names))
        names_all += names
    return names_all


def _got10k_broken(w: _Writer, split_dir: Path, start: int, exp: _Expect) -> list[str]:
    n = w.spec.frames
    name_a, name_b, name_c = (f"GOT-10k_Train_{start + k + 1:06d}" for k in range(3))
    seq = split_dir / name_a
    _write_got10k_sequence(w, "got10k", seq, w.scene("broken", 1, events=False), 0)
    gt = seq / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    bad = {  # 0-based frame index -> (line, kind, reason)
        1: ("12.0,abc,30", "malformed_line", R.MALFORMED_LINE),
        2: ("nan,nan,nan,nan", "nan_box", R.NON_FINITE_BOX),
        3: ("10.0,10.0,-5.0,20.0", "negative_box", R.NON_POSITIVE_SIZE),
        4: ("10.0,10.0,0.0,0.0", "zero_box", R.NON_POSITIVE_SIZE),
        5: ("5000.0,5000.0,20.0,20.0", "outside_box", R.BOX_OUTSIDE_IMAGE),
    }
    for i, (line, kind, reason) in bad.items():
        lines[i] = line
        w.note("got10k", f"got10k/train/{name_a}/groundtruth.txt:{i + 1}", kind, "reader", reason, 1)
        exp.rejections[reason] += 1
    gt.write_text("\n".join(lines) + "\n")
    (seq / "00000007.jpg").unlink()
    w.note("got10k", f"got10k/train/{name_a}/00000007.jpg", "missing_frame", "reader", R.MISSING_IMAGE, 1)
    exp.rejections[R.MISSING_IMAGE] += 1
    w.corrupt("got10k", seq / "00000008.jpg", truncated=False)
    w.corrupt("got10k", seq / "00000009.jpg", truncated=True)
    exp.track(n - 6)
    # an empty sequence: listed, empty annotation files, no frames
    for f in ("groundtruth.txt", "absence.label", "cover.label", "cut_by_image.label"):
        _write(split_dir / name_b / f, "")
    w.note("got10k", f"got10k/train/{name_b}", "empty_sequence", "reader", R.EMPTY_SEQUENCE, 1)
    exp.rejections[R.EMPTY_SEQUENCE] += 1
    # absence.label one line short
    seq_c = split_dir / name_c
    _write_got10k_sequence(w, "got10k", seq_c, w.scene("broken", 2), 0)
    flags = (seq_c / "absence.label").read_text().splitlines()[:-1]
    _write(seq_c / "absence.label", "\n".join(flags) + "\n")
    w.note("got10k", f"got10k/train/{name_c}/absence.label", "flag_length_mismatch", "reader",
           R.FLAG_LENGTH_MISMATCH, 1)
    exp.rejections[R.FLAG_LENGTH_MISMATCH] += 1
    return [name_a, name_b, name_c]


def _lasot(w: _Writer, root: Path, exp: _Expect, bench: bool = False) -> list[str]:
    key = "bench_lasot" if bench else "lasot"
    names = []
    n_classes = 1 if bench else w.spec.lasot_classes
    per_class = w.spec.bench_sequences if bench else w.spec.lasot_per_class
    for c in range(n_classes):
        shape = SHAPES[c % len(SHAPES)]
        for k in range(per_class):
            index = c * 100 + k
            scene = w.scene(key, index)
            scene.shapes[0] = shape  # the category folder names the class
            name = f"{shape}-{k + 1}"
            _write_lasot_sequence(w, key, root / shape / name, scene, index)
            exp.track(w.spec.frames)
            names.append(name)
    if w.broken and not bench:
        names += _lasot_broken(w, root, exp)
    _write(root / ("testing_set.txt" if bench else "training_set.txt"), "".join(n + "\n" for n in names))
    return names


def _lasot_broken(w: _Writer, root: Path, exp: _Expect) -> list[str]:
    n = w.spec.frames
    odd = "odd ü class"  # a folder name with a space and a non-ASCII letter: must read normally
    _write_lasot_sequence(w, "lasot", root / odd / f"{odd}-1", w.scene("broken", 10), 0)
    w.note("lasot", f"lasot/{odd}/{odd}-1", "odd_name", "none", None, 0)
    exp.track(n)
    seq = root / "broken" / "broken-1"
    _write_lasot_sequence(w, "lasot", seq, w.scene("broken", 11, events=False), 0)
    lines = (seq / "groundtruth.txt").read_text().splitlines()
    lines[1], lines[2] = "12,13", "NaN,NaN,NaN,NaN"
    _write(seq / "groundtruth.txt", "\n".join(lines) + "\n")
    w.note("lasot", "lasot/broken/broken-1/groundtruth.txt:2", "malformed_line", "reader", R.MALFORMED_LINE, 1)
    w.note("lasot", "lasot/broken/broken-1/groundtruth.txt:3", "nan_box", "reader", R.NON_FINITE_BOX, 1)
    (seq / "img" / "00000004.jpg").unlink()
    w.note("lasot", "lasot/broken/broken-1/img/00000004.jpg", "missing_frame", "reader", R.MISSING_IMAGE, 1)
    w.corrupt("lasot", seq / "img" / "00000005.jpg", truncated=False)
    exp.rejections.update({R.MALFORMED_LINE: 1, R.NON_FINITE_BOX: 1, R.MISSING_IMAGE: 1})
    exp.track(n - 3)
    seq2 = root / "broken" / "broken-2"
    _write_lasot_sequence(w, "lasot", seq2, w.scene("broken", 12), 0)
    _write(seq2 / "out_of_view.txt", ",".join(["0"] * (n - 2)) + "\n")
    w.note("lasot", "lasot/broken/broken-2/out_of_view.txt", "flag_length_mismatch", "reader",
           R.FLAG_LENGTH_MISMATCH, 1)
    exp.rejections[R.FLAG_LENGTH_MISMATCH] += 1
    return [f"{odd}-1", "broken-1", "broken-2"]


# ---------------------------------------------------------------- ImageNet VID / DET


def _voc_xml(folder: str, filename: str, size: tuple[int, int], objects: list[dict]) -> str:
    parts = [f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
             f"\t<source><database>ILSVRC_2015</database></source>\n"
             f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t</size>\n"]
    for o in objects:
        track = f"\t\t<trackid>{o['trackid']}</trackid>\n" if "trackid" in o else ""
        x1, y1, x2, y2 = o["box"]
        parts.append(
            f"\t<object>\n{track}\t\t<name>{o['name']}</name>\n\t\t<bndbox>\n\t\t\t<xmax>{x2}</xmax>\n"
            f"\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymax>{y2}</ymax>\n\t\t\t<ymin>{y1}</ymin>\n\t\t</bndbox>\n"
            f"\t\t<occluded>{o.get('occluded', 0)}</occluded>\n\t\t<generated>0</generated>\n\t</object>\n"
        )
    return "".join(parts) + "</annotation>\n"


def _inclusive_box(box_xywh: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """VOC inclusive integer corners of a box clipped to the image (formats.md §1.3), or None if < 2 px."""
    x, y, bw, bh = (int(v) for v in box_xywh)
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + bw, size[0]) - 1, min(y + bh, size[1]) - 1
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _split_runs(indices: list[int]) -> list[list[int]]:
    """Contiguous runs of sorted frame indices (facts §7.2 snippet split)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _expect_runs(exp: _Expect, indices: list[int]) -> None:
    for run in _split_runs(indices):
        if len(run) >= 2:
            exp.track(len(run))
        else:
            exp.rejections[R.SINGLE_FRAME_SNIPPET] += 1


def _vid(w: _Writer, root: Path, exp: _Expect) -> None:
    size = w.spec.frame_size
    sub = "ILSVRC2015_VID_train_0000"
    count = w.spec.vid_videos + (1 if w.broken else 0)
    for v in range(count):
        is_broken = w.broken and v == w.spec.vid_videos
        scene = w.scene("broken", 20, events=False) if is_broken else w.scene("vid", v, n_targets=2)
        snippet = f"ILSVRC2015_train_{v:08d}"
        data = root / "Data" / "VID" / "train" / sub / snippet
        ann = root / "Annotations" / "VID" / "train" / sub / snippet
        kept: dict[int, list[int]] = {t: [] for t in range(len(scene.shapes))}
        shown = np.array([[not scene.absent[t, i] and _inclusive_box(scene.boxes_xywh[t, i], size) is not None
                           for i in range(len(scene.frames))] for t in range(len(scene.shapes))], bool)
        if not is_broken:  # a one-frame glimpse between absences is left unlabelled (no one-frame snippets)
            shown &= np.pad(shown, ((0, 0), (1, 0)))[:, :-1] | np.pad(shown, ((0, 0), (0, 1)))[:, 1:]
        for i, img in enumerate(scene.frames):
            w.jpeg("vid", data / f"{i:06d}.JPEG", img)
            objects = []
            for t, shape in enumerate(scene.shapes):
                box = _inclusive_box(scene.boxes_xywh[t, i], size)
                if not shown[t, i]:
                    continue  # VID lists only visible objects: a gap in this track's frames
                objects.append({"trackid": t, "name": _wnid(shape), "box": box,
                                "occluded": int(scene.visible[t, i] < 0.9 * scene.in_view[t, i])})
                kept[t].append(i)
            _write(ann / f"{i:06d}.xml", _voc_xml(f"train/{sub}/{snippet}", f"{i:06d}", size, objects))
        if is_broken:
            rel = f"vid/Annotations/VID/train/{sub}/{snippet}"
            _write(ann / "000003.xml", "<annotation><size><width>1")  # unparsable XML
            w.note("vid", f"{rel}/000003.xml", "malformed_xml", "reader", R.BAD_XML, 1)
            text = (ann / "000006.xml").read_text()
            _write(ann / "000006.xml", text.replace("<xmin>", "<xmin>9999").replace("<xmax>", "<xmax>1"))
            w.note("vid", f"{rel}/000006.xml", "negative_box", "reader", R.NON_POSITIVE_SIZE, 1)
            (data / "000009.JPEG").unlink()
            w.note("vid", f"vid/Data/VID/train/{sub}/{snippet}/000009.JPEG", "missing_frame", "reader",
                   R.MISSING_IMAGE, 1)
            w.corrupt("vid", data / "000011.JPEG", truncated=True)
            exp.rejections.update({R.BAD_XML: 1, R.NON_POSITIVE_SIZE: 1, R.MISSING_IMAGE: 1})
            kept[0] = [i for i in kept[0] if i not in (3, 6, 9)]
        for indices in kept.values():
            _expect_runs(exp, indices)


def _det(w: _Writer, root: Path, exp: _Expect) -> None:
    size = w.spec.frame_size
    for k in range(w.spec.det_images):
        scene = w.scene("det", k, n=1, n_targets=1 + k % 3, events=False)
        if k % 3 == 2:  # an ILSVRC2013-style synset folder
            wnid = _wnid(scene.shapes[0])
            rel = f"ILSVRC2013_train/{wnid}/{wnid}_{k}"
        else:
            rel = f"ILSVRC2014_train_0000/ILSVRC2014_train_{k:08d}"
        objects = [] if k == 0 else [  # image 0 has no objects (as some real DET images)
            {"name": _wnid(s), "box": b} for t, s in enumerate(scene.shapes)
            if (b := _inclusive_box(scene.boxes_xywh[t, 0], size)) is not None
        ]
        w.jpeg("det", root / "Data" / "DET" / "train" / f"{rel}.JPEG", scene.frames[0])
        _write(root / "Annotations" / "DET" / "train" / f"{rel}.xml", _voc_xml(rel.rsplit("/", 1)[0],
               rel.rsplit("/", 1)[1], size, objects))
        for _ in objects:
            exp.track(1)
    if not w.broken:
        return
    base = "ILSVRC2014_train_0001"
    scene = w.scene("broken", 30, n=1, events=False)
    box = _inclusive_box(scene.boxes_xywh[0, 0], size)
    good = [{"name": _wnid(scene.shapes[0]), "box": box}]
    items = {  # stem -> (objects, kind, stage, reason, rejections)
        "odd name ü": (good, "odd_name", "none", None, 0),
        "corrupt": (good, "corrupt_jpeg", "decode", R.UNDECODABLE_IMAGE, 0),
        "badxml": (None, "malformed_xml", "reader", R.BAD_XML, 1),
        "zerobox": (good + [{"name": "n90000000", "box": (30, 30, 30, 50)}], "zero_box", "reader",
                    R.NON_POSITIVE_SIZE, 1),
        "noimage": (good, "missing_frame", "reader", R.MISSING_IMAGE, 1),
    }
    for stem, (objects, kind, stage, reason, n_rej) in items.items():
        img_path = root / "Data" / "DET" / "train" / base / f"{stem}.JPEG"
        xml_path = root / "Annotations" / "DET" / "train" / base / f"{stem}.xml"
        if stem != "noimage":
            w.jpeg("det", img_path, scene.frames[0])
        _write(xml_path, "<annotation><object>" if objects is None else _voc_xml(base, stem, size, objects))
        src = xml_path if stage == "reader" and stem != "noimage" else img_path
        if stem == "corrupt":
            w.corrupt("det", img_path, truncated=False)
        else:
            w.note("det", src, kind, stage, reason, n_rej)
        if reason and stage == "reader":
            exp.rejections[reason] += n_rej
        if stem in ("odd name ü", "corrupt", "zerobox"):
            exp.track(1)


# ---------------------------------------------------------------- COCO


def _coco(w: _Writer, root: Path, exp: _Expect) -> None:
    fw, fh = w.spec.frame_size
    images, anns = [], []
    cats = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]

    def add_ann(image_id: int, bbox: list, cat: int, iscrowd: int = 0) -> None:
        x, y, bw, bh = (list(bbox) + [0.0, 0.0])[:4]
        area = bw * bh if all(math.isfinite(v) for v in (bw, bh)) else 0.0
        seg = ({"counts": [0, 10, 5], "size": [fh, fw]} if iscrowd else
               [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]])
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                     "area": area, "iscrowd": iscrowd, "segmentation": seg})

    def add_image(file_name: str, img: np.ndarray | None) -> int:
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": fw, "height": fh})
        if img is not None:
            w.jpeg("coco", root / "train2017" / file_name, img)
        return image_id

    for k in range(w.spec.coco_images):
        scene = w.scene("coco", k, n=1, n_targets=1 + k % 3, events=False)
        image_id = add_image(f"{k + 1:012d}.jpg", scene.frames[0])
        for t, shape in enumerate(scene.shapes):
            box = _inclusive_box(scene.boxes_xywh[t, 0], (fw, fh))
            if box is None:
                continue
            x1, y1, x2, y2 = box
            add_ann(image_id, [float(x1), float(y1), float(x2 - x1 + 1), float(y2 - y1 + 1)],
                    SHAPES.index(shape) + 1)
            exp.track(1)
        if k == 0:  # COCO holds crowd regions; trackers skip them (formats.md §1.5)
            add_ann(image_id, [1.0, 2.0, 60.5, 40.25], 1, iscrowd=1)
            exp.rejections[R.CROWD] += 1
    if w.broken:
        scene = w.scene("broken", 40, n=1, events=False)
        good = [10.5, 12.25, 40.0, 30.0]
        odd = add_image("odd name ü.jpg", scene.frames[0])
        add_ann(odd, good, 1)
        exp.track(1)
        w.note("coco", "coco/train2017/odd name ü.jpg", "odd_name", "none", None, 0)
        bad = add_image("000000999001.jpg", scene.frames[0])
        cases = [([math.nan, 1.0, 10.0, 10.0], "nan_box", R.NON_FINITE_BOX),
                 ([5.0, 5.0, -10.0, 20.0], "negative_box", R.NON_POSITIVE_SIZE),
                 ([5.0, 5.0, 20.0, 0.0], "zero_box", R.NON_POSITIVE_SIZE),
                 ([fw + 50.0, 5.0, 20.0, 20.0], "outside_box", R.BOX_OUTSIDE_IMAGE),
                 ([1.0, 2.0], "malformed_bbox", R.MALFORMED_LINE)]
        for bbox, kind, reason in cases:
            add_ann(bad, bbox, 1)
            w.note("coco", f"coco/annotations/instances_train2017.json#annotation{len(anns)}", kind, "reader",
                   reason, 1)
            exp.rejections[reason] += 1
        add_ann(bad, good, 2)  # the image itself is fine
        exp.track(1)
        add_ann(123456789, good, 1)
        w.note("coco", f"coco/annotations/instances_train2017.json#annotation{len(anns)}", "unknown_image",
               "reader", R.UNKNOWN_IMAGE, 1)
        exp.rejections[R.UNKNOWN_IMAGE] += 1
        missing = add_image("000000999002.jpg", None)
        add_ann(missing, good, 1)
        w.note("coco", "coco/train2017/000000999002.jpg", "missing_frame", "reader", R.MISSING_IMAGE, 1)
        exp.rejections[R.MISSING_IMAGE] += 1
        corrupt = add_image("000000999003.jpg", scene.frames[0])
        add_ann(corrupt, good, 1)
        exp.track(1)
        w.corrupt("coco", root / "train2017" / "000000999003.jpg", truncated=True)
    data = {"info": {"description": f"ocean-ray synthetic seed {w.seed}"}, "licenses": [], "images": images,
            "annotations": anns, "categories": cats}
    _write(root / "annotations" / "instances_train2017.json", json.dumps(data))  # NaN written as NaN


# ---------------------------------------------------------------- YouTube-BB


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, 64, 11))  # YouTube ids: 11 url-safe characters


def _ytbb(w: _Writer, root: Path, exp_v: _Expect, exp_f: _Expect, write_videos: bool) -> None:
    fw, fh = w.spec.frame_size
    fps, secs = w.spec.ytbb_fps, w.spec.ytbb_seconds
    rows: list[str] = []
    ids = []
    for v in range(w.spec.ytbb_videos + (2 if w.broken else 0)):
        rng = _rng(w.seed, "ytbb", 1000 + v)
        yid = _youtube_id(rng)
        ids.append(yid)
        role = None if v < w.spec.ytbb_videos else ("bad_rows" if v == w.spec.ytbb_videos else "missing")
        scene = render_scene(rng, secs * fps, (fw, fh), n_targets=1 if role else 1 + v % 2, **w.looks(role is None))
        if role != "missing":  # extracted frames: one per annotated second (formats.md §1.6: 1 Hz)
            for s in range(secs):
                w.jpeg("ytbb", root / "frames" / yid / f"{s * 1000}.jpg", scene.frames[s * fps])
        if write_videos and role != "missing":
            vw = cv2.VideoWriter(str(root / "videos" / f"{yid}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (fw, fh))
            for img in scene.frames:
                vw.write(img)
            vw.release()
            w.files["ytbb"] += 1
        video_rows = []
        for t, shape in enumerate(scene.shapes):
            n_rows = 0
            for s in range(secs):  # formats.md §1.6: annotations at 1 Hz
                i = s * fps
                box = _inclusive_box(scene.boxes_xywh[t, i], (fw, fh))
                if scene.absent[t, i] or box is None:
                    coords = "-1.0,-1.0,-1.0,-1.0"
                    presence = "absent"
                else:
                    x1, y1, x2, y2 = box
                    coords = f"{x1 / fw:.6g},{(x2 + 1) / fw:.6g},{y1 / fh:.6g},{(y2 + 1) / fh:.6g}"
                    presence = "present"
                video_rows.append(f"{yid},{s * 1000},{SHAPES.index(shape)},{shape},{t},{presence},{coords}")
                n_rows += 1
            if role == "missing":
                for exp in (exp_v, exp_f):
                    exp.rejections[R.MISSING_VIDEO] += 1
                w.note("ytbb", f"ytbb/videos/{yid}.mp4", "missing_video", "reader", R.MISSING_VIDEO, 1)
            elif role == "bad_rows" and t == 0:
                # rows 1, 2 of track 0: NaN and xmax < xmin; its frame at 3 s is not extracted
                base = video_rows[-n_rows:]
                parts = base[1].split(",")
                base[1] = ",".join(parts[:5] + ["present", "nan", "nan", "nan", "nan"])
                parts = base[2].split(",")
                base[2] = ",".join(parts[:5] + ["present", "0.8", "0.2", "0.1", "0.5"])
                video_rows[-n_rows:] = base
                (root / "frames" / yid / "3000.jpg").unlink()
                w.note("ytbb", "ytbb/yt_bb_detection_train.csv", "nan_box", "reader", R.NON_FINITE_BOX, 1)
                w.note("ytbb", "ytbb/yt_bb_detection_train.csv", "negative_box", "reader", R.NON_POSITIVE_SIZE, 1)
                w.note("ytbb", f"ytbb/frames/{yid}/3000.jpg", "missing_frame", "reader", R.MISSING_IMAGE, 1)
                w.broken_items[-1]["media"] = "frames"  # only the extracted-frames mode sees it
                for exp in (exp_v, exp_f):
                    exp.rejections.update({R.NON_FINITE_BOX: 1, R.NON_POSITIVE_SIZE: 1})
                exp_f.rejections[R.MISSING_IMAGE] += 1
                exp_v.track(n_rows - 2)
                exp_f.track(n_rows - 3)
            else:
                exp_v.track(n_rows)
                exp_f.track(n_rows)
        rows += video_rows
    if w.broken:
        rows.append("this,is,not,a,valid,row")
        w.note("ytbb", "ytbb/yt_bb_detection_train.csv", "malformed_line", "reader", R.MALFORMED_LINE, 1)
        for exp in (exp_v, exp_f):
            exp.rejections[R.MALFORMED_LINE] += 1
    _write(root / "yt_bb_detection_train.csv", "\n".join(rows) + "\n")  # no header (formats.md §1.6)


# ---------------------------------------------------------------- benchmarks


def _otb(w: _Writer, root: Path) -> tuple[list[str], int]:
    names, frames = [], 0
    for k in range(w.spec.bench_sequences):
        scene = w.scene("otb", k, full_occlusion=False)
        if scene.absent[0].any():  # OTB targets never vanish here: re-render without events
            scene = w.scene("otb", k, events=False)
        name = f"{scene.shapes[0].capitalize()}{k + 1}"
        for i, img in enumerate(scene.frames):
            w.jpeg("otb", root / name / "img" / f"{i + 1:04d}.jpg", img)  # formats.md §2.1: 4-digit, 1-based
        sep = "\t" if k % 2 else ","  # real copies use commas, tabs or spaces (formats.md §2.1)
        _write(root / name / "groundtruth_rect.txt", "".join(
            sep.join(str(int(v) + (1 if j < 2 else 0)) for j, v in enumerate(b)) + "\n" for b in scene.boxes_xywh[0]))
        names.append(name)
        frames += len(scene.frames)
    return names, frames


def _vot(w: _Writer, root: Path) -> tuple[list[str], int]:
    seq_root = root / "sequences"
    names, frames = [], 0
    for k in range(w.spec.bench_sequences):
        scene = w.scene("vot", k, w.spec.vot_frames, full_occlusion=False)
        if scene.absent[0].any():
            scene = w.scene("vot", k, w.spec.vot_frames, events=False)
        name = f"{scene.shapes[0]}{k + 1}"
        img_dir = seq_root / name / "color" if k % 2 == 0 else seq_root / name
        for i, img in enumerate(scene.frames):
            w.jpeg("vot2018", img_dir / f"{i + 1:08d}.jpg", img)
        lines = []
        for x, y, bw, bh in scene.boxes_xywh[0]:
            x2, y2 = x + bw, y + bh
            lines.append(",".join(f"{v:.2f}" for v in (x, y, x2, y, x2, y2, x, y2)))  # 0-based polygon
        _write(seq_root / name / "groundtruth.txt", "\n".join(lines) + "\n")
        occ = scene.visible[0] < 0.9 * scene.in_view[0]
        _write(seq_root / name / "occlusion.tag", "".join(f"{int(o)}\n" for o in occ))
        names.append(name)
        frames += len(scene.frames)
    _write(seq_root / "list.txt", "".join(n + "\n" for n in names))
    return names, frames


# ---------------------------------------------------------------- entry point


def generate(out: str | Path, seed: int = 0, size: str = "tiny", broken: bool = False,
             frame_size: tuple[int, int] | None = None, variety: bool = False, busy: float = 0.0,
             scenes: int = 1, lookalike: float = 0.0, wide_targets: float = 0.0) -> dict:
    """Write all six training layouts and four benchmark layouts under ``out``; return the manifest.

    Writes::

        OUT/
          synth_manifest.json
          got10k/train/list.txt, train/GOT-10k_Train_000001/{00000001.jpg.., groundtruth.txt, absence.label,
                 cover.label, cut_by_image.label, meta_info.ini}; val/ (same, GOT-10k_Val_000001 ..)
          lasot/<shape>/<shape>-<k>/{img/00000001.jpg.., groundtruth.txt (1-based), full_occlusion.txt,
                 out_of_view.txt, nlp.txt}; training_set.txt
          vid/Data/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_<8 digits>/000000.JPEG ..
              Annotations/VID/train/.../000000.xml ..
          det/Data/DET/train/ILSVRC2014_train_0000/ILSVRC2014_train_<8 digits>.JPEG,
              Data/DET/train/ILSVRC2013_train/<wnid>/<wnid>_<n>.JPEG, Annotations/DET/train/<same>.xml
          coco/train2017/<12 digits>.jpg, coco/annotations/instances_train2017.json
          ytbb/yt_bb_detection_train.csv (no header), ytbb/videos/<youtube_id>.mp4,
              ytbb/frames/<youtube_id>/<timestamp_ms>.jpg
          benchmarks/otb/<Seq>/{img/0001.jpg.., groundtruth_rect.txt (1-based)}
          benchmarks/vot2018/sequences/{list.txt, <seq>/color/00000001.jpg.. (even-numbered sequences) or
              <seq>/00000001.jpg.. (odd), <seq>/groundtruth.txt (8-value polygons, 0-based), <seq>/occlusion.tag}
          benchmarks/got10k/val/{list.txt, GOT-10k_Val_000001/..}   (full labels, like the real val split)
          benchmarks/lasot/{testing_set.txt, <shape>/<shape>-<k>/..}

    Shape names are the classes (LaSOT categories, COCO categories, YT-BB class names; VID / DET wnids are
    ``n9000000<k>`` for shape k). Everything is deterministic from ``seed`` (each sequence has its own
    ``np.random.default_rng([seed, stream, index])``), so adding broken items never changes clean ones.

    ``synth_manifest.json`` schema (version 1)::

        {"schema": 1, "seed": int, "size": "tiny"|"small"|"medium", "broken": bool, "variety": bool, "busy": float,
         "scenes": int, "lookalike": float, "wide_targets": float,
         "frame_size": [w, h],
         "ytbb_media": ["videos", "frames"] or ["frames"] (when OpenCV cannot write mp4v),
         "datasets": {NAME: {"root": "got10k", "files": int,
             "expected": {"tracks": int, "frames": int, "rejections": {reason: count}}}},
             # for ytbb "expected" is {"videos": {...}, "frames": {...}}: the media mode changes the counts
         "benchmarks": {"otb"|"vot2018"|"got10k"|"lasot": {"root": "benchmarks/otb", "sequences": [names],
             "frames": int}},
         "broken_items": [{"dataset": NAME, "source": "relative/path[:line]", "kind": "corrupt_jpeg"|...,
             "stage": "reader"|"decode"|"none", "reason": reason or null, "count": rejections it causes,
             "media": "frames" (only on YT-BB items that just one media mode sees)}]}

    ``expected`` is what :func:`data_prep.readers.read_tracks` with default options must yield (tracks, frames
    summed over tracks, rejections by reason). Broken items with ``stage == "decode"`` (corrupt / truncated
    JPEGs) pass the readers (which never decode) and must be rejected by whoever decodes them;
    ``stage == "none"`` items (odd file names) must be read normally.

    Args:
        out: destination folder (created; existing files with the same names are overwritten).
        seed: fixes every pixel and annotation.
        size: ``"tiny"`` (seconds, for unit tests), ``"small"`` (a few times more, for the learning test) or
            ``"medium"`` (640x360 frames, 4x the training videos of ``"small"``; the preparation benchmark).
        broken: also write the broken items listed in the manifest's ``broken_items``.
        frame_size: ``(width, height)`` overriding the size's frame size (e.g. 1280x720 frames for the
            preparation benchmark); the manifest records it.
        variety: render the training datasets with :func:`data_prep.synthetic_scene.render_scene`'s
            ``variety`` (busy backgrounds, more distractors, wider aspect and scale change, illumination and
            blur); the benchmarks are the same either way. Off by default: in the 5-epoch quickstart it
            lowered the synthetic OTB score and did not raise the held-out one (BENCHMARKS.md,
            "Generalisation"). The manifest records it.
        busy: the share of training scenes drawn on a busy background (shape clutter, checks, stripes), with
            everything else as the default look (:func:`data_prep.synthetic_scene.render_scene`); ignored with
            ``variety``. 0 (default) writes the same files as before. The quickstart uses 0.5 with
            ``scenes=4``: on its own, one run raised the held-out and synthetic OTB scores and another
            lowered them; with four times the scenes it raised the held-out score over three seeds
            (BENCHMARKS.md, "Generalisation"). The manifest records it.
        scenes: multiplies the size's training videos and images (GOT-10k train, LaSOT per class, VID, DET,
            COCO, YT-BB): up to 49 for ``"tiny"``, 33 for ``"small"``, 15 for ``"medium"``; the benchmarks
            are unchanged. Each scene keeps its own generator and name, so every scene of ``scenes=1`` is
            drawn the same in any larger ``scenes``. 1 (default) writes the same files as before; the
            quickstart uses 4 (more distinct scenes at the same pairs per epoch; BENCHMARKS.md,
            "Generalisation"). The manifest records it.
        lookalike: the share of the training scenes' distractors redrawn as near twins of the target (its
            shape and pattern, hue turned and mirrored: :func:`data_prep.synthetic_scene.look_alike`). 0
            (default) writes the same files as before. Off in the quickstart: with ``scenes=4, busy=0.5`` a
            share of 0.5 lowered the held-out score for both seeds tried (BENCHMARKS.md, "Generalisation").
            The manifest records it.
        wide_targets: the share of the training scenes' targets and distractors drawn as a random polygon in
            a wider family of looks (:func:`data_prep.synthetic_scene.random_mask`, ``wide_texture``); class
            names stay the scene's shape names. 0 (default) writes the same files as before; 0.5 moved
            neither held-out score (BENCHMARKS.md, "Generalisation"). The manifest records it.
    """
    for name, share in (("busy", busy), ("lookalike", lookalike), ("wide_targets", wide_targets)):
        if not 0.0 <= float(share) <= 1.0:
            raise ValueError(f"{name} must be a share in [0, 1], not {share!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = scaled_spec(SIZES[size], scenes)
    if frame_size is not None:
        spec = dataclass_replace(spec, frame_size=tuple(frame_size))
    w = _Writer(out, seed, spec, broken, variety, float(busy), float(lookalike), float(wide_targets))
    exp = {name: _Expect() for name in ("got10k", "lasot", "vid", "det", "coco")}
    _got10k(w, out / "got10k", exp["got10k"])
    _lasot(w, out / "lasot", exp["lasot"])
    _vid(w, out / "vid", exp["vid"])
    _det(w, out / "det", exp["det"])
    _coco(w, out / "coco", exp["coco"])
    (out / "ytbb" / "videos").mkdir(parents=True, exist_ok=True)
    probe = cv2.VideoWriter(str(out / "ytbb" / "videos" / ".probe.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 4, (64, 48))
    can_write_video = probe.isOpened()
    probe.release()
    (out / "ytbb" / "videos" / ".probe.mp4").unlink(missing_ok=True)
    exp_v, exp_f = _Expect(), _Expect()
    _ytbb(w, out / "ytbb", exp_v, exp_f, can_write_video)

    bench: dict[str, dict] = {}
    names, frames = _otb(w, out / "benchmarks" / "otb")
    bench["otb"] = {"root": "benchmarks/otb", "sequences": names, "frames": frames}
    names, frames = _vot(w, out / "benchmarks" / "vot2018")
    bench["vot2018"] = {"root": "benchmarks/vot2018", "sequences": names, "frames": frames}
    names = _got10k(w, out / "benchmarks" / "got10k", _Expect(), bench=True)
    bench["got10k"] = {"root": "benchmarks/got10k", "sequences": names, "frames": len(names) * spec.frames}
    names = _lasot(w, out / "benchmarks" / "lasot", _Expect(), bench=True)
    bench["lasot"] = {"root": "benchmarks/lasot", "sequences": names, "frames": len(names) * spec.frames}

    datasets = {name: {"root": name, "files": w.files[name], "expected": e.as_dict()} for name, e in exp.items()}
    datasets["ytbb"] = {"root": "ytbb", "files": w.files["ytbb"],
                        "expected": {"frames": exp_f.as_dict(), **({"videos": exp_v.as_dict()} if can_write_video else {})}}
    manifest = {
        "schema": SCHEMA_VERSION,
        "seed": seed,
        "size": size,
        "broken": broken,
        "variety": variety,
        "busy": float(busy),
        "scenes": scenes,
        "lookalike": float(lookalike),
        "wide_targets": float(wide_targets),
        "frame_size": list(spec.frame_size),
        "ytbb_media": ["videos", "frames"] if can_write_video else ["frames"],
        "datasets": datasets,
        "benchmarks": bench,
        "broken_items": w.broken_items,
    }
    _write(out / "synth_manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest
