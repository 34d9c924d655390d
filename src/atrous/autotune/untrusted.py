"""Files as untrusted data: JSON parsed so that no content can raise anything but
:class:`BadData`, and the checks every reader applies to the values it takes from it.

Tuning files, trial logs, bench rows and ceilings are shipped between machines and edited
by hand, so any bytes may be there: invalid UTF-8, nesting deeper than the interpreter's
recursion limit, integers past Python's int-string limit, ``1e400`` (which parses as
infinity), ``NaN``, lone surrogates. :func:`parse_json` turns all of these into BadData (for
the whole file) or into values the field checks reject (for one record):

- integers of more than :data:`MAX_INT_DIGITS` digits (:class:`HugeInt`) and non-finite
  floats parse as ``inf`` so that :func:`number` rejects them where they sit, and only
  that record is lost;
- :func:`text` rejects strings that cannot be encoded as UTF-8 (lone surrogates), which
  would otherwise fail later, when printed or written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MAX_INT_DIGITS = 40  # far beyond any size or count atrous writes, far below the int limit
MAX_ABS_INT = 1 << 63
MAX_BYTES = 1 << 28  # 256 MiB: a tuning file is kilobytes; more is not a tuning file


class BadData(ValueError):
    """A file whose content is not usable data (the message says why, without the path)."""


class HugeInt(float):
    """An integer literal too long to convert (Python's int-string limit): infinity, which
    every number check rejects, that says what it was in messages."""


def _int(token: str) -> int | float:
    digits = token.lstrip("-")
    return HugeInt(math.inf) if len(digits) > MAX_INT_DIGITS else int(token)


def parse_json(data: bytes | str) -> Any:
    """Parse ``data`` (UTF-8 bytes or text) as JSON; BadData on any problem, never another
    exception (RecursionError, ValueError of the int-string limit, UnicodeDecodeError)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadData(f"not UTF-8 text (byte {exc.start})") from None
    try:
        # floats as float(): "1e400" is inf and NaN / Infinity are kept, for the number
        # checks to reject where they sit (one record lost, not the file)
        return json.loads(data, parse_int=_int, parse_float=float, parse_constant=float)
    except RecursionError:
        raise BadData("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BadData(f"not valid JSON ({exc})") from None
    except (ValueError, OverflowError, MemoryError) as exc:
        raise BadData(f"not usable JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def read_json(path: Path | str) -> Any:
    """The JSON document in the file at ``path``: FileNotFoundError when it is missing,
    OSError when it cannot be read, BadData when its content is not usable JSON."""
    path = Path(path)
    with path.open("rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise BadData(f"larger than {MAX_BYTES >> 20} MiB")
    return parse_json(data)


def text(value: Any, what: str, limit: int = 2000) -> str:
    """``value`` when it is a string of at most ``limit`` characters that encodes as UTF-8;
    BadData otherwise."""
    if not isinstance(value, str) or len(value) > limit:
        raise BadData(f"{what} must be a string of at most {limit} characters,"
                      f" got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadData(f"{what} is not valid text (a lone surrogate)") from None
    return value


def is_number(value: Any) -> bool:
    """True for a finite int or float (not bool) of a size atrous can compute with."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_ABS_INT
    return math.isfinite(value)


def number(value: Any, what: str, *, minimum: float | None = None,
           maximum: float | None = None) -> float:
    """``value`` as a float when :func:`is_number` and within [minimum, maximum]; BadData
    otherwise."""
    if not is_number(value) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        bound += "" if maximum is None else f" <= {maximum:g}"
        raise BadData(f"{what} must be a finite number{bound}, got {short(value)}")
    return float(value)


def count(value: Any, what: str, *, minimum: int = 0, maximum: int = MAX_ABS_INT) -> int:
    """``value`` when it is an int (not bool) in [minimum, maximum]; BadData otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not (
            minimum <= value <= maximum):
        raise BadData(f"{what} must be an integer in [{minimum}, {maximum}],"
                      f" got {short(value)}")
    return value


def scalar(value: Any) -> bool:
    """True for a JSON scalar atrous can store and print: null, bool, a usable number or
    valid text."""
    if value is None or isinstance(value, bool) or is_number(value):
        return True
    if isinstance(value, str):
        try:
            text(value, "value", 4000)
        except BadData:
            return False
        return True
    return False


def short(value: Any) -> str:
    """``repr(value)`` cut short (a 5000-digit number or a huge list is not a message)."""
    if isinstance(value, HugeInt) or (isinstance(value, int) and not isinstance(value, bool)
                                      and abs(value) > MAX_ABS_INT):
        return "an integer too large"
    try:
        shown = repr(value)
    except (ValueError, RecursionError):
        shown = f"a {type(value).__name__}"
    return shown if len(shown) <= 80 else shown[:77] + "..."
