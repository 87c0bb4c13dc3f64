"""Show findings: a rich table for people, a JSON list for programs."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medseg import run as runfs
from medseg.doctor.finding import Finding
from medseg.errors import MedsegError

STYLE = {"serious": "bold red", "warning": "yellow", "info": "cyan"}


def fix_text(f: Finding) -> str:
    value = json.dumps(f.fix_value) if isinstance(f.fix_value, (dict, list)) else str(f.fix_value)
    return f"{f.fix_key} = {value}" if f.fix_key else value


def findings_table(findings: list[Finding], title: str = "", caption: str = "") -> Table:
    """One row per finding: severity and family, then title, evidence, why and the change to make."""
    t = Table(title=title, caption=caption, show_lines=True, expand=True)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("severity", no_wrap=True)
    t.add_column("finding: measured · why · change", ratio=1)
    t.add_column("conf.", justify="right", no_wrap=True)
    for i, f in enumerate(findings, 1):
        body = (
            f"[bold]{escape(f.title)}[/]\n{escape(f.evidence)}\n[dim]{escape(f.why)}[/]\n"
            f"[bold green]change:[/] {escape(fix_text(f))}"
        )
        t.add_row(str(i), f"[{STYLE[f.severity]}]{f.severity}[/]\n[dim]{f.family}[/]", body, f"{f.confidence:.2f}")
    return t


def print_findings(console: Console, findings: list[Finding], run_name: str, verdict: str, notes: list[str], contract_text: str = "") -> None:
    caption = f"metric contract: {contract_text}" if contract_text else ""
    if findings:
        console.print(findings_table(findings, title=f"medseg doctor: {run_name}", caption=caption))
    style = "bold green" if verdict.startswith("no serious") else "bold red"
    console.print(f"[{style}]{escape(run_name)}: {escape(verdict)}[/]")
    for note in notes:
        console.print(f"[dim]note: {escape(note)}[/]")


def write_findings_json(path: Path, findings: list[Finding]) -> Path:
    """Write the ranked findings as a JSON list of dicts; an existing file is never overwritten."""
    path = Path(path)
    if path.exists():
        raise MedsegError(f"--json {path}: file exists (nothing is overwritten)")
    if not path.parent.is_dir():
        raise MedsegError(f"--json {path}: folder {path.parent} does not exist")
    runfs.write_json(path, [dict(rank=i, **f.to_dict()) for i, f in enumerate(findings, 1)])
    return path
