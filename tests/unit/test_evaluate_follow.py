"""``ocean evaluate --run RUN --follow`` (pipelines/eval_follow.py): a training run's checkpoints are listed
and evaluated as they appear while the run is still RUNNING. No training here: a thread writes checkpoint
files into a run's output folder one after another, as rank 0 does, and an MLflow run (sqlite store) says
RUNNING until the thread ends it; the evaluation is the local loop."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from jobs.cli import main as cli_main
from pipelines.eval_follow import FollowSettings, follow_run
from pipelines.eval_lineage import LineageError, checkpoints_of_run
from pipelines.evaluate import EvaluateSettings, evaluate


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """``(tracking uri, experiment id)``: one sqlite MLflow store for the module (creating one takes seconds)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return uri, MlflowClient(uri).create_experiment("ocean-train")


def _training_run(store: tuple[str, str], tmp_path: Path, epochs: int) -> tuple[str, str, Path]:
    """``(tracking uri, run id, training output)``: an MLflow run as ``ocean train`` opens it (status
    RUNNING, ``ocean.out`` tag, ``optim.epochs`` param) and no checkpoint yet."""
    from mlflow import MlflowClient

    uri, exp = store
    out = tmp_path / "train"
    client = MlflowClient(uri)
    run = client.create_run(exp, tags={"ocean.out": str(out)})
    client.log_param(run.info.run_id, "optim.epochs", str(epochs))
    return uri, run.info.run_id, out


def _write_checkpoint(src: str, out: Path, epoch: int) -> None:
    """Rank 0's way: a temporary file renamed into place, so a listed file is whole."""
    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"epoch-{epoch:04d}.pt.tmp-1"
    shutil.copyfile(src, tmp)
    tmp.rename(folder / f"epoch-{epoch:04d}.pt")


class _Trainer(threading.Thread):
    """Writes epoch 1, waits until the evaluation has stored epoch 1's results, writes epoch 2, ... and
    finally marks the run FINISHED: each checkpoint appears only after the previous one was evaluated."""

    def __init__(self, ckpts: list[str], out: Path, eval_out: Path, uri: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.ckpts, self.out, self.eval_out, self.uri, self.run_id = ckpts, out, eval_out, uri, run_id
        self.written: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from mlflow import MlflowClient

        try:
            for epoch, src in enumerate(self.ckpts, start=1):
                _write_checkpoint(src, self.out, epoch)
                self.written.append(epoch)
                summary = self.eval_out / f"epoch-{epoch:04d}" / "otb" / "summary.json"
                deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
                while not summary.exists():
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"epoch {epoch} was never evaluated")
                    time.sleep(0.05)
            MlflowClient(self.uri).set_terminated(self.run_id, "FINISHED")
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_follow_evaluates_checkpoints_as_they_appear(store, bench, ckpts, tmp_path, monkeypatch, capsys):
    import pipelines.eval_follow as eval_follow

    uri, run_id, train_out = _training_run(store, tmp_path, epochs=5)  # the run ends early, after epoch 3
    eval_out = tmp_path / "eval"
    with pytest.raises(LineageError, match="logged no checkpoint"):  # nothing yet: a plain --run says so
        checkpoints_of_run(uri, run_id)
    rounds: list[tuple[list[int], dict]] = []

    def recording(settings):  # the real evaluation, each round's epochs and timing kept
        report = evaluate(settings)
        rounds.append(([int(Path(c).stem.split("-")[1]) for c in settings.checkpoints], report["timing"]))
        return report

    monkeypatch.setattr(eval_follow, "evaluate", recording)
    trainer = _Trainer(ckpts, train_out, eval_out, uri, run_id)
    trainer.start()
    code = cli_main(["evaluate", "--run", run_id, "--follow", "--poll", "0.05", "--benchmark", f"otb={bench['otb']}",
                     "--out", str(eval_out), "--local", "--max-sequences", "1", "--validation", "otb",
                     "--mlflow-uri", uri, "--no-mlflow", "-q"])
    trainer.join(timeout=120)
    assert code == 0 and trainer.error is None and trainer.written == [1, 2, 3]
    # one round per checkpoint as it appeared (each tracked once), then one last round over all of them once
    # the run had ended, which tracks nothing again (and alone logs to MLflow: the next test)
    assert [epochs for epochs, _ in rounds] == [[1], [2], [3], [1, 2, 3]]
    assert [t["sequences_tracked"] for _, t in rounds] == [1, 1, 1, 0] and rounds[-1][1]["sequences_reused"] == 3
    out = capsys.readouterr().out
    assert "followed run" in out and "[[1], [2], [3]]" in out and "stopped: ended" in out
    saved = json.loads((eval_out / "evaluation.json").read_text())
    assert sorted(c["epoch"] for c in saved["checkpoints"].values()) == [1, 2, 3]
    assert saved["best"]["epoch"] in (1, 2, 3) and (eval_out / "plots" / "metric_vs_epoch.png").exists()


def test_follow_stops_at_the_requested_epochs_and_on_idle(store, bench, ckpts, tmp_path):
    uri, run_id, train_out = _training_run(store, tmp_path, epochs=3)
    calls: list[list[str]] = []

    def fake_evaluate(settings):  # only which checkpoints each round evaluates, and whether it logs
        calls.append([Path(c).name for c in settings.checkpoints] + (["mlflow"] if settings.log_mlflow else []))
        return {"checkpoints": {}}

    template = EvaluateSettings([], {"otb": bench["otb"]}, str(tmp_path / "e"), local=True, mlflow_uri=uri)
    _write_checkpoint(ckpts[0], train_out, 1)
    _write_checkpoint(ckpts[1], train_out, 2)
    # --epochs 2: complete as soon as epoch 2 is there, while the run is still RUNNING
    report = follow_run(FollowSettings(uri, run_id, epochs=[2], poll_s=0), template, evaluate_fn=fake_evaluate)
    assert report["follow"]["stopped"] == "complete" and calls == [["epoch-0002.pt", "mlflow"]]
    # no new checkpoint for longer than idle_s (a clock that jumps): stop with what was evaluated
    calls.clear()
    ticks = iter(range(0, 10_000, 100))
    report = follow_run(FollowSettings(uri, run_id, poll_s=0, idle_s=150), template, evaluate_fn=fake_evaluate,
                        sleep=lambda s: None, clock=lambda: next(ticks))
    assert report["follow"]["stopped"] == "idle"
    assert calls == [["epoch-0001.pt", "epoch-0002.pt"], ["epoch-0001.pt", "epoch-0002.pt", "mlflow"]]
    # Ctrl-C while waiting: finish with what has been evaluated; before any checkpoint: a clear error
    def interrupt(_s):
        raise KeyboardInterrupt

    empty_uri, empty_run, _ = _training_run(store, tmp_path / "other", epochs=3)
    with pytest.raises(LineageError, match="before any checkpoint appeared"):
        follow_run(FollowSettings(empty_uri, empty_run), template, evaluate_fn=fake_evaluate, sleep=interrupt)
    with pytest.raises(LineageError, match="no such MLflow run"):
        follow_run(FollowSettings(uri, "0" * 32), template, evaluate_fn=fake_evaluate)


def test_follow_usage_errors_are_one_line_and_status_2(bench, ckpts, tmp_path, capsys):
    base = ["evaluate", "--benchmark", f"otb={bench['otb']}", "--out", str(tmp_path / "o"), "--local"]
    assert cli_main([*base, "--checkpoint", ckpts[0], "--follow"]) == 2
    assert "--follow only applies with --run" in capsys.readouterr().err
    assert cli_main([*base, "--run", "abc", "--follow", "--poll", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert cli_main([*base, "--run", "abc", "--epochs", "5-3"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "the range ends before it starts" in errors[0]
