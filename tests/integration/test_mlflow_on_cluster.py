"""MLflow on a real 2-node Ray cluster: ``ocean train`` and ``ocean ablate`` with a sqlite store (given, or
the default under ``--out``) stop within seconds of joining the cluster -- exit status 2, one error line
naming MLFLOW_TRACKING_URI -- before any run, checkpoint or store file is created (issue 13 item 7). With a
tracking server: tests/integration/test_job_submit.py (train as a Ray job on this cluster) and
tests/integration/test_ablate_grid.py (ablate)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("command,store", [("train", "given"), ("train", "default"), ("ablate", "given")])
def test_a_sqlite_store_on_two_nodes_fails_fast(ray_cluster, pairs_dir, tmp_path, command, store, request):
    out = tmp_path / "out"
    db = tmp_path / "store" / "mlflow.db"
    args = [sys.executable, "-m", f"jobs.{command}", "--data", str(pairs_dir), "--out", str(out),
            "--preset", "smoke", "--epochs", "1", "--workers", "1", "--set", "optim.batch_size=4",
            "--ray-address", ray_cluster.address]
    if command == "ablate":
        otb = request.getfixturevalue("bench")["otb"]  # a readable root: ablate checks benchmarks first
        args += ["--benchmark", f"otb={otb}", "--pairs-per-epoch", "4", "--rows", "baseline",
                 "--quiet"]
    if store == "given":
        args += ["--mlflow-uri", f"sqlite:///{db}"]
    env = {k: v for k, v in ray_cluster.env.items() if k != "MLFLOW_TRACKING_URI"}
    t0 = time.monotonic()
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"ocean {command}: error:")]
    assert proc.returncode == 2, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert len(errors) == 1, proc.stderr[-3000:]
    expected_store = f"sqlite:///{db}" if store == "given" else f"sqlite:///{out / 'mlflow.db'}"
    assert f"the MLflow store {expected_store} is a file on this machine" in errors[0]
    assert "2 nodes" in errors[0] and "MLFLOW_TRACKING_URI" in errors[0] and "http://HOST:5000" in errors[0]
    assert seconds < 120, f"took {seconds:.0f} s to refuse"  # imports + joining Ray on a shared 2-core box
    assert not db.exists() and not (out / "mlflow.db").exists()  # the store was never opened
    assert not list(out.rglob("*.pt")) and not (out / "checkpoints").exists()
    assert not (tmp_path / "mlruns.db").exists()
