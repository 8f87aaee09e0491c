"""Write tiny benchmark trees in the REAL layouts (formats.md §2) for the benchmark tests.

Images are small solid-colour JPEGs written with cv2.imwrite; boxes are chosen by each test.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_WH = (64, 48)  # tiny frames keep the tests fast
# The metrics an evaluation reports, in table order (what the tests expect, written independently of the code).
METRICS = ("success_auc", "precision", "norm_precision", "ao", "sr50", "sr75", "eao", "accuracy", "robustness")


# Online module settings that keep tracking these tiny trees fast (64 px patch, 2 init iterations, no rotated
# or dropout copies, 8 feature channels); the defaults are exercised in tests/unit/test_online.py.
FAST_ONLINE = ("tracker.online=true", "tracker.online_params.sample_size=64", "tracker.online_params.init_iterations=2",
               "tracker.online_params.rotations=[]", "tracker.online_params.dropout_samples=0",
               "tracker.online_params.feature_dim=8")


def write_frames(folder: Path, numbers, wh: tuple[int, int] = IMAGE_WH, digits: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in numbers:
        img = np.full((wh[1], wh[0], 3), (k * 7) % 255, dtype=np.uint8)
        p = folder / f"{k:0{digits}d}.jpg"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def write_rows(path: Path, rows, sep: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(sep.join(f"{v:g}" for v in r) + "\n" for r in rows))


def moving_boxes_xywh(n: int, start=(10.0, 8.0), size=(16.0, 12.0), step=(1.0, 0.5)) -> np.ndarray:
    """(n, 4) 0-based boxes of a target moving by ``step`` px per frame."""
    t = np.arange(n)[:, None]
    xy = np.array(start)[None, :] + t * np.array(step)[None, :]
    return np.hstack([xy, np.tile(np.array(size), (n, 1))])


def vot_polygons(boxes_xywh: np.ndarray) -> np.ndarray:
    """(n, 4) x, y, w, h -> (n, 8) VOT polygons x1, y1, x2, y1, x2, y2, x1, y2."""
    x, y, w, h = np.asarray(boxes_xywh, dtype=np.float64).T
    return np.stack([x, y, x + w, y, x + w, y + h, x, y + h], axis=1)


def make_otb_sequence(
    root: Path,
    name: str,
    gt0_xywh: np.ndarray,
    sep: str = ",",
    first_image: int = 1,
    n_images: int | None = None,
    gt_file: str = "groundtruth_rect.txt",
) -> Path:
    """``root/<name>/img/0001.jpg`` (4 digits) + a 1-based GT file."""
    d = root / name
    n_images = n_images or (first_image - 1 + len(gt0_xywh))
    if not (d / "img").is_dir():
        write_frames(d / "img", range(1, n_images + 1), digits=4)
    write_rows(d / gt_file, np.asarray(gt0_xywh) + np.array([1, 1, 0, 0]), sep)
    return d


def make_vot_sequence(root: Path, name: str, regions: np.ndarray, color_dir: bool = False) -> Path:
    d = root / name
    write_frames(d / "color" if color_dir else d, range(1, len(regions) + 1))
    write_rows(d / "groundtruth.txt", regions)
    with open(root / "list.txt", "a") as f:
        f.write(name + "\n")
    return d


def make_got10k_sequence(
    root: Path, name: str, gt_xywh: np.ndarray, test: bool = False, cover: np.ndarray | None = None
) -> Path:
    d = root / name
    write_frames(d, range(1, len(gt_xywh) + 1))
    write_rows(d / "groundtruth.txt", gt_xywh[:1] if test else gt_xywh)
    if cover is not None:
        (d / "cover.label").write_text("".join(f"{int(c)}\n" for c in cover))
        (d / "absence.label").write_text("".join(f"{int(c == 0)}\n" for c in cover))
    (d / "meta_info.ini").write_text(
        f"[METAINFO]\nobject_class: thing\nresolution: ({IMAGE_WH[0]}, {IMAGE_WH[1]})\n"
    )
    with open(root / "list.txt", "a") as f:
        f.write(name + "\n")
    return d


def make_lasot_sequence(root: Path, name: str, gt0_xywh: np.ndarray, full_occlusion, out_of_view) -> Path:
    cat = name.rsplit("-", 1)[0]
    d = root / cat / name
    write_frames(d / "img", range(1, len(gt0_xywh) + 1))
    write_rows(d / "groundtruth.txt", np.asarray(gt0_xywh) + np.array([1, 1, 0, 0]))
    (d / "full_occlusion.txt").write_text(",".join(str(int(v)) for v in full_occlusion) + "\n")
    (d / "out_of_view.txt").write_text(",".join(str(int(v)) for v in out_of_view) + "\n")
    (d / "nlp.txt").write_text("a thing\n")
    return d
