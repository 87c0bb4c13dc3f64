"""`medseg doctor`: ranked findings on a run, printed and optionally written as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from medseg import runfolder as runfs
from medseg.commands.console import print_findings
from medseg.doctor import Finding, examine, verdict
from medseg.errors import MedsegError


def write_findings_json(path: Path, findings: list[Finding]) -> Path:
    """Write the ranked findings as a JSON list of dicts; an existing file is never overwritten."""
    path = Path(path)
    if path.exists():
        raise MedsegError(f"--json-file {path}: file exists (nothing is overwritten)")
    if not path.parent.is_dir():
        raise MedsegError(f"--json-file {path}: folder {path.parent} does not exist")
    runfs.write_json(path, [dict(rank=i, **f.to_dict()) for i, f in enumerate(findings, 1)])
    return path


SEVERITY_ORDER = ("info", "warning", "serious")


def failing(findings: list[Finding], at_least: str) -> list[Finding]:
    """The findings at or above a severity (`doctor --fail-on`)."""
    floor = SEVERITY_ORDER.index(at_least)
    return [f for f in findings if SEVERITY_ORDER.index(f.severity) >= floor]


def doctor_command(run: Path, json_out: Optional[Path] = None, evaluate: bool = True, console: Optional[Console] = None,
                   status: Optional[Console] = None) -> list[Finding]:
    """Diagnose a run folder and print the findings (to `console`; notes of written files to `status`).

    Args:
        run: the run folder.
        json_out: also write the findings here (a new file).
        evaluate: re-run the best checkpoint on validation (otherwise read the run's files only).
        console: where the findings table goes (stdout by default).
        status: where "wrote ..." goes (stderr by default).
    """
    if json_out is not None and Path(json_out).exists():
        raise MedsegError(f"--json-file {json_out}: file exists (nothing is overwritten)")
    ev, findings = examine(run, evaluate=evaluate)
    print_findings(console or Console(), findings, ev.run_dir.name, verdict(findings), ev.notes, ev.summary.get("contract_text", ""))
    if json_out is not None:
        (status or Console(stderr=True)).print(f"[bold green]findings: {write_findings_json(json_out, findings)}")
    return findings
