"""Every verb that runs a network honours --device, and picks CUDA when a GPU is visible.

The GPU is mocked at the device-selection seam (`runtime.cuda_available`), not in the network:
a spy on `inference.predict_prob_sets` (the one function every verb's inference goes through)
records the device each verb asked for. On this CPU-only machine a verb that chose CUDA
would fail in torch, so the spy stops it first with a sentinel.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys

import pytest
import torch

from medseg import inference, runfolder as runfs, runtime
from tests.conftest import make_blob_folder, tiny_config, write_config


class WouldRunOnCuda(Exception):
    pass


def cli(*args) -> tuple[int, str]:
    from medseg import cli as medseg_cli

    err = io.StringIO()
    argv, sys.argv = sys.argv, ["medseg", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            medseg_cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        sys.argv = argv
    return code, err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medseg.commands.fit import fit
    from medseg.config import config_from_dict

    tmp = tmp_path_factory.mktemp("device")
    data = make_blob_folder(tmp / "d", n=12)
    raw = tiny_config(data, tmp / "runs", train__epochs=1, schedule__warmup_epochs=0)
    return fit(config_from_dict(raw), progress=False), data, write_config(tmp / "cfg.yaml", raw)


@pytest.fixture
def gpu_visible(monkeypatch):
    """A GPU 'is visible' at the seam; every inference call's device is recorded (and a CUDA one stopped)."""
    monkeypatch.setattr(runtime, "cuda_available", lambda: True)
    seen: list[torch.device] = []
    real = inference.predict_prob_sets

    def spy(net, images, sets, batch_size=16, precision="32-true", device="cpu", channels_last=False, window=None):
        seen.append(torch.device(device))
        if torch.device(device).type == "cuda":
            raise WouldRunOnCuda(str(device))
        return real(net, images, sets, batch_size, precision, device, channels_last, window)

    monkeypatch.setattr(inference, "predict_prob_sets", spy)
    return seen


def _copy(run, tmp_path):
    dst = tmp_path / "copy" / run.name
    shutil.copytree(run, dst)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["evaluate", "tune", "predict", "doctor", "report", "fit", "plan"])
def test_every_verb_runs_on_the_cpu_with_device_cpu_while_a_gpu_is_visible(verb, trained, gpu_visible, tmp_path):
    run, data, cfg = trained
    args = {
        "evaluate": lambda: ("evaluate", run),
        "tune": lambda: ("tune", _copy(run, tmp_path), "--force"),
        "predict": lambda: ("predict", run, data / "images", tmp_path / "pred"),
        "doctor": lambda: ("doctor", run),
        "report": lambda: ("report", _copy(run, tmp_path), "--no-doctor"),
        "fit": lambda: ("fit", cfg, "--set", f"output_dir={tmp_path / 'runs'}"),
        "plan": lambda: ("plan", cfg, "--out", tmp_path / "plan", "--set", "plan.measure=true"),
    }[verb]()
    code, err = cli(*args, "--device", "cpu", *(("--no-progress",) if verb in ("evaluate", "tune", "fit", "plan") else ()))
    assert code == 0, err[-3000:]
    assert all(d.type == "cpu" for d in gpu_visible), gpu_visible
    if verb == "plan":
        from medseg.config import read_yaml

        plan = runfs.read_json(tmp_path / "plan" / runfs.PLAN)
        assert plan["cost"]["device"] == "cpu" and plan["cost"]["method"] == "measured", plan["cost"]
        assert read_yaml(tmp_path / "plan" / runfs.CONFIG)["train"]["accelerator"] == "cpu"
    else:
        assert gpu_visible, "the verb ran no network"
    if verb == "fit":
        (new,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
        assert "accelerator: cpu" in (new / runfs.CONFIG).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["evaluate", "predict", "doctor"])
def test_without_device_a_visible_gpu_is_chosen(verb, trained, gpu_visible, tmp_path):
    run, data, _ = trained
    args = {"evaluate": ("evaluate", run, "--no-progress"), "predict": ("predict", run, data / "images", tmp_path / "pred"),
            "doctor": ("doctor", run)}[verb]
    # evaluate and predict stop at the sentinel; the doctor notes a failed evidence step and goes on
    with contextlib.suppress(WouldRunOnCuda):
        cli(*args)
    assert gpu_visible and gpu_visible[0] == torch.device("cuda", 0), gpu_visible
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


def test_a_bad_device_is_one_line_and_exit_2(tmp_path):
    code, err = cli("evaluate", tmp_path, "--device", "tpu")
    assert code == 2 and "--device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
