"""Box formats and the score-map <-> search-image pixel mapping shared by labels, model and tracker.

Conventions: 0-based pixels; ``xywh`` = top-left corner + size, ``xyxy`` = corners, ``cxcywh`` = centre +
size. Functions work on numpy arrays or torch tensors of shape ``(..., 4)``.
"""

from __future__ import annotations

import numpy as np
import torch


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
                     dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch version of :func:`score_grid` on ``device``."""
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
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)
