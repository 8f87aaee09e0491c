"""Dataset readers: each turns an untouched download into :class:`~data_prep.tracks.Track` s, lazily.

One module per dataset (``got10k``, ``lasot``, ``vid``, ``det``, ``coco``, ``ytbb``); each has a
``read_tracks(root, *, on_reject=..., **options)`` generator whose docstring gives the root layout it reads.
Readers read annotations only and never decode an image. Every refused item (a malformed line, a NaN /
zero-size / outside box, a missing image or video, a crowd annotation, ...) is passed to ``on_reject`` as a
:class:`~data_prep.tracks.Rejection` (reasons: :mod:`data_prep.readers.rejections`; :class:`RejectionLog`
keeps them); reading never stops on bad content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from data_prep.readers import coco, det, got10k, lasot, vid, ytbb
from data_prep.readers.rejections import OnReject, RejectionLog, ignore_rejection
from data_prep.tracks import DATASETS, Track

READERS: dict[str, Callable[..., Iterator[Track]]] = {
    "got10k": got10k.read_tracks,
    "lasot": lasot.read_tracks,
    "vid": vid.read_tracks,
    "det": det.read_tracks,
    "coco": coco.read_tracks,
    "ytbb": ytbb.read_tracks,
}
assert set(READERS) == set(DATASETS)

# Readers whose listing splits into units (sequence / snippet / annotation folders) that workers can read
# apart: ``units(root, **options)`` lists them in read_tracks' order, ``read_unit(root, unit, **options)`` reads
# one; read_tracks is exactly read_unit over units. COCO (one JSON) and YouTube-BB (one CSV) are one file
# each, parsed once.
UNIT_READERS: dict[str, tuple[Callable[..., list[str]], Callable[..., Iterator[Track]]]] = {
    "got10k": (got10k.units, got10k.read_unit),
    "lasot": (lasot.units, lasot.read_unit),
    "vid": (vid.units, vid.read_unit),
    "det": (det.units, det.read_unit),
}


def config_reader_options(data_cfg: object, names: Iterable[str],
                          given: dict[str, dict] | None = None) -> dict[str, dict]:
    """Reader options of the datasets ``names`` from the configuration's data section (formats.md §1.7):
    ``data.got10k_vot_exclude`` -> got10k ``exclude_vot``, ``data.lasot_split`` -> lasot ``split`` (``"train"``
    by default: LaSOT's official training split); ``given`` options (e.g. from the command line) win."""
    names = set(names)
    out = {n: dict(o) for n, o in (given or {}).items()}
    if "got10k" in names and getattr(data_cfg, "got10k_vot_exclude", False):
        out.setdefault("got10k", {}).setdefault("exclude_vot", True)
    if "lasot" in names:
        out.setdefault("lasot", {}).setdefault("split", getattr(data_cfg, "lasot_split", "train"))
    return out


def read_tracks(
    name: str, root: str | Path, *, on_reject: OnReject = ignore_rejection, **options: object
) -> Iterator[Track]:
    """Tracks of dataset ``name`` (one of :data:`~data_prep.tracks.DATASETS`) under ``root``.

    ``options`` are the reader's own keyword arguments (e.g. ``splits=("train",)`` for got10k,
    ``split="val"`` for vid, ``media="videos"`` for ytbb). Raises ``KeyError`` for an unknown name and
    ``FileNotFoundError`` when ``root`` lacks the dataset's required annotation files.
    """
    if name not in READERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return READERS[name](root, on_reject=on_reject, **options)


def list_units(name: str, root: str | Path, **options: object) -> list[str] | None:
    """The units of dataset ``name`` under ``root`` in reading order, or None for a dataset read whole (COCO,
    YouTube-BB). Raises ``FileNotFoundError`` as :func:`read_tracks` does."""
    if name not in READERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return UNIT_READERS[name][0](root, **options) if name in UNIT_READERS else None


def read_units(name: str, root: str | Path, units: Iterable[str], *, on_reject: OnReject = ignore_rejection,
               **options: object) -> Iterator[Track]:
    """The tracks of ``units`` (from :func:`list_units`), in order: over all units, what :func:`read_tracks`
    yields."""
    read_unit = UNIT_READERS[name][1]
    for unit in units:
        yield from read_unit(root, unit, on_reject=on_reject, **options)


__all__ = ["config_reader_options", "UNIT_READERS", "list_units", "read_units", "READERS", "RejectionLog", "OnReject", "ignore_rejection", "read_tracks"]
