"""The one validation scorer: predictions + truths + contract -> per-case rows and the summary.

Training (the checkpoint's monitor), `evaluate`, `tune` (its raw baseline), the report and the
doctor all score validation predictions here, so the number that picked the best checkpoint
is, by construction, the number `evaluate` recomputes from it.

Per-volume contracts: images (2.5D slices) are always scored one by one, reduced per image
(`image_contract`: the per-image fallback, defined only here), and for volume data the slices
are also stacked back into volumes and scored per volume; the contract's summary is then the
per-volume one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from medseg.data.slices import slices_by_volume
from medseg.metrics.cases import case_metrics
from medseg.metrics.contract import MetricContract
from medseg.metrics.overlap import overlap_scores
from medseg.metrics.summary import summarize
from medseg.metrics.sweep import sweep_case_names, sweep_cases


def image_contract(contract: MetricContract) -> MetricContract:
    """The contract for per-image rows: a per-volume contract reduces its images per image."""
    return contract.model_copy(update={"reduction": "per_image"}) if contract.reduction == "per_volume" else contract


def has_volumes(meta: Optional[Sequence[dict]]) -> bool:
    """The samples are slices of volumes (their meta names a volume)."""
    return bool(meta) and meta[0].get("volume") is not None


@dataclass
class ValidationScores:
    """Everything the scorer computed for one set of predictions.

    Attributes:
        image_rows: one `case_metrics` row per image, with `case` (sample id) and `case_id`.
        image_summary: the image rows reduced under `image_contract(contract)`.
        volume_rows / volume_summary: per stacked volume (volume data only; else [] / None).
        summary: the contract's summary: per volume for a per-volume contract on volumes, else per image.
        soft_dice: soft Dice of the same predictions, images reduced as `image_summary`.
    """

    image_rows: list[dict]
    image_summary: dict
    volume_rows: list[dict] = field(default_factory=list)
    volume_summary: Optional[dict] = None
    summary: dict = field(default_factory=dict)
    soft_dice: float = math.nan

    @property
    def dice(self) -> float:
        return float(self.summary["dice"])


def volume_metrics(probs: np.ndarray, masks: np.ndarray, meta: Sequence[dict], contract: MetricContract, surface: bool = True) -> dict:
    """Stack 2D slice predictions back into volumes and score each volume: {rows, summary}."""
    rows = _volume_rows(probs, masks, meta, contract, surface)
    return {"rows": rows, "summary": summarize(rows, contract)}


def _volume_rows(probs, masks, meta, contract: MetricContract, surface: bool) -> list[dict]:
    rows = []
    for vol, idx in slices_by_volume(meta).items():
        spacing = meta[idx[0]].get("volume_spacing")
        m = np.stack([np.asarray(masks[i]) for i in idx])  # one read per slice, also for masks from the cache
        r = case_metrics(_rows(np.asarray(probs), idx), m, contract, spacing=tuple(spacing) if spacing else None, surface=surface)
        rows.append({"volume": vol, "n_slices": len(idx), **r})
    return rows


def _rows(a: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """a[idx] as a view when idx is a run of consecutive rows (a streamed volume's slices): no copy of the volume."""
    if len(idx) and list(idx) == list(range(idx[0], idx[0] + len(idx))):
        return a[idx[0]: idx[0] + len(idx)]
    return a[idx]


# images per streamed chunk, in eval batches: enough to keep every batch full, few enough to stay flat
CHUNK_BATCHES = 4


def case_chunks(meta: Sequence[dict], batch_size: int) -> list[list[int]]:
    """Sample indices in chunks of whole cases, for validation that streams: every slice of a volume in one chunk.

    Images are taken ``CHUNK_BATCHES * batch_size`` at a time; a volume is one chunk whatever
    its size (it is scored as one case). Chunks come in the order `score_validation` lists cases.

    Args:
        meta: the part's per-sample meta.
        batch_size: eval.batch_size.
    """
    if has_volumes(meta):
        return [list(map(int, idx)) for idx in slices_by_volume(meta).values()]
    n, step = len(meta), CHUNK_BATCHES * max(1, int(batch_size))
    return [list(range(i, min(i + step, n))) for i in range(0, n, step)]


class ValidationScorer:
    """`score_validation` case by case: add chunks of whole cases, then `result()`.

    Validation then holds one chunk's probabilities at a time (memory does not grow with the
    validation set), and gives the numbers `score_validation` gives for all at once: the same
    rows in the same order, the same reductions.

    Args:
        contract / surface / soft: as `score_validation`.
    """

    def __init__(self, contract: MetricContract, surface: bool = False, soft: bool = True):
        self.contract, self.surface, self.soft = contract, surface, soft
        self.image_rows: list[dict] = []
        self.volume_rows: list[dict] = []
        self.soft_rows: list[dict] = []
        self.volumes = False

    def add(self, probs: np.ndarray, masks, meta: Sequence[dict]) -> None:
        """Score one chunk: (n, H, W) probabilities, their masks (ndarray or a cached stack) and meta.

        Every slice of a volume in the chunk must be in it (`case_chunks`).
        """
        soft_c = image_contract(self.contract).model_copy(update={"kind": "soft"})
        for p, m, info in zip(probs, masks, meta):
            m = np.asarray(m)
            spacing = tuple(info["spacing_input"]) if info.get("spacing_input") else None
            r = case_metrics(p, m, self.contract, spacing=spacing, surface=self.surface)
            self.image_rows.append({"case": info["sample_id"], "case_id": info.get("case_id"), **r})
            if self.soft:
                self.soft_rows.append(case_metrics(p, m, soft_c, surface=False))
        if has_volumes(meta):
            self.volumes = True
            self.volume_rows.extend(_volume_rows(probs, masks, meta, self.contract, self.surface))

    def merge(self, other: "ValidationScorer") -> None:
        """Append another scorer's rows (another DDP rank's shard)."""
        self.image_rows += other.image_rows
        self.volume_rows += other.volume_rows
        self.soft_rows += other.soft_rows
        self.volumes = self.volumes or other.volumes

    def result(self) -> ValidationScores:
        per_image = image_contract(self.contract)
        out = ValidationScores(image_rows=self.image_rows, image_summary=summarize(self.image_rows, per_image))
        out.summary = out.image_summary
        if self.volumes:
            out.volume_rows, out.volume_summary = self.volume_rows, summarize(self.volume_rows, self.contract)
            if self.contract.reduction == "per_volume":
                out.summary = out.volume_summary
        if self.soft:
            soft_c = per_image.model_copy(update={"kind": "soft"})
            out.soft_dice = float(summarize(self.soft_rows, soft_c)["dice"])
        return out


def score_validation(
    probs: np.ndarray,
    masks: np.ndarray,
    meta: Sequence[dict],
    contract: MetricContract,
    surface: bool = False,
    soft: bool = True,
) -> ValidationScores:
    """Score predictions of validation (or test) images under the metric contract.

    Args:
        probs: (N, H, W) probabilities in [0, 1].
        masks: (N, H, W) binary truths (an ndarray, or a `SampleStack` read from the cache).
        meta: per-image dicts with `sample_id` (and `case_id`, `spacing_input`, `volume`,
            `slice`, `volume_spacing` where known), as `data.arrays.stack_part` makes them.
        contract: the metric contract.
        surface: also compute HD95/ASD (the slow part; Dice and the rest do not depend on it).
        soft: also compute the soft Dice.
    """
    scorer = ValidationScorer(contract, surface=surface, soft=soft)
    scorer.add(probs, masks, meta)
    return scorer.result()


def dice_from_counts(counts: Sequence[tuple], contract: MetricContract) -> float:
    """The contract's Dice over cases given as (tp, fp, fn, tn, empty_empty) tuples.

    The same reduction as `summarize` (global pools the counts; otherwise the NaN-ignoring mean
    of per-case Dice), without building full rows: the post-processing search scores hundreds
    of candidate rules with it.
    """
    c = np.array([x[:4] for x in counts], dtype=np.float64)
    ee = np.array([x[4] for x in counts], dtype=bool)
    if contract.reduction == "global":
        return float(overlap_scores(*c.sum(axis=0), empty_empty=bool(ee.all()), empty_score=contract.empty_score())["dice"])
    dice = np.asarray(overlap_scores(c[:, 0], c[:, 1], c[:, 2], c[:, 3], ee, contract.empty_score())["dice"], dtype=np.float64)
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else math.nan


class PostprocessedScorer:
    """`score_postprocessed` chunk by chunk: add chunks of whole cases (`case_chunks`), then `result()`.

    Args:
        contract / apply: as `score_postprocessed`.
    """

    def __init__(self, contract: MetricContract, apply: Callable[[np.ndarray], np.ndarray]):
        self.hard = contract.model_copy(update={"kind": "hard", "threshold": 0.5})
        self.contract, self.apply = contract, apply
        self.rows: list[dict] = []
        self.n_images = 0

    def add(self, probs: np.ndarray, masks, meta: Sequence[dict]) -> None:
        cases_p, cases_m = sweep_cases(probs, [np.asarray(m) for m in masks], meta, self.contract)
        names = sweep_case_names(meta, self.contract, len(cases_p))
        for p, m, (case, case_id) in zip(cases_p, cases_m, names):
            self.rows.append({"case_index": len(self.rows), "case": case, "case_id": case_id,
                              **case_metrics(self.apply(p).astype(np.float32), m, self.hard, surface=True)})
        self.n_images += len(probs)

    def result(self) -> tuple[dict, list[dict]]:
        summary = summarize(self.rows, image_contract(self.hard))
        summary["cases"] = "volumes" if len(self.rows) != self.n_images else "images"
        return summary, self.rows


def score_postprocessed(
    probs: np.ndarray,
    masks: np.ndarray,
    meta: Sequence[dict],
    contract: MetricContract,
    apply: Callable[[np.ndarray], np.ndarray],
) -> tuple[dict, list[dict]]:
    """Summary and per-case rows of post-processed masks under the contract.

    Post-processing works per case: per image, or per stacked volume for a per-volume
    contract (`sweep_cases`), so the rows are those cases, each with `case_index`, `case` and
    `case_id` (`sweep_case_names`: the sample and case ids of an image, the name of a volume).

    Args:
        probs / masks / meta: as `score_validation`.
        contract: the run's contract (its reduction and empty policy; the masks are already binary).
        apply: probability map of one case -> its final boolean mask (`PostProcess.apply`).
    """
    scorer = PostprocessedScorer(contract, apply)
    scorer.add(probs, masks, meta)
    return scorer.result()


def score(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], contract: Optional[MetricContract] = None,
          surface: bool = True) -> dict:
    """Score predictions against truths given as arrays, under an explicit contract: {"summary", "rows"}.

    The Python API's entry to the metrics (`medseg.metrics.score`): each pair is one case (a
    2D image or a 3D volume), scored by `case_metrics` and reduced by `summarize`.

    Args:
        probs: probabilities in [0, 1] (or 0/1 masks), one array per case.
        truths: binary masks of the same shapes.
        contract: the metric contract (default: hard@0.5, per-image mean, empty/empty -> one).
        surface: also compute HD95/ASD.
    """
    contract = contract or MetricContract()
    rows = [case_metrics(p, t, contract, surface=surface) for p, t in zip(probs, truths)]
    return {"summary": summarize(rows, contract), "rows": rows}
