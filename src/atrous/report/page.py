"""A report page as plain data: a header of facts, summary lines, and sections of tables and
plots. Built once (by ``build`` or ``compare``), rendered twice: to HTML and to Markdown,
so both always hold the same tables.

All text here is plain text; the renderers escape it (an op or shape name holding ``<``
stays text in the page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, and ``kind`` for styling ("num" right-aligns a number;
    "good"/"bad" colour a ratio; "muted" greys a missing value; "name" never wraps;
    "config" is set small)."""

    text: str
    kind: str = ""


@dataclass
class Table:
    """A table with a caption; ``id`` names it in the HTML page (tests look rows up by it;
    made safe with :func:`slug`)."""

    id: str
    caption: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        self.id = slug(self.id)


@dataclass(frozen=True)
class Plot:
    """A PNG image: ``name`` is its file name under ``plots/`` (without ``.png``; made safe
    with :func:`slug`)."""

    name: str
    title: str
    png: bytes
    alt: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", slug(self.name))


@dataclass
class Section:
    """A titled part of the page: an introduction, tables, then plots."""

    id: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Page:
    """The whole report."""

    title: str
    facts: list[tuple[str, str]]
    summary: list[str]
    sections: list[Section]
    generated_at: str

    def plots(self) -> list[Plot]:
        return [p for s in self.sections for p in s.plots]

    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]


def slug(text: str) -> str:
    """``text`` as a safe file name and HTML id: letters, digits, ``-``, ``_`` and ``.``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


def num(value: float | None, fmt: str = "{:.3f}", *, missing: str = "–") -> Cell:
    """A right-aligned number cell (``missing`` when None)."""
    if value is None:
        return Cell(missing, "muted")
    return Cell(fmt.format(value), "num")


def ratio(value: float | None) -> Cell:
    """A speed ratio (above 1: atrous is faster), coloured by which side wins."""
    if value is None:
        return Cell("–", "muted")
    # Coloured as shown: 0.999 prints as 1.00x, which must not look like a loss.
    return Cell(f"{value:.2f}x", "num good" if round(value, 2) >= 1.0 else "num bad")
