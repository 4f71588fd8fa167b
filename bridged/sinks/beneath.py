"""Opening log files without ever following a symbolic link: below a base directory, every component.

Log directories are often writable by a service's group, and bridged may
run as root (docker examples, SysV mode): a link planted there must not
make it append to, or create, a file elsewhere. A path-template sink's
files are reached from its base directory's descriptor one component at a
time (mkdir, then open with O_NOFOLLOW|O_DIRECTORY, relative to the
parent's descriptor): a link anywhere below the base fails the open
(ELOOP or ENOTDIR), also one swapped in while bridged runs. A plain file
sink's path is the operator's, directories included; only its last
component, the file itself, must not be a link.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

FILE_MODE = 0o640  # owner writes, group (e.g. adm) reads, others nothing
DIR_MODE = 0o750
# Linux's NAME_MAX: the longest file name, in bytes.
NAME_MAX = 255

# Errors that say the path itself cannot hold a file, whatever is retried: the message goes aside.
UNUSABLE = frozenset((errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EINVAL))

_APPEND = os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def open_append(path: str, dir_fd: int | None = None) -> int:
    """Open the file *path* to append (created 0640 if missing), never through a link in its last component.

    A regular file is opened readable too where allowed (to check its last byte, and to cut back a
    half-written line); anything else (a FIFO, a device) write-only, as a writer would.
    """
    try:
        info = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise OSError(errno.ELOOP, "a symbolic link (bridged never follows one)", path)
    if info is None or stat.S_ISREG(info.st_mode):
        try:
            return os.open(path, os.O_RDWR | _APPEND, FILE_MODE, dir_fd=dir_fd)
        except PermissionError:
            pass  # a file we may write but not read
    return os.open(path, os.O_WRONLY | _APPEND, FILE_MODE, dir_fd=dir_fd)


def make_directories(directory: str) -> list[str]:
    """Create *directory* and its missing parents (DIR_MODE), following links as the operator laid them out;
    the ones created, deepest first."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    if missing:
        os.makedirs(missing[0], mode=DIR_MODE, exist_ok=True)
    return missing


class Beneath:
    """A base directory, opened once; files below it are opened component by component, no link followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._fd: int | None = None

    def _base_fd(self) -> int:
        if self._fd is None:
            make_directories(self.base)  # the base is the operator's: its own path may hold links
            self._fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._fd

    def open_append(self, relative: str) -> tuple[int, list[str]]:
        """Open base/*relative* to append, making its directories; (descriptor, directories made, as paths).

        OSError with ELOOP or ENOTDIR when a link (or a file) stands where a directory or the file should.
        """
        parts = relative.split(os.sep)
        made: list[str] = []
        parent = self._base_fd()
        opened: list[int] = []
        try:
            for index, name in enumerate(parts[:-1]):
                try:
                    os.mkdir(name, DIR_MODE, dir_fd=parent)
                    made.append(os.path.join(self.base, *parts[: index + 1]))
                except FileExistsError:
                    pass
                parent = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                opened.append(parent)
            return open_append(parts[-1], dir_fd=parent), made[::-1]
        finally:
            for fd in opened:
                os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def shorten(name: str) -> str:
    """A file name that fits NAME_MAX: a long one keeps its start and its extension, with a hash between
    (deterministic: the same long name always gives the same file)."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= NAME_MAX:
        return name
    digest = hashlib.blake2b(encoded, digest_size=8).hexdigest()
    extension = os.path.splitext(name)[1]
    extension = extension if len(extension) <= 16 else ""
    room = NAME_MAX - len(digest) - 1 - len(extension.encode())
    head = encoded[:room].decode("utf-8", "ignore")
    return f"{head}~{digest}{extension}"
