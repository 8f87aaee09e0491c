"""Held-out evaluation scenes: a tracking benchmark written apart from the training generator, never trained on.

:func:`write_heldout_otb` writes ``N`` sequences in the OTB layout (formats.md §2.1: ``<Seq>/img/0001.jpg``,
1-based ``groundtruth_rect.txt``) plus ``attributes.json`` (what each sequence contains), so ``ocean
evaluate --benchmark otb=ROOT`` scores it. Nothing here imports or reuses :mod:`data_prep.synthetic_scene`:
the backgrounds (busy, high-contrast clutter: rectangles and discs, hatching, checkerboards, glyphs, hard-edged
blotches), the targets (random polygons, ellipses, rounded boxes and blobs with patch, gradient, spot and
glyph textures), the motion and the image effects (distractors of the target's own look, scale and aspect
change, motion and defocus blur, illumination ramps and flicker, partial occlusion by foreground bars,
camera shake, sensor noise) are all drawn by this module, from generators seeded with ``seed`` and a stream
of its own. Deterministic: the same ``seed`` gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

HELDOUT_SEED = 20_261_203  # a seed no training stream uses (data_prep.synthetic seeds with 0..N)
_STREAM = 0x4E1D  # this module's own stream id, kept apart from data_prep.synthetic's streams (1..11)
FRAME_SIZE = (384, 288)  # width, height: not a training frame size
_TEX = 96  # target sprite side before it is resized to its box
_GLYPHS = "ABCDEFGHKMNPRSTUVWXYZ0123456789#@&%"


@dataclass
class HeldoutSequence:
    name: str
    frames: list[np.ndarray]
    boxes_xywh: np.ndarray  # (N, 4) float, 0-based tight boxes of the drawn target (also when occluded)
    attributes: dict = field(default_factory=dict)


# ---------------------------------------------------------------- backgrounds (busy, high contrast)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _bg_clutter(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), _colour(rng), np.uint8)
    for _ in range(int(rng.integers(60, 140))):
        c = _colour(rng)
        x, y = int(rng.integers(-20, w)), int(rng.integers(-20, h))
        s = int(rng.integers(6, max(8, min(w, h) // 4)))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + s, y + int(s * rng.uniform(0.3, 2.0))), c, -1)
        else:
            cv2.circle(img, (x, y), s // 2, c, -1 if rng.random() < 0.7 else 3)
    return img


def _bg_hatch(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), _colour(rng), np.uint8)
    for _ in range(int(rng.integers(3, 6))):
        c, ang, gap = _colour(rng), rng.uniform(0, np.pi), int(rng.integers(5, 18))
        d = np.array([np.cos(ang), np.sin(ang)])
        n = np.array([-d[1], d[0]])
        for k in range(-(w + h) // gap, (w + h) // gap):
            p = np.array([w / 2, h / 2]) + n * k * gap
            a, b = p - d * (w + h), p + d * (w + h)
            cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), c, int(rng.integers(1, 4)))
    return img


def _bg_checks(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    cell = rng.uniform(8, 28)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi / 2)
    u, v = np.cos(ang) * xx + np.sin(ang) * yy, -np.sin(ang) * xx + np.cos(ang) * yy
    checks = (np.floor(u / cell) + np.floor(v / (cell * rng.uniform(0.6, 1.6)))) % 2 == 0
    return np.where(checks[..., None], _colour(rng), _colour(rng)).astype(np.uint8)


def _bg_glyphs(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), _colour(rng), np.uint8)
    for _ in range(int(rng.integers(40, 90))):
        txt = "".join(rng.choice(list(_GLYPHS), int(rng.integers(1, 4))))
        cv2.putText(img, txt, (int(rng.integers(-10, w)), int(rng.integers(0, h + 10))), int(rng.integers(0, 8)),
                    float(rng.uniform(0.6, 2.2)), _colour(rng), int(rng.integers(1, 5)), cv2.LINE_AA)
    return img


def _bg_blotches(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    levels = rng.integers(0, 256, (4, 3))
    low = cv2.resize(rng.random((h // 12 + 2, w // 12 + 2)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    edges = np.quantile(low, [0.25, 0.5, 0.75])
    idx = np.digitize(low, edges)
    for k in range(4):
        img[idx == k] = levels[k]
    return img


_BACKGROUNDS = {"clutter": _bg_clutter, "hatch": _bg_hatch, "checks": _bg_checks, "glyphs": _bg_glyphs,
                "blotches": _bg_blotches}


# ---------------------------------------------------------------- targets


def _target_mask(rng: np.random.Generator, kind: str) -> np.ndarray:
    s = _TEX * 4
    m = np.zeros((s, s), np.uint8)
    if kind == "polygon":
        ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        rad = rng.uniform(0.55, 1.0, len(ang)) * s / 2
        pts = np.stack([s / 2 + rad * np.cos(ang), s / 2 + rad * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)
    elif kind == "ellipse":
        cv2.ellipse(m, (s // 2, s // 2), (s // 2, s // 2), 0, 0, 360, 255, -1)
    elif kind == "rounded":
        r = s // 6
        cv2.rectangle(m, (r, 0), (s - r, s), 255, -1)
        cv2.rectangle(m, (0, r), (s, s - r), 255, -1)
        for cx, cy in ((r, r), (s - r, r), (r, s - r), (s - r, s - r)):
            cv2.circle(m, (cx, cy), r, 255, -1)
    else:  # blob: thresholded smooth noise, largest part
        low = cv2.resize(rng.random((6, 6)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:s, 0:s] / s - 0.5
        m = ((low - 1.6 * np.hypot(xx, yy)) > 0.0).astype(np.uint8) * 255
        if m.sum() == 0:
            cv2.circle(m, (s // 2, s // 2), s // 3, 255, -1)
    ys, xs = np.nonzero(m)
    m = m[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]  # tight: the box is the drawn extent
    return cv2.resize(m, (_TEX, _TEX), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _target_texture(rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(4))
    img = np.zeros((_TEX, _TEX, 3), np.float32)
    if kind == 0:  # colour patches (a coarse Voronoi)
        pts = rng.uniform(0, _TEX, (int(rng.integers(4, 9)), 2))
        cols = rng.integers(0, 256, (len(pts), 3))
        yy, xx = np.mgrid[0:_TEX, 0:_TEX]
        nearest = np.argmin((xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2, axis=2)
        img[:] = cols[nearest]
    elif kind == 1:  # two-colour gradient with spots
        a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
        t = np.linspace(0, 1, _TEX, dtype=np.float32)[:, None, None]
        img[:] = a * (1 - t) + b * t
        for _ in range(int(rng.integers(4, 12))):
            cv2.circle(img, tuple(int(v) for v in rng.integers(0, _TEX, 2)), int(rng.integers(3, 12)), _colour(rng), -1)
    elif kind == 2:  # glyphs on a plain ground
        ground = np.full((_TEX, _TEX, 3), _colour(rng), np.uint8)
        for _ in range(int(rng.integers(2, 5))):
            cv2.putText(ground, str(rng.choice(list(_GLYPHS))), tuple(int(v) for v in rng.integers(5, _TEX - 20, 2)),
                        0, float(rng.uniform(0.8, 1.6)), _colour(rng), 3, cv2.LINE_AA)
        img[:] = ground
    else:  # concentric bands
        yy, xx = (np.mgrid[0:_TEX, 0:_TEX] - _TEX / 2) / _TEX
        bands = (np.hypot(xx, yy) * rng.uniform(3, 8)).astype(int) % 3
        cols = rng.integers(0, 256, (3, 3))
        img[:] = cols[bands]
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _look_alike(rng: np.random.Generator, tex: np.ndarray) -> np.ndarray:
    """A distractor texture close to the target's: hue shifted a little, mirrored."""
    hsv = cv2.cvtColor(tex, cv2.COLOR_BGR2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-12, 13))) % 180
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out[::-1].copy()


# ---------------------------------------------------------------- motion


def _walk(rng: np.random.Generator, n: int, w: int, h: int, margin: np.ndarray) -> np.ndarray:
    """(N, 2) centres: a momentum random walk with occasional sharp turns, bouncing off the frame edges."""
    pos = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
    vel = rng.normal(0, 2.5, 2)
    out = np.zeros((n, 2))
    for i in range(n):
        if rng.random() < 0.06:
            vel = rng.normal(0, 5.0, 2)  # an abrupt turn
        vel = 0.9 * vel + rng.normal(0, 0.8, 2)
        pos = pos + vel
        for a, lim in ((0, w), (1, h)):
            lo, hi = margin[i, a] / 2, lim - margin[i, a] / 2
            if pos[a] < lo or pos[a] > hi:
                pos[a] = np.clip(pos[a], lo, hi)
                vel[a] = -vel[a]
        out[i] = pos
    return out


def _sizes(rng: np.random.Generator, n: int, base: float, scale_change: bool) -> np.ndarray:
    """(N, 2) widths and heights: a start aspect in [0.45, 2.2], a scale ramp (x0.55..x1.9) and an aspect
    oscillation (as an object turning) when ``scale_change``."""
    t = np.linspace(0, 1, n)
    aspect0 = np.exp(rng.uniform(np.log(0.45), np.log(2.2)))
    if scale_change:
        scale = np.exp(np.log(rng.choice([rng.uniform(0.55, 0.8), rng.uniform(1.3, 1.9)])) * t)
        aspect = aspect0 * np.exp(rng.uniform(0.15, 0.35) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t))
    else:
        scale, aspect = np.ones(n), np.full(n, aspect0)
    return np.stack([base * scale * np.sqrt(aspect), base * scale / np.sqrt(aspect)], 1).clip(8, None)


# ---------------------------------------------------------------- rendering


def _paste(img: np.ndarray, tex: np.ndarray, mask: np.ndarray, cx: float, cy: float, bw: float, bh: float) -> None:
    x, y, w, h = int(round(cx - bw / 2)), int(round(cy - bh / 2)), max(int(round(bw)), 2), max(int(round(bh)), 2)
    fh, fw = img.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x2 <= x1 or y2 <= y1:
        return
    m = cv2.resize(mask, (w, h))[y1 - y: y2 - y, x1 - x: x2 - x, None]
    t = cv2.resize(tex, (w, h)).astype(np.float32)[y1 - y: y2 - y, x1 - x: x2 - x]
    img[y1:y2, x1:x2] = m * t + (1 - m) * img[y1:y2, x1:x2]


def _motion_blur(img: np.ndarray, vel: np.ndarray) -> np.ndarray:
    length = int(min(15, np.hypot(*vel) * 1.5))
    if length < 3:
        return img
    k = np.zeros((length, length), np.float32)
    d = vel / (np.hypot(*vel) + 1e-9)
    c = (length - 1) / 2
    cv2.line(k, (int(round(c - d[0] * c)), int(round(c - d[1] * c))), (int(round(c + d[0] * c)), int(round(c + d[1] * c))),
             1.0, 1)
    return cv2.filter2D(img, -1, k / max(k.sum(), 1e-6))


def render_sequence(rng: np.random.Generator, name: str, n_frames: int,
                    frame_size: tuple[int, int] = FRAME_SIZE) -> HeldoutSequence:
    """One held-out sequence of ``n_frames``; its attributes say which effects it has."""
    fw, fh = frame_size
    bg_kind = str(rng.choice(list(_BACKGROUNDS)))
    pad = 24
    bg = _BACKGROUNDS[bg_kind](rng, fw + 2 * pad, fh + 2 * pad).astype(np.float32)
    attrs = {"background": bg_kind, "target": str(rng.choice(["polygon", "ellipse", "rounded", "blob"])),
             "scale_change": bool(rng.random() < 0.7), "distractors": int(rng.integers(1, 4)),
             "occlusion": bool(rng.random() < 0.5), "motion_blur": bool(rng.random() < 0.5),
             "defocus": bool(rng.random() < 0.3), "illumination": bool(rng.random() < 0.6),
             "camera_shake": bool(rng.random() < 0.5)}
    base = min(fw, fh) * rng.uniform(0.12, 0.28)
    mask, tex = _target_mask(rng, attrs["target"]), _target_texture(rng)
    sizes = _sizes(rng, n_frames, base, attrs["scale_change"])
    centres = _walk(rng, n_frames, fw, fh, sizes)
    movers = []
    for _ in range(attrs["distractors"]):
        d_sizes = sizes * rng.uniform(0.8, 1.2)
        d_mask = mask if rng.random() < 0.6 else _target_mask(rng, attrs["target"])
        movers.append((_look_alike(rng, tex), d_mask, _walk(rng, n_frames, fw, fh, d_sizes), d_sizes))
    bars = []
    if attrs["occlusion"]:  # foreground bars the target passes behind (never more than about 70 % of it)
        for _ in range(int(rng.integers(1, 3))):
            bw = float(np.clip(sizes[:, 0].mean() * rng.uniform(0.3, 0.6), 4, None))
            bars.append((float(rng.uniform(0.15, 0.85) * fw), bw, _colour(rng)))
    gain = np.ones(n_frames)
    if attrs["illumination"]:
        t = np.linspace(0, 1, n_frames)
        gain = np.exp(rng.uniform(-0.7, 0.5) * np.sin(np.pi * rng.uniform(0.5, 1.5) * t))
        gain *= 1 + 0.08 * (rng.random(n_frames) < 0.1) * rng.choice([-1, 1], n_frames)  # flicker
    shake = rng.normal(0, 4 if attrs["camera_shake"] else 0.01, (n_frames, 2)).clip(-pad + 1, pad - 1)
    light_dir = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
    light = 1 + 0.35 * ((np.cos(light_dir) * xx / fw + np.sin(light_dir) * yy / fh) - 0.5)
    frames, boxes = [], np.zeros((n_frames, 4))
    for i in range(n_frames):
        ox, oy = int(pad + shake[i, 0]), int(pad + shake[i, 1])
        img = bg[oy: oy + fh, ox: ox + fw].copy()
        for d_tex, d_mask, d_pos, d_sz in movers:
            _paste(img, d_tex, d_mask, *d_pos[i], *d_sz[i])
        cx, cy = centres[i]
        bw, bh = sizes[i]
        _paste(img, tex, mask, cx, cy, bw, bh)
        x, y = round(cx - bw / 2), round(cy - bh / 2)
        boxes[i] = [max(x, 0), max(y, 0), min(x + max(round(bw), 2), fw) - max(x, 0),
                    min(y + max(round(bh), 2), fh) - max(y, 0)]
        for bx, bwid, col in bars:
            cv2.rectangle(img, (int(bx - bwid / 2), 0), (int(bx + bwid / 2), fh), col, -1)
        if attrs["motion_blur"] and i > 0:
            img = _motion_blur(img, centres[i] - centres[i - 1])
        if attrs["defocus"] and (i // 10) % 3 == 1:
            img = cv2.GaussianBlur(img, (0, 0), 2.0)
        img = img * (gain[i] * light)[..., None] + rng.normal(0, 4, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    if attrs["occlusion"]:
        attrs["max_occluded"] = round(float(max(
            (min(bw, max(0.0, min(b[0] + b[2], bx + bwid / 2) - max(b[0], bx - bwid / 2))) / b[2])
            for b in boxes for bx, bwid, _ in bars)), 2)
    return HeldoutSequence(name, frames, boxes, attrs)


def write_heldout_otb(out: str | Path, sequences: int = 12, frames: int = 60, seed: int = HELDOUT_SEED,
                      frame_size: tuple[int, int] = FRAME_SIZE) -> dict:
    """Write ``sequences`` held-out sequences of ``frames`` frames as an OTB benchmark under ``out``:
    ``Heldout01/img/0001.jpg``, ``groundtruth_rect.txt`` (1-based x,y,w,h) and ``attributes.json`` (per
    sequence). Reuses a complete earlier write with the same parameters; returns the attributes document."""
    out = Path(out)
    meta_path = out / "attributes.json"
    params = {"sequences": sequences, "frames": frames, "seed": seed, "frame_size": list(frame_size)}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == params:
            return meta
    meta = {"params": params, "sequences": {}}
    for k in range(sequences):
        rng = np.random.default_rng([seed, _STREAM, k])
        seq = render_sequence(rng, f"Heldout{k + 1:02d}", frames, frame_size)
        img_dir = out / seq.name / "img"
        img_dir.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(seq.frames):
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
            assert ok
            (img_dir / f"{i + 1:04d}.jpg").write_bytes(buf.tobytes())
        (out / seq.name / "groundtruth_rect.txt").write_text(
            "".join(f"{int(b[0]) + 1},{int(b[1]) + 1},{int(b[2])},{int(b[3])}\n" for b in seq.boxes_xywh))
        meta["sequences"][seq.name] = seq.attributes
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")  # written last: marks a complete set
    return meta
