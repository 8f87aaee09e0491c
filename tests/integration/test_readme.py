"""The README's examples, run as written from a clean working directory (a temporary folder, not the repo).

The commands are read from README.md: the ``bash`` block after the marker ``<!-- readme-test: examples``,
so the README cannot drift from the code. Only sizes change, by these rules (every command and every flag
of the README is kept, in its order):

* ``ocean synth --size small`` -> ``--size tiny``;
* ``ocean prepare``: ``+ --pairs NAME=16`` for each ``--dataset NAME=...``;
* ``ocean train``: ``+ --epochs 1``, and a checkpoint path ``epoch-NNNN.pt`` in a later command names the
  last epoch trained here (``epoch-0001.pt``);
* ``ocean evaluate`` / ``ocean tune-tracker``: ``+ --max-sequences 1``; ``tune-tracker --trials N`` -> 2.

Ray: one single-node ``ray start --head`` for the module, started from another folder, and ``RAY_ADDRESS``
for every command (the README's "``ray start --head`` locally"): a relative path that reached a Ray worker
would name a folder of the wrong machine view and fail. ``s3://raw/...`` roots live on the ``s3_server``
fixture (bucket ``raw``, filled from the synthetic tree), its endpoint and keys in the standard ``AWS_*``
variables. MLflow: nothing set, so every job uses its default sqlite store under ``--out``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO, free_port, kill_processes_mentioning, ray_env, worker_ports

README = REPO / "README.md"
MARKER = "<!-- readme-test: examples"
CLUSTER_MARKER = "<!-- readme-test: cluster-env"


def readme_block(marker: str) -> str:
    """The first fenced block after ``marker`` in README.md."""
    text = README.read_text()
    assert marker in text, f"README.md lost its marker {marker!r}"
    after = text[text.index(marker):]
    m = re.search(r"```[a-z]*\n(.*?)```", after, re.S)
    assert m, f"no code block after {marker!r}"
    return m.group(1)


def readme_commands() -> list[list[str]]:
    """The ``ocean ...`` commands of the examples block (``\\`` continuations joined, comments dropped)."""
    block = readme_block(MARKER).replace("\\\n", " ")
    cmds = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [c for c in cmds if c and c[0] == "ocean"]


def sized(cmd: list[str], last_epoch: int) -> list[str]:
    """``cmd`` with the module docstring's size rules applied."""
    out = [re.sub(r"epoch-\d{4}\.pt", f"epoch-{last_epoch:04d}.pt", a) for a in cmd]
    sub = out[1]
    if sub == "synth":
        out = ["tiny" if a == "small" and out[i - 1] == "--size" else a for i, a in enumerate(out)]
    elif sub == "prepare":
        out += [f"--pairs={a.split('=', 1)[0]}=16" for i, a in enumerate(out) if out[i - 1] == "--dataset"]
    elif sub == "train":
        out += ["--epochs", "1"]
    elif sub in ("evaluate", "tune-tracker"):
        out = ["2" if out[i - 1] == "--trials" else a for i, a in enumerate(out)] + ["--max-sequences", "1"]
    return out


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A single-node Ray (4 logical CPUs) started from a folder of its own; yields the client environment."""
    tmp = Path("/tmp") / f"ocrm{os.getpid()}"  # short: Ray's socket paths must stay under 107 chars
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in ray_env(tmp).items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    used: set[int] = set()

    def port() -> int:
        p = free_port(avoid=used)
        used.add(p)
        return p

    gcs = port()
    head = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=4",
            "--include-dashboard=false", "--disable-usage-stats", "--memory=6000000000",
            "--object-store-memory=500000000", f"--temp-dir={tmp}", *worker_ports(2),
            f"--ray-client-server-port={port()}", f"--node-manager-port={port()}",
            f"--object-manager-port={port()}", f"--dashboard-agent-listen-port={port()}",
            f"--dashboard-agent-grpc-port={port()}", f"--runtime-env-agent-port={port()}",
            f"--metrics-export-port={port()}"]
    elsewhere = tmp_path_factory.mktemp("ray-cwd")
    try:
        subprocess.run(head, env=env, cwd=elsewhere, check=True, capture_output=True, timeout=120)
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"}
    finally:
        kill_processes_mentioning(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)


def upload(s3, folder: Path, bucket: str, prefix: str) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            s3.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(folder).as_posix()}")


def run_ocean(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN / "ocean"), *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=400)
    print(f"{time.perf_counter() - t0:6.1f} s  {shlex.join(cmd)}")  # what each example costs (pytest -s)
    assert proc.returncode == 0, f"{shlex.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def test_readme_examples_run_as_written(ray_head, s3_server, tmp_path):
    cmds = readme_commands()
    assert [c[1] for c in cmds] == ["synth", "prepare", "train", "evaluate", "evaluate", "tune-tracker", "info"]
    work = tmp_path / "clean"  # a clean working directory, not the repository
    work.mkdir()
    env = {**ray_head, **s3_server.env()}
    outputs = {}
    for cmd in cmds:
        run = sized(cmd, last_epoch=1)
        if any(a.startswith(("otb=s3://raw/", "got10k=s3://raw/")) for a in run):
            s3 = s3_server.client()
            if "raw" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
                s3.create_bucket(Bucket="raw")
                upload(s3, work / "data/synthetic/benchmarks", "raw", "benchmarks")
        outputs[shlex.join(run)] = out = run_ocean(run, work, env)
        if run[1] == "train":  # the checkpoints landed under the working directory's runs/, not in a Ray folder
            assert (work / "runs/checkpoints/epoch-0001.pt").is_file(), out
            assert (work / "runs/mlflow.db").is_file()
    local = json.loads((work / "eval/evaluation.json").read_text())
    remote = json.loads((work / "eval-s3/evaluation.json").read_text())
    assert local["scores"] == remote["scores"]  # the same benchmark read from a folder and from S3
    assert (work / "tune/best_tracker.json").is_file()
    info_cmd = next(c for c in outputs if c.startswith("ocean info"))
    claimed = re.search(r"#.*?([\d,]{6,}) parameters", readme_block(MARKER)).group(1)
    assert claimed in outputs[info_cmd]


def test_readme_cluster_environment_is_complete(tmp_path):
    """The cluster section's lines up to ``ENV=...``, run in bash: ``ENV`` is JSON for ``--runtime-env-json``
    carrying the S3 endpoint, region and keys and the MLflow URI that the jobs read (ocean/storage.py,
    pipelines/tracking.py), and no variable this shell has not set."""
    block = readme_block(CLUSTER_MARKER)
    lines = block[:block.index("ray job submit")]
    assert "ENV=" in lines
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", "-euc", lines + '\nprintf %s "$ENV"'], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    env_vars = json.loads(out.stdout)["env_vars"]
    assert set(env_vars) == {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                             "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI"}
    assert env_vars["MLFLOW_TRACKING_URI"].startswith("http")
    read_by_code = set(re.findall(r"AWS_[A-Z0-9_]+", (REPO / "ocean/storage.py").read_text())) - {"AWS_ENDPOINT_URL_S3",
                                                                                          "AWS_REGION"}
    assert read_by_code <= set(re.findall(r"AWS_[A-Z_]+", lines)), read_by_code


def test_gpu_on_a_cluster_without_gpus_fails_at_once(ray_head, pairs_dir, tmp_path):
    """``ocean train --gpu`` where Ray has no GPU (and no autoscaler that could add one): one line, exit 2,
    instead of a worker group waiting forever (the subprocess timeout catches a hang)."""
    proc = subprocess.run([str(BIN / "ocean"), "train", "--data", str(pairs_dir), "--out", str(tmp_path / "out"),
                           "--preset", "smoke", "--workers", "2", "--gpu"], cwd=tmp_path, env=ray_head,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ocean train: error:")]
    assert len(lines) == 1 and "needs 2 GPUs" in lines[0] and "has 0" in lines[0], proc.stderr[-3000:]
    assert "--wait-for-gpus SECONDS" in lines[0] and "Traceback" not in proc.stderr

    # asked to wait (a cluster whose GPU nodes start on demand): asks the autoscaler, waits, then refuses
    waited = subprocess.run([str(BIN / "ocean"), "train", "--data", str(pairs_dir), "--out", str(tmp_path / "out"),
                             "--preset", "smoke", "--workers", "2", "--gpu", "--wait-for-gpus", "2"], cwd=tmp_path,
                            env=ray_head, capture_output=True, text=True, timeout=180)
    assert waited.returncode == 2, waited.stderr[-3000:]
    assert "waiting up to 2 s for 2 GPUs to join the cluster" in waited.stderr
    lines = [ln for ln in waited.stderr.splitlines() if ln.startswith("ocean train: error:")]
    assert len(lines) == 1 and "after waiting 2 s" in lines[0] and "Traceback" not in waited.stderr, waited.stderr
