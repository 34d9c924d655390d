"""Markdown tables for the benchmark scripts (standard library only: the GPU scripts run on
machines with nothing but torch, triton, numba, numpy and rich installed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]],
                   right: Iterable[int] = ()) -> str:
    """A Markdown table of text cells; columns whose index is in ``right`` are
    right-aligned (numbers). ``|`` inside a cell is escaped."""
    aligned = set(right)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if i in aligned else "---" for i in range(len(headers))) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]],
                right: Iterable[int] = (), errors: Iterable[str] = ()) -> None:
    """Print :func:`markdown_table` after a blank line, then one indented line per error."""
    print()
    print(markdown_table(headers, rows, right))
    for error in errors:
        print(f"  {error}")
