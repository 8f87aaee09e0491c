"""RunLogger against a real (sqlite) MLflow store: tags, params, batching, resume, children, failure."""

from __future__ import annotations

import pickle

import pytest

from ocean.config import smoke
from pipelines import tracking
from pipelines.tracking import MAX_PARAM_CHARS, REDACTED, NullRunLogger, RunLogger

pytestmark = pytest.mark.slow  # a real sqlite store: migrations take seconds


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_start_sets_standard_and_project_tags_and_logs(uri, tmp_path):
    run = RunLogger.start(uri, "exp", "first", tags={"ocean.kind": "test"})
    run.log_params({"a": 1, "long": "x" * (MAX_PARAM_CHARS + 50), "aws_secret_access_key": "s3cr3t"})
    run.log_config(smoke(), {"run.workers": 2})
    run.log_metrics({f"m{i}": float(i) for i in range(1500)}, step=3)  # more than one batch
    run.log_text("# hello\n", "notes/hello.md")
    (tmp_path / "f.txt").write_text("x")
    run.log_artifact(tmp_path / "f.txt", "files")
    run.finish()
    got = run.client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "first"
    tags = got.data.tags
    assert tags["ocean.kind"] == "test" and "ocean.code_version" in tags
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"]
    params = got.data.params
    assert params["a"] == "1" and len(params["long"]) == MAX_PARAM_CHARS
    assert params["aws_secret_access_key"] == REDACTED
    assert params["optim.epochs"] == str(smoke().optim.epochs) and params["run.workers"] == "2"
    assert len(got.data.metrics) == 1500 and got.data.metrics["m1499"] == 1499.0
    history = run.client.get_metric_history(run.run_id, "m7")
    assert [m.step for m in history] == [3]
    names = {a.path for a in run.client.list_artifacts(run.run_id)}
    assert names == {"notes", "files"}


def test_resume_key_reopens_the_newest_tagged_run(uri):
    first = RunLogger.start(uri, "exp", "train", tags={"ocean.data": "d1"}, resume_key=("ocean.run_key", "k1"))
    first.finish("FAILED")
    again = RunLogger.start(uri, "exp", "train", tags={"ocean.data": "d2"}, resume_key=("ocean.run_key", "k1"))
    assert again.run_id == first.run_id and again.status() == "RUNNING"
    assert again.resumed and not first.resumed
    assert again.client.get_run(again.run_id).data.tags["ocean.data"] == "d1"  # reopened as it was
    other = RunLogger.start(uri, "exp", "train", resume_key=("ocean.run_key", "k2"))
    assert other.run_id != first.run_id
    assert other.client.get_run(other.run_id).data.tags["ocean.run_key"] == "k2"


def test_child_pickling_and_failure(uri):
    parent = RunLogger.start(uri, "exp", "parent")
    child = parent.child("parent/child", tags={"ocean.kind": "child"})
    assert child.client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    clone = pickle.loads(pickle.dumps(child))
    assert clone.run_id == child.run_id and clone._client is None
    with pytest.raises(RuntimeError, match="boom"):
        with clone:
            raise RuntimeError("boom")
    got = parent.client.get_run(child.run_id)
    assert got.info.status == "FAILED" and got.data.tags["ocean.error"] == "RuntimeError: boom"
    with parent:
        pass
    assert parent.status() == "FINISHED"
    attached = RunLogger.attach(uri, parent.run_id)
    attached.log_metrics({"late": 1.0})
    assert attached.client.get_run(parent.run_id).data.metrics["late"] == 1.0


def test_null_run_logger_logs_nothing(tmp_path):
    run = NullRunLogger()
    with run:
        run.log_params({"a": 1})
        run.log_metrics({"b": 2.0})
        run.child("c").set_tags({"d": "e"})
    assert run.status() == "NONE"
    assert not list(tmp_path.iterdir())


def test_source_tags_name_the_commit_without_dirty_suffix(monkeypatch):
    monkeypatch.setattr(tracking, "code_version", lambda: "abc123-dirty")
    assert tracking.source_tags()["mlflow.source.git.commit"] == "abc123"
    monkeypatch.setattr(tracking, "code_version", lambda: "unknown")
    assert "mlflow.source.git.commit" not in tracking.source_tags()


def test_experiments_are_tagged_as_model_training(uri):
    """MLflow 3 opens an experiment as model training, not GenAI, by ``mlflow.experimentKind``
    (ray_stack.md §5.1): new experiments get it, and so does one made before without it."""
    from mlflow.tracking import MlflowClient

    new = tracking.ensure_experiment(uri, "fresh")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment(new).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("made-before")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert tracking.ensure_experiment(uri, "made-before") == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
