"""The local Ray instance of pipelines.raysession.ensure_ray runs its workers at the command's niceness.

Ray starts worker processes at niceness 15, where any ordinary process on the machine takes the CPU from them
(docs/reference/ray_stack.md §11). Each case starts a fresh local instance in its own process and asks a task
and an actor (a Ray Train rank is an actor) for their niceness. Ray adds ``worker_niceness`` to the niceness
of the process that started it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import os, ray
from pipelines.raysession import ensure_ray
assert ensure_ray()
@ray.remote
def task():
    return os.nice(0)
@ray.remote
class Actor:
    def niceness(self):
        return os.nice(0)
print("NICENESS", os.nice(0), ray.get(task.remote()), ray.get(Actor.remote().niceness.remote()))
ray.shutdown()
"""


def _niceness(env_value: str | None) -> tuple[int, int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    if env_value is not None:
        env["RAY_worker_niceness"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=180)
    line = next((x for x in out.stdout.splitlines() if x.startswith("NICENESS")), None)
    assert line is not None, out.stdout[-2000:] + out.stderr[-2000:]
    driver, task, actor = (int(v) for v in line.split()[1:])
    return driver, task, actor


@pytest.mark.parametrize("env_value, increment", [(None, 0), ("7", 7)])
def test_local_workers_run_at_the_commands_niceness_unless_ray_worker_niceness_says_otherwise(env_value, increment):
    driver, task, actor = _niceness(env_value)
    # Ray adds worker_niceness to its own (the driver's) niceness: 15 by default, 0 in ensure_ray's local
    # instance, the user's value when RAY_worker_niceness is set
    assert driver == os.nice(0)
    assert (task, actor) == (min(19, driver + increment),) * 2
