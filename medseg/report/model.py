"""What a report is made of, independent of the output format (HTML or Markdown)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class Figure:
    """A PNG figure.

    Args:
        name: file stem in report_assets/ (letters, digits, underscores).
        png: the encoded PNG.
        caption: one line under the figure (carries the metric contract for metric plots).
        wide: takes the page's full width instead of sitting beside the next figure.
    """

    name: str
    png: bytes
    caption: str = ""
    wide: bool = False


@dataclass
class Table:
    """A small table of already-formatted cells; `row_classes` tag rows for styling (e.g. severity)."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)


@dataclass
class Note:
    """A sentence for the reader; `warn` marks something that needs attention."""

    text: str
    warn: bool = False


Block = Union[Figure, Table, Note]


@dataclass
class Section:
    """One heading with its figures, tables and notes, in reading order."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    """The whole report: a title, a subtitle line and the sections."""

    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]
