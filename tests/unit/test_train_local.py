"""Training pipeline without Ray: the MLflow helpers and the stream's batch function (real Ray Train runs:
tests/integration/test_train_cluster.py; the data path's own tests: tests/data/test_pair_index.py,
tests/data/test_epochs.py)."""

from __future__ import annotations

import numpy as np

from data_prep.epochs import batch_plan, epoch_share, items_batch, read_and_augment, stream_items, work_item
from data_prep.pair_index import list_pair_files, load_pair_index
from ocean.config import AugmentConfig, smoke
from pipelines import tracking


def test_stream_task_is_the_batch_function(pairs_dir):
    """The Ray Data task function (malloc tuned for large buffers, OpenCV on one thread) returns what the data
    path's ``read_and_augment`` returns for the same work item with OpenCV's default threads."""
    import cv2

    from pipelines.train_input import read_and_augment_task

    fs, files = list_pair_files(str(pairs_dir))
    index = load_pair_index(fs, files)
    share = epoch_share(index, {"got10k": 16}, 1, 3, 0, batch_plan(8, 1), item_pairs=100)
    item = work_item(index, share, 0)
    batch = items_batch([item])
    kwargs = {"files": index.files, "filesystem": fs, "augment": AugmentConfig().__dict__, "seed": 1,
              "exemplar_size": 127, "search_size": 255}
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        want = read_and_augment(batch, **kwargs)
        got = read_and_augment_task(batch, **kwargs)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(threads)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


def test_head_start_decodes_its_items_here_then_hands_over_in_order(pairs_dir):
    """``HeadStart`` without Ray: its local items come out decoded in this process, byte-equal to the batch
    function, then the remote blocks in order; a failure of either side is raised where its block would have
    been (a local one before any later block), and closing part-way stops both threads."""
    import threading

    import pytest

    from data_prep.pair_index import TrainingDataError
    from pipelines.stream_start import HeadStart

    fs, files = list_pair_files(str(pairs_dir))
    index = load_pair_index(fs, files)
    share = epoch_share(index, {"got10k": 24}, 1, 0, 0, batch_plan(8, 1), item_pairs=100)
    items = stream_items(index, [share], 8, split_first=True)  # pieces of 8, 8 and 8 pairs
    assert len(items) == 3
    kwargs = {"files": index.files, "filesystem": fs, "augment": AugmentConfig().__dict__, "seed": 1,
              "exemplar_size": 127, "search_size": 255, "digests": index.sha256}
    want = [read_and_augment(items_batch([it]), **kwargs) for it in items]
    remote = [{"pair_key": np.arange(3)}, {"pair_key": np.arange(2)}]

    head = HeadStart(items[:2], iter(remote), kwargs)
    got = list(head)
    assert head.served_locally == 2 and len(got) == 4 and got[2] is remote[0] and got[3] is remote[1]
    for g, w in zip(got[:2], want[:2], strict=True):
        assert set(g) == set(w) and all(g[k].tobytes() == w[k].tobytes() for k in w)

    def failing():
        raise RuntimeError("the remote start failed")
        yield  # pragma: no cover

    head = HeadStart(items[:1], failing(), kwargs)
    assert next(head)["pair_key"].tobytes() == want[0]["pair_key"].tobytes()
    with pytest.raises(RuntimeError, match="the remote start failed"):
        next(head)

    bad = dict(kwargs, digests=("0" * 64,) * len(index.files))  # every file's sha256 "changed"
    head = HeadStart(items[:2], iter(remote), bad)
    with pytest.raises(TrainingDataError, match="damaged or changed"):
        next(head)
    head.close()

    head = HeadStart(items, iter(remote), kwargs)
    head.close()  # before anything was asked for
    assert not [t for t in threading.enumerate() if t.name.startswith("ocean-stream-")]

    never = threading.Event()

    def stuck():  # a remote start that never gets a CPU
        never.wait()
        yield {}

    head = HeadStart(items[:1], stuck(), kwargs)
    next(head)
    head.close(wait_s=0.2)  # returns instead of hanging
    never.set()


def test_decode_tasks_reserve_cpus_for_two_per_core():
    """Two decode tasks per physical core whatever Ray counts: half a CPU where Ray's CPUs are the cores, a
    whole one where the node already counts two per core (the local instance on 2 cores), never below half
    (a container whose Ray CPUs are fewer than the host's cores) nor above one."""
    from pipelines.stream_start import data_task_cpus

    assert data_task_cpus(2, 2) == 0.5 and data_task_cpus(64, 64) == 0.5
    assert data_task_cpus(4, 2) == 1.0 and data_task_cpus(16, 2) == 1.0
    assert data_task_cpus(3, 2) == 0.75 and data_task_cpus(4, 64) == 0.5


def test_micro_batches_cut_from_blocks_keep_rows_order_and_bytes():
    """``cut_micro_batches``: blocks of any sizes give batches of the same rows in the same order, byte for
    byte, spanning blocks where needed, each a writable copy; the last batch is short when rows run out."""
    from pipelines.train_input import cut_micro_batches

    rng = np.random.default_rng(0)
    sizes = [5, 16, 1, 0, 26]  # 48 rows
    blocks = []
    for n in sizes:
        a = {"template": rng.integers(0, 256, (n, 3, 3, 3), dtype=np.uint8),
             "pair_key": rng.integers(-2**62, 2**62, n, dtype=np.int64), "valid": rng.random(n) < 0.5}
        for v in a.values():
            v.flags.writeable = False  # as Ray's object store hands them out
        blocks.append(a)
    whole = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    for size, lengths in ((16, [16, 16, 16]), (10, [10, 10, 10, 10, 8])):
        got = list(cut_micro_batches(iter(blocks), size))
        assert [len(b["pair_key"]) for b in got] == lengths
        for k, v in whole.items():
            assert np.concatenate([b[k] for b in got]).tobytes() == v.tobytes()
        assert all(v.flags.writeable and v.flags.owndata for b in got for v in b.values())
    assert list(cut_micro_batches(iter([]), 4)) == []


def test_tracking_helpers(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(None, str(tmp_path / "run")) == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    assert tracking.tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert tracking.tracking_uri(None, "s3://bucket/run") == f"sqlite:///{tmp_path / 'mlruns.db'}"
    scrubbed = tracking.scrub({"aws_secret_access_key": "s", "run.data": "s3://u:pw@host/b",
                               "x": "https://h/p?X-Amz-Signature=abc", "optim.base_lr": 0.005,
                               "run.out": "s3://bucket/prefix"})
    assert scrubbed == {"aws_secret_access_key": "<redacted>", "run.data": "<redacted>", "x": "<redacted>",
                        "optim.base_lr": 0.005, "run.out": "s3://bucket/prefix"}
    params = tracking.config_params(smoke(), {"run.workers": 2})
    assert params["optim.batch_size"] == "16" and params["run.workers"] == "2"
    assert params["optim.unfreeze_layers"] == "['layer1', 'layer2', 'layer3']"
    assert tracking.public_uri("s3://b/p?endpoint_override=h:1&scheme=http") == "s3://b/p"
    assert tracking.public_uri("http://user:pw@h:5/x") == "http://h:5/x"
