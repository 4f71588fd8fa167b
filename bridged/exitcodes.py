"""bridged's exit codes, one table for the daemon and the tools (docs/cli.md is generated from it)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1  # could not start (an address in use, a pidfile held, a log that cannot be written), or a bug
EXIT_CONFIG = 2  # a mistake in the config or the command line, or the broker it names is out of reach or refuses
EXIT_GAVE_UP = 3  # a binding reached reconnect.max_attempts failures in a row
EXIT_OUTPUT_CLOSED = 4  # stdout was closed by its reader (`bridged ... | head`)
EXIT_UNDELIVERED = 5  # bridged publish: not every message was confirmed and routed to a queue

# code -> what it means, for the reference
MEANINGS: dict[int, str] = {
    EXIT_OK: "done: the daemon stopped on SIGTERM/SIGINT, a check passed (warnings included), a tool finished",
    EXIT_INTERNAL: "could not start (an address in use, a pidfile held by a running bridged, a log that cannot be "
                   "written) or a bug (one line on stderr; the traceback only in bridged's own log)",
    EXIT_CONFIG: "a mistake in the config or the command line (one line naming the key path or option); for "
                 "`--check --connect` and the tools also a broker out of reach or refusing the login, a queue "
                 "declared with other settings, a sink that cannot be written, a metrics address taken; for "
                 "`tail` and `publish` a missing exchange (the daemon and `--check --connect` wait for it, warned)",
    EXIT_GAVE_UP: "a binding failed `reconnect.max_attempts` times in a row",
    EXIT_OUTPUT_CLOSED: "stdout's reader went away (`bridged ... | head`); what was not written stays queued",
    EXIT_UNDELIVERED: "`bridged publish`: some messages were not confirmed, came back unroutable (no queue bound), or "
                      "the connection was lost on the way",
}  # fmt: skip
