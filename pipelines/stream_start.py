"""The start of a training rank's input stream: its first work item decoded in the rank itself while Ray Data
starts the tasks for the rest (:class:`HeadStart`), and the CPUs each decode task reserves
(:func:`data_task_cpus`). Used by :func:`pipelines.train_input.pair_stream`; no torch at import.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from data_prep.epochs import items_batch, read_and_augment

log = logging.getLogger(__name__)

# Decode + augment tasks per physical core. With one, every CPU idled ~20 % of the steady state (a task spends
# about a fifth of its life not computing); a second task per core fills those gaps: 1.23x the pairs/s on 2
# cores, the same CPU per pair (BENCHMARKS.md, training input: "Two tasks per CPU").
TASKS_PER_CORE = 2


def data_task_cpus(logical_cpus: float, cores: int) -> float:
    """Logical CPUs a decode task reserves so that :data:`TASKS_PER_CORE` tasks share each physical core of a
    node with ``logical_cpus`` Ray CPUs on ``cores`` cores: 0.5 where Ray counts the cores (a ``ray start``
    node), 1 where the node already counts two logical CPUs per core (``ensure_ray``'s local instance on a
    2-core machine: 4 on 2), within [1 / TASKS_PER_CORE, 1]."""
    return float(min(1.0, max(1.0 / TASKS_PER_CORE, float(logical_cpus) / max(1, int(cores)) / TASKS_PER_CORE)))


def node_task_cpus() -> float:
    """:func:`data_task_cpus` for the machine this process runs on: the Ray CPUs of every alive node at this
    node's address (several ``ray start`` nodes on one machine share its cores, as the test clusters do) and
    the cores this process may use."""
    import os

    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    me = ray.get_runtime_context().get_node_id()
    host = next((n.get("NodeManagerAddress") for n in nodes if n.get("NodeID") == me), None)
    logical = sum(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes if n.get("NodeManagerAddress") == host)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return data_task_cpus(logical or cores, cores)


class HeadStart:
    """The blocks of a stream whose first work items are decoded in this process.

    The rest (``remote``, Ray Data's ``iter_batches``) starts at once on a background thread, which asks it for
    its first block: that starts the execution, whose tasks wait for fresh workers to import ``ray.data``
    (1-4 s, ray_stack.md §2.8). Meanwhile a second thread decodes the ``local`` items one after the other
    with :func:`data_prep.epochs.read_and_augment` (OpenCV on one thread, as in the tasks), the function the
    tasks run, so the rows are the same bit for bit; they wait for ``next`` in a queue (at most the first
    item's pairs: ~31 MB for 128 smoke pairs). After the local items the remote blocks follow in order. An
    error on either thread is raised by ``next`` where its block would have been.
    """

    _END = object()

    def __init__(self, local: list[dict[str, Any]], remote: Iterable[dict[str, np.ndarray]],
                 kwargs: dict[str, Any]):
        self._n_local = len(local)
        self.served_locally = 0  # local items handed out so far
        self._decoded: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._remote = iter(remote)
        self._first: Any = self._END
        self._remote_started = False
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._start, name="ocean-stream-start", daemon=True),
                         threading.Thread(target=self._decode, args=(list(local), kwargs),
                                          name="ocean-stream-head", daemon=True)]
        for t in self._threads:
            t.start()

    def _start(self) -> None:
        try:
            self._first = next(self._remote)
        except StopIteration:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised in the consumer, in order
            self._error = exc

    def _decode(self, local: list[dict[str, Any]], kwargs: dict[str, Any]) -> None:
        for item in local:
            if self._stop.is_set():
                return
            try:
                out = read_locally(items_batch([item]), kwargs)
            except BaseException as exc:  # noqa: BLE001 - raised in the consumer, in order
                self._decoded.put(exc)
                return
            self._decoded.put(out)

    def __iter__(self) -> HeadStart:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.served_locally < self._n_local:
            out = self._decoded.get()
            if isinstance(out, BaseException):
                self._n_local = self.served_locally  # nothing more comes from the local thread
                raise out
            self.served_locally += 1
            return out
        if not self._remote_started:  # the remote part's first block, from the starting thread
            self._remote_started = True
            self._threads[0].join()
            if self._error is not None:
                raise self._error
            if self._first is self._END:
                raise StopIteration
            first, self._first = self._first, self._END
            return first
        return next(self._remote)

    def close(self, wait_s: float = 30.0) -> None:
        """Stop the local decoding, wait for both threads (a generator cannot be closed while it runs), then
        close the remote iterator, which shuts its Ray Data execution down. A remote start still waiting after
        ``wait_s`` (a cluster with no CPU free for the tasks) is left to end with the process: a failing rank
        must not hang on its input stream."""
        self._stop.set()
        for t in self._threads:
            t.join(wait_s)
        if self._threads[0].is_alive():
            log.warning("the input stream's first block is still on its way after %.0f s; leaving it to end "
                        "with the process", wait_s)
            return
        close = getattr(self._remote, "close", None)
        if close is not None:
            close()


def read_locally(batch: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
    """``read_and_augment`` in this process with OpenCV on one thread, as in the stream's tasks (restored
    afterwards: the setting is process-wide)."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return read_and_augment(batch, **kwargs)
    finally:
        cv2.setNumThreads(threads)
