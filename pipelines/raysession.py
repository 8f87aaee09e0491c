"""Connecting to Ray the same way in every pipeline.

* ``--ray-address ADDR`` or ``RAY_ADDRESS``: join that cluster (``ray job submit`` sets ``RAY_ADDRESS`` for the
  job's driver, so jobs run unchanged on a laptop and on a cluster).
* Otherwise a local Ray instance with at least 4 *logical* CPUs: on a 2-core machine Ray Data's read tasks
  and a training or actor pool that takes every CPU deadlock (ray_stack.md §2, §4; ray-project/ray#44687).
"""

from __future__ import annotations

import os
from pathlib import Path


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect (or start) Ray once per process; True when this call did it (the caller may shut it down).

    A local instance also gets the repository on ``PYTHONPATH`` so its workers import this project even
    when it is not installed.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"ignore_reinit_error": True, "log_to_driver": not quiet}
    if address:
        ray.init(address=address, **kwargs)
        return True
    repo = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if repo not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([repo, *paths])
    cores = os.cpu_count() or 2
    ray.init(num_cpus=num_cpus or max(4, cores), include_dashboard=False, **kwargs)
    return True
