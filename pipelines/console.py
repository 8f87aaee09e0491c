"""The project's log records from Ray workers on the driver's console.

Ray does not bring a worker's output to the driver reliably: the pipelines start Ray with ``log_to_driver``
off (Ray Data's and Ray Train's own chatter), and Ray Train 2.60 routes a worker's ``print`` into Ray Train's
log files (ray_stack.md §9). So records of the project's loggers (``jobs``, ``pipelines``, ``ocean``,
``data_prep``) travel through a small named actor instead:

* the driver wraps the Ray work in :func:`forward_worker_logs`: it creates the actor (on the driver's node,
  holding the driver's level) and a thread that takes its records every :data:`DRAIN_EVERY_S` and hands them to the driver's
  loggers, with the worker named (``[rank 0]``);
* a worker calls :func:`worker_logging` first: its project loggers take the driver's level and send what
  passes it to the actor (no round trip per record); :func:`flush_worker_logs` waits until they arrived.

Without the actor (Ray started by something else, nothing forwarding) a worker logs to its own stderr at
``$OCEAN_LOG_LEVEL`` (default info).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

PACKAGES = ("jobs", "pipelines", "ocean", "data_prep")
RELAY_NAME = "ocean-console"
FIND_RELAY_S = 5.0  # how long a worker looks for the driver's relay before logging to its own stderr
DRAIN_EVERY_S = 0.5  # how stale a forwarded line may be on the console; one small actor call each time

_worker: dict = {}  # this worker process, once set up: {"handler": its _RelayHandler, or None for stderr}


def _is_driver() -> bool:
    import ray

    worker = getattr(getattr(ray, "_private", None), "worker", None)
    return worker is None or worker.global_worker.mode == worker.SCRIPT_MODE


def _relay_class():
    import ray

    @ray.remote(num_cpus=0)
    class ConsoleRelay:
        """The records workers sent and the driver has not taken yet, and the driver's level."""

        def __init__(self, level: int):
            self._level, self._records = level, []

        def level(self) -> int:
            return self._level

        def set_level(self, level: int) -> None:
            self._level = level

        def put(self, record: tuple) -> None:
            self._records.append(record)

        def take(self) -> list[tuple]:
            out, self._records = self._records, []
            return out

    return ConsoleRelay


def _project_level() -> int:
    return min(logging.getLogger(p).getEffectiveLevel() for p in PACKAGES)


def emit(record: tuple) -> None:
    """Hand one forwarded ``(name, levelno, message, origin, created)`` to this process's loggers."""
    name, levelno, message, origin, created = record
    logger = logging.getLogger(name)
    if logger.isEnabledFor(levelno):
        logger.handle(logging.makeLogRecord({
            "name": name, "levelno": levelno, "levelname": logging.getLevelName(levelno), "msg": message,
            "args": None, "created": created, "msecs": (created % 1) * 1000, "origin": origin}))


@contextlib.contextmanager
def forward_worker_logs() -> Iterator[None]:
    """On the driver (Ray is up): show the project records Ray workers log while the block runs, and those
    still queued when it ends. Inside a Ray worker (a Tune trial that trains) it does nothing: that worker's
    own records already travel to the driver's actor."""
    import ray

    if not _is_driver():
        yield
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node, hard: a relay on a worker host would die with it, and with it every later line
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    relay = _relay_class().options(name=RELAY_NAME, get_if_exists=True,
                                   scheduling_strategy=here).remote(_project_level())
    ray.get(relay.set_level.remote(_project_level()))  # an earlier block of this job may have had another
    stop = threading.Event()

    def drain() -> None:
        for record in ray.get(relay.take.remote()):
            emit(record)

    def loop() -> None:
        while not stop.wait(DRAIN_EVERY_S):
            try:
                drain()
            except Exception:  # the console must never stop the work; the final drain below still runs
                logging.getLogger(__name__).debug("taking forwarded log records failed", exc_info=True)

    thread = threading.Thread(target=loop, name="ocean-console", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            drain()


class _RelayHandler(logging.Handler):
    def __init__(self, relay, origin: str | None):
        super().__init__()
        self.relay, self.origin, self.last = relay, origin, None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.last = self.relay.put.remote((record.name, record.levelno, message, self.origin, record.created))
        except Exception:
            self.handleError(record)


def _find_relay():
    """The driver's relay actor; a worker of a group restarted after a node loss may look for it while the
    cluster is still settling, so it asks again for up to :data:`FIND_RELAY_S`."""
    import time

    import ray

    if not ray.is_initialized():  # not in Ray at all (ray.get_actor would start a local instance)
        raise LookupError(RELAY_NAME)
    deadline = time.monotonic() + FIND_RELAY_S
    while True:
        try:
            return ray.get_actor(RELAY_NAME)
        except ValueError:  # no such actor (yet)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def worker_logging(origin: str | None = None) -> None:
    """In a Ray worker: the project's loggers at the driver's level, sending to the driver's console (see
    the module docstring); ``origin`` names this worker in the lines (default in a Ray Train worker:
    ``"rank N"``). Again in the same process updates ``origin`` and the level."""
    if origin is None and "ray.train" in sys.modules:
        with contextlib.suppress(Exception):
            import ray.train

            origin = f"rank {ray.train.get_context().get_world_rank()}"
    if _worker:
        if _worker["handler"] is not None:
            _worker["handler"].origin = origin
            with contextlib.suppress(Exception):
                import ray

                level = ray.get(_worker["handler"].relay.level.remote())
                for package in PACKAGES:
                    logging.getLogger(package).setLevel(level)
        return
    import ray

    try:
        relay = _find_relay()
        level = ray.get(relay.level.remote(), timeout=FIND_RELAY_S)
    except Exception:  # no driver forwarding: this worker's own stderr
        relay, level = None, logging.getLevelName(os.environ.get("OCEAN_LOG_LEVEL", "info").upper())
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler = _RelayHandler(relay, origin)
    for package in PACKAGES:
        logger = logging.getLogger(package)
        logger.setLevel(level if isinstance(level, int) else logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False  # Ray Train's root handlers would write them again
    _worker.update(handler=handler if relay is not None else None)


def flush_worker_logs(timeout_s: float = 10.0) -> None:
    """Wait (at most ``timeout_s``) until this worker's forwarded records reached the driver's actor."""
    handler = _worker.get("handler")
    if handler is not None and handler.last is not None:
        import ray

        with contextlib.suppress(Exception):
            ray.get(handler.last, timeout=timeout_s)
