"""Dataset readers: each turns an untouched download into :class:`~data_prep.tracks.Track` s, lazily.

One module per dataset (``got10k``, ``lasot``, ``vid``, ``det``, ``coco``, ``ytbb``); each has a
``read_tracks(root, *, on_reject=..., **options)`` generator whose docstring gives the root layout it reads.
Readers read annotations only and never decode an image. Every refused item (a malformed line, a NaN /
zero-size / outside box, a missing image or video, a crowd annotation, ...) is passed to ``on_reject`` as a
:class:`~data_prep.tracks.Rejection` (reasons: :mod:`data_prep.readers.rejections`; :class:`RejectionLog`
keeps them); reading never stops on bad content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


__all__ = ["READERS", "RejectionLog", "OnReject", "ignore_rejection", "read_tracks"]
