"""The README's command blocks, by name: each fenced block under a `<!-- readme: NAME -->` marker.

The tests run them as they are (tests/integration/test_readme.py), and
`.ci/run` runs the test commands through `python -m tests.readme test`, so
what a newcomer copies is what CI ran.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^<!-- readme: (?P<name>[\w-]+) -->\n```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)
_ANY_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)


def blocks(text: str | None = None) -> dict[str, str]:
    """NAME -> the block's text (a marker names one block)."""
    text = README.read_text() if text is None else text
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        if match["name"] in found:
            raise ValueError(f"README.md: two blocks named {match['name']!r}")
        found[match["name"]] = match["body"]
    return found


def unnamed_shell_blocks(text: str | None = None) -> list[str]:
    """Shell blocks without a marker: commands no test runs."""
    text = README.read_text() if text is None else text
    named = {m.start("body") for m in _BLOCK.finditer(text)}
    return [m["body"] for m in _ANY_FENCE.finditer(text) if m["lang"] == "sh" and m.start("body") not in named]


if __name__ == "__main__":
    print(blocks()[sys.argv[1]], end="")
