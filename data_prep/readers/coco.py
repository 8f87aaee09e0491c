"""COCO 2017 reader (formats.md §1.5).

Every annotation is a single-frame track (facts §7.2); crowd annotations and boxes without area are
rejected. The JSON is parsed exactly once per :func:`read_tracks` call; tracks are then produced lazily.
The root layout and the track fields: :func:`read_tracks`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.readers import rejections as R
from data_prep.tracks import FrameRef, Rejection, Track
from ocean.datapath import as_path, listdir, open_text

DATASET = "coco"
FRAME_ID = "000000"  # facts §7.2: COCO / DET single frame id


def _box_xyxy(bbox: object) -> tuple[float, float, float, float] | None:
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    return x, y, x + w, y + h


def _without_segmentation(obj: dict) -> dict:
    obj.pop("segmentation", None)
    return obj


def read_tracks(
    root: str | Path,
    *,
    split: str = "train2017",
    annotation_file: str | Path | None = None,
    on_reject: R.OnReject = R.ignore_rejection,
    check_images: bool = True,
) -> Iterator[Track]:
    """Yield COCO single-frame tracks (the JSON is loaded once; images are not opened).

    Root layout::

        ROOT/                                   # the coco folder
          train2017/000000000009.jpg ...
          val2017/...
          annotations/instances_train2017.json  # images, annotations, categories (~450 MB for train)

    Every annotation is a single-frame track (facts §7.2): ``video = "<split>/<file name without
    extension>"``, ``track_id`` = the annotation id, frame id ``"000000"``, ``image_size`` from the image
    entry, box ``[x, y, w, h]`` (0-based floats) -> ``x, y, x+w, y+h``. ``iscrowd == 1`` annotations are
    rejected as ``crowd`` and boxes with w <= 0 or h <= 0 as ``non_positive_size``
    (formats.md §1.5; facts §7.2).
    The JSON is parsed exactly once per call; tracks are then produced lazily.

    Args:
        root: the COCO folder; a path or ``s3://`` URI.
        split: image folder name, also selects ``annotations/instances_<split>.json``.
        annotation_file: explicit JSON path (overrides the default).
        on_reject: called with each :class:`Rejection`.
        check_images: list the image folder once and reject annotations whose image file is missing.
    """
    root = as_path(root)
    ann_path = as_path(annotation_file) if annotation_file else root / "annotations" / f"instances_{split}.json"
    if not ann_path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_path}")
    with open_text(ann_path, errors="strict") as f:
        # Drop every object's "segmentation" as soon as the parser has built it: the polygons / RLE are most
        # of the ~450 MB of instances_train2017.json and nothing here uses them, so the peak is the boxes
        # and image entries rather than the whole document as Python objects (bounded memory).
        data = json.load(f, object_hook=_without_segmentation)
    images = {img["id"]: img for img in data.get("images", []) if isinstance(img, dict) and "id" in img}
    categories = {c.get("id"): c.get("name") for c in data.get("categories", []) if isinstance(c, dict)}
    annotations = data.get("annotations", [])
    del data  # keep only what the tracks need
    image_dir = root / split
    names = set(listdir(image_dir)) if check_images and image_dir.is_dir() else set()
    for k, ann in enumerate(annotations):
        ann_id = ann.get("id", k) if isinstance(ann, dict) else k
        src = f"{ann_path}#annotation{ann_id}"
        if not isinstance(ann, dict):
            on_reject(Rejection(DATASET, R.MALFORMED_LINE, src, "annotation is not an object"))
            continue
        if ann.get("iscrowd", 0) == 1:
            on_reject(Rejection(DATASET, R.CROWD, src))
            continue
        img = images.get(ann.get("image_id"))
        if img is None:
            on_reject(Rejection(DATASET, R.UNKNOWN_IMAGE, src, f"image_id {ann.get('image_id')!r}"))
            continue
        box = _box_xyxy(ann.get("bbox"))
        if box is None:
            on_reject(Rejection(DATASET, R.MALFORMED_LINE, src, f"bbox {ann.get('bbox')!r}"))
            continue
        try:
            size: tuple[int, int] | None = (int(img["width"]), int(img["height"]))
        except (KeyError, TypeError, ValueError):
            size = None
        problem = R.box_problem(box, size)
        if problem:
            on_reject(Rejection(DATASET, problem, src, str(ann.get("bbox"))))
            continue
        file_name = str(img.get("file_name", ""))
        if check_images and file_name not in names:
            on_reject(Rejection(DATASET, R.MISSING_IMAGE, str(image_dir / file_name), f"annotation {ann_id}"))
            continue
        yield Track(
            DATASET,
            f"{split}/{Path(file_name).stem}",
            str(ann_id),
            [FrameRef(frame_id=FRAME_ID, path=str(image_dir / file_name))],
            np.array([box], dtype=np.float64),
            np.ones(1, dtype=bool),
            size,
            {"category_id": ann.get("category_id"), "category": categories.get(ann.get("category_id"))},
        )
