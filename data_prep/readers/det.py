"""ImageNet DET (ILSVRC2015 DET) reader (formats.md §1.4).

Every object of every image is its own single-frame track (facts §7.2), read lazily one XML at a time;
images without objects give no track and no rejection. The root layout and the track fields:
:func:`read_tracks`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from data_prep.readers import rejections as R
from data_prep.readers.voc_xml import folder_xml_files, parse_voc_xml
from data_prep.tracks import FrameRef, Rejection, Track
from ocean.datapath import as_path, listdir, walk

DATASET = "det"
FRAME_ID = "000000"  # facts §7.2: COCO / DET single frame id


def read_tracks(
    root: str | Path,
    *,
    split: str = "train",
    on_reject: R.OnReject = R.ignore_rejection,
    check_images: bool = True,
) -> Iterator[Track]:
    """Yield DET single-frame tracks lazily, one XML at a time (images are not opened).

    Root layout::

        ROOT/                                  # the ILSVRC2015 folder
          Data/DET/train/ILSVRC2013_train/n01443537/n01443537_10007.JPEG ...
          Data/DET/train/ILSVRC2014_train_0000/ILSVRC2014_train_00000663.JPEG ...   (0000..0006)
          Annotations/DET/train/<same relative path>.xml
          Data/DET/val/ILSVRC2012_val_00000001.JPEG    Annotations/DET/val/ILSVRC2012_val_00000001.xml

    Every object of every image is its own single-frame track (facts §7.2): ``video = "<split>/<relative
    path without extension>"``, ``track_id`` = the object's index in the XML, frame id ``"000000"``
    (facts §7.2), ``image_size`` from the XML. Images without objects give no track and no rejection.

    Args:
        root: the ILSVRC2015 folder (holding ``Annotations/`` and ``Data/``); a path or ``s3://`` URI.
        split: ``"train"`` or ``"val"``.
        on_reject: called with each :class:`Rejection`.
        check_images: list each JPEG folder once and reject objects whose JPEG is missing.
    """
    for unit in units(root, split=split):
        yield from read_unit(root, unit, split=split, on_reject=on_reject, check_images=check_images)


def units(root: str | Path, *, split: str = "train", **_options: object) -> list[str]:
    """The annotation folders :func:`read_tracks` reads, in its order, relative to ``Annotations/DET/<split>``
    (``"."`` for the split folder itself): the units that listing can split among workers (:func:`read_unit`)."""
    ann_split = as_path(root) / "Annotations" / "DET" / split
    if not ann_split.is_dir():
        raise FileNotFoundError(f"ImageNet DET annotations not found: {ann_split}")
    out = []
    for dirpath, dirnames, filenames in walk(ann_split):
        dirnames.sort()
        if any(f.endswith(".xml") for f in filenames):
            out.append(dirpath.relative_to(ann_split).as_posix())
    return out


def read_unit(root: str | Path, unit: str, *, split: str = "train", on_reject: R.OnReject = R.ignore_rejection,
              check_images: bool = True, **_options: object) -> Iterator[Track]:
    """The single-frame tracks of the XML files of one annotation folder of :func:`units`, in name order."""
    root = as_path(root)
    rel_dir = PurePosixPath(unit)
    ann_dir = root / "Annotations" / "DET" / split / rel_dir
    data_dir = root / "Data" / "DET" / split / rel_dir
    names: set[str] | None = None
    for xml_path, stem, content in folder_xml_files(ann_dir):
        try:
            ann = parse_voc_xml(content)
        except (ET.ParseError, OSError) as err:
            on_reject(Rejection(DATASET, R.BAD_XML, str(xml_path), str(err)[:120]))
            continue
        if not ann.objects:
            continue
        image_path = data_dir / (stem + ".JPEG")
        if check_images and names is None:
            names = set(listdir(data_dir)) if data_dir.is_dir() else set()
        video = f"{split}/{(rel_dir / stem).as_posix()}"
        for k, obj in enumerate(ann.objects):
            src = f"{xml_path}#object{k}"
            problem = R.box_problem(obj.box_xyxy, ann.size)
            if problem:
                on_reject(Rejection(DATASET, problem, src, str(obj.box_xyxy)))
                continue
            if check_images and image_path.name not in names:
                on_reject(Rejection(DATASET, R.MISSING_IMAGE, str(image_path), f"object {k}"))
                continue
            yield Track(
                DATASET,
                video,
                str(k),
                [FrameRef(frame_id=FRAME_ID, path=str(image_path))],
                np.array([obj.box_xyxy], dtype=np.float64),
                np.ones(1, dtype=bool),
                ann.size,
                {"wnid": obj.name},
            )
