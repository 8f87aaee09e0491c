"""ocean.datapath over a LocalFileSystem-backed store (the same code an S3 store runs, without a server; the
S3 side: tests/integration/test_inputs_s3.py): the path type, the helpers, and the six dataset readers and
four benchmark readers giving the same result through it as through pathlib."""

from __future__ import annotations

import os
import pickle
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from ocean import datapath
from ocean.datapath import DataPath, LocalCopy, as_path, check_readable_folder, listdir, walk
from ocean.storage import InputLocationError, OutputStore


def _dp(path: Path) -> DataPath:
    store = OutputStore.from_uri(str(path))
    return DataPath(store, store.root)


@pytest.fixture
def tree(tmp_path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.txt").write_text("héllo\nworld\n")
    (tmp_path / "a" / "b" / "y.jpg").write_bytes(b"\xff\xd8data")
    (tmp_path / "a" / "b" / "z.JPG").write_bytes(b"zz")
    (tmp_path / "c.csv").write_text("1,2\n3,4\n")
    return tmp_path


def test_pure_path_parts_match_pathlib(tree):
    root = _dp(tree)
    p = root / "a" / "b/y.jpg"
    q = tree / "a" / "b" / "y.jpg"
    assert (p.name, p.stem, p.suffix) == (q.name, q.stem, q.suffix)
    assert str(p) == str(q) and str(p.parent) == str(q.parent)
    assert p.relative_to(root) == PurePosixPath("a/b/y.jpg")
    assert root.relative_to(root) == PurePosixPath(".")
    assert root / "." == root and root / PurePosixPath(".") == root
    with pytest.raises(ValueError):
        root.relative_to(p)
    assert sorted([root / "b", root / "a"]) == [root / "a", root / "b"]
    assert pickle.loads(pickle.dumps(p)) == p


def test_queries_and_reads_match_pathlib(tree):
    root = _dp(tree)
    for rel in ("a", "a/b", "a/x.txt", "a/b/y.jpg", "nope", "a/nope/deeper", "c.csv"):
        p, q = root / rel, tree / rel
        assert (p.is_dir(), p.is_file(), p.exists()) == (q.is_dir(), q.is_file(), q.exists()), rel
    assert [c.name for c in (root / "a").iterdir()] == sorted(os.listdir(tree / "a"))
    assert sorted(listdir(root / "a" / "b")) == sorted(listdir(tree / "a" / "b"))
    assert [c.name for c in (root / "a" / "b").glob("*.jpg")] == ["y.jpg"]
    assert (root / "a" / "x.txt").read_text() == "héllo\nworld\n"
    assert (root / "a" / "b" / "y.jpg").read_bytes() == b"\xff\xd8data"
    with (root / "c.csv").open("r", newline="") as f:
        assert f.read() == "1,2\n3,4\n"
    with pytest.raises(FileNotFoundError):
        list((root / "nope").iterdir())
    with pytest.raises(FileNotFoundError):
        (root / "nope.txt").read_bytes()
    with pytest.raises(ValueError):
        (root / "c.csv").open("wb")


def test_walk_matches_os_walk(tree):
    def norm(rows, base):
        return [(str(PurePosixPath(os.path.relpath(str(d), base))), sorted(dn), sorted(fn)) for d, dn, fn in rows]

    mine = []
    for d, dn, fn in walk(_dp(tree)):
        dn.sort()
        mine.append((d, dn, fn))
    ref = []
    for d, dn, fn in os.walk(tree):
        dn.sort()
        ref.append((d, list(dn), fn))
    assert norm(mine, str(tree)) == norm(ref, str(tree))
    assert [type(d) for d, _, _ in walk(tree)] == [type(tree)] * len(ref)


def test_listing_is_cached_per_folder_and_is_a_snapshot(tree):
    datapath.clear_listing_cache()
    root = _dp(tree)
    assert (root / "a" / "x.txt").is_file()
    (tree / "a" / "x.txt").unlink()  # gone after the listing: still listed, reading it raises
    assert (root / "a" / "x.txt").is_file()
    with pytest.raises(FileNotFoundError):
        (root / "a" / "x.txt").read_bytes()
    datapath.clear_listing_cache()
    assert not (root / "a" / "x.txt").is_file()


def test_as_path_and_local_copy(tree):
    assert as_path(str(tree)) == tree and isinstance(as_path(f"file://{tree}"), Path)
    p = _dp(tree) / "a" / "b" / "y.jpg"
    assert as_path(p) is p
    with LocalCopy(p) as local:
        assert local != str(p) and Path(local).read_bytes() == b"\xff\xd8data"
    assert not Path(local).exists()  # the temporary copy is gone
    with LocalCopy(tree / "c.csv") as local:  # a local path is used in place
        assert local == str(tree / "c.csv")
    assert (tree / "c.csv").exists()
    with pytest.raises(FileNotFoundError):
        LocalCopy(_dp(tree) / "missing.mp4")


def test_check_readable_folder_local(tree):
    assert check_readable_folder(str(tree), "x: root") == tree
    with pytest.raises(InputLocationError, match=r"^x: root .*nowhere is not a folder$"):
        check_readable_folder(str(tree / "nowhere"), "x: root")
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        check_readable_folder("gs://b/p", "x: root")


def _tracks_digest(tracks) -> list:
    return [(t.video, t.track_id, [(f.frame_id, f.path, f.video, f.timestamp_ms) for f in t.frames],
             np.asarray(t.boxes_xyxy).tolist(), np.asarray(t.present).tolist(), t.image_size, t.meta) for t in tracks]


def test_dataset_readers_read_the_same_through_a_datapath(synth):
    from data_prep.readers import RejectionLog, read_tracks

    root, _ = synth
    for name in ("got10k", "lasot", "vid", "det", "coco", "ytbb"):
        logs = RejectionLog(), RejectionLog()
        ref = _tracks_digest(read_tracks(name, root / name, on_reject=logs[0]))
        got = _tracks_digest(read_tracks(name, _dp(root / name), on_reject=logs[1]))
        assert ref and got == ref, name
        assert [(r.reason, r.source) for r in logs[1].items] == [(r.reason, r.source) for r in logs[0].items], name


def test_benchmark_readers_read_the_same_through_a_datapath(bench):
    from ocean.benchmarks.readers import read_benchmark
    from ocean.benchmarks.sequence import read_image_size

    for name, root in bench.items():
        ref, got = read_benchmark(name, Path(root)), read_benchmark(name, _dp(Path(root)))
        assert [s.name for s in got] == [s.name for s in ref] and ref, name
        for a, b in zip(ref, got, strict=True):
            assert [str(f) for f in b.frames] == [str(f) for f in a.frames]
            assert np.array_equal(a.gt_xywh, b.gt_xywh, equal_nan=True) and np.array_equal(a.present, b.present)
            assert read_image_size(b.frames[0]) == read_image_size(a.frames[0])
