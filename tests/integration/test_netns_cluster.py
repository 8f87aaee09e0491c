"""The pipelines on a 3-host Ray cluster whose hosts share nothing but the network (issue 13 item 5).

The hosts are network + mount namespaces on a private bridge (tests/netns_cluster.py): each Ray node has its
own address, /tmp and /dev/shm, and cannot see the test's folders, where the raw data lies. SeaweedFS S3 and
an ``mlflow server`` run on the host side of the bridge; the raw data is uploaded to S3 first. Every job is a
real ``ray job submit`` from the host side: prepare (output to S3) -> train (2 workers on 2 hosts) ->
evaluate (output to S3), then the same jobs while one worker host loses all its processes (SIGKILL of its
raylet and workers), the host coming back a few seconds later as a rebooted machine would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns_cluster import NetnsCluster, sweep_stale, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BUCKET, RUNS = "ocean-data", "ocean-runs"
# shards of <= 8 pairs (14 after the pair caps), 2 CPUs a task: the job spreads over the hosts and lasts
# long enough (~20-40 s here) for a host to be killed in its middle
PREPARE = ["--pairs", "got10k=96", "--pairs", "coco=32", "--shard-pairs", "8", "--task-cpus", "2", "--preset",
           "smoke", "--no-progress"]
# 2 CPUs per training worker: the head (1 CPU) takes none and each worker host (3 CPUs) one
TRAIN = ["--preset", "smoke", "--epochs", "2", "--workers", "2", "--cpus-per-worker", "2", "--set",
         'data.pairs_per_epoch={"got10k": 16, "coco": 8}', "--set", "optim.batch_size=8"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """3 hosts (head h1 with 1 CPU; workers h2, h3 with 3 CPUs each, so that two training workers of 2 CPUs
    land on two different worker hosts), S3 and MLflow on the bridge, the raw data on S3."""
    reason = unavailable()
    if reason:
        pytest.skip(f"multi-host test cluster: {reason}")
    from conftest import launch_mlflow, launch_seaweedfs

    from data_prep.synthetic import generate

    sweep_stale()
    root = tmp_path_factory.mktemp("netns")
    raw = root / "raw"
    generate(raw, seed=3, size="tiny")
    # the nodes see neither the raw data nor any test folder (nor the servers' data folders)
    c = NetnsCluster(root, hidden=(tmp_path_factory.getbasetemp(), root))
    try:
        c.build_network()
        (root / "s3").mkdir()
        (root / "mlflow").mkdir()
        c.s3 = c.server(launch_seaweedfs(root / "s3", c.gateway))
        c.mlflow = c.server(launch_mlflow(root / "mlflow", c.gateway, serve_artifacts=True))
        _upload(c.s3, raw, "raw")
        c.start_nodes()
        c.env = {**c.s3.env(), "MLFLOW_TRACKING_URI": c.mlflow.uri, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
        yield c
    finally:
        c.close()
        left = c.leftovers()
        assert not left, f"the cluster left these behind: {left}"


def _upload(s3, folder: Path, prefix: str) -> None:
    client = s3.client()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder)}")


def _job(c: NetnsCluster, name: str, args: list[str], timeout: float = 600) -> tuple[str, str]:
    sub_id = f"{name}-{c.tag}-{int(time.time() * 1000)}"
    c.submit(sub_id, args, c.env, REPO)
    return c.wait_job(sub_id, timeout)


def _read_json(c: NetnsCluster, bucket: str, key: str):
    return json.loads(c.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def _shard_bytes(c: NetnsCluster, prefix: str) -> dict[str, bytes]:
    s3 = c.s3.client()
    return {k[len(prefix):]: s3.get_object(Bucket=RUNS, Key=k)["Body"].read()
            for k in c.s3.keys(RUNS, prefix) if k.endswith(".parquet")}


def _restart_after(c: NetnsCluster, host, seconds: float = 3.0) -> None:
    """The killed host comes back (a fresh mount namespace, its disk kept) and rejoins the cluster."""
    time.sleep(seconds)
    c.start_ray(host)


def _wait_for_key(c: NetnsCluster, bucket: str, pattern: str, sub_id: str, timeout: float = 300) -> float:
    """Wait until an object whose key matches ``pattern`` exists while job ``sub_id`` runs; returns the time
    it was seen."""
    rx = re.compile(pattern)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(rx.search(k) for k in c.s3.keys(bucket)):
            return time.time()
        if c.job_status(sub_id) not in ("PENDING", "RUNNING"):
            status, logs = c.wait_job(sub_id, 10)
            raise AssertionError(f"the job ended ({status}) before {pattern} appeared:\n{logs[-4000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"no object matching {pattern} after {timeout} s")


# --------------------------------------------------------------------------------------------------------
# the cluster itself


def test_hosts_share_nothing_but_the_network(cluster):
    c = cluster
    nodes = c.alive_nodes()
    assert sorted(n["node_ip"] for n in nodes) == sorted(h.ip for h in c.hosts)
    for host in c.hosts:
        (host.disk / f"marker-{host.name}").write_text(host.name)
        raylet = [p for p in host.processes() if Path(f"/proc/{p}/comm").read_text().strip() == "raylet"]
        assert len(raylet) == 1, f"{host.name}: raylet pids {raylet}"
        probe = (f"ls /tmp; test ! -e {c.root / 'raw'} && echo raw-hidden; test ! -e {c.root} && echo root-hidden; "
                 f"touch /dev/shm/probe-{host.name}; ls /dev/shm | grep -c probe; ip -4 -o addr; ip route")
        out = subprocess.run(["nsenter", "-t", str(raylet[0]), "-m", "-n", "sh", "-c", probe], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        assert f"marker-{host.name}" in out and not any(f"marker-{h.name}" in out for h in c.hosts if h is not host)
        assert "raw-hidden" in out and "root-hidden" in out
        assert re.search(r"^1$", out, re.M), out  # its /dev/shm holds its own probe only
        addrs = re.findall(r"inet (\S+)/", out)
        assert addrs == ["127.0.0.1", host.ip], out
        assert "default" not in out, out  # no route off the bridge
    assert not list(Path("/dev/shm").glob("probe-*"))


# --------------------------------------------------------------------------------------------------------
# prepare -> train -> evaluate


@pytest.fixture(scope="module")
def prepared(cluster):
    """The prepare job on the cluster, raw data from S3; ``(pairs URI, status, logs)``."""
    c = cluster
    out = "s3://ocean-runs/prepared"
    s3_args = ["--dataset", f"got10k=s3://{BUCKET}/raw/got10k", "--dataset", f"coco=s3://{BUCKET}/raw/coco"]
    status, logs = _job(c, "prepare", ["jobs.prepare", *s3_args, "--out", out, *PREPARE])
    return out, status, logs


def test_prepare_job_on_the_cluster(cluster, prepared):
    out, status, logs = prepared
    assert status == "SUCCEEDED", logs[-3000:]
    assert cluster.s3.secret_key not in logs
    manifest = _read_json(cluster, RUNS, "prepared/manifest.json")
    got = manifest["datasets"]["got10k"]
    assert got["pairs_written"] + sum(got.get("pairs_dropped", {}).values()) == 96
    nodes = re.search(r"shards run on (\d+) node", logs)
    assert nodes and int(nodes.group(1)) >= 2, logs[-2000:]  # the shard tasks spread over the hosts


def _train_workers(c: NetnsCluster) -> list[dict]:
    from ray.util.state import list_actors

    ips = {n["node_id"]: n["node_ip"] for n in c.alive_nodes()}
    actors = list_actors(address=c.dashboard, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                         raise_on_missing_output=False)
    return [{"pid": a.pid, "node_id": a.node_id, "ip": ips.get(a.node_id)} for a in actors]


def _wait_for_train_workers(c: NetnsCluster, count: int, sub_id: str, timeout: float = 300) -> list[dict]:
    """The job's Ray Train workers once ``count`` of them are alive."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = _train_workers(c)
        if len(workers) >= count:
            return workers
        if c.job_status(sub_id) not in ("PENDING", "RUNNING"):
            status, logs = c.wait_job(sub_id, 10)
            raise AssertionError(f"the job ended ({status}) before {count} training workers ran:\n{logs[-4000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {count} training workers after {timeout} s")


@pytest.fixture(scope="module")
def trained(cluster, prepared):
    """The training job, one worker host killed in the middle (after epoch 1 is on S3) and restarted."""
    c = cluster
    pairs = prepared[0]
    out = "s3://ocean-runs/train"
    sub_id = f"train-{c.tag}-{int(time.time() * 1000)}"
    c.submit(sub_id, ["jobs.train", "--data", pairs, "--out", out, *TRAIN, "--run-name", "netns"], c.env, REPO)
    placed = _wait_for_train_workers(c, 2, sub_id)  # listed before the kill, so that nothing delays it
    seen = _wait_for_key(c, RUNS, r"^train/checkpoints/epoch-0001\.pt$", sub_id)
    victim = c.hosts[2]
    killed = c.kill_host(victim)
    t_kill = time.time()
    # the scenario needs the kill inside the last epoch; a kill after it would leave nothing to resume
    late = c.s3.keys(RUNS, "train/checkpoints/")[-1] != "train/checkpoints/epoch-0001.pt"
    _restart_after(c, victim)
    c.wait_for_nodes(3)
    status, logs = c.wait_job(sub_id, 600)
    return {"status": status, "logs": logs, "placed": placed, "killed": killed, "victim": victim, "late": late,
            "t_kill": t_kill, "t_epoch1": seen, "out": out}


def test_training_workers_run_on_two_hosts(cluster, trained):
    ips = sorted(w["ip"] for w in trained["placed"])
    assert ips == sorted(h.ip for h in cluster.hosts[1:]), trained["placed"]  # one rank on each worker host


def test_training_resumes_after_losing_a_worker_host(cluster, trained):
    c = cluster
    assert trained["killed"], "nothing was killed"
    assert not trained["late"], "the host was killed after the last epoch file was written: nothing was resumed"
    assert trained["status"] == "SUCCEEDED", trained["logs"][-4000:]
    assert c.s3.secret_key not in trained["logs"]  # credentials never reach the logs
    keys = c.s3.keys(RUNS, "train/checkpoints/")
    assert keys == ["train/checkpoints/epoch-0001.pt", "train/checkpoints/epoch-0002.pt"], keys
    head = c.s3.client().head_object(Bucket=RUNS, Key="train/checkpoints/epoch-0001.pt")
    assert head["LastModified"].timestamp() <= trained["t_kill"] + 1  # epoch 1 was not trained again
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=c.mlflow.uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.mlflow.runName = 'netns'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert steps == [1, 2], steps  # each epoch logged once: nothing before the kill was repeated


def test_restarted_rank_0_says_where_it_resumed_on_the_driver(trained):
    """The restarted worker group's rank 0 said where it resumed, on the driver's console (the job's log)."""
    assert not trained["late"], "the host was killed after the last epoch file was written: nothing was resumed"
    said = [int(m) for m in re.findall(r"train_loop\[rank 0\]: resuming (?:at|after) epoch (\d+)", trained["logs"])]
    assert said and min(said) >= 1, trained["logs"][-6000:]


BENCH = f"s3://{BUCKET}/raw/benchmarks/otb"


@pytest.fixture(scope="module")
def evaluated(cluster, trained):
    """An undisturbed evaluation of the final checkpoint, benchmark from S3; ``(out prefix, status, logs)``."""
    return "eval", *_evaluate(cluster, trained, "eval", BENCH)


def _evaluate(c: NetnsCluster, trained: dict, prefix: str, bench: str, during=None) -> tuple[str, str]:
    ckpt = f"{trained['out']}/checkpoints/epoch-0002.pt"
    sub_id = f"{prefix}-{c.tag}-{int(time.time() * 1000)}"
    c.submit(sub_id, ["jobs.evaluate", "--checkpoint", ckpt, "--benchmark", f"otb={bench}", "--out",
                      f"s3://{RUNS}/{prefix}", "--workers", "2", "--cpus-per-worker", "2", "--max-sequences", "2",
                      "--quiet"], c.env, REPO)  # 2 CPUs: one actor on each worker host, none on the head
    if during:
        during(sub_id)
    return c.wait_job(sub_id, 600)


def _result_files(c: NetnsCluster, prefix: str) -> dict[str, bytes]:
    """The per-sequence box files under ``prefix``, by their path below it."""
    s3 = c.s3.client()
    keys = [k for k in c.s3.keys(RUNS, f"{prefix}/") if "/results/" in k and k.endswith(".txt")]
    return {k[len(prefix):]: s3.get_object(Bucket=RUNS, Key=k)["Body"].read() for k in keys}


def _scores(c: NetnsCluster, prefix: str) -> dict:
    """The metrics of the OTB summary under ``prefix`` (no timings)."""
    from benchmark_trees import METRICS

    keys = [k for k in c.s3.keys(RUNS, f"{prefix}/") if k.endswith("/otb/summary.json")]
    assert len(keys) == 1, keys
    summary = _read_json(c, RUNS, keys[0])
    return {k: summary[k] for k in METRICS if k in summary}


def test_evaluate_job_on_the_cluster(cluster, evaluated):
    prefix, status, logs = evaluated
    assert status == "SUCCEEDED", logs[-3000:]
    assert cluster.s3.secret_key not in logs
    assert len(_result_files(cluster, prefix)) == 2  # --max-sequences 2: one box file each
    scores = _scores(cluster, prefix)
    assert 0.0 <= scores["success_auc"] <= 1.0


def test_cluster_shards_equal_a_one_node_run(cluster, prepared, tmp_path):
    """The same job on one node (a local Ray on this machine), raw data from the local folder, shards to a
    local folder: the same shard bytes as the 3-host run that read the raw data from S3."""
    _, status, _ = prepared
    assert status == "SUCCEEDED"
    raw, local = cluster.root / "raw", tmp_path / "one-node"
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "jobs.prepare", "--dataset", f"got10k={raw / 'got10k'}",
                           "--dataset", f"coco={raw / 'coco'}", "--out", str(local), *PREPARE],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "on 1 node(s)" in proc.stdout
    one_node = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*.parquet")}
    assert one_node and one_node == _shard_bytes(cluster, "prepared/")


# --------------------------------------------------------------------------------------------------------
# the other faults


def test_prepare_survives_losing_a_worker_host(cluster, prepared):
    """Shard tasks lost with the host are run again elsewhere; the shards equal the undisturbed run's."""
    c = cluster
    out, status, _ = prepared
    assert status == "SUCCEEDED"
    roots = f"s3://{BUCKET}/raw"
    args = ["jobs.prepare", "--dataset", f"got10k={roots}/got10k", "--dataset", f"coco={roots}/coco",
            "--out", f"s3://{RUNS}/prepared-fault", *PREPARE]
    sub_id = f"prepfault-{c.tag}-{int(time.time() * 1000)}"
    c.submit(sub_id, args, c.env, REPO)
    _wait_for_key(c, RUNS, r"^prepared-fault/.*shard-.*\.parquet$", sub_id)
    assert c.kill_host(c.hosts[2])
    _restart_after(c, c.hosts[2])
    status, logs = c.wait_job(sub_id, 600)
    assert status == "SUCCEEDED", logs[-3000:]
    c.wait_for_nodes(3)
    undisturbed = _shard_bytes(c, "prepared/")
    assert undisturbed and _shard_bytes(c, "prepared-fault/") == undisturbed
    # and the same manifest: every shard's sha256 and every count (nothing lost, nothing written twice)
    assert _read_json(c, RUNS, "prepared-fault/manifest.json") == _read_json(c, RUNS, "prepared/manifest.json")


def _wait_for_title(c: NetnsCluster, title: str, host, sub_id: str, timeout: float = 300) -> int:
    """Wait until a process of ``host`` is titled ``title`` (Ray names a worker busy with an actor method
    ``ray::Class.method``) while job ``sub_id`` runs; its pid. Reads /proc: fast enough for a short method."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in host.processes():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                    return pid
            except OSError:
                continue
        if c.job_status(sub_id) not in ("PENDING", "RUNNING"):
            status, logs = c.wait_job(sub_id, 10)
            raise AssertionError(f"the job ended ({status}) before {title} ran on {host.name}:\n{logs[-4000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"no {title} on {host.name} after {timeout} s")


def test_evaluate_survives_losing_a_worker_host(cluster, trained, evaluated):
    """The host is killed while its evaluation actor tracks a sequence: the actor is restarted, the sequence
    tracked again, and the scores equal the undisturbed run's."""
    c = cluster
    assert evaluated[1] == "SUCCEEDED"
    lost: list[int] = []

    def kill_midway(sub_id: str) -> None:
        pid = _wait_for_title(c, "ray::SequenceRunner.run", c.hosts[2], sub_id)  # tracking a sequence
        lost.append(pid)
        assert pid in c.kill_host(c.hosts[2])
        _restart_after(c, c.hosts[2])

    status, logs = _evaluate(c, trained, "eval-fault", BENCH, during=kill_midway)
    assert lost and status == "SUCCEEDED", logs[-3000:]
    again = re.search(r"(\d+) run again after a lost worker", logs)
    assert again and int(again.group(1)) >= 1, logs[-2000:]  # the lost sequence was tracked again
    assert _scores(c, "eval-fault") == _scores(c, evaluated[0])
    assert _result_files(c, "eval-fault") == _result_files(c, evaluated[0])  # every box, byte for byte
    c.wait_for_nodes(3)
