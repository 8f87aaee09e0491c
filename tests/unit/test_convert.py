"""``ocean convert``: every source's key rules, the wrappers it accepts, and its errors (checkpoint_keys.md).

The Ocean sources use the official entry list of ``../shared/data/official_reference`` (skipped without it);
the ResNet-50 sources and the file errors need nothing outside the repository.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from official_reference import official_state_dict, require

from jobs.cli import main as cli
from ocean.backbone import ResNet50Backbone, load_backbone_weights
from ocean.checkpoint import load_checkpoint, load_model
from ocean.convert import ConvertError, convert, online_weights_uri
from ocean.online import build_online, make_layeronline
from ocean.storage import load_torch


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    require()
    return official_state_dict(align=True)


def _save(path, obj) -> str:
    torch.save(obj, path)
    return str(path)


def _usage_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 with one error line; return it."""
    assert cli(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("ocean convert: error: "), err
    return err[0]


# ----------------------------------------------------------------------------------------------------------
# Ocean sources


def test_trackit_plain_and_wrapped_files_give_the_same_weights(official, tmp_path):
    plain = convert(_save(tmp_path / "plain.pth", official), "trackit")
    wrapped = convert(_save(tmp_path / "wrapped.pth", {"model": {f"module.{k}": v for k, v in official.items()}}),
                      "trackit")
    assert len(plain.mapped) == 403 and not plain.dropped and plain.config.model.head.align
    assert plain.state.keys() == wrapped.state.keys()
    assert all(torch.equal(plain.state[k], wrapped.state[k]) for k in plain.state)
    assert plain.state["reg_pred.adjust"].shape == ()  # TracKit's [1] vector becomes our scalar
    assert torch.equal(plain.state["cls_encode.search_convs.1.0.weight"],
                       official["connect_model.cls_encode.matrix12_s.0.weight"])  # branch order 11, 12, 21
    assert torch.equal(plain.state["reg_tower.3.1.running_var"], official["connect_model.bbox_tower.10.running_var"])


def test_an_otb_file_without_the_alignment_head_converts_to_the_network_without_it(official, tmp_path):
    otb = {k: v for k, v in official.items() if not k.startswith("align_head.")}
    conv = convert(_save(tmp_path / "OceanO.pth", otb), "trackit")
    assert not conv.config.model.head.align and len(conv.mapped) == 400
    with pytest.raises(ConvertError, match="no alignment head"):
        convert(str(tmp_path / "OceanO.pth"), "trackit", align=True)


def test_sots_checkpoint_converts_to_the_same_network(official, tmp_path):
    """SOTS names (checkpoint_keys.md §3): backbone.*, neck.*, head.*; a training checkpoint dict."""
    sots = {}
    for key, value in official.items():
        if key.startswith("align_head."):
            continue
        key = key.replace("features.features.", "backbone.", 1).replace("connect_model.", "head.", 1)
        sots[f"module.{key}"] = value
    src = _save(tmp_path / "sots.pth", {"epoch": 20, "arch": "Ocean", "state_dict": sots, "optimizer": {}})
    out = tmp_path / "sots.pt"
    assert cli(["convert", "--from", "sots", "--in", src, "--out", str(out)]) == 0
    ckpt = load_checkpoint(str(out))
    ref = convert(_save(tmp_path / "tk.pth", official), "trackit", align=False)
    assert ckpt["model"].keys() == ref.state.keys()
    assert all(torch.equal(ckpt["model"][k], ref.state[k]) for k in ref.state)
    assert ckpt["converted_from"]["source"] == "sots"
    net, cfg = load_model(str(out))
    assert net.align is None and cfg.model.head.align_center == "official"


def test_trackit_online_checkpoint_writes_the_online_branch(official, tmp_path, capsys):
    """checkpoint_keys.md §4: the Siamese net, layeronline.* beside it, classifier.* dropped and listed."""
    state = {k: v for k, v in official.items() if not k.startswith("align_head.")}
    gen = torch.Generator().manual_seed(0)
    layeronline = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                   for k, v in make_layeronline(512, 256, 6).state_dict().items()}
    state.update({f"features.features.layeronline.{k}": v for k, v in layeronline.items()})
    layeronline = {f"layeronline.{k}": v for k, v in layeronline.items()}  # as ocean.online loads them
    state["classifier.feature_extractor.0.weight"] = torch.zeros(512, 1024, 3, 3)
    state["classifier.filter_optimizer.log_step_length"] = torch.zeros(1)
    out = tmp_path / "online.pt"
    assert cli(["convert", "--from", "trackit-online", "--in", _save(tmp_path / "on.pth", state),
                "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "dropped classifier.feature_extractor.0.weight" in captured.err
    online_file = online_weights_uri(str(out))
    assert online_file.endswith("online.online.pt") and online_file in captured.out
    saved = load_torch(online_file)
    assert saved.keys() == layeronline.keys() and all(torch.equal(saved[k], layeronline[k]) for k in saved)
    cfg = load_checkpoint(str(out))["config"]["tracker"]["online_params"]
    assert cfg["features"] == "layeronline" and cfg["weights"] == online_file
    net, full = load_model(str(out))  # the tracker's online module finds and loads the branch
    module = build_online(net, full.tracker)
    assert torch.equal(module.features.layeronline[5].conv3.weight, layeronline["layeronline.5.conv3.weight"])
    # without the online branch the source is the wrong one
    plain = _save(tmp_path / "plain.pth", {k: v for k, v in official.items() if not k.startswith("align_head.")})
    assert "no online branch" in _usage_error(capsys, ["convert", "--from", "trackit-online", "--in", plain,
                                                       "--out", str(tmp_path / "x.pt")])


@pytest.mark.parametrize("change, expected", [
    ("extra", "1 entries that no trackit rule maps (checkpoint_keys.md): connect_model.extra.weight"),
    ("missing", "weights of the network that the file does not hold: cls_pred.bias"),
    ("shape", "entries whose shape does not fit the network: neck.0.weight (256, 512, 1, 1) != (256, 1024, 1, 1)"),
])
def test_unmapped_missing_and_misshapen_entries_are_named(official, tmp_path, capsys, change, expected):
    state = dict(official)
    if change == "extra":
        state["connect_model.extra.weight"] = torch.zeros(3)
    elif change == "missing":
        del state["connect_model.cls_pred.bias"]
    else:
        state["neck.downsample.0.weight"] = torch.zeros(256, 512, 1, 1)
    src = _save(tmp_path / "bad.pth", state)
    out = tmp_path / "out.pt"
    assert expected in _usage_error(capsys, ["convert", "--from", "trackit", "--in", src, "--out", str(out)])
    assert not out.exists()


def test_a_trackit_file_is_not_a_sots_file(official, tmp_path, capsys):
    src = _save(tmp_path / "tk.pth", official)
    line = _usage_error(capsys, ["convert", "--from", "sots", "--in", src, "--out", str(tmp_path / "o.pt")])
    assert "entries that no sots rule maps" in line and "features.features.conv1.weight" in line


# ----------------------------------------------------------------------------------------------------------
# Files that are not weight files (no reference data needed)


class _Thing:
    pass


def test_files_that_cannot_be_read_are_one_line_errors(tmp_path, capsys):
    def run(src: str) -> str:
        return _usage_error(capsys, ["convert", "--from", "trackit", "--in", src, "--out", str(tmp_path / "o.pt")])

    assert "no such file" in run(str(tmp_path / "missing.pth"))
    (tmp_path / "object.pth").write_bytes(pickle.dumps({"a": _Thing()}, protocol=2))
    assert "weights_only=True" in run(str(tmp_path / "object.pth"))
    torch.save({"conv.weight": torch.zeros(1), "note": "text"}, tmp_path / "mixed.pth")
    assert "entries that are not tensors: note" in run(str(tmp_path / "mixed.pth"))
    torch.save({"format": "ocean-ray/1", "config": {}, "model": {}}, tmp_path / "ours.pt")
    assert "already a project checkpoint" in run(str(tmp_path / "ours.pt"))
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    assert "holds no state_dict" in run(str(tmp_path / "list.pth"))


# ----------------------------------------------------------------------------------------------------------
# ImageNet ResNet-50 files


def _with_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole ImageNet ResNet-50 file: layer4 and fc beside the backbone."""
    return {**state, "layer4.0.conv1.weight": torch.zeros(512, 1024, 1, 1), "fc.weight": torch.zeros(1000, 2048),
            "fc.bias": torch.zeros(1000)}


def test_pysot_resnet50_into_the_pysot_backbone(tmp_path):
    ref = ResNet50Backbone(layout="pysot").state_dict()
    src = _save(tmp_path / "resnet50.model", _with_head({f"features.{k}": v for k, v in ref.items()}))
    out = tmp_path / "backbone.pt"
    assert cli(["convert", "--from", "pysot-resnet50", "--in", src, "--out", str(out), "-q"]) == 0
    state = load_torch(str(out))
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)
    fresh = ResNet50Backbone(layout="pysot")
    assert load_backbone_weights(fresh, state) == {"missing": [], "unexpected": []}
    with pytest.raises(ConvertError, match="applies to --from torchvision-resnet50 only"):
        convert(src, "pysot-resnet50", layout="torchvision")


def test_torchvision_resnet50_into_either_layout(tmp_path, capsys):
    tv = torchvision.models.resnet50(weights=None).state_dict()
    src = _save(tmp_path / "resnet50-tv.pth", tv)
    exact = convert(src, "torchvision-resnet50")
    own = ResNet50Backbone(layout="torchvision").state_dict()
    assert exact.state.keys() == own.keys() and not exact.not_converted
    assert {k.split(".")[0] for k in exact.dropped} == {"layer4", "fc"}

    out = tmp_path / "pysot.pt"
    assert cli(["convert", "--from", "torchvision-resnet50", "--layout", "pysot", "--in", src,
                "--out", str(out)]) == 0
    assert "not converted layer2.0.downsample.0.weight" in capsys.readouterr().err
    state = load_torch(str(out))
    skipped = {"layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight"}
    assert set(ResNet50Backbone(layout="pysot").state_dict()) - set(state) == skipped
    result = load_backbone_weights(ResNet50Backbone(layout="pysot"), state)
    assert set(result["missing"]) == skipped and not result["unexpected"]
