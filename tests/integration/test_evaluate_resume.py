"""An evaluation that survives a lost worker (pipelines.eval_actors; a lost node: the multi-host cluster tests) and resumes from the results it stored
per sequence (pipelines.eval_store): a Ray actor SIGKILLed mid-evaluation on the 2-node cluster, and a run
killed half-way whose re-run tracks only the missing sequences, with local and S3 (SeaweedFS) output.
Both end with the result files and scores of an undisturbed run (the tracker is deterministic on CPU)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_trees import METRICS

from pipelines.evaluate import EvaluateSettings, evaluate

REPO = Path(__file__).resolve().parents[2]
OK_LINE = re.compile(r"^\d\d:\d\d:\d\d evaluate: \[(\d+)/(\d+)\] .*: ok \(.*, (?P<worker>[^,()]+)\)$")  # the console format
ITEMS = 8  # 2 checkpoints x (otb, vot2018) x 2 sequences


def two_benchmarks(bench: dict[str, str]) -> dict[str, str]:
    return {"otb": bench["otb"], "vot2018": bench["vot2018"]}


@pytest.fixture(scope="module")
def undisturbed(bench, ckpts, tmp_path_factory) -> tuple[dict, Path]:
    """The reference: the local loop, start to end, into a fresh folder."""
    out = tmp_path_factory.mktemp("undisturbed")
    report = evaluate(EvaluateSettings(ckpts[:2], two_benchmarks(bench), str(out), local=True, log_mlflow=False,
                                       progress=False))
    assert report["failed"] == [] and report["timing"]["sequences"] == ITEMS
    return report, out


def result_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*/results/**/*.txt"))}


def assert_same_scores(report: dict, reference: dict) -> None:
    assert report["failed"] == []
    for uri, per in reference["scores"].items():
        for b, sc in per.items():
            for k in METRICS:
                assert report["scores"][uri][b].get(k) == sc.get(k), (uri, b, k)
            assert report["scores"][uri][b]["per_sequence"] == sc["per_sequence"], (uri, b)


def evaluate_command(ckpts, bench, out: str, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "jobs.evaluate", "--out", out, "--no-mlflow"]
    for c in ckpts[:2]:
        cmd += ["--checkpoint", c]
    for name, root in two_benchmarks(bench).items():
        cmd += ["--benchmark", f"{name}={root}"]
    return cmd + list(extra)


def run_until(cmd: list[str], env: dict, ok_lines: int, act) -> tuple[subprocess.Popen, list[str]]:
    """Start ``cmd``, read its stderr; at the ``ok_lines``-th "ok" progress line call ``act(proc, match)``;
    read on to the end. Returns the process (finished) and its stderr lines."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, seen = [], 0
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            m = OK_LINE.match(lines[-1])
            if m:
                seen += 1
                if seen == ok_lines:
                    act(proc, m)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, lines


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_its_sequence_run_again(ray_cluster, bench, ckpts, undisturbed, tmp_path):
    reference, reference_out = undisturbed
    out = tmp_path / "ray"
    killed = []

    def kill_the_worker(_proc, m):  # the actor that sent the first result already holds its next item
        pid = int(m["worker"].rsplit(":", 1)[1])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"SequenceRunner" in cmdline, cmdline  # an evaluation actor of this test's cluster
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    cmd = evaluate_command(ckpts, bench, str(out), "--workers", "2", "--ray-address", ray_cluster.address)
    proc, lines = run_until(cmd, ray_cluster.env, 1, kill_the_worker)
    assert proc.returncode == 0, "\n".join(lines[-40:])
    assert killed and any("queued again" in line for line in lines), "\n".join(lines)
    report = json.loads((out / "evaluation.json").read_text())
    t = report["timing"]
    assert t["workers_lost"] >= 1 and t["items_retried"] >= 1 and t["sequences_tracked"] == ITEMS
    assert f"{os.uname().nodename}:{killed[0]}" in t["worker_ids"]
    assert result_files(out) == result_files(reference_out) and len(result_files(out)) == ITEMS
    assert_same_scores(report, reference)


@pytest.mark.slow
def test_batched_ray_actors_give_the_undisturbed_results(ray_cluster, bench, ckpts, undisturbed, tmp_path):
    """--batch-sequences 2 on the 2-node cluster (one checkpoint, 4 items): each actor call takes two
    sequences and tracks them in lockstep (ocean.batch_tracker); the boxes are those of the one-at-a-time
    local loop (<= 1e-4 px, so the 4-decimal result files differ by at most 2e-4) and every sequence is
    stored with its record."""
    import numpy as np

    reference, reference_out = undisturbed
    out = tmp_path / "batched"
    cmd = evaluate_command(ckpts[:1], bench, str(out), "--workers", "2", "--batch-sequences", "2",
                           "--ray-address", ray_cluster.address)
    proc = subprocess.run(cmd, env=ray_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "evaluation.json").read_text())
    t = report["timing"]
    assert report["failed"] == [] and t["sequences_tracked"] == ITEMS // 2 and t["batch_sequences"] == 2
    assert len(list(out.glob("*/*/sequences/*.json"))) == ITEMS // 2  # the records a re-run reuses
    got = result_files(out)
    want = {k: v for k, v in result_files(reference_out).items() if k.startswith("checkpoint_e1/")}
    assert got.keys() == want.keys() and len(got) == ITEMS // 2
    for name, data in want.items():
        if name.endswith("_time.txt"):
            continue
        a = [np.array(line.split(","), dtype=float) for line in data.decode().split()]
        b = [np.array(line.split(","), dtype=float) for line in got[name].decode().split()]
        assert len(a) == len(b) and all(x.shape == y.shape and np.max(np.abs(x - y)) <= 2e-4
                                        for x, y in zip(a, b, strict=True)), name


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_an_interrupted_run_is_resumed_tracking_only_the_missing_sequences(kind, request, bench, ckpts, undisturbed,
                                                                           tmp_path):
    reference, reference_out = undisturbed
    if kind == "s3":
        s3 = request.getfixturevalue("s3_env")
        out = f"s3://ocean-runs/resume-{os.getpid()}"

        def stored() -> dict[str, bytes]:
            client, prefix = s3.client(), f"resume-{os.getpid()}/"
            return {k[len(prefix):]: client.get_object(Bucket="ocean-runs", Key=k)["Body"].read()
                    for k in s3.keys("ocean-runs", prefix)}
    else:
        out = str(tmp_path / "out")

        def stored() -> dict[str, bytes]:
            root = Path(out)
            return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    # 1. A run killed (SIGKILL, no clean-up) after its second sequence: what it finished is on the output.
    cmd = evaluate_command(ckpts, bench, out, "--local")
    proc, lines = run_until(cmd, dict(os.environ), 2, lambda p, _m: p.send_signal(signal.SIGKILL))
    assert proc.returncode == -signal.SIGKILL, "\n".join(lines)
    files = stored()
    assert "evaluation.json" not in files  # the run never reached its end
    records = {k: json.loads(v) for k, v in files.items() if "/sequences/" in k}
    assert 2 <= len(records) < ITEMS
    for rel, record in records.items():
        base = rel.split("/sequences/")[0]
        for f in record["files"]:
            assert f"{base}/{f}" in files  # every stored sequence has its complete result files
            if not f.endswith("_time.txt"):
                assert files[f"{base}/{f}"] == (reference_out / base / f).read_bytes()

    # 2. The same command again: only the missing sequences are tracked, and the end is the undisturbed one.
    report = evaluate(EvaluateSettings(ckpts[:2], two_benchmarks(bench), out, local=True, log_mlflow=False,
                                       progress=False))
    assert report["timing"]["sequences_reused"] == len(records)
    assert report["timing"]["sequences_tracked"] == ITEMS - len(records)
    assert_same_scores(report, reference)
    files = stored()
    assert "evaluation.json" in files
    results = {k: v for k, v in files.items() if "/results/" in k}
    assert results == result_files(reference_out) and len(results) == ITEMS
