"""podman for the deployment tests: the images (tests/tools/images/build.sh), containers, and the checkout in them.

No image registry is reachable and no Docker engine or systemd PID 1 runs on
the host: images are built from Debian's packages with debootstrap, and a
real systemd runs as PID 1 inside a container (`podman run --systemd=always`).
Containers share the host's network, so they reach the test broker on
127.0.0.1:5672. pip inside them trusts what the host's pip trusts (the
host's CA bundle, mounted read-only): on a machine whose traffic goes
through an inspecting proxy, that is the only way to PyPI.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "tools" / "images"
CONTAINERS_CONF = str(IMAGES / "containers.conf")
SYSTEMD_IMAGE = "localhost/bridged-test-systemd"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
# Building the images from Debian's mirror (debootstrap, then apt in podman): about 2 minutes, once.
BUILD_LIMIT = 1200
# A command in a container that installs Python packages or builds an image (pip over the network).
INSTALL_LIMIT = 600
# Files of the checkout an install needs (the rest, .venv and caches, stays out).
CHECKOUT_IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build", ".mypy_cache",
                                         ".ruff_cache", ".pytest_cache", ".hypothesis")  # fmt: skip


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF}


def podman(*args: str, check: bool = True, timeout: float = 120, stdin: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout,
                          input=stdin, env={**podman_env(), **(env or {})})  # fmt: skip


def require_podman() -> None:
    """Skip without root and podman (fail under CI=1, which must run these)."""
    missing = None
    if os.geteuid() != 0:
        missing = "root"
    elif shutil.which("podman") is None or shutil.which("debootstrap") is None:
        missing = "podman and debootstrap (apt-get install podman buildah debootstrap runc)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the deployment tests need {missing}")
        pytest.skip(f"the deployment tests need {missing}")


def build_images() -> None:
    """The base image the Dockerfile names and the systemd test image (kept between runs)."""
    done = subprocess.run(["bash", str(IMAGES / "build.sh")], capture_output=True, text=True, timeout=BUILD_LIMIT,
                          env=podman_env())  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def pip_config(directory: Path) -> list[str]:
    """podman options that make pip in a container (or a build) trust the host's CA bundle."""
    conf = directory / "pip.conf"
    conf.write_text("[global]\ncert = /run/host-ca.crt\n")
    return ["-v", f"{conf}:/etc/pip.conf:ro", "-v", f"{HOST_CA}:/run/host-ca.crt:ro"]


def checkout_copy(directory: Path) -> Path:
    """The working tree (committed or not), as a user's checkout would hold it."""
    copy = directory / "bridged"
    shutil.copytree(REPO, copy, ignore=CHECKOUT_IGNORE)
    return copy


class SystemdContainer:
    """A container whose PID 1 is systemd, with the checkout in /root/bridged."""

    def __init__(self, directory: Path, add_hosts: dict[str, str]) -> None:
        self.name = f"bridged-systemd-{uuid.uuid4().hex[:8]}"
        hosts = [f"--add-host={host}:{address}" for host, address in add_hosts.items()]
        podman("run", "-d", "--name", self.name, "--systemd=always", "--network", "host", *hosts,
               *pip_config(directory), SYSTEMD_IMAGE)  # fmt: skip
        self.workdir = "/"
        self.sh("systemctl is-system-running --wait || true", timeout=180)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(str(checkout_copy(directory)), arcname="bridged")
        subprocess.run(["podman", "exec", "-i", self.name, "tar", "-x", "-C", "/root"], input=archive.getvalue(),
                       check=True, timeout=120, env=podman_env(), capture_output=True)  # fmt: skip
        self.workdir = "/root/bridged"

    def sh(self, script: str, stdin: str | None = None, timeout: float = 120,
           check: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run *script* with bash as root in /root/bridged (where the checkout is)."""
        return podman("exec", "-i", "-w", self.workdir, self.name, "bash", "-c", script, stdin=stdin,
                      timeout=timeout, check=check)  # fmt: skip

    def read(self, path: str) -> str:
        done = podman("exec", self.name, "cat", path, check=False)
        return done.stdout if done.returncode == 0 else ""

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = podman("exec", self.name, "systemctl", "show", unit, *(f"-p{p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> list[str]:
        return podman("exec", self.name, "journalctl", "-u", unit, "-o", "cat", "--no-pager").stdout.splitlines()

    def remove(self) -> None:
        podman("rm", "-f", "-t", "5", self.name, check=False, timeout=120)
