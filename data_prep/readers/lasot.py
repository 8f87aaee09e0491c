"""LaSOT reader (formats.md §1.2).

One track per sequence, read lazily; 1-based ``x,y,w,h`` boxes become 0-based corners, and presence comes
only from ``full_occlusion.txt`` / ``out_of_view.txt``, never from the boxes. The root layout and the track
fields: :func:`read_tracks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from data_prep.readers import rejections as R
from data_prep.readers.text_annotations import parse_box_xywh, parse_flags, read_groundtruth, read_lines
from data_prep.tracks import FrameRef, Rejection, Track
from ocean.datapath import as_path

DATASET = "lasot"
# LaSOT's official training split (1,120 names), used when the download lacks training_set.txt (formats.md §1.7)
TRAIN_SPLIT_LIST = Path(__file__).with_name("splits") / "lasot_train_split.txt"
_FLAG_FILES = ("full_occlusion.txt", "out_of_view.txt")


def read_sequence(seq_dir: Path, video: str, on_reject: R.OnReject, check_images: bool = True) -> Track | None:
    """One LaSOT sequence folder as a :class:`Track`, or None when nothing usable is left."""
    reject = lambda reason, src, detail="": on_reject(Rejection(DATASET, reason, str(src), detail))  # noqa: E731
    gt_path = seq_dir / "groundtruth.txt"
    lines = read_groundtruth(seq_dir, reject)
    if lines is None:
        return None
    meta: dict = {"class": seq_dir.parent.name}
    absent = np.zeros(len(lines), dtype=bool)
    for flag_name in _FLAG_FILES:
        flag_path = seq_dir / flag_name
        if not flag_path.is_file():
            meta.setdefault("missing_flags", []).append(flag_name)
            continue
        flags = parse_flags(flag_path)
        if flags is None or len(flags) != len(lines):
            got = "unparsable" if flags is None else str(len(flags))
            reject(R.FLAG_LENGTH_MISMATCH, flag_path, f"{got} flags for {len(lines)} boxes")
            return None
        absent |= np.asarray(flags) != 0
    nlp_path = seq_dir / "nlp.txt"
    if nlp_path.is_file():
        meta["nlp"] = nlp_path.read_text(encoding="utf-8", errors="replace").strip()
    img_dir = seq_dir / "img"
    names = {e.name for e in img_dir.iterdir()} if check_images and img_dir.is_dir() else set()

    frames: list[FrameRef] = []
    boxes: list[tuple[float, float, float, float]] = []
    present: list[bool] = []
    for i, line in enumerate(lines):
        stem = f"{i + 1:08d}"  # formats.md §1.2: 8-digit, 1-based
        src = f"{gt_path}:{i + 1}"
        xywh = parse_box_xywh(line)
        if xywh is None:
            reject(R.MALFORMED_LINE, src, repr(line[:80]))
            continue
        x, y, w, h = xywh
        box = (x - 1.0, y - 1.0, x - 1.0 + w, y - 1.0 + h)  # 1-based x,y,w,h -> 0-based corners (formats.md §1.2)
        is_present = not absent[i]
        if is_present:
            problem = R.box_problem(box, None)
            if problem:
                reject(problem, src, line.strip())
                continue
        file_name = stem + ".jpg"
        if check_images and file_name not in names:
            reject(R.MISSING_IMAGE, img_dir / file_name)
            continue
        frames.append(FrameRef(frame_id=stem, path=str(img_dir / file_name)))
        boxes.append(box)
        present.append(is_present)
    if not frames:
        return None
    return Track(DATASET, video, "0", frames, np.array(boxes), np.array(present), None, meta)


def _split_names(root: Path, split: str | None) -> set[str] | None:
    if split is None or split == "all":
        return None
    if split not in ("train", "test"):
        raise ValueError(f"LaSOT split {split!r}: one of train, test, all")
    listing = root / {"train": "training_set.txt", "test": "testing_set.txt"}[split]
    if not listing.is_file() and split == "train":
        listing = TRAIN_SPLIT_LIST  # the official list shipped with the project
    if not listing.is_file():
        raise FileNotFoundError(f"LaSOT split '{split}' asked for but {listing} does not exist")
    return {line.strip() for line in read_lines(listing) if line.strip()}


def read_tracks(
    root: str | Path,
    *,
    split: str | None = None,
    sequences: Iterable[str] | None = None,
    on_reject: R.OnReject = R.ignore_rejection,
    check_images: bool = True,
) -> Iterator[Track]:
    """Yield LaSOT tracks lazily (annotations only; images are not opened).

    Root layout::

        ROOT/                              # the LaSOT download (LaSOTBenchmark/)
          airplane/                        # one folder per category
            airplane-1/
              img/00000001.jpg ...         # 8-digit, 1-based
              groundtruth.txt              # x,y,w,h per line, 1-based
              full_occlusion.txt           # ONE line of comma-separated 0/1 (one-per-line is accepted too)
              out_of_view.txt              # same
              nlp.txt                      # one sentence
          training_set.txt / testing_set.txt   # optional split lists

    Tracks: one per sequence, ``video = "<category>/<sequence>"``, ``track_id = "0"``, frame ids are file
    stems. Boxes become 0-based corners ``x-1, y-1, x-1+w, y-1+h``. A frame is present unless
    ``full_occlusion`` or ``out_of_view`` is 1; boxes on absent frames (``0,0,0,0``, ``1,1,0,0`` or ordinary
    looking ones in the real data) are kept as written and never used for presence. A missing flag file counts
    as all zeros (``meta["missing_flags"]`` names it). ``image_size`` is None (LaSOT does not state it).

    Args:
        root: the LaSOT folder holding one folder per category; a path or ``s3://`` URI.
        split: ``"train"`` / ``"test"`` to keep the names in ``training_set.txt`` / ``testing_set.txt`` (for
            ``"train"`` without that file: the official list :data:`TRAIN_SPLIT_LIST`), None or ``"all"`` for
            every sequence found. Training asks for ``"train"`` by default (``data.lasot_split``).
        sequences: optional explicit sequence names (``"airplane-1"``) to keep.
        on_reject: called with each :class:`Rejection`.
        check_images: list ``img/`` once per sequence and reject frames whose JPEG is missing.
    """
    for unit in units(root, split=split, sequences=sequences):
        yield from read_unit(root, unit, on_reject=on_reject, check_images=check_images)


def units(root: str | Path, *, split: str | None = None, sequences: Iterable[str] | None = None,
          **_options: object) -> list[str]:
    """The sequences :func:`read_tracks` reads, in its order, as ``"<category>/<sequence>"``: the units that
    listing can split among workers (:func:`read_unit`)."""
    root = as_path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LaSOT root {root} is not a folder")
    keep = _split_names(root, split)
    if sequences is not None:
        wanted = set(sequences)
        keep = wanted if keep is None else keep & wanted
    out = []
    for cat_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for seq_dir in sorted(p for p in cat_dir.iterdir() if p.is_dir()):
            if keep is not None and seq_dir.name not in keep:
                continue
            if not (seq_dir / "groundtruth.txt").exists() and not (seq_dir / "img").is_dir():
                continue  # not a sequence folder
            out.append(f"{cat_dir.name}/{seq_dir.name}")
    return out


def read_unit(root: str | Path, unit: str, *, on_reject: R.OnReject = R.ignore_rejection,
              check_images: bool = True, **_options: object) -> Iterator[Track]:
    """The track of one unit of :func:`units` (none when the sequence is unusable)."""
    track = read_sequence(as_path(root) / unit, unit, on_reject, check_images)
    if track is not None:
        yield track
