"""Render a `Report` as one self-contained HTML page.

Images are embedded as base64 data URIs and the CSS is inline, so the file opens offline,
can be mailed as-is, and needs no JavaScript.
"""

from __future__ import annotations

import base64
from html import escape

from medseg.report.model import Figure, Note, Report, Table

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #222; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { margin: 0 0 .2rem; font-size: 1.7rem; }
.subtitle { color: #555; margin: 0 0 1rem; }
nav { font-size: .9rem; margin-bottom: 1.2rem; }
nav a { margin-right: 1rem; color: #1f5fa8; text-decoration: none; display: inline-block; white-space: nowrap; }
h2 { border-bottom: 2px solid #e3e3e3; padding-bottom: .25rem; margin-top: 2.2rem; font-size: 1.3rem; }
figure { margin: 1rem 0 1.4rem; }
.figrow { display: flex; flex-wrap: wrap; gap: 0 1.2rem; align-items: flex-start; }
.figrow figure { flex: 1 1 440px; max-width: calc(50% - .6rem); min-width: 320px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { color: #555; font-size: .85rem; margin-top: .3rem; }
table { border-collapse: collapse; font-size: .9rem; margin: .6rem 0 .2rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
td { max-width: 28rem; overflow-wrap: break-word; }
.tablewrap { margin-bottom: 1.2rem; overflow-x: auto; }
p.note { margin: .6rem 0; }
tr.sev-serious td:first-child { background: #fde2e1; color: #a01010; font-weight: 600; }
tr.sev-warning td:first-child { background: #fff4e5; color: #8a5300; font-weight: 600; }
tr.sev-info td:first-child { background: #eef4fb; color: #1f5fa8; }
p.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: .4rem .7rem; }
tr.b-better td { background: #e6f4ea; }
tr.a-better td { background: #fde8e8; }
"""


def _figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f'<figure id="fig-{escape(fig.name)}"><img src="data:image/png;base64,{data}" alt="{escape(fig.caption or fig.name)}">'
        f"<figcaption>{escape(fig.caption)}</figcaption></figure>"
    )


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.headers)
    classes = t.row_classes + [""] * (len(t.rows) - len(t.row_classes))
    body = "".join(
        (f'<tr class="{escape(cls)}">' if cls else "<tr>") + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row, cls in zip(t.rows, classes)
    )
    caption = f'<div class="caption">{escape(t.caption)}</div>' if t.caption else ""
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{caption}</div>'


def _note(n: Note) -> str:
    return f'<p class="note{" warn" if n.warn else ""}">{escape(n.text)}</p>'


def _flush(parts: list[str], row: list[str]) -> None:
    if row:
        parts.append('<div class="figrow">' + "".join(row) + "</div>")
        row.clear()


def render_html(report: Report) -> str:
    """The report as a complete HTML document (UTF-8 text)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{escape(report.title)}</h1>",
        f'<p class="subtitle">{escape(report.subtitle)}</p>',
        "<nav>" + "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in report.sections) + "</nav>",
    ]
    for section in report.sections:
        parts.append(f'<section id="{escape(section.id)}"><h2>{escape(section.title)}</h2>')
        row: list[str] = []  # consecutive normal-width figures sit side by side
        for block in section.blocks:
            if isinstance(block, Figure) and not block.wide:
                row.append(_figure(block))
                continue
            _flush(parts, row)
            if isinstance(block, Figure):
                parts.append(_figure(block))
            elif isinstance(block, Table):
                parts.append(_table(block))
            else:
                parts.append(_note(block))
        _flush(parts, row)
        parts.append("</section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
