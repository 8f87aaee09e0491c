"""`ray job submit` on a real 2-node Ray cluster (issue 8): a failing job's error is readable in
`ray job logs`, and `ray job stop` ends the job's MLflow run KILLED.

The prepare -> train -> evaluate chain as `ray job submit` jobs, with S3 and an MLflow server passed through
the job's runtime environment, runs on the multi-host cluster (tests/integration/test_netns_cluster.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
REPO = Path(__file__).resolve().parents[2]


def _submit(cluster, sub_id: str, args: list[str], env_vars: dict[str, str], timeout: int = 900):
    runtime_env = json.dumps({"env_vars": env_vars})
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard, "--submission-id", sub_id, "--no-wait",
           "--working-dir", str(REPO), "--runtime-env-json", runtime_env, "--", "python", "-m", *args]
    for _ in range(30):  # the head's job agent comes up a little after the dashboard
        sub = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300)
        if sub.returncode == 0 or "No available agent" not in sub.stderr:
            break
        time.sleep(3)
    assert sub.returncode == 0, f"ray job submit failed: {sub.stdout[-2000:]}\n{sub.stderr[-3000:]}"
    from netns_cluster import wait_for_job
    from ray.job_submission import JobSubmissionClient

    status = wait_for_job(JobSubmissionClient(cluster.dashboard), sub_id, timeout, poll=3)
    logs = subprocess.run([RAY, "job", "logs", "--address", cluster.dashboard, sub_id], env=cluster.env,
                          capture_output=True, text=True, timeout=60).stdout
    return status, logs


def test_a_failing_job_reports_a_clear_error(ray_cluster, tmp_path):
    status, logs = _submit(ray_cluster, f"bad-{int(time.time())}", [
        "jobs.train", "--data", str(tmp_path / "no-such-pairs"), "--out", str(tmp_path / "runs"), "--preset",
        "smoke", "--epochs", "1",
    ], {}, timeout=300)
    assert status == "FAILED"
    # the job's last words name the missing input, not a bare stack trace
    assert "no-such-pairs" in logs.strip().splitlines()[-1] or "no-such-pairs" in "\n".join(
        logs.strip().splitlines()[-3:]), logs[-2000:]


def test_ray_job_stop_marks_the_mlflow_run_killed(ray_cluster, mlflow_server, pairs_dir, tmp_path):
    """``ray job stop`` (SIGTERM to the job's driver, SIGKILL 3 s later: ray_stack.md §4.4) while Ray Train
    runs: the driver ends its MLflow run KILLED and says so in the job's log."""
    from mlflow.tracking import MlflowClient
    from netns_cluster import wait_for_job
    from ray.job_submission import JobSubmissionClient

    tag = f"stop-{int(time.time())}"
    env_vars = {"MLFLOW_TRACKING_URI": mlflow_server.uri, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    cmd = [RAY, "job", "submit", "--address", ray_cluster.dashboard, "--submission-id", tag, "--no-wait",
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--",
           "python", "-m", "jobs.train", "--data", str(pairs_dir), "--out", str(tmp_path / "runs"), "--preset",
           "smoke", "--epochs", "50", "--workers", "2", "--set", "optim.batch_size=8", "--experiment", tag,
           "--run-name", tag]
    sub = subprocess.run(cmd, env=ray_cluster.env, capture_output=True, text=True, timeout=300)
    assert sub.returncode == 0, sub.stderr[-3000:]
    client, run = MlflowClient(tracking_uri=mlflow_server.uri), None
    deadline = time.time() + 240
    while time.time() < deadline and run is None:  # the run exists once the driver opened it
        exp = client.get_experiment_by_name(tag)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        run = runs[0] if runs and client.get_metric_history(runs[0].info.run_id, "step/loss_total") else None
        time.sleep(2)
    assert run is not None and run.info.status == "RUNNING", "training never started"
    stop = subprocess.run([RAY, "job", "stop", "--address", ray_cluster.dashboard, "--no-wait", tag],
                          env=ray_cluster.env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr[-2000:]
    assert wait_for_job(JobSubmissionClient(ray_cluster.dashboard), tag, 120, poll=2) == "STOPPED"
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    logs = subprocess.run([RAY, "job", "logs", "--address", ray_cluster.dashboard, tag], env=ray_cluster.env,
                          capture_output=True, text=True, timeout=60).stdout
    assert "ocean train: stopped by SIGTERM" in logs, logs[-3000:]
