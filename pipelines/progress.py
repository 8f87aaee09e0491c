"""Training progress lines with ETAs, as rank 0 logs them (:mod:`pipelines.train_loop`).

:class:`TrainProgress` turns steps and finished epochs into console lines: within an epoch one line at most
every :data:`PROGRESS_EVERY_S` (step, steps/s, ETA of the epoch and of the run), and one per epoch. The run's
ETA uses the mean duration of the epochs this run finished, before the first one the current epoch's rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PROGRESS_EVERY_S = 10.0  # Ray Data's own non-TTY progress interval (ray_stack.md §2): a line every ~10 s


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class TrainProgress:
    """Progress of epochs ``start .. epochs - 1`` (0-based) on one rank; ``clock`` in seconds."""

    def __init__(self, start: int, epochs: int, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.start, self.epochs, self.every_s, self.clock = start, epochs, every_s, clock
        self.epoch, self.steps = start, 1
        self.t_epoch = self.t_last = self.t_mark = clock()
        self.done_s: list[float] = []  # each finished epoch, from the end of the one before (checkpoints included)

    def begin_epoch(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps = epoch, max(1, steps)
        self.t_epoch = self.t_last = self.clock()

    def _epoch_estimate(self, rate: float) -> float:
        return sum(self.done_s) / len(self.done_s) if self.done_s else self.steps / rate

    def step(self, step: int) -> str | None:
        """After 0-based ``step`` of the epoch: a line when :attr:`every_s` passed since the last one."""
        now = self.clock()
        if now - self.t_last < self.every_s:
            return None
        self.t_last = now
        done = step + 1
        rate = done / max(now - self.t_epoch, 1e-9)
        epoch_eta = (self.steps - done) / rate
        run_eta = epoch_eta + (self.epochs - self.epoch - 1) * self._epoch_estimate(rate)
        return (f"epoch {self.epoch + 1}/{self.epochs} step {done}/{self.steps} ({100 * done / self.steps:.0f}%) "
                f"{rate:.2f} steps/s; epoch ETA {duration(epoch_eta)}, run ETA {duration(run_eta)}")

    def end_epoch(self) -> str:
        """When the epoch is finished: ``"took 41s; run ETA 2m03s"`` (``"run done"`` after the last)."""
        now = self.clock()
        took, self.t_mark = now - self.t_mark, now
        self.done_s.append(took)
        left = self.epochs - self.epoch - 1
        eta = f"run ETA {duration(left * sum(self.done_s) / len(self.done_s))}" if left > 0 else "run done"
        return f"took {duration(took)}; {eta}"
