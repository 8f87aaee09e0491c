"""The Ocean tracker as a got10k-toolkit tracker (``got10k.trackers.Tracker``; docs/toolkits.md).

The toolkit hands ``init(image, box)`` / ``update(image)`` a PIL image in RGB and boxes ``[x, y, w, h]`` in the
coordinates of the benchmark's own ground truth, and writes what ``update`` returns unchanged: 1-based for the
MATLAB-born OTB / LaSOT / UAV123 / DTB70 files, 0-based for GOT-10k and VOT (formats.md §0, §3.1). The
Ocean tracker works in 0-based pixels on BGR arrays (facts §9.1), so the adapter converts both ways; the
result files are then those ``ocean evaluate`` writes, and ``ocean score`` on them gives the toolkit's numbers.

    from got10k.experiments import ExperimentOTB
    from ocean.integrations.got10k import OceanTracker
    tracker = OceanTracker("runs/checkpoints/epoch-0050.pt", benchmark="OTB2015")
    ExperimentOTB("data/OTB100", version=2015).run(tracker)   # a complete OTB100 is never downloaded again

:func:`local_otb_experiment` is ``ExperimentOTB`` for an OTB folder with only some of the 100 sequences (the
toolkit's own constructor downloads the missing ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ocean.integrations import benchmark_key, build_tracker

try:
    from got10k.trackers import Tracker as _Got10kTracker
except ImportError as exc:  # an optional integration: the dev extra, or `pip install got10k`
    raise ImportError("ocean.integrations.got10k needs the got10k toolkit: pip install got10k==0.1.3 "
                      f"(in the project's dev extra) ({exc})") from None

_SHIFT = np.array([1.0, 1.0, 0.0, 0.0])


def is_one_based(benchmark: str | None) -> bool:
    """Whether ``benchmark``'s ground truth (and so the toolkit's boxes) is 1-based (formats.md §0): the
    project's own rule for its result files (:data:`ocean.benchmarks.results.ONE_BASED`)."""
    from ocean.benchmarks.readers import BENCHMARK_FAMILY
    from ocean.benchmarks.results import ONE_BASED

    key = benchmark_key(benchmark)
    return key is not None and ONE_BASED[BENCHMARK_FAMILY[key]]


class OceanTracker(_Got10kTracker):
    """A got10k ``Tracker`` running :class:`ocean.tracker.OceanTracker`.

    Args:
        checkpoint: a checkpoint file or URI written by ``ocean train`` / ``ocean convert``.
        benchmark: whose official tracker hyper-parameters to use (``"OTB2015"``, ``"otb"``, ``"GOT-10k"``,
            ``"vot2018"``, ... :data:`ocean.config.TRACKER_PRESETS`; None: the checkpoint's tracker section).
        device: ``cpu``, ``cuda`` or ``auto``.
        overrides: tracker hyper-parameters on top (``{"lr": 0.5}`` or ``["lr=0.5"]``), checked as ``--set``.
        one_based: the toolkit's boxes are 1-based (default: what ``benchmark``'s ground truth is).
        name: the tracker's name, the toolkit's result folder.
    """

    def __init__(self, checkpoint: str, benchmark: str | None = None, device: str = "cpu",
                 overrides: Mapping[str, Any] | Sequence[str] | None = None, one_based: bool | None = None,
                 name: str = "Ocean", net_and_config=None) -> None:
        super().__init__(name=name, is_deterministic=True)  # same frames, same boxes (GOT-10k runs it once)
        self.tracker, self.cfg = build_tracker(checkpoint, benchmark, device, overrides, net_and_config)
        shifted = is_one_based(benchmark) if one_based is None else bool(one_based)
        self.shift = _SHIFT if shifted else np.zeros(4)

    @staticmethod
    def _bgr(image) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image, dtype=np.uint8)
        return np.ascontiguousarray(rgb[:, :, ::-1])

    def init(self, image, box) -> None:
        self.tracker.init(self._bgr(image), np.asarray(box, dtype=np.float64).reshape(4) - self.shift)

    def update(self, image) -> np.ndarray:
        box, _score = self.tracker.track(self._bgr(image))
        return np.asarray(box, dtype=np.float64).reshape(4) + self.shift


def local_otb_experiment(root_dir: str, version: int | str = 2015, result_dir: str = "results",
                         report_dir: str = "reports"):
    """The got10k toolkit's ``ExperimentOTB`` on the OTB sequences present under ``root_dir``, never
    downloading: the toolkit's constructor fetches every missing sequence of ``version`` (formats.md §3.1). Its ``run`` and
    ``report`` are the toolkit's own."""
    from got10k.datasets import OTB
    from got10k.experiments import ExperimentOTB

    class LocalExperimentOTB(ExperimentOTB):
        def __init__(self) -> None:  # ExperimentOTB.__init__ (got10k 0.1.3) with download=False
            self.dataset = OTB(root_dir, version, download=False)
            self.result_dir = f"{result_dir}/OTB{version}"
            self.report_dir = f"{report_dir}/OTB{version}"
            self.nbins_iou, self.nbins_ce = 21, 51  # the toolkit's curves (facts §12.1)

    return LocalExperimentOTB()
