"""Annotation listing on Ray: a dataset's sequence folders split among tasks, the driver merging their tables.

:class:`RayLister` is a :data:`data_prep.listing.TableLister`: the driver lists the dataset's units
(:func:`data_prep.readers.list_units`: GOT-10k / LaSOT sequences, VID snippets, DET annotation folders), Ray
tasks parse consecutive groups of units into compact in-memory :class:`~data_prep.tracks.TrackTable` s and
their rejections, and the driver appends them, in unit order, to one table spilled to its disk
(:class:`~data_prep.tracks.TableBuilder`). The result equals the driver's own serial reading exactly (same
table, same rejections in the same order), so plans and shards do not depend on how listing was split. At most
twice ``workers`` groups are in flight, so the driver holds a bounded number of group tables. COCO and YouTube-BB (one
annotation file each) are read on the driver, as before.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from data_prep.listing import read_table
from data_prep.readers import RejectionLog, list_units, read_units
from data_prep.tracks import Rejection, TableBuilder, TrackTable
from ocean.datapath import DataPath, as_path
from ocean.storage import is_uri

# Units per listing task: enough for a task to outlast its scheduling (~ms) several times over (a GOT-10k or
# LaSOT sequence is one annotation file, a VID snippet ~300 XML files), few enough for the tasks to spread
# over the workers: ``ceil(units / (TASKS_PER_WORKER * workers))``, at most MAX_GROUP.
TASKS_PER_WORKER = 8
MAX_GROUP = 64


def read_group(name: str, root: str | DataPath, units: Sequence[str], options: dict,
               ) -> tuple[TrackTable, list[Rejection]]:
    """The listing task: the tracks of ``units`` as one in-memory table, and the rejections, in order."""
    log = RejectionLog()
    table = TrackTable.from_tracks(name, read_units(name, root, units, on_reject=log, **options))
    return table, log.items


def unit_groups(units: Sequence[str], workers: int) -> list[Sequence[str]]:
    """``units`` cut into consecutive groups (:data:`TASKS_PER_WORKER`, :data:`MAX_GROUP`)."""
    size = max(1, min(MAX_GROUP, math.ceil(len(units) / (TASKS_PER_WORKER * max(workers, 1)))))
    return [units[i:i + size] for i in range(0, len(units), size)]


@dataclass
class RayLister:
    """Lists datasets with Ray tasks (Ray must be initialised first).

    Attributes:
        workers: the CPUs listing may use (default: the cluster's); twice as many groups are in flight.
        info: per dataset, what its listing did: ``units``, ``tasks``, ``workers``, ``seconds`` (filled in).
    """

    workers: int | None = None
    info: dict[str, dict] = field(default_factory=dict)

    def __call__(self, name: str, root: str, options: dict, on_reject: Callable[[Rejection], None],
                 spill_dir: str) -> TrackTable:
        import ray

        t0 = time.perf_counter()
        units = list_units(name, root, **options)
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if units is None:  # one annotation file: read here
            self.info[name] = {"units": None, "tasks": 0, "workers": 0}
            table = read_table(name, root, options, on_reject, spill_dir)
        else:
            groups = unit_groups(units, workers)
            self.info[name] = {"units": len(units), "tasks": len(groups), "workers": workers}
            # an s3:// root travels as a DataPath: its store carries the driver's endpoint and keys to the
            # tasks (inside their arguments, as for the shard tasks), so no worker needs them in its environment
            source = as_path(root) if is_uri(root) else root
            table = _merge_in_order(name, source, options, groups, workers, on_reject, spill_dir)
        self.info[name]["seconds"] = time.perf_counter() - t0
        return table


def _merge_in_order(name: str, root: str | DataPath, options: dict, groups: list[Sequence[str]], workers: int,
                    on_reject: Callable[[Rejection], None], spill_dir: str) -> TrackTable:
    """Run the group tasks, at most ``2 * workers`` in flight, and append their tables and rejections in group order."""
    import ray

    task = ray.remote(read_group).options(num_cpus=1, max_retries=3)
    builder = TableBuilder(name, spill_dir=spill_dir)
    pending: deque = deque()
    for group in groups:
        if len(pending) >= 2 * workers:
            _take(pending.popleft(), builder, on_reject)
        pending.append(task.remote(name, root, list(group), options))
    while pending:
        _take(pending.popleft(), builder, on_reject)
    return builder.finish()


def _take(ref, builder: TableBuilder, on_reject: Callable[[Rejection], None]) -> None:
    import ray

    table, rejections = ray.get(ref)
    builder.add_table(table)
    for rejection in rejections:
        on_reject(rejection)


__all__ = ["RayLister", "read_group", "unit_groups"]
