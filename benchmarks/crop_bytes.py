"""Bytes per stored pair vs two crop511 JPEGs, and augmentation throughput on one core.

    python benchmarks/crop_bytes.py [--images 40] [--quality 90] [--batch 256]

Images are synthetic 640x360 frames with a natural-image-like 1/f spectrum plus shapes (:func:`natural_image`) (no real frames ship
with the repository); the script prints their crop511 size at q95 next to the measured size of real
640x360 GOT-10k frames (36.1 KB, ocean_facts §17) so the realism of the texture can be judged.

Reported:
* crop511 pair = two 511x511 JPEGs (template frame + search frame) at q95 (the official default, facts §7.1)
  and at ``--quality``;
* stored pair = template side (145 px) + search side (433 px) at ``--quality`` (data_prep.crops);
* augment_pairs throughput, decode included, OpenCV limited to one thread (pairs / s / core).
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from data_prep.augment import augment_pairs
from data_prep.crops import crop511, crop_region, encode_jpeg, stored_sides
from ocean.config import AugmentConfig

GOT10K_CROP511_Q95_KB = 36.1  # ocean_facts §17, real 640x360 frames


def natural_image(rng: np.random.Generator, h: int = 360, w: int = 640) -> np.ndarray:
    """A natural-image-like frame, uint8 BGR ``(h, w, 3)``.

    Luminance with a 1/f-like spectrum (blurred noise at scales 1..32 px, amplitude ~ scale^1.6), weaker
    coarse chroma, a dozen flat shapes with sharp edges and a little sensor noise. The exponent was set so a
    crop511 at q95 is about as large as one from a real 640x360 GOT-10k frame (ocean_facts §17).
    """
    lum = np.zeros((h, w), np.float32)
    for sigma in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
        lum += cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma) * sigma ** 1.6
    col = np.zeros((h, w, 3), np.float32)
    for sigma in (8.0, 16.0, 32.0):
        col += cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), sigma) * sigma ** 1.6
    img = ((lum - lum.mean()) / lum.std() * 40)[..., None] + (col - col.mean()) / col.std() * 20 + 110
    for _ in range(12):  # flat objects with sharp edges
        color = tuple(float(c) for c in rng.uniform(20, 235, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        ax = (int(rng.integers(10, 80)), int(rng.integers(10, 60)))
        if rng.random() < 0.5:
            cv2.ellipse(img, (cx, cy), ax, float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            cv2.rectangle(img, (cx, cy), (cx + ax[0], cy + ax[1]), color, -1)
    img += rng.standard_normal((h, w, 1)).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def random_box(rng: np.random.Generator, h: int = 360, w: int = 640) -> list[float]:
    bw, bh = rng.uniform(30, 200), rng.uniform(30, 160)
    x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return [x1, y1, x1 + bw, y1 + bh]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40, help="source frames (each gives one pair)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality of stored crops (paper preset 95, smoke 90)")
    ap.add_argument("--batch", type=int, default=256, help="pairs per augment_pairs call")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    t_side, s_side = stored_sides(AugmentConfig())

    c511_q95, c511_q, stored_t, stored_s, rows = [], [], [], [], []
    for _ in range(args.images):
        img = natural_image(rng)
        box_t, box_s = random_box(rng), random_box(rng)  # template and search frames: two targets
        c511_q95.append(len(encode_jpeg(crop511(img, box_t), 95)) + len(encode_jpeg(crop511(img, box_s), 95)))
        c511_q.append(len(encode_jpeg(crop511(img, box_t), args.quality))
                      + len(encode_jpeg(crop511(img, box_s), args.quality)))
        t = crop_region(img, box_t, t_side)
        s = crop_region(img, box_s, s_side)
        tj, sj = encode_jpeg(t.image, args.quality), encode_jpeg(s.image, args.quality)
        stored_t.append(len(tj))
        stored_s.append(len(sj))
        rows.append((tj, sj, t, s))

    n = args.batch
    idx = np.arange(n) % len(rows)
    batch = {
        "pair_id": np.array([f"{i:016x}" for i in range(n)]),
        "template_jpeg": [rows[i][0] for i in idx], "search_jpeg": [rows[i][1] for i in idx],
        "template_box": np.stack([rows[i][2].box_xyxy for i in idx]),
        "search_box": np.stack([rows[i][3].box_xyxy for i in idx]),
        "template_offset": np.array([rows[i][2].geometry.offset for i in idx]),
        "search_offset": np.array([rows[i][3].geometry.offset for i in idx]),
    }
    cfg = AugmentConfig()
    augment_pairs(batch, cfg, seed=0)  # warm-up
    rates = []
    for rep in range(5):
        t0 = time.perf_counter()
        augment_pairs(batch, cfg, seed=rep)
        rates.append(n / (time.perf_counter() - t0))

    pair = np.add(stored_t, stored_s)
    result = {
        "images": args.images, "quality": args.quality, "stored_sides": [t_side, s_side],
        "crop511_single_q95_kb": float(np.mean(c511_q95)) / 2 / 1000,
        "crop511_single_q95_kb_real_got10k": GOT10K_CROP511_Q95_KB,
        "crop511_pair_q95_kb": float(np.mean(c511_q95)) / 1000,
        f"crop511_pair_q{args.quality}_kb": float(np.mean(c511_q)) / 1000,
        "stored_template_kb": float(np.mean(stored_t)) / 1000,
        "stored_search_kb": float(np.mean(stored_s)) / 1000,
        "stored_pair_kb": float(np.mean(pair)) / 1000,
        "ratio_vs_crop511_q95": float(np.mean(pair) / np.mean(c511_q95)),
        f"ratio_vs_crop511_q{args.quality}": float(np.mean(pair) / np.mean(c511_q)),
        "augment_pairs_per_s_one_core_median": float(np.median(rates)),
        "augment_pairs_per_s_one_core_all": [round(r, 1) for r in rates],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
