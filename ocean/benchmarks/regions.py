"""Region geometry for benchmark scoring: box IoU, VOT polygon overlap, polygon -> init box.

Coordinate frame everywhere: 0-based pixels, the top-left pixel is (0, 0) (formats.md §0). Boxes are
``box_xywh`` = (x, y, w, h) with the top-left corner at (x, y); polygons are ``poly_xy8`` =
(x1, y1, ..., x4, y4) as in VOT ``groundtruth.txt``. Two polygon overlaps exist, on purpose:
:func:`polygon_overlap_continuous` detects VOT failures as the official Ocean test script does, and
:func:`vot_raster_overlap` scores as the VOT toolkits do.
"""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import Polygon as _ShapelyPolygon
from shapely.geometry import box as _shapely_box


def iou_xywh(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """Per-row IoU of two (N, 4) arrays of x,y,w,h boxes, as pysot ``overlap_ratio`` (ocean_facts §12.1).

    The intersection uses x + w (no +1); the result is clipped to [0, 1]. Rows whose union is 0 give 0.
    """
    a = np.asarray(a_xywh, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xywh, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, 0], b[:, 0])
    right = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    top = np.maximum(a[:, 1], b[:, 1])
    bottom = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.maximum(0.0, right - left) * np.maximum(0.0, bottom - top)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(iou, 0.0, 1.0)


def clip_xywh_to_image(box_xywh: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip (N, 4) x,y,w,h boxes to the image [0, width] x [0, height], as the got10k toolkit's
    ``rect_iou(..., bound=(width, height))`` does before computing IoU (formats.md §2.3)."""
    r = np.array(box_xywh, dtype=np.float64).reshape(-1, 4)
    r[:, 0] = np.clip(r[:, 0], 0, width)
    r[:, 1] = np.clip(r[:, 1], 0, height)
    r[:, 2] = np.clip(r[:, 2], 0, width - r[:, 0])
    r[:, 3] = np.clip(r[:, 3], 0, height - r[:, 1])
    return r


def bounded_iou_xywh(a_xywh: np.ndarray, b_xywh: np.ndarray, width: float, height: float) -> np.ndarray:
    """got10k toolkit IoU: both boxes clipped to the image first, then :func:`iou_xywh`."""
    return iou_xywh(clip_xywh_to_image(a_xywh, width, height), clip_xywh_to_image(b_xywh, width, height))


def polygon_to_init_box_xywh(poly_xy8: np.ndarray) -> np.ndarray:
    """Axis-aligned init box of a VOT region, as the official Ocean/pysot ``get_axis_aligned_bbox``.

    8 values (ocean_facts §9.1): centre = mean of the corners; w, h = axis-aligned extent scaled by
    sqrt(polygon area / box area), then +1. 4 values (x,y,w,h): returned unchanged (centre x + w/2).
    Returns (x, y, w, h) with x = cx - w/2, so a tracker that takes centre = x + w/2 gets exactly (cx, cy).
    """
    p = np.asarray(poly_xy8, dtype=np.float64).ravel()
    if p.size == 4:
        return p.copy()
    if p.size != 8:
        raise ValueError(f"a VOT region has 4 or 8 values, got {p.size}")
    xs, ys = p[0::2], p[1::2]
    cx, cy = float(xs.mean()), float(ys.mean())
    x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
    a1 = np.linalg.norm(p[0:2] - p[2:4]) * np.linalg.norm(p[2:4] - p[4:6])
    a2 = (x2 - x1) * (y2 - y1)
    s = math.sqrt(a1 / a2) if a2 > 0 else 1.0
    w = s * (x2 - x1) + 1.0  # ocean_facts §9.1: "+1"
    h = s * (y2 - y1) + 1.0
    return np.array([cx - w / 2.0, cy - h / 2.0, w, h])


def polygon_to_xywh_extent(poly_xy8: np.ndarray) -> np.ndarray:
    """Plain axis-aligned extent (x, y, w, h) of (N, 8) polygons: used as the N x 4 GT of VOT sequences
    for box metrics and plots (not for init; see :func:`polygon_to_init_box_xywh`)."""
    p = np.asarray(poly_xy8, dtype=np.float64).reshape(-1, 8)
    xs, ys = p[:, 0::2], p[:, 1::2]
    x1, y1 = xs.min(axis=1), ys.min(axis=1)
    return np.stack([x1, y1, xs.max(axis=1) - x1, ys.max(axis=1) - y1], axis=1)


def _shape(region: np.ndarray):
    r = np.asarray(region, dtype=np.float64).ravel()
    if r.size == 4:
        return _shapely_box(r[0], r[1], r[0] + r[2], r[1] + r[3])
    if r.size >= 6 and r.size % 2 == 0:
        return _ShapelyPolygon(r.reshape(-1, 2)).buffer(0)
    raise ValueError(f"a region has 4 (x,y,w,h) or an even number >= 6 of values, got {r.size}")


def polygon_overlap_continuous(
    region_a: np.ndarray, region_b: np.ndarray, bound_wh: tuple[float, float] | None = None
) -> float:
    """Exact-area IoU (shapely) of two regions (4-value x,y,w,h or polygon x1,y1,...), optionally both
    clipped to [0, W] x [0, H]. Unbounded, this is the failure test of ocean_facts §9.4.

    This is what the official Ocean test script uses to *detect failures* in the VOT protocol
    (ocean_facts §9.4: shapely, unbounded, failure when exactly 0); scoring uses :func:`vot_raster_overlap`.
    """
    a, b = _shape(region_a), _shape(region_b)
    if bound_wh is not None:
        frame = _shapely_box(0, 0, bound_wh[0], bound_wh[1])
        a, b = a.intersection(frame), b.intersection(frame)
    union = a.union(b).area
    return float(a.intersection(b).area / union) if union > 0 else 0.0


# --- VOT raster overlap (algorithm of votchallenge/toolkit vot/region/raster.py) -----------------------


def _raster_bounds(r: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive pixel bounds (left, top, right, bottom) of a region, rounded as the VOT toolkit."""
    if r.size == 4:
        return (round(r[0]), round(r[1]), round(r[0] + r[2] - 1), round(r[1] + r[3] - 1))
    xs, ys = r[0::2], r[1::2]
    return (round(xs.min()), round(ys.min()), round(xs.max()), round(ys.max()))


def _raster_rectangle(r: np.ndarray, b: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((b[3] - b[1] + 1, b[2] - b[0] + 1), dtype=bool)
    x, y, w, h = r
    if x > b[2] or x + w - 1 < b[0] or y > b[3] or y + h - 1 < b[1]:
        return mask
    # Integer pixel edges rounded like the region bounds (the toolkit's fixtures are integral). The
    # toolkit clamps right/bottom with the absolute bound b[2]/b[3]; clamping with the mask size instead
    # is identical whenever the raster starts at >= 0 (always when bounded to the image) and avoids an
    # empty mask for unbounded regions left of / above 0.
    left = max(0, round(x) - b[0])
    top = max(0, round(y) - b[1])
    right = min(b[2] - b[0], round(x + w - 1) - b[0])
    bottom = min(b[3] - b[1], round(y + h - 1) - b[1])
    mask[top : bottom + 1, left : right + 1] = True
    return mask


def _raster_polygon(r: np.ndarray, b: tuple[int, int, int, int]) -> np.ndarray:
    """Scan-line fill of a polygon, pixel rows of the bounds; same node rules as the VOT toolkit."""
    width, height = b[2] - b[0] + 1, b[3] - b[1] + 1
    mask = np.zeros((height, width), dtype=bool)
    poly = np.round(r.reshape(-1, 2)) - np.array([b[0], b[1]], dtype=np.float64)
    count = len(poly)
    py = np.arange(height, dtype=np.float64)[:, None]  # (H, 1)
    yi, xi = poly[:, 1][None, :], poly[:, 0][None, :]
    j = np.roll(np.arange(count), 1)  # previous vertex, j = i - 1 (wraps) as the toolkit's loop
    yj, xj = poly[j, 1][None, :], poly[j, 0][None, :]
    crosses = (
        ((yi <= py) & (yj > py))
        | ((yj <= py) & (yi > py))
        | ((yi < py) & (yj >= py))
        | ((yj < py) & (yi >= py))
        | ((yi == yj) & (yi == py))
    )
    rr = yj - yi
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(rr != 0, xi + (py - yi) / np.where(rr != 0, rr, 1.0) * (xj - xi), xi)
    node_x = np.trunc(xs).astype(np.int64)  # C/numba float -> int64 conversion truncates
    for row in range(height):
        nodes = np.sort(node_x[row][crosses[row]])
        n = len(nodes)
        i = 0
        while i < n - 1:
            if nodes[i] >= width:
                break
            if nodes[i] == nodes[i + 1] and i < n - 2:
                i += 1
                continue
            if nodes[i + 1] >= 0:
                lo = max(int(nodes[i]), 0)
                hi = min(int(nodes[i + 1]), width - 1)
                mask[row, lo : hi + 1] = True
            i += 2
    return mask


def _raster(r: np.ndarray, b: tuple[int, int, int, int]) -> np.ndarray:
    return _raster_rectangle(r, b) if r.size == 4 else _raster_polygon(r, b)


def vot_raster_overlap(
    region_a: np.ndarray, region_b: np.ndarray, bound_wh: tuple[int, int] | None = None
) -> float:
    """VOT toolkit overlap of two regions (4-value x,y,w,h or polygon), rasterised to pixel masks.

    bound_wh = (image width, image height): only pixels 0..W-1 x 0..H-1 count (ocean_facts §12.4,
    "overlaps bounded to the image"). Returns intersection / union of the masks, 0 when empty.

    This is how the VOT toolkits *score*: both regions are rounded and rasterised to pixel masks inside the
    image and the masks are compared (votchallenge/toolkit ``vot/region/raster.py``, the same algorithm as
    the trax ``region.c`` used by pysot's ``region.pyx``; ocean_facts §12.4). For small targets it differs
    from :func:`polygon_overlap_continuous` by several points (on the mmtracking fixtures: accuracy 0.5929
    continuous vs 0.5826 rasterised, the value the toolkits report), so scoring uses this version.
    """
    a = np.asarray(region_a, dtype=np.float64).ravel()
    b = np.asarray(region_b, dtype=np.float64).ravel()
    for r in (a, b):
        if not (r.size == 4 or (r.size >= 8 and r.size % 2 == 0)):
            raise ValueError(f"a VOT region has 4 or >= 8 (even) values, got {r.size}")
    ba, bb = _raster_bounds(a), _raster_bounds(b)
    union = (min(ba[0], bb[0]), min(ba[1], bb[1]), max(ba[2], bb[2]), max(ba[3], bb[3]))
    if bound_wh is not None:
        rb = (
            max(0, union[0]),
            max(0, union[1]),
            min(bound_wh[0] - 1, union[2]),
            min(bound_wh[1] - 1, union[3]),
        )
    else:
        rb = union
    if rb[0] >= rb[2] or rb[1] >= rb[3]:
        return 0.0
    m1, m2 = _raster(a, rb), _raster(b, rb)
    u = int(np.count_nonzero(m1 | m2))
    return float(np.count_nonzero(m1 & m2)) / u if u > 0 else 0.0
