"""Pretrained weights from local files: whole networks, encoder-only ResNet/EfficientNet state_dicts, refusals.

No weights can be downloaded here, so each test writes a state_dict from the same
architecture under the names another library uses (torchvision, lukemelas/MONAI, or names
that only the tensor order can match, as timm's and torchvision's EfficientNets).
"""

from __future__ import annotations

import re

import pytest
import torch

from medseg.errors import MedsegError
from medseg.models import create_model, get_model_spec, load_weights


def _encoder_state(name: str, in_channels: int = 3) -> dict:
    net = create_model(name, in_channels)
    return {k[len("encoder."):]: v.clone() for k, v in net.state_dict().items() if k.startswith("encoder.")}


def _randomised(state: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in state.items()}


def test_torchvision_resnet_encoder_loads_and_its_rgb_stem_is_summed_for_grey(tmp_path):
    state = _randomised(_encoder_state("flexunet-resnet34"))  # torchvision's names: conv1, bn1, layer1.0.conv1, ...
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save(state, tmp_path / "resnet34-imagenet.pth")
    net = create_model("flexunet-resnet34", in_channels=1)
    info = load_weights(net, tmp_path / "resnet34-imagenet.pth", encoder_prefixes=get_model_spec("flexunet-resnet34").encoder_prefixes)
    encoder = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    assert info["method"] == "names" and info["encoder_share"] == 1.0 and info["loaded"] == len(encoder)
    assert torch.allclose(encoder["encoder.conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(encoder["encoder.layer4.2.bn2.running_var"], state["layer4.2.bn2.running_var"])
    assert info["missing"] == len(net.state_dict()) - len(encoder)  # the decoder stays at its initialisation


def test_lukemelas_efficientnet_names_without_the_stage_index(tmp_path):
    state = _randomised(_encoder_state("flexunet-efficientnet-b0"))
    flat = {re.sub(r"^_blocks\.\d+\.(\d+)\.", r"_blocks.\1.", k): v for k, v in state.items()}  # lukemelas numbering
    torch.save({"state_dict": flat}, tmp_path / "b0.pth")
    net = create_model("flexunet-efficientnet-b0", in_channels=3)
    info = load_weights(net, tmp_path / "b0.pth", encoder_prefixes=("encoder.",))
    assert info["method"] == "names" and info["encoder_share"] == 1.0
    got = net.state_dict()
    assert all(torch.equal(got[f"encoder.{k}"], v) for k, v in state.items())


def test_other_libraries_names_match_by_tensor_order(tmp_path):
    state = _randomised(_encoder_state("flexunet-efficientnet-b0"))
    renamed = {f"features.{i}.param": v for i, v in enumerate(state.values())}  # names nothing in medseg knows
    torch.save(renamed, tmp_path / "b0-other.pth")
    net = create_model("flexunet-efficientnet-b0", in_channels=3)
    info = load_weights(net, tmp_path / "b0-other.pth", encoder_prefixes=("encoder.",))
    assert info["method"] == "order" and info["encoder_share"] == 1.0
    got = net.state_dict()
    assert all(torch.equal(got[f"encoder.{k}"], v) for k, v in state.items())


def test_weights_of_another_network_are_refused(tmp_path):
    torch.save(_randomised(_encoder_state("flexunet-resnet18")), tmp_path / "resnet18.pth")
    net = create_model("flexunet-resnet50", in_channels=1)
    with pytest.raises(MedsegError, match=r"resnet18\.pth: fills only .* encoder's"):
        load_weights(net, tmp_path / "resnet18.pth", encoder_prefixes=("encoder.",))


def test_fit_with_an_encoder_only_file_reports_what_it_loaded(tmp_path):
    from medseg import runfolder as runfs
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict
    from tests.conftest import make_blob_folder, tiny_config

    torch.save(_randomised(_encoder_state("flexunet-resnet18")), tmp_path / "r18.pth")
    data = make_blob_folder(tmp_path / "d", n=8)
    cfg = tiny_config(data, tmp_path / "runs", train__epochs=1, schedule__warmup_epochs=0,
                      model={"name": "flexunet-resnet18", "pretrained": str(tmp_path / "r18.pth")})
    run = fit(config_from_dict(cfg), progress=False)
    log = (run / runfs.TRAIN_LOG).read_text()
    assert re.search(r"model.pretrained: \d+ tensors loaded by names \(\d+% of the network, 100% of its encoder\)", log), log
