"""The official-code reference data in ``../shared/data/official_reference`` (its README says what each file is).

:func:`official_state_dict` regenerates the official network's weights from the rule written in
``official_keys.json`` (no weights are stored there); :func:`load_array` reads a stored output by its name
prefix. Tests that need the folder call :func:`require` first: it skips them when ``../shared`` is absent.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
REF = SHARED / "data" / "official_reference"
OTB = SHARED / "data" / "real_sequences" / "otb"


def require() -> None:
    """Skip the calling test when the reference data is not next to the repository."""
    if not (REF / "official_keys.json").is_file():
        pytest.skip(f"official reference data not found at {REF}")


@lru_cache(maxsize=1)
def official_keys() -> dict:
    return json.loads((REF / "official_keys.json").read_text())


def _draw(entry: dict, seed: int, gain: float) -> torch.Tensor:
    """One entry by the written rule: ``default_rng([SEED, index])``, float64 draws cast to float32."""
    rng = np.random.default_rng([seed, entry["index"]])
    shape, rule = tuple(entry["shape"]), entry["rule"]
    if rule == "bn_num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    if rule == "conv_weight":
        a = rng.standard_normal(size=shape) * (gain / math.sqrt(float(np.prod(shape[1:]))))
    elif rule == "conv_bias":
        a = 0.01 * rng.standard_normal(size=shape)
    elif rule == "bn_weight":
        a = rng.uniform(0.8, 1.2, size=shape)
    elif rule in ("bn_bias", "bn_running_mean"):
        a = 0.05 * rng.standard_normal(size=shape)
    elif rule == "bn_running_var":
        a = rng.uniform(0.8, 1.2, size=shape)
    elif rule == "fusion_logits":
        a = 1.0 + 0.5 * rng.standard_normal(size=shape)
    elif rule == "reg_adjust":
        a = rng.uniform(0.08, 0.12, size=shape)
    elif rule == "reg_bias":
        a = 3.5 + 0.1 * rng.standard_normal(size=shape)
    else:
        raise ValueError(f"unknown rule {rule!r} for {entry['key']}")
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.float32)))


def official_state_dict(align: bool = True) -> dict[str, torch.Tensor]:
    """The official ``Ocean(align=...)`` state_dict, keys and order as ``official_keys.json`` lists them
    (``align=False``: entries 0..399, the OTB / GOT-10k / LaSOT network)."""
    spec = official_keys()
    entries = spec["entries"] if align else [e for e in spec["entries"] if not e["key"].startswith("align_head.")]
    return {e["key"]: _draw(e, spec["seed"], spec["gain"]) for e in entries}


def load_array(prefix: str) -> np.ndarray:
    """The stored array whose file name starts with ``prefix`` (names carry their shapes)."""
    found = sorted(REF.glob(f"{prefix}*.npy"))
    if len(found) != 1:
        raise FileNotFoundError(f"{len(found)} arrays named {prefix}* in {REF}")
    return np.load(found[0])


def tracker_runs() -> list[dict]:
    return json.loads((REF / "tracker_reference.json").read_text())["runs"]
