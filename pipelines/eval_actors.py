"""The Ray side of ``ocean evaluate``: :class:`~pipelines.eval_workers.SequenceRunner` actors spread over
the cluster, fed one item at a time by the driver (``batch`` > 1: up to that many per call, tracked in
lockstep), surviving lost workers.

Ray may restart each actor ``MAX_RESTARTS`` times, on any node with room (``SPREAD``); Ray does not retry
its calls (``max_task_retries=0``): the driver does. When a call fails because its actor died or became
unreachable (a killed process, a lost node: ``RayActorError`` -- ``ActorDiedError``,
``ActorUnavailableError`` -- or its result lost with the node), the item goes back to the head of the queue
for the next free actor and is counted (``retried``), and the lost actor is pinged with unlimited retries:
it rejoins once Ray has restarted it, or is dropped when its restarts are spent. An item lost
``MAX_ITEM_ATTEMPTS`` times comes back as failed (a sequence that kills its worker must not loop). Running an
item twice is harmless: the tracker is deterministic and only the driver stores results. The run fails
only when every actor is gone for good with items left.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.eval_workers import SequenceResult, SequenceRunner, WorkItem, _fitting_workers

log = logging.getLogger(__name__)

# ray_stack.md §6.1: a restart takes well under a second after a killed process and a few seconds after a
# lost node, so three restarts per actor and three tries per item ride out repeated losses without letting a
# crashing sequence or worker loop for ever.
MAX_RESTARTS = 3
MAX_ITEM_ATTEMPTS = 3


class WorkersLost(RuntimeError):
    """Every evaluation actor is gone for good (restarts spent) while items are left."""


@dataclass(frozen=True)
class RunStats:
    """``workers`` actors started; ``retried`` items run again after a lost worker; ``lost`` calls lost."""

    workers: int
    retried: int = 0
    lost: int = 0


def run_ray(
    items: list[WorkItem],
    *,
    workers: int,
    threads: int,
    device: str,
    cpus_per_worker: float,
    gpus_per_worker: float,
    ray_address: str | None,
    on_result: Callable[[SequenceResult], None],
    on_ready: Callable[[float], None],
    gpu_wait_s: float = 0.0,
    batch: int = 1,
) -> RunStats:
    """Run ``items`` on ``workers`` SequenceRunner actors (capped by the cluster), calling ``on_result`` for
    each result; ``batch`` > 1: each call takes up to that many items, tracked in lockstep (``run_batch``).
    ClusterTooSmall when the cluster cannot hold one worker; WorkersLost (module docstring)."""
    import ray

    from pipelines.raysession import ensure_ray, require_gpus

    started_here = not ray.is_initialized()
    ensure_ray(ray_address)
    try:
        require_gpus(1 if gpus_per_worker else 0, wait_s=gpu_wait_s)  # one at least; the pool takes what joined
        n = _fitting_workers(ray.cluster_resources(), workers, len(items), cpus_per_worker, gpus_per_worker)
        actor_cls = ray.remote(SequenceRunner).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, scheduling_strategy="SPREAD",
            max_restarts=MAX_RESTARTS, max_task_retries=0,
        )
        actors = [actor_cls.remote(threads, device) for _ in range(n)]
        try:
            t0 = time.perf_counter()
            # start-up (imports, torch) is not tracking time; a constructor error raises here
            ray.get([a.ping.options(max_task_retries=-1).remote() for a in actors])
            on_ready(time.perf_counter() - t0)
            feed = _Feed(actors, items, on_result, batch)
            feed.run()
            return RunStats(n, feed.retried, feed.lost)
        finally:
            for a in actors:
                ray.kill(a)
    finally:
        if started_here:
            ray.shutdown()


class _Feed:
    """One call in flight per live actor; lost items back to the queue, lost actors pinged until back.

    ``batch`` > 1: a call takes up to ``batch`` items that were never lost (consecutive in the queue, so of
    similar length: :func:`~pipelines.eval_workers.work_items` sorts longest first); an item whose worker was
    lost runs alone from then on, so a sequence that kills its worker spends only its own tries.
    """

    def __init__(self, actors: list, items: list[WorkItem], on_result: Callable[[SequenceResult], None],
                 batch: int = 1) -> None:
        import ray
        from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError

        self.ray, self.actors, self.on_result = ray, actors, on_result
        self.lost_errors = (RayActorError, ObjectLostError, NodeDiedError, WorkerCrashedError)
        self.queue: deque[tuple[WorkItem, int]] = deque((it, 0) for it in items)
        self.idle: deque[int] = deque(range(len(actors)))
        self.batch = max(1, int(batch))
        self.busy: dict = {}  # ref -> (actor index, [(item, attempts so far)])
        self.pings: dict = {}  # ref -> actor index, waiting for a restart
        self.retried = self.lost = 0

    def run(self) -> None:
        while self.queue or self.busy:
            self._fill()
            if not self.busy and not self.pings:
                raise WorkersLost(f"every evaluation worker is gone (restarts spent); {len(self.queue)} items left")
            if not self.busy:
                _say(f"no live worker: waiting for Ray to restart one ({len(self.queue)} items left)")
            (ref,), _ = self.ray.wait([*self.busy, *self.pings], num_returns=1)
            if ref in self.pings:
                self._rejoin(ref)
            else:
                self._done(ref)

    def _fill(self) -> None:
        while self.idle and self.queue:
            a = self.idle.popleft()
            chunk = [self.queue.popleft()]
            while chunk[0][1] == 0 and len(chunk) < self.batch and self.queue and self.queue[0][1] == 0:
                chunk.append(self.queue.popleft())
            if self.batch == 1:
                ref = self.actors[a].run.remote(chunk[0][0])
            else:
                ref = self.actors[a].run_batch.remote([item for item, _ in chunk], self.batch)
            self.busy[ref] = (a, chunk)

    def _done(self, ref) -> None:
        a, chunk = self.busy.pop(ref)
        try:
            results = self.ray.get(ref)
        except self.lost_errors as exc:
            self._lost(a, chunk, exc)
            return
        self.idle.append(a)
        self._fill()  # the next item goes out before this result is stored
        for result in [results] if self.batch == 1 else results:
            self.on_result(result)

    def _lost(self, a: int, chunk: list[tuple[WorkItem, int]], exc: Exception) -> None:
        self.lost += 1
        self.pings[self.actors[a].ping.options(max_task_retries=-1).remote()] = a
        why = _first_line(exc)
        for item, tries in reversed(chunk):  # back to the head of the queue in their order
            attempts, what = tries + 1, f"{item.benchmark}/{item.sequence.name}"
            if attempts >= MAX_ITEM_ATTEMPTS:
                _say(f"{what}: worker lost {attempts} times, recorded as failed ({why})")
                self.on_result(SequenceResult(item.checkpoint, item.benchmark, item.sequence.name, "lost", None,
                                              error=f"worker lost {attempts} times: {why}"))
                continue
            self.retried += 1
            self.queue.appendleft((item, attempts))
            _say(f"worker lost ({why}); {what} queued again (try {attempts + 1} of {MAX_ITEM_ATTEMPTS})")

    def _rejoin(self, ref) -> None:
        a = self.pings.pop(ref)
        try:
            self.ray.get(ref)
        except self.lost_errors as exc:
            _say(f"a worker is gone for good ({_first_line(exc)})")
            return
        self.idle.append(a)


def _say(text: str) -> None:
    log.warning(text)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
