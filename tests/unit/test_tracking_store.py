"""The MLflow-on-a-cluster rule (:func:`pipelines.tracking.require_shared_store`): a store that is a file on
the driver's machine (sqlite, file, a plain path) is refused when the Ray cluster has more than one node, a
tracking server never; ``ocean train`` / ``ocean ablate`` turn the refusal into one line and exit status 2.
No Ray: the node count is passed in, the drivers are replaced."""

from __future__ import annotations

import pytest

from pipelines.tracking import TrackingStoreError, require_shared_store, tracking_uri

LOCAL = ["sqlite:////srv/runs/mlflow.db", "sqlite:///mlruns.db", "file:///srv/mlruns", "file:/srv/mlruns",
         "/srv/mlruns", "mlruns.db", "SQLITE:////srv/x.db"]
SHARED = ["http://10.0.0.5:5000", "https://user:secret@mlflow.example.com", "postgresql://u:p@db:5432/mlflow",
          "mysql+pymysql://u:p@db/mlflow", "databricks", "databricks://profile"]


@pytest.mark.parametrize("uri", LOCAL)
@pytest.mark.parametrize("nodes", [0, 1])
def test_a_local_store_is_fine_on_one_node(uri, nodes):
    require_shared_store(uri, nodes)


@pytest.mark.parametrize("uri", LOCAL)
@pytest.mark.parametrize("nodes", [2, 3, 40])
def test_a_local_store_is_refused_on_several_nodes(uri, nodes):
    with pytest.raises(TrackingStoreError) as info:
        require_shared_store(uri, nodes)
    text = str(info.value)
    assert "MLFLOW_TRACKING_URI" in text and "--mlflow-uri" in text and "http://HOST:5000" in text
    assert f"{nodes} nodes" in text and uri in text
    assert "\n" not in text  # one line on stderr


@pytest.mark.parametrize("uri", SHARED)
@pytest.mark.parametrize("nodes", [1, 2, 40])
def test_a_tracking_server_is_fine_anywhere(uri, nodes):
    require_shared_store(uri, nodes)


def test_the_error_is_a_value_error_and_hides_the_query():
    with pytest.raises(ValueError) as info:
        require_shared_store("sqlite:////srv/x.db?token=abc", 2)
    assert "sqlite:////srv/x.db" in str(info.value) and "token" not in str(info.value)


def test_the_default_store_is_refused_on_a_cluster(tmp_path, monkeypatch):
    """No --mlflow-uri and no MLFLOW_TRACKING_URI: the sqlite default (under a local OUT, or ./mlruns.db for
    an s3:// OUT) is a file on the driver."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    for out in (str(tmp_path / "run"), "s3://bucket/run"):
        require_shared_store(tracking_uri(None, out), 1)
        with pytest.raises(TrackingStoreError, match="MLFLOW_TRACKING_URI"):
            require_shared_store(tracking_uri(None, out), 2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    require_shared_store(tracking_uri(None, str(tmp_path / "run")), 2)


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_the_jobs_print_one_line_and_exit_2(command, tmp_path, monkeypatch, capsys):
    import pipelines.ablate
    import pipelines.train
    from jobs.cli import main

    def refuse(settings):
        require_shared_store(tracking_uri(settings.mlflow_uri, settings.out), 2)

    monkeypatch.setattr(pipelines.train, "train", refuse)
    monkeypatch.setattr(pipelines.ablate, "ablate", refuse)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = ["--benchmark", f"otb={tmp_path}"] if command == "ablate" else ["--preset", "smoke"]  # random init
    code = main([command, "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--mlflow-uri", uri,
                 *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"ocean {command}: error: the MLflow store {uri} ")
    assert "2 nodes" in err[0] and "MLFLOW_TRACKING_URI" in err[0]
