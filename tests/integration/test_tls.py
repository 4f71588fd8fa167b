"""amqps:// verifies the broker's certificate chain and host name by default.

The TLS listener is a small TLS-terminating proxy in front of the local
broker, with certificates the test makes with openssl: what is under test is
bridged's client side (chain, host name, verify: false).
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import base_config, tool, wait_lines


class TLSProxy:
    """Terminates TLS on a local port and relays the bytes to the plain AMQP listener."""

    def __init__(self, certificates: Path, upstream: tuple[str, int] = ("127.0.0.1", 5672),
                 client_certificates: bool = False) -> None:  # fmt: skip
        """*client_certificates*: a client must show a certificate signed by the CA (mutual TLS)."""
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
        if client_certificates:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(certificates / "ca.pem")
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


# -- AMQP 1.0 (amqp10s://): the same proxy in front of RabbitMQ's AMQP 1.0 listener (#26) ------------------------


@pytest.fixture
def mutual_tls_proxy(certificates: Path) -> Iterator[TLSProxy]:
    proxy = TLSProxy(certificates, client_certificates=True)
    yield proxy
    proxy.close()


def _amqp10_config(tmp_path: Path, url: str, queue: str, tls: dict) -> tuple[dict, Path]:
    out = tmp_path / "out.log"
    config = {
        "broker": {"url": url, "heartbeat": 10, "connect_timeout": 3, "tls": tls},
        "reconnect": {"initial_delay": 0.2, "max_delay": 2.0},
        "sinks": {"f": {"type": "file", "path": str(out)}},
        "bindings": {"b": {"address": f"/amq/queue/{queue}", "sink": "f"}},
    }
    return config, out


def test_amqp10s_with_the_right_ca_and_a_client_certificate(broker, start_bridged, uid, tmp_path, mutual_tls_proxy,
                                                           certificates):  # fmt: skip
    """amqp10s:// through a listener that checks the client's certificate: the daemon reads, publish is accepted."""
    pytest.importorskip("proton", reason="pip install '.[amqp10]' (qpid-proton)")
    queue = f"bridged.test.{uid}"
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    tls = {"ca_file": str(certificates / "ca.pem"), "cert_file": str(certificates / "client.pem"),
           "key_file": str(certificates / "client.key")}  # fmt: skip
    url = f"amqp10s://guest:guest@localhost:{mutual_tls_proxy.port}"
    config, out = _amqp10_config(tmp_path, url, queue, tls)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    broker.publish("", queue, b"over amqp10s")
    assert wait_lines(out, 1) == ["over amqp10s"]
    config_file = tmp_path / "tools.yaml"
    config_file.write_text(json.dumps(config))
    sent = tool("publish", "--config", str(config_file), f"/amq/queue/{queue}", "published over amqp10s")
    assert (sent.returncode, sent.stdout.strip()) == (0, "1 sent, 1 accepted"), sent.stderr
    assert wait_lines(out, 2)[1] == "published over amqp10s"
    # Without its certificate the listener refuses it: one line, the password nowhere.
    del tls["cert_file"], tls["key_file"]
    config_file.write_text(json.dumps(_amqp10_config(tmp_path, url, queue, tls)[0]))
    refused = tool("publish", "--config", str(config_file), f"/amq/queue/{queue}", "x")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "guest:guest" not in refused.stderr


@pytest.mark.parametrize(
    ("host", "ca", "expected"),
    [
        ("localhost", "other-ca.pem", "certificate verify failed"),
        ("127.0.0.1", "ca.pem", "certificate verify failed"),
    ],
)
def test_amqp10s_wrong_ca_or_host_is_one_line(start_bridged, uid, tmp_path, tls_proxy, certificates, host, ca,
                                              expected):  # fmt: skip
    """An unknown CA, or a certificate for another host (the check is on by default): refused, never consuming;
    `bridged tail` says it in one line, exit 2."""
    pytest.importorskip("proton", reason="pip install '.[amqp10]' (qpid-proton)")
    url = f"amqp10s://guest:guest@{host}:{tls_proxy.port}"
    config, _ = _amqp10_config(tmp_path, url, f"bridged.test.{uid}", {"ca_file": str(certificates / ca)})
    bridged = start_bridged(config)
    bridged.wait_event("broker_refused")
    event = next(e for e in bridged.events() if e["event"] == "broker_refused")
    assert expected in event["reason"].lower(), event
    assert bridged.count("consuming") == 0 and "guest:guest" not in bridged.stderr_path.read_text()
    config_file = tmp_path / "tools.yaml"
    config_file.write_text(json.dumps(config))
    tail = tool("tail", "--config", str(config_file), "--consume", "/amq/queue/anything")
    assert tail.returncode == 2 and tail.stderr.count("\n") == 1 and expected in tail.stderr.lower(), tail.stderr
