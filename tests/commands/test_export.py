"""`medseg export`: ONNX (run with onnxruntime) and TorchScript models that reproduce medseg's probabilities."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from medseg import runfolder as runfs
from medseg.commands.export import export_run
from medseg.commands.fit import fit
from medseg.config import config_from_dict
from medseg.errors import MedsegError
from medseg.inference import predict_probs
from tests.conftest import make_blob_folder, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_and_val(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data = make_blob_folder(tmp / "d", n=12)
    run = fit(config_from_dict(tiny_config(data, tmp / "runs", train__epochs=1, schedule__warmup_epochs=0)), progress=False)
    cfg = runfs.load_run_config(run)
    val = runfs.load_split_part(run, cfg)
    net, _ = runfs.load_network(run, cfg, 1)
    # medseg's own probabilities in float32 (the exported graph is float32 whatever precision trained it)
    return run, val, predict_probs(net, val.images, 4, "32-true", "cpu", cfg.train.channels_last)


def test_onnx_export_matches_medseg_within_1e4(run_and_val, tmp_path):
    import onnxruntime as ort

    run, val, expected = run_and_val
    folder = export_run(run, "onnx", tmp_path / "onnx")
    side = json.loads((folder / "model.json").read_text())
    assert side["file"] == "model.onnx" and side["sha256"] == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert side["input"]["size"] == [64, 64] and side["input"]["channels"] == 1 and side["postprocess"]["threshold"] > 0
    assert side["contract_text"] == runfs.load_run_config(run).eval.contract.describe()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": val.images.astype(np.float32)})[0][:, 0]  # a batch of any size
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


def test_torchscript_export_matches_medseg_within_1e4(run_and_val, tmp_path):
    run, val, expected = run_and_val
    folder = export_run(run, "torchscript", tmp_path / "ts")
    model = torch.jit.load(str(folder / "model.pt"))
    with torch.no_grad():
        got = model(torch.from_numpy(val.images.astype(np.float32))).numpy()[:, 0]
    assert np.abs(got - expected).max() <= 1e-4
    assert json.loads((folder / "model.json").read_text())["format"] == "torchscript"


def test_export_never_overwrites_and_defaults_beside_the_run(run_and_val, tmp_path):
    run, _, _ = run_and_val
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(MedsegError, match="not empty"):
        export_run(run, "torchscript", tmp_path / "full")
    with pytest.raises(MedsegError, match="--format"):
        export_run(run, "tflite")
    folder = export_run(run, "torchscript")
    assert folder.parent == run / "exports" and (folder / "model.pt").is_file()
