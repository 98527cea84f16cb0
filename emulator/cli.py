"""``liquidref emulate``: run the warp-level emulator, write its figures, print its findings.

    liquidref emulate [--out DIR] [--json]

Writes ``overflow_heatmaps.png`` and ``bank_conflicts.png`` to DIR (default
``./liquidref-out/emulator``); prints a short report, or with ``--json`` one JSON object (see
``emulator.report``).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import report as build_report
from . import report_lines

DEFAULT_OUT = "liquidref-out/emulator"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 when every emulated check agrees with the oracle)."""
    parser = argparse.ArgumentParser(prog="liquidref emulate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"figure folder (default {DEFAULT_OUT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    result = build_report(args.out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(report_lines(result)))
    return 0 if result["checks_passed"] else 1
