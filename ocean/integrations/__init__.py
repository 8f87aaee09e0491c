"""Adapters that let the public tracking toolkits run the Ocean tracker (docs/toolkits.md).

:func:`build_tracker` is the one way they build it: a checkpoint's network and tracker section, a benchmark's
preset, then overrides, exactly as ``ocean evaluate`` and ``ocean track`` layer them
(:func:`ocean.config.layered_tracker_config`). The toolkit-specific modules (``got10k``) import their
toolkit and stop with one line naming the package when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ocean.config import TRACKER_PRESETS, TrackerConfig, layered_tracker_config

# The toolkits' own names of the benchmarks whose tracker preset has another key here (formats.md §2.1).
BENCHMARK_ALIASES = {"otb2015": "otb", "otb100": "otb", "vot2018st": "vot2018", "vot2019st": "vot2019"}


def benchmark_key(name: str | None) -> str | None:
    """``"OTB2015"`` / ``"otb"`` / ``"GOT-10k"`` -> the key of :data:`ocean.config.TRACKER_PRESETS` (None stays
    None); ValueError naming the known keys otherwise."""
    if name is None:
        return None
    key = str(name).strip().lower().replace("-", "")
    key = BENCHMARK_ALIASES.get(key, key)
    if key not in TRACKER_PRESETS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(TRACKER_PRESETS))} "
                         f"(or {', '.join(sorted(BENCHMARK_ALIASES))})")
    return key


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a CUDA device is a ValueError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device is available")
    return device


def build_tracker(checkpoint: str, benchmark: str | None = None, device: str = "cpu",
                  overrides: Mapping[str, Any] | Sequence[str] | None = None, net_and_config=None):
    """``(ocean.tracker.OceanTracker, TrackerConfig)`` of a checkpoint (file or URI, :func:`ocean.checkpoint.
    load_model`) under ``benchmark``'s preset and ``overrides`` (``{"lr": 0.5}`` or ``["lr=0.5"]``, ``tracker.`` optional);
    ``net_and_config``: an already loaded ``(network, OceanConfig)`` instead of ``checkpoint``.
    CheckpointError / ConfigError (both ValueError) name what is wrong."""
    from ocean.checkpoint import load_model
    from ocean.tracker import OceanTracker

    device = resolve_device(device)
    net, cfg = net_and_config if net_and_config is not None else load_model(checkpoint, map_location=device)
    tracker_cfg: TrackerConfig = layered_tracker_config(cfg.tracker, benchmark_key(benchmark), overrides)
    return OceanTracker(net, tracker_cfg, device=device), tracker_cfg
