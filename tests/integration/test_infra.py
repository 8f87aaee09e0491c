"""The integration fixtures themselves: a real S3 server, MLflow server and 2-node Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_s3_server_round_trip_through_the_project_storage_layer(s3_env):
    from ocean import storage

    uri = "s3://ocean-data/infra/hello.bin"
    storage.write_bytes(uri, b"hello")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"hello"
    assert "infra/hello.bin" in s3_env.keys("ocean-data", "infra/")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("s3://ocean-data/infra/missing.bin")


def test_mlflow_server_records_a_run(mlflow_server):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment("infra-check")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "x", 1.5)
    assert client.get_run(run.info.run_id).data.metrics["x"] == 1.5


def test_ray_cluster_has_two_nodes(ray_cluster):
    code = (
        f"import ray, json; ray.init(address={ray_cluster.address!r}); "
        "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=ray_cluster.env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    nodes = json.loads(out.strip().splitlines()[-1])
    assert len(nodes) == 2
    assert sum(n.get("CPU", 0) for n in nodes) == 4
    assert any("head" in n for n in nodes) and any("worker" in n for n in nodes)
