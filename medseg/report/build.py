"""Build the run report and write report.html, report.md and report_assets/ into the run folder."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from medseg import runfolder as runfs
from medseg.errors import MedsegError
from medseg.report import sections as S
from medseg.report.context import RunContext, fmt, load_context
from medseg.report.html import render_html
from medseg.report.markdown import render_markdown
from medseg.report.model import Note, Report, Section
from medseg.report.predictions import pick_cases, predict_validation

REPORT_HTML = runfs.REPORT_HTML
REPORT_MD = runfs.REPORT_MD

log = logging.getLogger("medseg.report")
# a failed part of the report is a note in the report; its traceback goes to a configured handler (fit's train.log), not the terminal
log.addHandler(logging.NullHandler())

# reading order: what happened (plots) first, then why, then the settings behind it
SECTION_BUILDERS: tuple[tuple[str, str, Callable[[RunContext], Section]], ...] = (
    ("result", "Result", S.result_section),
    ("training", "Training curves", S.training_section),
    ("validation", "Validation", S.validation_section),
    ("cases", "Best and worst validation cases", S.cases_section),
    ("batches", "Realised batch composition", S.batches_section),
)
TAIL_BUILDERS: tuple[tuple[str, str, Callable[[RunContext], Section]], ...] = (
    ("config", "Configuration and plan", S.config_section),
    ("data", "Dataset fingerprint", S.data_section),
)


def build_report(run_dir: Path, val=None, console: Optional[Console] = None, predict: bool = True,
                 findings: Optional[list[dict]] = None, doctor_error: str = "") -> Path:
    """(Re)write the run's report; returns the path of report.html.

    Args:
        run_dir: the run folder.
        val: the validation `SplitArrays` already in memory (fit passes them to skip reloading the data).
        console: where to print the report's path.
        predict: run the model checkpoint on the validation images (overlays, and the threshold
            curve when metrics/threshold_sweep.json is absent).
        findings: the doctor's findings as dicts (the caller runs the doctor), or None.
        doctor_error: why there are no findings, shown in their place.
    """
    ctx = load_context(Path(run_dir))
    if predict:
        _add_predictions(ctx, val)
    else:
        ctx.preds_error = "the checkpoint was not run (--no-predict)"

    sections = [_safe(ctx, *b) for b in SECTION_BUILDERS]
    try:
        sections.append(S.doctor_section(ctx, findings, doctor_error))
    except Exception as e:  # noqa: BLE001
        sections.append(_failed("doctor", "Doctor's findings", e))
    sections += [_safe(ctx, *b) for b in TAIL_BUILDERS]
    report = Report(title=f"medseg run: {ctx.run_dir.name}", subtitle=_subtitle(ctx), sections=sections)
    write_report(ctx.run_dir, report)
    path = ctx.run_dir / REPORT_HTML
    if console is not None:
        console.print(f"[bold green]report: {path}")
    return path


def _add_predictions(ctx: RunContext, val) -> None:
    try:
        best, worst = pick_cases(ctx.cases)
        ctx.preds = predict_validation(ctx.run_dir, ctx.cfg, ctx.state, val, keep=[str(r["case"]) for r in best + worst],
                                       sweep=ctx.sweep is None)
    except MedsegError as e:
        ctx.preds_error = f"could not run the checkpoint on the validation images ({e})"
        return
    except Exception as e:  # noqa: BLE001 — a report with a note beats no report
        log.warning("report: running the checkpoint failed", exc_info=True)
        ctx.preds_error = f"running the checkpoint failed ({type(e).__name__}: {e})"
        return
    if ctx.sweep is None:
        if ctx.preds.sweep is not None:
            ctx.sweep = ctx.preds.sweep
            ctx.sweep_source = "the model checkpoint on the validation split, computed for this report"
        else:
            ctx.preds_error = ctx.preds.sweep_error


def _safe(ctx: RunContext, section_id: str, title: str, builder: Callable[[RunContext], Section]) -> Section:
    try:
        return builder(ctx)
    except Exception as e:  # noqa: BLE001 — one broken section must not hide the others
        log.warning("report: section %s failed", section_id, exc_info=True)
        return _failed(section_id, title, e)


def _failed(section_id: str, title: str, e: Exception) -> Section:
    return Section(section_id, title, [Note(f"This section could not be built: {type(e).__name__}: {e}", warn=True)])


def _subtitle(ctx: RunContext) -> str:
    s = ctx.summary
    dice = f"Dice {fmt(s['dice'])} ({ctx.contract_text})" if "dice" in s else "not evaluated yet"
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"{ctx.cfg.model.name} · {dice} · {ctx.run_dir.resolve()} · report written {when}"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(run_dir: Path, report: Report) -> None:
    """Write report_assets/*.png, report.md and report.html, replacing an earlier report.

    The assets folder is rebuilt beside the old one and swapped in, so a figure that no
    longer exists does not linger from a previous report.
    """
    assets, fresh = run_dir / runfs.REPORT_ASSETS, run_dir / (runfs.REPORT_ASSETS + ".tmp")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    for fig in report.figures():
        (fresh / f"{fig.name}.png").write_bytes(fig.png)
    shutil.rmtree(assets, ignore_errors=True)
    os.replace(fresh, assets)
    _write_text(run_dir / REPORT_MD, render_markdown(report))
    _write_text(run_dir / REPORT_HTML, render_html(report))
