"""Training input pipeline: pairs / s / core from parquet through decode, augment and batching.

    python benchmarks/train_input.py [--pairs 512] [--copies 8] [--epochs 3] [--cpus 2] [--batch 16]

Pair records are written first (natural-image-like frames from :mod:`crop_bytes`, stored crops 145 / 433 px
at q90, as ``ocean prepare`` writes them, 256-row row groups), then copied ``--copies`` times with new pair
ids (a larger pool from the same pixels). Then, on a local Ray with ``--cpus`` logical CPUs:

* **bare loop**: ``data_prep.augment.augment_pairs`` over the same rows in this process, OpenCV on one
  thread (the practical per-core limit), and the same loop in ``--cpus`` processes at once (every core busy, as
  the stream's tasks keep them: on a small or shared machine one core's speed drops when the others work);
* **no consumer**: the input stream of one training rank (``pipelines.train_input.pair_stream``: one Ray
  Data pipeline for all epochs, work items -> ``read_and_augment`` tasks -> output blocks with prefetch, cut
  into micro-batches), drained as fast as it goes, ``--epochs`` epochs of every pair, with Ray Data already
  imported (as in a training worker). Per epoch: wall time from the
  previous epoch's last batch (the first epoch: from building the stream) to this epoch's last batch,
  the start-up (time to this epoch's first batch), pairs / s / core (pairs / s divided by the logical CPUs
  Ray Data may use) and pairs per CPU-second (CPU time of this process and every Ray process it started:
  less sensitive to other load on the machine than wall time; per epoch it is approximate, since the
  stream runs ahead into the next epoch, so the pooled rows "all epochs" and "epochs 2+" are the ones to quote;
  the CPU per pair of epochs 2+ is also split into task workers, this process and other Ray processes);
* **threads** (a design the project does not use, for comparison): the same work items through
  ``read_and_augment`` on ``--cpus`` threads of this process (:func:`threaded_stream`, no Ray Data: the
  augmented pixels never cross into the object store, but only this process's cores decode and the
  threads share the GIL), the same epochs drained;
* **with consumer**: the same stream feeding ``ocean.engine.train_step`` of the smoke model in this
  process; the data-wait fraction is the time spent waiting for a batch over the step time;
* **memory**: resident memory of this process and of every Ray process it started, after each epoch, as RSS
  and as private memory (RssAnon; RSS also counts the shared object-store pages each process maps); it
  must not grow from epoch to epoch;
* **start-up, head start on and off** (``--startup-repeats``, :func:`startup_runs`): the first epoch of a
  stream in a fresh Ray session each time (Ray Data's first execution of a session is the slow one),
  alternating ``pair_stream(head_start=True)`` (the rank decodes the first item's pieces itself,
  ``pipelines.stream_start.HeadStart``) and ``False``, the prefetch of a training rank: time to the first
  batch, to the first batch the tasks deliver (the 9th) and to the 32nd, drained as fast as it goes, and the
  data wait over the first 32 steps of the smoke model's training step in this process (1 torch thread).
  ``--startup-only`` runs this section alone.

Prints a markdown table with the machine, the date and the load average.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crop_bytes import natural_image  # noqa: E402

from data_prep.crops import crop_region, encode_jpeg, stored_sides  # noqa: E402
from data_prep.pairs import pair_id  # noqa: E402
from data_prep.records import build_table, side_fields  # noqa: E402
from ocean.config import AugmentConfig, apply_overrides, smoke  # noqa: E402

ROW_GROUP_ROWS = 256  # as data_prep.shards writes shards


def write_records(folder: Path, n: int, seed: int = 0, per_file: int = 512) -> list[str]:
    """``n`` pair records in files of ``per_file`` rows; returns the paths."""
    t_side, s_side = stored_sides(AugmentConfig())
    rng = np.random.default_rng(seed)
    rows, files = [], []
    for k in range(n):
        img = natural_image(rng)
        w, h = rng.uniform(40, 160, 2)
        x, y = rng.uniform(0, 640 - w), rng.uniform(0, 360 - h)
        box = [x, y, x + w, y + h]
        t, s = crop_region(img, box, t_side), crop_region(img, box, s_side)
        rows.append({"pair_id": pair_id("got10k", f"v{k}", "0", "0", "1", k), "dataset": "got10k",
                     "video": f"v{k}", "track": "0", "template_frame": "0", "search_frame": "1", "draw": k,
                     **side_fields("template", encode_jpeg(t.image, 90), t, box, (640, 360)),
                     **side_fields("search", encode_jpeg(s.image, 90), s, box, (640, 360))})
        if len(rows) == per_file or k == n - 1:
            path = folder / f"shard-{len(files):05d}.parquet"
            pq.write_table(build_table(rows), path, row_group_size=ROW_GROUP_ROWS)
            files.append(str(path))
            rows = []
    return files


def copy_records(files: list[str], copies: int) -> list[str]:
    """``copies - 1`` more copies of every file with new pair ids (the first hex digit replaced)."""
    out = list(files)
    for r in range(1, copies):
        for f in files:
            table = pq.read_table(f)
            ids = [f"{(int(p[0], 16) + r) % 16:x}{p[1:]}" for p in table.column("pair_id").to_pylist()]
            field = table.schema.field("pair_id")
            table = table.set_column(table.schema.get_field_index("pair_id"), field, pa.array(ids, field.type))
            path = f.replace(".parquet", f"-copy{r}.parquet")
            pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
            out.append(path)
    return out


def bare_loop(path: str, passes: int = 3) -> tuple[float, float]:
    """``augment_pairs`` over the rows of ``path`` in this process, OpenCV on one thread, with the malloc
    thresholds the stream's tasks use: the best of ``passes`` (pairs / s, pairs / CPU-s)."""
    import cv2

    from data_prep.augment import augment_pairs
    from pipelines.raysession import keep_large_buffers_in_heap

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    keep_large_buffers_in_heap()
    table = pq.read_table(path)
    batch = {k: np.asarray(v, dtype=object) if k.endswith("_jpeg") else np.asarray(v)
             for k, v in table.to_pydict().items()}
    rate = rate_cpu = 0.0
    for _ in range(passes):  # best of: the first pass also pays for cold caches
        c0, t0 = time.process_time(), time.perf_counter()
        out = augment_pairs(batch, AugmentConfig(), 1)
        rate = max(rate, len(out["valid"]) / (time.perf_counter() - t0))
        rate_cpu = max(rate_cpu, len(out["valid"]) / (time.process_time() - c0))
    cv2.setNumThreads(threads)
    return rate, rate_cpu


def bare_parallel(path: str, procs: int) -> tuple[float, float]:
    """:func:`bare_loop` in ``procs`` processes at once (every core busy, as the stream's tasks keep them):
    the mean per process (pairs / s per core, pairs / CPU-s)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        rates = pool.starmap(bare_loop, [(path, 3)] * procs)
    return float(np.mean([r[0] for r in rates])), float(np.mean([r[1] for r in rates]))


def _proc_stat(pid: int) -> tuple[float, float, float, int]:
    """(RSS bytes, private RSS bytes (RssAnon: not the shared object store), CPU seconds user + system,
    parent pid) from /proc (Linux); zeros and -1 if the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0, 0.0, -1
    rss = anon = 0.0
    ppid = -1
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = float(line.split()[1]) * 1024
        elif line.startswith("RssAnon:"):
            anon = float(line.split()[1]) * 1024
        elif line.startswith("PPid:"):
            ppid = int(line.split()[1])
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return rss, anon, cpu, ppid


def process_usage() -> dict[str, float]:
    """Memory (MiB) and CPU seconds of this process and of all its descendants (raylet, Ray workers).

    ``*_rss`` counts the shared object-store pages in every process that maps them; ``*_private``
    (RssAnon) does not, and is the number that shows a leak.
    """
    me = os.getpid()
    info = {int(p.name): _proc_stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, (*_, ppid) in info.items():
        children.setdefault(ppid, []).append(pid)
    rss = anon = cpu = task_cpu = 0.0
    stack = list(children.get(me, []))
    while stack:
        pid = stack.pop()
        rss, anon, cpu = rss + info[pid][0], anon + info[pid][1], cpu + info[pid][2]
        if _is_task_worker(pid):
            task_cpu += info[pid][2]
        stack.extend(children.get(pid, []))
    return {"driver_rss": info[me][0] / 2**20, "driver_private": info[me][1] / 2**20, "ray_rss": rss / 2**20,
            "ray_private": anon / 2**20, "cpu_s": cpu + info[me][2], "driver_cpu_s": info[me][2],
            "task_cpu_s": task_cpu}


def _is_task_worker(pid: int) -> bool:
    """A Ray worker process that runs tasks (``ray::IDLE`` between tasks, ``ray::MapBatches(...)`` in one),
    not an actor (Ray Data's stats and autoscaling actors) nor a Ray service."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return title.startswith("ray::") and ("IDLE" in title or "MapBatches" in title)


def threaded_stream(index, fs, cfg, plan, threads: int, ahead: int = 4):
    """Rank 0's work items of every epoch (as ``pair_stream`` builds them) through ``read_and_augment`` on
    ``threads`` threads of this process, blocks in item order, as an ``EpochFeed``. OpenCV releases the GIL
    in ``imdecode`` and ``warpAffine``; it runs one thread per call here, as in the stream's tasks."""
    import collections
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from data_prep.epochs import epoch_share, items_batch, read_and_augment, rows_independent, stream_items
    from pipelines.train_input import EpochFeed

    cv2.setNumThreads(1)
    shares = [epoch_share(index, cfg.data.pairs_per_epoch, 0, e, 0, plan) for e in range(cfg.optim.epochs)]
    items = stream_items(index, shares, plan.micro_batch, split_first=rows_independent(cfg.augment))
    kwargs = {"files": index.files, "digests": index.sha256, "filesystem": fs, "augment": dataclasses.asdict(cfg.augment),
              "seed": 0, "exemplar_size": cfg.model.exemplar_size, "search_size": cfg.model.search_size}

    def run(item):
        return read_and_augment(items_batch([item]), **kwargs)

    def blocks():
        window = collections.deque()
        with ThreadPoolExecutor(threads) as pool:
            for item in items:
                window.append(pool.submit(run, item))
                if len(window) >= threads + ahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    return EpochFeed(blocks(), shares, plan)


def startup_runs(index, fs, cfg, plan, cpus: int, repeats: int, batches: int = 32) -> list[tuple[str, ...]]:
    """The first ``batches`` micro-batches of a fresh stream in a fresh Ray session, head start on and off
    alternately, ``repeats`` times each, drained (times to batches 1, 9 and ``batches``) and consumed by the
    smoke model's training step (data wait); returns table rows of medians."""
    import ray
    import ray.data  # noqa: F401 - imported in a training worker before its stream starts
    import torch

    from ocean.engine import build_optimizer, train_step
    from ocean.model import build_model
    from pipelines.raysession import local_niceness
    from pipelines.train_input import pair_stream

    torch.set_num_threads(1)
    # one epoch of exactly ``batches`` micro-batches, drained to its end: a stream closed part-way and then
    # ``ray.shutdown()`` can leave Ray Data's prefetch thread calling into the stopped core worker, which
    # ends the process
    cfg = apply_overrides(cfg, ["optim.epochs=1", f'data.pairs_per_epoch={{"got10k": {batches * plan.micro_batch}}}'])
    runs: dict[tuple[bool, bool], list[tuple[float, ...]]] = {}
    for rep in range(repeats):
        for head in (True, False):
            for consume in (False, True):
                if ray.is_initialized():
                    ray.shutdown()
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, **local_niceness())
                if consume:
                    torch.manual_seed(0)
                    net = build_model(cfg.model)
                    opt = build_optimizer(net, cfg.optim, 1)
                    net.train()
                t0 = time.perf_counter()
                feed = pair_stream(index, fs, cfg, plan, seed=rep, rank=0, start=0, prefetch=2, head_start=head)
                marks, wait = [], 0.0
                for step in range(batches):
                    t1 = time.perf_counter()
                    b = feed.next(0, step)
                    wait += time.perf_counter() - t1
                    marks.append(time.perf_counter() - t0)
                    if consume:
                        b.pop("valid")
                        train_step(net, b, cfg, opt)
                total = time.perf_counter() - t0
                feed.close()
                runs.setdefault((head, consume), []).append((marks[0], marks[8], marks[-1], wait, total))
                print(f"start-up, head start {head}, consumer {consume}, repeat {rep}: first batch "
                      f"{marks[0]:.2f} s, 9th {marks[8]:.2f} s, {batches}th {marks[-1]:.2f} s, data wait "
                      f"{wait:.2f} of {total:.2f} s, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    ray.shutdown()
    rows = []
    for (head, consume), r in runs.items():
        med = np.median(np.array(r), axis=0)
        what = "smoke train_step" if consume else "drained"
        rows.append((f"head start {'on' if head else 'off'}, {what}", f"{med[0]:.2f}", f"{med[1]:.2f}",
                     f"{med[2]:.2f}", f"{med[3]:.2f} ({100 * med[3] / med[4]:.0f} %)" if consume else "",
                     f"{med[4]:.2f}"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=512, help="distinct pair records written")
    ap.add_argument("--copies", type=int, default=8, help="copies with new pair ids (pool = pairs x copies)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs for Ray Data (default 2)")
    ap.add_argument("--batch", type=int, default=16, help="batch size (smoke preset global batch)")
    ap.add_argument("--consumer-steps", type=int, default=40, help="smoke training steps measured")
    ap.add_argument("--records", type=Path, default=None,
                    help="folder for the records (kept and re-used when it already holds them)")
    ap.add_argument("--startup-repeats", type=int, default=3,
                    help="fresh Ray sessions per variant for the head-start start-up table (0: skip it)")
    ap.add_argument("--startup-only", action="store_true", help="only the head-start start-up table")
    args = ap.parse_args()

    import torch

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    from data_prep.epochs import batch_plan
    from data_prep.pair_index import list_pair_files, load_pair_index
    from ocean.engine import build_optimizer, train_step
    from ocean.model import build_model
    from pipelines.raysession import local_niceness
    from pipelines.train_input import pair_stream

    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.records or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        base = sorted(str(p) for p in folder.glob("shard-?????.parquet"))
        if sum(pq.ParquetFile(f).metadata.num_rows for f in base) != args.pairs:
            for p in folder.glob("shard-*.parquet"):
                p.unlink()
            base = write_records(folder, args.pairs)
        for p in folder.glob("shard-*-copy*.parquet"):
            p.unlink()
        copy_records(base, args.copies)
        pool = args.pairs * args.copies
        print(f"{pool} pair records ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        cfg = apply_overrides(smoke(), [f"optim.epochs={args.epochs}", f'data.pairs_per_epoch={{"got10k": {pool}}}',
                                        f"optim.batch_size={args.batch}"])
        plan = batch_plan(args.batch, 1)
        fs, files = list_pair_files(str(folder))
        index = load_pair_index(fs, files)
        startup = (startup_runs(index, fs, cfg, plan, args.cpus, args.startup_repeats)
                   if args.startup_repeats > 0 else [])
        split, mem = "", []
        if not args.startup_only:
            # bare loop, one thread: alone, and in one process per CPU Ray Data gets, all at once
            bare, bare_cpu = bare_loop(base[0])
            rows_out.append(("bare augment_pairs loop, 1 thread, best of 3", "", f"{bare:.0f}", f"{bare:.0f}",
                             f"{bare_cpu:.0f}", "", ""))
            par, par_cpu = bare_parallel(base[0], args.cpus)
            rows_out.append((f"bare loop in {args.cpus} processes at once, best of 3 each (per process)", "",
                             f"{par * args.cpus:.0f}", f"{par:.0f}", f"{par_cpu:.0f}", "", ""))

            if ray.is_initialized():
                ray.shutdown()
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, **local_niceness())

            # no consumer: one stream, every epoch drained. Ray Data is imported first, as in a training worker
            # (``import ray.train`` imports it), so the start-up is the stream's own
            import ray.data  # noqa: F401

            u0, t0 = process_usage(), time.perf_counter()
            start = (u0, t0)
            feed = pair_stream(index, fs, cfg, plan, seed=0, rank=0, start=0, prefetch=4)
            t_build = time.perf_counter() - t0
            mem, marks = [], []
            for epoch in range(args.epochs):
                n, t_first = 0, None
                for step in range(feed.share(epoch).steps):
                    b = feed.next(epoch, step)
                    n += len(b["valid"])
                    t_first = t_first or time.perf_counter()
                t_end, u1 = time.perf_counter(), process_usage()
                wall, cpu = t_end - t0, u1["cpu_s"] - u0["cpu_s"]
                mem.append(u1)
                marks.append((n, u1, t_end))
                rows_out.append((f"stream, no consumer, epoch {epoch + 1} ({n} pairs)",
                                 f"{t_first - t0:.1f}" + (f" (build {t_build:.1f})" if epoch == 0 else ""),
                                 f"{n / wall:.0f}", f"{n / wall / args.cpus:.0f}", f"{n / cpu:.0f}",
                                 f"{u1['driver_rss']:.0f} ({u1['driver_private']:.0f})",
                                 f"{u1['ray_rss']:.0f} ({u1['ray_private']:.0f})"))
                print(rows_out[-1], f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
                t0, u0 = time.perf_counter(), u1  # the /proc scan above is not the next epoch's start-up
            feed.close()
            del feed
            ratios = ""
            for label, first in (("all epochs, start-up included", 0), ("epochs 2+ (steady)", 1)):
                if first >= len(marks):
                    continue
                (u_a, t_a) = start if first == 0 else (marks[first - 1][1], marks[first - 1][2])
                n = sum(m[0] for m in marks[first:])
                wall, cpu = marks[-1][2] - t_a, marks[-1][1]["cpu_s"] - u_a["cpu_s"]
                rows_out.append((f"stream, no consumer, {label} ({n} pairs)", "", f"{n / wall:.0f}",
                                 f"{n / wall / args.cpus:.0f}", f"{n / cpu:.0f}", "", ""))
                ratios = (f"{label}: pairs/s per core {n / wall / args.cpus / bare:.2f}x the bare loop alone, "
                          f"{n / wall / args.cpus / par:.2f}x the bare loop on every core; pairs per CPU-s "
                          f"{n / cpu / bare_cpu:.2f}x / {n / cpu / par_cpu:.2f}x")
                ms = {k: 1000 * (marks[-1][1][k] - u_a[k]) / n for k in ("task_cpu_s", "driver_cpu_s", "cpu_s")}
                split = (f"CPU per pair, {label}: {ms['cpu_s']:.2f} ms = task workers {ms['task_cpu_s']:.2f} + driver "
                         f"{ms['driver_cpu_s']:.2f} + other Ray processes "
                         f"{ms['cpu_s'] - ms['task_cpu_s'] - ms['driver_cpu_s']:.2f}; bare loop {1000 / bare_cpu:.2f} "
                         f"alone, {1000 / par_cpu:.2f} on every core\n{ratios}")

            # the same stream with threads of this process instead of Ray Data tasks (pair_stream(threads=...))
            t0, u0 = time.perf_counter(), process_usage()
            feed = threaded_stream(index, fs, cfg, plan, args.cpus)
            tmarks = []
            for epoch in range(args.epochs):
                n = 0
                for step in range(feed.share(epoch).steps):
                    n += len(feed.next(epoch, step)["valid"])
                tmarks.append((n, process_usage(), time.perf_counter()))
            feed.close()
            for label, first in (("all epochs", 0), ("epochs 2+ (steady)", 1)):
                if first >= len(tmarks):
                    continue
                u_a, t_a = (u0, t0) if first == 0 else (tmarks[first - 1][1], tmarks[first - 1][2])
                n = sum(m[0] for m in tmarks[first:])
                wall, cpu = tmarks[-1][2] - t_a, tmarks[-1][1]["cpu_s"] - u_a["cpu_s"]
                rows_out.append((f"{args.cpus} threads in this process (no Ray Data), no consumer, {label} ({n} pairs)",
                                 "", f"{n / wall:.0f}", f"{n / wall / args.cpus:.0f}", f"{n / cpu:.0f}", "", ""))
                if first == 1:
                    split += (f"\n{args.cpus} threads, {label}: pairs/s per core {n / wall / args.cpus / bare:.2f}x the bare "
                              f"loop alone, {n / wall / args.cpus / par:.2f}x the bare loop on every core; pairs per "
                              f"CPU-s {n / cpu / bare_cpu:.2f}x / {n / cpu / par_cpu:.2f}x")

            # with a consumer: the smoke model's training step in this process (it competes for the same cores)
            torch.manual_seed(0)
            torch.set_num_threads(1)
            net = build_model(cfg.model)
            opt = build_optimizer(net, cfg.optim, 1)
            net.train()
            steps = min(args.consumer_steps, pool // args.batch - 1)
            cfg1 = apply_overrides(cfg, ["optim.epochs=1", f'data.pairs_per_epoch={{"got10k": {(steps + 1) * args.batch}}}'])
            feed = pair_stream(index, fs, cfg1, plan, seed=1, rank=0, start=0, prefetch=4)  # drained to its end
            wait = total = 0.0
            feed.next(0, 0)  # start-up excluded
            u0 = process_usage()
            for step in range(1, steps + 1):
                t0 = time.perf_counter()
                b = feed.next(0, step)
                t1 = time.perf_counter()
                b.pop("valid")
                train_step(net, b, cfg, opt)
                wait += t1 - t0
                total += time.perf_counter() - t0
            u1 = process_usage()
            rate = steps * args.batch / total
            rows_out.append((f"stream + smoke train_step (batch {args.batch}, 1 torch thread, {steps} steps)",
                             f"data wait {100 * wait / total:.0f}% of step time", f"{rate:.1f}",
                             f"{rate / args.cpus:.1f}", f"{steps * args.batch / (u1['cpu_s'] - u0['cpu_s']):.1f}",
                             f"{u1['driver_rss']:.0f} ({u1['driver_private']:.0f})",
                             f"{u1['ray_rss']:.0f} ({u1['ray_private']:.0f})"))
            feed.close()
            ray.shutdown()

    print(f"\nTraining input pipeline -- {platform.node()} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores), {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, pool {pool} pairs "
          f"({args.pairs} x {args.copies}), Ray Data on {args.cpus} logical CPUs, load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min)\n")
    if rows_out:
        print("| pipeline | start-up s | pairs/s | pairs/s/core | pairs/CPU-s | driver RSS (private) MiB "
              "| Ray processes RSS (private) MiB |")
        print("|---|---|---|---|---|---|---|")
        for r in rows_out:
            print("| " + " | ".join(r) + " |")
    if split:
        print(f"\n{split}")
    if startup:
        print(f"\nStart-up of a fresh stream in a fresh Ray session, medians of {args.startup_repeats} "
              f"(seconds from building the stream; prefetch 2, micro-batch {args.batch}):\n")
        print("| stream | first batch | 9th batch (the tasks' first) | 32nd batch | data wait, 32 steps | "
              "32 steps in all |")
        print("|---|---|---|---|---|---|")
        for r in startup:
            print("| " + " | ".join(r) + " |")
    if len(mem) > 2:
        private = [m["ray_private"] + m["driver_private"] for m in mem]
        rss = [m["ray_rss"] + m["driver_rss"] for m in mem]
        print(f"\nMemory after each epoch (driver + Ray processes): private {', '.join(f'{g:.0f}' for g in private)} "
              f"MiB, RSS {', '.join(f'{g:.0f}' for g in rss)} MiB; change from epoch 2 to epoch {len(mem)}: "
              f"private {private[-1] - private[1]:+.0f} MiB, RSS {rss[-1] - rss[1]:+.0f} MiB (epoch 1 includes "
              f"the workers' start-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
