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


def test_quickstart_refuses_a_workdir_holding_other_synthetic_data(tmp_path, capsys):
    """A quickstart whose WORKDIR/synthetic was written with another --scenes / --busy / --size / --seed
    would train on that data without a word: one line, exit status 2, nothing started."""
    import json

    synthetic = tmp_path / "w" / "synthetic"
    synthetic.mkdir(parents=True)
    # no "scenes": a manifest written before the option, read as scenes 1
    (synthetic / "synth_manifest.json").write_text(json.dumps({"seed": 0, "size": "small", "busy": 0.0}))
    same = ["--scenes", "1", "--busy", "0"]
    for argv, named in ((["--scenes", "4", "--busy", "0"], "scenes 1 (asked 4)"),
                        (["--scenes", "1", "--busy", "0.5"], "busy 0.0 (asked 0.5)"),
                        ([*same, "--seed", "3"], "seed 0 (asked 3)"), ([*same, "--size", "tiny"], "size small (asked tiny)")):
        assert main(["quickstart", "--workdir", str(tmp_path / "w"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ocean quickstart: error:") and named in err[0], err
    assert main(["quickstart", "--workdir", str(tmp_path / "w"), "--scenes", "40"]) == 2
    assert "--scenes 40" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["synthetic"]  # nothing else started


def test_the_quickstart_settings_match_the_synthetic_manifest(tmp_path):
    from data_prep.synthetic import generate
    from pipelines.quickstart import QuickstartSettings, synthetic_mismatch

    generate(tmp_path / "synthetic", seed=5, size="tiny", scenes=2, busy=0.25)
    same = QuickstartSettings(str(tmp_path), seed=5, size="tiny", scenes=2, busy=0.25)
    assert synthetic_mismatch(same) is None
    assert synthetic_mismatch(QuickstartSettings(str(tmp_path / "nothing-yet"))) is None
    other = QuickstartSettings(str(tmp_path), seed=5, size="tiny", scenes=1, busy=0.25)
    assert "scenes 2 (asked 1)" in synthetic_mismatch(other)


def test_the_quickstart_command_defaults_are_the_settings_defaults():
    from jobs.cli import build_parser
    from pipelines.quickstart import QuickstartSettings

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    args = sub.choices["quickstart"].parse_args([])
    assert (args.scenes, args.busy, args.size) == (QuickstartSettings.scenes, QuickstartSettings.busy,
                                                   QuickstartSettings.size)
