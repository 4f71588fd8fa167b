"""Regenerate the reference parts of docs/*.md from the code: config keys, log events, exit codes, command help.

Each generated part sits between `<!-- BEGIN GENERATED: NAME -->` and
`<!-- END GENERATED: NAME -->` in a page; the prose around it is written by
hand. `python docs/generate.py` rewrites them; `--check` only says which
pages are stale (tests/unit/test_docs.py runs it, so CI fails on a stale page).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from bridged.events import EVENTS  # noqa: E402
from bridged.exitcodes import MEANINGS  # noqa: E402
from bridged.settings import SECTIONS  # noqa: E402

# Help text wraps at this width, whatever the terminal that regenerates it.
HELP_WIDTH = "100"
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w:-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
                    re.S)  # fmt: skip


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table(section: str) -> str:
    rows = SECTIONS[section]
    with_kind = any(setting.kind for setting in rows)
    head = "| key | default | meaning |" + (" sink types |" if with_kind else "")
    lines = [head, "|---|---|---|" + ("---|" if with_kind else "")]
    for setting in rows:
        cells = [f"`{setting.key}`", _cell(setting.default), _cell(setting.meaning)]
        if with_kind:
            cells.append(setting.kind or "every")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def events_table() -> str:
    lines = ["| event | level | when |", "|---|---|---|"]
    lines += [f"| `{event}` | {level} | {_cell(when)} |" for event, (level, when) in EVENTS.items()]
    return "\n".join(lines) + "\n"


def exit_codes_table() -> str:
    lines = ["| code | meaning |", "|---:|---|"]
    lines += [f"| {code} | {_cell(meaning)} |" for code, meaning in sorted(MEANINGS.items())]
    return "\n".join(lines) + "\n"


def command_help(command: str) -> str:
    os.environ["COLUMNS"] = HELP_WIDTH
    if command == "bridged":
        from bridged.cli.run import build_parser
    elif command == "tail":
        from bridged.cli.tail import build_parser
    else:
        from bridged.cli.publish import build_parser
    text = build_parser().format_help().rstrip()
    return f"```\n{text}\n```\n"


GENERATORS: dict[str, Callable[[], str]] = {
    **{f"settings:{section}": (lambda s=section: settings_table(s)) for section in SECTIONS},
    "events": events_table,
    "exit-codes": exit_codes_table,
    **{f"help:{command}": (lambda c=command: command_help(c)) for command in ("bridged", "tail", "publish")},
}


def regenerate(text: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise SystemExit(f"unknown generated block {name!r}")
        return f"{match.group(1)}{GENERATORS[name]()}{match.group(4)}"

    return _BLOCK.sub(fill, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale pages and exit 1, changing nothing")
    args = parser.parse_args()
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        fresh = regenerate(text)
        if fresh != text:
            stale.append(page.name)
            if not args.check:
                page.write_text(fresh)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}: run python docs/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
