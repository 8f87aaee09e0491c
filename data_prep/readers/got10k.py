"""GOT-10k reader (train / val; formats.md §1.1).

One track per sequence, read lazily one sequence at a time; presence comes only from ``absence.label``.
The root layout and the track fields: :func:`read_tracks`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from data_prep.readers import rejections as R
from data_prep.readers.text_annotations import (
    parse_box_xywh,
    parse_flags,
    parse_meta_info,
    parse_resolution,
    read_groundtruth,
    read_lines,
)
from data_prep.tracks import FrameRef, Rejection, Track
from ocean.datapath import as_path

DATASET = "got10k"
# The GOT-10k train videos a model may not train on when it is tested on VOT (formats.md §1.7)
VOT_EXCLUDE_LIST = Path(__file__).with_name("splits") / "got10k_vot_exclude.txt"


def vot_excluded() -> frozenset[str]:
    """The 1,000 names of :data:`VOT_EXCLUDE_LIST` (``GOT-10k_Train_000004`` ...)."""
    return frozenset(n.strip() for n in VOT_EXCLUDE_LIST.read_text().splitlines() if n.strip())


def _sequence_names(split_dir: Path) -> list[str]:
    listing = split_dir / "list.txt"
    if listing.is_file():
        return [line.strip() for line in read_lines(listing) if line.strip()]
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and p.name.startswith("GOT-10k_"))


def _is_split_dir(path: Path) -> bool:
    return (path / "list.txt").is_file() or any(
        p.name.startswith("GOT-10k_") and p.is_dir() for p in path.iterdir()
    )


def read_sequence(seq_dir: Path, video: str, on_reject: R.OnReject, check_images: bool = True) -> Track | None:
    """One GOT-10k sequence folder as a :class:`Track`, or None when nothing usable is left."""
    reject = lambda reason, src, detail="": on_reject(Rejection(DATASET, reason, str(src), detail))  # noqa: E731
    if not seq_dir.is_dir():
        reject(R.MISSING_ANNOTATION, seq_dir, "sequence folder listed in list.txt does not exist")
        return None
    names = {e.name for e in seq_dir.iterdir()} if check_images else None
    gt_path = seq_dir / "groundtruth.txt"
    lines = read_groundtruth(seq_dir, reject)
    if lines is None:
        return None
    meta: dict = {}
    absence_path = seq_dir / "absence.label"
    if absence_path.is_file():
        absent = parse_flags(absence_path)
        if absent is None or len(absent) != len(lines):
            got = "unparsable" if absent is None else str(len(absent))
            reject(R.FLAG_LENGTH_MISMATCH, absence_path, f"{got} flags for {len(lines)} boxes")
            return None
        present_all = [a == 0 for a in absent]
        meta["presence_source"] = "absence.label"
    else:
        present_all = [True] * len(lines)
        meta["presence_source"] = "default"
    image_size = None
    meta_path = seq_dir / "meta_info.ini"
    if meta_path.is_file():
        info = parse_meta_info(meta_path)
        image_size = parse_resolution(info.get("resolution"))
        for key in ("object_class", "motion_class", "major_class", "root_class"):
            if key in info:
                meta[key] = info[key]

    frames: list[FrameRef] = []
    boxes: list[tuple[float, float, float, float]] = []
    present: list[bool] = []
    for i, line in enumerate(lines):
        stem = f"{i + 1:08d}"  # formats.md §1.1: 8-digit, 1-based file names
        src = f"{gt_path}:{i + 1}"
        xywh = parse_box_xywh(line)
        if xywh is None:
            reject(R.MALFORMED_LINE, src, repr(line[:80]))
            continue
        x, y, w, h = xywh
        box = (x, y, x + w, y + h)  # GOT-10k is 0-based x,y,w,h (formats.md §1.1)
        if present_all[i]:
            problem = R.box_problem(box, image_size)
            if problem:
                reject(problem, src, line.strip())
                continue
        file_name = stem + ".jpg"
        if names is not None and file_name not in names:
            reject(R.MISSING_IMAGE, seq_dir / file_name)
            continue
        frames.append(FrameRef(frame_id=stem, path=str(seq_dir / file_name)))
        boxes.append(box)
        present.append(present_all[i])
    if not frames:
        return None
    return Track(DATASET, video, "0", frames, np.array(boxes), np.array(present), image_size, meta)


def read_tracks(
    root: str | Path,
    *,
    splits: Sequence[str] = ("train", "val"),
    on_reject: R.OnReject = R.ignore_rejection,
    check_images: bool = True,
    exclude_vot: bool = False,
) -> Iterator[Track]:
    """Yield GOT-10k tracks lazily, one sequence at a time (annotations only; images are not opened).

    Root layout::

        ROOT/                              # the GOT-10k download, e.g. /data/GOT-10k
          train/list.txt                   # optional; else every GOT-10k_* folder, sorted
          train/GOT-10k_Train_000001/
            00000001.jpg ...               # 8-digit, 1-based
            groundtruth.txt                # x,y,w,h per line, 0-based floats
            absence.label                  # 1 = absent (presence comes only from here)
            cover.label, cut_by_image.label, meta_info.ini
          val/...                          # same layout (GOT-10k_Val_000001 ...)

    ``ROOT`` may also be one split folder itself (it holds ``list.txt`` or ``GOT-10k_*`` folders).
    Tracks: one per sequence, ``video = "<split>/<sequence>"``, ``track_id = "0"``, frame ids are the file
    stems (``"00000001"``), ``image_size`` from ``meta_info.ini`` ``resolution`` when present.
    A sequence without ``absence.label`` is taken as always present (``meta["presence_source"] = "default"``).

    Args:
        root: the GOT-10k folder (holding ``train/``, ``val/``) or one split folder; a path or ``s3://`` URI.
        splits: split folders to read; missing ones are skipped (official training uses train + val, facts §7.2).
        on_reject: called with each :class:`Rejection` (see :mod:`data_prep.readers.rejections`).
        check_images: list each sequence folder once and reject frames whose JPEG is missing.
        exclude_vot: leave out the 1,000 train videos of :data:`VOT_EXCLUDE_LIST` (for a model tested on VOT;
            the configuration key ``data.got10k_vot_exclude``).
    """
    for unit in units(root, splits=splits, exclude_vot=exclude_vot):
        yield from read_unit(root, unit, on_reject=on_reject, check_images=check_images)


def units(root: str | Path, *, splits: Sequence[str] = ("train", "val"), exclude_vot: bool = False,
          **_options: object) -> list[str]:
    """The sequences :func:`read_tracks` reads, in its order, as ``"<split>/<sequence>"`` (``"/<sequence>"``
    when ``root`` is one split folder): the units that listing can split among workers (:func:`read_unit`).
    ``exclude_vot`` leaves out the names of :data:`VOT_EXCLUDE_LIST`."""
    found = _units(root, splits)
    if not exclude_vot:
        return found
    excluded = vot_excluded()
    return [u for u in found if u.split("/", 1)[1] not in excluded]


def _units(root: str | Path, splits: Sequence[str]) -> list[str]:
    root = as_path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"GOT-10k root {root} is not a folder")
    if _is_split_dir(root):
        return [f"/{name}" for name in _sequence_names(root)]
    split_dirs = [s for s in splits if (root / s).is_dir()]
    if not split_dirs:
        raise FileNotFoundError(f"GOT-10k root {root} holds none of the splits {list(splits)}")
    return [f"{split}/{name}" for split in split_dirs for name in _sequence_names(root / split)]


def read_unit(root: str | Path, unit: str, *, on_reject: R.OnReject = R.ignore_rejection,
              check_images: bool = True, **_options: object) -> Iterator[Track]:
    """The track of one unit of :func:`units` (none when the sequence is unusable)."""
    root = as_path(root)
    split, name = unit.split("/", 1)
    seq_dir, video = (root / name, f"{root.name}/{name}") if not split else (root / split / name, unit)
    track = read_sequence(seq_dir, video, on_reject, check_images)
    if track is not None:
        yield track
