"""Reduced-resolution JPEG decode in preparation (``data.reduced_decode``): crop fidelity and frames per CPU second.

    python benchmarks/reduced_decode.py [--frames DIR ...] [--mix ytbb|gt] [--repeats 5] [--quality 95]

Frames: the real 1280x720 JPEG clips of ``../shared/data/real_sequences`` (DTB70 Surfing06, VOT2015 ball1,
UAV123@10fps wakeboard7: 278 frames, files as published), or ``--frames`` folders of ``*.jpg``. Boxes:

- ``ytbb`` (default): every frame gets a box drawn (seeded) from the 322 real YouTube-BB validation rows of
  ``../shared/data/real_samples/youtube_bb_subset`` (normalised, so scaled to the frame): real object sizes of
  the largest training set in the official mix (210,000 of 600,000 pairs, facts §7.3);
- ``gt``: each clip's own ground truth (small targets: a ball, a surfer, a wakeboarder).

A track per clip with those boxes is planned as the job plans it (:func:`data_prep.pairs.plan_pairs`,
``--pairs`` pairs), and one shard of it is cut.

1. **Fidelity.** For every frame the plan uses, each crop (template 145 px, search 433 px) is rendered from
   the full decode and from the reduced decode (:func:`data_prep.crops.decode_scaled`, factor from
   :func:`data_prep.crops.decode_factor`), both stored as JPEG at ``--quality``, decoded again, and compared:
   PSNR over the whole crop (median, p5, min over the crops of reduced frames), before and after the JPEG
   round trip, and, as a yardstick, the PSNR of a full-decode crop's JPEG against its raw render (the loss
   storing crops already costs). Also for margins other than the default (``--margins``), and with the
   naive mapping (reduced pixel i at full pixel f i, no half-pixel shift) to show the shift matters.
2. **Speed**, frames per CPU second in this one process (OpenCV one thread, the job's malloc setting),
   interleaved ``--repeats`` times, median: the bare full-decode loop of ``prep_throughput.py`` (read,
   ``imdecode``, ``cv2.mean``, one ``warpAffine`` per crop, ``imencode``, bytes appended to a file) -- the
   baseline --, the same loop decoding at the reduced scale, and the job's own shard code
   (:func:`data_prep.shards.crop_shard`, parquet table included) with ``reduced_decode`` off and on.
3. **Decode alone**, ms of CPU per frame per clip at each factor (``cv2.imdecode`` of bytes in memory, median
   of the repeats): what DCT scaling saves and the entropy decoding it cannot skip.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)
from prep_throughput import bare_loop  # the baseline loop, with its reduced-decode switch

from data_prep.crops import (
    REDUCE_MARGIN,
    crop_region,
    decode_factor,
    decode_image,
    decode_scaled,
    encode_jpeg,
)
from data_prep.pairs import plan_pairs
from data_prep.shards import CropSettings, ShardTask, crop_shard, pack_shards
from data_prep.tracks import FrameRef, Track
from ocean.config import apply_overrides, paper
from ocean.geometry import mean_color

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CLIPS = {  # the 1280x720 clips of ../shared/data/real_sequences: folder of frames, ground-truth file
    "dtb70/Surfing06": ("dtb70/Surfing06/img", "dtb70/Surfing06/groundtruth_rect.txt"),
    "vot2015_ball1": ("vot/vot2015_ball1/imgs", "vot/vot2015_ball1/groundtruth.txt"),
    "uav123_10fps/wakeboard7": ("uav123_10fps/data_seq/UAV123_10fps/wakeboard7",
                                "uav123_10fps/anno/UAV123_10fps/wakeboard7.txt"),
}
YTBB = SHARED / "real_samples" / "youtube_bb_subset" / "ytbb_subset.csv"


def _gt_boxes(path: Path) -> np.ndarray:
    """xyxy boxes of an OTB (x, y, w, h) or VOT (polygon) ground-truth file; the polygon's bounding box."""
    out = []
    for line in path.read_text().split("\n"):
        v = [float(t) for t in line.replace("\t", ",").replace(" ", ",").split(",") if t.strip()]
        if len(v) == 4:
            out.append((v[0], v[1], v[0] + v[2], v[1] + v[3]))
        elif len(v) >= 6:
            xs, ys = v[0::2], v[1::2]
            out.append((min(xs), min(ys), max(xs), max(ys)))
        elif line.strip():
            out.append((np.nan,) * 4)
    return np.array(out, dtype=np.float64)


def ytbb_boxes() -> np.ndarray:
    """The present YT-BB rows as normalised xyxy boxes ``(N, 4)``."""
    rows = [r for r in csv.DictReader(YTBB.open()) if r["object_presence"] == "present"]
    b = np.array([[float(r["xmin"]), float(r["ymin"]), float(r["xmax"]), float(r["ymax"])] for r in rows])
    return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]


def clips(folders: list[str] | None, mix: str, seed: int) -> list[Track]:
    """One track per clip: its frames with ``mix`` boxes (frames with no valid box left out)."""
    rng = np.random.default_rng(seed)
    norm = ytbb_boxes() if mix == "ytbb" else None
    sources = ({f: (f, None) for f in folders} if folders else
               {name: (str(SHARED / "real_sequences" / img), SHARED / "real_sequences" / gt)
                for name, (img, gt) in CLIPS.items()})
    tracks = []
    for name, (folder, gt) in sources.items():
        paths = sorted(str(p) for p in Path(folder).glob("*.jpg"))
        if not paths:
            raise SystemExit(f"no *.jpg frames in {folder}")
        h, w = cv2.imread(paths[0]).shape[:2]
        if norm is not None:
            boxes = norm[rng.integers(len(norm), size=len(paths))] * [w, h, w, h]
        else:
            if gt is None:
                raise SystemExit("--mix gt needs the real_sequences clips (no ground truth for --frames)")
            boxes = _gt_boxes(gt)[:len(paths)]
        ok = np.isfinite(boxes).all(1) & (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        refs = [FrameRef(f"{i:05d}", path=p) for i, p in enumerate(paths) if ok[i]]
        tracks.append(Track("got10k", name, "0", refs, boxes[ok], np.ones(int(ok.sum()), bool)))
    return tracks


def shard_of(tracks: list[Track], cfg, pairs: int, seed: int) -> ShardTask:
    plan = plan_pairs(tracks, cfg.data, seed, {"got10k": pairs}).datasets["got10k"]
    draws = np.concatenate(pack_shards(plan, 10 ** 9))
    return ShardTask("got10k", 0, "bench", plan.videos(draws))


def frame_items(task: ShardTask, settings: CropSettings) -> list[tuple[str, list[tuple[tuple, int]]]]:
    """``[(path, [(box_xyxy, side), ...]), ...]``: every frame the shard decodes and the crops it serves."""
    items = []
    for work in task.videos:
        by_frame: dict[str, list] = {}
        for (_, frame_id, role), box in work.crops.items():
            by_frame.setdefault(frame_id, []).append((box, settings.side(role)))
        items += [(ref.path, by_frame[fid]) for fid, ref in work.frames.items()]
    return items


# --------------------------------------------------------------------------------------------------------
# Fidelity


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def _jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(encode_jpeg(img, quality), np.uint8), cv2.IMREAD_COLOR)


def fidelity(items, settings: CropSettings, margin: float, quality: int, naive: bool = False) -> dict:
    """PSNR of reduced-decode crops against full-decode crops over the crops of frames the margin reduces."""
    raw, stored, storage, factors = [], [], [], []
    for path, crops in items:
        boxes = [b for b, _ in crops]
        f = decode_factor(boxes, settings.context_amount, settings.crop_size, settings.exemplar_size, margin)
        full, _ = decode_image(path)
        small, _, used, _ = decode_scaled(path, f)
        factors.append(used)
        if used == 1:
            continue
        for box, side in crops:
            ref = crop_region(full, box, side).image
            if naive:  # reduced pixel i taken at full pixel f i (no half-pixel shift)
                from data_prep.crops import crop_geometry

                m = crop_geometry(box, side).matrix()
                m[:, :2] *= used
                got = cv2.warpAffine(small, m, (side, side), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=mean_color(small))
            else:
                got = crop_region(small, box, side, decode_factor=used).image
            ref_q = _jpeg_round_trip(ref, quality)
            raw.append(psnr(got, ref))
            stored.append(psnr(_jpeg_round_trip(got, quality), ref_q))
            storage.append(psnr(ref_q, ref))
    return {"factors": {k: factors.count(k) for k in (1, 2, 4, 8)}, "raw": raw, "stored": stored,
            "storage": storage}


def dist(v: list[float]) -> str:
    if not v:
        return "no reduced crops"
    a = np.array(v)
    return f"median {np.median(a):.1f}, p5 {np.percentile(a, 5):.1f}, min {a.min():.1f} dB (n={len(a)})"


# --------------------------------------------------------------------------------------------------------
# Speed


def shard_loop(task: ShardTask, settings: CropSettings) -> tuple[float, int]:
    t0 = time.process_time()
    table, counts, _ = crop_shard(task, settings)
    return time.process_time() - t0, counts["frames_used"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", nargs="*", help="folders of *.jpg frames instead of the shared real clips")
    ap.add_argument("--mix", choices=("ytbb", "gt"), default="ytbb")
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quality", type=int, default=None, help="JPEG quality (default data.jpeg_quality)")
    ap.add_argument("--margins", type=float, nargs="*", default=[1.0, 1.5, REDUCE_MARGIN, 3.0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from pipelines.raysession import keep_large_buffers_in_heap

    cv2.setNumThreads(1)
    keep_large_buffers_in_heap()  # the job's malloc setting (prep_throughput.py)
    cfg = paper() if args.quality is None else apply_overrides(paper(), [f"data.jpeg_quality={args.quality}"])
    full = CropSettings.from_config(apply_overrides(cfg, ["data.reduced_decode=false"]))
    reduced = CropSettings.from_config(apply_overrides(cfg, ["data.reduced_decode=true"]))
    task = shard_of(clips(args.frames, args.mix, args.seed), cfg, args.pairs, args.seed)
    items = frame_items(task, full)
    size = cv2.imread(items[0][0]).shape[:2][::-1]
    print(f"# reduced_decode.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  "
          f"{cpu_model()}  {os.cpu_count()} CPUs  python {platform.python_version()}  OpenCV {cv2.__version__}")
    print(f"load average before: {os.getloadavg()}")
    print(f"mix {args.mix}: {len(items)} frames ({size[0]}x{size[1]}), "
          f"{sum(len(c) for _, c in items)} crops, quality {full.jpeg_quality}")

    print("\n## Fidelity: reduced-decode crops vs full-decode crops, over the crops of reduced frames")
    for margin in args.margins:
        r = fidelity(items, full, margin, full.jpeg_quality)
        tag = " (default)" if margin == REDUCE_MARGIN else ""
        print(f"margin {margin}{tag}: frames per factor {r['factors']}")
        print(f"  stored (after JPEG q{full.jpeg_quality}): {dist(r['stored'])}")
        print(f"  rendered (before JPEG): {dist(r['raw'])}")
        if margin == REDUCE_MARGIN:
            print(f"  yardstick, full-decode crop's JPEG vs its raw render: {dist(r['storage'])}")
            naive = fidelity(items, full, margin, full.jpeg_quality, naive=True)
            print(f"  naive mapping (no half-pixel shift), rendered: {dist(naive['raw'])}")

    print(f"\n## Speed: frames per CPU second, {args.repeats} interleaved repeats, median")
    runs: dict[str, list[float]] = {k: [] for k in ("bare full", "bare reduced", "shard full", "shard reduced")}
    with tempfile.TemporaryDirectory() as tmp:
        sink = Path(tmp) / "crops.bin"
        for _ in range(args.repeats):
            for name in runs:
                if name.startswith("bare"):
                    cpu, n = bare_loop(items, full, sink, reduced=name.endswith("reduced"))
                else:
                    cpu, n = shard_loop(task, reduced if name.endswith("reduced") else full)
                runs[name].append(n / cpu)
    base = statistics.median(runs["bare full"])
    for name, v in runs.items():
        med = statistics.median(v)
        print(f"{name:14s} {med:7.1f} frames/CPU-s  x{med / base:.2f} of the bare full-decode loop  "
              f"(runs {', '.join(f'{x:.0f}' for x in v)})")

    print(f"\n## Decode alone: ms of CPU per frame, median of {args.repeats}")
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    by_clip: dict[str, list[np.ndarray]] = {}
    for work in task.videos:
        by_clip[work.video] = [np.fromfile(ref.path, np.uint8) for ref in work.frames.values()]
    for clip, frames in by_clip.items():
        kb = sum(len(d) for d in frames) / len(frames) / 1024
        cells = []
        for f, flag in flags.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.process_time()
                for d in frames:
                    cv2.imdecode(d, flag)
                times.append((time.process_time() - t0) / len(frames) * 1e3)
            cells.append(f"1/{f} {statistics.median(times):.2f}")
        print(f"{clip} ({len(frames)} frames, {kb:.0f} KB each): {', '.join(cells)}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
