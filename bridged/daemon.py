"""--daemon: SysV-style detach through python-daemon, with a locked pidfile.

The pidfile is locked with flock(2) before the fork and the lock travels to
the daemon with the descriptor: a live holder makes a second start fail, and
a pidfile left by a killed process (nobody holds its lock) is simply reused.
The starting process waits on a pipe until the daemon says it runs, so its
exit status means something to init scripts.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
from collections.abc import Callable
from typing import TextIO

import daemon

# Files bridged creates (pidfile, logs) are not world-readable.
DAEMON_UMASK = 0o027
READY_TOKEN = b"ready\n"
# Like the logs: the owner writes, its group (e.g. adm) reads, others see nothing.
PIDFILE_MODE = 0o640
LOG_MODE = 0o640


class PidfileError(Exception):
    """The pidfile is held by a running bridged, or cannot be written."""


class Pidfile:
    """A pidfile whose flock marks the owner as alive."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PIDFILE_MODE)
        except OSError as exc:
            raise PidfileError(f"cannot open pidfile {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise PidfileError(f"already running (pid {holder}, pidfile {self.path})") from None
            raise PidfileError(f"cannot lock pidfile {self.path}: {exc.strerror}") from None
        os.fchmod(fd, PIDFILE_MODE)  # also a stale pidfile left with another mode
        self.fd = fd

    def write_pid(self) -> None:
        assert self.fd is not None
        data = f"{os.getpid()}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Remove the pidfile if it still names us; the lock goes with the descriptor."""
        if self.fd is None:
            return
        try:
            if os.pread(self.fd, 32, 0).strip() == str(os.getpid()).encode():
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


# How the daemon tells its starter it could not start: b"error CODE MESSAGE\n" on the ready pipe.
ERROR_TOKEN = b"error "


class Starter:
    """What the process that serves tells whoever waits for it: ready, or why it cannot start."""

    def __init__(self, ready: Callable[[], None], failed: Callable[[str, int], int]) -> None:
        self.ready = ready
        self.failed = failed


def daemonize(pidfile: Pidfile | None, run: Callable[[Starter], int], report: Callable[[str, int], int]) -> int:
    """Detach and call ``run(starter)`` in the daemon; returns the starter's exit code.

    The daemon calls ``starter.ready()`` once it runs: only then does the
    starting process exit 0. ``starter.failed(message, code)`` sends one line
    back, which the starting process hands to ``report(message, code)`` (the
    command line's one-line error: the daemon's stderr is gone). If the daemon
    dies first, the starter exits 1.
    """
    if pidfile is not None:
        pidfile.acquire()
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child:
        os.close(ready_write)
        if pidfile is not None and pidfile.fd is not None:
            os.close(pidfile.fd)  # the daemon keeps the lock through its own copy
        answer = b""
        while chunk := os.read(ready_read, 4096):
            answer += chunk
        os.waitpid(child, 0)
        if answer.startswith(READY_TOKEN):
            return 0
        if answer.startswith(ERROR_TOKEN):
            told, _, message = answer[len(ERROR_TOKEN) :].partition(b" ")
            return report(message.decode("utf-8", "replace").strip(), int(told) if told.isdigit() else 1)
        return 1
    os.close(ready_read)
    preserve = [ready_write] + ([pidfile.fd] if pidfile is not None and pidfile.fd is not None else [])
    context = daemon.DaemonContext(
        working_directory=os.getcwd(),  # relative config and sink paths keep working
        umask=DAEMON_UMASK,
        detach_process=True,
        files_preserve=preserve,
        # Terminal job-control signals are ignored; TERM/INT/HUP are the supervisor's.
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
    )
    code = 1
    try:
        with context:
            if pidfile is not None:
                pidfile.write_pid()

            def ready() -> None:
                os.write(ready_write, READY_TOKEN)
                os.close(ready_write)

            def failed(message: str, exit_code: int) -> int:
                os.write(ready_write, ERROR_TOKEN + f"{exit_code} {message}\n".encode("utf-8", "replace"))
                os.close(ready_write)
                return exit_code

            try:
                code = run(Starter(ready, failed))
            finally:
                if pidfile is not None:
                    pidfile.release()
    finally:
        os._exit(code)  # never return into the starter's stack in a forked child
    return code  # pragma: no cover


class LogFile:
    """bridged's own log file: appended to, line-buffered, reopened on SIGHUP (logrotate renames it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = self._open()

    def _open(self) -> TextIO:
        # 0640, like the logs bridged writes (owner writes, its group reads), whatever the umask allows more
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_MODE)
        return os.fdopen(fd, "a", buffering=1, encoding="utf-8")

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def isatty(self) -> bool:
        return False

    def reopen(self) -> None:
        """Open the path anew; if that fails, keep writing to the old file rather than lose the log."""
        try:
            new = self._open()
        except OSError:
            return
        old, self._file = self._file, new
        old.close()


def open_log_file(path: str) -> LogFile:
    return LogFile(path)


def check_own_log(log_file: str | None, daemon: bool) -> str | None:
    """Why bridged's own log could not be written (or, once detached, would be lost), or None.

    Checked before the start (and before the fork), the same way in the foreground and with --daemon.
    """
    if log_file:
        try:
            open_log_file(log_file)._file.close()
        except OSError as exc:
            return f"cannot open --log-file {log_file}: {exc.strerror or exc}"
        return None
    if daemon and not os.path.exists(SyslogLogStream.ADDRESS):
        return f"--daemon needs --log-file: there is no {SyslogLogStream.ADDRESS} for bridged's own log"
    return None


def log_stream_for_daemon(log_file: str | None) -> LogFile | SyslogLogStream:
    """Where bridged's own log goes once stderr is /dev/null: a file, else syslog."""
    if log_file:
        return open_log_file(log_file)
    return SyslogLogStream()


class SyslogLogStream:
    """A file-like object sending each log line to /dev/log (best effort: these are our own logs)."""

    ADDRESS = "/dev/log"

    def __init__(self, address: str = ADDRESS) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._address = address
        self._prefix = f"<{3 * 8 + 6}>bridged[{os.getpid()}]: ".encode()  # daemon.info

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line:
                try:
                    self._socket.sendto(self._prefix + line.encode("utf-8", "replace"), self._address)
                except OSError:
                    pass
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
