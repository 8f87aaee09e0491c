"""Geometry shared by the data path, the model and the tracker: context size, mean colour, the score grid
and box formats.

Conventions: 0-based pixels; ``xywh`` = top-left corner + size, ``xyxy`` = corners, ``cxcywh`` = centre +
size. The box converters work on numpy arrays or torch tensors of shape ``(..., 4)``. Importing this module
does not import torch (the data tasks use it); only the torch functions need it.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def context_size(size_wh, context_amount: float = 0.5):
    """``sqrt((w + p)(h + p))`` with ``p = context_amount (w + h)``: the side of the square context window
    around a ``w x h`` target -- facts §7.1 (crop511), §9.1 / §9.2 step 1 (tracker crops), §9.2 step 3
    (``sz`` of the scale penalty, context 0.5).

    ``size_wh``: ``(w, h)`` numbers -> a Python float (computed in Python floats: float64 without numpy's
    per-call cost); or ``(w, h)`` numpy arrays -> an array, elementwise in the arrays' dtype.
    """
    w, h = size_wh[0], size_wh[1]
    elementwise = isinstance(w, np.ndarray)
    if not elementwise:
        w, h = float(w), float(h)
    p = context_amount * (w + h)
    area = (w + p) * (h + p)
    return np.sqrt(area) if elementwise else math.sqrt(area)


def mean_color(image: np.ndarray, method: Literal["cv2", "numpy"] = "cv2") -> np.ndarray:
    """Per-channel mean colour of an image, float64 -- the crop511 border of facts §7.1, ``avg_chans`` of §9.1.

    ``"cv2"``: ``cv2.mean``, ~75x faster than the official ``np.mean`` (facts §17; what data preparation
    uses); ``(3,)``, a grey ``(H, W)`` / ``(H, W, 1)`` image giving its mean three times. ``"numpy"``:
    ``image.reshape(-1, C).mean(axis=0)``, the official ``np.mean`` (what the tracker uses, facts §9.1);
    ``(C,)`` for an ``(H, W, C)`` image. The two differ in the last bits (``cv2.mean`` multiplies the sum by
    ``1 / N``), which can change the colour once it is truncated to uint8, so each caller keeps its method.
    """
    if method == "cv2":
        m = cv2.mean(image)
        if image.ndim == 2 or image.shape[2] == 1:
            return np.array([m[0], m[0], m[0]])
        return np.array(m[:3])
    if method == "numpy":
        return image.reshape(-1, image.shape[-1]).mean(axis=0)
    raise ValueError(f"unknown mean_color method {method!r}; use 'cv2' or 'numpy'")


def score_size(search_size: int, exemplar_size: int = 127, stride: int = 8) -> int:
    """Side of the score map for a search crop: ``(S - 127) // 8 + 1 + 8`` -- facts §1.2.

    255 -> 25, 271 -> 27, 287 -> 29. The ``+ 8`` is the 7x7 template kernel / no-padding
    encoder geometry of the network (the 15 -> 7 crop and the two unpadded 3x3 convs).
    """
    return (search_size - exemplar_size) // stride + 1 + 8


def score_grid(n: int, search_size: int, stride: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the search crop of every score-map cell.

    Cell (i, j) of an ``n x n`` map sits at ``x = stride (j - n//2) + S//2``, ``y = stride (i - n//2) + S//2``
    -- facts §3. Returns ``(xs, ys)``, each ``(n, n)`` float32 (``xs[i, j]`` varies with ``j``).
    """
    offs = stride * (np.arange(n, dtype=np.float32) - n // 2) + search_size // 2
    xs, ys = np.meshgrid(offs, offs)
    return xs, ys


def score_grid_torch(n: int, search_size: int, stride: int = 8, *, device=None,
                     dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch version of :func:`score_grid` on ``device`` (``dtype`` default float32)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    offs = stride * (torch.arange(n, device=device, dtype=dtype) - n // 2) + search_size // 2
    ys, xs = torch.meshgrid(offs, offs, indexing="ij")
    return xs, ys


def xywh_to_xyxy(box):
    x, y, w, h = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    return _stack(box, [x, y, x + w, y + h])


def xyxy_to_xywh(box):
    x1, y1, x2, y2 = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    return _stack(box, [x1, y1, x2 - x1, y2 - y1])


def xywh_to_cxcywh(box):
    x, y, w, h = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    return _stack(box, [x + w / 2, y + h / 2, w, h])


def cxcywh_to_xywh(box):
    cx, cy, w, h = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    return _stack(box, [cx - w / 2, cy - h / 2, w, h])


def _stack(like, parts):
    torch = sys.modules.get("torch")  # not imported yet: ``like`` cannot be a tensor
    if torch is not None and isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)
