"""The flexunet family: its ResNet shortcuts trace to graphs that accept any batch size."""

import functools
import warnings

import numpy as np
import pytest
import torch

from medseg.models import create_model


@pytest.mark.parametrize("name", ["flexunet-resnet18"])
def test_an_onnx_export_traced_at_batch_1_runs_a_batch_of_3(name, tmp_path):
    # MONAI's type-A shortcut built its zero channels with torch.zeros(x.size(0), ...), which the tracer froze at
    # the example's batch: the exported default model failed on any other batch size. resnet18/34 share the block.
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    net = create_model(name, 1).eval()
    assert not any(isinstance(getattr(m, "downsample", None), functools.partial)
                   and m.downsample.func.__name__ == "_downsample_basic_block" for m in net.modules())
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 64, 64), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        ref = net(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert got.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_the_traceable_shortcut_gives_monais_values_and_gradients():
    from monai.networks.nets import FlexibleUNet

    torch.manual_seed(0)
    kwargs = dict(in_channels=1, out_channels=1, backbone="resnet18", pretrained=False, spatial_dims=2)
    monai_net = FlexibleUNet(**kwargs)
    ours = create_model("flexunet-resnet18", 1)
    ours.load_state_dict(monai_net.state_dict())
    x = torch.randn(2, 1, 64, 64)
    a, b = monai_net(x), ours(x)
    torch.testing.assert_close(b, a, rtol=0, atol=0)
    a.square().sum().backward()
    b.square().sum().backward()
    for (k, p), q in zip(monai_net.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=k)
