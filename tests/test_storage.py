"""ocean.storage on local paths (the S3 path is exercised against a real server in test_infra.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ocean import storage

REPO = Path(__file__).resolve().parent.parent


def test_write_read_exists_round_trip_and_no_temporary_left(tmp_path):
    uri = str(tmp_path / "a" / "b" / "blob.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00\x01payload")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"\x00\x01payload"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["blob.bin"]  # the .tmp-PID was renamed


def test_missing_file_names_the_uri(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.read_bytes(str(tmp_path / "missing.bin"))


def test_join_keeps_a_uri_query_at_the_end():
    assert storage.join("s3://bucket/run?endpoint_override=127.0.0.1:9000", "ckpt", "/e1.pt") == \
        "s3://bucket/run/ckpt/e1.pt?endpoint_override=127.0.0.1:9000"
    assert storage.join("/tmp/x", "y", "z.pt") == "/tmp/x/y/z.pt"


def test_resolve_rejects_unknown_schemes():
    with pytest.raises(ValueError, match="unsupported URI scheme 'http'"):
        storage.resolve("http://example.com/weights.pt")


def test_torch_round_trip_is_weights_only(tmp_path):
    import torch

    uri = f"file://{tmp_path}/t.pt"
    storage.save_torch({"w": torch.arange(6.0).reshape(2, 3), "epoch": 3}, uri)
    back = storage.load_torch(uri)
    assert back["epoch"] == 3 and torch.equal(back["w"], torch.arange(6.0).reshape(2, 3))

    import argparse

    storage.save_torch({"obj": argparse.Namespace(a=1)}, uri)  # weights_only=True refuses arbitrary classes
    with pytest.raises(Exception, match="(?i)weights_only|unsupported"):
        storage.load_torch(uri)


def test_importing_storage_does_not_load_torch():
    """Ray data tasks read and write bytes through this module; pulling in torch there costs ~1.5 s and
    ~300 MB per worker process (measured by the issue 5 input-pipeline work)."""
    code = "import sys, ocean.storage; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
