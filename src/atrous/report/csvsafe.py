"""CSV cells a spreadsheet cannot run: every CSV atrous writes passes its cells through
:func:`csv_cell` (CSV injection: a cell such as ``=HYPERLINK(...)`` taken from an imported
file would otherwise be evaluated when the CSV is opened)."""

from __future__ import annotations

from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV cell: text starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return gets a leading ``'`` (shown, not evaluated); anything else as it is."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
