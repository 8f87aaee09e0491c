"""Connecting to Ray the same way in every pipeline, checking it has the GPUs a job asks for, and stopping a
job's driver cleanly on SIGTERM.

* ``--ray-address ADDR`` or ``RAY_ADDRESS``: join that cluster (``ray job submit`` sets ``RAY_ADDRESS`` for the
  job's driver, so jobs run unchanged on a laptop and on a cluster).
* Otherwise a local Ray instance with at least 4 *logical* CPUs: on a 2-core machine Ray Data's read tasks
  and a training or actor pool that takes every CPU deadlock (ray_stack.md §2, §4; ray-project/ray#44687).
  Its workers run at the command's niceness, not 15 above it (ray_stack.md §11).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

# Ray starts its worker processes (tasks, actors, Ray Train ranks) 15 above its own niceness (raylet config
# `worker_niceness`), so any ordinary process on the same machine takes the CPU from them: beside two busy
# loops a smoke training on 2 cores did not reach its first step in 5 minutes, against a 53 s epoch with the
# increment at 0 (ray_stack.md §11). A local instance runs its workers at the niceness of the command that
# started it, unless RAY_worker_niceness says otherwise.
WORKER_NICENESS_ENV = "RAY_worker_niceness"
LOCAL_WORKER_NICENESS = 0


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect (or start) Ray once per process; True when this call did it (the caller may shut it down).

    A local instance also gets the repository on ``PYTHONPATH`` so its workers import this project even
    when it is not installed, and runs its workers :data:`LOCAL_WORKER_NICENESS` above the command's own
    niceness instead of Ray's 15 (``RAY_worker_niceness`` in the environment overrides it). A cluster's nodes
    keep their own setting (``ray start`` reads the same variable).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"ignore_reinit_error": True, "log_to_driver": not quiet}
    if address:
        ray.init(address=address, **kwargs)
        _restore_stop_handler()
        return True
    repo = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if repo not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([repo, *paths])
    cores = os.cpu_count() or 2
    kwargs.update(local_niceness())
    # address="local": a new instance even when `ray start` runs a cluster on this machine (ray.init() without
    # an address would join that one, ray_stack.md §6)
    ray.init(address="local", num_cpus=num_cpus or max(4, cores), include_dashboard=False, **kwargs)
    _restore_stop_handler()
    return True


def local_niceness() -> dict:
    """``ray.init`` keyword arguments that start a local instance's workers at the caller's niceness
    (:data:`LOCAL_WORKER_NICENESS` above it); none when ``RAY_worker_niceness`` is set (the user's own setting
    wins). For every ``ray.init(address="local")`` of the project, benchmarks included."""
    if WORKER_NICENESS_ENV in os.environ:
        return {}
    return {"_system_config": {"worker_niceness": LOCAL_WORKER_NICENESS}}


def _restore_stop_handler() -> None:
    """``ray.init`` installs Ray's own SIGTERM handler (print, then abort: ray_stack.md §4.4); put ours back
    when the command asked for it (:func:`stop_on_signals`)."""
    if _STOPPABLE:
        stop_on_signals()


def alive_nodes() -> int:
    """How many nodes of the connected Ray cluster are alive (``ray.nodes()``); Ray must be initialized."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


class MissingGpus(ValueError):
    """The job asks for GPUs that the Ray cluster does not have and cannot get (a usage error)."""


def require_gpus(needed: float, flag: str = "--gpu", wait_s: float = 0.0) -> None:
    """Raise :class:`MissingGpus` when the connected cluster cannot give ``needed`` GPUs.

    Ray would otherwise wait for them forever (Ray Train's worker group, Tune trials and actors queue as
    pending). "Can give": GPUs the cluster has now, or the most its node types can add when the autoscaler
    published its cluster config to the GCS (ray_stack.md §4.4). Where that config is absent (a fixed
    cluster, or an autoscaler that does not publish it), ``wait_s`` > 0 asks the autoscaler for the GPUs
    (``ray.autoscaler.sdk.request_resources``: waiting alone creates no demand) and waits up to ``wait_s``
    seconds for them to join; 0 refuses at once.
    """
    import ray

    def have() -> float:
        return float(ray.cluster_resources().get("GPU", 0))

    if needed <= 0 or have() >= needed:
        return
    try:  # the autoscaler's node types (absent without an autoscaler, e.g. a local Ray or `ray start`)
        from ray._private.state import state

        if float((state.get_max_resources_from_cluster_config() or {}).get("GPU", 0)) >= needed:
            return
    except Exception:  # a private API: without it, judge by the GPUs present (and the wait)
        pass
    if wait_s > 0 and _wait_for_gpus(needed, wait_s, have):
        return
    cpus = ray.cluster_resources().get("CPU", 0)
    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
    hint = "" if wait_s > 0 else (" (if its GPU nodes start on demand, give --wait-for-gpus SECONDS)")
    raise MissingGpus(f"{flag}: the job needs {needed:g} GPUs but the Ray cluster has {have():g} ({cpus:g} CPUs "
                      f"on {alive_nodes()} node(s)){waited} and cannot add more{hint}; run without {flag}, "
                      "or on a cluster with GPU nodes")


POLL_S = 5.0  # how often the wait looks at the cluster's resources (a node takes minutes to join)


def _wait_for_gpus(needed: float, wait_s: float, have) -> bool:
    """Ask the autoscaler for ``needed`` one-GPU bundles and wait up to ``wait_s`` s; the request is
    withdrawn either way (the job's own tasks and actors hold the nodes from then on)."""
    import logging
    import math
    import time

    from ray.autoscaler.sdk import request_resources

    logging.getLogger(__name__).info(f"waiting up to {wait_s:g} s for {needed:g} GPUs to join the cluster")
    request_resources(bundles=[{"GPU": 1}] * math.ceil(needed))
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            if have() >= needed:
                return True
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        return have() >= needed
    finally:
        request_resources(bundles=[])


class JobStopped(KeyboardInterrupt):
    """The driver received SIGTERM (``ray job stop``, a scheduler, ``kill``): unwinds like Ctrl-C, so an open
    MLflow run ends KILLED (:class:`pipelines.tracking.RunLogger`). ``args[0]`` is the signal number."""


_STOPPABLE = False  # set by stop_on_signals(): ensure_ray() re-installs the handler after ray.init
_RECEIVED: int | None = None
_COMMAND: str | None = None  # the command the handler names when it announces the stop


def received_signal() -> int | None:
    """The signal that stopped this process (:func:`stop_on_signals`), if any: ``ray.get`` turns the handler's
    :class:`JobStopped` into a plain KeyboardInterrupt, so the type alone does not tell."""
    return _RECEIVED


def stop_on_signals(command: str | None = None) -> None:
    """In the main thread, make SIGTERM raise :class:`JobStopped` (once: a second SIGTERM kills at once), also
    after a later :func:`ensure_ray` (Ray's core replaces the handler). With ``command`` the handler first
    writes ``ocean COMMAND: stopped by SIGTERM`` to stderr, at once.

    ``ray job stop`` sends SIGTERM and SIGKILLs 3 s later (ray_stack.md §4.4): enough to mark the run, not
    always to unwind a Ray Train run as well on a loaded machine, so the line comes before the unwinding."""
    import threading

    global _STOPPABLE, _RECEIVED, _COMMAND
    if threading.current_thread() is not threading.main_thread():
        return
    _STOPPABLE, _RECEIVED = True, None
    if command is not None:
        _COMMAND = command

    def handler(signum, _frame):
        global _RECEIVED
        signal.signal(signum, signal.SIG_DFL)
        _RECEIVED = signum
        if _COMMAND is not None:
            line = f"ocean {_COMMAND}: stopped by {signal.Signals(signum).name}\n"
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except RuntimeError:  # the signal came in the middle of another write to stderr
                os.write(2, line.encode())
        raise JobStopped(signum)

    signal.signal(signal.SIGTERM, handler)


_MALLOC_TUNED = False
# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_large_buffers_in_heap() -> bool:
    """Make this process's glibc malloc keep large freed buffers (decoded frames, crops) for reuse; once per
    process, True when it took effect (False on a libc without ``mallopt``, e.g. musl or macOS).

    By default glibc serves a block >= 128 KB with its own ``mmap`` and unmaps it on ``free``, so the next
    decoded frame faults its pages in again. A plain Python process soon raises that threshold by itself
    (glibc's dynamic threshold), but inside a Ray worker it stayed at the default: a shard task of 480 frames
    at 1280x720 took ~300,000 minor page faults and 2.8 s of CPU, against 1,000 faults and 2.0-2.2 s with
    fixed thresholds (measured on the project's 2-core machine, 2026-11-24; BENCHMARKS.md, preparation).
    The thresholds: blocks up to 32 MB (a 4K BGR frame is 25 MB) come from the heap, and up to 128 MB of free
    heap is kept instead of returned to the system.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20) == 1
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = ok
    return ok


# How long an idle Ray Data scheduling loop sleeps before it looks again (ray_stack.md §2.9): a step of the
# loop holds the GIL for ~1 ms, so it then holds it ~5 % of the time; far below a CPU training step (0.3-2 s)
# and a decode task (~0.7 s for 256 pairs), so the prefetch window refills in time.
IDLE_SCHEDULING_SLEEP_S = 0.02


def _progress(topology) -> list[tuple[int, int, int, int]]:
    """What a scheduling step can change: per operator tasks submitted, outputs generated and taken, and the
    blocks waiting in its output queue."""
    return [(op.metrics.num_tasks_submitted, op.metrics.num_task_outputs_generated, op.metrics.num_outputs_taken,
             len(state.output_queue)) for op, state in topology.items()]


def calm_idle_scheduling_loop(sleep_s: float = IDLE_SCHEDULING_SLEEP_S) -> bool:
    """Make Ray Data's scheduling loop in this process sleep ``sleep_s`` after a quick step that changed
    nothing; once per process, True when it took effect.

    Ray Data 2.60's ``StreamingExecutor`` thread runs in the consuming process (a training rank) and steps
    without a pause whenever its ``ray.wait`` returns at once: when the consumer's prefetch window is full, a
    finished task whose output is held back by backpressure stays "active" and ready, and every step finds
    nothing to do. Each step holds the GIL for ~1 ms of resource bookkeeping, between the training thread's
    operator calls: in a smoke-preset rank on 2 cores the loop held the GIL in ~98 % of the samples that
    found it held, and epochs took 2-3x as long as the same steps without Ray Data (ray_stack.md §2.9,
    BENCHMARKS.md "Training input"). A step that dispatched, generated or handed out anything, or one that
    waited on a running task (``ray.wait``), is followed at once by the next, as before. Returns False (and
    changes nothing) on a Ray Data without the executor method or the operator metrics this relies on.
    """
    try:
        from ray.data._internal.execution.interfaces.op_runtime_metrics import OpRuntimeMetrics
        from ray.data._internal.execution.streaming_executor import StreamingExecutor
    except ImportError:
        return False
    step = getattr(StreamingExecutor, "_scheduling_loop_step", None)
    needed = ("num_tasks_submitted", "num_task_outputs_generated", "num_outputs_taken")
    if step is None or not all(hasattr(OpRuntimeMetrics, name) for name in needed):
        return False
    if not getattr(step, "_ocean_calm", False):
        StreamingExecutor._scheduling_loop_step = calm_step(step, sleep_s)
    return True


def calm_step(step, sleep_s: float):
    """``StreamingExecutor._scheduling_loop_step`` ``step``, followed by a ``sleep_s`` sleep when it was quick
    (under ``sleep_s``: it did not wait on a running task) and changed nothing (:func:`_progress`)."""

    def calm(self, topology):
        before, t0 = _progress(topology), time.perf_counter()
        more = step(self, topology)
        if more and time.perf_counter() - t0 < sleep_s and _progress(topology) == before:
            time.sleep(sleep_s)  # a quick step that changed nothing: the loop is spinning
        return more

    calm._ocean_calm = True
    calm.__wrapped__ = step
    return calm
