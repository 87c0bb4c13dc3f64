"""The image head: a "has foreground" logit beside the mask, its loss, and the one map it gives inference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.losses import build_loss
from medseg.models import create_model, get_model_spec


def _plain_and_headed(name: str = "flexunet-resnet18", side: int = 0):
    torch.manual_seed(0)
    plain = create_model(name, 1)
    headed = create_model(name, 1, side_outputs=side, image_head=True)
    missing, unexpected = headed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("image_head.", "side_heads.")) for k in missing)
    return plain, headed


def test_training_output_is_the_masks_and_a_linear_logit_on_the_pooled_deepest_features():
    plain, headed = _plain_and_headed(side=2)
    x = torch.randn(3, 1, 64, 96)
    deepest = []
    hook = plain.encoder.register_forward_hook(lambda m, i, o: deepest.append(o[-1]))
    plain.train()
    headed.train()
    with torch.no_grad():
        ref = plain(x)
        out = headed(x)
    hook.remove()
    assert set(out) == {"masks", "image"} and isinstance(out["masks"], list) and len(out["masks"]) == 3
    torch.testing.assert_close(out["masks"][0], ref)
    f = deepest[0]
    assert f.shape[1] == 512
    # recomputed independently: mean and max over the spatial axes, then the linear layer
    pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
    torch.testing.assert_close(out["image"], pooled @ headed.image_head.weight.T + headed.image_head.bias)
    assert out["image"].shape == (3, 1)


def test_eval_output_is_the_logit_of_the_product_of_the_two_probabilities():
    plain, headed = _plain_and_headed()
    x = torch.randn(2, 1, 64, 64)
    deepest = []
    hook = headed.encoder.register_forward_hook(lambda m, i, o: deepest.append(o[-1]))
    plain.eval()
    headed.eval()  # batch norm on running statistics, as inference runs
    with torch.no_grad():
        headed.image_head.bias.fill_(-1.0)  # an image probability well inside (0, 1)
        mask = torch.sigmoid(plain(x)).numpy()
        combined = headed(x)
        f = deepest[0]
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        image = torch.sigmoid(pooled @ headed.image_head.weight.T + headed.image_head.bias).numpy()
    hook.remove()
    assert combined.shape == (2, 1, 64, 64) and torch.isfinite(combined).all()
    np.testing.assert_allclose(torch.sigmoid(combined).numpy(), mask * image[:, :, None, None], rtol=1e-4, atol=1e-6)
    # saturated logits stay finite (the product is capped just below 1)
    with torch.no_grad():
        headed.image_head.bias.fill_(1e4)
        assert torch.isfinite(headed(x * 1e3)).all()


def test_the_loss_adds_bce_against_any_foreground_and_the_head_learns_from_it():
    _, headed = _plain_and_headed()
    headed.train()
    x = torch.randn(2, 1, 64, 64)
    t = torch.zeros(2, 1, 64, 64)
    t[0, :, 20:30, 30:34] = 1  # image 0 has a lesion, image 1 is empty
    out = headed(x)
    loss = build_loss({"bce": 1, "dice": 1, "image": 0.5})
    total = loss(out, t)
    pixel = build_loss({"bce": 1, "dice": 1})(out["masks"], t)
    p = torch.sigmoid(out["image"].detach().double()).squeeze(1)
    label = torch.tensor([1.0, 0.0], dtype=torch.float64)
    image_bce = float(-(label * torch.log(p) + (1 - label) * torch.log(1 - p)).mean())
    assert loss.last_terms["image"] == pytest.approx(image_bce, rel=1e-5)
    assert float(total) == pytest.approx(float(pixel) + 0.5 * image_bce, rel=1e-5)
    total.backward()
    assert headed.image_head.weight.grad is not None and headed.image_head.weight.grad.abs().sum() > 0


def test_config_refusals_name_the_key():
    assert get_model_spec("flexunet-resnet34").image_head and not get_model_spec("unet").image_head
    with pytest.raises(MedsegError, match=r"^config error: model.image_head: model 'unet' has no image head"):
        load_config(None, ["model.name=unet", "model.image_head=true", "data.input_size=[64, 64]"])
    with pytest.raises(MedsegError, match=r"loss.image: weighs model.image_head's loss, but model.image_head is false"):
        load_config(None, ["loss={bce: 1, dice: 1, image: 1}"])
    with pytest.raises(MedsegError, match=r"loss.image: the image head's loss weight must be a number >= 0"):
        load_config(None, ["model.image_head=true", "loss={bce: 1, dice: 1, image: -1}"])
    assert load_config(None, ["model.image_head=true", "loss={bce: 1, dice: 1, image: 0.5}"]).model.image_head
    with pytest.raises(MedsegError, match="model.image_head"):
        create_model("unet", 1, image_head=True)


@pytest.mark.slow
def test_a_run_with_an_image_head_trains_it_and_every_verb_reads_one_map(tmp_path):
    """fit -> the head is trained and logged -> the run folder rebuilds it -> evaluate agrees -> ONNX gives the same map."""
    from medseg import runfolder as runfs
    from medseg.commands.evaluate import evaluate_run
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict
    from tests.conftest import make_blob_folder, tiny_config

    data = make_blob_folder(tmp_path / "d", n=8, size=64)
    cfg = config_from_dict(tiny_config(data, tmp_path / "runs", model={"name": "flexunet-resnet18", "image_head": True}, train__epochs=2))
    run = fit(cfg, progress=False)
    rows = runfs.read_csv(run / runfs.EPOCHS_CSV)
    assert all(np.isfinite(float(r["train_loss_image"])) for r in rows)
    net, _ = runfs.load_network(run, runfs.load_run_config(run), in_channels=1)
    torch.manual_seed(0)
    fresh = create_model("flexunet-resnet18", 1, image_head=True)
    assert not torch.equal(net.image_head.weight, fresh.image_head.weight)
    summary = runfs.read_json(run / runfs.SUMMARY)
    assert evaluate_run(run, progress=False)["dice"] == pytest.approx(summary["dice"], abs=1e-6)

    import onnxruntime as ort

    from medseg.commands.export import export_run
    from medseg.inference import predict_probs

    cfg = runfs.load_run_config(run)
    val = runfs.load_split_part(run, cfg)
    expected = predict_probs(net, val.images, 4, "32-true", "cpu", cfg.train.channels_last)
    folder = export_run(run, "onnx", tmp_path / "onnx")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": val.images.astype(np.float32)})[0][:, 0]
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4
