"""Small real servers the tests listen with: datagram sockets (syslog, sd_notify), an rsyslogd of our own."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def has_imrelp() -> bool:
    """rsyslogd and its RELP input (Debian: rsyslog-relp) are installed."""
    modules = [*Path("/usr/lib").glob("*/rsyslog/imrelp.so"), Path("/usr/lib/rsyslog/imrelp.so")]
    return Path(RSYSLOGD).exists() and any(path.exists() for path in modules)


class DatagramServer:
    """Collects datagrams on a unix or UDP socket, with the time each arrived."""

    def __init__(self, family: int, address: object) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, bytes]] = []
        self._halt = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def messages(self) -> list[bytes]:
        return [data for _, data in list(self.received)]

    def _run(self) -> None:
        while not self._halt:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append((time.monotonic(), data))

    def close(self) -> None:
        self._halt = True
        self._thread.join(2)
        self.sock.close()


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


class RelpRsyslog:
    """A real rsyslogd of our own: imrelp and imtcp (octet counting) on free ports, one output line per message.

    Both inputs feed a ruleset with a Direct queue, so rsyslog has written a
    message to the output file before imrelp answers it: an ack from this
    server means "in the file", and a crash of rsyslog loses nothing it acked.
    """

    def __init__(self, directory: Path, tls: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.output = directory / "rsyslog-received.log"
        self.relp_port, self.tcp_port = free_port(), free_port()
        tls_options = ""
        if tls:  # mutual TLS: imrelp asks for a client certificate whose CN is permitted
            tls_options = (f' tls="on" tls.caCert="{tls["ca"]}" tls.myCert="{tls["cert"]}" '
                           f'tls.myPrivKey="{tls["key"]}" tls.authMode="name" '
                           f'tls.permittedPeer=["{tls["peer"]}"]')  # fmt: skip
        self.conf = directory / "rsyslog-relp.conf"
        self.conf.write_text(f"""
global(workDirectory="{directory}")
module(load="imrelp")
module(load="imtcp")
input(type="imrelp" address="127.0.0.1" port="{self.relp_port}" ruleset="direct"{tls_options})
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="direct")
template(name="line" type="string" string="%inputname%|%msg%\\n")
ruleset(name="direct" queue.type="Direct") {{
  action(type="omfile" file="{self.output}" template="line")
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.directory / "rsyslogd-relp.pid")],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "rsyslogd-relp.stderr", "ab"),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"rsyslogd did not listen: {self.stderr()[-2000:]}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        for port in (self.relp_port, self.tcp_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            self.proc.wait(30)
        self.proc = None

    def stderr(self) -> str:
        path = self.directory / "rsyslogd-relp.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def messages(self, input_name: str) -> list[str]:
        """The messages that came in on *input_name* (imrelp or imtcp), in order."""
        try:
            text = self.output.read_text(errors="replace")
        except FileNotFoundError:
            return []
        prefix = input_name + "|"
        return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]
