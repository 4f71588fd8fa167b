"""The documented service install (docs/operations.md) as the dynamic user sees it; passwords of any character."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.integration.conftest import BROKER_HOST, base_config, rabbitmqctl, wait_until

REPO = Path(__file__).resolve().parents[2]
SERVICE_UID = 65534  # nobody: stands in for the unit's DynamicUser=
SETPRIV = shutil.which("setpriv")


@pytest.fixture
def install_root() -> Iterator[Path]:
    """A directory the unprivileged user can traverse (pytest's tmp_path is root's 0700)."""
    root = Path(tempfile.mkdtemp(prefix="bridged-install-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_service_user(*args: str, env: dict[str, str], **options) -> subprocess.Popen[bytes]:
    command = [SETPRIV, f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups", "--",
               sys.executable, "-m", "bridged", *args]  # fmt: skip
    return subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO, **options)


@pytest.mark.skipif(SETPRIV is None or os.geteuid() != 0, reason="needs setpriv and root")
def test_the_documented_install_works_as_the_service_user(install_root, uid):
    """Config 0644 with no secret, password as a credential only the service user reads: --check and a run work."""
    etc = install_root / "etc"
    etc.mkdir()
    config = etc / "bridged.yaml"
    shutil.copy(REPO / "etc" / "openstack.yaml", config)
    config.chmod(0o644)
    # systemd copies LoadCredential= files into a directory owned by the service user.
    credentials = install_root / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "broker-password").write_text("guest\n")
    (credentials / "broker-password").chmod(0o400)
    for path in (credentials, credentials / "broker-password"):
        os.chown(path, SERVICE_UID, SERVICE_UID)
    logs = install_root / "logs"  # LogsDirectory=: owned by the service user
    logs.mkdir()
    os.chown(logs, SERVICE_UID, SERVICE_UID)
    env = {"BRIDGED_BROKER_PASSWORD_FILE": str(credentials / "broker-password"),
           "BRIDGED_BROKER_URL": f"amqp://guest@{BROKER_HOST}//"}  # fmt: skip

    check = as_service_user("--config", str(config), "--check", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = check.communicate(timeout=60)
    assert check.returncode == 0, err.decode()
    assert b"OK (6 bindings" in out

    # Run it: the binding for nova waits for its exchange, as on a controller; its log file is created.
    env["LOGS_DIRECTORY"] = str(logs)  # as systemd sets it for the unit's LogsDirectory=
    stderr = install_root / "stderr"
    with open(stderr, "wb") as err_file:
        proc = as_service_user("--config", str(config), env=env, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        wait_until(lambda: stderr.read_bytes().count(b"exchange_missing") >= 6, 60, "six bindings waiting")
        assert b"broker_refused" not in stderr.read_bytes() and b"Permission denied" not in stderr.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

    # What the docs used to say (0640 root:root) fails for this user, with one line.
    config.chmod(0o640)
    check = as_service_user("--config", str(config), "--check", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = check.communicate(timeout=60)
    assert check.returncode == 2 and b"Permission denied" in err and len(err.splitlines()) == 1


@pytest.fixture
def broker_user(uid) -> Iterator[tuple[str, str]]:
    user, password = f"bridged-{uid}", "p@ss/w#rd:%41 ?Zq9!"
    rabbitmqctl("add_user", user, password)
    rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    yield user, password
    subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, timeout=120)


def test_a_password_with_any_character(broker_user, start_bridged, tmp_path, uid, broker):
    """@ / # % : ? in a password: a clear error in a raw URL (no part shown), and it works from a file or encoded."""
    user, password = broker_user
    exchange = f"test.password.{uid}"
    broker.exchanges.add(exchange)
    binding = {"exchange": exchange, "exchange_type": "fanout", "queue": f"bridged.test.{uid}", "sink": "f"}
    broker.queues.add(binding["queue"])
    config = base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"b": binding})

    config["broker"]["url"] = f"amqp://{user}:{password}@{BROKER_HOST}//"
    path = tmp_path / "raw.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "bridged", "--config", str(path), "--check"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "must be percent-encoded" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    for part in ("p@ss", "w#rd", "%41", "Zq9"):
        assert part not in result.stderr

    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    config["broker"] = {**config["broker"], "url": f"amqp://{user}@{BROKER_HOST}//", "password_file": str(secret)}
    from_file = start_bridged(config)
    from_file.wait_event("consuming")
    from_file.stop()

    config["broker"] = {**config["broker"], "url": f"amqp://{user}:{quote(password, safe='')}@{BROKER_HOST}//"}
    del config["broker"]["password_file"]
    encoded = start_bridged(config)
    encoded.wait_event("consuming")
    for text in (encoded.stderr_path.read_text(), from_file.stderr_path.read_text()):
        assert password not in text and quote(password, safe="") not in text


def test_the_installed_package_holds_every_module(tmp_path):
    """Every module of the source tree imports from the install (not the checkout), and its `bridged` script runs.

    The tests start `python -m bridged` from the checkout, which would hide a
    subpackage missing from the wheel (it happened: bridged/sinks/).
    """
    modules = sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in (REPO / "bridged").rglob("*.py")
        if path.name != "__main__.py"  # importing it runs bridged
    )
    script = Path(sys.executable).parent / "bridged"
    assert script.exists(), f"{script}: install the project into this venv as the README says (pip install .)"
    outside = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    imported = subprocess.run([sys.executable, "-c", code, *modules], cwd=tmp_path, env=outside,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert imported.returncode == 0, imported.stderr.strip().splitlines()[-1:]
    version = subprocess.run([str(script), "--version"], cwd=tmp_path, env=outside,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("bridged "), version.stderr
