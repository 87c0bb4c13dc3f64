"""`medseg metrics`: score a folder of predictions against a folder of truths under a stated contract."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import ValidationError
from rich.console import Console

from medseg import runfolder as runfs
from medseg.commands.console import print_summary
from medseg.errors import MedsegError
from medseg.metrics import MetricContract, score_folders


def metrics_command(pred_dir: Path, truth_dir: Path, threshold: float = 0.5, empty: str = "one", reduction: str = "per_image",
                    kind: str = "hard", out: Optional[Path] = None, console: Optional[Console] = None) -> dict:
    """Score the folders; print the summary; write cases.csv and summary.json into `out` (a new or empty folder)."""
    try:
        contract = MetricContract(threshold=threshold, empty=empty, reduction=reduction, kind=kind)
    except ValidationError as e:
        err = e.errors()[0]
        raise MedsegError(f"--{err['loc'][0]}: {err['msg']}") from None
    if out is not None:
        runfs.check_output_dir(out, key="--out")
    rows, summary = score_folders(pred_dir, truth_dir, contract)
    if out is not None:
        if out.exists() and any(out.iterdir()):
            raise MedsegError(f"--out {out}: folder exists and is not empty (nothing is overwritten)")
        out.mkdir(parents=True, exist_ok=True)
        runfs.write_csv(out / runfs.CASES_NAME, rows)
        runfs.write_json(out / runfs.SUMMARY_NAME, summary)
    print_summary(console or Console(), summary, title=f"{pred_dir} vs {truth_dir}")
    return summary
