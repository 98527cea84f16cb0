"""The ``liquidref`` command: ``demo``, ``emulate``, ``bench`` and ``evaluate``.

Each subcommand lives in its own module with a ``main(argv) -> int``; they are imported only
when run, so ``liquidref demo`` needs neither a GPU nor CuPy.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "demo": ("liquidref.demo", "quantize a realistic layer with LiquidQuant, QoQ and RTN; run the oracle"),
    "emulate": ("emulator.cli", "run the warp-level emulator; write its figures (--json for numbers)"),
    "bench": ("gpu.bench", "benchmark the GPU kernels against cuBLAS and torch peers (needs a GPU)"),
    "evaluate": ("liquidref.evaluate", "all-MiniLM-L6-v2 through W4A8: embedding quality per scheme"),
}


def _usage() -> str:
    lines = ["usage: liquidref <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `liquidref <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"liquidref: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
