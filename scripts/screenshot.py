#!/usr/bin/env python3
"""Take docs/report.png from the current code: a report page, checked in headless Chromium
(the same check as tests/test_browser.py) and photographed.

    .venv/bin/python scripts/screenshot.py              # measure, render and shoot
    .venv/bin/python scripts/screenshot.py --page reports/<id>/index.html   # a page you have

Without ``--page`` it measures DeepLabV3's batch-1 NCHW problems on this machine into a
throw-away tuning database (`atrous tune --batch 1 --layout NCHW --total-budget 60s`, then
`atrous bench` and `atrous report` on the same problems; about 6 minutes on 2 cores;
``--smoke``: the tiny smoke suite in about 2 minutes, whose times are all call overhead),
so the picture shows real numbers from the code as it is, and nothing of yours is touched.
Needs the test extra (playwright) and a system Chromium (`apt-get install chromium`); exits
1 when the page has a problem.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the page check lives with the tests that use it

from browser_check import BrowserError, check_page  # noqa: E402


def atrous(*args: str) -> None:
    """Run one `atrous` command with this interpreter; exit with its status if it fails."""
    cmd = [sys.executable, "-m", "atrous.cli", *args]
    print("+ atrous", " ".join(args), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code:
        sys.exit(code)


#: The problems measured for the picture: real DeepLabV3 sizes, few enough to be quick.
PROBLEMS = ("--batch", "1", "--layout", "NCHW")
SMOKE = ("--suite", "smoke")


def measure(folder: Path, problems: tuple[str, ...]) -> Path:
    """Tune, bench and report ``problems`` into a database in ``folder``; the page's path."""
    db = str(folder / "tuning.json")
    atrous("tune", *problems, "--total-budget", "60s", "--db", db)
    atrous("bench", *problems, "--db", db)
    out = folder / "report"
    atrous("report", "--db", db, "--out", str(out))
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page", type=Path, help="an existing report page (default: measure"
                        " batch-1 NCHW problems in a throw-away database, render the report)")
    parser.add_argument("--smoke", action="store_true",
                        help="measure the tiny smoke suite instead (quick; for trying this)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png",
                        help="where the PNG goes (default: docs/report.png)")
    parser.add_argument("--width", type=int, default=1280, help="CSS pixels (default 1280)")
    parser.add_argument("--height", type=int, default=1400, help="CSS pixels (default 1400)")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the top")
    args = parser.parse_args(argv)
    if args.width <= 0 or args.height <= 0:
        parser.error("--width and --height must be positive")
    with tempfile.TemporaryDirectory(prefix="atrous-screenshot-") as tmp:
        page = args.page if args.page is not None else measure(
            Path(tmp), SMOKE if args.smoke else PROBLEMS)
        try:
            check = check_page(page, screenshot=True, width=args.width, height=args.height,
                               full_page=args.full_page)
        except (BrowserError, FileNotFoundError) as exc:
            print(f"screenshot: {exc}", file=sys.stderr)
            return 1
    problems = check.problems()
    for line in problems:
        print("  ", line, file=sys.stderr)
    if problems:
        print(f"screenshot: {page} has {len(problems)} problems; no picture written",
              file=sys.stderr)
        return 1
    assert check.screenshot is not None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(check.screenshot)
    print(f"{check.title}: {len(check.images)} plots, {len(check.tables)} tables, no problems;"
          f" wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
