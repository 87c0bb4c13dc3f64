import pytest
import torch

from medseg.errors import MedsegError
from medseg.models import available_models, create_model, load_weights


@pytest.mark.parametrize("name", ["unet", "basicunet", "flexunet-resnet18", "flexunet-efficientnet-b0"])
def test_models_give_one_logit_channel_at_input_size(name):
    net = create_model(name, in_channels=3, channels=[8, 16, 32])
    with torch.no_grad():
        y = net(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 1, 64, 64)


def test_registry_names():
    names = available_models()
    assert {"unet", "basicunet", "flexunet-resnet34", "flexunet-resnet50", "flexunet-efficientnet-b4"} <= set(names)


def test_local_pretrained_weights_load(tmp_path):
    src = create_model("unet", 1, [8, 16, 32])
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = create_model("unet", 1, [8, 16, 32])
    info = load_weights(dst, path)
    assert info["loaded"] == len(src.state_dict())
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MedsegError, match="bad.pt"):
        load_weights(dst, tmp_path / "bad.pt")
