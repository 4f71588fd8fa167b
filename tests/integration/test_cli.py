"""The command line, run as a real process: exit codes, one-line errors, no traceback, no password."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import base_config

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridged", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def write(tmp_path: Path, config: dict | str) -> Path:
    path = tmp_path / "bridged.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def valid(tmp_path: Path) -> dict:
    return base_config(
        {"out": {"type": "file", "path": str(tmp_path / "out.log")}},
        {"glance": {"exchange": "glance", "sink": "out"}},
    )


def test_version():
    """--version prints the version and exits 0."""
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("bridged 0.")


def test_check_accepts_the_shipped_example():
    """etc/bridged.yaml validates as shipped, and the password is masked in the summary."""
    result = run("--config", str(REPO / "etc" / "bridged.yaml"), "--check")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "guest:guest" not in result.stdout and "****" in result.stdout


def test_check_accepts_the_topic_mode_openstack_config():
    """etc/openstack-topics.yaml: 14 bindings (7 priorities, legacy and versioned) on the services' queues."""
    shipped = run("--config", str(REPO / "etc" / "openstack-topics.yaml"), "--check")
    assert shipped.returncode == 0 and "OK (14 bindings, 1 sink," in shipped.stdout and shipped.stderr == ""


def test_check_passes_the_openstack_config_and_warns_about_rpc_bindings(tmp_path):
    """etc/openstack.yaml binds no RPC; '#' on nova's exchange is valid but gets one warning line."""
    shipped = run("--config", str(REPO / "etc" / "openstack.yaml"), "--check")
    assert shipped.returncode == 0 and "OK (6 bindings" in shipped.stdout and shipped.stderr == ""
    config = valid(tmp_path)
    config["bindings"]["glance"]["routing_keys"] = ["notifications.*", "#"]
    result = run("--config", str(write(tmp_path, config)), "--check")
    assert result.returncode == 0 and "OK" in result.stdout
    assert result.stderr.splitlines() == [
        "bridged: warning: bindings.glance.routing_keys[1]: '#' on OpenStack control exchange 'glance' also "
        "copies RPC messages; bind notifications.* (and versioned_notifications.* for nova) instead"
    ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["bindings"]["glance"].update(exchange_type="fanot"),
            "bindings.glance.exchange_type: 'fanot' is not one of fanout, direct, topic",
        ),
        (lambda c: c["bindings"]["glance"].update(sink="nope"), "bindings.glance.sink: sink 'nope' is not declared"),
        (
            lambda c: c["bindings"]["glance"].update(prefetsh=10),
            "bindings.glance.prefetsh: unknown key (did you mean 'prefetch'?)",
        ),
        (lambda c: c.update(bindings={}), "bindings: declare at least one binding"),
        (lambda c: c["reconnect"].update(initial_delay=-1), "reconnect.initial_delay: must be greater than 0"),
        (lambda c: c["broker"].update(url="amqp://user:s3cret@host:notaport//"), "broker.url: malformed broker URL"),
        (lambda c: c["broker"].update(url="http://user:s3cret@host//"), "must start with amqp://, amqps://, amqp10://"),
        (lambda c: c["bindings"]["glance"].update(format="{body.__class__}"), "bindings.glance.format: unknown field"),
        (
            lambda c: c["broker"].update(url="amqp://u:${BRIDGED_UNSET_VAR}@h//"),
            "broker.url: environment variable BRIDGED_UNSET_VAR is not set",
        ),
    ],
)
def test_check_rejects_a_bad_config_with_one_line(tmp_path, mutate, expected):
    """Each mistake: exit 2, one line naming the file and the key path, no traceback, no password."""
    config = valid(tmp_path)
    mutate(config)
    path = write(tmp_path, config)
    for args in (("--check",), ()):
        result = run("--config", str(path), *args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(path) in lines[0] and expected in lines[0]
        assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
        assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("broker: [unclosed\n", "invalid YAML (line"),
        ("sinks: {a: {type: stdout}}\nsinks: {}\n", "duplicate key 'sinks'"),
        ("!!python/object/apply:os.system ['true']\n", "invalid YAML"),
        ("a: &a [*a, *a]\n", "a[0][0]"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "too large",
        ),
        ("", "the file is empty"),
        ("- a list\n", "expected a mapping, got a list"),
    ],
)
def test_check_rejects_bad_yaml(tmp_path, content, expected):
    """Invalid, duplicate-key, unsafe-tag and empty YAML each give one line and exit 2."""
    result = run("--config", str(write(tmp_path, content)), "--check")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_directory(tmp_path):
    """A missing file, a directory and an unreadable file as config path are one-line errors."""
    cases = (
        (tmp_path / "nope.yaml", "No such file"),
        (tmp_path, "it is a directory"),
        ("/proc/self/mem", "cannot read /proc/self/mem"),  # unreadable even for root: read(2) fails
    )
    for path, expected in cases:
        result = run("--config", str(path), "--check")
        assert result.returncode == 2
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_config_argument():
    """Running without --config is a usage error, exit 2."""
    result = run()
    assert result.returncode == 2
    assert "--config" in result.stderr


@pytest.mark.parametrize("args", [("--bogus",), ("--config",), ("--log-level", "loud"), ("publish", "--count", "x")])
def test_argument_mistakes_get_one_line(args):
    """argparse's usage block is replaced by one line naming the mistake (exit 2)."""
    result = run(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "error:" in result.stderr, result.stderr
    assert "--help" in result.stderr


def test_unreachable_broker_is_retried_then_gives_up_with_masked_password(tmp_path):
    """A down broker is retried with backoff (not fatal); max_attempts ends it with exit 3; no password logged."""
    config = valid(tmp_path)
    config["broker"]["url"] = "amqp://admin:hunter2@127.0.0.1:1//"
    config["reconnect"] = {"initial_delay": 0.05, "max_delay": 0.2, "max_attempts": 4}
    result = run("--config", str(write(tmp_path, config)), "--log-format", "json")
    assert result.returncode == 3
    events = [json.loads(line) for line in result.stderr.splitlines()]
    retries = [e for e in events if e["event"] == "reconnect_scheduled"]
    assert [e["attempt"] for e in retries] == [1, 2, 3, 4]
    assert all(e["binding"] == "glance" and e["retry_in"] <= 0.2 and "reason" in e for e in retries)
    assert any(e["event"] == "gave_up" for e in events)
    assert not any(e["event"] == "bindings_wedged" for e in events), "giving up is not being wedged"
    assert "hunter2" not in result.stderr and "admin:****@" in result.stderr
