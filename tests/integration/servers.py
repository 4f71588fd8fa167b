"""Small real servers the tests listen with: datagram sockets (syslog, sd_notify)."""

from __future__ import annotations

import socket
import threading
import time


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
