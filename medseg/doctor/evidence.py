"""What the doctor knows about a run: its files, and (optionally) the checkpoint re-run on validation.

`load_evidence` reads the run folder; `gather_eval` reloads the data and predicts the validation
images with the best checkpoint, keeping only what the checks need (probabilities, per-image
statistics, small thumbnails). The family modules read a `RunEvidence` and never touch files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from medseg import run as runfs
from medseg.errors import MedsegError

# Side of the thumbnails compared for duplicates: small enough that noise averages out and
# re-encoding or slight resizing does not matter, large enough to tell two anatomies apart.
THUMB_SIDE = 16


@dataclass
class EvalEvidence:
    """The best checkpoint re-run on the validation images (hard metrics under the contract).

    Attributes:
        probs: (N, H, W) validation probabilities (NaN replaced by 0 when `probs_finite` is False).
        masks: (N, H, W) bool validation masks at input size.
        val_ids / train_ids: sample ids in the same order as the arrays.
        probs_finite: the network produced only finite probabilities.
        hard_rows: `case_metrics` rows at the contract threshold, kind hard.
        hard_summary: their summary (per-image or global reduction as the contract says).
        soft_dice: soft Dice of the same predictions.
        sweep: `threshold_sweep` of the predictions (None when not computable).
        found_lesion_dice: Dice of each truth lesion that was found, against the predicted
            components that overlap it.
        thumbs_train / thumbs_val: (N, THUMB_SIDE**2) z-scored thumbnails (NaN rows: flat image).
        intensity_train / intensity_val: (N, 4) per-image mean, std, 1st and 99th percentile of
            the normalised network input.
        mask_values: distinct mask values the loader produced (expected: 0 and 1).
        train_positive_share: share of training images with foreground.
        best_epoch: epoch of the checkpoint.
    """

    probs: np.ndarray
    masks: np.ndarray
    val_ids: list[str]
    train_ids: list[str]
    probs_finite: bool
    hard_rows: list[dict]
    hard_summary: dict
    soft_dice: float
    sweep: Optional[dict]
    found_lesion_dice: list[float]
    thumbs_train: np.ndarray
    thumbs_val: np.ndarray
    intensity_train: np.ndarray
    intensity_val: np.ndarray
    mask_values: list
    train_positive_share: float
    best_epoch: int


@dataclass
class RunEvidence:
    """A run folder's files, read once.

    Attributes:
        run_dir: the run folder.
        raw_config: config.yaml as saved, over the schema defaults (readable even when the saved
            config no longer validates).
        cfg: the validated Config, or None (see config_error).
        fingerprint, split, state, summary: the JSON files ({} when missing).
        epochs: metrics/epochs.csv rows.
        cases: metrics/cases.csv rows.
        saved_sweep: metrics/threshold_sweep.json (from `medseg evaluate --sweep`), or None.
        report_text: report.md, if written.
        eval: the checkpoint re-run, or None.
        eval_error: why the re-run was not possible, or None.
    """

    run_dir: Path
    raw_config: dict
    cfg: Any
    config_error: Optional[str]
    fingerprint: dict
    split: dict
    state: dict
    summary: dict
    epochs: list[dict]
    cases: list[dict]
    saved_sweep: Optional[dict] = None
    report_text: str = ""
    eval: Optional[EvalEvidence] = None
    eval_error: Optional[str] = None
    notes: list[str] = field(default_factory=list)

    def get(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key (e.g. `optim.lr`), from the saved config over defaults."""
        node: Any = self.raw_config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def series(self, name: str) -> np.ndarray:
        """One epochs.csv column as floats in epoch order (NaN where missing or not a number)."""
        return np.array([_as_float(r.get(name)) for r in self.epochs], dtype=float)

    @property
    def epoch_numbers(self) -> np.ndarray:
        return self.series("epoch")

    @property
    def contract(self) -> dict:
        """The metric contract as a dict (saved config first, then summary.json)."""
        c = self.get("eval.contract") or self.summary.get("contract") or {}
        return {"kind": "hard", "threshold": 0.5, "reduction": "per_image", "empty": "one", **c}


def _as_float(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return float("nan")


# Config mappings that a saved value replaces whole (their keys are user data, not schema fields).
_ATOMIC_KEYS = {"loss", "overrides"}


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in _ATOMIC_KEYS
        out[k] = _deep_merge(out[k], v) if nested else v
    return out


def _read_optional_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = runfs.read_json(path)
    except MedsegError:
        return {}
    return data if isinstance(data, dict) else {}


def _validated_config(raw: dict, run_dir: Path):
    """(Config, None) or, when cross-field rules reject the saved config, section-wise (Config, error)."""
    from medseg import config as C

    try:
        return C.config_from_dict(raw, run_dir), None
    except MedsegError as e:
        error = str(e)
    # A saved config that breaks a cross-field rule (e.g. warm-up >= epochs written by hand) is
    # still diagnosable: validate each section alone and skip the cross-field rules.
    try:
        sections = {}
        for name, f in C.Config.model_fields.items():
            if name in raw:
                ann = f.annotation
                sections[name] = ann.model_validate(raw[name]) if isinstance(ann, type) and issubclass(ann, C.BaseModel) else raw[name]
        cfg = C.Config.model_construct(**{**C.Config().__dict__, **sections})
        return C._resolve_paths(cfg, run_dir), error
    except Exception:  # noqa: BLE001 - any failure here leaves the doctor with the raw dict only
        return None, error


def load_evidence(run_dir: Path) -> RunEvidence:
    """Read everything the checks need from a run folder (missing optional files are empty)."""
    from medseg.config import Config, read_yaml

    run_dir = runfs.open_run(Path(run_dir))
    saved = read_yaml(run_dir / runfs.CONFIG)
    raw = _deep_merge(Config().model_dump(mode="json"), saved)
    cfg, config_error = _validated_config(saved, run_dir)
    sweep_path = run_dir / "metrics" / "threshold_sweep.json"
    report = run_dir / "report.md"
    return RunEvidence(
        run_dir=run_dir,
        raw_config=raw,
        cfg=cfg,
        config_error=config_error,
        fingerprint=_read_optional_json(run_dir / runfs.FINGERPRINT),
        split=_read_optional_json(run_dir / runfs.SPLIT),
        state=_read_optional_json(run_dir / runfs.STATE),
        summary=_read_optional_json(run_dir / runfs.SUMMARY),
        epochs=runfs.read_csv(run_dir / runfs.EPOCHS_CSV),
        cases=runfs.read_csv(run_dir / runfs.CASES_CSV),
        saved_sweep=_read_optional_json(sweep_path) or None,
        report_text=report.read_text(errors="replace") if report.is_file() else "",
    )


def thumbnails(images: np.ndarray, side: int = THUMB_SIDE, chunk: int = 256) -> np.ndarray:
    """(N, C, H, W) -> (N, side*side) block-mean thumbnails of the channel mean, each z-scored.

    A flat thumbnail (no variation) has no defined correlation and becomes a row of NaN.
    Images are processed `chunk` at a time so a large dataset is never copied whole.
    """
    import torch
    import torch.nn.functional as F

    out = np.zeros((len(images), side * side))
    for start in range(0, len(images), chunk):
        part = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk], dtype=np.float32))
        small = F.adaptive_avg_pool2d(part.mean(1, keepdim=True), (side, side))
        out[start : start + len(part)] = small.reshape(len(part), -1).double().numpy()
    out -= out.mean(1, keepdims=True)
    sd = out.std(1, keepdims=True)
    flat = sd[:, 0] <= 1e-8
    out[~flat] /= sd[~flat]
    out[flat] = np.nan
    return out


def intensity_stats(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, 4): mean, std, 1st and 99th percentile of each image."""
    out = np.zeros((len(images), 4))
    for i, img in enumerate(images):
        v = np.asarray(img, dtype=np.float64).ravel()
        out[i] = (v.mean(), v.std(), *np.percentile(v, [1, 99]))
    return out


def found_lesion_dice(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Dice of every found truth lesion against the union of predicted components touching it."""
    from medseg.metrics.lesions import label_components

    t_lab, n_t = label_components(truth)
    if n_t == 0 or not pred.any():
        return []
    p_lab, _ = label_components(pred)
    out = []
    for i in range(1, n_t + 1):
        lesion = t_lab == i
        touching = np.unique(p_lab[lesion & (p_lab > 0)])
        if touching.size == 0:
            continue
        region = np.isin(p_lab, touching)
        inter = np.count_nonzero(region & lesion)
        out.append(2.0 * inter / (np.count_nonzero(region) + np.count_nonzero(lesion)))
    return out


def gather_eval(ev: RunEvidence, loaded=None) -> EvalEvidence:
    """Reload the data, predict the validation images with the best checkpoint, collect statistics.

    Args:
        ev: the run's evidence (config, split, state).
        loaded: the run's data already in memory (`medseg.data.load_data` result), to skip reloading.

    Raises MedsegError when the data, the split or the checkpoint cannot be used.
    """
    from medseg.data import load_data
    from medseg.evaluate import load_network
    from medseg.fit import stack_part
    from medseg.infer import predict_probs
    from medseg.metrics import MetricContract, case_metrics, summarize, sweep_cases, threshold_sweep

    if ev.cfg is None:
        raise MedsegError(f"{ev.run_dir / runfs.CONFIG}: {ev.config_error}")
    cfg = ev.cfg
    if not ev.split.get("val"):
        raise MedsegError(f"{ev.run_dir / runfs.SPLIT}: no validation cases")
    if loaded is None:
        loaded = load_data(cfg.data, with_masks=True, progress=False)
    train = stack_part(loaded, ev.split.get("train", []))
    val = stack_part(loaded, ev.split["val"])
    if len(val.images) == 0:
        raise MedsegError(f"{ev.run_dir / runfs.SPLIT}: none of the validation cases is in the data any more")
    in_channels = int(ev.state.get("in_channels", loaded.in_channels))
    net, info = load_network(ev.run_dir, cfg, in_channels)
    precision = str(ev.state.get("precision", "32-true"))
    if precision.startswith("16"):
        # float16 autocast is a GPU feature; on the CPU the doctor predicts in float32
        precision = "32-true"
    probs = predict_probs(net, val.images, cfg.eval.batch_size, precision, "cpu", cfg.train.channels_last)
    finite = bool(np.isfinite(probs).all())
    probs = np.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0)
    masks = val.masks > 0
    contract = MetricContract(**ev.contract)
    hard = contract.model_copy(update={"kind": "hard"})
    per_image = hard.model_copy(update={"reduction": "per_image"}) if hard.reduction == "per_volume" else hard
    rows = [case_metrics(p, m, hard, surface=False) for p, m in zip(probs, masks)]
    soft = contract.model_copy(update={"kind": "soft", "reduction": per_image.reduction})
    soft_dice = summarize([case_metrics(p, m, soft, surface=False) for p, m in zip(probs, masks)], soft)["dice"]
    lesion_dice: list[float] = []
    for p, m in zip(probs, masks):
        lesion_dice.extend(found_lesion_dice(p >= hard.threshold, m))
    return EvalEvidence(
        probs=probs,
        masks=masks,
        val_ids=[m["sample_id"] for m in val.meta],
        train_ids=[m["sample_id"] for m in train.meta],
        probs_finite=finite,
        hard_rows=rows,
        hard_summary=summarize(rows, per_image),
        soft_dice=float(soft_dice),
        sweep=threshold_sweep(*sweep_cases(probs, masks, val.meta, hard), hard),
        found_lesion_dice=lesion_dice,
        thumbs_train=thumbnails(train.images),
        thumbs_val=thumbnails(val.images),
        intensity_train=intensity_stats(train.images),
        intensity_val=intensity_stats(val.images),
        mask_values=sorted({float(v) for m in (train.masks, val.masks) if m.size for v in np.unique(m)}),
        train_positive_share=float((train.masks.reshape(len(train.masks), -1).max(1) > 0).mean()) if len(train.masks) else float("nan"),
        best_epoch=int(info["epoch"]),
    )


def finite(x: Any) -> bool:
    """x is a real number (not None, NaN or inf)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
