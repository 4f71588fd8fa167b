"""The stdout sink: unbuffered writes to descriptor 1; a closed reader ends bridged."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from bridged import configkit as ck
from bridged.sinks.base import LineMeta, LineWriter, SinkClosed, SinkConfig, SinkError, reason
from bridged.sinks.registry import register


class StdoutSink:
    """Writes lines to file descriptor 1, unbuffered: a batch is out when write returns."""

    wants_meta = False
    progress = 0

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._writer = LineWriter()

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        with self._lock:
            try:
                self._writer.write(1, lines)
            except BrokenPipeError as exc:
                # `bridged ... | head`: the reader is gone for good; what is unacked stays queued.
                raise SinkClosed("stdout was closed by its reader", getattr(exc, "taken", 0)) from exc
            except OSError as exc:
                raise SinkError(f"cannot write to stdout: {reason(exc)}", getattr(exc, "taken", 0)) from exc

    def probe(self) -> str | None:
        return None  # whoever reads bridged's stdout (journald, docker) is there only at run time

    def reopen(self) -> None:
        pass

    def abort(self) -> None:
        pass  # a full pipe blocks the write; stopping then takes the second signal (as documented)

    def close(self) -> None:
        pass


def _parse_config(name: str, section: ck.Section) -> SinkConfig:
    return SinkConfig(name, "stdout")


register("stdout", _parse_config, lambda config: StdoutSink(config.name))
