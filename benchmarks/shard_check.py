"""What checking each pair-record file against the manifest's sha256 costs the training input.

    python benchmarks/shard_check.py [--pairs 512] [--copies 8] [--rounds 3]

Writes ``--pairs`` pair records as ``ocean prepare`` stores them (``benchmarks/train_input.py``'s writer:
natural-image-like frames, 145 / 433 px crops at q90, 256-row row groups, 512 rows per file), copied
``--copies`` times, then in this one process (no Ray; one OpenCV thread) runs one epoch of work items
(``data_prep.epochs.epoch_share`` over every pair, items of ``ITEM_PAIRS``) three ways, alternating, best of
``--rounds``:

* **read only, unchecked**: ``read_pair_rows`` without digests (row groups only);
* **read only, first check**: with the manifest's digests and an empty "verified" cache: every file is read
  whole and hashed once, the epoch's reads then come from those bytes;
* **read + decode + augment** (``read_and_augment``, the work of a training-input task), unchecked and
  first check.

A file verified once is not hashed again in that process (epochs 2+ cost nothing extra); every Ray Data task
process pays the first check once per file it touches. Prints a markdown table with the machine, date and
load average; ratios are against the unchecked run of the same round.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_model  # noqa: E402
from train_input import copy_records, write_records  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import cv2
    import numpy as np

    from data_prep import pair_index
    from data_prep.epochs import batch_plan, epoch_share, items_batch, read_and_augment, work_item
    from data_prep.pair_index import list_pair_files, load_pair_index, read_pair_rows
    from ocean.config import smoke

    cv2.setNumThreads(1)
    cfg = smoke()
    with tempfile.TemporaryDirectory() as tmp:
        files = copy_records(write_records(Path(tmp), args.pairs), args.copies)
        fs, listed = list_pair_files(tmp)
        digests = tuple(hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in listed)
        index = load_pair_index(fs, listed, digests)
        n = len(index.keys)
        mb = sum(Path(f).stat().st_size for f in files) / 1e6
        plan = batch_plan(16, 1)
        share = epoch_share(index, {"got10k": n}, 0, 0, 0, plan)
        items = [work_item(index, share, i) for i in range(len(share.items))]
        kw = {"files": index.files, "filesystem": fs, "augment": dataclasses.asdict(cfg.augment), "seed": 0,
              "exemplar_size": cfg.model.exemplar_size, "search_size": cfg.model.search_size}

        def read_only(check: bool) -> float:
            pair_index._VERIFIED.clear()
            t0 = time.perf_counter()
            for it in items:
                loc = np.frombuffer(it["locations"], dtype=np.uint64).reshape(-1, 4)
                read_pair_rows(fs, index.files, loc, digests if check else ())
            return time.perf_counter() - t0

        def augmented(check: bool) -> float:
            pair_index._VERIFIED.clear()
            t0 = time.perf_counter()
            for it in items:
                read_and_augment(items_batch([{**it, "epoch": 0}]),
                                 digests=digests if check else (), **kw)
            return time.perf_counter() - t0

        load0 = os.getloadavg()[0]
        best = {k: float("inf") for k in ("ro0", "ro1", "au0", "au1")}
        t_hash = float("inf")
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for f in listed:
                hashlib.sha256(Path(f).read_bytes()).hexdigest()
            t_hash = min(t_hash, time.perf_counter() - t0)
            best["ro0"] = min(best["ro0"], read_only(False))
            best["ro1"] = min(best["ro1"], read_only(True))
            best["au0"] = min(best["au0"], augmented(False))
            best["au1"] = min(best["au1"], augmented(True))
        load1 = os.getloadavg()[0]

    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores, "
          f"load average {load0:.1f} -> {load1:.1f}; {n} pairs in {len(files)} files, {mb:.0f} MB, "
          f"one epoch of {len(items)} work items, best of {args.rounds}\n")
    print("| one epoch, one process | seconds | pairs/s | vs unchecked |\n|---|---:|---:|---:|")
    print(f"| sha256 of every file alone (read + hash) | {t_hash:.2f} | | {mb / t_hash:.0f} MB/s |")
    for label, a, b in (("read only", "ro0", "ro1"), ("read + decode + augment", "au0", "au1")):
        print(f"| {label}, unchecked | {best[a]:.2f} | {n / best[a]:.0f} | 1.00 |")
        print(f"| {label}, first check of every file | {best[b]:.2f} | {n / best[b]:.0f} | "
              f"{best[b] / best[a]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
