"""`medseg report`: the run's report (report.html, report.md), with the doctor's findings in it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from rich.console import Console

from medseg.report import build_report

log = logging.getLogger("medseg.report")


def doctor_findings(run_dir: Path, loaded=None) -> tuple[Optional[list[dict]], str]:
    """The doctor's findings as dicts, or (None, why not): a failing doctor never costs the report."""
    try:
        # imported here: a doctor that fails to import (a broken install) must not cost the report
        from medseg.doctor import diagnose
    except ImportError:
        return None, "doctor not available"
    except Exception as e:  # noqa: BLE001
        log.warning("report: the doctor failed to load", exc_info=True)
        return None, f"doctor not available: it failed to load ({type(e).__name__}: {e})"
    try:
        return [f.to_dict() for f in diagnose(run_dir, evaluate=True, loaded=loaded)], ""
    except Exception as e:  # noqa: BLE001
        log.warning("report: the doctor failed", exc_info=True)
        return None, f"the doctor failed ({type(e).__name__}: {e})"


def report_run(run_dir: Path, val=None, console: Optional[Console] = None, predict: bool = True, doctor: bool = True,
               loaded=None) -> Path:
    """(Re)write the run's report; returns the path of report.html.

    Args:
        run_dir: the run folder.
        val: the validation arrays already in memory (fit passes them).
        console: where to print the report's path.
        predict: run the best checkpoint on the validation images (overlays, threshold curve).
        doctor: include the doctor's findings.
        loaded: the run's data already in memory (fit passes it so the doctor does not read it again).
    """
    findings, error = doctor_findings(run_dir, loaded) if doctor else (None, "doctor skipped (--no-doctor)")
    return build_report(run_dir, val=val, console=console, predict=predict, findings=findings, doctor_error=error)
