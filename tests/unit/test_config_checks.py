"""Configuration checking: every value type-, choice- and range-checked wherever a config enters (constructors,
``from_dict``, ``merge`` / config files, ``--set``, tracker files, unpickled Ray payloads), the error naming the
key; YAML and JSON files round-trip; the commands turn a bad value into one line and exit status 2."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
import yaml

from jobs.cli import main
from ocean.config import (
    ConfigError,
    OceanConfig,
    OptimConfig,
    TrackerConfig,
    UnknownKeyError,
    apply_overrides,
    config_file,
    file_overrides,
    from_dict,
    layered_tracker_config,
    merge,
    paper,
    preset,
    read_config_file,
    smoke,
    to_dict,
    tracker_file_overrides,
)

# (dotted key, a bad value as a config file / checkpoint holds it, the words of the error): per key family
BAD_VALUES = [
    # counts: positive integers, never a string, a float or a bool
    ("optim.epochs", "3", "expected a positive integer, got '3'"),
    ("optim.epochs", -3, "expected a positive integer, got -3"),
    ("optim.epochs", 3.0, "expected a positive integer, got 3.0"),
    ("optim.epochs", True, "expected a positive integer, got True"),
    ("optim.batch_size", 0, "expected a positive integer, got 0"),
    ("data.pool_factor", 0, "expected a positive integer, got 0"),
    ("model.backbone.width", 0, "expected a positive integer"),
    ("model.backbone.blocks", [3, 0, 6], "expected a list of 3 items, each a positive integer"),
    ("model.backbone.blocks", [3, 4], "expected a list of 3 items"),
    ("tracker.online_params.memory_size", 0, "expected a positive integer"),
    ("tracker.online_params.sample_size", 16, "expected an integer >= 32"),
    ("data.jpeg_quality", 101, "expected an integer in [1, 100]"),
    ("optim.warmup_epochs", -1, "expected an integer >= 0"),
    # rates: finite and positive
    ("optim.base_lr", -1.0, "expected a finite number > 0, got -1.0"),
    ("optim.base_lr", 0, "expected a finite number > 0, got 0"),
    ("optim.base_lr", float("nan"), "expected a finite number > 0, got nan"),
    ("optim.end_lr", float("inf"), "expected a finite number > 0, got inf"),
    ("optim.base_lr", "0.001", "expected a finite number > 0, got '0.001'"),
    ("optim.momentum", 1.0, "expected a finite number in [0, 1)"),
    ("optim.weight_decay", -1e-4, "expected a finite number >= 0"),
    # probabilities and convex weights in [0, 1]
    ("augment.flip_prob", 1.5, "expected a finite number in [0, 1], got 1.5"),
    ("augment.blur_prob", -0.1, "expected a finite number in [0, 1]"),
    ("loss.cls_pos_weight", 2, "expected a finite number in [0, 1]"),
    ("tracker.window_influence", 5, "expected a finite number in [0, 1], got 5"),
    ("tracker.lr", -1, "expected a finite number in [0, 1], got -1"),
    ("tracker.ratio", 1.2, "expected a finite number in [0, 1]"),
    ("tracker.online_weight", -0.5, "expected a finite number in [0, 1]"),
    ("tracker.online_params.learning_rate", 2.0, "expected a finite number in [0, 1]"),
    # penalty weight and other non-negative weights
    ("tracker.penalty_k", -0.1, "expected a finite number >= 0, got -0.1"),
    ("loss.weight_cls", -1.2, "expected a finite number >= 0"),
    ("augment.search_scale", 1.0, "expected a finite number in [0, 1)"),
    ("tracker.min_size", 0, "expected a finite number > 0"),
    # choices
    ("model.head.fusion", "bogus", "expected one of softmax, sum, got 'bogus'"),
    ("tracker.size_update", "triple", "expected one of single, double"),
    ("optim.unfreeze_layers", ["layer4"], "expected a list, each item one of conv1, bn1, layer1, layer2, layer3"),
    ("model.head.align", "true", "expected true or false, got 'true'"),
    ("model.head.align", 1, "expected true or false, got 1"),
    # strings and dicts
    ("model.backbone.pretrained", "", "expected a non-empty string or null"),
    ("data.pairs_per_epoch.coco", -5, "expected an integer >= 0, got -5"),
    ("data.pairs_per_epoch.coco", "5", "expected an integer >= 0, got '5'"),
    ("data.pairs_per_epoch.imagenet", 5, "unknown name; one of ytbb, vid, got10k, det, coco, lasot"),
    ("data.frame_range", [1, 2], "expected a mapping of names"),
    # sections and unknown keys
    ("optim", 3, "expected a section"),
    ("optim.nope", 1, "unknown config key"),
    ("tracker.online_params.nope", 1, "unknown config key"),
]


def _nested(key: str, value) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


@pytest.mark.parametrize(("key", "value", "words"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_from_dict_and_merge_reject_bad_values_naming_the_key(key, value, words):
    data = to_dict(paper())
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    for attempt in (lambda: from_dict(data), lambda: merge(smoke(), _nested(key, value))):
        with pytest.raises(ConfigError) as info:
            attempt()
        assert str(info.value) == f"{key}: {words}" or str(info.value).startswith(f"{key}: {words}"), str(info.value)
        assert info.value.key == key and "\n" not in str(info.value)


@pytest.mark.parametrize(("item", "message"), [
    ("optim.epochs=abc", "optim.epochs: expected a positive integer, got 'abc'"),
    ("optim.epochs=-3", "optim.epochs: expected a positive integer, got '-3'"),
    ("optim.epochs=2.5", "optim.epochs: expected a positive integer, got '2.5'"),
    ("optim.batch_size=0", "optim.batch_size: expected a positive integer, got '0'"),
    ("data.pool_factor=0", "data.pool_factor: expected a positive integer, got '0'"),
    ("optim.base_lr=-1", "optim.base_lr: expected a finite number > 0, got '-1'"),
    ("optim.base_lr=nan", "optim.base_lr: expected a finite number > 0, got 'nan'"),
    ("augment.gray_prob=2", "augment.gray_prob: expected a finite number in [0, 1], got '2'"),
    ("tracker.window_influence=5", "tracker.window_influence: expected a finite number in [0, 1], got '5'"),
    ("tracker.lr=-1", "tracker.lr: expected a finite number in [0, 1], got '-1'"),
    ("model.head.fusion=bogus", "model.head.fusion: expected one of softmax, sum, got 'bogus'"),
    ("data.pairs_per_epoch.coco=-1", "data.pairs_per_epoch.coco: expected an integer >= 0, got '-1'"),
    ("optim.unfreeze_layers=layer2,layer9", "optim.unfreeze_layers: expected a list, each item one of"),
    ("model.backbone.blocks=[1,1]", "model.backbone.blocks: expected a list of 3 items"),
    ("optim.epochs", "override 'optim.epochs' is not of the form key=value"),
])
def test_set_overrides_reject_bad_values_naming_the_key(item, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(paper(), [item])
    assert str(info.value).startswith(message), str(info.value)


def test_good_values_pass_and_are_normalised():
    cfg = merge(paper(), {"optim": {"epochs": 3, "base_lr": 1}, "tracker": {"online_params": {"rotations": [5, -5]}},
                          "data": {"pairs_per_epoch": {"coco": 7}}})
    assert cfg.optim.epochs == 3 and cfg.optim.base_lr == 1.0 and isinstance(cfg.optim.base_lr, float)
    assert cfg.tracker.online_params.rotations == (5.0, -5.0)
    assert cfg.data.pairs_per_epoch == {**paper().data.pairs_per_epoch, "coco": 7}  # merged key by key
    assert OptimConfig(unfreeze_layers=["layer3"]).unfreeze_layers == ("layer3",)
    # every preset and every tracker preset passes its own checks
    for name in ("otb", "vot2018", "vot2019", "got10k", "lasot"):
        layered_tracker_config(None, name)
    assert from_dict(to_dict(smoke())) == smoke()


def test_constructors_and_replace_check_too():
    with pytest.raises(ConfigError, match="^epochs: expected a positive integer, got '3'$"):
        OptimConfig(epochs="3")
    import dataclasses

    with pytest.raises(ConfigError, match="window_influence"):
        dataclasses.replace(TrackerConfig(), window_influence=5.0)
    with pytest.raises(UnknownKeyError, match="unknown preset 'huge'"):
        preset("huge")
    assert issubclass(UnknownKeyError, KeyError) and issubclass(ConfigError, ValueError)
    for exc in (ConfigError("optim.epochs", "expected a positive integer, got 0", "my.yaml"),
                UnknownKeyError("optim.nope", "unknown config key")):  # crosses from a Ray worker intact
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.key == exc.key


def test_an_unpickled_config_is_checked_on_arrival():
    """A config inside a Ray payload (LoopSettings, WorkItem) is checked when it is unpickled."""
    good = paper()
    assert pickle.loads(pickle.dumps(good)) == good
    bad = TrackerConfig()
    object.__setattr__(bad, "window_influence", 5.0)  # what a corrupted or hand-made payload could carry
    payload = pickle.dumps({"settings": OceanConfig(tracker=bad)})
    with pytest.raises(ConfigError, match="window_influence: expected a finite number in \\[0, 1\\], got 5.0"):
        pickle.loads(payload)


def test_pipeline_payloads_carry_checked_configs():
    from pipelines.eval_workers import WorkItem

    item = WorkItem("ckpt.pt", "otb", None, layered_tracker_config(None, "otb"))
    assert pickle.loads(pickle.dumps(item)).tracker == item.tracker
    bad = TrackerConfig()
    object.__setattr__(bad, "lr", -1.0)
    with pytest.raises(ConfigError, match="lr: expected a finite number in \\[0, 1\\], got -1.0"):
        pickle.loads(pickle.dumps(WorkItem("ckpt.pt", "otb", None, bad)))


# --------------------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("name", ["paper", "smoke"])
def test_ocean_config_output_round_trips_through_config(tmp_path, capsys, fmt, name):
    assert main(["config", "--preset", name, "--format", fmt]) == 0
    text = capsys.readouterr().out
    path = tmp_path / f"my.{fmt}"
    path.write_text(text)
    if fmt == "json":
        json.loads(text)
    else:
        assert not text.lstrip().startswith("{")
    # loaded on top of the OTHER preset, the complete file still gives exactly its configuration
    other = smoke() if name == "paper" else paper()
    assert config_file(str(path), other) == preset(name)
    # and through the command: the file printed again is the same text
    assert main(["config", "--config", str(path), "--format", fmt, "--preset", "smoke" if name == "paper" else "paper"]) == 0
    assert capsys.readouterr().out == text


def test_yaml_reads_numbers_as_numbers_and_detects_the_format(tmp_path):
    f = tmp_path / "partial.yaml"
    f.write_text("optim:\n  base_lr: 1e-3\n  end_lr: 5E-6\n  epochs: 3\ntracker:\n  penalty_k: .05\n")
    cfg = config_file(str(f), smoke())
    assert (cfg.optim.base_lr, cfg.optim.end_lr, cfg.optim.epochs, cfg.tracker.penalty_k) == (1e-3, 5e-6, 3, 0.05)
    assert cfg.optim.batch_size == smoke().optim.batch_size  # the rest stays the base's
    g = tmp_path / "no_extension"
    g.write_text(json.dumps({"optim": {"epochs": 4}}))
    assert read_config_file(str(g)) == {"optim": {"epochs": 4}}
    h = tmp_path / "json_in.yaml"
    h.write_text(json.dumps(to_dict(paper())))  # JSON is YAML: a .yaml name holding JSON reads too
    assert config_file(str(h), smoke()) == paper()
    assert file_overrides(str(f), smoke()) == ["optim.epochs=3", "optim.base_lr=0.001", "optim.end_lr=5e-06",
                                                "tracker.penalty_k=0.05"]


@pytest.mark.parametrize(("text", "suffix", "words"), [
    ('optim:\n  epochs: "3"\n', ".yaml", "optim.epochs: expected a positive integer, got '3'"),
    ("model:\n  head:\n    fusion: bogus\n", ".yml", "model.head.fusion: expected one of softmax, sum, got 'bogus'"),
    ('{"optim": {"epochs": "3"}}', ".json", "optim.epochs: expected a positive integer, got '3'"),
    ("optim: [\n", ".yaml", "not valid YAML"),
    ('{"optim": ', ".json", "not valid JSON"),
    ("- 1\n- 2\n", ".yaml", "expected a mapping of configuration sections, got list"),
    ("", ".yaml", "expected a mapping of configuration sections, got NoneType"),
    ("optimizer:\n  epochs: 3\n", ".yaml", "optimizer: unknown config key"),
])
def test_bad_files_name_the_file_and_the_key(tmp_path, text, suffix, words):
    f = tmp_path / f"cfg{suffix}"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        config_file(str(f), paper())
    assert str(info.value).startswith(f"{f}: {words}"), str(info.value)
    with pytest.raises(ConfigError, match="cannot read it"):
        config_file(str(tmp_path / "missing.yaml"), paper())


def test_tracker_files_are_checked_and_take_yaml(tmp_path):
    f = tmp_path / "best_tracker.json"
    f.write_text(json.dumps({"tracker": {"window_influence": 5, "lr": -1}}))
    with pytest.raises(ConfigError, match="best_tracker.json: tracker.window_influence: expected a finite number"):
        tracker_file_overrides(str(f))
    f.write_text(json.dumps({"small_sz": "271"}))  # a string is not a number in a file
    with pytest.raises(ConfigError, match="tracker.small_sz: expected a positive integer, got '271'"):
        tracker_file_overrides(str(f))
    y = tmp_path / "t.yaml"
    y.write_text("tracker:\n  penalty_k: 0.05\n  online_params:\n    rotations: [5, -5]\n")
    assert tracker_file_overrides(str(y)) == ["tracker.penalty_k=0.05", "tracker.online_params.rotations=[5.0, -5.0]"]
    # --config of a tracking command: the ocean-config schema, only the tracker section used
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump({**to_dict(smoke()), "tracker": {"lr": 0.5}}))
    assert tracker_file_overrides(str(full), "config") == ["tracker.lr=0.5"]
    flat = tmp_path / "flat.yaml"
    flat.write_text("lr: 0.5\n")
    with pytest.raises(ConfigError, match="lr: unknown config key; one of model, labels"):
        tracker_file_overrides(str(flat), "config")
    with pytest.raises(ConfigError, match="tracker.lr: expected a finite number in \\[0, 1\\], got '2'"):
        layered_tracker_config(None, "otb", {"lr": "2"})


# --------------------------------------------------------------------------------------------------------
# Commands: one line on stderr, exit status 2, never a traceback


@pytest.mark.parametrize(("argv", "line"), [
    (["info", "--set", "optim.epochs=abc"], "ocean info: error: --set optim.epochs: expected a positive integer, got 'abc'"),
    (["info", "--set", "model.head.fusion=bogus"], "ocean info: error: --set model.head.fusion: expected one of softmax, sum"),
    (["info", "--set", "optim.nope=1"], "ocean info: error: --set optim.nope: unknown config key"),
    (["info", "--preset", "huge"], "ocean info: error: unknown preset 'huge'"),
    (["config", "--set", "tracker.window_influence=5"], "ocean config: error: --set tracker.window_influence: expected"),
    (["train", "--data", "D", "--out", "O", "--epochs", "-3"],
     "ocean train: error: --epochs optim.epochs: expected a positive integer, got '-3'"),
    (["train", "--data", "D", "--out", "O", "--set", "optim.batch_size=0"],
     "ocean train: error: --set optim.batch_size: expected a positive integer, got '0'"),
    (["prepare", "--dataset", "got10k=/nowhere", "--out", "O", "--set", "data.pool_factor=0"],
     "ocean prepare: error: --set data.pool_factor: expected a positive integer, got '0'"),
    (["ablate", "--data", "D", "--benchmark", "otb=B", "--out", "O", "--set", "optim.epochs=0"],
     "ocean ablate: error: --set optim.epochs: expected a positive integer, got '0'"),
    (["quickstart", "--set", "optim.base_lr=-1"], "ocean quickstart: error: --set optim.base_lr: expected a finite number > 0"),
    (["track", "--checkpoint", "C", "--frames", "F", "--init", "1,1,5,5", "--out", "o.txt", "--tracker-config", "BAD"],
     "ocean track: error: --tracker-config BAD: tracker.window_influence: expected a finite number in [0, 1], got 5"),
    (["evaluate", "--checkpoint", "C", "--benchmark", "otb=B", "--out", "O", "--config", "BADYAML"],
     "ocean evaluate: error: --config BADYAML: tracker.lr: expected a finite number in [0, 1], got -1"),
])
def test_commands_print_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, line):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "track":  # track checks its tracker values after loading the checkpoint: give it real inputs
        import cv2
        import numpy as np

        from ocean.checkpoint import save_checkpoint
        from ocean.model import build_model

        (tmp_path / "F").mkdir()
        cv2.imwrite(str(tmp_path / "F" / "0001.jpg"), np.zeros((64, 64, 3), np.uint8))
        save_checkpoint(str(tmp_path / "C"), build_model(smoke().model), smoke())
    (tmp_path / "BAD").write_text(json.dumps({"window_influence": 5}))
    (tmp_path / "BADYAML").write_text("tracker:\n  lr: -1\n")
    assert main(argv) == 2
    err = capsys.readouterr().err.replace(f"{tmp_path}/", "")  # track makes its paths absolute
    assert err.startswith(line), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_every_command_with_set_takes_config():
    from jobs.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    with_set = set()
    for name, parser in sub.choices.items():
        options = {o for a in parser._actions for o in a.option_strings}
        if "--set" in options:
            with_set.add(name)
            assert "--config" in options, f"ocean {name} takes --set but not --config"
    assert with_set >= {"train", "evaluate", "track", "ablate", "info", "config", "quickstart", "prepare"}


def test_config_file_on_train_comes_before_set_and_epochs(tmp_path):
    from jobs.common import load_config

    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  epochs: 7\n  batch_size: 4\n  base_lr: 0.02\n")
    import argparse

    args = argparse.Namespace(preset="smoke", config=str(f), overrides=["optim.batch_size=8"])
    cfg = load_config(args, extra={"--epochs": "optim.epochs=2"})
    assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.optim.base_lr) == (2, 8, 0.02)
    assert cfg.model == smoke().model


def test_python_m_info_with_a_bad_value_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "jobs.info", "--set", "optim.epochs=abc"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr == "ocean info: error: --set optim.epochs: expected a positive integer, got 'abc'\n"


def test_a_whole_dict_can_be_set_and_is_checked():
    cfg = apply_overrides(paper(), ['data.pairs_per_epoch={"coco": 100, "got10k": 400}'])
    assert cfg.data.pairs_per_epoch == {"coco": 100, "got10k": 400}
    with pytest.raises(ConfigError, match="data.pairs_per_epoch.coco: expected an integer >= 0, got -1"):
        apply_overrides(paper(), ['data.pairs_per_epoch={"coco": -1}'])
    with pytest.raises(ConfigError, match="data.pairs_per_epoch: expected a mapping"):
        apply_overrides(paper(), ["data.pairs_per_epoch=[1]"])
