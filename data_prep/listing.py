"""The driver's listing and planning of a preparation job, one dataset at a time.

A reader's tracks are streamed into a compact :class:`data_prep.tracks.TrackTable` (flat arrays), planned with
:func:`data_prep.pairs.plan_pairs` (deterministic from the seed; facts §7.4) and packed into shards
(:func:`data_prep.shards.pack_shards`). The tables' per-frame columns are **spilled** to a job-local folder
(:func:`spill_folder`) and memory-mapped, so the driver's anonymous memory is O(tracks + pairs), not
O(annotated frames) (:func:`list_and_plan`). Reader rejections are kept per dataset (:class:`DatasetState`)
for the manifest and ``OUT/rejects/reader-<dataset>.jsonl``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.pairs import DatasetPlan, plan_pairs
from data_prep.readers import RejectionLog, read_tracks
from data_prep.shards import ShardTask, pack_shards, shard_cost, shard_name
from data_prep.tracks import DATASETS, Track, TrackTable
from ocean.datapath import DataPath, check_readable_folder
from ocean.storage import OutputStore, is_uri


def dataset_roots(datasets: dict[str, str]) -> dict[str, str]:
    """``{name: root}`` in name order: an absolute local path, or the ``s3://`` URI as given (its query, e.g.
    ``?endpoint_override=``, kept: the readers need it; :func:`ocean.storage.public_uri` for display).

    Unknown names and no dataset raise ValueError; a root that cannot be read raises
    :class:`~ocean.storage.InputLocationError` before any work (:func:`ocean.datapath.check_readable_folder`:
    a missing folder, an unreachable S3 endpoint, a missing bucket or prefix).
    """
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    if not datasets:
        raise ValueError("no dataset given (NAME=ROOT)")
    roots = {}
    for name, root in sorted(datasets.items()):
        if not is_uri(root):
            root = str(Path(root).expanduser().resolve())  # tasks on other nodes / cwds need absolute paths
        path = check_readable_folder(root, f"{name}: dataset root")
        roots[name] = root if isinstance(path, DataPath) else str(path)
    return roots


SPILL_PREFIX = "ocean-prepare-"


def spill_folder(base: str | None = None) -> str:
    """A fresh job-local folder for spilled annotation columns, ``<tmp>/ocean-prepare-<host>-<pid>-XXXXXXXX``.

    ``<tmp>`` is ``tempfile.gettempdir()`` (``$TMPDIR``) on the driver's disk by default; the job removes the
    folder when it ends, also on error (:mod:`pipelines.prepare`). Folders that jobs on this host left behind when they were killed (a SIGKILL skips ``finally``) are removed
    first: those whose process no longer exists. A folder of another host (a shared ``/tmp``) is left alone.
    """
    base = base or tempfile.gettempdir()
    host = socket.gethostname().replace("-", "_")
    for path in Path(base).glob(f"{SPILL_PREFIX}{host}-*-*"):
        pid = path.name[len(SPILL_PREFIX) + len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{host}-{os.getpid()}-", dir=base)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass
class DatasetState:
    """One dataset of the job: its listing counts, reader rejections, plan and shards (draw arrays)."""

    name: str
    root: str
    tracks: int = 0
    annotated_frames: int = 0
    reader_log: RejectionLog = field(default_factory=RejectionLog)
    plan: DatasetPlan | None = None
    requested: int = 0
    shards: list[np.ndarray] = field(default_factory=list)

    @property
    def source(self) -> OutputStore | None:
        """The store frames are read from by the shard tasks (S3 roots), None for a local root."""
        return OutputStore.from_uri(self.root) if is_uri(self.root) else None


def list_and_plan(dataset: str, tracks: Iterable[Track] | TrackTable, cfg, seed: int, num_pairs: int, shard_pairs: int,
                  spill_dir: str | Path | None = None) -> tuple[DatasetPlan | None, list[np.ndarray], int, int]:
    """One dataset's listing and plan on the driver: ``(plan or None, shards, tracks, annotated frames)``.

    ``tracks`` (a reader's generator) is consumed one track at a time into a compact
    :class:`~data_prep.tracks.TrackTable` (or is that table already, listed by workers), so the driver never holds the dataset as Python objects; the plan
    keeps only the eligible tracks' table, and shards are int64 draw arrays (:func:`pack_shards`).

    With ``spill_dir`` (a local folder; the job gives a job-local one, :func:`spill_folder`) both tables are
    spilled there, their per-frame columns memory-mapped from files, and the listing's table is deleted once
    the plan holds its own copy: the driver's anonymous memory is O(tracks + pairs), not O(annotated frames).
    The plan's spilled table is read again when each shard's task input is built (:func:`shard_tasks`).
    """
    table = tracks if isinstance(tracks, TrackTable) else TrackTable.from_tracks(dataset, tracks, spill_dir=spill_dir)
    n_tracks, n_frames = table.num_tracks, table.num_frames
    plan = None
    if n_tracks:
        plan = plan_pairs(table, cfg.data, seed, {dataset: num_pairs}, spill_dir=spill_dir).datasets[dataset]
    if table.folder is not None and (plan is None or plan.tracks is not table):
        shutil.rmtree(table.folder)  # the listing's files; the plan has its own (mapped pages stay valid)
    del table
    if plan is None:
        return None, [], 0, 0
    return plan, pack_shards(plan, shard_pairs), n_tracks, n_frames


# (dataset, root, reader options, on_reject, spill_dir) -> the dataset's table; e.g. pipelines.listing's
# Ray lister. The default reads on the driver (:func:`read_table`).
TableLister = Callable[[str, str, dict, Callable, str], TrackTable]


def read_table(name: str, root: str, options: dict, on_reject: Callable, spill_dir: str) -> TrackTable:
    """Dataset ``name``'s table read by this process, one track at a time, spilled into ``spill_dir``."""
    return TrackTable.from_tracks(name, read_tracks(name, root, on_reject=on_reject, **options), spill_dir=spill_dir)


def list_datasets(roots: dict[str, str], cfg, seed: int, counts: dict[str, int], shard_pairs: int,
                  reader_options: dict[str, dict] | None, spill_dir: str,
                  say: Callable[[str], None], lister: TableLister = read_table) -> dict[str, DatasetState]:
    """List and plan one dataset at a time (the driver holds annotations only, spilled into ``spill_dir``);
    ``lister`` reads each dataset's table (default: here, :func:`read_table`)."""
    states: dict[str, DatasetState] = {}
    for name, root in roots.items():
        st = states[name] = DatasetState(name, root)
        st.requested = int(counts.get(name, 0))
        tracks = lister(name, root, dict((reader_options or {}).get(name, {})), st.reader_log, spill_dir)
        st.plan, st.shards, st.tracks, st.annotated_frames = list_and_plan(
            name, tracks, cfg, seed, st.requested, shard_pairs, spill_dir=spill_dir)
        say(f"{name}: {st.tracks} tracks, {st.annotated_frames} annotated frames, "
            f"{len(st.plan) if st.plan else 0} pairs planned in {len(st.shards)} shards")
    return states


def shards_to_run(states: dict[str, DatasetState], done: dict[str, dict]) -> list[tuple[str, int]]:
    """``(dataset, shard index)`` of the shards not in ``done``, largest first (:func:`shard_cost`; ties in name
    order): the longest-processing-time order, so the last tasks to start are the short ones and workers
    finish together instead of one long shard running alone at the end."""
    todo = sorted((-shard_cost(st.plan, draws), name, i) for name, st in states.items()
                  for i, draws in enumerate(st.shards) if shard_name(name, i) not in done)
    return [(name, i) for _, name, i in todo]


def shard_tasks(states: dict[str, DatasetState], todo: Iterable[tuple[str, int]], job: str) -> Iterator[ShardTask]:
    """The tasks of ``todo``, each built when it is taken (a task holds its shard's frames and crops)."""
    sources = {name: st.source for name, st in states.items()}
    return (ShardTask(name, i, job, states[name].plan.videos(states[name].shards[i]), sources[name])
            for name, i in todo)
