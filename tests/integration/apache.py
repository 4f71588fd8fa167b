"""The Apache AMQP 1.0 brokers, started for a test from their own distributions (tests/tools/brokers/fetch.sh).

Each runs from a directory of the test's own (config, data, log), on free
ports of 127.0.0.1, as a user `bridged` logging in with SASL PLAIN (what
bridged offers): ActiveMQ Artemis and Qpid Broker-J. Both create a queue
when a receiver or a sender first attaches to its address, as a RabbitMQ
queue is declared before it is read; a restart keeps what was stored
(Artemis' journal, Broker-J's BDB store), so a restart test can count.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BRIDGED_BROKER_CACHE", "/var/cache/bridged-ci/brokers"))
ARTEMIS_HOME = CACHE / "apache-artemis-2.40.0"
BROKERJ_HOME = CACHE / "qpid-broker" / "9.2.0"
USER, PASSWORD = "bridged", "br1dged-test"
# A JVM broker starts within this on a loaded 2-core machine (seen: 4-7 s idle).
START_LIMIT = 120.0
STOP_LIMIT = 60.0


def fetch() -> None:
    """The distributions, downloaded and unpacked into the cache once."""
    subprocess.run(["bash", str(REPO / "tests" / "tools" / "brokers" / "fetch.sh"), str(CACHE)], check=True,
                   timeout=900)  # fmt: skip


class ApacheBroker:
    """One broker process: start, stop (SIGTERM), kill (SIGKILL), restart; its amqp10:// URL."""

    kind = ""
    ready_line = ""

    def __init__(self, directory: Path) -> None:
        fetch()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.dir / "broker.out"
        self.process: subprocess.Popen[bytes] | None = None
        self.setup()

    @property
    def url(self) -> str:
        return f"amqp10://{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    def setup(self) -> None:
        raise NotImplementedError

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self) -> None:
        argv, env = self.command()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                            env={**os.environ, **env}, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if self.ready_line in text:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start: {text[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} not ready within {START_LIMIT:g} s")

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)  # the launcher script and its JVM
        try:
            self.process.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_LIMIT)
        _wait_port_free(self.port)


class Artemis(ApacheBroker):
    """ActiveMQ Artemis: an instance made by `artemis create`, every address anycast (a queue per address)."""

    kind = "artemis"
    ready_line = "AMQ221007: Server is now active"

    def setup(self) -> None:
        self.instance = self.dir / "instance"
        subprocess.run(
            [str(ARTEMIS_HOME / "bin" / "artemis"), "create", str(self.instance), "--silent", "--nio", "--force",
             "--no-amqp-acceptor", "--no-hornetq-acceptor", "--no-mqtt-acceptor", "--no-stomp-acceptor", "--no-web",
             "--host", "127.0.0.1", "--default-port", str(self.port), "--name", "bridged-test",
             "--user", USER, "--password", PASSWORD, "--require-login", "--java-memory", "512M"],
            check=True, capture_output=True, timeout=START_LIMIT,
        )  # fmt: skip
        broker_xml = self.instance / "etc" / "broker.xml"
        text = broker_xml.read_text()
        # A sender's or receiver's first attach to a new address makes a queue (anycast), not a topic.
        text = text.replace(
            "<auto-create-addresses>true</auto-create-addresses>",
            "<auto-create-addresses>true</auto-create-addresses>\n"
            "            <default-address-routing-type>ANYCAST</default-address-routing-type>\n"
            "            <default-queue-routing-type>ANYCAST</default-queue-routing-type>",
        )
        broker_xml.write_text(text)

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [str(self.instance / "bin" / "artemis"), "run"], {}


class BrokerJ(ApacheBroker):
    """Qpid Broker-J with a BDB virtual host; PLAIN allowed without TLS (its default allows it only over TLS)."""

    kind = "broker-j"
    ready_line = "BRK-1004 : Qpid Broker Ready"

    def setup(self) -> None:
        virtualhost = {"type": "BDB", "nodeAutoCreationPolicies": [
            {"pattern": ".*", "nodeType": "Queue", "createdOnPublish": True, "createdOnConsume": True}]}  # fmt: skip
        config = {
            "name": "bridged-test",
            "modelVersion": "8.0",
            "authenticationproviders": [{"name": "plain", "type": "Plain", "secureOnlyMechanisms": [],
                                         "users": [{"name": USER, "type": "managed", "password": PASSWORD}]}],
            "ports": [{"name": "AMQP", "port": str(self.port), "bindingAddress": "127.0.0.1",
                       "authenticationProvider": "plain",
                       "virtualhostaliases": [{"name": "defaultAlias", "type": "defaultAlias"},
                                              {"name": "hostnameAlias", "type": "hostnameAlias"}]}],
            "virtualhostnodes": [{"name": "default", "type": "JSON", "defaultVirtualHostNode": "true",
                                  "virtualHostInitialConfiguration": json.dumps(virtualhost)}],
        }  # fmt: skip
        (self.dir / "initial-config.json").write_text(json.dumps(config, indent=1))

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [str(BROKERJ_HOME / "bin" / "qpid-server"), "-icp", str(self.dir / "initial-config.json")]
        return argv, {"QPID_WORK": str(self.dir / "work"), "QPID_OPTS": "-Xmx512m"}


BROKERS = {"artemis": Artemis, "broker-j": BrokerJ}


def _wait_port_free(port: int) -> None:
    deadline = time.monotonic() + STOP_LIMIT
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        if not re.search(rf":{port}\b", out):
            return
        time.sleep(0.2)
