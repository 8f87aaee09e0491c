"""Rejection reasons, the rejection callback type, and the checks every reader shares.

Readers never raise on bad *content* (only on a root that does not exist or a missing required annotation
file such as COCO's JSON): each refused item becomes one :class:`~data_prep.tracks.Rejection` handed to the
caller's ``on_reject`` callback, and reading goes on. What one rejection stands for is part of the contract,
so that counts reconcile (the comments on the reason groups below). Validity checks on boxes apply to
*present* frames only: a box on an absent frame is meaningless by the datasets' own definition
(formats.md §1.1 / §1.2) and is kept as written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from data_prep.tracks import Rejection

# frame-level: one rejection per annotated frame of one object (a COCO / DET object is one frame, a YT-BB
# CSV row is one frame)
MALFORMED_LINE = "malformed_line"
NON_FINITE_BOX = "non_finite_box"
NON_POSITIVE_SIZE = "non_positive_size"
BOX_OUTSIDE_IMAGE = "box_outside_image"
MISSING_IMAGE = "missing_image"
DUPLICATE_TIMESTAMP = "duplicate_timestamp"
NON_CONTIGUOUS_VIDEO = "non_contiguous_video"
# file-level: one per unparsable VID / DET XML file (its objects are unknown)
BAD_XML = "bad_xml"
# track-level: one per track (for VID, per snippet)
MISSING_ANNOTATION = "missing_annotation"
EMPTY_SEQUENCE = "empty_sequence"
FLAG_LENGTH_MISMATCH = "flag_length_mismatch"
CROWD = "crowd"
UNKNOWN_IMAGE = "unknown_image"
MISSING_VIDEO = "missing_video"
UNREADABLE_VIDEO = "unreadable_video"
UNKNOWN_IMAGE_SIZE = "unknown_image_size"
SINGLE_FRAME_SNIPPET = "single_frame_snippet"

# reasons a *job* gives when it decodes the pixels (readers never decode images); used by the synthetic
# generator's manifest for broken items that only a decode can detect.
UNDECODABLE_IMAGE = "undecodable_image"
TRUNCATED_IMAGE = "truncated_image"

OnReject = Callable[[Rejection], None]


def ignore_rejection(_: Rejection) -> None:
    """The default ``on_reject``: drop the rejection (pass a :class:`RejectionLog` to keep them)."""


class RejectionLog:
    """A callable ``on_reject`` that keeps every rejection::

        log = RejectionLog()
        for track in read_tracks("got10k", "/data/GOT-10k", on_reject=log):
            ...
        log.by_reason()   # {"missing_image": 3, ...}
    """

    def __init__(self) -> None:
        self.items: list[Rejection] = []

    def __call__(self, rejection: Rejection) -> None:
        self.items.append(rejection)

    def __len__(self) -> int:
        return len(self.items)

    def by_reason(self) -> dict[str, int]:
        """``{reason: count}``, sorted by reason."""
        return dict(sorted(Counter(r.reason for r in self.items).items()))


def box_problem(box_xyxy: tuple[float, float, float, float], image_size: tuple[int, int] | None) -> str | None:
    """Why a present frame's box is unusable, or None.

    Args:
        box_xyxy: 0-based pixel corners ``x1, y1, x2, y2``.
        image_size: ``(width, height)`` in pixels, or None when unknown (then no outside check).

    A box partly outside the image is fine (crops pad, facts §7.1); one with no overlap at all is not.
    """
    x1, y1, x2, y2 = box_xyxy
    if not all(math.isfinite(v) for v in box_xyxy):
        return NON_FINITE_BOX
    if x2 <= x1 or y2 <= y1:
        return NON_POSITIVE_SIZE
    if image_size is not None:
        w, h = image_size
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            return BOX_OUTSIDE_IMAGE
    return None
