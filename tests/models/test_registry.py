import pytest
import torch

from medseg.errors import MedsegError
from medseg.models import available_models, create_model, get_model_spec, load_weights


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


@pytest.mark.parametrize("name", available_models())
def test_every_spec_states_its_true_stride(name):
    """The registered stride is the network's total downsampling: its coarsest feature map is side / stride.

    Maps of 1 px are global pooling (EfficientNet's squeeze-and-excitation), not downsampling.
    """
    spec = get_model_spec(name)
    stride = spec.output_stride()
    net = create_model(name, in_channels=1).eval()
    side = 4 * stride
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]) if isinstance(o, torch.Tensor) and o.ndim == 4 else None)
             for m in net.modules()]
    with torch.no_grad():
        out = net(torch.zeros(1, 1, side, side))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 1, side, side)
    sizes = [x for x in sizes if x > 1]
    assert min(sizes) == side // stride, f"{name}: coarsest feature map {min(sizes)} px at input {side}, not {side // stride}"


@pytest.mark.slow
def test_segresnet_is_one_registration_and_trains_in_a_fit(tmp_path):
    """docs/ARCHITECTURE.md's example: MONAI SegResNet registered with its stride, usable by name, checked by config."""
    from medseg import runfolder as runfs
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict
    from tests.conftest import make_blob_folder, tiny_config

    spec = get_model_spec("segresnet")
    assert spec.output_stride() == 8 and spec.encoder_prefixes
    with pytest.raises(MedsegError, match="multiple of 8"):
        config_from_dict(tiny_config(tmp_path, tmp_path, model={"name": "segresnet"}, data__input_size=[60, 60]))
    data = make_blob_folder(tmp_path / "d", n=8, size=48)
    cfg = config_from_dict(tiny_config(data, tmp_path / "runs", model={"name": "segresnet"}, data__input_size=[48, 48], train__epochs=2))
    run = fit(cfg, progress=False)
    summary = runfs.read_json(run / runfs.SUMMARY)
    assert 0.0 <= summary["dice"] <= 1.0 and summary["best_epoch"] >= 0


def test_config_refuses_an_input_size_the_model_cannot_take(tmp_path):
    from medseg.config import config_from_dict

    with pytest.raises(MedsegError, match=r"data.input_size: \[240, 240\].*multiple of 32.*flexunet-resnet34"):
        config_from_dict({"data": {"input_size": [240, 240]}})
    config_from_dict({"data": {"input_size": [240, 240]}, "model": {"name": "unet"}})  # unet's 5 levels: stride 16


def test_smp_models_register_only_with_the_optional_extra():
    from medseg.models import smp

    names = [n for n in available_models() if n.startswith("smp-")]
    if not smp.available():
        assert names == []  # not installed here: nothing registered, nothing imported
    else:
        assert "smp-unet-resnet34" in names and get_model_spec("smp-unet-resnet34").output_stride() == 32
