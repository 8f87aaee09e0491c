"""The prepare -> train -> evaluate chain in a real ``mlflow server``: runs linked by the pair store as a
dataset and by tags, MLflow's standard source tags, the final model as a loadable ``mlflow.pytorch``
model, system metrics, the best checkpoint registered with the alias ``best``, and ``ocean track`` on
``models:/NAME@best`` (tiny sizes: two datasets, 2 epochs of 4 steps, one OTB sequence)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from ocean.config import apply_overrides, smoke

pytestmark = pytest.mark.slow

NAME = "lineage-test"
CFG = ["optim.epochs=2", "optim.batch_size=8", 'data.pairs_per_epoch={"got10k": 24, "coco": 8}']


@pytest.fixture(scope="module")
def local_ray():
    from local_ray import local_ray as session

    with session("ocl", {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        yield


@pytest.fixture(scope="module")
def chain(synth_root, local_ray, mlflow_server, tmp_path_factory):
    """prepare -> train (pipelines) -> ``ocean evaluate --run`` (the CLI, in this process)."""
    from jobs.cli import main
    from pipelines.prepare import PrepareSettings, run_prepare
    from pipelines.train import TrainSettings, train

    work = tmp_path_factory.mktemp("lineage")
    cfg = apply_overrides(smoke(), CFG)
    pairs = str(work / "pairs")
    manifest, info = run_prepare(PrepareSettings(
        {n: str(synth_root / n) for n in ("got10k", "coco")}, pairs, cfg, pairs={"got10k": 24, "coco": 8},
        shard_pairs=16, progress=False, log=None, listing="driver", mlflow_uri=mlflow_server.uri,
        experiment="lineage-prepare"))
    trained = train(TrainSettings(pairs, str(work / "runs"), cfg, workers=1, mlflow_uri=mlflow_server.uri,
                                  experiment="lineage-train", run_name="tiny", verbose=False,
                                  system_metrics_interval=0.5))
    evaluated = work / "eval"
    rc = main(["evaluate", "--run", trained["mlflow_run_id"], "--benchmark", f"otb={synth_root}/benchmarks/otb",
               "--out", str(evaluated), "--local", "--max-sequences", "1", "--mlflow-uri", mlflow_server.uri,
               "--experiment", "lineage-eval", "--register-name", NAME, "--quiet"])
    assert rc == 0
    report = json.loads((evaluated / "evaluation.json").read_text())
    return {"work": work, "pairs": pairs, "manifest": manifest, "prepare_run": info["mlflow_run_id"],
            "trained": trained, "report": report, "uri": mlflow_server.uri}


def _inputs(run) -> list[tuple[str, str, str, str]]:
    return [(d.dataset.name, d.dataset.digest, json.loads(d.dataset.source)["uri"],
             {t.key: t.value for t in d.tags}["mlflow.data.context"]) for d in run.inputs.dataset_inputs]


def test_prepare_and_training_runs_share_the_pair_store_dataset(chain):
    from mlflow import MlflowClient

    client = MlflowClient(chain["uri"])
    sha = hashlib.sha256((Path(chain["pairs"]) / "manifest.json").read_bytes()).hexdigest()
    prep = client.get_run(chain["prepare_run"])
    assert prep.info.status == "FINISHED" and prep.data.tags["ocean.kind"] == "prepare"
    assert prep.data.tags["ocean.manifest_sha256"] == sha
    assert prep.data.params["prepare.shard_pairs"] == "16" and prep.data.params["optim.batch_size"] == "8"
    assert prep.data.metrics["totals.pairs_written"] == chain["manifest"]["totals"]["pairs_written"] > 0
    assert prep.data.metrics["got10k.pairs_written"] == chain["manifest"]["datasets"]["got10k"]["pairs_written"]
    assert {a.path for a in client.list_artifacts(prep.info.run_id)} >= {"manifest.json", "rejects_summary.txt"}
    stored = client.download_artifacts(prep.info.run_id, "manifest.json", str(chain["work"]))
    assert Path(stored).read_bytes() == (Path(chain["pairs"]) / "manifest.json").read_bytes()
    record = json.loads((Path(chain["pairs"]) / "mlflow_run.json").read_text())
    assert record["run_id"] == prep.info.run_id and record["manifest_sha256"] == sha

    train_run = client.get_run(chain["trained"]["mlflow_run_id"])
    assert _inputs(prep) == [("pairs:pairs", sha[:32], chain["pairs"], "prepared")]
    assert _inputs(train_run) == [("pairs:pairs", sha[:32], chain["pairs"], "training")]
    assert train_run.data.tags["ocean.prepare_run_id"] == prep.info.run_id == chain["trained"]["prepare_run_id"]
    for run in (prep, train_run):  # MLflow's standard source tags
        tags = run.data.tags
        assert tags["mlflow.user"] not in ("", "unknown") and tags["mlflow.source.type"] == "JOB"
        assert tags["mlflow.source.name"] and len(tags["mlflow.source.git.commit"]) == 40
    system = [k for k in train_run.data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system


def test_the_final_model_loads_back_with_mlflow_pytorch(chain):
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient

    from ocean.checkpoint import load_model
    from pipelines.mlflow_models import _fluent

    trained = chain["trained"]
    run = MlflowClient(chain["uri"]).get_run(trained["mlflow_run_id"])
    assert [m.model_id for m in run.outputs.model_outputs] == [trained["model_uri"].removeprefix("models:/")]
    with _fluent(chain["uri"], None):
        info = mlflow.models.get_model_info(trained["model_uri"])
        net = mlflow.pytorch.load_model(trained["model_uri"])
    assert [s.name for s in info.signature.inputs.inputs] == ["template", "search"]
    assert info.signature.inputs.inputs[1].shape == (-1, 3, 255, 255)
    ref, _ = load_model(trained["checkpoints"][-1])
    gen = torch.Generator().manual_seed(0)
    z, x = torch.rand(1, 3, 127, 127, generator=gen) * 255, torch.rand(1, 3, 255, 255, generator=gen) * 255
    with torch.no_grad():
        a, b = ref(z, x), net.eval()(z, x)
    assert all(torch.equal(a[k], b[k]) for k in ("cls", "reg"))


def test_evaluation_links_and_registers_the_best_checkpoint(chain):
    from mlflow import MlflowClient

    client = MlflowClient(chain["uri"], registry_uri=chain["uri"])
    report, train_id = chain["report"], chain["trained"]["mlflow_run_id"]
    best, m = report["best"], report["mlflow"]
    parent = client.get_run(m["parent_run_id"])
    assert parent.data.tags["ocean.training_run_id"] == train_id
    for ckpt, child_id in m["child_run_ids"].items():
        tags = client.get_run(child_id).data.tags
        assert tags["ocean.training_run_id"] == train_id and tags["ocean.checkpoint_uri"] == ckpt
    version = client.get_model_version_by_alias(NAME, "best")
    assert version.version == m["registered"]["version"] and version.run_id == m["child_run_ids"][best["checkpoint"]]
    assert float(version.tags["otb.success_auc"]) == pytest.approx(best["value"], abs=1e-6)
    assert version.tags["ocean.training_run_id"] == train_id and "success_auc" in version.description
    assert version.tags["ocean.checkpoint_uri"] == best["checkpoint"]


def test_track_takes_the_registered_model(chain, synth_root, tmp_path):
    from jobs.cli import main

    seq = sorted((synth_root / "benchmarks" / "otb").iterdir())[0]
    first = [float(v) for v in re.split(r"[,\s]+", (seq / "groundtruth_rect.txt").read_text().split("\n")[0].strip())]
    init = ",".join(str(v) for v in (first[0] - 1, first[1] - 1, first[2], first[3]))  # OTB is 1-based
    common = ["--frames", str(seq / "img"), "--init", init, "--no-progress", "--device", "cpu"]
    assert main(["track", "--checkpoint", f"models:/{NAME}@best", "--mlflow-uri", chain["uri"],
                 "--out", str(tmp_path / "registered.txt"), *common]) == 0
    assert main(["track", "--checkpoint", chain["report"]["best"]["checkpoint"], "--out", str(tmp_path / "file.txt"),
                 *common]) == 0
    lines = (tmp_path / "registered.txt").read_text().splitlines()
    assert len(lines) == len(list((seq / "img").iterdir())) and lines == (tmp_path / "file.txt").read_text().splitlines()
    assert main(["track", "--checkpoint", f"models:/{NAME}@nope", "--mlflow-uri", chain["uri"],
                 "--out", str(tmp_path / "x.txt"), *common]) == 2
