"""The metric contract: how every number medseg reports was computed.

A metric is never shown or written without the contract it was computed under, because the
same predictions give very different "Dice" values depending on thresholding, reduction and
how an empty prediction on an empty truth is scored (nnU-Net: NaN, MONAI: ignored, smp: 0,
SIIM-ACR: 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONTRACT_VERSION = 1
# Version of the metric definitions (formulas, empty rules, surface and lesion definitions);
# bumped whenever a change could alter a reported number for the same predictions.
METRICS_VERSION = 1


class MetricContract(BaseModel):
    """How predictions are turned into reported metrics."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["hard", "soft"] = Field(
        "hard", description="hard: threshold probabilities first; soft: use probabilities (monitoring only)."
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Probability threshold for hard metrics.")
    reduction: Literal["per_image", "per_volume", "global"] = Field(
        "per_image",
        description="per_image: mean over 2D images; per_volume: mean over stacked volumes; global: pooled pixels.",
    )
    empty: Literal["one", "nan", "zero"] = Field(
        "one",
        description="Score of an empty prediction on an empty truth: one (SIIM), nan (excluded, nnU-Net/MONAI), zero.",
    )
    lesion_size_bins: list[float] = Field(
        [64.0, 1024.0],
        description="Lesion-size bin edges in pixels (connected-component area): small < a <= medium < b <= large.",
    )

    @field_validator("lesion_size_bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(v, v[1:])) or any(x <= 0 for x in v):
            raise ValueError("must be positive and strictly increasing")
        return v

    def describe(self) -> str:
        """One line printed beside every number, e.g. 'hard@0.50, per_image mean, empty→one'."""
        t = f"hard@{self.threshold:.2f}" if self.kind == "hard" else "soft"
        return f"{t}, {self.reduction.replace('_', '-')} mean, empty/empty→{self.empty}"

    def empty_score(self) -> float:
        """Dice/IoU/precision/recall of a case whose truth and (hard) prediction are both empty."""
        return {"one": 1.0, "nan": float("nan"), "zero": 0.0}[self.empty]

    def empty_distance(self) -> float:
        """HD95/ASD of a case whose truth and prediction are both empty.

        `one` counts it as perfect (0.0); `nan` and `zero` give NaN, because no finite
        distance is a "worst" score the way Dice 0 is.
        """
        return 0.0 if self.empty == "one" else float("nan")
