"""A small HTTP endpoint that no client can exhaust: one thread, a bounded number of connections, short deadlines.

The metrics endpoint is reachable by any local user (and often by the
network), while the bridge needs its descriptors and CPU for sinks and
reconnects. So: one thread serves every connection through a selector; at
most MAX_CONNECTIONS are open at once; each must send its whole request
within REQUEST_TIMEOUT and take its answer within the same time; when all
are taken, a new client takes the slot of the oldest one that has not sent a
whole request (an idle or slowloris client). The kernel hands a connection
over only once data arrived (TCP_DEFER_ACCEPT; idle clients then cost this
thread nothing), and a request waiting when it is accepted (a real client
sends it at once) is answered right there, without a slot. So a flood of
idle or slowloris clients costs little and never keeps a scraper or a
health check out. Threads and descriptors stay bounded whatever the clients
do. GET only, one request per connection (`Connection: close`).
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

# Connections open at once: a scraper, a health check and a few curls need far fewer.
MAX_CONNECTIONS = 64
# A client has this long to send its request and to take the answer (Prometheus sends at once).
REQUEST_TIMEOUT = 5.0
# Connections accepted in one go before the open ones are read again: a newcomer evicts the oldest idle
# connection, so a real client whose request arrives just after its accept must be read before
# MAX_CONNECTIONS newcomers came after it.
ACCEPT_BATCH = MAX_CONNECTIONS // 4
# How long the thread sleeps in select() at most: deadlines are checked this often.
TICK = 0.2
# The longest request line and headers: anything bigger is no scraper.
MAX_REQUEST = 16 * 1024
# Connections the kernel completes before the thread accepts them (capped by net.core.somaxconn).
LISTEN_BACKLOG = 1024

Route = Callable[[], tuple[int, bytes, str]]  # -> (status, body, content type)
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}


class _Connection:
    __slots__ = ("answer", "opened", "request", "sent", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.opened = now
        self.request = bytearray()
        self.answer: bytes | None = None  # set once the request was read
        self.sent = 0


def listen(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening socket on (host, port); OSError with the plain reason ("Address already in use") if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:  # Python adds "(while attempting to bind on address ...)" to the reason
        if exc.errno is None:
            raise
        raise OSError(exc.errno, os.strerror(exc.errno)) from None
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        # The kernel hands over a connection once its request arrived: an idle client costs this thread
        # nothing until the deadline (then it is handed over, found empty and kept or closed).
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, int(REQUEST_TIMEOUT))
    return listener


class HttpServer:
    """Serves *routes* (path -> route) on (host, port) from one thread; OSError at construction if it cannot bind."""

    def __init__(self, host: str, port: int, routes: Mapping[str, Route], server_name: str) -> None:
        self._listener = listen(host, port)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._routes = routes
        self._server_name = server_name
        self._connections: OrderedDict[socket.socket, _Connection] = OrderedDict()  # oldest first
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        try:
            os.write(self._wake_write, b"!")
        except OSError:
            pass
        self._thread.join(5)
        for conn in list(self._connections.values()):
            conn.sock.close()
        self._connections.clear()
        self._selector.close()
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def open_connections(self) -> int:
        return len(self._connections)

    # -- the thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing:
            events = self._selector.select(timeout=TICK)
            now = time.monotonic()
            for key, mask in events:
                if key.fileobj is self._listener:
                    self._accept(now)
                elif key.fileobj == self._wake_read:
                    continue
                else:
                    conn = self._connections.get(key.fileobj)  # type: ignore[call-overload]
                    if conn is not None:
                        self._serve_one(conn, mask)
            self._expire(time.monotonic())

    def _accept(self, now: float) -> None:
        """Take the waiting connections. A whole request already there (a real client sends it at once) is
        answered at once; a connection without one waits for it in a slot, the oldest idle one's if need be."""
        for _ in range(ACCEPT_BATCH):  # then back to select: the open ones get their turn too
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and the like: the bridge's own descriptors come first
            sock.setblocking(False)
            conn = _Connection(sock, now)
            if not self._read(conn):
                continue  # closed by the client, or garbage: already dropped
            if conn.answer is None and len(self._connections) >= MAX_CONNECTIONS and not self._evict_idle():
                sock.close()  # every slot is sending an answer: no room
                continue
            if conn.answer is not None:
                try:
                    conn.sent = sock.send(conn.answer)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sock.close()
                    continue
                if conn.sent >= len(conn.answer):
                    sock.close()  # answered in full, the usual case: never took a slot
                    continue
                if len(self._connections) >= MAX_CONNECTIONS and not self._evict_idle():
                    sock.close()  # every slot is sending an answer: this one is dropped, not queued
                    continue
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_WRITE if conn.answer is not None else selectors.EVENT_READ)

    def _read(self, conn: _Connection) -> bool:
        """Read what the client sent; set conn.answer once the request is whole. False if the connection is
        done for (closed, too big, broken)."""
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._drop(conn.sock)
            return False
        if not data or len(conn.request) + len(data) > MAX_REQUEST:
            self._drop(conn.sock)
            return False
        conn.request += data
        if b"\r\n\r\n" in conn.request or b"\n\n" in conn.request:
            conn.answer = self._answer(bytes(conn.request))
        return True

    def _evict_idle(self) -> bool:
        """Close the oldest connection that has not sent a whole request (idle or slowloris)."""
        for sock, conn in self._connections.items():
            if conn.answer is None:
                self._drop(sock)
                return True
        return False

    def _serve_one(self, conn: _Connection, mask: int) -> None:
        sock = conn.sock
        if conn.answer is None and mask & selectors.EVENT_READ:
            if not self._read(conn):
                return
            if conn.answer is None:
                return
            self._selector.modify(sock, selectors.EVENT_WRITE)
        answer = conn.answer
        if answer is None:
            return
        try:
            conn.sent += sock.send(answer[conn.sent :])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sock)
            return
        if conn.sent >= len(answer):
            self._drop(sock)

    def _answer(self, request: bytes) -> bytes:
        line = request.split(b"\n", 1)[0].decode("latin-1", "replace").split()
        if len(line) < 2:
            status, body, content_type = 400, b"bad request\n", "text/plain; charset=utf-8"
        elif line[0] not in ("GET", "HEAD"):
            status, body, content_type = 405, b"GET only\n", "text/plain; charset=utf-8"
        else:
            route = self._routes.get(line[1].split("?", 1)[0])
            if route is None:
                paths = ", ".join(self._routes)
                status, body, content_type = 404, f"not found: {paths}\n".encode(), "text/plain; charset=utf-8"
            else:
                status, body, content_type = route()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nServer: {self._server_name}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")  # fmt: skip
        return head.encode("latin-1") + (b"" if line and line[0] == "HEAD" else body)

    def _expire(self, now: float) -> None:
        """Drop every connection past its deadline: a slow or idle client."""
        for sock, conn in list(self._connections.items()):
            if now - conn.opened < REQUEST_TIMEOUT:
                break  # the rest are younger
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        self._connections.pop(sock, None)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
