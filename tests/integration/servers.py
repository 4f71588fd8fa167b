"""Small real servers the tests listen with: datagram sockets (syslog, sd_notify), an rsyslogd of our own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

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


class Rsyslog:
    """A real rsyslogd of our own (its own config, not the system's), in the foreground, with rsyslog's stock limits.

    *inputs*: any of "unix" (imuxsock on a socket of ours, as /dev/log), "udp"
    (imudp), "tcp" (imtcp, octet counting) and "relp" (imrelp; *tls* makes it
    mutual TLS). Every input feeds one ruleset with a Direct queue, so rsyslog
    has written a message to the output file before imrelp answers it: an
    ack from this server means "in the file", and a crash of rsyslog loses
    nothing it acked. One output line per message: the input's name, then
    what rsyslog parsed (severity, facility, app-name, procid, msgid, msg).
    """

    FIELDS = ("input", "severity", "facility", "app", "procid", "msgid", "msg")

    def __init__(self, directory: Path, inputs: tuple[str, ...] = ("relp", "tcp"),
                 tls: dict[str, str] | None = None) -> None:  # fmt: skip
        self.directory = directory
        self.output = directory / "rsyslog-received.log"
        self.socket_path = directory / "log.sock"
        self.inputs = inputs
        self.relp_port, self.tcp_port, self.udp_port = free_port(), free_port(), free_port()
        lines = [f'global(workDirectory="{directory}")']
        if "unix" in inputs:
            lines += [
                'module(load="imuxsock" SysSock.Use="off")',
                f'input(type="imuxsock" Socket="{self.socket_path}" RateLimit.Interval="0" ruleset="direct")',
            ]
        if "udp" in inputs:
            lines += [
                'module(load="imudp")',
                f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" rateLimit.Interval="0" '
                'ruleset="direct")',
            ]
        if "tcp" in inputs:
            lines += [
                'module(load="imtcp")',
                f'input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="direct")',
            ]
        if "relp" in inputs:
            tls_options = ""
            if tls:  # mutual TLS: imrelp asks for a client certificate whose CN is permitted
                tls_options = (
                    f' tls="on" tls.caCert="{tls["ca"]}" tls.myCert="{tls["cert"]}" '
                    f'tls.myPrivKey="{tls["key"]}" tls.authMode="name" '
                    f'tls.permittedPeer=["{tls["peer"]}"]'
                )
            lines += [
                'module(load="imrelp")',
                f'input(type="imrelp" address="127.0.0.1" port="{self.relp_port}" ruleset="direct"{tls_options})',
            ]
        fields = "%syslogseverity-text%|%syslogfacility-text%|%app-name%|%procid%|%msgid%|%msg%"
        lines += [f'template(name="line" type="string" string="%inputname%|{fields}\\n")',
                  'ruleset(name="direct" queue.type="Direct") {',
                  f'  action(type="omfile" file="{self.output}" template="line")', "}"]  # fmt: skip
        self.conf = directory / "rsyslog.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.directory / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "rsyslogd.stderr", "ab"),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"rsyslogd did not listen: {self.stderr()[-2000:]}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        if "unix" in self.inputs and not self.socket_path.exists():
            return False
        for name, port in (("relp", self.relp_port), ("tcp", self.tcp_port)):
            if name in self.inputs:
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
        path = self.directory / "rsyslogd.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def records(self) -> list[dict[str, str]]:
        """Every message rsyslog wrote, as the fields it parsed, in order."""
        try:
            text = self.output.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [dict(zip(self.FIELDS, line.split("|", 6), strict=True)) for line in text.splitlines()]

    def messages(self, input_name: str) -> list[str]:
        """The messages that came in on *input_name* (imrelp, imtcp, imudp, imuxsock), in order."""
        return [record["msg"] for record in self.records() if record["input"] == input_name]


def needs_rsyslog(relp: bool = False) -> None:
    """Skip (fail under CI) when rsyslogd, or its RELP input, is not installed."""
    package = "rsyslog rsyslog-relp" if relp else "rsyslog"
    if (relp and not has_imrelp()) or not Path(RSYSLOGD).exists():
        message = f"rsyslogd is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class ProtonPeer:
    """A second, independent AMQP 1.0 peer: a tiny broker on qpid-proton's own handlers.

    It serves *count* messages on any address a receiver attaches to, one
    body per message (`m-<n>`), and records each delivery's outcome. Deliveries
    stay unsettled until the receiver settles them, unless *presettled*
    (then it sends them settled: at most once, which bridged must refuse).
    """

    def __init__(self, count: int, presettled: bool = False, first: bytes | None = None,
                 answers: tuple[str, ...] = ("accepted",)) -> None:  # fmt: skip
        """*first*: the raw bytes of one delivery sent before the others (a hostile one). A sender that
        attaches gets *answers* in turn for its messages (accepted, rejected, released), kept in `received`."""
        from proton import Delivery, Message
        from proton.handlers import MessagingHandler
        from proton.reactor import Container

        self.port = free_port()
        self.outcomes: list[str] = []
        self.received: list[tuple[Message, str]] = []
        self.attached = threading.Event()
        peer = self

        class Handler(MessagingHandler):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__(auto_settle=False, auto_accept=False)
                self.sent = 0

            def on_message(self, event: object) -> None:
                answer = answers[len(peer.received) % len(answers)]
                peer.received.append((event.message, answer))  # type: ignore[attr-defined]
                delivery = event.delivery  # type: ignore[attr-defined]
                if answer == "accepted":
                    self.accept(delivery)
                elif answer == "rejected":
                    self.reject(delivery)
                else:
                    self.release(delivery, delivered=False)

            def on_start(self, event: object) -> None:
                self.acceptor = event.container.listen(f"127.0.0.1:{peer.port}")  # type: ignore[attr-defined]

            def on_link_opening(self, event: object) -> None:
                link = event.link  # type: ignore[attr-defined]
                if link.is_receiver:
                    link.target.address = link.remote_target.address
                if link.is_sender:
                    link.source.address = link.remote_source.address
                    if presettled:
                        link.snd_settle_mode = link.SND_SETTLED
                    peer.attached.set()

            def on_sendable(self, event: object) -> None:
                sender = event.sender  # type: ignore[attr-defined]
                if first is not None and self.sent == 0 and sender.credit and not getattr(self, "first_sent", False):
                    delivery = sender.delivery(b"first")
                    sender.stream(first)
                    sender.advance()
                    self.first_sent = True
                while sender.credit and self.sent < count:
                    delivery = sender.send(Message(body=f"m-{self.sent:06d}".encode(), subject="peer.key"))
                    if presettled:
                        delivery.settle()
                    self.sent += 1

            def on_settled(self, event: object) -> None:
                state = event.delivery.remote_state  # type: ignore[attr-defined]
                names = {Delivery.ACCEPTED: "accepted", Delivery.REJECTED: "rejected", Delivery.RELEASED: "released",
                         Delivery.MODIFIED: "modified"}  # fmt: skip
                peer.outcomes.append(names.get(state, str(state)))
                event.delivery.settle()  # type: ignore[attr-defined]

        self._container = Container(Handler())
        self._container.container_id = "proton-peer"
        self._thread = threading.Thread(target=self._container.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._container.stop()
        self._thread.join(5)


class SlowRelpServer:
    """A RELP server that answers every frame correctly (`200 OK`), but only *rate* frames a second.

    It takes the open and close commands as rsyslog does and keeps each syslog
    message it answered in `received`. One connection at a time, on its own thread.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.received: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._halt.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(0.2)
        while not self._halt.is_set():
            while True:
                header = re.match(rb"(\d+) (\w+) (\d+)", buffer)
                if header is None:
                    break
                txnr, command, size, start = header[1], header[2], int(header[3]), header.end()
                end = start + 1 + size if size else start
                if len(buffer) <= end:
                    break  # the rest of the frame has not come yet
                data, buffer = buffer[start + 1 : end] if size else b"", buffer[end + 1 :]
                if command == b"open":
                    answer = b"200 OK\nrelp_version=0\nrelp_software=slow\ncommands=syslog"
                elif command == b"close":
                    conn.sendall(b"%s rsp 0\n" % txnr)
                    return
                else:
                    time.sleep(1 / self.rate)
                    self.received.append(data)
                    answer = b"200 OK"
                try:
                    conn.sendall(b"%s rsp %d %s\n" % (txnr, len(answer), answer))
                except OSError:
                    return
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk

    def close(self) -> None:
        self._halt.set()
        self._listener.close()
        self._thread.join(5)


class Flood:
    """*idle* clients that connect and send nothing, and *slow* ones sending a request a byte a second
    (slowloris); any that is dropped connects again, as a patient attacker does."""

    def __init__(self, port: int, idle: int, slow: int) -> None:
        self.port = port
        self.socks: list[socket.socket | None] = [None] * (idle + slow)
        self.slow = range(idle, idle + slow)
        self.reconnects = 0
        self._halt = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _connect(self, index: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            sock.setblocking(False)
            self.socks[index] = sock
        except OSError:
            self.socks[index] = None
        self.reconnects += 1

    def _run(self) -> None:
        for index in range(len(self.socks)):
            if self._halt:
                return
            self._connect(index)
        while not self._halt:
            for index, sock in enumerate(self.socks):
                if self._halt:
                    return
                try:
                    if sock is None:
                        raise OSError
                    if index in self.slow:
                        sock.send(b"G")
                    elif sock.recv(1, socket.MSG_PEEK) == b"":
                        raise OSError
                except BlockingIOError:
                    continue
                except OSError:
                    if sock is not None:
                        sock.close()
                    self._connect(index)
            time.sleep(1.0)

    def close(self) -> None:
        self._halt = True
        self._thread.join(10)
        for sock in self.socks:
            if sock is not None:
                sock.close()
