"""cluster.yaml passes Ray's own cluster-launcher validation offline (no cloud calls; ray_stack.md §7)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def _load() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid():
    _validate(_load())


def test_cluster_yaml_has_the_node_types_and_pins():
    cfg = _load()
    types = cfg["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert types["head"]["resources"] == {"CPU": 0}  # nothing heavy on the head
    assert "g" in types["gpu_worker"]["node_config"]["InstanceType"][:3]
    setup = " ".join(cfg["setup_commands"])
    assert "-e /home/ubuntu/ocean-ray" in setup  # pinned versions come from pyproject.toml
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"ray[default,train,data,tune]==2.60.0"' in pyproject and '"torch==2.14.1"' in pyproject
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start  # the dashboard is reached through an SSH tunnel
    assert "AWS_SECRET_ACCESS_KEY" not in (REPO / "cluster.yaml").read_text()


@pytest.mark.parametrize("breakage", ["typo", "bad_head", "too_many_min"])
def test_validation_catches_mistakes(breakage):
    cfg = _load()
    if breakage == "typo":
        cfg["available_node_types"]["cpu_worker"]["min_worker"] = 1
    elif breakage == "bad_head":
        cfg["head_node_type"] = "nope"
    else:
        cfg["available_node_types"]["cpu_worker"]["min_workers"] = 20
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError or ValueError
        _validate(cfg)
