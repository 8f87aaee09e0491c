"""The preparation job loses a Ray node in the middle of its crop step and still finishes with the shards of
an undisturbed run (pipelines/prepare_data.py: Ray retries the lost shard tasks). A two-node
``ray.cluster_utils.Cluster`` in this process; removing the worker node kills its raylet and workers
(ray_stack.md §6). The same on hosts that share nothing but the network: the multi-host cluster tests."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from ocean.config import smoke
from pipelines.prepare import PrepareSettings, run_prepare

NAMES = ("got10k", "lasot", "vid", "det", "coco", "ytbb")
PAIRS = 60  # per dataset
SHARD_PAIRS = 5  # many small shards: the node is lost while most are still to do


def _settings(root: Path, out: Path) -> PrepareSettings:
    return PrepareSettings({n: str(root / n) for n in NAMES}, str(out), smoke(), pairs={n: PAIRS for n in NAMES},
                           seed=7, shard_pairs=SHARD_PAIRS, progress=False, log=None)


def test_a_node_lost_mid_crop_costs_retries_not_shards(synth, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    root, _ = synth
    temp = Path("/tmp") / f"ocn{os.getpid()}"  # short: Ray's socket paths must stay under 107 chars
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": str(temp)})
    try:
        worker = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        clean, clean_info = run_prepare(_settings(root, tmp_path / "clean"))
        assert clean_info["nodes"] == 2
        out = tmp_path / "lost"
        lost_at: list[int] = []

        def remove_worker_node() -> None:  # once a few shards are stored, the worker node goes
            deadline = time.time() + 120
            while time.time() < deadline:
                stats = out / "stats"
                done = len(list(stats.iterdir())) if stats.is_dir() else 0
                if done >= 4:
                    lost_at.append(done)
                    cluster.remove_node(worker, allow_graceful=False)
                    return
                time.sleep(0.005)

        remover = threading.Thread(target=remove_worker_node, daemon=True)
        remover.start()
        manifest, info = run_prepare(_settings(root, out))
        remover.join(30)
        assert lost_at and lost_at[0] < len(clean["shards"]), "the node was not removed mid-crop"
        assert manifest == clean  # every shard, byte for byte (sha256), and the same counts
        assert info["shards_run"] == len(clean["shards"])
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


