"""Write small synthetic pair-record files (the ``data_prep.records`` schema) for the training-input tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from data_prep.crops import crop_region, encode_jpeg, stored_sides
from data_prep.pairs import pair_id
from data_prep.records import build_table, side_fields
from ocean.config import AugmentConfig


def write_pairs(folder: Path, counts: dict[str, int], seed: int = 0, per_file: int = 16) -> int:
    """Plain synthetic pair records: a yellow box on smoothed noise, moved up to 20 px in the search frame."""
    folder.mkdir(parents=True, exist_ok=True)
    t_side, s_side = stored_sides(AugmentConfig())
    rows = []
    for name, n in sorted(counts.items()):
        for k in range(n):
            rng = np.random.default_rng([seed, k, len(name)])
            img = cv2.resize(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (640, 480))
            w, h = rng.uniform(40, 120, 2)
            x, y = rng.uniform(100, 640 - 100 - w), rng.uniform(100, 480 - 100 - h)
            box_t = [x, y, x + w, y + h]
            dx, dy = rng.uniform(-20, 20, 2)
            box_s = [x + dx, y + dy, x + w + dx, y + h + dy]
            t_img, s_img = img.copy(), img.copy()
            t_img[int(y):int(y + h), int(x):int(x + w)] = (20, 200, 240)
            s_img[int(box_s[1]):int(box_s[3]), int(box_s[0]):int(box_s[2])] = (20, 200, 240)
            t, s = crop_region(t_img, box_t, t_side), crop_region(s_img, box_s, s_side)
            rows.append({"pair_id": pair_id(name, f"v{k}", "0", "0", "1", k), "dataset": name, "video": f"v{k}",
                         "track": "0", "template_frame": "0", "search_frame": "1", "draw": k,
                         **side_fields("template", encode_jpeg(t.image), t, box_t, (640, 480)),
                         **side_fields("search", encode_jpeg(s.image), s, box_s, (640, 480))})
    for i in range(0, len(rows), per_file):
        pq.write_table(build_table(rows[i:i + per_file]), folder / f"shard-{i // per_file:05d}.parquet")
    return len(rows)
