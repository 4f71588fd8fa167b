"""What every command shares: exit codes and the one-line error."""

from __future__ import annotations

import sys

EXIT_INTERNAL = 1
EXIT_CONFIG = 2


def fail(message: str, code: int) -> int:
    """Print `bridged: <message>` to stderr and return *code* (one line, never a traceback)."""
    print(f"bridged: {message}", file=sys.stderr)
    return code
