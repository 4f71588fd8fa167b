"""A real 3-node RabbitMQ cluster on this machine, beside the main broker.

Each node has its own name, AMQP and distribution ports, data and log
directories, config file and (empty) plugin list; they run as the rabbitmq
user (its Erlang cookie lets rabbitmqctl reach them) and are joined with
`rabbitmqctl join_cluster`, as an operator would.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
# Node n listens for AMQP on FIRST_PORT + n and for Erlang distribution 20000 above that.
FIRST_PORT = 5690
# Booting a node, or a node's app after stop_app, on a loaded 2-core machine.
NODE_START_LIMIT = 180


def available() -> bool:
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return False
    return os.path.exists(RABBITMQ_SERVER) and shutil.which("setpriv") is not None and os.geteuid() == 0


def ctl(*args: str, node: str | None = None, timeout: float = NODE_START_LIMIT) -> str:
    command = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()[-1500:]}")
    return result.stdout


class RabbitCluster:
    """Three RabbitMQ nodes joined into one cluster."""

    def __init__(self, base: Path, size: int = 3, prefix: str = "bridged-c") -> None:
        self.base = base
        self.names = [f"{prefix}{i}@localhost" for i in range(1, size + 1)]
        self.ports = [FIRST_PORT + i for i in range(1, size + 1)]
        user = pwd.getpwnam("rabbitmq")
        for index in range(size):
            directory = self.directory(index)
            for sub in ("mnesia", "log"):
                (directory / sub).mkdir(parents=True, exist_ok=True)
            (directory / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.ports[index]}\n")
            (directory / "enabled_plugins").write_text("[].\n")
            for path in (directory, *directory.rglob("*")):
                os.chown(path, user.pw_uid, user.pw_gid)
        base.chmod(0o755)

    def directory(self, index: int) -> Path:
        return self.base / f"node{index + 1}"

    def url(self, index: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports[index]}//"

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(len(self.names))]

    def form(self) -> None:
        """Boot every node, then join the others to the first."""
        for index in range(len(self.names)):
            self._boot(index)
        for index in range(len(self.names)):
            ctl("wait", str(self.directory(index) / "pid"), node=self.names[index])
        for name in self.names[1:]:
            ctl("stop_app", node=name)
            ctl("join_cluster", self.names[0], node=name)
            ctl("start_app", node=name)
        ctl("await_online_nodes", str(len(self.names)), node=self.names[0])

    def _boot(self, index: int) -> None:
        directory = self.directory(index)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": pwd.getpwnam("rabbitmq").pw_dir,  # its Erlang cookie, which rabbitmqctl also uses
            "RABBITMQ_NODENAME": self.names[index],
            "RABBITMQ_NODE_PORT": str(self.ports[index]),
            "RABBITMQ_DIST_PORT": str(self.ports[index] + 20000),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
        }
        subprocess.run(["setpriv", "--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups", RABBITMQ_SERVER,
                        "-detached"], env=env, check=True, capture_output=True, timeout=60)  # fmt: skip

    def stop_app(self, index: int) -> None:
        ctl("stop_app", node=self.names[index])

    def start_app(self, index: int) -> None:
        ctl("start_app", node=self.names[index])
        ctl("await_online_nodes", str(len(self.names)), node=self.names[index])

    def leader(self, queue: str) -> int:
        """Which node (index) holds the quorum queue's leader."""
        for name in self.names:
            try:
                out = ctl("list_queues", "-q", "--no-table-headers", "name", "leader", node=name, timeout=60)
            except AssertionError:
                continue  # that node's app is down
            for row in out.splitlines():
                fields = row.split()
                if len(fields) == 2 and fields[0] == queue:
                    return self.names.index(fields[1])
        raise AssertionError(f"no node reports a leader for {queue}")

    def wait_leader_elected(self, queue: str, not_on: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = self.leader(queue)
                if leader != not_on:
                    return leader
            except AssertionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no new leader for {queue} within {timeout} s")
            time.sleep(0.5)

    def destroy(self) -> None:
        for name in self.names:
            subprocess.run(["rabbitmqctl", "-n", name, "stop"], capture_output=True, timeout=120)
        shutil.rmtree(self.base, ignore_errors=True)
