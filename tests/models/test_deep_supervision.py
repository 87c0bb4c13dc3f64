"""Deep supervision: a network that emits side outputs, what the loss and the run make of them."""

import pytest
import torch
import torch.nn.functional as F

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.models import create_model, get_model_spec


def _plain_and_supervised(name: str, side: int, in_channels: int = 1):
    torch.manual_seed(0)
    plain = create_model(name, in_channels)
    sup = create_model(name, in_channels, side_outputs=side)
    missing, unexpected = sup.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("side_heads.") for k in missing)
    return plain, sup


@pytest.mark.parametrize("name, side", [("flexunet-resnet18", 4), ("flexunet-efficientnet-b0", 2)])
def test_side_outputs_are_1x1_heads_on_the_decoder_stages_above_the_last(name, side):
    """Recomputed independently: hooks on the plain network's decoder stages, each side head applied to its stage."""
    plain, sup = _plain_and_supervised(name, side)
    x = torch.randn(2, 1, 64, 96)
    stages = []
    hooks = [b.register_forward_hook(lambda m, i, o: stages.append(o)) for b in plain.decoder.blocks]
    plain.train()
    sup.train()
    with torch.no_grad():  # same seed for both: EfficientNet drops connections at random in training
        torch.manual_seed(1)
        ref = plain(x)
        torch.manual_seed(1)
        outs = sup(x)
    for h in hooks:
        h.remove()
    assert isinstance(outs, list) and len(outs) == 1 + side
    torch.testing.assert_close(outs[0], ref)  # the full-resolution output is the plain network's
    for i, (out, head) in enumerate(zip(outs[1:], sup.side_heads), start=1):
        stage = stages[len(stages) - 1 - i]  # finest first: side output i is at 1/2**i
        assert out.shape == (2, 1, 64 // 2**i, 96 // 2**i)
        torch.testing.assert_close(out, F.conv2d(stage, head.weight, head.bias))
    # in eval mode the network is the plain one: inference, TTA and export never see the side outputs
    plain.eval()
    sup.eval()
    with torch.no_grad():
        torch.testing.assert_close(sup(x), plain(x))


def test_side_heads_learn_from_the_loss():
    from medseg.losses import build_loss

    _, sup = _plain_and_supervised("flexunet-resnet18", 3)
    sup.train()
    x = torch.randn(2, 1, 64, 64)
    t = torch.zeros(2, 1, 64, 64)
    t[:, :, 20:30, 30:34] = 1
    loss = build_loss({"bce": 1, "dice": 1})
    loss(sup(x), t).backward()
    for head in sup.side_heads:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_config_names_the_key_when_the_network_emits_no_side_outputs():
    assert get_model_spec("flexunet-resnet34").side_outputs == 4 and get_model_spec("unet").side_outputs == 0
    with pytest.raises(MedsegError, match=r"^config error: model.deep_supervision: 1 side outputs, but model 'unet' emits none"):
        load_config(None, ["model.name=unet", "model.deep_supervision=1", "data.input_size=[64, 64]"])
    with pytest.raises(MedsegError, match=r"model.deep_supervision: 5 side outputs.*at most 4"):
        load_config(None, ["model.deep_supervision=5"])
    with pytest.raises(MedsegError, match=r"loss.deep_supervision: 2 weights for the 4 outputs"):
        load_config(None, ["model.deep_supervision=3", "loss={bce: 1, dice: 1, deep_supervision: [1.0, 0.5]}"])
    cfg = load_config(None, ["model.deep_supervision=3"])
    assert cfg.model.deep_supervision == 3
    with pytest.raises(MedsegError, match="model.deep_supervision"):
        create_model("unet", 1, side_outputs=1)


@pytest.mark.slow
def test_a_run_with_side_outputs_trains_them_and_its_checkpoint_serves_inference(tmp_path):
    """fit -> checkpoints hold the trained side heads -> the run folder rebuilds the network strictly -> evaluate."""
    from medseg import runfolder as runfs
    from medseg.commands.evaluate import evaluate_run
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict
    from tests.conftest import make_blob_folder, tiny_config

    data = make_blob_folder(tmp_path / "d", n=8, size=64)
    cfg = config_from_dict(tiny_config(
        data, tmp_path / "runs", model={"name": "flexunet-resnet18", "deep_supervision": 2}, train__epochs=2,
    ))
    run = fit(cfg, progress=False)
    net, _ = runfs.load_network(run, runfs.load_run_config(run), in_channels=1)
    torch.manual_seed(0)
    fresh = create_model("flexunet-resnet18", 1, side_outputs=2)
    assert len(net.side_heads) == 2
    assert not torch.equal(net.side_heads[1].weight, fresh.side_heads[1].weight)  # trained, not the initial weights
    assert not net.training
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    summary = runfs.read_json(run / runfs.SUMMARY)
    again = evaluate_run(run, progress=False)
    assert again["dice"] == pytest.approx(summary["dice"], abs=1e-6)
