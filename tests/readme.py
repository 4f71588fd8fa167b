"""The documented command blocks, by name: each fenced block under a `<!-- tested: NAME -->` marker.

The tests run them as they are (tests/integration/test_readme.py for the
README, test_systemd_units.py and test_docker_image.py for
docs/operations.md), and `.ci/run` runs the README's test command through
`python -m tests.readme test`, so what a reader copies is what CI ran.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
OPERATIONS = REPO / "docs" / "operations.md"
_BLOCK = re.compile(r"^<!-- tested: (?P<name>[\w-]+) -->\n```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)
_ANY_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)


def blocks(page: Path = README) -> dict[str, str]:
    """NAME -> the block's text (a marker names one block)."""
    text = page.read_text()
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        if match["name"] in found:
            raise ValueError(f"{page.name}: two blocks named {match['name']!r}")
        found[match["name"]] = match["body"]
    return found


def unnamed_shell_blocks(page: Path = README) -> list[str]:
    """Shell blocks without a marker: commands no test runs."""
    text = page.read_text()
    named = {m.start("body") for m in _BLOCK.finditer(text)}
    return [m["body"] for m in _ANY_FENCE.finditer(text) if m["lang"] == "sh" and m.start("body") not in named]


if __name__ == "__main__":
    print(blocks()[sys.argv[1]], end="")
