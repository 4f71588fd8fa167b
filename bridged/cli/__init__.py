"""Command line: `bridged --config FILE` runs the daemon; tools are subcommands. The only place that prints."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from bridged.cli.common import EXIT_INTERNAL, fail

# `bridged NAME ...`: each tool is a module of this package with main(argv) -> exit code.
TOOLS = ("publish", "tail")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the first argument: a tool's name, else the daemon's own options."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TOOLS:
        module = importlib.import_module(f"bridged.cli.{args[0]}")
        try:
            code: int = module.main(args[1:])
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for the user
            return fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
        return code
    from bridged.cli import run

    return run.main(args)
