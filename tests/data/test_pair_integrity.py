"""A damaged pair-record file is named with its reason: a damaged footer when the index is read, a sha256
that is not the manifest's when its rows are first read (once per file per process)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_prep import pair_index
from data_prep.pair_index import (
    TrainingDataError,
    list_pair_files,
    load_pair_index,
    manifest_digests,
    open_pair_index,
    read_pair_rows,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Pair records under ``shards/`` with a manifest that lists each file's sha256, as ``ocean prepare`` writes."""
    from pair_records import write_pairs

    root = tmp_path_factory.mktemp("prepared")
    write_pairs(root / "shards", {"got10k": 32, "coco": 16})
    shards = [{"path": f"shards/{p.name}", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
              for p in sorted((root / "shards").glob("*.parquet"))]
    (root / "manifest.json").write_text(json.dumps({"schema_version": 1, "shards": shards}))
    return root


def _copy(prepared: Path, dest: Path) -> Path:
    shutil.copytree(prepared, dest)
    pair_index._VERIFIED.clear()
    return dest


def _locations(index, f: int) -> np.ndarray:
    at = np.flatnonzero(index.file == f)[:4]
    return np.stack([index.file[at].astype(np.uint64), index.row_group[at].astype(np.uint64),
                     index.row[at].astype(np.uint64), index.keys[at]], 1)


def test_digests_follow_the_manifest(prepared, tmp_path):
    data = _copy(prepared, tmp_path / "d")
    fs, files = list_pair_files(str(data))
    digests = manifest_digests(str(data), files)
    assert digests == tuple(hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files)
    (data / "manifest.json").write_text('{"schema_version": 1}')  # no shard entries: nothing to check
    assert manifest_digests(str(data), files) == ()
    (data / "manifest.json").unlink()
    assert manifest_digests(str(data), files) == ()
    (data / "manifest.json").write_text("[1, 2")
    with pytest.raises(TrainingDataError, match="manifest.json: not a manifest"):
        manifest_digests(str(data), files)


def test_a_damaged_footer_names_the_file(prepared, tmp_path):
    data = _copy(prepared, tmp_path / "d")
    victim = sorted((data / "shards").glob("*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated: no valid footer
    fs, files = list_pair_files(str(data))
    with pytest.raises(TrainingDataError, match=rf"^pair-record file {victim}: cannot read it \(damaged parquet: "
                                                rf".*\); delete it and re-run `ocean prepare`"):
        load_pair_index(fs, files)


def test_changed_bytes_fail_the_sha256_check_once_per_process(prepared, tmp_path, monkeypatch):
    data = _copy(prepared, tmp_path / "d")
    fs, index = open_pair_index(str(data))
    assert len(index.sha256) == len(index.files) == 3 and all(index.sha256)
    ok = read_pair_rows(fs, index.files, _locations(index, 0), index.sha256)
    assert len(ok["pair_id"]) == 4 and (index.files[0], index.sha256[0]) in pair_index._VERIFIED
    victim = Path(index.files[1])
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)  # JPEG bytes zeroed: the footer still reads
    victim.write_bytes(bytes(raw))
    with pytest.raises(TrainingDataError, match=rf"^pair-record file {victim}: damaged or changed since `ocean "
                                                rf"prepare` wrote it \(sha256 [0-9a-f]{{16}}\.\.\. of {len(raw)} "
                                                rf"bytes, the manifest says {index.sha256[1][:16]}"):
        read_pair_rows(fs, index.files, _locations(index, 1), index.sha256)
    assert (index.files[1], index.sha256[1]) not in pair_index._VERIFIED
    read_pair_rows(fs, index.files, _locations(index, 1))  # without the manifest's digests nothing is checked
    # a file verified once in this process is not hashed again (the check costs one whole read per process)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(pair_index.hashlib, "sha256", lambda data=b"": calls.append(len(data)) or real(data))
    assert len(read_pair_rows(fs, index.files, _locations(index, 0), index.sha256)["pair_id"]) == 4
    assert calls == []
    pair_index._VERIFIED.clear()
    read_pair_rows(fs, index.files, _locations(index, 0), index.sha256)
    assert calls == [Path(index.files[0]).stat().st_size]


def test_the_cause_behind_a_ray_data_wrapper_is_found():
    from pipelines.train_input import failure_cause, training_data_error

    remote = ("ray::MapBatches(read_and_augment_task)() (pid=1, ip=x)\n  File \"a.py\", line 1, in f\n"
              "data_prep.pair_index.TrainingDataError: pair-record file /d/s.parquet: damaged\n\n"
              "The above exception was the direct cause of the following exception:\n"
              "ray.exceptions.UserCodeException: UDF failed to process a data block.")
    wrapper = RuntimeError(remote)
    assert str(training_data_error(wrapper)) == "pair-record file /d/s.parquet: damaged"
    assert failure_cause(wrapper) == "pair-record file /d/s.parquet: damaged"
    other = RuntimeError("ray::X()\npyarrow.lib.ArrowInvalid: Parquet magic bytes not found\n\nThe above ...")
    assert training_data_error(other) is None and failure_cause(other) == "ArrowInvalid: Parquet magic bytes not found"
    try:
        try:
            raise TrainingDataError("inner")
        except TrainingDataError as exc:
            raise ValueError("outer") from exc
    except ValueError as chained:
        assert str(training_data_error(chained)) == "inner"
