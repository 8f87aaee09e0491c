"""Connecting to Ray the same way in every pipeline.

* ``--ray-address ADDR`` or ``RAY_ADDRESS``: join that cluster (``ray job submit`` sets ``RAY_ADDRESS`` for the
  job's driver, so jobs run unchanged on a laptop and on a cluster).
* Otherwise a local Ray instance with at least 4 *logical* CPUs: on a 2-core machine Ray Data's read tasks
  and a training or actor pool that takes every CPU deadlock (ray_stack.md §2, §4; ray-project/ray#44687).
"""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"ignore_reinit_error": True, "log_to_driver": not quiet}
    if address:
        ray.init(address=address, **kwargs)
        return
    cores = os.cpu_count() or 2
    ray.init(num_cpus=num_cpus or max(4, cores), include_dashboard=False, **kwargs)
