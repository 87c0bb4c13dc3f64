"""What the doctor knows about a run: its files, and (optionally) the checkpoint re-run on validation.

`load_evidence` reads the run folder; `gather_eval` reloads the data and predicts the validation
images with the run's model checkpoint (train.checkpoint), keeping only what the checks need (probabilities, per-image
statistics, small thumbnails). The family modules read a `RunEvidence` and never touch files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from medseg import runfolder as runfs
from medseg.data import load_data
from medseg.data.arrays import stack_part
from medseg.data.fingerprint import part_cases
from medseg.errors import MedsegError
from medseg.inference import run_probs_by_case
from medseg.losses import has_schedule
from medseg.metrics import MetricContract
from medseg.metrics.lesions import label_components
from medseg.metrics.sweep import SweepCounter
from medseg.metrics.validation import ValidationScorer, ValidationScores

# Side of the thumbnails compared for duplicates: small enough that noise averages out and
# re-encoding or slight resizing does not matter, large enough to tell two anatomies apart.
THUMB_SIDE = 16


@dataclass
class EvalEvidence:
    """The run's model checkpoint re-run on the validation images (hard metrics under the contract).

    The validation images are predicted and scored a chunk of whole cases at a time (no
    probability map of the whole set is kept); what the checks need of the probabilities is
    summarised as they stream.

    Attributes:
        prob_max: the highest validation probability (NaN counted as 0).
        mid_probability_share: share of validation pixels with probability strictly between 0.01 and 0.99.
        val_ids / train_ids: sample ids in validation / training order.
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
        best_epoch: epoch of the checkpoint (the last epoch under ``train.checkpoint: last``).
        scores: the validation scorer's output for these predictions under the hard contract
            (`scores.summary` is the contract's summary: per volume for a per-volume contract).
    """

    prob_max: float
    mid_probability_share: float
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
    scores: Optional[ValidationScores] = None
    checkpoint: str = "checkpoints/best.ckpt"  # the file that was run (runfolder.model_checkpoint)


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

    def train_longer(self, epochs: int) -> tuple[str, Any]:
        """The fix that trains longer: `train.epochs` = `epochs`, or under a time budget twice the budget.

        Under `train.budget_minutes` more epochs would not run (Lightning's max_time stops them and
        `schedule.follow_budget` shortens to fit), so the budget is the key to change.
        """
        budget = self.get("train.budget_minutes")
        return ("train.budget_minutes", 2 * float(budget)) if budget else ("train.epochs", int(epochs))

    def series(self, name: str) -> np.ndarray:
        """One epochs.csv column as floats in epoch order (NaN where missing or not a number)."""
        return np.array([_as_float(r.get(name)) for r in self.epochs], dtype=float)

    def loss_trend(self, name: str) -> np.ndarray:
        """`train_loss` or `val_loss` for the checks that read the loss's trend: under a loss schedule
        (loss.<term>.start/stop) NaN before the last epoch whose terms differ from the epoch before, since a
        term joining or leaving moves the loss without any learning; otherwise the column as it is."""
        s = self.series(name)
        loss = self.get("loss")
        try:
            scheduled = isinstance(loss, dict) and has_schedule(loss)
        except (ValueError, TypeError):  # a saved config that no longer validates: read the column as it is
            scheduled = False
        if not scheduled:
            return s
        # a term that did not count in an epoch has no value in its column (runfolder.write_csv leaves it blank)
        terms = [frozenset(k for k, v in r.items() if k.startswith("train_loss_") and not math.isnan(_as_float(v)))
                 for r in self.epochs]
        changes = [i for i in range(1, len(terms)) if terms[i] != terms[i - 1]]
        if changes:
            s[: changes[-1]] = np.nan
        return s

    @property
    def val_cases(self) -> int:
        """Validation cases of the run: its split.json, else the fingerprint's count (0 when neither says)."""
        if self.split.get("val"):
            return len(self.split["val"])
        return part_cases(self.fingerprint, "val")

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


def load_evidence(run_dir: Path) -> RunEvidence:
    """Read everything the checks need from a run folder (missing optional files are empty)."""
    run_dir = runfs.open_run(Path(run_dir))
    lenient = runfs.load_config_leniently(run_dir)
    return RunEvidence(
        run_dir=run_dir,
        raw_config=lenient.raw,
        cfg=lenient.cfg,
        config_error=lenient.error,
        fingerprint=runfs.optional_dict(run_dir / runfs.FINGERPRINT),
        split=runfs.optional_dict(run_dir / runfs.SPLIT),
        state=runfs.optional_dict(run_dir / runfs.STATE),
        summary=runfs.optional_dict(run_dir / runfs.SUMMARY),
        epochs=runfs.read_csv(run_dir / runfs.EPOCHS_CSV),
        cases=runfs.read_csv(run_dir / runfs.CASES_CSV),
        saved_sweep=runfs.optional_dict(run_dir / runfs.SWEEP) or None,
        report_text=runfs.optional_text(run_dir / runfs.REPORT_MD),
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


def _distinct(masks) -> np.ndarray:
    """The distinct values of a stack of masks; one mask at a time for a stack read from the cache."""
    if isinstance(masks, np.ndarray):
        return np.unique(masks) if masks.size else np.zeros(0)
    return np.unique(np.concatenate([np.unique(m) for m in masks])) if len(masks) else np.zeros(0)


def gather_eval(ev: RunEvidence, loaded=None) -> EvalEvidence:
    """Reload the data, predict the validation images with the model checkpoint, collect statistics.

    Args:
        ev: the run's evidence (config, split, state).
        loaded: the run's data already in memory (`medseg.data.load_data` result), to skip reloading.

    Raises MedsegError when the data, the split or the checkpoint cannot be used.
    """
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
    net, info = runfs.load_network(ev.run_dir, cfg, in_channels)
    hard = MetricContract(**ev.contract).model_copy(update={"kind": "hard"})
    scorer, counter = ValidationScorer(hard, surface=False), SweepCounter(hard)
    finite, lesion_dice, prob_max, mid, pixels = True, [], 0.0, 0, 0
    # the same inference (device, precision, batching, chunks) as evaluate and training's validation
    for _, _, probs, masks, meta in run_probs_by_case(net, val, cfg, ev.state):
        masks = masks > 0
        finite = finite and bool(np.isfinite(probs).all())
        probs = np.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0)
        scorer.add(probs, masks, meta)
        counter.add_chunk(probs, masks, meta)
        for p, m in zip(probs, masks):
            lesion_dice.extend(found_lesion_dice(p >= hard.threshold, m))
        prob_max = max(prob_max, float(probs.max()))
        mid += int(np.count_nonzero((probs > 0.01) & (probs < 0.99)))
        pixels += probs.size
        del probs  # before the next chunk's prediction: not two volumes' probabilities at once
    scores = scorer.result()
    return EvalEvidence(
        prob_max=prob_max,
        mid_probability_share=mid / max(pixels, 1),
        val_ids=[m["sample_id"] for m in val.meta],
        train_ids=[m["sample_id"] for m in train.meta],
        probs_finite=finite,
        hard_rows=scores.image_rows,
        hard_summary=scores.image_summary,
        soft_dice=scores.soft_dice,
        sweep=counter.result(),
        found_lesion_dice=lesion_dice,
        thumbs_train=thumbnails(train.images),
        thumbs_val=thumbnails(val.images),
        intensity_train=intensity_stats(train.images),
        intensity_val=intensity_stats(val.images),
        mask_values=sorted({float(v) for m in (train.masks, val.masks) for v in _distinct(m)}),
        train_positive_share=float(train.positive.mean()) if len(train.masks) else float("nan"),
        best_epoch=int(info["epoch"]),
        scores=scores,
        checkpoint=info["checkpoint"],
    )


def finite(x: Any) -> bool:
    """x is a real number (not None, NaN or inf)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
