"""The generated reference is true to the code: config keys as the parser takes them, every event, fresh pages."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridged.config import ConfigError, parse_config
from bridged.events import EVENTS
from bridged.settings import SECTIONS
from tests.readme import blocks as readme_blocks
from tests.readme import unnamed_shell_blocks

REPO = Path(__file__).resolve().parents[2]
PROBE = "zz_not_a_key"

SINKS = {
    "file": {"type": "file", "path": "/tmp/x.log"},
    "template": {"type": "file", "path": "/tmp/x/{event_type}.log"},
    "stdout": {"type": "stdout"},
    "syslog": {"type": "syslog"},
    "relp": {"type": "relp", "address": "tcp://127.0.0.1"},
}
BINDINGS = {
    "exchange": {"exchange": "x", "sink": "s"},
    "exchanges": {"exchanges": {"x": {}}, "sinks": ["s"], "filter": {}},
    "passive": {"queue_declare": "passive", "queue": "q", "sink": "s"},
}


def known_keys(raw: dict[str, Any], where: list[str]) -> set[str]:
    """The keys the parser accepts at *where*, read from its own unknown-key error."""
    probe = copy.deepcopy(raw)
    node = probe
    for part in where:
        node = node.setdefault(part, {})
    node[PROBE] = 1
    with pytest.raises(ConfigError) as error:
        parse_config(yaml.safe_dump(probe), "probe.yaml", {})
    message = str(error.value)
    assert f"{'.'.join(where)}.{PROBE}: unknown key" in message, message
    return set(message.split("known keys: ", 1)[1].split(", "))


def table_keys(section: str, prefix: str, kind: str | None = None) -> set[str]:
    keys = set()
    for setting in SECTIONS[section]:
        if kind is not None and setting.kind and kind not in setting.kind.split(", "):
            continue
        rest = setting.key.removeprefix(prefix)
        if rest != setting.key:
            keys.add(rest.split(".")[0])
    return keys


def config(sink: dict[str, Any] | None = None, binding: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"sinks": {"s": sink or {"type": "stdout"}}, "bindings": {"b": binding or BINDINGS["exchange"]}}


def test_every_config_key_is_in_the_reference_and_every_reference_key_is_taken():
    for section in ("broker", "reconnect", "metrics"):
        assert known_keys(config(), [section]) == table_keys(section, f"{section}."), section
    assert known_keys(config(), ["broker", "tls"]) == table_keys("broker", "broker.tls.")
    for name, sink in SINKS.items():
        kind = "file" if name == "template" else name
        taken = known_keys(config(sink=sink), ["sinks", "s"])
        if name == "file":
            taken |= known_keys(config(sink=SINKS["template"]), ["sinks", "s"])
        taken |= {"format", "tls"} if name == "relp" else {"format"}  # read by presence, not through a check
        if name != "template":
            assert taken == table_keys("sinks", "sinks.<name>.", kind), name
    taken = set().union(*(known_keys(config(binding=b), ["bindings", "b"]) for b in BINDINGS.values()))
    amqp10 = {"broker": {"url": "amqp10://h"}, "sinks": {"s": {"type": "stdout"}},
              "bindings": {"b": {"address": "a", "sink": "s"}}}  # fmt: skip
    taken |= known_keys(amqp10, ["bindings", "b"])
    taken |= {"exchanges", "sinks"}  # read by presence (either this or that), not through the checks above
    assert taken == table_keys("bindings", "bindings.<name>.")
    assert known_keys(config(binding=BINDINGS["exchanges"]), ["bindings", "b", "filter"]) == {"keep", "drop"}


LOGGED = re.compile(r"""(?:_log|get_logger\(\))\.(?:debug|info|warning|error|exception)\(\s*"([a-z_]+)\"""")


def test_every_logged_event_is_in_the_events_table():
    logged = {event for path in (REPO / "bridged").rglob("*.py") for event in LOGGED.findall(path.read_text())}
    assert logged - set(EVENTS) == set(), "logged but not in bridged/events.py"
    assert set(EVENTS) - logged == set(), "in bridged/events.py but never logged"


def test_the_generated_reference_is_fresh():
    """docs/*.md's generated parts match the code (python docs/generate.py regenerates them)."""
    result = subprocess.run([sys.executable, str(REPO / "docs" / "generate.py"), "--check"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_generated_blocks_are_where_the_pages_say():
    """Each generated table sits in its page, so the reference a reader opens is the generated one."""
    expected = {
        "configuration.md": [f"settings:{section}" for section in SECTIONS],
        "operations.md": ["events"],
        "cli.md": ["exit-codes", "help:bridged", "help:tail", "help:publish"],
    }
    for page, names in expected.items():
        text = (REPO / "docs" / page).read_text()
        for name in names:
            assert f"<!-- BEGIN GENERATED: {name} -->" in text, f"{page}: {name}"


# README blocks each test runs: tests/integration/test_readme.py (and .ci/run for `test`).
RUN_BLOCKS = {"packages", "install", "run", "try-it", "test-packages", "test"}
CHECKED_BLOCKS = {"healthy-start", "config"}  # not commands: compared with what bridged logs, or validated


def test_every_readme_command_block_is_one_a_test_runs():
    found = readme_blocks()
    assert unnamed_shell_blocks() == [], "a README shell block without a <!-- tested: NAME --> marker"
    assert set(found) == RUN_BLOCKS | CHECKED_BLOCKS


def test_the_readme_config_example_is_valid(tmp_path):
    secret = tmp_path / "broker-password"
    secret.write_text("s3cret\n")
    text = readme_blocks()["config"].replace("/etc/bridged/broker-password", str(secret))
    config = parse_config(text, "README.md", {})
    assert "s3cret" in config.broker.urls[0] and set(config.bindings) == {"nova"}


def test_the_readme_stays_short_enough_to_read_to_the_end():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_every_link_between_the_pages_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}"


@pytest.mark.parametrize("command", ["run", "tail", "publish"])
def test_every_option_and_argument_has_help(command):
    import importlib

    parser = importlib.import_module(f"bridged.cli.{command}").build_parser()
    missing = [action.dest for action in parser._actions if not action.help]
    assert missing == []
