"""Tracker-side square crops around the target: the official ``get_subwindow_tracking``, made cheaper.

:func:`get_subwindow` cuts a square window of side ``s`` pixels (0-based image pixels) centred on the target,
fills the part outside the image with a constant colour, and resizes it to the network's input side (127 for
the template, 255 / 271 / 287 for the search region). Its pixels are the official code's (TK
``lib/utils/utils.py`` get_subwindow_tracking, facts §9.1 / §9.2), whose rounding quirks are reproduced on
purpose (:func:`crop_corner`, :func:`crop_side`, :func:`pad_color_uint8`); only the ``s x s`` window is
ever allocated. numpy / cv2 only.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

RoundingMode = Literal["bankers", "half_away"]


def python2round(value: float) -> float:
    """Python 2's ``round``: halves go away from zero (2.5 -> 3, -2.5 -> -3) -- facts §9.2 step 1.

    The official tracker uses it for the search crop side ``s_x`` (TK ``python2round``). Returns a float
    with an integral value, like the original.
    """
    return float(math.floor(abs(value) + 0.5)) * (1.0 if value >= 0 else -1.0)


def round_value(value: float, mode: RoundingMode) -> int:
    """Round with Python 3's banker's rounding (``"bankers"``) or half away from zero (``"half_away"``)."""
    if mode == "bankers":
        return int(round(value))
    if mode == "half_away":
        return int(python2round(value))
    raise ValueError(f"unknown rounding mode {mode!r}; use 'bankers' or 'half_away'")


def crop_side(side: float, mode: RoundingMode) -> int:
    """Integer crop side from the continuous ``s_z`` / ``s_x``.

    ``mode="bankers"`` for the template (``s_z = round(sqrt(...))``, facts §9.1) and ``"half_away"`` for the
    search region (``python2round(s_x)``, half away from zero, facts §9.2 step 1): the official code rounds the
    two sides differently, and so does this on purpose.
    """
    return round_value(side, mode)


def crop_corner(center: float, side: int) -> int:
    """First pixel of the window along one axis: ``round(c - (s + 1) / 2)``, banker's rounding -- facts §9.1.

    ``xmin = round(cx - (s + 1) / 2)`` with Python 3's ``round`` (banker's rounding: half to even), the window
    is ``[xmin, xmin + s - 1]`` -- facts §9.1. So ``cx - (s+1)/2 = 2.5`` gives ``xmin = 2`` but ``3.5`` gives
    ``4``. This holds for template and search crops alike; it is the official quirk, reproduced on purpose.
    """
    return int(round(center - (side + 1) / 2))


def pad_color_uint8(pad_color: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """The padding colour as the official code stores it: truncated into a ``uint8`` buffer (facts §9.1).

    The padding colour is the per-channel mean ``avg_chans`` of the *first* frame (facts §9.1, §13.3 item 9);
    the official code writes it into a ``uint8`` buffer, which truncates it, and so does this function.
    """
    color = np.asarray(pad_color, dtype=np.float64)
    return np.clip(np.trunc(color), 0, 255).astype(np.uint8)


def get_subwindow(image_bgr_uint8: np.ndarray, center_xy: tuple[float, float], crop_side: int,
                  out_size: int, pad_color: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Square window of ``crop_side`` px around ``center_xy``, padded and resized to ``out_size``.

    Unlike the official code, which builds a padded copy of the whole image whenever the window crosses a
    border, this only allocates the ``s x s`` window: inside the image the window is a view (no copy) handed
    straight to ``cv2.resize``. The pixels are identical.

    Args:
        image_bgr_uint8: ``(H, W, 3)`` uint8 image (any channel order; the tracker uses BGR).
        center_xy: window centre ``(cx, cy)`` in 0-based image pixels (float).
        crop_side: integer side ``s`` of the window in image pixels (already rounded, see :func:`crop_side`).
        out_size: side of the returned patch (pixels).
        pad_color: ``(3,)`` colour for the part of the window outside the image (``avg_chans``);
            truncated to uint8 as in the official code.

    Returns:
        ``(out_size, out_size, 3)`` uint8 patch: the window ``[xmin, xmin + s - 1] x [ymin, ymin + s - 1]``
        with ``xmin = round(cx - (s + 1) / 2)`` (banker's rounding, facts §9.1), resized with
        ``cv2.resize`` (bilinear) when ``s != out_size``. This may be a view of ``image_bgr_uint8`` when the
        window lies inside the image and no resize is needed; do not write into it.
    """
    if image_bgr_uint8.ndim != 3 or image_bgr_uint8.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image_bgr_uint8.dtype} "
                         f"{image_bgr_uint8.shape}")
    side = int(crop_side)
    if side < 1:
        raise ValueError(f"crop side must be >= 1 pixel, got {crop_side}")
    height, width, channels = image_bgr_uint8.shape
    xmin = crop_corner(float(center_xy[0]), side)
    ymin = crop_corner(float(center_xy[1]), side)
    xmax = xmin + side - 1  # inclusive -- facts §9.1
    ymax = ymin + side - 1

    if xmin >= 0 and ymin >= 0 and xmax < width and ymax < height:
        patch = image_bgr_uint8[ymin:ymax + 1, xmin:xmax + 1]
    else:
        color = pad_color_uint8(pad_color)
        if color.shape != (channels,):
            raise ValueError(f"pad_color must have {channels} values, got shape {color.shape}")
        patch = np.empty((side, side, channels), dtype=np.uint8)
        patch[:] = color
        # Intersection of the window with the image, in image coordinates (inclusive-exclusive).
        x0, x1 = max(xmin, 0), min(xmax + 1, width)
        y0, y1 = max(ymin, 0), min(ymax + 1, height)
        if x0 < x1 and y0 < y1:
            patch[y0 - ymin:y1 - ymin, x0 - xmin:x1 - xmin] = image_bgr_uint8[y0:y1, x0:x1]

    if side != out_size:
        patch = cv2.resize(patch, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    return patch

