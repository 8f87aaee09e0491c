"""PASCAL-VOC style XML of ImageNet VID / DET (formats.md §1.3): size and objects."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ocean.datapath import DataPath, listdir, open_binary, prefetched


@dataclass(frozen=True)
class VocObject:
    """One ``annotation/object``: ``box_xyxy`` as written (inclusive integer corners, NaN where unparsable)."""

    name: str
    trackid: int | None
    box_xyxy: tuple[float, float, float, float]
    occluded: int | None


@dataclass(frozen=True)
class VocAnnotation:
    """One XML file: ``size`` is ``(width, height)`` or None; objects in file order."""

    size: tuple[int, int] | None
    objects: list[VocObject]


def _float(node: ET.Element | None, tag: str) -> float:
    text = node.findtext(tag) if node is not None else None
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _int(node: ET.Element, tag: str) -> int | None:
    text = node.findtext(tag)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_voc_xml(source: Path | DataPath | bytes | OSError) -> VocAnnotation:
    """Parse one XML file (a local path, a :class:`~ocean.datapath.DataPath`, or its bytes or read error from
    :func:`ocean.datapath.prefetched`). Raises ``ET.ParseError`` / ``OSError`` on an unreadable file."""
    if isinstance(source, OSError):
        raise source
    if isinstance(source, bytes):
        root = ET.fromstring(source)
    else:
        with open_binary(source) as f:
            root = ET.parse(f).getroot()
    size_node = root.find("size")
    size = None
    if size_node is not None:
        w, h = _int(size_node, "width"), _int(size_node, "height")
        if w and h and w > 0 and h > 0:
            size = (w, h)
    objects = []
    for obj in root.findall("object"):
        bb = obj.find("bndbox")
        box = (_float(bb, "xmin"), _float(bb, "ymin"), _float(bb, "xmax"), _float(bb, "ymax"))
        objects.append(VocObject(obj.findtext("name") or "", _int(obj, "trackid"), box, _int(obj, "occluded")))
    return VocAnnotation(size, objects)


def folder_xml_files(ann_dir) -> Iterator[tuple[object, str, object]]:
    """``(path, stem, content)`` of each ``.xml`` file of the folder ``ann_dir``, in name order; ``content`` is
    the path for a local folder and the file's bytes, read ahead, for a folder in a store (for
    :func:`parse_voc_xml`)."""
    names = sorted(f for f in listdir(ann_dir) if f.endswith(".xml"))
    for name, content in zip(names, prefetched([ann_dir / n for n in names]), strict=True):
        yield ann_dir / name, name[:-4], content
