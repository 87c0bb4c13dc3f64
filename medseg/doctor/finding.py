"""One diagnosis: what was measured, why it matters, what to change, how sure, how bad."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SEVERITIES = ("serious", "warning", "info")
FAMILIES = ("data", "sampling", "optimisation", "generalisation", "metrics", "errors")


@dataclass
class Finding:
    """A ranked statement about a run.

    Attributes:
        id: stable identifier, `<family>.<check>` (e.g. `optimisation.lr_too_low`).
        family: one of FAMILIES.
        severity: serious (the result is wrong or badly limited), warning (likely costs
            accuracy), info (worth knowing).
        confidence: 0-1, how sure the doctor is that the finding is real.
        impact: 0-1, how much of the run's result it can explain; ranks findings of one severity
            together with the confidence.
        title: one line.
        evidence: the measured numbers, in words.
        why: why it matters.
        fix_key: the config key to change (dotted), or None when no key applies.
        fix_value: the value to set (or, without a key, what to do).
        numbers: the measured values, machine-readable.
    """

    id: str
    family: str
    severity: str
    confidence: float
    impact: float
    title: str
    evidence: str
    why: str
    fix_key: Optional[str]
    fix_value: Any
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        self.confidence = _unit(self.confidence)
        self.impact = _unit(self.impact)

    @property
    def score(self) -> float:
        """Rank within a severity: confidence x impact."""
        return self.confidence * self.impact

    def to_dict(self) -> dict:
        d = asdict(self)
        d["confidence"] = round(self.confidence, 3)
        d["impact"] = round(self.impact, 3)
        d["numbers"] = {k: _jsonable(v) for k, v in self.numbers.items()}
        d["fix_value"] = _jsonable(self.fix_value)
        return d


def rank(findings: list[Finding]) -> list[Finding]:
    """Serious first, then warnings, then info; within a severity by confidence x impact."""
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), -f.score, f.id))


def _unit(x: float) -> float:
    x = float(x)
    return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        return _jsonable(v.item())
    return v
