"""Per-sequence results on the output and re-runs that reuse them (pipelines.eval_store), with the local loop;
a killed Ray actor, an interrupted run and S3 output: tests/integration/test_evaluate_resume.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from benchmark_trees import METRICS

from ocean.benchmarks import read_benchmark
from ocean.config import TrackerConfig
from pipelines.eval_store import item_key, key_inputs, sequence_identity
from pipelines.eval_workers import WorkItem
from pipelines.evaluate import EvaluateSettings, evaluate


def stored(out: Path) -> dict[str, bytes]:
    """The result files under ``out`` (GOT-10k timing files are wall-clock: left out) and the key of each
    record."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*/results/**/*.txt"))
             if not p.name.endswith("_time.txt")}
    keys = {str(p.relative_to(out)): json.loads(p.read_text())["key"] for p in out.glob("*/*/sequences/*.json")}
    return {**files, **keys}


def test_the_key_follows_checkpoint_content_tracker_sequence_and_device(bench, tmp_path):
    seq = read_benchmark("otb", Path(bench["otb"]))[0]
    moved = tmp_path / "elsewhere"
    shutil.copytree(bench["otb"], moved)
    same_elsewhere = next(s for s in read_benchmark("otb", moved) if s.name == seq.name)
    assert sequence_identity(same_elsewhere) == sequence_identity(seq)  # the root folder does not count

    default = TrackerConfig()

    def key(digest="a" * 64, tracker=default, s=seq, device="cpu"):
        return item_key(key_inputs(digest, WorkItem("ckpt.pt", "otb", s, tracker), device))

    base = key()
    assert base == key(s=same_elsewhere)
    assert key(digest="b" * 64) != base
    assert key(tracker=dataclasses.replace(TrackerConfig(), window_influence=0.3)) != base
    assert key(device="cuda") != base
    moved_gt = dataclasses.replace(seq, gt_xywh=seq.gt_xywh + 1.0)
    assert key(s=moved_gt) != base
    shorter = dataclasses.replace(seq, frames=seq.frames[:-1], gt_xywh=seq.gt_xywh[:-1], present=seq.present[:-1])
    assert key(s=shorter) != base


def test_a_rerun_tracks_only_what_is_missing_or_damaged(bench, ckpts, tmp_path):
    two = {"otb": bench["otb"], "vot2018": bench["vot2018"]}
    out = tmp_path / "eval"

    def run(**kw):
        return evaluate(EvaluateSettings(ckpts[:1], two, str(out), local=True, log_mlflow=False, progress=False, **kw))

    first = run()
    assert first["timing"]["sequences_tracked"] == 4 and first["timing"]["sequences_reused"] == 0
    files = stored(out)
    records = sorted(out.glob("checkpoint_e1/*/sequences/*.json"))
    assert len(records) == 4
    record = json.loads(records[0].read_text())
    assert record["key_inputs"]["checkpoint_sha256"] and record["files"]

    # an untouched output: nothing is tracked again, same scores and files
    again = run()
    assert again["timing"]["sequences_tracked"] == 0 and again["timing"]["sequences_reused"] == 4
    assert stored(out) == files

    # a missing record (a run stopped between result file and record) and a damaged result file
    (out / "checkpoint_e1" / "otb" / "sequences" / "Disc1.json").unlink()
    vot = next((out / "checkpoint_e1" / "vot2018" / "results" / "baseline").glob("*/*_001.txt"))
    vot.write_text("1\n")
    third = run()
    assert third["timing"]["sequences_tracked"] == 2 and third["timing"]["sequences_reused"] == 2
    assert stored(out) == files
    for b in two:
        for k in METRICS:
            assert third["scores"][ckpts[0]][b].get(k) == first["scores"][ckpts[0]][b].get(k), (b, k)
        assert third["scores"][ckpts[0]][b]["per_sequence"] == first["scores"][ckpts[0]][b]["per_sequence"]
    assert (out / "per_sequence.csv").read_text().count("\n") == 5

    # another tracker config is another key; --no-resume tracks everything again
    changed = run(tracker_overrides={"window_influence": 0.3})
    assert changed["timing"]["sequences_tracked"] == 4 and changed["timing"]["sequences_reused"] == 0
    assert run(resume=False)["timing"]["sequences_tracked"] == 4


def test_a_failed_sequence_is_not_stored_and_is_tracked_again(bench, ckpts, tmp_path):
    root = tmp_path / "otb"
    shutil.copytree(bench["otb"], root)
    frame = sorted((root / "Disc1" / "img").iterdir())[5]
    good = frame.read_bytes()
    frame.write_bytes(b"not a jpeg")
    out = tmp_path / "o"

    def run():
        return evaluate(EvaluateSettings(ckpts[:1], {"otb": str(root)}, str(out), local=True, log_mlflow=False,
                                         progress=False))

    broken = run()
    assert [f["sequence"] for f in broken["failed"]] == ["Disc1"]
    assert not (out / "checkpoint_e1" / "otb" / "sequences" / "Disc1.json").exists()
    assert not (out / "checkpoint_e1" / "otb" / "results" / "Disc1.txt").exists()
    frame.write_bytes(good)
    fixed = run()
    assert fixed["failed"] == [] and fixed["timing"]["sequences_tracked"] == 1
    assert fixed["timing"]["sequences_reused"] == 1
    assert fixed["scores"][ckpts[0]]["otb"]["num_sequences"] == 2
