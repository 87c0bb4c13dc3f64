"""Everything the report reads from a run folder, read once and leniently.

A report is most wanted when a run went wrong, so a missing or unreadable file leaves its
part empty (and the section says so) instead of stopping the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from medseg import runfolder as runfs
from medseg.config import Config
from medseg.data.sources import get_source
from medseg.errors import MedsegError


@dataclass
class RunContext:
    """The run's files as Python objects; `None` / empty where a file is missing."""

    run_dir: Path
    cfg: Config
    state: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)
    plan: Optional[dict] = None
    epochs: list[dict] = field(default_factory=list)
    cases: list[dict] = field(default_factory=list)
    sweep: Optional[dict] = None
    sweep_source: str = ""
    preds: Any = None  # predictions.ValPredictions when the checkpoint could be run
    preds_error: str = ""

    @property
    def contract_text(self) -> str:
        return self.summary.get("contract_text") or self.cfg.eval.contract.describe()

    @property
    def volumetric(self) -> bool:
        """The run's samples are 2.5D slices of volumes (its data source says so)."""
        try:
            return get_source(self.cfg.data.source).volumetric
        except MedsegError:
            return False

    @property
    def best_epoch(self) -> Optional[int]:
        v = self.summary.get("best_epoch")
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None


def load_context(run_dir: Path) -> RunContext:
    """Read the run folder; only a missing or invalid config.yaml is an error."""
    run_dir = runfs.open_run(run_dir)
    ctx = RunContext(run_dir=run_dir, cfg=runfs.load_run_config(run_dir))
    ctx.state = runfs.optional_dict(run_dir / runfs.STATE)
    ctx.summary = runfs.optional_dict(run_dir / runfs.SUMMARY)
    ctx.fingerprint = runfs.optional_dict(run_dir / runfs.FINGERPRINT)
    ctx.plan = runfs.optional_json(run_dir / runfs.PLAN)
    ctx.epochs = runfs.read_csv(run_dir / runfs.EPOCHS_CSV)
    ctx.cases = runfs.read_csv(run_dir / runfs.CASES_CSV)
    sweep = runfs.optional_json(run_dir / runfs.SWEEP)
    if isinstance(sweep, dict) and sweep.get("rows"):
        ctx.sweep, ctx.sweep_source = sweep, runfs.SWEEP
    return ctx


def fmt(v: Any, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant digits, missing values as an em dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e9:
            return str(int(v))
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, digits) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x, digits)}" for k, x in v.items())
    return str(v)
