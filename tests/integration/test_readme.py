"""The README's commands, run as they are written, as a newcomer meets them: a broker that never saw bridged.

tests/readme.py finds the blocks by their `<!-- tested: NAME -->` markers;
tests/unit/test_docs.py makes sure every shell block has one, so none of
them can drift from what these tests run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import amqp
import pytest
import yaml

from bridged.config import load_config
from bridged.log import readable_stats
from bridged.supervisor import FIRST_STATS_AFTER
from tests.integration.conftest import BROKER_HOST, RUN_LIMIT, wait_until
from tests.readme import blocks

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc" / "bridged.yaml"
# What the shipped example declares on the broker: removed first, so the broker is as fresh as a new one for it.
EXAMPLE_QUEUES = ("bridged.demo", "bridged.nova", "bridged.glance")
EXAMPLE_EXCHANGE = "bridged.demo"
SAMPLE_LINE = re.compile(r"^\[(?P<level>\w+)\s*\] (?P<event>\w+)\s+(?P<fields>.*)$")
FIELD = re.compile(r"(\w+)=('[^']*'|\S+)")


def shell_env() -> dict[str, str]:
    """The newcomer's shell after `. .venv/bin/activate`: this virtualenv's bin first on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "VIRTUAL_ENV": str(Path(venv_bin).parent)}


def forget_the_example() -> None:
    """Delete what etc/bridged.yaml declared on an earlier run: the broker meets it for the first time."""
    with amqp.Connection(BROKER_HOST, userid="guest", password="guest") as conn:
        for queue in EXAMPLE_QUEUES:
            channel = conn.channel()
            channel.queue_delete(queue)
        conn.channel().exchange_delete(EXAMPLE_EXCHANGE)


def start_wait(config_path: Path) -> float:
    """How long a start may take to reach `consuming`: the config's connect timeout and first retry, on a
    loaded machine (every binding connects at once)."""
    config = load_config(str(config_path))
    return 3 * (config.broker.connect_timeout + config.reconnect.initial_delay) + RUN_LIMIT / 2


def events(stderr: Path) -> list[dict[str, object]]:
    out = []
    for line in stderr.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def sample_matches(sample_line: str, logged: list[dict[str, object]]) -> bool:
    """A line of the README's healthy-start sample is one the daemon logged (JSON here): the same event and
    level, and each field it shows with the value shown, as the console renders it (`[...]`: any counts)."""
    match = SAMPLE_LINE.match(sample_line)
    assert match, f"not a log line: {sample_line!r}"
    shown = {key: _pattern(value.strip("'")) for key, value in FIELD.findall(match["fields"])}
    for event in logged:
        if event.get("event") != match["event"] or event.get("level") != match["level"]:
            continue
        rendered = readable_stats(None, "info", dict(event))
        if all(key in rendered and pattern.fullmatch(str(rendered[key])) for key, pattern in shown.items()):
            return True
    return False


def _pattern(shown: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in shown.split("[...]")).replace(".*?", r"\[[^\]]*\]"))


def test_install_block_installs_a_working_bridged_in_a_fresh_checkout(tmp_path):
    """`python3 -m venv .venv && . .venv/bin/activate && pip install .` in a copy of the checkout."""
    checkout = tmp_path / "bridged"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info",
                                                                  "build", ".mypy_cache", ".ruff_cache"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(["bash", "-e", "-c", blocks()["install"]], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    version = subprocess.run([str(checkout / ".venv" / "bin" / "bridged"), "--version"], capture_output=True,
                             text=True, timeout=RUN_LIMIT, cwd=tmp_path)  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("bridged "), version.stderr


def test_run_then_try_it_work_the_first_time_on_a_broker_that_never_saw_bridged():
    """Run the example, wait for `consuming` as the README says, run "Try it": the notification is in the file and
    on stdout; the start looks like the README's sample; Ctrl-C stops it with exit 0."""
    readme = blocks()
    forget_the_example()
    example = yaml.safe_load(EXAMPLE.read_text())
    output = Path(example["sinks"]["notifications"]["path"])
    before = output.read_text().count("\n") if output.exists() else 0
    logs = Path(f"/tmp/bridged-readme-{os.getpid()}")
    logs.mkdir(exist_ok=True)
    stdout, stderr = logs / "stdout", logs / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        daemon = subprocess.Popen(["bash", "-c", readme["run"]], cwd=REPO, env=shell_env(), stdout=out, stderr=err,
                                  start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: any(e.get("event") == "consuming" and e.get("binding") == "demo" for e in events(stderr)),
                   start_wait(EXAMPLE), "`consuming binding=demo`, as the README says to wait for")  # fmt: skip
        # The README's healthy start, line by line, up to the first stats line (10 s after the start).
        sample = [line for line in readme["healthy-start"].splitlines() if line.strip()]
        wait_until(lambda: all(sample_matches(line, events(stderr)) for line in sample),
                   FIRST_STATS_AFTER + start_wait(EXAMPLE), "the README's healthy-start sample")  # fmt: skip
        tried = subprocess.run(["bash", "-e", "-c", readme["try-it"]], cwd=REPO, env=shell_env(), capture_output=True,
                               text=True, timeout=RUN_LIMIT)  # fmt: skip
        assert tried.returncode == 0, tried.stderr
        printed = tried.stdout.splitlines()
        assert printed[0] == "1 sent, 1 confirmed", tried.stdout
        record = json.loads(printed[1])  # tail -n 1 of the file: the oslo record
        assert record["event_type"] == "compute.instance.create.end" and record["payload"] == {"instance_id": "i-1"}
        assert record["binding"] == "demo" and record["priority"] == "INFO"
        assert output.read_text().count("\n") == before + 1
        wait_until(lambda: "compute.instance.create.end" in stdout.read_text(), RUN_LIMIT, "the console sink's line")
    finally:
        os.killpg(daemon.pid, signal.SIGINT)  # Ctrl-C in the terminal
        code = daemon.wait(timeout=RUN_LIMIT)
    assert code == 0, stderr.read_text()[-2000:]
    assert not any(e.get("level") == "error" for e in events(stderr)), stderr.read_text()
    shutil.rmtree(logs)


@pytest.mark.skipif(os.geteuid() != 0, reason="the README's package lines run as root")
def test_package_blocks_run_as_written():
    """The apt-get, rabbitmq-plugins and LazyFS lines succeed as written (on this machine: nothing left to do)."""
    env = {**shell_env(), "DEBIAN_FRONTEND": "noninteractive"}
    for name in ("packages", "test-packages"):
        started = time.monotonic()
        done = subprocess.run(["bash", "-e", "-c", blocks()[name]], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stdout[-1000:]}{done.stderr[-1000:]}"
        assert time.monotonic() - started < 900
