"""The `ocean` command line: every sub-command is listed, documented and reachable as `python -m jobs.X`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.cli import build_parser, main

COMMANDS = {"ablate", "config", "convert", "evaluate", "export", "info", "prepare", "quickstart", "score", "synth", "track",
            "train", "tune-tracker"}
COMMANDS |= {"vot-tracker"}  # the TraX entry point for the VOT toolkit (docs/toolkits.md)


def test_every_command_is_registered_with_help(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert len(parser.description or "") > 40, f"`ocean {name} --help` explains nothing"
        assert "usage: ocean " + name in text
    assert main([]) == 2  # no command: help and a usage error status


@pytest.mark.parametrize("module", ["jobs.prepare", "jobs.train", "jobs.evaluate", "jobs.tune_tracker",
                                    "jobs.ablate", "jobs.quickstart"])
def test_python_m_entry_points_take_the_same_arguments(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"usage: python -m {module}" in out.stdout


def test_quickstart_puts_runs_beside_the_pairs_on_object_storage():
    from pipelines.quickstart import sibling_uri

    assert sibling_uri("s3://bucket/ocean/pairs", "runs") == "s3://bucket/ocean/runs"
    assert sibling_uri("s3://bucket/pairs/", "runs") == "s3://bucket/runs"
    assert sibling_uri("s3://bucket", "runs") == "s3://bucket/runs"
    assert sibling_uri("s3://b/p?endpoint_override=127.0.0.1:9000&scheme=http", "runs") == \
        "s3://b/runs?endpoint_override=127.0.0.1:9000&scheme=http"
