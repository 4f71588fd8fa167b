"""amqps:// verifies the broker's certificate chain and host name by default.

The TLS listener is a small TLS-terminating proxy in front of the local
broker, with certificates the test makes with openssl: what is under test is
bridged's client side (chain, host name, verify: false).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import base_config, wait_lines


class TLSProxy:
    """Terminates TLS on a local port and relays the bytes to the plain AMQP listener."""

    def __init__(self, certificates: Path, upstream: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.upstream = upstream
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            tls = self.context.wrap_socket(client, server_side=True)
            tls.setblocking(False)
            upstream = socket.create_connection(self.upstream)
        except (OSError, ssl.SSLError):
            client.close()
            return
        with tls, upstream:
            while not self._stop.is_set():
                readable, _, _ = select.select([tls, upstream], [], [], 0.2)
                if tls.pending():
                    readable.append(tls)
                try:
                    for source in set(readable):
                        target = upstream if source is tls else tls
                        data = source.recv(65536)
                        if not data:
                            return
                        target.setblocking(True)
                        target.sendall(data)
                        if target is tls:
                            target.setblocking(False)
                except ssl.SSLWantReadError:
                    continue
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture
def tls_proxy(certificates: Path) -> Iterator[TLSProxy]:
    proxy = TLSProxy(certificates)
    yield proxy
    proxy.close()


def _config(uid: str, tmp_path: Path, url: str, tls: dict) -> tuple[dict, str, Path]:
    exchange = f"test.tls.{uid}"
    out = tmp_path / "out.log"
    config = base_config({"f": {"type": "file", "path": str(out)}},
                         {"b": {"exchange": exchange, "exchange_type": "fanout", "queue": f"bridged.test.{uid}",
                                "sink": "f"}})  # fmt: skip
    config["broker"] = {"url": url, "heartbeat": 10, "connect_timeout": 3, "tls": tls}
    return config, exchange, out


def test_right_ca_connects_and_delivers(broker, start_bridged, uid, tmp_path, tls_proxy, certificates):
    """amqps:// with the CA that signed the broker's certificate: consuming, messages arrive."""
    config, exchange, out = _config(uid, tmp_path, f"amqps://guest:guest@localhost:{tls_proxy.port}//",
                                    {"ca_file": str(certificates / "ca.pem")})  # fmt: skip
    broker.queues.add(f"bridged.test.{uid}")
    broker.exchanges.add(exchange)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    broker.publish(exchange, "", b"over tls")
    assert wait_lines(out, 1) == ["over tls"]


@pytest.mark.parametrize(
    ("host", "ca", "expected"),
    [
        ("localhost", "other-ca.pem", "CERTIFICATE_VERIFY_FAILED"),
        ("127.0.0.1", "ca.pem", "IP address mismatch"),
    ],
)
def test_wrong_ca_or_host_is_a_clear_error(start_bridged, uid, tmp_path, tls_proxy, certificates, host, ca, expected):
    """An unknown CA or a certificate for another host: broker_refused naming the reason; no consuming."""
    config, _, _ = _config(uid, tmp_path, f"amqps://guest:guest@{host}:{tls_proxy.port}//",
                           {"ca_file": str(certificates / ca)})  # fmt: skip
    bridged = start_bridged(config)
    bridged.wait_event("broker_refused")
    event = next(e for e in bridged.events() if e["event"] == "broker_refused")
    assert expected in event["reason"] and "SSLCertVerificationError" in event["reason"]
    assert "guest:guest" not in bridged.stderr_path.read_text()
    assert bridged.count("consuming") == 0


def test_verify_false_must_be_spelled_out(broker, start_bridged, uid, tmp_path, tls_proxy):
    """Without a CA bridged refuses the self-signed chain; with verify: false it connects."""
    url = f"amqps://guest:guest@localhost:{tls_proxy.port}//"
    refused = start_bridged(_config(uid, tmp_path, url, {})[0])
    refused.wait_event("broker_refused")
    refused.kill()
    config, exchange, out = _config(uid, tmp_path, url, {"verify": False})
    broker.queues.add(f"bridged.test.{uid}")
    broker.exchanges.add(exchange)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    broker.publish(exchange, "", b"unverified")
    assert wait_lines(out, 1) == ["unverified"]
