"""Training pipeline without Ray: the MLflow helpers and the stream's batch function (real Ray Train runs:
tests/integration/test_train_cluster.py; the data path's own tests: tests/data/test_pair_index.py,
tests/data/test_epochs.py)."""

from __future__ import annotations

import numpy as np

from data_prep.epochs import batch_plan, epoch_share, read_and_augment, work_item
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
    batch = {"epoch": np.array([item["epoch"]]), "locations": np.array([item["locations"]], dtype=object)}
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
