"""The one sequence type all benchmark readers return."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class AnnotationError(ValueError):
    """Malformed benchmark input; the message names the file (and line when there is one)."""


@dataclass
class Sequence:
    """One benchmark video.

    Attributes:
        name: the name result files use (``Jogging-1``, ``GOT-10k_Val_000001``, ``ants1``, ...).
        benchmark: the reader's family: ``otb``, ``vot``, ``got10k``, ``lasot``, ``uav``, ``dtb70``, ``nfs``,
            ``tnl2k`` or ``trackingnet``.
        frames: (N,) image paths (``pathlib.Path``, or :class:`~ocean.datapath.DataPath` on S3) in order; frames[0] is the first frame of the protocol (the init frame).
        gt_xywh: (N, 4) float64 ground truth, 0-based pixels, x,y,w,h (top-left corner). For VOT polygons
            it is the axis-aligned extent of each polygon. Rows are NaN where no GT exists
            (GOT-10k / TrackingNet test: only row 0 is known; UAV123: the target is out of view).
        gt_poly: (N, 8) raw VOT polygons (0-based), or None for other benchmarks / 4-value VOT files
            (then ``vot_regions`` falls back to ``gt_xywh``).
        present: (N,) bool, target visible (LaSOT flags, GOT-10k cover > 0, UAV123 non-NaN rows, TNL2K
            non-empty boxes); all True where unknown.
        start_frame: 1-based number of frames[0] in the original numbering (OTB sequences such as David
            start at 300, UAV123 parts such as bird1_2 at 775).
        gt_complete: False when only the first GT row exists (GOT-10k and TrackingNet test splits).
        resolution_wh: image (width, height) when the annotation says so (GOT-10k meta_info.ini), else None.
    """

    name: str
    benchmark: str
    frames: list[Path]
    gt_xywh: np.ndarray
    gt_poly: np.ndarray | None = None
    present: np.ndarray | None = None
    start_frame: int = 1
    gt_complete: bool = True
    resolution_wh: tuple[int, int] | None = None
    _image_size: tuple[int, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.gt_xywh = np.asarray(self.gt_xywh, dtype=np.float64).reshape(-1, 4)
        if self.present is None:
            self.present = np.ones(len(self.gt_xywh), dtype=bool)
        self.present = np.asarray(self.present, dtype=bool)
        n = len(self.frames)
        if len(self.gt_xywh) != n or len(self.present) != n:
            raise AnnotationError(
                f"sequence {self.name}: {n} frames but {len(self.gt_xywh)} GT rows / {len(self.present)} flags"
            )
        if self.gt_poly is not None and len(self.gt_poly) != n:
            raise AnnotationError(f"sequence {self.name}: {n} frames but {len(self.gt_poly)} polygons")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def init_box_xywh(self) -> np.ndarray:
        """(4,) 0-based x,y,w,h the tracker is initialised with on frames[0]."""
        return self.gt_xywh[0].copy()

    def vot_regions(self) -> np.ndarray:
        """(N, 8) polygons, or (N, 4) boxes when the VOT file had 4-value lines / for other benchmarks."""
        return self.gt_poly if self.gt_poly is not None else self.gt_xywh

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the frames, read lazily from the first frame's header (cv2), then cached."""
        if self._image_size is None:
            if self.resolution_wh is not None:
                self._image_size = self.resolution_wh
            else:
                self._image_size = read_image_size(self.frames[0])
        return self._image_size


def read_image_size(path: Path) -> tuple[int, int]:
    """(width, height) of one image file (a path or :class:`~ocean.datapath.DataPath`); raises
    FileNotFoundError naming the file when unreadable."""
    import cv2

    img = read_image(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return int(img.shape[1]), int(img.shape[0])


def read_image(path, flags: int) -> np.ndarray | None:
    """``cv2.imread`` of a local path, or the bytes of a :class:`~ocean.datapath.DataPath` (read straight
    from the store) through ``cv2.imdecode``; None when missing or undecodable."""
    import cv2

    from ocean.datapath import DataPath

    if not isinstance(path, DataPath):
        return cv2.imread(str(path), flags)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
