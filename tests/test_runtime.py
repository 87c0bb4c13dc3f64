"""The runtime decisions: precision (bf16 by default only where the CPU computes bf16 in hardware)."""

import pytest

from medseg import runtime
from medseg.errors import MedsegError


@pytest.mark.parametrize("native, expect", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native, expect):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.resolve_precision("auto", "cpu") == expect
    assert runtime.resolve_precision("32", "cpu") == "32-true"
    assert runtime.resolve_precision("bf16", "cpu") == "bf16-mixed"


def test_fp16_needs_a_gpu():
    with pytest.raises(MedsegError, match="train.precision"):
        runtime.resolve_precision("16", "cpu")


# ---------------------------------------------------------------------------------------
# The device-selection seam (`runtime.select_device`): every verb's network runs where it says


def test_cuda_is_chosen_when_a_gpu_is_visible_and_the_cpu_otherwise(monkeypatch):
    import torch

    monkeypatch.setattr(runtime, "cuda_available", lambda: True)
    assert runtime.select_device() == torch.device("cuda", 0)
    assert runtime.inference_device(None) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")  # a DDP rank uses its own GPU
    assert runtime.select_device() == torch.device("cuda", 3)
    monkeypatch.setattr(runtime, "cuda_available", lambda: False)
    assert runtime.select_device() == torch.device("cpu")


def test_an_explicit_device_wins_over_the_accelerator_and_the_gpu(monkeypatch, tmp_path):
    import torch

    from medseg.config import config_from_dict
    from tests.conftest import tiny_config

    monkeypatch.setattr(runtime, "cuda_available", lambda: True)
    cfg = config_from_dict(tiny_config(tmp_path, tmp_path / "runs", train={"accelerator": "cpu"}))
    assert runtime.inference_device(cfg) == torch.device("cpu")  # the run trained on the CPU by choice
    with runtime.device_scope("cpu"):
        assert runtime.select_device() == torch.device("cpu")
        with runtime.device_scope("cuda:1"):
            assert runtime.inference_device(cfg) == torch.device("cuda", 1)
        assert runtime.select_device() == torch.device("cpu")
    with runtime.device_scope("gpu"):
        assert runtime.select_device() == torch.device("cuda", 0)
    assert runtime.select_device() == torch.device("cuda", 0)  # the scope is gone


def test_cuda_asked_for_without_a_gpu_and_typos_are_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(runtime, "cuda_available", lambda: False)
    with pytest.raises(MedsegError, match="no CUDA GPU"):
        runtime.select_device("cuda")
    for bad in ("gpu0", "cuda:x", "tpu", ""):
        if bad:
            with pytest.raises(MedsegError, match="--device"):
                runtime.parse_device(bad)


def test_fit_device_overrides():
    assert runtime.fit_device_overrides(None) == {} == runtime.fit_device_overrides("auto")
    assert runtime.fit_device_overrides("cpu") == {"accelerator": "cpu", "devices": 1}
    assert runtime.fit_device_overrides("cuda") == {"accelerator": "gpu"}
    assert runtime.fit_device_overrides("cuda:2") == {"accelerator": "gpu", "devices": [2]}
