"""Readers for the real on-disk layouts of the evaluation benchmarks (formats.md §2), from a local folder or
``s3://bucket/prefix`` (:func:`ocean.datapath.as_path`: frames are then :class:`~ocean.datapath.DataPath` s).

:func:`read_benchmark` (or :func:`read_otb`, :func:`read_vot`, :func:`read_got10k`, :func:`read_lasot`,
:func:`read_uav`, :func:`read_dtb70`, :func:`read_nfs`, :func:`read_tnl2k`, :func:`read_trackingnet`, each
documenting the layout it reads) returns :class:`~ocean.benchmarks.sequence.Sequence` objects with
0-based x,y,w,h GT, converted from each benchmark's own convention. Malformed input raises
:class:`~ocean.benchmarks.sequence.AnnotationError` naming the file (and line).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ocean.benchmarks.regions import polygon_to_xywh_extent
from ocean.benchmarks.sequence import AnnotationError, Sequence
from ocean.datapath import as_path, check_readable_folder, open_text
from ocean.storage import StorageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# OTB sequences whose ground truth starts at a frame other than 1 (first image of OTB2015.json, from
# foolwood/DaSiamRPN code/data/OTB2015.json; same values as the OTB toolkit's configSeqs.m).
OTB_START_FRAMES = {"David": 300, "BlurCar1": 247, "BlurCar3": 3, "BlurCar4": 18, "Tiger1": 6}

_SEP = re.compile(r"[,\s]+")


def read_numeric_lines(path: Path, allowed_widths: tuple[int, ...], allow_nan: bool = False) -> list[np.ndarray]:
    """Parse a text file of numbers, one record per non-empty line, separated by commas, tabs or spaces.

    Raises AnnotationError naming the file and 1-based line on a non-number or a wrong value count, and on
    a NaN unless ``allow_nan`` (UAV123 writes ``NaN,NaN,NaN,NaN`` where the target is out of view).
    """
    path = as_path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: file not found")
    rows = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip().strip(",")
            if not text:
                continue
            parts = [p for p in _SEP.split(text) if p]
            try:
                values = np.array([float(p) for p in parts], dtype=np.float64)
            except ValueError:
                raise AnnotationError(f"{path}:{lineno}: not a number in {text!r}") from None
            if len(values) not in allowed_widths:
                raise AnnotationError(
                    f"{path}:{lineno}: expected {' or '.join(map(str, allowed_widths))} values, got {len(values)}"
                )
            if not np.all(np.isfinite(values) | (allow_nan & np.isnan(values))):
                raise AnnotationError(f"{path}:{lineno}: non-finite value in {text!r}")
            rows.append(values)
    return rows


def _boxes(path: Path, allow_nan: bool = False) -> np.ndarray:
    rows = read_numeric_lines(path, (4,), allow_nan)
    if not rows:
        raise AnnotationError(f"{path}: no boxes")
    return np.stack(rows)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _frame_number(p: Path) -> int:
    digits = re.sub(r"\D", "", p.stem)
    return int(digits) if digits else -1


def read_flags(path: Path, n: int | None = None) -> np.ndarray:
    """0/1 flags either on ONE comma-separated line (native LaSOT full_occlusion.txt / out_of_view.txt)
    or one per line (LaSOT toolkit ``absent/<seq>.txt``, GOT-10k ``absence.label``); (N,) int array."""
    path = as_path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    parts = [p for p in _SEP.split(text.strip()) if p]
    try:
        flags = np.array([int(float(p)) for p in parts], dtype=np.int64)
    except ValueError:
        raise AnnotationError(f"{path}: flags must be integers") from None
    if n is not None and len(flags) != n:
        raise AnnotationError(f"{path}: {len(flags)} flags for {n} frames")
    return flags


def _list_names(root: Path, list_name: str) -> list[str] | None:
    lst = root / list_name
    if lst.is_file():
        return [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
    return None


# --- OTB ------------------------------------------------------------------------------------------------


def read_otb_sequence(seq_dir: Path, benchmark: str = "otb",
                      start_frames: Mapping[str, int] = OTB_START_FRAMES) -> list[Sequence]:
    """One OTB folder -> one Sequence, or two for two-target folders (``<Seq>-1``, ``<Seq>-2``); DTB70
    folders have the same layout (``benchmark="dtb70"``, no start-frame table)."""
    seq_dir = as_path(seq_dir)
    base = seq_dir.name
    images = _images(seq_dir / "img")
    if not images:
        raise AnnotationError(f"{seq_dir / 'img'}: no images")
    by_number = {_frame_number(p): p for p in images}
    single = seq_dir / "groundtruth_rect.txt"
    if single.is_file():
        gt_files = [(base, single)]
    else:
        multi = sorted(seq_dir.glob("groundtruth_rect.*.txt"))
        if not multi:
            raise AnnotationError(f"{seq_dir}: no groundtruth_rect.txt (nor groundtruth_rect.<k>.txt)")
        gt_files = [(f"{base}-{p.name.split('.')[1]}", p) for p in multi]
    out = []
    for name, gt_path in gt_files:
        gt = _boxes(gt_path) - np.array([1.0, 1.0, 0.0, 0.0])  # OTB is 1-based (formats.md §2.1, facts §9.1)
        start = start_frames.get(base, min(by_number))
        numbers = range(start, start + len(gt))
        missing = [k for k in numbers if k not in by_number]
        if missing:
            raise AnnotationError(
                f"{gt_path}: {len(gt)} boxes from frame {start} but image {missing[0]:04d} is missing in {seq_dir / 'img'}"
            )
        out.append(Sequence(name, benchmark, [by_number[k] for k in numbers], gt, start_frame=start))
    return out


def read_otb(root: Path) -> list[Sequence]:
    """All OTB sequences under ``root`` (folders holding ``img/``), sorted by folder name.

    OTB-100: ``<Seq>/img/0001.jpg``, ``groundtruth_rect.txt`` 1-based, separated by commas, tabs or
    spaces. Two-target sequences (``groundtruth_rect.1.txt`` / ``.2.txt``) become ``<Seq>-1`` / ``<Seq>-2``
    (pysot's names: Jogging-1, Skating2-2, Human4-2). Start frames other than 1 come from
    :data:`OTB_START_FRAMES` (OTB2015.json, real_samples/otb2015_annotations_json).
    """
    root = as_path(root)
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "img").is_dir())
    if not dirs:
        raise AnnotationError(f"{root}: no OTB sequence folders (<Seq>/img/)")
    return [s for d in dirs for s in read_otb_sequence(d)]


# --- VOT ------------------------------------------------------------------------------------------------


def read_vot_sequence(seq_dir: Path) -> Sequence:
    """A VOT sequence folder: frames flat (VOT <= 2019 toolkit) or under ``color/`` (newer toolkit)."""
    seq_dir = as_path(seq_dir)
    images = _images(seq_dir / "color") or _images(seq_dir)
    if not images:
        raise AnnotationError(f"{seq_dir}: no frames (flat or under color/)")
    rows = read_numeric_lines(seq_dir / "groundtruth.txt", (4, 8))
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise AnnotationError(f"{seq_dir / 'groundtruth.txt'}: mixes 4-value and 8-value lines")
    if len(rows) != len(images):
        raise AnnotationError(f"{seq_dir / 'groundtruth.txt'}: {len(rows)} lines for {len(images)} frames")
    arr = np.stack(rows)
    if arr.shape[1] == 8:
        return Sequence(seq_dir.name, "vot", images, polygon_to_xywh_extent(arr), gt_poly=arr)
    return Sequence(seq_dir.name, "vot", images, arr)


def _sequence_names(root: Path, benchmark: str) -> list[str]:
    """Names from ``list.txt`` when present, else every sub-folder with a ``groundtruth.txt``."""
    names = _list_names(root, "list.txt")
    if names is None:
        names = sorted(d.name for d in root.iterdir() if (d / "groundtruth.txt").is_file())
    if not names:
        raise AnnotationError(f"{root}: no {benchmark} sequences (list.txt or <seq>/groundtruth.txt)")
    return names


def read_vot(root: Path) -> list[Sequence]:
    """A VOT ``sequences`` folder: names from ``list.txt`` when present, else every sub-folder with a
    ``groundtruth.txt``.

    VOT 2018/2019: ``list.txt`` (optional), frames flat or under ``color/``, 8-value polygons or 4-value boxes.
    """
    root = as_path(root)
    return [read_vot_sequence(root / n) for n in _sequence_names(root, "VOT")]


# --- GOT-10k --------------------------------------------------------------------------------------------


def _resolution(meta_path: Path) -> tuple[int, int] | None:
    if not meta_path.is_file():
        return None
    for line in meta_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip().startswith("resolution"):
            nums = re.findall(r"\d+", line.split(":", 1)[-1])
            if len(nums) == 2:
                return int(nums[0]), int(nums[1])
            raise AnnotationError(f"{meta_path}: cannot parse {line.strip()!r} (expected '(w, h)')")
    return None


def read_got10k_sequence(seq_dir: Path) -> Sequence:
    """A GOT-10k val or test folder. Test folders hold only the first GT line: gt_complete=False and
    rows 1.. are NaN. Presence: cover.label > 0 (got10k toolkit), else absence.label == 0, else all."""
    seq_dir = as_path(seq_dir)
    images = _images(seq_dir)
    if not images:
        raise AnnotationError(f"{seq_dir}: no frames")
    gt_path = seq_dir / "groundtruth.txt"
    gt = _boxes(gt_path)
    n = len(images)
    complete = len(gt) == n
    if not complete:
        if len(gt) != 1:
            raise AnnotationError(f"{gt_path}: {len(gt)} lines for {n} frames (expected {n}, or 1 for test)")
        gt = np.vstack([gt, np.full((n - 1, 4), np.nan)])
    present = np.ones(n, dtype=bool)
    if complete and (seq_dir / "cover.label").is_file():
        present = read_flags(seq_dir / "cover.label", n) > 0
    elif complete and (seq_dir / "absence.label").is_file():
        present = read_flags(seq_dir / "absence.label", n) == 0
    return Sequence(
        seq_dir.name,
        "got10k",
        images,
        gt,
        present=present,
        gt_complete=complete,
        resolution_wh=_resolution(seq_dir / "meta_info.ini"),
    )


def read_got10k(root: Path) -> list[Sequence]:
    """``GOT-10k/val`` or ``GOT-10k/test``: names from ``list.txt`` when present, else sub-folders with a
    ``groundtruth.txt``.

    GOT-10k val/test: ``list.txt`` (optional), ``groundtruth.txt`` 0-based (test: first line only),
    ``cover.label`` / ``absence.label``, ``meta_info.ini`` resolution.
    """
    root = as_path(root)
    return [read_got10k_sequence(root / n) for n in _sequence_names(root, "GOT-10k")]


# --- LaSOT ----------------------------------------------------------------------------------------------


def lasot_present(full_occlusion: np.ndarray, out_of_view: np.ndarray) -> np.ndarray:
    """A LaSOT frame is present when neither flag is 1 (formats.md §1.2)."""
    return (np.asarray(full_occlusion) == 0) & (np.asarray(out_of_view) == 0)


def read_lasot_sequence(seq_dir: Path) -> Sequence:
    """A LaSOT folder ``<cat>/<seq>``: img/, groundtruth.txt (1-based), full_occlusion.txt and
    out_of_view.txt; a toolkit-style ``absent.txt`` (one 0/1 per line, 1 = absent) is accepted instead."""
    seq_dir = as_path(seq_dir)
    images = _images(seq_dir / "img")
    if not images:
        raise AnnotationError(f"{seq_dir / 'img'}: no images")
    gt_path = seq_dir / "groundtruth.txt"
    gt = _boxes(gt_path) - np.array([1.0, 1.0, 0.0, 0.0])  # LaSOT is 1-based (formats.md §1.2)
    n = len(gt)
    if n > len(images):
        raise AnnotationError(f"{gt_path}: {n} boxes but only {len(images)} images")
    fo, oov, absent = seq_dir / "full_occlusion.txt", seq_dir / "out_of_view.txt", seq_dir / "absent.txt"
    if fo.is_file() and oov.is_file():
        present = lasot_present(read_flags(fo, n), read_flags(oov, n))
    elif absent.is_file():
        present = read_flags(absent, n) == 0
    else:
        raise AnnotationError(f"{seq_dir}: no full_occlusion.txt/out_of_view.txt (nor absent.txt)")
    return Sequence(seq_dir.name, "lasot", images[:n], gt, present=present)


def read_lasot_toolkit_annotation(annos_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The LaSOT evaluation toolkit's ``annos/<seq>.txt`` + ``annos/absent/<seq>.txt`` (no images):
    returns (gt_xywh 0-based (N, 4), present (N,) bool)."""
    annos_dir = as_path(annos_dir)
    gt = _boxes(annos_dir / f"{name}.txt") - np.array([1.0, 1.0, 0.0, 0.0])
    present = read_flags(annos_dir / "absent" / f"{name}.txt", len(gt)) == 0
    return gt, present


def read_lasot(root: Path) -> list[Sequence]:
    """LaSOT: ``root/<cat>/<seq>`` (the download) or ``root/<seq>`` folders. With ``testing_set.txt`` in
    root only those sequences are read (they must all exist); otherwise every folder found.

    LaSOT: ``<cat>/<seq>/img``, ``groundtruth.txt`` 1-based, presence from ``full_occlusion.txt`` and
    ``out_of_view.txt`` (never from the boxes), also the evaluation toolkit's one-flag-per-line files.
    """
    root = as_path(root)
    names = _list_names(root, "testing_set.txt")
    found = {}
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        if (d / "groundtruth.txt").is_file():
            found[d.name] = d
        else:
            for s in sorted(d.iterdir()):
                if s.is_dir() and (s / "groundtruth.txt").is_file():
                    found[s.name] = s
    if names is not None:
        missing = [n for n in names if n not in found]
        if missing:
            raise AnnotationError(
                f"{root / 'testing_set.txt'}: {len(missing)} listed sequences missing, e.g. {missing[0]}"
            )
        dirs = [found[n] for n in names]
    else:
        dirs = list(found.values())
    if not dirs:
        raise AnnotationError(f"{root}: no LaSOT sequences")
    return [read_lasot_sequence(d) for d in dirs]


# --- DTB70 ----------------------------------------------------------------------------------------------


def read_dtb70(root: Path) -> list[Sequence]:
    """DTB70: ``<Seq>/img/00001.jpg`` (5 digits), ``groundtruth_rect.txt`` (x,y,w,h floats, commas), the OTB
    layout without two-target folders or start-frame table (formats.md §2.6); 1-based as OTB."""
    root = as_path(root)
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "img").is_dir())
    if not dirs:
        raise AnnotationError(f"{root}: no DTB70 sequence folders (<Seq>/img/)")
    return [s for d in dirs for s in read_otb_sequence(d, "dtb70", {})]


# --- UAV123 / UAV20L / UAV123@10fps -----------------------------------------------------------------------

# version -> (annotation folder under anno/, frame folder under data_seq/) -- formats.md §2.5
UAV_VERSIONS = {"uav123": ("UAV123", "UAV123"), "uav20l": ("UAV20L", "UAV123"),
                "uav123_10fps": ("UAV123_10fps", "UAV123_10fps")}
# First frame of the UAV123 sequences that are a later part of a longer video (``bird1_2`` starts at frame
# 775 of data_seq/UAV123/bird1); every other sequence starts at frame 1. Used when the download's own
# configSeqs.m is absent. 30 fps: the startFrame values of pytracking's uavdataset.py (the UAV toolkit's
# configSeqs); 10 fps: the UAV123_10fps download's configSeqs.m (formats.md §2.5).
UAV_START_FRAMES = {
    "uav123": dict(bird1_2=775, bird1_3=1573, car1_2=751, car1_3=1627, car16_2=415, car6_2=487, car6_3=1807,
                   car6_4=2953, car6_5=3925, car8_2=1357, group1_2=1333, group1_3=2515, group1_4=3925,
                   group2_2=907, group2_3=1771, group3_2=1567, group3_3=2827, group3_4=4369, person12_2=601,
                   person14_2=847, person14_3=1813, person17_2=1501, person19_2=1243, person19_3=2791,
                   person2_2=1189, person4_2=1501, person5_2=877, person7_2=1249, person8_2=1075,
                   truck4_2=577, uav1_2=1555, uav1_3=2473),
    "uav123_10fps": dict(bird1_2=259, bird1_3=525, car1_2=251, car1_3=543, car16_2=139, car6_2=163, car6_3=603,
                         car6_4=985, car6_5=1309, car8_2=453, group1_2=445, group1_3=839, group1_4=1309,
                         group2_2=303, group2_3=591, group3_2=523, group3_3=943, group3_4=1457, person12_2=201,
                         person14_2=283, person14_3=605, person17_2=501, person19_2=415, person19_3=931,
                         person2_2=397, person4_2=501, person5_2=293, person7_2=417, person8_2=359,
                         truck4_2=193, uav1_2=519, uav1_3=825),
    "uav20l": {},
}
_CONFIG_SEQ = re.compile(
    r"'name'\s*,\s*'([^']+)'\s*,\s*'path'\s*,\s*'([^']*)'\s*,\s*'startFrame'\s*,\s*(\d+)\s*,\s*'endFrame'\s*,\s*(\d+)"
)


def read_uav_config_seqs(path: Path) -> dict[str, tuple[str, int, int]]:
    """The UAV toolkit's ``configSeqs.m`` (shipped in the UAV123 downloads): ``{name: (frame folder, start,
    end)}`` from its ``struct('name', .., 'path', .., 'startFrame', .., 'endFrame', ..)`` entries."""
    text = as_path(path).read_text(encoding="utf-8", errors="replace")
    out = {}
    for name, folder, start, end in _CONFIG_SEQ.findall(text):
        parts = [p for p in re.split(r"[\\/]", folder) if p]
        out[name] = (parts[-1] if parts else name, int(start), int(end))
    return out


def read_uav(root: Path, version: str = "uav123") -> list[Sequence]:
    """UAV123 (``version`` uav123), UAV20L (uav20l) or UAV123@10fps (uav123_10fps) from the download root.

    Layout: ``anno/<UAV123|UAV20L|UAV123_10fps>/<seq>.txt`` (x,y,w,h 1-based, commas; ``NaN`` rows where the
    target is fully occluded or out of view: present False) and ``data_seq/<UAV123|UAV123_10fps>/<video>/
    000001.jpg``. A sequence ``<video>_<k>`` is a part of ``<video>``: its first frame comes from the
    download's ``configSeqs.m`` when present, else :data:`UAV_START_FRAMES`; it has one frame per GT line.
    UAV20L's 20 sequences are whole videos of ``data_seq/UAV123``.
    """
    root = as_path(root)
    if version not in UAV_VERSIONS:
        raise ValueError(f"unknown UAV version {version!r}; one of {sorted(UAV_VERSIONS)}")
    anno_name, frames_name = UAV_VERSIONS[version]
    anno_dir = root / "anno" / anno_name
    if not anno_dir.is_dir():
        raise AnnotationError(f"{root}: no anno/{anno_name}/ folder (the {version} download root holds anno/, data_seq/)")
    config = root / "configSeqs.m"
    table = read_uav_config_seqs(config) if config.is_file() and version != "uav20l" else {}
    names = sorted(p.stem for p in anno_dir.iterdir() if p.suffix == ".txt")
    if not names:
        raise AnnotationError(f"{anno_dir}: no <seq>.txt annotation files")
    out = []
    for name in names:
        gt = _boxes(anno_dir / f"{name}.txt", allow_nan=True) - np.array([1.0, 1.0, 0.0, 0.0])  # 1-based
        folder = re.sub(r"_\d+$", "", name) if version != "uav20l" else name
        start = UAV_START_FRAMES[version].get(name, 1)
        if name in table:
            folder, start, _end = table[name]
        frame_dir = root / "data_seq" / frames_name / folder
        by_number = {_frame_number(p): p for p in _images(frame_dir)}
        numbers = range(start, start + len(gt))
        missing = [k for k in numbers if k not in by_number]
        if missing:
            raise AnnotationError(
                f"{anno_dir / (name + '.txt')}: {len(gt)} boxes from frame {start} but image {missing[0]:06d}.jpg "
                f"is missing in {frame_dir}"
            )
        if not np.all(np.isfinite(gt[0])):
            raise AnnotationError(f"{anno_dir / (name + '.txt')}: the first box (the initialisation) is NaN")
        present = np.all(np.isfinite(gt), axis=1)
        out.append(Sequence(name, "uav", [by_number[k] for k in numbers], gt, present=present, start_frame=start))
    return out


# --- NfS (30 fps) ---------------------------------------------------------------------------------------


def _nfs_boxes(path: Path) -> np.ndarray:
    """NfS annotation lines ``<track id> xmin ymin xmax ymax <frame> <lost> <occluded> <generated> "<label>"``
    (spaces) -> (N, 4) x,y,w,h with w = xmax - xmin, h = ymax - ymin (formats.md §2.7)."""
    path = as_path(path)
    rows = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                x1, y1, x2, y2 = (float(v) for v in parts[1:5])
            except ValueError:
                raise AnnotationError(f"{path}:{lineno}: expected '<id> xmin ymin xmax ymax ...', got {line.strip()!r}") from None
            rows.append((x1, y1, x2 - x1, y2 - y1))
    if not rows:
        raise AnnotationError(f"{path}: no boxes")
    return np.array(rows, dtype=np.float64)


def read_nfs(root: Path, fps: int = 30) -> list[Sequence]:
    """NfS (Need for Speed) at ``fps`` 30: ``<Seq>/30/<Seq>.txt`` and ``<Seq>/30/<Seq>/00001.jpg ...``.

    The 30 fps folder may carry the 240 fps annotation (8 lines per frame): then every 8th line is kept;
    one line more or less than frames is trimmed to the shorter (both as the got10k toolkit's NfS reader).
    Boxes are used as written (taken as 0-based); every frame counts as present.
    """
    root = as_path(root)
    out = []
    for seq_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        anno = seq_dir / str(fps) / f"{seq_dir.name}.txt"
        if not anno.is_file():
            continue
        frames = _images(seq_dir / str(fps) / seq_dir.name)
        if not frames:
            raise AnnotationError(f"{seq_dir / str(fps) / seq_dir.name}: no frames")
        gt = _nfs_boxes(anno)
        if len(gt) != len(frames) and abs(len(gt) / len(frames) - 8) < 1:
            gt = gt[::8]  # 240 fps annotation beside 30 fps frames
        if abs(len(gt) - len(frames)) == 1:
            n = min(len(gt), len(frames))
            gt, frames = gt[:n], frames[:n]
        if len(gt) != len(frames):
            raise AnnotationError(f"{anno}: {len(gt)} boxes for {len(frames)} frames")
        out.append(Sequence(seq_dir.name, "nfs", frames, gt))
    if not out:
        raise AnnotationError(f"{root}: no NfS sequences (<Seq>/{fps}/<Seq>.txt)")
    return out


# --- TNL2K ----------------------------------------------------------------------------------------------


def read_tnl2k(root: Path) -> list[Sequence]:
    """TNL2K (test): ``<seq>/imgs/*.jpg|png`` (sorted by name), ``<seq>/groundtruth.txt`` (x,y,w,h, commas),
    ``<seq>/language.txt``. Rows with w or h <= 0 mark the target absent (present False); boxes are used as
    written. The sequence has one frame per GT line (extra images are ignored)."""
    root = as_path(root)
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "groundtruth.txt").is_file())
    if not dirs:
        raise AnnotationError(f"{root}: no TNL2K sequences (<seq>/groundtruth.txt, <seq>/imgs/)")
    out = []
    for d in dirs:
        frames = _images(d / "imgs")
        gt = _boxes(d / "groundtruth.txt")
        if len(gt) > len(frames):
            raise AnnotationError(f"{d / 'groundtruth.txt'}: {len(gt)} boxes but only {len(frames)} images in {d / 'imgs'}")
        present = (gt[:, 2] > 0) & (gt[:, 3] > 0)
        if not present[0]:
            raise AnnotationError(f"{d / 'groundtruth.txt'}:1: the first box (the initialisation) is empty")
        out.append(Sequence(d.name, "tnl2k", frames[: len(gt)], gt, present=present))
    return out


# --- TrackingNet ----------------------------------------------------------------------------------------


def read_trackingnet(root: Path) -> list[Sequence]:
    """A TrackingNet split folder (``TEST`` or ``TRAIN_<k>``; the TrackingNet root is taken as its ``TEST``):
    ``anno/<seq>.txt`` (x,y,w,h, commas; the TEST split has the first frame's box only, like GOT-10k test:
    gt_complete False) and ``frames/<seq>/0.jpg, 1.jpg, ...`` (numbered from 0, no padding: sorted by
    number). Boxes are used as written (0-based)."""
    root = as_path(root)
    if not (root / "anno").is_dir() and (root / "TEST" / "anno").is_dir():
        root = root / "TEST"
    anno_dir = root / "anno"
    if not anno_dir.is_dir():
        raise AnnotationError(f"{root}: no anno/ folder (a TrackingNet split: anno/<seq>.txt, frames/<seq>/)")
    names = sorted(p.stem for p in anno_dir.iterdir() if p.suffix == ".txt")
    if not names:
        raise AnnotationError(f"{anno_dir}: no <seq>.txt files")
    out = []
    for name in names:
        frames = sorted(_images(root / "frames" / name), key=_frame_number)
        if not frames:
            raise AnnotationError(f"{root / 'frames' / name}: no frames")
        gt = _boxes(anno_dir / f"{name}.txt")
        complete = len(gt) == len(frames)
        if not complete:
            if len(gt) != 1:
                raise AnnotationError(f"{anno_dir / (name + '.txt')}: {len(gt)} lines for {len(frames)} frames "
                                      "(expected one per frame, or 1 for TEST)")
            gt = np.vstack([gt, np.full((len(frames) - 1, 4), np.nan)])
        out.append(Sequence(name, "trackingnet", frames, gt, gt_complete=complete))
    return out


BENCHMARK_FAMILY = {"otb": "otb", "vot2018": "vot", "vot2019": "vot", "got10k": "got10k", "lasot": "lasot",
                    "lasot_ext": "lasot", "uav123": "uav", "uav20l": "uav", "uav123_10fps": "uav",
                    "dtb70": "otb", "nfs": "nfs", "tnl2k": "tnl2k", "trackingnet": "trackingnet"}
_READERS = {"otb": read_otb, "vot": read_vot, "got10k": read_got10k, "lasot": read_lasot, "nfs": read_nfs,
            "tnl2k": read_tnl2k, "trackingnet": read_trackingnet}
_BY_NAME = {"dtb70": read_dtb70, **{v: (lambda root, v=v: read_uav(root, v)) for v in UAV_VERSIONS}}


def read_benchmark(benchmark: str, root: Path) -> list[Sequence]:
    """Read every sequence of ``benchmark`` (a key of :data:`BENCHMARK_FAMILY`) under ``root``."""
    if benchmark not in BENCHMARK_FAMILY:
        raise ValueError(f"unknown benchmark {benchmark!r}; one of {sorted(BENCHMARK_FAMILY)}")
    reader = _BY_NAME.get(benchmark) or _READERS[BENCHMARK_FAMILY[benchmark]]
    return reader(as_path(root))


class BenchmarkRootError(ValueError):
    """An unknown benchmark name, or a root that is not a readable benchmark; the message names both."""


def read_benchmark_root(name: str, root: str | Path) -> tuple[Path, list[Sequence]]:
    """The local folder of benchmark ``name`` at ``root`` and its sequences; BenchmarkRootError naming the
    benchmark and root when the name is unknown, the root unreadable or without sequences."""
    if name not in BENCHMARK_FAMILY:
        raise BenchmarkRootError(f"unknown benchmark {name!r}; one of {sorted(BENCHMARK_FAMILY)}")
    try:
        path = check_readable_folder(str(root), f"benchmark {name}: root")
    except (StorageError, ValueError) as exc:
        raise BenchmarkRootError(str(exc)) from None
    try:
        seqs = read_benchmark(name, path)
    except (OSError, AnnotationError, ValueError) as exc:
        raise BenchmarkRootError(f"benchmark {name}: cannot read {root} ({exc})") from None
    # GOT-10k test (first GT row only) is read too: it is tracked and written for the evaluation server;
    # scoring lists its sequences under ``rejected`` with that reason (ocean.benchmarks.scoring).
    if not seqs:
        raise BenchmarkRootError(f"benchmark {name}: no sequences under {root}")
    return path, seqs


def read_benchmarks(
    benchmarks: Mapping[str, str], max_sequences: int | None = None
) -> dict[str, list[Sequence]]:
    """``{name: root}`` -> ``{name: sequences}`` (the first ``max_sequences`` of each when given);
    BenchmarkRootError naming the benchmark and root when a name is unknown or a root is unreadable."""
    out = {}
    for name, root in benchmarks.items():
        seqs = read_benchmark_root(name, root)[1]
        out[name] = seqs[:max_sequences] if max_sequences else seqs
    return out
