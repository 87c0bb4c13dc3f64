"""The Python API: what a notebook needs, on top of the same commands the CLI runs.

    import medseg
    run = medseg.fit("config.yaml", train={"epochs": 5})      # or a dict, or a Config
    predictor = medseg.load(run)
    out = predictor.predict(image)                            # a numpy array, a path, or a list of them
    out.prob, out.mask                                        # at the image's own size, the tuned rule applied
    medseg.metrics.score([out.prob], [truth])["summary"]      # with an explicit metric contract

`medseg.evaluate(run)` and `medseg.export(run, "onnx")` are the verbs of the same names.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from medseg import runfolder as runfs
from medseg.commands.evaluate import evaluate_run
from medseg.commands.export import export_run
from medseg.commands.fit import fit as fit_command
from medseg.commands.predict import predict_run
from medseg.config import Config, apply_overrides, config_from_dict, read_yaml
from medseg.data.preprocess import to_original
from medseg.data.sources.images import prepare_image
from medseg.inference import run_probs
from medseg.postprocess import PostProcess
from medseg.runtime import device_scope

Image = Union[np.ndarray, str, Path]


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _flatten(f"{prefix}.{k}" if prefix else str(k), v)]
    import json

    return [f"{prefix}={json.dumps(value)}"]


def fit(config: Union[str, Path, dict, Config], progress: bool = False, device: Optional[str] = None, **sections: Any) -> Path:
    """Train a model into a new run folder (as `medseg fit`); returns the run folder.

    With train.devices > 1 Lightning starts the other DDP processes by running this script
    again: guard the call with `if __name__ == "__main__":`.

    Args:
        config: a YAML path, a config mapping, or a validated `Config`.
        progress: show progress bars.
        device: 'cpu', 'cuda', 'cuda:N' or 'auto' (as `medseg fit --device`).
        sections: overrides by section, e.g. `train={"epochs": 5}` or `name="busi"`.
    """
    if isinstance(config, Config):
        raw, base = config.model_dump(mode="json"), Path.cwd()
    elif isinstance(config, dict):
        raw, base = dict(config), Path.cwd()
    else:
        raw, base = read_yaml(Path(config)), Path(config).resolve().parent
    raw = apply_overrides(raw, [s for k, v in sections.items() for s in _flatten(k, v)])
    return fit_command(config_from_dict(raw, base), progress=progress, device=device)


def evaluate(run: Union[str, Path], device: Optional[str] = None, **kwargs: Any) -> dict:
    """Score a run's model checkpoint (as `medseg evaluate`) on `device`; keyword arguments as `evaluate_run`."""
    with device_scope(device):
        return evaluate_run(Path(run), progress=kwargs.pop("progress", False), **kwargs)


def export(run: Union[str, Path], fmt: str = "onnx", out: Optional[Path] = None) -> Path:
    """Export a run's network (as `medseg export`); returns the folder with the model and its sidecar."""
    return export_run(Path(run), fmt, out)


@dataclass
class Prediction:
    """One image's prediction at its own size.

    Attributes:
        prob: (H, W) float32 probabilities.
        mask: (H, W) bool, the run's tuned rule applied (or the bare threshold with raw=True).
        name: the file stem for a path, else the index in the call.
    """

    prob: np.ndarray
    mask: np.ndarray
    name: str


class Predictor:
    """A run's network (its train.checkpoint) with its preprocessing and tuned post-processing, for arrays and files.

    Args:
        run: the run folder.
        device: where the network runs: 'auto' (default: CUDA when visible, else the CPU), 'cpu',
            'cuda' or 'cuda:N'.
    """

    def __init__(self, run: Union[str, Path], device: Optional[str] = None):
        self.device = device
        self.run = runfs.open_run(Path(run))
        self.cfg = runfs.load_run_config(self.run)
        self.state = runfs.load_state(self.run)
        self.net, self.checkpoint = runfs.load_network(self.run, self.cfg, self.state["in_channels"])
        self.rule = runfs.load_postprocess(self.run)

    def _rule(self, raw: bool, threshold: Optional[float]) -> PostProcess:
        if threshold is not None:
            return PostProcess(float(threshold))
        if raw or self.rule is None:
            return PostProcess(self.cfg.eval.contract.threshold)
        return self.rule

    def predict(self, images: Union[Image, Sequence[Image]], raw: bool = False, threshold: Optional[float] = None,
                tta: Optional[bool] = None) -> Union[Prediction, list[Prediction]]:
        """Probabilities and masks for one image or a list of them.

        Args:
            images: a 2D array (H, W) or (H, W, 3) of stored values, a path to an image file, or a
                list of them; for volumes, folders and DICOM, use `predict_path`.
            raw: ignore the tuned rule (the contract's threshold only).
            threshold: a bare threshold instead of the rule.
            tta: flip TTA on or off (default: what the rule was tuned with).

        Returns:
            one `Prediction` for one image, a list for a list.
        """
        single = isinstance(images, (np.ndarray, str, Path))
        items = [images] if single else list(images)
        if not items:
            return []
        from medseg.data.readers import read_image_2d

        prepared, infos, names = [], [], []
        for i, item in enumerate(items):
            arr = read_image_2d(Path(item)) if isinstance(item, (str, Path)) else np.asarray(item)
            where = str(item) if isinstance(item, (str, Path)) else f"image {i}"
            x, info = prepare_image(arr, self.cfg.data, self.state["in_channels"], where=where)
            prepared.append(x)
            infos.append(info)
            names.append(Path(item).stem if isinstance(item, (str, Path)) else str(i))
        rule = self._rule(raw, threshold)
        use_tta = rule.tta if tta is None else tta
        with device_scope(self.device):
            probs = run_probs(self.net, np.stack(prepared), self.cfg, self.state, tta=use_tta)
        out = []
        for p, info, name in zip(probs, infos, names):
            full = to_original(p, info)
            out.append(Prediction(full.astype(np.float32), rule.apply(full, area_scale=full.size / p.size), name))
        return out[0] if single else out

    def predict_path(self, path: Union[str, Path], output: Optional[Path] = None, raw: bool = False) -> Path:
        """Predict a file or folder as `medseg predict` does (images, volumes, DICOM), into `output` (default: a new temporary folder)."""
        output = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="medseg-predict-")) / "out"
        with device_scope(self.device):
            return predict_run(self.run, Path(path), output, raw=raw)


def load(run: Union[str, Path], device: Optional[str] = None) -> Predictor:
    """A `Predictor` for a run folder (its model checkpoint, preprocessing and tuned rule), on `device` (see `Predictor`)."""
    return Predictor(run, device)
