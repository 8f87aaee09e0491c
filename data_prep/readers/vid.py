"""ImageNet VID (ILSVRC2015) reader (formats.md §1.3).

One track per object ``trackid`` and contiguous run of frames of a snippet (facts §7.2), read lazily one
snippet folder at a time; every listed frame is present. The root layout, the splitting into contiguous
runs and the track fields: :func:`read_tracks`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.readers import rejections as R
from data_prep.readers.voc_xml import folder_xml_files, parse_voc_xml
from data_prep.tracks import FrameRef, Rejection, Track
from ocean.datapath import AnyPath, as_path, listdir, walk

DATASET = "vid"


def _snippet_dirs(ann_split: AnyPath) -> Iterator[AnyPath]:
    for dirpath, dirnames, filenames in walk(ann_split):
        dirnames.sort()
        if any(f.endswith(".xml") for f in filenames):
            yield dirpath


def read_snippet(
    ann_dir: Path, data_dir: Path, video: str, on_reject: R.OnReject, check_images: bool = True
) -> Iterator[Track]:
    """Tracks of one VID snippet folder (annotations in ``ann_dir``, JPEGs in ``data_dir``)."""
    reject = lambda reason, src, detail="": on_reject(Rejection(DATASET, reason, str(src), detail))  # noqa: E731
    names = set(listdir(data_dir)) if check_images and data_dir.is_dir() else set()
    per_track: dict[int, list[tuple[int, str, tuple, str, tuple[int, int] | None]]] = {}
    for xml_path, stem, content in folder_xml_files(ann_dir):
        try:
            ann = parse_voc_xml(content)
            index = int(stem)
        except (ET.ParseError, OSError, ValueError) as err:
            reject(R.BAD_XML, xml_path, str(err)[:120])
            continue
        image_name = stem + ".JPEG"
        for k, obj in enumerate(ann.objects):
            src = f"{xml_path}#object{k}"
            if obj.trackid is None:
                reject(R.MALFORMED_LINE, src, "object without integer trackid")
                continue
            problem = R.box_problem(obj.box_xyxy, ann.size)
            if problem:
                reject(problem, src, str(obj.box_xyxy))
                continue
            if check_images and image_name not in names:
                reject(R.MISSING_IMAGE, data_dir / image_name)
                continue
            per_track.setdefault(obj.trackid, []).append((index, stem, obj.box_xyxy, obj.name, ann.size))
    for trackid in sorted(per_track):
        items = sorted(per_track[trackid])
        pieces: list[list] = [[items[0]]]
        for prev, cur in zip(items, items[1:], strict=False):
            if cur[0] == prev[0] + 1:
                pieces[-1].append(cur)
            else:
                pieces.append([cur])
        for k, piece in enumerate(pieces):
            track_id = str(trackid) if k == 0 else f"{trackid}-{k}"
            if len(piece) < 2:  # facts §7.2: single-frame snippets are dropped
                reject(R.SINGLE_FRAME_SNIPPET, f"{ann_dir}#trackid{trackid}@{piece[0][1]}")
                continue
            frames = [FrameRef(frame_id=stem, path=str(data_dir / (stem + ".JPEG"))) for _, stem, *_ in piece]
            boxes = np.array([p[2] for p in piece], dtype=np.float64)
            yield Track(
                DATASET,
                video,
                track_id,
                frames,
                boxes,
                np.ones(len(piece), dtype=bool),
                piece[0][4],
                {"wnid": piece[0][3], "trackid": trackid, "snippet": k},
            )


def read_tracks(
    root: str | Path,
    *,
    split: str = "train",
    on_reject: R.OnReject = R.ignore_rejection,
    check_images: bool = True,
) -> Iterator[Track]:
    """Yield VID tracks lazily, one snippet folder at a time (XML only; images are not opened).

    Root layout::

        ROOT/                                  # the ILSVRC2015 folder
          Data/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000/000000.JPEG ...
          Annotations/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000/000000.xml ...
          Data/VID/val/ILSVRC2015_val_00000000/000000.JPEG ...
          Annotations/VID/val/ILSVRC2015_val_00000000/000000.xml ...

    A snippet is any folder under ``Annotations/VID/<split>`` that holds ``.xml`` files. Each object
    ``trackid`` of a snippet is followed through the frames whose XML lists it; as the official JSON index
    does (facts §7.2) the frame list is split into contiguous snippets at frame-number gaps and one-frame
    snippets are dropped (each recorded as a ``single_frame_snippet`` rejection). Frames with an unusable box
    or a missing JPEG are removed *before* splitting. Boxes are the XML corners as written (the official crop
    code uses them as ``x1, y1, x2, y2``, facts §7.1). ``video = "<split>/<snippet path>"``, ``track_id`` is
    the trackid for the first contiguous piece and ``"<trackid>-<k>"`` for the k-th later one; frame ids are
    the XML stems (``"000000"``). Every listed frame is present (VID omits objects that are not visible).

    Args:
        root: the ILSVRC2015 folder (holding ``Annotations/`` and ``Data/``); a path or ``s3://`` URI.
        split: ``"train"`` or ``"val"``.
        on_reject: called with each :class:`Rejection`.
        check_images: list each snippet's JPEG folder once and reject object-frames whose JPEG is missing.
    """
    for unit in units(root, split=split):
        yield from read_unit(root, unit, split=split, on_reject=on_reject, check_images=check_images)


def units(root: str | Path, *, split: str = "train", **_options: object) -> list[str]:
    """The snippet folders :func:`read_tracks` reads, in its order, relative to ``Annotations/VID/<split>``:
    the units that listing can split among workers (:func:`read_unit`)."""
    ann_split = as_path(root) / "Annotations" / "VID" / split
    if not ann_split.is_dir():
        raise FileNotFoundError(f"ImageNet VID annotations not found: {ann_split}")
    return [ann_dir.relative_to(ann_split).as_posix() for ann_dir in _snippet_dirs(ann_split)]


def read_unit(root: str | Path, unit: str, *, split: str = "train", on_reject: R.OnReject = R.ignore_rejection,
              check_images: bool = True, **_options: object) -> Iterator[Track]:
    """The tracks of one snippet folder of :func:`units`."""
    root = as_path(root)
    yield from read_snippet(root / "Annotations" / "VID" / split / unit, root / "Data" / "VID" / split / unit,
                            f"{split}/{unit}", on_reject, check_images)
