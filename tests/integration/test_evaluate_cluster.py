"""Batch evaluation (pipelines.evaluate / ocean evaluate): inputs, the local loop against the sequential
scorer and `ocean score`, and (slow) the 2-node Ray cluster + MLflow server end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.cli import main as cli_main
from ocean.checkpoint import save_checkpoint
from ocean.config import TrackerConfig, layered_tracker_config, smoke
from ocean.model import build_model
from pipelines.eval_lineage import LineageError, checkpoints_of_run
from pipelines.evaluate import EvaluateSettings, EvaluationError, evaluate

REPO = Path(__file__).resolve().parent.parent
METRICS = (
    "success_auc",
    "precision",
    "norm_precision",
    "ao",
    "sr50",
    "sr75",
    "eao",
    "accuracy",
    "robustness",
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, str]:
    """The tiny synthetic benchmark trees (2 sequences of 30 frames each)."""
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, size="tiny")
    b = root / "benchmarks"
    return {
        "otb": str(b / "otb"),
        "vot2018": str(b / "vot2018" / "sequences"),
        "got10k": str(b / "got10k" / "val"),
        "lasot": str(b / "lasot"),
    }


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[str]:
    """Three untrained smoke checkpoints (different seeds) as epochs 1..3 of a fake training run."""
    folder = tmp_path_factory.mktemp("ckpts")
    out = []
    for epoch in (1, 2, 3):
        torch.manual_seed(100 + epoch)
        path = folder / f"checkpoint_e{epoch}.pt"
        save_checkpoint(str(path), build_model(smoke().model), smoke(), epoch=epoch)
        out.append(str(path))
    return out


def result_files(folder: Path) -> dict[str, bytes]:
    """Every result file under ``folder`` except the GOT-10k timing files (wall-clock, not results)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.txt"))
        if not p.name.endswith("_time.txt")
    }


# ----------------------------------------------------------------------------------------------------------
# Inputs


def test_tracker_config_layers_checkpoint_then_preset_then_overrides():
    base = TrackerConfig(lr=0.5, min_size=7.0, context_amount=0.4)
    otb = layered_tracker_config(base, "otb")
    # preset values (facts §9.3 OTB2015 row) replace the checkpoint's; untouched fields stay the checkpoint's
    assert (otb.penalty_k, otb.lr, otb.window_influence, otb.small_sz) == (0.087, 0.408, 0.366, 271)
    assert otb.size_update == "double" and otb.min_size == 7.0 and otb.context_amount == 0.4
    over = layered_tracker_config(base, "vot2018", {"window_influence": 0.25, "use_align": False})
    assert over.window_influence == 0.25 and over.use_align is False and over.penalty_k == 0.021
    same = layered_tracker_config(base, "vot2018", ["tracker.window_influence=0.25", "use_align=false"])
    assert same == over
    assert layered_tracker_config(base, "got10k", {"tracker": {"lr": 0.1}}).lr == 0.1
    with pytest.raises(ValueError, match="no_such_key"):
        layered_tracker_config(base, "otb", {"no_such_key": 1})
    with pytest.raises(ValueError, match="not a valid float"):
        layered_tracker_config(base, "otb", ["tracker.lr=fast"])


def test_bad_inputs_give_clear_errors(bench, ckpts, tmp_path, capsys):
    otb = {"otb": bench["otb"]}
    with pytest.raises(EvaluationError, match="missing.pt: no such file"):
        evaluate(
            EvaluateSettings(
                [str(tmp_path / "missing.pt")], otb, str(tmp_path / "o"), local=True, log_mlflow=False
            )
        )
    not_ckpt = tmp_path / "garbage.pt"
    torch.save({"weights": 1}, not_ckpt)
    with pytest.raises(EvaluationError, match="garbage.pt: cannot load it .*not an ocean-ray checkpoint"):
        evaluate(EvaluateSettings([str(not_ckpt)], otb, str(tmp_path / "o"), local=True, log_mlflow=False))
    with pytest.raises(EvaluationError, match="benchmark otb: root .*nowhere is not a folder"):
        evaluate(
            EvaluateSettings(
                ckpts[:1],
                {"otb": str(tmp_path / "nowhere")},
                str(tmp_path / "o"),
                local=True,
                log_mlflow=False,
            )
        )
    with pytest.raises(EvaluationError, match="benchmark lasot: cannot read"):
        evaluate(
            EvaluateSettings(
                ckpts[:1], {"lasot": bench["otb"]}, str(tmp_path / "o"), local=True, log_mlflow=False
            )
        )
    with pytest.raises(EvaluationError, match="unknown benchmark 'otb2013'"):
        evaluate(
            EvaluateSettings(
                ckpts[:1], {"otb2013": bench["otb"]}, str(tmp_path / "o"), local=True, log_mlflow=False
            )
        )
    with pytest.raises(EvaluationError, match="validation benchmark 'vot2018' is not one of"):
        evaluate(
            EvaluateSettings(
                ckpts[:1], otb, str(tmp_path / "o"), local=True, log_mlflow=False, validation="vot2018"
            )
        )
    # tracker hyper-parameters are layered (ocean.config.layered_tracker_config) and checked before tracking
    with pytest.raises(EvaluationError, match="tracker hyper-parameters: .*no_such_key"):
        evaluate(
            EvaluateSettings(
                ckpts[:1],
                otb,
                str(tmp_path / "o"),
                tracker_overrides={"no_such_key": 1},
                local=True,
                log_mlflow=False,
            )
        )
    with pytest.raises(EvaluationError, match="tracker hyper-parameters: .*not a valid float"):
        evaluate(
            EvaluateSettings(
                ckpts[:1],
                otb,
                str(tmp_path / "o"),
                tracker_overrides=["tracker.lr=fast"],
                local=True,
                log_mlflow=False,
            )
        )
    assert not (tmp_path / "o").exists()  # nothing was tracked or written
    # the command line: status 2 and the message, no traceback
    code = cli_main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
            "--benchmark",
            f"otb={bench['otb']}",
            "--out",
            str(tmp_path / "o"),
            "--local",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "ocean evaluate: error: checkpoint" in err and "no such file" in err
    code = cli_main(
        ["evaluate", "--checkpoint", ckpts[0], "--benchmark", "otb", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "expected NAME=ROOT" in capsys.readouterr().err
    code = cli_main(
        [
            "evaluate",
            "--checkpoint",
            ckpts[0],
            "--benchmark",
            f"otb={bench['otb']}",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "optim.base_lr=1",
        ]
    )
    assert code == 2 and "only tracker.* keys" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# The local loop: identical to the sequential scorer and to `ocean score`


def test_local_loop_matches_sequential_tracker_and_ocean_score(bench, ckpts, tmp_path):
    from ocean.benchmarks import read_benchmark, run_one_pass, write_ope_result
    from ocean.checkpoint import load_model
    from ocean.config import tracker_config
    from ocean.tracker import OceanTracker

    out = tmp_path / "eval"
    report = evaluate(
        EvaluateSettings(
            ckpts[:1],
            bench,
            str(out),
            local=True,
            log_mlflow=False,
            max_sequences=1,
            tracker_overrides={"window_influence": 0.3},
            progress=False,
        )
    )
    name = "checkpoint_e1"
    assert report["timing"]["sequences"] == 4 and report["timing"]["model_loads"] == 1
    assert report["failed"] == []

    # 1. The sequential scorer by hand: same tracker (OTB preset + override), same frames, 1 thread.
    seq = read_benchmark("otb", Path(bench["otb"]))[0]
    net, _ = load_model(ckpts[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_one_pass(OceanTracker(net, tracker_config("otb", window_influence=0.3)), seq)
    finally:
        torch.set_num_threads(threads)
    expected = write_ope_result(tmp_path / "by_hand", "otb", seq.name, res.boxes_xywh)
    got = out / name / "otb" / "results" / f"{seq.name}.txt"
    assert got.read_bytes() == expected.read_bytes()
    assert report["scores"][ckpts[0]]["otb"]["tracker"]["window_influence"] == 0.3

    # 2. `ocean score` on the written files gives the summary's numbers, for every benchmark format.
    for b, root in bench.items():
        summary = json.loads((out / name / b / "summary.json").read_text())
        # with max_sequences the dataset has more sequences than were run: score through a 1-sequence copy
        assert summary["num_sequences"] == 1 and summary["rejected"] == {}
        scored = tmp_path / f"score_{b}.json"
        assert (
            cli_main(
                [
                    "score",
                    "--benchmark",
                    b,
                    "--dataset",
                    root,
                    "--results",
                    str(out / name / b / "results"),
                    "--json",
                    str(scored),
                ]
            )
            == 0
        )
        again = json.loads(scored.read_text())
        # the unevaluated sequences show up as rejected (no result file); the evaluated one scores the same
        assert set(again["per_sequence"]) == set(summary["per_sequence"])
        assert len(again["rejected"]) == 1
        for k in METRICS:
            assert again.get(k) == summary.get(k), (b, k)
        assert again["per_sequence"] == summary["per_sequence"]
    # the formats themselves: OTB/LaSOT 1-based, GOT-10k with a timing file, VOT trajectory codes
    first = np.loadtxt(got, delimiter=",")[0]
    np.testing.assert_allclose(first, seq.gt_xywh[0] + [1, 1, 0, 0])
    got10k_dir = out / name / "got10k" / "results"
    assert len(list(got10k_dir.glob("*/*_time.txt"))) == 1
    vot_files = list((out / name / "vot2018" / "results" / "baseline").glob("*/*_001.txt"))
    assert len(vot_files) == 1 and vot_files[0].read_text().splitlines()[0] == "1"
    # plots and tables
    for p in ("otb/success.png", "otb/precision.png", "got10k/success.png", "lasot/precision.png"):
        assert (out / name / p).stat().st_size > 1000
    assert not (out / name / "vot2018" / "success.png").exists()
    rows = (out / "per_sequence.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("checkpoint,epoch,benchmark,sequence")


def test_a_failing_sequence_is_recorded_not_fatal(bench, ckpts, tmp_path):
    import shutil

    root = tmp_path / "otb"
    shutil.copytree(bench["otb"], root)
    frames = sorted((root / "Disc1" / "img").iterdir())
    frames[5].write_bytes(b"not a jpeg")  # the reader keeps the path; the tracker cannot read it
    report = evaluate(
        EvaluateSettings(
            ckpts[:1], {"otb": str(root)}, str(tmp_path / "o"), local=True, log_mlflow=False, progress=False
        )
    )
    assert [f["sequence"] for f in report["failed"]] == ["Disc1"]
    assert "cannot read image" in report["failed"][0]["error"]
    s = report["scores"][ckpts[0]]["otb"]
    assert s["num_sequences"] == 1 and "Diamond2" in s["per_sequence"] and "Disc1" in s["failed"]
    assert "Disc1" in s["rejected"]  # no result file: `ocean score` would reject it the same way


def test_got10k_test_split_is_tracked_for_the_server_not_scored(bench, ckpts, tmp_path):
    import shutil

    root = tmp_path / "test"
    shutil.copytree(bench["got10k"], root)
    for gt in root.glob("*/groundtruth.txt"):  # the test split ships only the first box
        gt.write_text(gt.read_text().splitlines()[0] + "\n")
    report = evaluate(
        EvaluateSettings(
            ckpts[:1],
            {"got10k": str(root)},
            str(tmp_path / "o"),
            local=True,
            log_mlflow=False,
            max_sequences=1,
            progress=False,
        )
    )
    s = report["scores"][ckpts[0]]["got10k"]
    assert s["num_sequences"] == 0 and s.get("ao") is None and report["failed"] == []
    ((name, why),) = s["rejected"].items()
    assert "evaluation server" in why
    boxes = np.loadtxt(
        tmp_path / "o" / "checkpoint_e1" / "got10k" / "results" / name / f"{name}_001.txt", delimiter=","
    )
    assert boxes.shape == (30, 4)  # every frame, 0-based, as the server expects


# ----------------------------------------------------------------------------------------------------------
# Ray (2 nodes) + MLflow server


MANIFEST = "cd" * 32


def _training_run(mlflow_uri: str, listing_json, tmp_path: Path, tags: dict | None = None) -> str:
    """A stand-in training run that logged its checkpoints as a ``checkpoints.json`` artifact (a list of
    URIs, as pipelines.train logs it) and its data manifest hash as a tag."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("fake-train") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("fake-train")
    run = client.create_run(
        exp_id, run_name="train", tags={"ocean.manifest_sha256": MANIFEST, **(tags or {})}
    )
    listing = tmp_path / "checkpoints.json"
    listing.write_text(json.dumps(listing_json))
    client.log_artifact(run.info.run_id, str(listing))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.mark.slow
def test_checkpoints_of_a_training_run(mlflow_server, ckpts, tmp_path):
    run_id = _training_run(mlflow_server.uri, ckpts, tmp_path)  # ["/…/checkpoint_e1.pt", ...]
    assert checkpoints_of_run(mlflow_server.uri, run_id) == [(1, ckpts[0]), (2, ckpts[1]), (3, ckpts[2])]
    assert checkpoints_of_run(mlflow_server.uri, run_id, [3, 1]) == [(1, ckpts[0]), (3, ckpts[2])]
    with pytest.raises(LineageError, match=r"no checkpoint for epochs \[7\]"):
        checkpoints_of_run(mlflow_server.uri, run_id, [1, 7])
    with pytest.raises(LineageError, match="no such MLflow run"):
        checkpoints_of_run(mlflow_server.uri, "0" * 32)
    # [{"epoch", "uri"}] entries: the epoch given wins over the name
    listing = [{"epoch": 10, "uri": "s3://b/x/last.pt"}, {"epoch": 4, "uri": "s3://b/x/e4.pt"}]
    run_id = _training_run(mlflow_server.uri, listing, tmp_path)
    assert checkpoints_of_run(mlflow_server.uri, run_id) == [(4, "s3://b/x/e4.pt"), (10, "s3://b/x/last.pt")]
    # per-epoch tags, the other documented convention
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.create_run(client.get_experiment_by_name("fake-train").experiment_id)
    client.set_tag(run.info.run_id, "checkpoint.e5", "s3://b/run/e5.pt")
    client.set_tag(run.info.run_id, "checkpoint.e4", "s3://b/run/e4.pt")
    assert checkpoints_of_run(mlflow_server.uri, run.info.run_id) == [
        (4, "s3://b/run/e4.pt"),
        (5, "s3://b/run/e5.pt"),
    ]


@pytest.mark.slow
def test_ray_two_nodes_equals_local_loop_and_logs_to_mlflow(
    ray_cluster, mlflow_server, bench, ckpts, tmp_path
):
    from mlflow import MlflowClient

    two = {"otb": bench["otb"], "vot2018": bench["vot2018"]}
    local = evaluate(
        EvaluateSettings(
            ckpts, two, str(tmp_path / "local"), local=True, log_mlflow=False, progress=False, max_sequences=1
        )
    )

    run_id = _training_run(mlflow_server.uri, ckpts, tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "jobs.evaluate",
        "--run",
        run_id,
        "--epochs",
        "all",
        "--benchmark",
        f"otb={two['otb']}",
        "--benchmark",
        f"vot2018={two['vot2018']}",
        "--out",
        str(tmp_path / "ray"),
        "--workers",
        "2",
        "--ray-address",
        ray_cluster.address,
        "--max-sequences",
        "1",
        "--mlflow-uri",
        mlflow_server.uri,
        "--experiment",
        "eval-test",
        "--validation",
        "otb",
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=ray_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "ray" / "evaluation.json").read_text())

    # Two actors on the two nodes, each checkpoint loaded at most once per worker.
    timing = report["timing"]
    assert timing["workers"] == 2 and not timing["local"]
    assert len(timing["node_ids"]) == 2 and len(timing["worker_ids"]) == 2
    assert 3 <= timing["model_loads"] <= 6
    # Identical to the local loop: result files byte for byte, scores exactly.
    for name in ("checkpoint_e1", "checkpoint_e2", "checkpoint_e3"):
        assert result_files(tmp_path / "ray" / name) == result_files(tmp_path / "local" / name)
        assert result_files(tmp_path / "ray" / name)  # not vacuous
    for uri in ckpts:
        for b in two:
            for k in METRICS:
                assert report["scores"][uri][b].get(k) == local["scores"][uri][b].get(k), (uri, b, k)

    # The best epoch on the validation benchmark, computed by hand from the summaries.
    aucs = {e: local["scores"][u]["otb"]["success_auc"] for e, u in zip((1, 2, 3), ckpts, strict=True)}
    best_epoch = max(aucs, key=lambda e: (aucs[e], -e))
    assert report["best"]["epoch"] == best_epoch and report["best"]["metric"] == "success_auc"

    # MLflow: parent + one child per checkpoint, linked to the training run, with metrics and artifacts.
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    m = report["mlflow"]
    parent = client.get_run(m["parent_run_id"])
    assert parent.data.tags["best_epoch"] == str(best_epoch)
    assert parent.data.tags["best_checkpoint"] == ckpts[best_epoch - 1]
    assert parent.data.tags["ocean.training_run_id"] == run_id
    history = client.get_metric_history(parent.info.run_id, "otb.success_auc")
    assert sorted((h.step, h.value) for h in history) == sorted(aucs.items())
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/metric_vs_epoch.png" in parent_files and "plots/otb_success.png" in parent_files
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "evaluation.json",
        "per_sequence.csv",
    }
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3
    by_epoch = {int(c.data.tags["ocean.epoch"]): c for c in children}
    assert sorted(by_epoch) == [1, 2, 3]
    for epoch, child in by_epoch.items():
        tags = child.data.tags
        # data manifest -> training run -> checkpoint -> this evaluation
        assert tags["ocean.training_run_id"] == run_id
        assert tags["ocean.manifest_sha256"] == MANIFEST
        assert tags["ocean.checkpoint_uri"] == ckpts[epoch - 1]
        assert (tags.get("is_best") == "true") == (epoch == best_epoch)
        assert child.data.metrics["otb.success_auc"] == aucs[epoch]
        assert (
            child.data.metrics["vot2018.robustness"]
            == local["scores"][ckpts[epoch - 1]]["vot2018"]["robustness"]
        )
        assert child.data.params["tracker.otb.penalty_k"] == "0.087"
        files = {a.path for a in client.list_artifacts(child.info.run_id, "evaluation/otb")}
        assert {
            "evaluation/otb/summary.json",
            "evaluation/otb/per_sequence.csv",
            "evaluation/otb/success.png",
            "evaluation/otb/precision.png",
            "evaluation/otb/results",
        } <= files


@pytest.mark.slow
def test_links_from_checkpoint_entries_and_from_the_training_folder(mlflow_server, bench, tmp_path):
    """Without --run: a checkpoint's own ``mlflow_run_id`` / ``manifest_sha256`` entries, or the training
    run whose ``ocean.out`` tag is the folder holding ``checkpoints/epoch-NNNN.pt`` (pipelines.train)."""
    from mlflow import MlflowClient

    train_out = tmp_path / "train-out"
    found_by_folder = train_out / "checkpoints" / "epoch-0002.pt"
    own_entries = tmp_path / "elsewhere" / "model.pt"
    torch.manual_seed(7)
    net = build_model(smoke().model)
    save_checkpoint(str(found_by_folder), net, smoke(), epoch=2)
    save_checkpoint(
        str(own_entries),
        net,
        smoke(),
        epoch=5,
        mlflow_run_id="run-in-another-store",
        manifest_sha256="ef" * 32,
    )
    run_id = _training_run(mlflow_server.uri, [str(found_by_folder)], tmp_path, {"ocean.out": str(train_out)})
    report = evaluate(
        EvaluateSettings(
            [str(found_by_folder), str(own_entries)],
            {"otb": bench["otb"]},
            str(tmp_path / "o"),
            local=True,
            max_sequences=1,
            mlflow_uri=mlflow_server.uri,
            experiment="eval-links",
            progress=False,
        )
    )
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    by_folder = client.get_run(report["mlflow"]["child_run_ids"][str(found_by_folder)]).data.tags
    assert by_folder["ocean.training_run_id"] == run_id and by_folder["ocean.manifest_sha256"] == MANIFEST
    assert by_folder["ocean.epoch"] == "2"
    own = client.get_run(report["mlflow"]["child_run_ids"][str(own_entries)]).data.tags
    assert (
        own["ocean.training_run_id"] == "run-in-another-store" and own["ocean.manifest_sha256"] == "ef" * 32
    )
    # the same weights give the same numbers under both names
    s = report["scores"]
    assert s[str(found_by_folder)]["otb"]["success_auc"] == s[str(own_entries)]["otb"]["success_auc"]


@pytest.mark.slow
def test_results_to_s3(s3_env, bench, ckpts, tmp_path):
    report = evaluate(
        EvaluateSettings(
            ckpts[:1],
            {"otb": bench["otb"]},
            "s3://ocean-runs/eval-test",
            local=True,
            max_sequences=1,
            log_mlflow=False,
            progress=False,
        )
    )
    keys = set(s3_env.keys("ocean-runs", "eval-test/"))
    seq = next(iter(report["scores"][ckpts[0]]["otb"]["per_sequence"]))
    assert {
        f"eval-test/checkpoint_e1/otb/results/{seq}.txt",
        "eval-test/checkpoint_e1/otb/summary.json",
        "eval-test/checkpoint_e1/otb/success.png",
        "eval-test/evaluation.json",
        "eval-test/per_sequence.csv",
    } <= keys
    summary = json.loads(
        s3_env.client()
        .get_object(Bucket="ocean-runs", Key="eval-test/checkpoint_e1/otb/summary.json")["Body"]
        .read()
    )
    assert summary["success_auc"] == report["scores"][ckpts[0]]["otb"]["success_auc"]
    assert report["checkpoints"][ckpts[0]]["dir"] == "s3://ocean-runs/eval-test/checkpoint_e1"
    assert all(p.startswith("s3://ocean-runs/eval-test/") for p in report["plots"])


def test_workers_fit_the_cluster(capsys):
    from pipelines.eval_workers import ClusterTooSmall, _fitting_workers

    assert _fitting_workers({"CPU": 8.0}, workers=2, n_items=10, cpus_per_worker=1.0, gpus_per_worker=0.0) == 2
    # capped by the cluster's CPUs and by the items, with a note on stderr
    assert _fitting_workers({"CPU": 3.0}, workers=4, n_items=10, cpus_per_worker=1.5, gpus_per_worker=0.0) == 2
    assert "2 workers (cluster CPUs 3 / 1.5 per worker, 10 items)" in capsys.readouterr().err
    assert _fitting_workers({"CPU": 8.0}, workers=4, n_items=3, cpus_per_worker=1.0, gpus_per_worker=0.0) == 3
    assert _fitting_workers({"CPU": 8.0, "GPU": 1.0}, 4, 10, cpus_per_worker=1.0, gpus_per_worker=1.0) == 1
    with pytest.raises(ClusterTooSmall, match="fewer than cpus_per_worker=4"):
        _fitting_workers({"CPU": 2.0}, 2, 10, cpus_per_worker=4.0, gpus_per_worker=0.0)
    with pytest.raises(ClusterTooSmall, match="no GPU"):
        _fitting_workers({"CPU": 8.0}, 2, 10, cpus_per_worker=1.0, gpus_per_worker=1.0)
