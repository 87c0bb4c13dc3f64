"""`medseg export`: the run's best network as a self-contained ONNX or TorchScript file, with a sidecar JSON.

The exported model takes a float32 batch (N, C, H, W) at the run's input size, already
normalised as the run's data config says, and returns sigmoid probabilities (N, 1, H, W). The
sidecar (`model.json`) carries everything a deployment needs to get from a file to a mask:
the preprocessing settings, the tuned post-processing rule (or the contract's threshold), the
metric contract, the versions and the model file's sha256.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Optional

from rich.console import Console

import medseg
from medseg import runfolder as runfs
from medseg.errors import MedsegError
from medseg.postprocess import PostProcess

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
SIDECAR = "model.json"
ONNX_OPSET = 17


def _probability_model(net):
    import torch

    class ProbabilityModel(torch.nn.Module):
        """The network's first output through a sigmoid: what medseg's inference computes before any threshold."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            y = self.inner(x)
            if isinstance(y, (list, tuple)):
                y = y[0]
            return torch.sigmoid(y.float())

    return ProbabilityModel(net).eval()


def export_run(run_dir: Path, fmt: str = "onnx", out: Optional[Path] = None, console: Optional[Console] = None) -> Path:
    """Write the exported model and its sidecar into a new folder; returns the folder.

    Args:
        run_dir: the run folder (its model is exported: the checkpoint ``train.checkpoint`` names).
        fmt: 'onnx' or 'torchscript'.
        out: the folder to write (new or empty); default runs/NAME/exports/FORMAT[-N].
        console: where to print.
    """
    import torch

    if fmt not in FORMATS:
        raise MedsegError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    run_dir = runfs.open_run(run_dir)
    cfg = runfs.load_run_config(run_dir)
    state = runfs.load_state(run_dir)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401 — the exporter writes through it
        except ImportError:
            raise MedsegError("--format onnx needs the optional extra: pip install 'medseg[export]'") from None
    if out is not None:
        out = Path(out)
        runfs.check_output_dir(out, key="--out")
        if out.exists() and any(out.iterdir()):
            raise MedsegError(f"--out {out}: folder exists and is not empty (nothing is overwritten)")
    net, info = runfs.load_network(run_dir, cfg, state["in_channels"])
    net = net.to(memory_format=torch.contiguous_format).float().eval()
    model = _probability_model(net)
    h, w = cfg.data.input_size
    example = torch.zeros(1, state["in_channels"], h, w)
    folder = out if out is not None else runfs.create_run(run_dir / "exports", fmt)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FORMATS[fmt]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on MONAI's shape checks; the export is checked against medseg below
        if fmt == "onnx":
            torch.onnx.export(model, example, str(path), input_names=["image"], output_names=["probability"],
                              dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}}, opset_version=ONNX_OPSET,
                              dynamo=False)
        else:
            torch.jit.save(torch.jit.trace(model, example), str(path))
    rule = runfs.load_postprocess(run_dir) or PostProcess(cfg.eval.contract.threshold)
    sidecar = {
        "format": fmt,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "medseg_version": medseg.__version__,
        "torch_version": torch.__version__,
        "run": str(run_dir.resolve()),
        **runfs.checkpoint_record(info),
        "model": cfg.model.name,
        "input": {
            "name": "image", "layout": "NCHW", "dtype": "float32", "channels": state["in_channels"], "size": [h, w],
            "source": cfg.data.source, "color": cfg.data.color, "context_slices": cfg.data.context_slices,
            "resize_mode": cfg.data.resize_mode,
            "target_spacing": list(cfg.data.target_spacing) if cfg.data.target_spacing else None, "normalize": cfg.data.normalize.model_dump(mode="json"),
            "modality": cfg.data.modality,
        },
        "output": {"name": "probability", "layout": "N1HW", "meaning": "sigmoid probability of foreground"},
        "postprocess": rule.to_json(),
        "postprocess_text": rule.describe(),
        "contract": cfg.eval.contract.model_dump(mode="json"),
        "contract_text": cfg.eval.contract.describe(),
        "trained_precision": state["precision"],
    }
    runfs.write_json(folder / SIDECAR, sidecar)
    if console is not None:
        console.print(f"[bold green]exported {fmt}: {path} (+ {SIDECAR})")
    return folder
