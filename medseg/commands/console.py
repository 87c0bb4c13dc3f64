"""Every rich table medseg prints, in one place: the commands hand results here to be shown.

Reports on disk (HTML, Markdown) are `medseg.report`'s; this module is the terminal.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medseg.report.comparison import comparison_sections
from medseg.report.model import Note
from medseg.report.model import Table as ReportTable

if TYPE_CHECKING:  # the types only: importing them would pull in the training stack for every table
    from medseg.doctor.finding import Finding
    from medseg.planning.plan import Plan


def print_summary(console: Console, s: dict, title: str = "") -> None:
    pp = s.get("postprocessed")
    caption = f"metric contract: {s.get('contract_text', '')}"
    if pp:
        caption += f"\npost-processed: {pp['rule_text']} (tuned on validation: medseg tune)"
    t = Table(title=title, caption=caption)
    t.add_column("metric")
    t.add_column("raw" if pp else "value", justify="right")
    if pp:
        t.add_column("post-processed", justify="right")
    keys = [
        "dice", "iou", "precision", "recall", "dice_nonempty", "soft_dice", "fp_rate_empty", "lesion_recall",
        "lesion_precision", "hd95", "asd", "n_cases", "n_empty_truth", "n_empty_empty",
    ]
    show = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    for k in keys:
        if k in s and s[k] is not None:
            t.add_row(k, show(s[k]), *([show(pp.get(k))] if pp else []))
    if s.get("per_volume"):
        t.add_row("dice (per volume)", f"{s['per_volume']['dice']:.4f}")
    tr = s.get("training_reported")
    if tr:
        ok = "[green]matches" if tr["match"] else "[red]DIFFERS"
        t.add_row("training reported dice", f"{tr['dice']:.4f} ({ok} to {tr['abs_diff']:.1e})")
    console.print(t)


def print_sweep(console: Console, sw: dict, contract) -> None:
    t = Table(title="threshold sweep", caption=f"metric contract: {contract.describe()}")
    for c in ("threshold", "dice", "precision", "recall", "fp_rate_empty"):
        t.add_column(c, justify="right")
    for r in sw["rows"]:
        t.add_row(*(f"{r.get(c, float('nan')):.3f}" for c in ("threshold", "dice", "precision", "recall", "fp_rate_empty")))
    console.print(t)
    console.print(f"best threshold {sw['best_threshold']:.2f} → dice {sw['best_value']:.4f} (in use: {contract.threshold:.2f})")
    if sw.get("flat"):
        console.print(f"[bold red]WARNING: {sw.get('warning')}")


def print_tuning(console: Console, result: dict) -> None:
    """The TTA sets tried, the raw score, the five best candidates of the set taken and the chosen rule."""
    if result.get("tta_sets"):
        tt = Table(title="test-time augmentation sets")
        for c in ("transforms", "passes", "best tuned Dice", "gain over raw"):
            tt.add_column(c, justify="right")
        for row in result["tta_sets"]:
            tt.add_row("+".join(row["tta"]), str(row["n_transforms"]), f"{row['best_dice']:.4f}", f"{row['gain']:+.4f}")
        console.print(tt)
        console.print(f"TTA: {result['tta_reason']}")
    t = Table(title=f"post-processing tuned on {result['n_cases']} {result.get('where', 'validation')} cases ({result.get('contract_text', '')})")
    for c in ("threshold", "min area px", "largest only", "min max-prob", "Dice"):
        t.add_column(c, justify="right")
    raw = result["raw"]
    t.add_row(f"{raw['threshold']:g}", "0", "no", "0", f"{raw['dice']:.4f} (raw)")
    for r in sorted(result["rows"], key=lambda r: -r["dice"] if r["dice"] == r["dice"] else 1e9)[:5]:
        t.add_row(f"{r['threshold']:g}", str(r["min_area"]), "yes" if r["keep_largest"] else "no",
                  f"{r['min_score']:g}", f"{r['dice']:.4f}")
    console.print(t)
    console.print(f"chosen: {result['reason']}")


def print_plan(console: Console, plan: "Plan", title: str = "plan") -> None:
    """The plan as a rich table: key, value, set by, reason."""
    from medseg.planning.plan import show_value  # here: planning imports the training stack, the other tables do not need it

    t = Table(title=title, show_lines=False)
    for c in ("key", "value", "set by", "reason"):
        t.add_column(c, overflow="fold")
    for e in plan.entries:
        t.add_row(e.key, show_value(e.value), e.set_by, e.reason)
    console.print(t)
    if plan.estimates:
        console.print(
            f"estimated {plan.estimates['epoch_seconds']:.1f} s per epoch, {plan.estimates['train_minutes']:.1f} min of training "
            f"({plan.cost.method} step cost on {plan.cost.device_name})"
        )
    for note in plan.notes:
        console.print(f"[yellow]{note}")


STYLE = {"serious": "bold red", "warning": "yellow", "info": "cyan"}


def fix_text(f: "Finding") -> str:
    value = json.dumps(f.fix_value) if isinstance(f.fix_value, (dict, list)) else str(f.fix_value)
    return f"{f.fix_key} = {value}" if f.fix_key else value


def findings_table(findings: "list[Finding]", title: str = "", caption: str = "") -> Table:
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


def print_findings(console: Console, findings: "list[Finding]", run_name: str, verdict: str, notes: list[str], contract_text: str = "") -> None:
    caption = f"metric contract: {contract_text}" if contract_text else ""
    if findings:
        console.print(findings_table(findings, title=f"medseg doctor: {run_name}", caption=caption))
    style = "bold green" if verdict.startswith("no serious") else "bold red"
    console.print(f"[{style}]{escape(run_name)}: {escape(verdict)}[/]")
    for note in notes:
        console.print(f"[dim]note: {escape(note)}[/]")


ROW_STYLE = {"b-better": "green", "a-better": "red"}


def print_report_table(console: Console, t: ReportTable, title: str = "") -> None:
    """A report table (cells already formatted) as a rich table; row classes become colours."""
    table = Table(title=title, caption=t.caption)
    for col in t.headers:
        table.add_column(col, overflow="fold")
    classes = t.row_classes + [""] * (len(t.rows) - len(t.row_classes))
    for row, cls in zip(t.rows, classes):
        table.add_row(*row, style=ROW_STYLE.get(cls))
    console.print(table)


def print_comparison(console: Console, result: dict) -> None:
    """`medseg compare`'s tables, then its notes."""
    for section in comparison_sections(result):
        for block in section.blocks:
            if isinstance(block, ReportTable):
                print_report_table(console, block, section.title)
            elif isinstance(block, Note):
                console.print(f"[yellow]note:[/] {escape(block.text)}", highlight=False)


def print_reference(console: Console, rows: list[tuple[str, str, str, str]]) -> None:
    """`medseg config --reference`: key, type, default, meaning."""
    t = Table(title="medseg config reference", show_lines=False)
    for c in ("key", "type", "default", "meaning"):
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*(escape(cell) for cell in row))  # descriptions hold brackets, e.g. medseg[mlflow]
    console.print(t)
