"""Paths made absolute on the driver, and a stopped command (SIGTERM / Ctrl-C): one line, 128 + signal, and
its MLflow run KILLED (issue 16, item 0)."""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import pytest

from jobs.common import absolute, call_command


def test_absolute_resolves_local_paths_and_keeps_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("pairs/") == str(tmp_path / "pairs")
    assert absolute("runs/checkpoints/epoch-0001.pt") == str(tmp_path / "runs/checkpoints/epoch-0001.pt")
    assert absolute("~/x") == str(Path.home() / "x")
    for uri in ("s3://ocean/pairs/v1", "file:///data/x", "models:/ocean@best", "runs:/abc123/model", None):
        assert absolute(uri) == uri


def test_sigterm_stops_a_command_with_one_line_and_128_plus_15(capsys):
    """The line comes as the signal arrives, before the command unwinds (``ray job stop`` SIGKILLs 3 s later,
    and a Ray Train run's teardown can take longer on a loaded machine), and only once."""
    during = []

    def run(_args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises before this ends
        finally:  # the unwinding: the line is out already
            during.append(capsys.readouterr().err)
        return 0

    before = signal.getsignal(signal.SIGTERM)
    try:
        assert call_command(run, argparse.Namespace(), "train") == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, before)
    assert during == ["ocean train: stopped by SIGTERM\n"]
    assert capsys.readouterr().err == ""


def test_ctrl_c_stops_a_command_with_130(capsys):
    def run(_args):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    try:
        assert call_command(run, argparse.Namespace(), "evaluate") == 130
    finally:
        signal.signal(signal.SIGTERM, before)
    assert "ocean evaluate: stopped by SIGINT" in capsys.readouterr().err


def test_run_logger_ends_killed_when_stopped_failed_on_error(tmp_path):
    from pipelines.raysession import JobStopped
    from pipelines.tracking import RunLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow 3.17 refuses a plain file store by default
    # SystemExit: Ray Train's Ctrl-C handler aborts the run and calls sys.exit(0) (ray_stack.md §4.4)
    for exc, status in ((JobStopped(signal.SIGTERM), "KILLED"), (KeyboardInterrupt(), "KILLED"),
                        (SystemExit(0), "KILLED"), (RuntimeError("boom"), "FAILED")):
        run = RunLogger.start(uri, "stop-test", "r")
        with pytest.raises(type(exc)):
            with run:
                raise exc
        assert RunLogger.attach(uri, run.run_id).status() == status


def test_wait_for_gpus_takes_seconds(capsys):
    """``--wait-for-gpus`` is checked before anything starts: a negative wait is one line and exit 2."""
    from jobs.cli import main

    assert main(["train", "--data", "pairs", "--out", "runs", "--gpu", "--wait-for-gpus", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "ocean train: error: --wait-for-gpus -1: seconds >= 0\n", err
