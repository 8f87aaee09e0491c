"""ocean.storage: the module functions and OutputStore against a real S3 server (SeaweedFS); on local paths:
tests/unit/test_storage_local.py."""

from __future__ import annotations

import pytest

from ocean import storage
from ocean.storage import OutputStore, StorageError


@pytest.mark.slow
def test_module_functions_and_output_store_on_s3(s3_env):
    uri = "s3://ocean-data/storage-test/run/blob.bin"
    storage.write_bytes(uri, b"\x00payload")
    assert storage.exists(uri) and storage.exists("s3://ocean-data/storage-test/run")  # a "folder" exists
    assert storage.read_bytes(uri) == b"\x00payload"
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.read_bytes("s3://ocean-data/storage-test/missing.bin")
    # the endpoint given in the URI (no AWS_ENDPOINT_URL in the worker's environment) reaches the same bucket
    host = s3_env.endpoint.split("://", 1)[1]
    explicit = f"s3://ocean-data/storage-test/run/blob.bin?endpoint_override={host}&scheme=http"
    env = {k: v for k, v in s3_env.env().items() if not k.startswith("AWS_ENDPOINT_URL")}
    store = OutputStore.from_uri("s3://ocean-data/storage-test?endpoint_override=" + host + "&scheme=http", env)
    assert store.read("run/blob.bin") == b"\x00payload" and store.exists("run/blob.bin")
    assert not store.exists("run") and store.read("run/none") is None
    store.write("run/other.bin", memoryview(b"mv"))
    assert storage.read_bytes(storage.join(explicit.replace("blob.bin", ""), "other.bin")) == b"mv"
    store.check_writable()
    store.delete("run/other.bin")
    store.delete("run/never-written.bin")  # deleting a missing object is not an error
    assert s3_env.keys("ocean-data", "storage-test/") == ["storage-test/run/blob.bin"]
    assert "ocean-test-secret" not in repr(store) and s3_env.access_key not in str(store)
    torch = pytest.importorskip("torch")
    storage.save_torch({"w": torch.ones(2)}, "s3://ocean-data/storage-test/t.pt")
    assert torch.equal(storage.load_torch("s3://ocean-data/storage-test/t.pt")["w"], torch.ones(2))


@pytest.mark.slow
def test_check_writable_names_a_missing_bucket_or_dead_endpoint_but_never_the_keys(s3_env, monkeypatch):
    with pytest.raises(StorageError, match="'no-such-bucket' does not exist") as missing:
        OutputStore.from_uri("s3://no-such-bucket/x").check_writable()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(StorageError, match="unreachable|cannot write") as dead:
        OutputStore.from_uri("s3://ocean-data/x").check_writable()
    for exc in (missing, dead):
        assert s3_env.secret_key not in str(exc.value) and s3_env.access_key not in str(exc.value)


@pytest.mark.slow
def test_wrong_keys_read_as_access_denied_not_as_an_unreachable_endpoint(s3_env, monkeypatch, tmp_path, pairs_dir,
                                                                       capsys):
    """SeaweedFS with an identities file (-s3.config): a wrong secret or an unknown key id is "access denied"
    wherever a location is checked or read; a dead endpoint is "unreachable"; a missing bucket is named."""
    from data_prep.pair_index import TrainingDataError, list_pair_files
    from ocean.checkpoint import CheckpointError, load_checkpoint
    from ocean.datapath import check_readable_folder
    from ocean.storage import InputLocationError

    storage.write_bytes("s3://ocean-data/denied/in/a.bin", b"x")
    for key, secret in ((s3_env.access_key, "wrong-secret"), ("nobody", "not-the-secret-7Qx")):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        with pytest.raises(StorageError, match=r"s3://ocean-runs/x \(endpoint .*\): S3 access denied: the endpoint "
                                               r"refused these credentials") as out:
            OutputStore.from_uri("s3://ocean-runs/x").check_writable()
        with pytest.raises(InputLocationError, match=r"got10k: dataset root s3://ocean-data/denied/in \(endpoint "
                                                     r".*\): S3 access denied") as inp:
            check_readable_folder("s3://ocean-data/denied/in", "got10k: dataset root")
        with pytest.raises(TrainingDataError, match=r"cannot list the pair records at s3://ocean-data/denied: "
                                                    r"S3 access denied"):
            list_pair_files("s3://ocean-data/denied")
        with pytest.raises(CheckpointError, match=r"checkpoint s3://ocean-data/denied/in/a.bin: cannot read it "
                                                  r"\(S3 access denied"):
            load_checkpoint("s3://ocean-data/denied/in/a.bin")
        for exc in (out, inp):
            assert "unreachable" not in str(exc.value) and secret not in str(exc.value)
        from jobs.cli import main  # training onto a store these keys cannot write: one line, exit 2, no Ray

        capsys.readouterr()
        assert main(["train", "--data", str(pairs_dir), "--out", "s3://ocean-runs/denied", "--preset", "smoke"]) == 2
        shown = capsys.readouterr().err  # the console: info lines (the batch plan), then the error line
        err = [ln for ln in shown.splitlines() if ln.startswith("ocean train: error:")]
        assert len(err) == 1 and err[0].startswith("ocean train: error: cannot use s3://ocean-runs/denied")
        assert "S3 access denied" in err[0] and secret not in shown and "Traceback" not in shown
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    with pytest.raises(InputLocationError, match=r"S3 bucket 'no-such-bucket' does not exist"):
        check_readable_folder("s3://no-such-bucket/in", "got10k: dataset root")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(StorageError, match=r"S3 endpoint unreachable: .*NETWORK_CONNECTION"):
        OutputStore.from_uri("s3://ocean-runs/x").check_writable()
    with pytest.raises(InputLocationError, match=r"S3 endpoint unreachable \(gave up after"):
        check_readable_folder("s3://ocean-data/denied/in", "got10k: dataset root")
