"""Command line: `bridged --config FILE` runs the daemon; tools are subcommands. The only place that prints."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the first argument: a tool's name, else the daemon's own options."""
    args = list(sys.argv[1:] if argv is None else argv)
    from bridged.cli import run

    return run.main(args)
