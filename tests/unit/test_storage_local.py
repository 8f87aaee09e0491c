"""ocean.storage: the module functions and OutputStore on local paths and their one URI parser (both against
a real S3 server: tests/integration/test_storage_s3.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ocean import storage
from ocean.storage import OutputStore, StorageError

REPO = Path(__file__).resolve().parents[2]


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


def test_output_store_parses_endpoints_and_never_shows_keys(tmp_path):
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9999", "AWS_ACCESS_KEY_ID": "AKIDTEST",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_DEFAULT_REGION": "eu-west-1"}
    s = OutputStore.from_uri("s3://bucket/some/prefix/", env)
    assert (s.kind, s.root, s.bucket, s.endpoint, s.scheme, s.region) == (
        "s3", "bucket/some/prefix", "bucket", "127.0.0.1:9999", "http", "eu-west-1")
    assert "s3cr3t" not in repr(s) and "AKIDTEST" not in repr(s) and "s3cr3t" not in str(s)
    q = OutputStore.from_uri("s3://b/p?endpoint_override=host:1234&scheme=https&region=r1", env)
    assert (q.endpoint, q.scheme, q.region, q.uri) == ("host:1234", "https", "r1", "s3://b/p")
    local = OutputStore.from_uri(str(tmp_path / "x"), env)
    assert local.kind == "local" and local.root == str(tmp_path / "x")
    local.write("a/b.bin", b"123")
    assert local.read("a/b.bin") == b"123" and local.read("a/none") is None
    assert sorted(p.name for p in (tmp_path / "x" / "a").iterdir()) == ["b.bin"]  # no temporary left over
    with pytest.raises(ValueError, match="unsupported"):
        OutputStore.from_uri("gs://bucket/x", env)


def _options(fs) -> dict:
    """The options a pyarrow S3FileSystem was built with (what it pickles)."""
    return fs.__reduce__()[1][0]


def test_one_parser_serves_the_module_functions_and_the_output_store(monkeypatch):
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9999", "AWS_ACCESS_KEY_ID": "AKIDTEST",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_DEFAULT_REGION": "eu-west-1"}
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for uri in ("s3://bucket/run/ckpt/e1.pt", "s3://b/p/x.bin?endpoint_override=host:1234&scheme=http&region=r1",
                "s3://b/p?endpoint_override=host:1234"):
        fs, path = storage.resolve(uri)
        store = OutputStore.from_uri(uri)
        assert path == store.root
        got = _options(fs)
        want = _options(store.filesystem())
        assert got == want
        assert (got["endpoint_override"], got["scheme"], got["region"]) == (store.endpoint, store.scheme, store.region)
        assert got["access_key"] == "AKIDTEST" and got["connect_timeout"] == storage.CONNECT_TIMEOUT_S
    # the endpoint in the URI wins over the environment's; without &scheme= it is https, as in pyarrow's URIs
    assert OutputStore.from_uri("s3://b/p?endpoint_override=host:1234").scheme == "https"
    assert OutputStore.from_uri("s3://b/p?endpoint_override=host:1234&scheme=http").scheme == "http"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "127.0.0.1:7777")  # the S3-specific variable first; bare = http
    s = OutputStore.from_uri("s3://b/p")
    assert (s.endpoint, s.scheme) == ("127.0.0.1:7777", "http")
    opts = _options(storage.s3_filesystem())
    assert (opts["endpoint_override"], opts["scheme"], opts["region"]) == ("127.0.0.1:7777", "http", "eu-west-1")
    assert _options(storage.s3_filesystem("https://h:1", "r2"))["scheme"] == "https"
    with pytest.raises(ValueError, match="no bucket"):
        storage.resolve("s3:///x")


def test_local_paths_and_file_uris_resolve_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for uri in ("link/a.bin", str(tmp_path / "link" / "a.bin"), f"file://{tmp_path}/link/a.bin"):
        fs, path = storage.resolve(uri)
        assert path == str(tmp_path / "real" / "a.bin") == OutputStore.from_uri(uri).root
        assert type(fs).__name__ == "LocalFileSystem"
    storage.write_bytes(f"file://{tmp_path}/link/a.bin", b"x")
    assert (tmp_path / "real" / "a.bin").read_bytes() == b"x"
    assert storage.exists(str(tmp_path / "real")) and not OutputStore.from_uri(str(tmp_path)).exists("real")


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out" / "blob.bin"
    with pytest.raises(TypeError):
        storage.write_bytes(str(target), object())  # not bytes-like: fails inside the write
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    store = OutputStore.from_uri(str(tmp_path / "out"))
    with pytest.raises(TypeError):
        store.write("blob.bin", object())
    assert list((tmp_path / "out").iterdir()) == []
    store.write("blob.bin", b"ok")
    assert storage.read_bytes(str(target)) == b"ok"


def test_check_writable_on_a_local_folder(tmp_path):
    OutputStore.from_uri(str(tmp_path / "new" / "dir")).check_writable()
    assert list((tmp_path / "new" / "dir").iterdir()) == []  # the probe is gone
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match="cannot write to"):
        OutputStore.from_uri(str(tmp_path / "file" / "sub")).check_writable()
