"""Annotation listing at scale: an ImageNet-VID-layout tree parsed by the driver alone vs by Ray tasks on 1 and 2
workers (``pipelines.listing.RayLister``), with the driver's peak memory.

    python benchmarks/listing_scale.py [--snippets 100] [--frames 250] [--objects 2] [--repeats 2] [--tree DIR]

1. Writes (unless ``--tree`` holds one already) ``ILSVRC2015/Annotations/VID/train/<group>/<snippet>/*.xml``
   with ``--snippets`` x ``--frames`` annotation files (default 25,000), ``--objects`` tracked objects per
   frame, and an empty ``.JPEG`` file per frame under ``Data/`` (the reader checks names, never pixels).
2. Each configuration runs in a fresh child process, ``--repeats`` times (best time kept): ``driver``
   (:func:`data_prep.listing.read_table`, the driver parses every file) and ``ray-N`` (a local Ray with N
   logical CPUs, :class:`pipelines.listing.RayLister`: tasks parse groups of snippet folders, the driver
   merges their tables). Time = the listing call only: Ray's start-up and its worker processes' start-up are
   excluded (the workers are started first with one short task each); the table is spilled to a temporary
   folder as the job does.
3. Driver memory: peak RSS of the child (``VmHWM``) and its RSS just before listing (imports and Ray
   connection), so the difference is what listing itself added on the driver.
4. Every configuration's table must be identical (a digest of all its columns); the script fails otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

REPO = Path(__file__).resolve().parent.parent

XML = """<annotation><folder>{folder}</folder><filename>{name}</filename><source><database>ILSVRC_2015</database>
</source><size><width>1280</width><height>720</height></size>{objects}</annotation>
"""
OBJECT = ("<object><trackid>{tid}</trackid><name>n0{wnid}</name><bndbox><xmax>{x2}</xmax><xmin>{x1}</xmin>"
          "<ymax>{y2}</ymax><ymin>{y1}</ymin></bndbox><occluded>0</occluded><generated>0</generated></object>")


def write_tree(root: Path, snippets: int, frames: int, objects: int) -> int:
    """The VID tree; returns the number of annotation files."""
    count = 0
    for s in range(snippets):
        rel = f"ILSVRC2015_VID_train_{s // 1000:04d}/ILSVRC2015_train_{s:08d}"
        ann = root / "Annotations" / "VID" / "train" / rel
        data = root / "Data" / "VID" / "train" / rel
        ann.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            objs = "".join(OBJECT.format(tid=t, wnid=2084071 + t, x1=100 + f % 50 + 10 * t, y1=80 + t,
                                         x2=300 + f % 50 + 10 * t, y2=260 + t) for t in range(objects))
            (ann / f"{f:06d}.xml").write_text(XML.format(folder=rel, name=f"{f:06d}", objects=objs))
            (data / f"{f:06d}.JPEG").touch()
            count += 1
    return count


def digest(table) -> str:
    import numpy as np

    h = hashlib.sha256()
    for col in ("frame_start", "image_size", "path_dir", "boxes_xyxy", "present"):
        h.update(np.ascontiguousarray(np.asarray(getattr(table, col))).tobytes())
    for col in ("video", "track_id", "frame_id", "path_name"):
        h.update("\n".join(getattr(table, col).to_pylist()).encode())
    h.update("\n".join(table.dirs).encode())
    return h.hexdigest()[:16]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(mode: str, root: str) -> None:
    """One configuration, in this (fresh) process: prints one JSON line."""
    from data_prep.listing import read_table
    from data_prep.readers import RejectionLog

    lister = read_table
    if mode.startswith("ray-"):
        import ray

        from pipelines.listing import RayLister
        from pipelines.raysession import local_niceness

        ray.init(address="local", num_cpus=int(mode[4:]), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}}, **local_niceness())
        lister = RayLister()

        @ray.remote(num_cpus=1)
        def warm() -> int:
            from data_prep.readers import vid  # noqa: F401  (the listing task's imports)

            time.sleep(0.5)
            return os.getpid()

        ray.get([warm.remote() for _ in range(int(mode[4:]))])  # start the worker processes first
    rss_before = _status_kb("VmRSS")
    with tempfile.TemporaryDirectory() as spill:
        t0 = time.perf_counter()
        table = lister("vid", root, {}, RejectionLog(), spill)
        seconds = time.perf_counter() - t0
        out = {"mode": mode, "seconds": seconds, "tracks": table.num_tracks, "frames": table.num_frames,
               "digest": digest(table), "rss_before_mb": rss_before / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024,
               "tasks": getattr(lister, "info", {}).get("vid", {}).get("tasks", 0)}
    print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snippets", type=int, default=100)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tree", type=Path, default=None, help="where the tree is (or is written); default a temp dir")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    tree = args.tree or Path(tempfile.mkdtemp(prefix="vid-listing-"))
    ann_root = tree / "Annotations" / "VID" / "train"
    if not ann_root.is_dir():
        t0 = time.perf_counter()
        files = write_tree(tree, args.snippets, args.frames, args.objects)
        print(f"wrote {files} annotation files in {time.perf_counter() - t0:.1f} s under {tree}", flush=True)
    files = sum(len(fs) for _, _, fs in os.walk(ann_root))
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {cpu_model()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {files} annotation files", flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for mode in ("driver", "ray-1", "ray-2"):
            run = subprocess.run([sys.executable, __file__, "--child", mode, str(tree)], env=env, check=True,
                                 capture_output=True, text=True, cwd=Path(__file__).parent)
            result = json.loads(run.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            if mode not in best or result["seconds"] < best[mode]["seconds"]:
                best[mode] = result
    digests = {r["digest"] for r in best.values()}
    if len(digests) != 1:
        raise SystemExit(f"the tables differ between configurations: {best}")
    base = best["ray-1"]["seconds"]
    print(f"\n| listing | seconds (best of {args.repeats}) | vs 1 worker | tasks | driver RSS before listing "
          "| driver peak RSS |")
    print("|---|---|---|---|---|---|")
    for mode, r in best.items():
        print(f"| {mode} | {r['seconds']:.2f} | {base / r['seconds']:.2f}x | {r['tasks']} | "
              f"{r['rss_before_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB |")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
