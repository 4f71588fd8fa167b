"""Hostile and mutated configs: always one ConfigError line, never a traceback or a hang."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
import yaml

from bridged.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
# What people (and fuzzers) put where a value goes.
TOKENS = [
    "!!bool topic", "!!int x", "!!float", "!!set {a, b}", "2024-02-30", "1" * 401, "9" * 5000, "[" * 1000,
    "{" * 1000, "*x", "&x", "<<: *x", "\x00", "~", "null", "-1", "1e999", ".nan", "!!binary AAAA",
    "!!timestamp 2024-13-45", "!!python/object:os.system", "? [a]", ": ", "\t", "'", '"', "${X}", "${X:-1}",
    "$${", "%41", "- a\n- b", "0x1F", "0o17", "1_000", "yes", "on", "!!str", "!!map", "!!seq", "!!omap [a]",
    "!!pairs [a]", "|", ">", "#", "\u2028", "\ufeff", "a" * 10_000,
]  # fmt: skip
# A single parse takes milliseconds; this only tells a hang from slowness on a loaded machine.
HANG = 5.0


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(text))
        op = rng.random()
        if op < 0.3:
            text = text[:pos] + text[pos + rng.randint(1, 20) :]
        elif op < 0.8:
            text = text[:pos] + rng.choice(TOKENS) + text[pos:]
        else:
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            if ":" in lines[i]:
                lines[i] = lines[i].split(":")[0] + ": " + rng.choice(TOKENS)
            text = "\n".join(lines)
    return text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_example_configs_give_one_line_errors(seed):
    """3 x 1,500 seeded mutations of etc/bridged.yaml: valid, or one ConfigError line; no other exception."""
    base = (REPO / "etc" / "bridged.yaml").read_text()
    rng = random.Random(seed)
    errors = 0
    for _ in range(1500):
        text = mutate(rng, base)
        started = time.monotonic()
        try:
            parse_config(text, "bridged.yaml", {"X": "1"})
        except ConfigError as exc:
            errors += 1
            assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)[:300]
        assert time.monotonic() - started < HANG, text[:200]
    assert errors > 500  # the mutations do hit: most configs are broken


def config_with(**broker) -> str:
    return yaml.safe_dump({"broker": broker, "sinks": {"o": {"type": "stdout"}},
                           "bindings": {"b": {"exchange": "e", "sink": "o"}}})  # fmt: skip


@pytest.mark.parametrize("key", ["password_file", "tls.ca_file"])
def test_special_files_are_refused_at_once(tmp_path, key):
    """A FIFO, /dev/zero, a directory, a NUL in the path or a huge file: one line, no hang."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (2 << 20))
    cases = {str(fifo): "not a regular file", "/dev/zero": "not a regular file", str(tmp_path): "not a regular file",
             "a\x00b": "NUL", str(huge): "larger than"}  # fmt: skip
    for path, expected in cases.items():
        broker = {"password_file": path} if key == "password_file" else {"tls": {"ca_file": path}}
        started = time.monotonic()
        with pytest.raises(ConfigError) as info:
            parse_config(config_with(**broker), "f", {})
        assert time.monotonic() - started < HANG
        assert f"broker.{key}" in str(info.value) and expected in str(info.value), str(info.value)


def test_a_password_file_with_a_nul_byte_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"pass\x00word\n")
    with pytest.raises(ConfigError, match="alone on one line"):
        parse_config(config_with(password_file=str(secret)), "f", {})
