"""Render a `Report` as Markdown that references the PNGs in report_assets/."""

from __future__ import annotations

import re

from medseg.report.model import Figure, Note, Report, Table
from medseg.runfolder import REPORT_ASSETS as ASSETS


def _text(text: str) -> str:
    # Markdown passes raw HTML through: text from file names or configs must not become markup
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    # a pipe or a newline would end the cell or the row
    return _text(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) or " " for h in t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{_cell(t.caption)}*"]
    return lines


def slug(title: str) -> str:
    """The anchor GitHub and most Markdown viewers give a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def render_markdown(report: Report) -> str:
    """The report as Markdown; figure `name` is written to report_assets/<name>.png."""
    lines = [f"# {_text(report.title)}", "", _text(report.subtitle), ""]
    lines += [f"- [{_text(s.title)}](#{slug(s.title)})" for s in report.sections] + [""]
    for section in report.sections:
        lines += [f"## {_text(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, Figure):
                lines += [f"![{_cell(block.caption or block.name)}]({ASSETS}/{block.name}.png)", "", f"*{_cell(block.caption)}*"]
            elif isinstance(block, Table):
                lines += _table(block)
            elif isinstance(block, Note):
                lines.append(f"> **Warning:** {_text(block.text)}" if block.warn else _text(block.text))
            lines.append("")
    return "\n".join(lines)
