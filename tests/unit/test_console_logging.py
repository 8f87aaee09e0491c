"""The console: ``--log-level`` / ``-q`` / ``$OCEAN_LOG_LEVEL`` on every command, the line format, records
forwarded from Ray workers, and rank 0's training progress lines with ETAs (the real forwarding through Ray:
tests/integration/test_train_cluster.py)."""

from __future__ import annotations

import io
import logging

import pytest

from jobs.cli import build_parser, main
from jobs.common import setup_logging
from pipelines.console import emit
from pipelines.progress import TrainProgress, duration


def test_every_command_takes_log_level_and_quiet():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert "--log-level {debug,info,warning,error}" in text and "-q, --quiet" in text, name


def test_quiet_and_log_level_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config", "-q", "--log-level", "debug"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("flags, env, shown", [
    ([], None, {"INFO", "WARNING"}),
    (["-q"], None, {"WARNING"}),
    (["--log-level", "error"], None, set()),
    (["--log-level", "DEBUG"], None, {"DEBUG", "INFO", "WARNING"}),
    ([], "warning", {"WARNING"}),
    (["--log-level", "info"], "error", {"INFO", "WARNING"}),  # the flag wins over the environment
])
def test_levels_from_flags_and_environment(flags, env, shown, monkeypatch, capsys):
    import jobs.config

    def run(args):
        log = logging.getLogger("pipelines.somewhere")
        for level in ("DEBUG", "INFO", "WARNING"):
            log.log(getattr(logging, level), f"a {level} line")
        logging.getLogger("urllib3.connectionpool").info("a library's info line")  # never on the console
        print('{"the": "output"}')

    if env is None:
        monkeypatch.delenv("OCEAN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("OCEAN_LOG_LEVEL", env)
    monkeypatch.setattr(jobs.config, "run", run)
    assert main(["config", *flags]) == 0
    out, err = capsys.readouterr()
    assert out == '{"the": "output"}\n'  # the command's output stays on stdout at every level
    assert {level for level in ("DEBUG", "INFO", "WARNING") if f"a {level} line" in err} == shown
    assert "library" not in err


def test_a_bad_environment_level_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("OCEAN_LOG_LEVEL", "loud")
    assert main(["config"]) == 2
    assert capsys.readouterr().err == "ocean config: error: OCEAN_LOG_LEVEL='loud': one of debug, info, warning, error\n"


def test_console_format_names_the_logger_the_command_and_the_worker():
    buf = io.StringIO()
    setup_logging("info", "train", stream=buf)
    logging.getLogger("jobs.train").error("training diverged: step 3")
    logging.getLogger("pipelines.train").info("500 prepared pairs")
    emit(("pipelines.train_loop", logging.INFO, "resuming at epoch 1 from /r/epoch-0001.pt", "rank 0", 1e9))
    emit(("pipelines.train_loop", logging.DEBUG, "not shown at info", "rank 1", 1e9))
    lines = [line.split(" ", 1)[1] for line in buf.getvalue().splitlines()]  # without the HH:MM:SS
    assert lines == ["ERROR ocean train: training diverged: step 3", "train: 500 prepared pairs",
                     "train_loop[rank 0]: resuming at epoch 1 from /r/epoch-0001.pt"]
    setup_logging("warning", "train", stream=buf)  # again: replaces the handler, no duplicate lines
    logging.getLogger("pipelines.x").warning("once")
    assert buf.getvalue().count("once") == 1


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_lines_every_interval_with_epoch_and_run_eta():
    clock = Clock()
    p = TrainProgress(start=1, epochs=4, every_s=10.0, clock=clock)  # resumed: epochs 2..4 left
    p.begin_epoch(1, steps=100)
    lines = []
    for step in range(100):
        clock.t += 0.5  # 2 steps/s
        lines.append(p.step(step))
    shown = [line for line in lines if line]
    assert len(shown) == 5  # one line per 10 s of a 50 s epoch
    assert shown[0] == "epoch 2/4 step 20/100 (20%) 2.00 steps/s; epoch ETA 40s, run ETA 2m20s"
    clock.t += 5.0  # checkpoint and report
    assert p.end_epoch() == "took 55s; run ETA 1m50s"  # 2 epochs left x 55 s
    p.begin_epoch(2, steps=100)
    clock.t += 10.0
    assert p.step(9) == "epoch 3/4 step 10/100 (10%) 1.00 steps/s; epoch ETA 1m30s, run ETA 2m25s"
    clock.t += 90.0
    p.end_epoch()
    p.begin_epoch(3, steps=100)
    clock.t += 60.0
    assert p.end_epoch() == "took 1m00s; run done"


def test_durations():
    assert [duration(s) for s in (0, 41.6, 60, 185, 7620, -3)] == ["0s", "42s", "1m00s", "3m05s", "2h07m", "0s"]


@pytest.mark.parametrize("env, shown", [("info", True), ("warning", False)])
def test_a_worker_without_a_forwarding_driver_logs_to_its_stderr_at_the_environment_level(env, shown):
    """No Ray (or no driver forwarding): the worker's own stderr, ``$OCEAN_LOG_LEVEL``, and no Ray started."""
    import os
    import subprocess
    import sys

    code = ("import logging, ray\nfrom pipelines.console import worker_logging\nworker_logging('rank 3')\n"
            "logging.getLogger('pipelines.x').info('an info line')\nlogging.getLogger('ocean.y').warning('a warning')\n"
            "print('ray started' if ray.is_initialized() else 'no ray')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OCEAN_LOG_LEVEL": env})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "no ray\n"
    assert ("INFO pipelines.x: an info line" in out.stderr) == shown and "WARNING ocean.y: a warning" in out.stderr
