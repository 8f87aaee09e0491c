"""A local Ray for one test module: 4 logical CPUs (as pipelines.raysession starts on this 2-core machine), no
dashboard, no usage stats, workers at the test's own niceness (as ``ensure_ray``'s, ray_stack.md §11), its own
short temp folder (Ray's socket paths must stay under 107 characters)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest


@contextlib.contextmanager
def local_ray(tag: str, env: Mapping[str, str] | None = None) -> Iterator[Path]:
    """``ray.init(address="local")`` with ``env`` set for the session; yields its temp folder, then shuts
    Ray down and removes the folder."""
    import ray

    temp = Path("/tmp") / f"{tag}{os.getpid()}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(env or {})}.items():
            mp.setenv(key, value)
        if ray.is_initialized():
            ray.shutdown()
        from pipelines.raysession import local_niceness

        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp),
                 **local_niceness())
        try:
            yield temp
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
