"""``python -m atrous.gpucheck``: the compile check in any mode (``atrous verify
--compile-only`` offers ci / sample / full), printing the summary as plain text and
optionally every compile as JSON; exit code 1 on any failure. The test suite uses it to run
the "defaults" set under a second Triton (scripts/dev.py's .venv-triton36)."""

from __future__ import annotations

import argparse
import json
import sys

from atrous.gpucheck.run import MODES, timed_run
from atrous.gpucheck.summary import HEADERS, failures, records, summarize


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the check, print the summary; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m atrous.gpucheck", description=__doc__)
    parser.add_argument("--mode", choices=MODES, default="ci")
    parser.add_argument("--target", action="append", help="repeatable; default sm_80 and sm_90")
    parser.add_argument("--json", help="write every compile here")
    parser.add_argument("--workers", type=int, default=None, help="compile processes")
    args = parser.parse_args(argv)
    targets = args.target or ["sm_80", "sm_90"]
    rows, seconds = timed_run(args.mode, targets, workers=args.workers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records(rows), f)
    import triton

    print(f"compile check, triton {triton.__version__}, {args.mode}, {', '.join(targets)}")
    print(" | ".join(HEADERS))
    for line in summarize(rows):
        print(" | ".join(line))
    bad = failures(rows)
    for line in bad:
        print(f"FAILED {line}")
    print(f"{len(rows)} compiled launches, {len(bad)} failed, {seconds:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
