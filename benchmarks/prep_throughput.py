"""Preparation job throughput per core vs a bare OpenCV loop, bytes per pair, peak memory per process.

    python benchmarks/prep_throughput.py [--size small|medium] [--pairs 400] [--cpus N] [--repeats 3] [--data DIR]

1. Writes a synthetic set (``data_prep.synthetic.generate``, all six training layouts) unless ``--data``.
2. Runs the job (:func:`pipelines.prepare.run_prepare`) to a fresh folder, ``--pairs`` pairs per dataset, on
   the local Ray ``ocean prepare`` itself starts (:func:`pipelines.raysession.ensure_ray`: at least 4 logical
   CPUs; the job then reserves logical CPUs per core for each shard task, :func:`pipelines.prepare.shard_task_cpus`)
   or, with ``--cpus N``, on a local Ray with N logical CPUs. Job frames/s = frames decoded / crop-phase wall
   time (first shard task submitted -> last result; Ray start-up and listing reported separately). Per core =
   divided by the machine's cores (all of them are the job's: its tasks, its driver, Ray's daemons).
   On a shared machine wall time measures the contention more than the code, so the headline ratio
   compares CPU time per frame: the bare loop's process CPU time vs the CPU time of the shard tasks (Ray's
   own daemons and the driver excluded; their wall-clock cost shows in the frames/s rows).
3. The practical limit: a bare single-process loop (OpenCV one thread) over the same frames doing the same
   work -- read the file, ``cv2.imdecode``, ``cv2.mean`` padding, one ``cv2.warpAffine`` per crop at the
   stored sides, ``cv2.imencode``, and the JPEG bytes appended to one open file (the cheapest way to keep
   them; the job must store its crops too, and a loop that drops them does less than the job) -- with no
   parquet, no Ray, and the same malloc thresholds as the job's tasks
   (:func:`pipelines.raysession.keep_large_buffers_in_heap`). Frames/s on one core. The bare loop runs before
   each job run, best of ``--repeats``.
4. Bytes per pair: template + search JPEG bytes in the shards, and parquet file bytes / pairs (smaller:
   parquet's dictionary encoding stores a crop shared by several pairs of a shard once), vs two crop511
   JPEGs at q95 (the official default, facts §7.1) of the same pairs' frames.
5. Peak RSS of the driver and of every Ray worker process that ran shards.
   The crop phase is also run, in the same Ray and interleaved with the job, the way the job ran it before it
   was a Ray Data pipeline (:func:`ray_tasks_crop`: plain Ray tasks in a ``ray.wait`` window, inputs built on
   the driver; kept here only as that baseline): frames per CPU second of the Ray Data pipeline vs those
   plain tasks, counting the shard tasks' CPU alone, with the driver's, and that of every process of the job
   (driver, the local Ray's daemons and workers: :class:`TreeCpu`, listing included), and their shards'
   sha256 compared.
6. Driver memory of listing + planning (``--plan-tracks``, 0 to skip): a child process streams synthetic
   GOT-10k-like tracks (100 frames each) and COCO-like single-frame tracks through
   :func:`data_prep.listing.list_and_plan` and packs every shard's work, once with the per-frame columns in
   memory and once spilled to files (as the job runs it); it reports the anonymous memory (``RssAnon``) and
   the file-backed pages (``RssFile``, the mapped spill files) the plan holds and their peaks, per annotated
   frame.

The machine may be shared; the bare loop and the job are each run ``--repeats`` times and the best is kept.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

from data_prep.crops import crop511, crop_geometry, decode_factor, decode_scaled
from data_prep.listing import list_and_plan
from data_prep.readers import read_tracks
from data_prep.records import bytes_per_pair
from data_prep.shards import CropSettings
from ocean.config import smoke
from pipelines.prepare import PrepareSettings, process_shard, run_prepare

NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")
OFFICIAL_QUALITY = 95  # crop511 JPEG quality (OpenCV default) -- facts §7.1


def work_items(data: Path, cfg, pairs: int, seed: int, shard_pairs: int):
    """The job's own plan as ``[(path, [(box_xyxy, side)]), ...]`` (one entry per decoded frame) and pairs."""
    settings = CropSettings.from_config(cfg)

    items, pair_frames = [], []
    for name in NAMES:
        plan, shards, _, _ = list_and_plan(name, read_tracks(name, data / name), cfg, seed, pairs, shard_pairs)
        for draws in shards:
            for work in plan.videos(draws):
                by_frame: dict[str, list] = {}
                for (_, frame_id, role), box in work.crops.items():
                    by_frame.setdefault(frame_id, []).append((box, settings.side(role)))
                for frame_id, ref in work.frames.items():
                    items.append((ref.path, by_frame[frame_id]))
                for p in work.pairs:
                    pair_frames.append((work.frames[p.template_frame].path,
                                        work.crops[(p.track_id, p.template_frame, "template")],
                                        work.frames[p.search_frame].path,
                                        work.crops[(p.track_id, p.search_frame, "search")]))
    return items, pair_frames, settings


def bare_loop(items, settings: CropSettings, sink: Path, reduced: bool = False) -> tuple[float, int]:
    """CPU seconds (this process) and frames for read -> decode -> crop(s) -> encode -> append the JPEG bytes
    to ``sink`` on one core (the practical limit). ``reduced``: decode each frame at the scale
    ``data.reduced_decode`` would (benchmarks/reduced_decode.py)."""
    from pipelines.raysession import keep_large_buffers_in_heap

    cv2.setNumThreads(1)
    keep_large_buffers_in_heap()  # the malloc setting the job's tasks use: the baseline gets it too
    params = [int(cv2.IMWRITE_JPEG_QUALITY), settings.jpeg_quality]
    t0 = time.process_time()
    n = 0
    with open(sink, "wb") as out:
        for path, crops in items:
            with open(path, "rb") as fh:
                data = fh.read()
            f = 1
            if reduced:
                f = decode_factor([b for b, _ in crops], settings.context_amount, settings.crop_size,
                                  settings.exemplar_size)
                img, _, f, _ = decode_scaled(data, f)
            else:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                continue
            pad = cv2.mean(img)[:3]
            for box, side in crops:
                g = crop_geometry(box, side, settings.context_amount, settings.crop_size, settings.exemplar_size)
                crop = cv2.warpAffine(img, g.matrix(f), (side, side), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=pad)
                ok, buf = cv2.imencode(".jpg", crop, params)
                out.write(buf)
            n += 1
    return time.process_time() - t0, n


def ray_tasks_crop(data: Path, cfg, pairs: int, seed: int, shard_pairs: int, out: Path, task_cpus: float) -> dict:
    """The crop phase as the job ran it before its Ray Data pipeline, on the same plan, shards to ``out``:
    one plain Ray task per shard (:func:`pipelines.prepare.process_shard`, ``max_retries=3``), largest first,
    at most twice the cluster's CPUs / ``task_cpus`` submitted at once (a ``ray.wait`` window), each task's
    input built on the driver as it is submitted. Listed as the job lists (Ray tasks); ``tree_cpu_seconds``
    covers listing, planning and cropping, the other times the crop step alone (no manifest). Returns
    ``seconds``, ``driver_cpu_seconds``, ``task_cpu_seconds``, ``frames`` and ``sha256`` per shard."""
    import ray

    from data_prep.listing import list_datasets, shard_tasks, shards_to_run, spill_folder
    from data_prep.manifest import job_document
    from data_prep.pairs import pair_counts
    from ocean.storage import OutputStore
    from pipelines.listing import RayLister

    crop_settings = CropSettings.from_config(cfg)
    store = OutputStore.from_uri(str(out))
    store.check_writable()
    roots = {n: str(data / n) for n in NAMES}
    spill = spill_folder()
    tree = TreeCpu().__enter__()
    try:
        states = list_datasets(roots, cfg, seed, pair_counts(cfg.data, {n: pairs for n in NAMES}), shard_pairs,
                               None, spill, lambda _m: None, RayLister())  # listed as the job lists
        job = job_document(states, roots, cfg, crop_settings, seed, shard_pairs, None)["fingerprint"]
        remote = ray.remote(process_shard).options(num_cpus=task_cpus, max_retries=3, retry_exceptions=False)
        window = max(2, int(2 * ray.cluster_resources().get("CPU", 2) / task_cpus))
        store_ref, settings_ref = ray.put(store), ray.put(crop_settings)
        pending: set = set()
        results: list[dict] = []
        t0, cpu0 = time.perf_counter(), time.process_time()

        def collect() -> None:
            ready, _ = ray.wait(list(pending), num_returns=1)
            pending.difference_update(ready)
            results.extend(ray.get(ready))

        for task in shard_tasks(states, shards_to_run(states, {}), job):
            while len(pending) >= window:
                collect()
            pending.add(remote.remote(store_ref, task, settings_ref))
        while pending:
            collect()
        seconds, driver_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        tree.__exit__()
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return {"seconds": seconds, "driver_cpu_seconds": driver_cpu, "tree_cpu_seconds": tree.seconds,
            "task_cpu_seconds": sum(r["runtime"]["cpu_seconds"] for r in results),
            "frames": sum(r["frames_read"] for r in results), "sha256": {r["path"]: r["sha256"] for r in results}}


def synthetic_tracks(kind: str, n: int):
    """``n`` synthetic tracks as a reader would yield them (images are never opened): ``got10k`` tracks of 100
    frames (GOT-10k-like paths) or ``coco`` single-frame tracks, 7 per image (COCO-like paths)."""
    from data_prep.tracks import FrameRef, Track

    for t in range(n):
        if kind == "coco":
            stem = f"{t // 7:012d}"
            video, track_id = f"train2017/{stem}", str(t)
            frames = [FrameRef("000000", path=f"/data/coco/train2017/{stem}.jpg")]
        else:
            video, track_id = f"train/GOT-10k_Train_{t:06d}", "0"
            frames = [FrameRef(f"{i:08d}", path=f"/data/got10k/{video}/{i:08d}.jpg") for i in range(100)]
        m = len(frames)
        yield Track(kind, video, track_id, frames, np.tile([10.0, 12.0, 50.5, 60.25], (m, 1)), np.ones(m, bool),
                    (640, 480), {"category": "thing"})


def plan_memory_child(kind: str, n: int, pairs: int, shard_pairs: int, spill: bool) -> None:
    """Print one JSON line: the memory a planned dataset holds, MB over the process start (after imports).

    ``spill``: list and plan into a spill folder (:func:`data_prep.listing.list_and_plan` as the job calls it:
    per-frame columns memory-mapped from files), else in memory. Anonymous memory (``RssAnon``, what the
    driver really holds) and file-backed pages (``RssFile``: mapped spill files, which the kernel can drop and
    reread) are reported apart; the peaks are sampled from outside by :func:`plan_memory`.
    """
    import gc
    import json
    import shutil
    import tempfile

    import pyarrow.compute  # noqa: F401  (imported by the driver anyway; not part of the plan's cost)

    start = _rss_mb()  # after the imports: what listing + planning add is measured from here
    t0 = time.perf_counter()
    spill_dir = tempfile.mkdtemp(prefix="ocean-prepare-") if spill else None
    try:
        plan, shards, tracks, frames = list_and_plan(kind, synthetic_tracks(kind, n), smoke(), 0, pairs,
                                                     shard_pairs, spill_dir=spill_dir)
        seconds_plan = time.perf_counter() - t0
        videos = sum(len(plan.videos(d)) for d in shards)  # every shard's task input, built and dropped
        gc.collect()
        held = _rss_mb()
        disk = sum(p.stat().st_size for p in Path(spill_dir).rglob("*") if p.is_file()) if spill else 0
        print(json.dumps({
            "kind": kind, "spilled": spill, "tracks": tracks, "frames": frames, "pairs": len(plan),
            "shards": len(shards), "videos": videos, "seconds": time.perf_counter() - t0,
            "seconds_plan": seconds_plan, "start": start,
            "anon_held_mb": held["anon"] - start["anon"], "file_held_mb": held["file"] - start["file"],
            "hwm_mb": held["hwm"] - start["rss"], "table_mb": plan.tracks.nbytes() / 2**20,
            "spill_disk_mb": disk / 2**20}), flush=True)
    finally:
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)


def _tree_cpu(root: int) -> dict[int, float]:
    """``{pid: CPU seconds (user + system)}`` of process ``root`` and all its descendants (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    out = {}
    for pid, seconds in cpu.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            out[pid] = seconds
    return out


class TreeCpu:
    """CPU seconds of this process and all its descendants -- the driver, the local Ray it started (GCS,
    raylet, agents) and every Ray worker -- over a ``with`` block (``.seconds``). Sampled every ``interval``
    seconds, so a worker that exits meanwhile counts the CPU it had at its last sample (Ray's raylet does not
    collect its workers' times into its own)."""

    def __init__(self, interval: float = 0.5) -> None:
        import threading

        self.interval, self.root, self.seconds = interval, os.getpid(), 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeCpu:
        self.start = _tree_cpu(self.root)
        self.last = dict(self.start)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(_tree_cpu(self.root))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(_tree_cpu(self.root))
        self.seconds = sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items())


def _rss_mb(pid: int | str = "self") -> dict[str, float]:
    """``RssAnon``, ``RssFile``, ``VmRSS`` and ``VmHWM`` of a process in MB (/proc/PID/status, Linux)."""
    keys = {"RssAnon:": "anon", "RssFile:": "file", "VmRSS:": "rss", "VmHWM:": "hwm"}
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            parts = line.split()  # e.g. "RssAnon:   123456 kB"
            if parts and parts[0] in keys:
                out[keys[parts[0]]] = int(parts[1]) / 1024
    return out


def plan_memory(n_tracks: int, pairs: int, shard_pairs: int, modes: tuple[bool, ...] = (False, True)) -> list[dict]:
    """:func:`plan_memory_child` for GOT-10k-like and COCO-like tracks, in memory and spilled, each in a fresh
    process whose ``RssAnon`` / ``RssFile`` a thread here samples every 5 ms (peak anonymous memory: VmHWM
    counts mapped file pages too; sampling from another process is not held up by the child's GIL)."""
    import json
    import subprocess
    import sys
    import threading

    out = []
    for kind, n in (("got10k", n_tracks), ("coco", 15 * n_tracks)):
        for spill in modes:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--plan-child", kind, str(n), str(pairs), str(shard_pairs)]
                + (["--plan-spill"] if spill else []),
                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
            peak = {"anon": 0.0, "file": 0.0}
            finished = threading.Event()

            def sample(pid: int = proc.pid, peak: dict = peak, finished: threading.Event = finished) -> None:
                while not finished.is_set():
                    try:
                        now = _rss_mb(pid)
                    except OSError:
                        return  # the process is gone
                    for key in peak:
                        peak[key] = max(peak[key], now.get(key, 0.0))  # a zombie has no Rss lines
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stdout, _ = proc.communicate()
            finished.set()
            sampler.join()
            if proc.returncode:
                raise RuntimeError(f"planning memory child ({kind}, spill={spill}) failed: {proc.returncode}")
            m = json.loads(stdout.strip().splitlines()[-1])
            m["anon_peak_mb"] = peak["anon"] - m["start"]["anon"]
            m["file_peak_mb"] = peak["file"] - m["start"]["file"]
            out.append(m)
    return out


def crop511_bytes(pair_frames, limit: int = 300) -> float:
    """Mean bytes of two crop511 JPEGs at q95 (template frame + search frame), over up to ``limit`` pairs."""
    total, n = 0, 0
    for t_path, t_box, s_path, s_box in pair_frames[:limit]:
        t_img, s_img = cv2.imread(t_path), cv2.imread(s_path)
        if t_img is None or s_img is None:
            continue
        for img, box in ((t_img, t_box), (s_img, s_box)):
            ok, buf = cv2.imencode(".jpg", crop511(img, box), [int(cv2.IMWRITE_JPEG_QUALITY), OFFICIAL_QUALITY])
            total += len(buf)
        n += 1
    return total / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "small", "medium"), default="small",
                    help="synthetic set: small = 320x240 frames, medium = the same at 640x360 (facts §17's frames)")
    ap.add_argument("--data", type=Path, default=None, help="an existing `ocean synth` folder")
    ap.add_argument("--frame-size", type=lambda v: tuple(int(x) for x in v.lower().split("x")), default=None,
                    metavar="WxH", help="write the synthetic set at this frame size (e.g. 1280x720)")
    ap.add_argument("--pairs", type=int, default=400, help="pairs per dataset")
    ap.add_argument("--shard-pairs", type=int, default=200)
    ap.add_argument("--cpus", type=int, default=None,
                    help="logical CPUs of the local Ray (default: the Ray `ocean prepare` starts, pipelines.raysession)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plan-tracks", type=int, default=20000,
                    help="GOT-10k-like tracks (x100 frames; and 15x as many COCO-like single-frame tracks) for the "
                         "driver planning memory; 0 skips it")
    ap.add_argument("--plan-pairs", type=int, default=200000, help="pairs planned in the planning memory run")
    ap.add_argument("--plan-child", nargs=4, metavar=("KIND", "TRACKS", "PAIRS", "SHARD_PAIRS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--plan-spill", action="store_true", help=argparse.SUPPRESS)  # with --plan-child
    args = ap.parse_args()
    if args.plan_child:
        kind, n, pairs, shard_pairs = args.plan_child
        plan_memory_child(kind, int(n), int(pairs), int(shard_pairs), args.plan_spill)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster (ray_stack.md §6)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="prep_bench_"))
    try:
        data = args.data
        if data is None:
            from data_prep.synthetic import generate

            data = tmp / "synth"
            generate(data, seed=args.seed, size=args.size, frame_size=args.frame_size)
        cfg = smoke()
        items, pair_frames, settings = work_items(data, cfg, args.pairs, args.seed, args.shard_pairs)
        frames = len(items)
        bare_runs = []
        crops = sum(len(c) for _, c in items)

        import ray

        from pipelines.prepare import shard_task_cpus
        from pipelines.raysession import ensure_ray

        ensure_ray(num_cpus=args.cpus)
        logical = int(ray.cluster_resources().get("CPU", 0))
        task_cpus = shard_task_cpus()  # what the job reserves per shard task; the old crop phase gets the same
        try:
            runs, old_runs = [], []
            for r in range(args.repeats):
                bare_runs.append(bare_loop(items, settings, tmp / "bare.bin")[0])  # interleaved: same load
                out = tmp / f"out{r}"

                def job(out: Path = out) -> None:
                    with TreeCpu() as tree:
                        manifest, info = run_prepare(PrepareSettings(
                            {n: str(data / n) for n in NAMES}, str(out), cfg, pairs={n: args.pairs for n in NAMES},
                            seed=args.seed, shard_pairs=args.shard_pairs, progress=False, log=None))
                    info["tree_cpu_seconds"] = tree.seconds
                    runs.append((info["seconds_crop"], manifest, info, out))

                def old(r: int = r) -> None:
                    old_runs.append(ray_tasks_crop(data, cfg, args.pairs, args.seed, args.shard_pairs,
                                                   tmp / f"old{r}", task_cpus))

                for step in ((job, old) if r % 2 == 0 else (old, job)):  # alternate which runs first
                    step()
        finally:
            ray.shutdown()
        crop_s, manifest, info, out = min(runs, key=lambda x: x[0])
        # CPU per frame: the run with the least task CPU time (the first run also pays each new worker's
        # imports of cv2 / pyarrow / data_prep inside its first shard)
        cpu_runs = [sum(w["cpu_seconds"] for w in r[2]["workers"].values()) for r in runs]
        job_frames = sum(d["frames_read"] for d in manifest["datasets"].values())
        assert job_frames == frames, (job_frames, frames)
        cores = os.cpu_count() or 1
        bare = min(bare_runs)
        bare_fps = frames / bare  # frames per CPU second, one process
        job_cpu = min(cpu_runs)
        job_fps = frames / crop_s
        job_fps_e2e = frames / info["seconds"]
        # the same shards from the plain Ray tasks (byte for byte), and frames per CPU second of both
        for o in old_runs:
            assert o["frames"] == frames and o["sha256"] == {x["path"]: x["sha256"] for x in manifest["shards"]}
        with_driver = [sum(w["cpu_seconds"] for w in r[2]["workers"].values()) + r[2]["driver_cpu_seconds_crop"]
                       for r in runs]
        old_cpu = [o["task_cpu_seconds"] for o in old_runs]
        tree_new = [r[2]["tree_cpu_seconds"] for r in runs]
        tree_old = [o["tree_cpu_seconds"] for o in old_runs]
        old_with_driver = [o["task_cpu_seconds"] + o["driver_cpu_seconds"] for o in old_runs]

        tables = [pq.read_table(out / s["path"]) for s in manifest["shards"]]
        import pyarrow as pa

        bpp = bytes_per_pair(pa.concat_tables(tables))
        file_bpp = manifest["totals"]["bytes"] / max(manifest["totals"]["pairs_written"], 1)
        ref_bpp = crop511_bytes(pair_frames)
        worker_rss = [w["peak_rss_mb"] for w in info["workers"].values()]

        try:
            import json

            frame_size = "x".join(map(str, json.loads((data / "synth_manifest.json").read_text())["frame_size"]))
        except (OSError, KeyError, ValueError):
            frame_size = "frame size unknown"
        now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        print(f"## Preparation throughput ({now})\n")
        print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"OpenCV {cv2.__version__}, Ray {ray.__version__}. Data: synthetic `{args.size}` ({frame_size}) "
              f"(seed {args.seed}), {args.pairs} pairs x 6 datasets, {frames} source frames decoded, {crops} crops "
              f"(template {settings.template_side} px, search {settings.search_side} px, q{settings.jpeg_quality}); "
              f"best of {args.repeats}.\n")
        print("| measure | value |\n|---|---:|")
        print(f"| bare loop (1 process, 1 OpenCV thread; runs: {', '.join(f'{frames / c:.0f}' for c in bare_runs)}): "
              f"frames per CPU second | {bare_fps:.0f} |")
        print(f"| job shard tasks: frames per CPU second (runs: "
              f"{', '.join(f'{frames / c:.0f}' for c in cpu_runs)}) | {frames / job_cpu:.0f} |")
        print(f"| **job / bare loop, per CPU second** (goal >= 0.9) | **{frames / job_cpu / bare_fps:.2f}** |")
        print(f"| job, crop phase wall ({logical} logical CPUs on {cores} cores, {info['task_cpus']:g} per shard "
              f"task): frames/s | {job_fps:.0f} |")
        print(f"| job wall per core: frames/s/core (vs bare {bare_fps:.0f}: {job_fps / cores / bare_fps:.2f}) | "
              f"{job_fps / cores:.0f} |")
        busy = {"tasks": sum(t["cpu_seconds"] for t in info["timeline"]), "driver": info["driver_cpu_seconds_crop"]}
        capacity = crop_s * cores
        print(f"| crop phase, share of the {cores} cores' time: shard tasks CPU / driver CPU / the rest (Ray daemons, "
              f"task start-up, idle) | {busy['tasks'] / capacity:.1%} / {busy['driver'] / capacity:.1%} / "
              f"{1 - (busy['tasks'] + busy['driver']) / capacity:.1%} |")
        print(f"| crop phase as plain Ray tasks (before the Ray Data pipeline; same Ray, interleaved; shards "
              f"byte-identical): frames per CPU second, shard tasks (runs: {', '.join(f'{frames / c:.0f}' for c in old_cpu)}) "
              f"/ shard tasks + driver (runs: {', '.join(f'{frames / c:.0f}' for c in old_with_driver)}) | "
              f"{frames / min(old_cpu):.0f} / {frames / min(old_with_driver):.0f} |")
        print(f"| crop phase as the Ray Data pipeline: frames per CPU second, shard tasks / shard tasks + driver "
              f"(runs: {', '.join(f'{frames / c:.0f}' for c in with_driver)}) | "
              f"{frames / job_cpu:.0f} / {frames / min(with_driver):.0f} |")
        print(f"| **Ray Data / plain Ray tasks, frames per CPU second**: shard tasks / shard tasks + driver (goal >= 1.0) "
              f"| **{min(old_cpu) / job_cpu:.2f} / {min(old_with_driver) / min(with_driver):.2f}** |")
        print(f"| listing + crop, every process (driver, Ray daemons, workers): frames per CPU second, Ray Data "
              f"(runs: {', '.join(f'{frames / c:.0f}' for c in tree_new)}) / plain Ray tasks (runs: "
              f"{', '.join(f'{frames / c:.0f}' for c in tree_old)}) | {frames / min(tree_new):.0f} / "
              f"{frames / min(tree_old):.0f} (**{min(tree_old) / min(tree_new):.2f}**) |")
        paired = [o / n for o, n in zip(tree_old, tree_new, strict=True)]  # adjacent runs: the same load
        print(f"| the same, run by run (adjacent runs; Ray Data / plain Ray tasks): {', '.join(f'{x:.2f}' for x in paired)} "
              f"| median **{float(np.median(paired)):.2f}** |")
        old_walls = [o["seconds"] for o in old_runs]
        old_wall = min(old_walls)
        print(f"| crop phase wall, frames/s: Ray Data / plain Ray tasks (runs: "
              f"{', '.join(f'{frames / r[0]:.0f}' for r in runs)} / {', '.join(f'{frames / w:.0f}' for w in old_walls)}) "
              f"| {job_fps:.0f} / {frames / old_wall:.0f} ({old_wall / crop_s:.2f}) |")
        print(f"| job end to end (listing {info['seconds_listing']:.1f} s + crop + manifest; Ray already up): "
              f"frames/s/core | {job_fps_e2e / cores:.0f} |")
        print(f"| stored pair, JPEG bytes (template + search), mean | {bpp['mean'] / 1e3:.1f} KB |")
        print(f"| stored pair, parquet file bytes / pair | {file_bpp / 1e3:.1f} KB |")
        print(f"| two crop511 JPEGs at q{OFFICIAL_QUALITY}, same pairs | {ref_bpp / 1e3:.1f} KB |")
        print(f"| **stored / crop511 bytes** (goal <= 0.5): parquet file / JPEG only | "
              f"**{file_bpp / ref_bpp:.2f}** / {bpp['mean'] / ref_bpp:.2f} |")
        print(f"| peak RSS, driver | {info['driver_peak_rss_mb']:.0f} MB |")
        print(f"| peak RSS, Ray workers ({len(worker_rss)} processes): max / mean | "
              f"{max(worker_rss):.0f} / {np.mean(worker_rss):.0f} MB |")
        print(f"| load average (1 min) before / after the runs | {load0:.2f} / {os.getloadavg()[0]:.2f} |")
        if args.plan_tracks > 0:
            print(f"\nDriver listing + planning memory (synthetic annotations streamed through `list_and_plan`, "
                  f"{args.plan_pairs} pairs planned, every shard's task input built once; MB over the process "
                  "start; anonymous = RssAnon, file-backed = RssFile, the mapped spill files; peaks sampled every "
                  "5 ms):\n")
            print("| tracks | annotated frames | pairs | shards | per-frame columns | anonymous held / peak | "
                  "file-backed held / peak | anonymous bytes / frame, held / peak | spill files | seconds |\n"
                  "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
            for m in plan_memory(args.plan_tracks, args.plan_pairs, args.shard_pairs * 10):
                per_frame = 2**20 / m["frames"]
                print(f"| {m['tracks']} {m['kind']}-like | {m['frames']} | {m['pairs']} | {m['shards']} "
                      f"| {'spilled' if m['spilled'] else 'in memory'} "
                      f"| {m['anon_held_mb']:.0f} / {m['anon_peak_mb']:.0f} MB "
                      f"| {m['file_held_mb']:.0f} / {m['file_peak_mb']:.0f} MB "
                      f"| {m['anon_held_mb'] * per_frame:.0f} / {m['anon_peak_mb'] * per_frame:.0f} "
                      f"| {m['spill_disk_mb']:.0f} MB | {m['seconds']:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
