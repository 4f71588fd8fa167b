"""Every event bridged logs, with its level and what it means: docs/operations.md's events table is generated from it.

tests/unit/test_docs.py fails when the code logs an event this table does
not name (or the table names one the code never logs), and when the
generated page is stale.
"""

from __future__ import annotations

# event -> (level, when it is logged)
EVENTS: dict[str, tuple[str, str]] = {
    "started": ("info", "the supervisor started its bindings"),
    "ready": ("info", "every binding consumes, waits for a service, or has tried once (systemd READY)"),
    "config_warning": ("warning", "a valid but risky setting (the same lines as `--check`)"),
    "metrics_listening": ("info", "the metrics endpoint is up"),
    "metrics_failed": ("error", "on reload, the endpoint's new address could not be bound"),
    "stats": ("info", "every `metrics.stats_interval` (the first after about 10 s): per binding, the counts since "
                      "the last line, the backlog and what is in hand"),
    "consuming": ("info", "a binding subscribed (with the broker URL, password masked)"),
    "declared": ("debug", "exchanges checked, queue declared and bound (with its depth and consumers)"),
    "exchange_missing": ("warning", "a binding waits for its service to declare the exchange (once a connection): "
                                    "normal until the service runs"),
    "exchange_found": ("info", "the exchange appeared and is bound"),
    "queue_missing": ("warning", "queue_declare: passive: the binding waits for the services to declare the queue "
                                 "(once a connection)"),
    "queue_found": ("info", "the services' queue appeared and is consumed"),
    "queue_shared": ("warning", "another consumer is on the binding's queue (a second instance?): it takes part of "
                                "the messages"),
    "queue_standby": ("info", "a single-active-consumer queue has an active consumer: this one takes over when it "
                              "goes"),
    "batch_acked": ("debug", "a batch was written to every sink and acked (`lines`)"),
    "written_unsettled": ("info", "the connection was lost with a batch in hand: it was written anyway (a duplicate "
                                  "if its queue redelivers it)"),
    "reconnect_scheduled": ("warning", "a connection failed or was lost (`reason`, `attempt`, `retry_in`)"),
    "broker_back": ("info", "the broker's port, which refused connections, accepts them again: connecting at once"),
    "broker_refused": ("error", "the broker refused the login, the certificate or a declaration; the reason names "
                                "the key to change"),
    "gave_up": ("error", "`reconnect.max_attempts` failures in a row (exit 3)"),
    "binding_failed": ("error", "an unexpected error in a binding (retried; a bug: please report it)"),
    "sink_failed": ("error", "a sink could not take a batch: it is held unacked and retried (warning: while "
                             "stopping or after a lost connection)"),
    "sink_recovered": ("info", "the sink took the held batch"),
    "output_closed": ("error", "stdout's reader went away (exit 4)"),
    "output_done": ("debug", "`bridged tail --consume` printed its count: the lines it did not print stay "
                    "unsettled (exit 0)"),
    "line_truncated": ("warning", "a syslog message was cut at `max_size`"),
    "relp_unanswered": ("warning", "a RELP connection was lost with `frames` sent and not answered: they are sent "
                                   "again (possible duplicates)"),
    "path_unusable": ("error", "a path template's path cannot hold a file (a link, a directory): its lines go to "
                               "`fallback_path` (once a path)"),
    "format_failed": ("warning", "a formatter failed on a message: a marked line is written instead"),
    "body_unreadable": ("warning", "a compressed body could not be inflated (corrupt, unknown, or a bomb): written "
                                   "as it came, marked"),
    "properties_undecodable": ("warning", "a message could not be decoded whole (AMQP properties, or AMQP 1.0 "
                                          "content): written marked"),
    "message_dead_lettered": ("error", "a message was rejected to the dead-letter exchange (`max_redeliveries` "
                                       "passed, or too large to take)"),
    "amqp_fast_path_off": ("warning", "reading through py-amqp's public drain_events() (slower)"),
    "amqp_properties_strict": ("warning", "this py-amqp does not take bridged's tolerant property decoding: a "
                                          "message whose properties it cannot decode costs the connection"),
    "health_file_failed": ("warning", "`--health-file` could not be touched (logged once)"),
    "health_file_recovered": ("info", "`--health-file` can be touched again"),
    "bindings_wedged": ("error", "a binding overran its step: the watchdog stops"),
    "reloaded": ("info", "SIGHUP: what restarted, started and stopped"),
    "reload_failed": ("error", "SIGHUP: the new config was refused (the old one goes on)"),
    "reload_interrupted": ("info", "a stop signal came during a reload: stopping instead"),
    "stopping": ("info", "a stop signal: bindings write and ack what they hold, then close"),
    "stop_deadline_passed": ("warning", "bindings still running at the stop deadline"),
    "stopped": ("info", "a binding, or bridged, stopped"),
    "internal_error": ("error", "a bug reached the top (the traceback is in this log only)"),
}  # fmt: skip
