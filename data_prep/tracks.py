"""The one form every dataset reader yields: a :class:`Track`.

A track is one object followed through one video (or a single-frame "video" for COCO / ImageNet DET).
Readers turn each dataset's own layout (formats.md) into tracks; everything downstream (crops, pair
sampling, the Ray preparation job) only sees tracks.

Coordinates are 0-based pixels of the source image; boxes are ``x1, y1, x2, y2`` floats
(``boxes_xyxy``), converted from each dataset's own convention by its reader (e.g. LaSOT's 1-based
``x,y,w,h`` becomes ``x-1, y-1, x-1+w, y-1+h``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DATASETS = ("got10k", "lasot", "vid", "det", "coco", "ytbb")


@dataclass(frozen=True)
class FrameRef:
    """Where one annotated frame's pixels come from.

    Either ``path`` (an image file) or ``video`` + ``timestamp_ms`` (decode the frame nearest that time,
    YouTube-BB videos). ``frame_id`` is the dataset's own frame identifier (file stem, frame index or
    timestamp) used in record ids.
    """

    frame_id: str
    path: str | None = None
    video: str | None = None
    timestamp_ms: int | None = None


@dataclass
class Track:
    """One object in one video.

    Attributes:
        dataset: one of :data:`DATASETS`.
        video: the video's id, unique within the dataset (a relative path such as
            ``train/GOT-10k_Train_000001`` or ``ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000``).
        track_id: the object's id within the video (``"0"`` when a video has one object).
        frames: the annotated frames, in time order.
        boxes_xyxy: ``(N, 4)`` float64, 0-based pixel corners; meaningless where ``present`` is False.
        present: ``(N,)`` bool, from the dataset's own flags (absence.label, full_occlusion / out_of_view,
            YT-BB ``absent``), never from box values.
        image_size: ``(width, height)`` when the annotation states it, else None.
        meta: free-form extras (class name, ...).
    """

    dataset: str
    video: str
    track_id: str
    frames: list[FrameRef]
    boxes_xyxy: np.ndarray
    present: np.ndarray
    image_size: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        self.present = np.asarray(self.present, dtype=bool).reshape(-1)
        if not (len(self.frames) == len(self.boxes_xyxy) == len(self.present)):
            raise ValueError(
                f"{self.dataset}:{self.video}:{self.track_id}: {len(self.frames)} frames, "
                f"{len(self.boxes_xyxy)} boxes, {len(self.present)} presence flags"
            )

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def key(self) -> str:
        """A stable id ``dataset/video/track_id``."""
        return f"{self.dataset}/{self.video}/{self.track_id}"


@dataclass
class Rejection:
    """An input item a reader or a job refused, with the reason (counted and written to ``rejects/``)."""

    dataset: str
    reason: str
    source: str
    detail: str = ""
