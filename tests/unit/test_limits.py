"""The open-file budget: what a config can hold open, and the soft limit raised to fit it."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

from bridged.httpserver import MAX_CONNECTIONS
from bridged.limits import BASE, PER_BINDING, PER_FILE_SINK, PER_SOCKET_SINK, descriptors_needed
from tests.unit.test_config import parse

CONFIG = {
    "sinks": {
        "plain": {"type": "file", "path": "/var/log/bridged/all.log"},
        "by_type": {"type": "file", "path": "/var/log/bridged/{event_type}.log", "max_open_files": 500},
        "remote": {"type": "syslog", "address": "udp://127.0.0.1:514"},
    },
    "bindings": {name: {"exchange": name, "sinks": ["plain", "by_type", "remote"]} for name in ("nova", "glance")},
}


def test_the_budget_counts_bindings_sinks_templates_and_the_endpoint():
    config = parse(CONFIG)
    expected = BASE + 2 * PER_BINDING + PER_FILE_SINK + (500 + 2) + PER_SOCKET_SINK
    assert descriptors_needed(config) == expected
    with_metrics = parse({**CONFIG, "metrics": {"listen": "127.0.0.1:9125"}})
    assert descriptors_needed(with_metrics) > expected + MAX_CONNECTIONS


CHILD = """
import json, resource, sys, yaml
from bridged.config import parse_config
from bridged.limits import fit_open_files
soft, hard, max_open_files = map(int, sys.argv[1:])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
raw = {"sinks": {"t": {"type": "file", "path": "/tmp/x/{event_type}.log", "max_open_files": max_open_files}},
       "bindings": {"b": {"exchange": "x", "sink": "t"}}}
warning = fit_open_files(parse_config(yaml.safe_dump(raw), "t.yaml", {}))
print(json.dumps([warning or "", resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))
"""


def fit_in_child(soft: int, hard: int, max_open_files: int) -> tuple[str, int]:
    """fit_open_files in a child process whose limit is (soft, hard): (its warning or '', its soft limit after)."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(soft), str(hard), str(max_open_files)],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    warning, limit = json.loads(out.stdout)
    return warning, limit


def test_the_soft_limit_is_raised_to_what_the_config_needs_and_a_short_hard_limit_is_named():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= 1024  # what this test process can hand its child
    warning, limit = fit_in_child(64, 1024, 500)
    assert warning == "" and limit >= 500
    warning, limit = fit_in_child(64, 128, 500)
    assert limit == 128
    assert warning.startswith("the config can hold about ") and "the open-file limit is 128" in warning
    assert "LimitNOFILE=" in warning
    warning, limit = fit_in_child(1024, 1024, 10)
    assert warning == "" and limit == 1024  # never lowered
