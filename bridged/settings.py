"""Every config key, its default and its meaning: docs/configuration.md's tables are generated from this table.

tests/unit/test_docs.py checks it against the parser itself (the keys each
section accepts, asked of the parser through its own "unknown key" error)
and fails when the generated page is stale: a key cannot be added, renamed
or dropped without the reference following.
"""

from __future__ import annotations

from typing import NamedTuple


class Setting(NamedTuple):
    key: str  # the key path, with <name> for a sink's or binding's name
    default: str  # as the reference shows it
    meaning: str
    kind: str = ""  # sinks: the sink types that take it (comma-separated); empty: every one


BROKER = [
    Setting("broker.url", "`amqp://guest:guest@127.0.0.1:5672//`",
            "`amqp://user:password@host:port/vhost` (`//` = vhost `/`), `amqps://` for TLS, `amqp10://` and "
            "`amqp10s://` for an AMQP 1.0 broker; or a list of URLs tried in turn on reconnect (failover). User "
            "and password are percent-decoded; one holding `@ / # ? %` must be percent-encoded, or use "
            "`password` / `password_file`"),
    Setting("broker.password", "none",
            "the broker password, as it is (any character, no encoding): it replaces the password of every URL. "
            "Meant for `${VAR}` (`password: ${BRIDGED_BROKER_PASSWORD}`); an empty value means none"),
    Setting("broker.password_file", "none",
            "a file holding the broker password as it is (trailing newline ignored), e.g. a systemd credential; "
            "it replaces the password of every URL. An empty value (from `${VAR:-}`) means none"),
    Setting("broker.heartbeat", "`30`", "seconds; `0` disables (a hung broker is then noticed only by TCP)"),
    Setting("broker.connect_timeout", "`10`", "seconds per connection attempt"),
    Setting("broker.max_message_size", "`134217728` (128 MiB)",
            "AMQP 1.0: the largest message assembled from its transfers; a larger one is rejected (the broker "
            "dead-letters it), never written"),
    Setting("broker.tls.verify", "`true`",
            "verify the broker's certificate chain **and** host name; `false` must be spelled out to turn both off"),
    Setting("broker.tls.ca_file", "system CAs", "PEM file of the CA(s) that signed the broker's certificate"),
    Setting("broker.tls.cert_file", "none", "client certificate (with `key_file`)"),
    Setting("broker.tls.key_file", "none", "client key (with `cert_file`)"),
    Setting("broker.tls.server_hostname", "the URL's host",
            "the name the certificate must carry, when it differs from the host connected to"),
]  # fmt: skip

RECONNECT = [
    Setting("reconnect.initial_delay", "`1.0`", "first wait after a connection fails at once, seconds"),
    Setting("reconnect.max_delay", "`60.0`",
            "waits grow up to this; also the retry pace after the broker refused the login or a declaration"),
    Setting("reconnect.multiplier", "`2.0`",
            "growth factor; each wait is drawn between half and all of the current step (jitter)"),
    Setting("reconnect.max_attempts", "`null`",
            "`null` retries forever; `N` exits 3 after N connection failures in a row"),
]  # fmt: skip

METRICS = [
    Setting("metrics.listen", "none (off)",
            "`host:port` of the HTTP endpoint (`127.0.0.1:9125`, `[::1]:9125`, `:9125` for every address): "
            "`/metrics` (Prometheus), `/healthz`, `/readyz`. A taken address fails the start with one line"),
    Setting("metrics.stats_interval", "`60`",
            "seconds between `stats` log lines (the first about 10 s after the start); `0` turns them off"),
    Setting("metrics.backlog_interval", "`5`",
            "seconds between reads of each queue's depth and consumer count (a passive declare); only while the "
            "endpoint or the stats line is on"),
]  # fmt: skip

SYSLOG = "syslog, relp"
SINKS = [
    Setting("sinks.<name>.type", "required", "`file`, `stdout`, `syslog` or `relp`"),
    Setting("sinks.<name>.format", "each binding's",
            "this sink's format for every binding that writes to it: `raw`, `json`, `oslo` or a template"),
    Setting("sinks.<name>.path", "required",
            "the file, appended to and created with its directory (0640/0750 less the umask); or a path "
            "template with `{fields}` under a fixed directory (see Paths from message fields)", "file"),
    Setting("sinks.<name>.fsync", "`false`",
            "`true`: each batch on disk (`fdatasync` once per file per batch, and the directory after a file was "
            "created or reopened) before it is acked", "file"),
    Setting("sinks.<name>.max_open_files", "`64`", "a path template: files open at once (least recently used "
            "closed first)", "file"),
    Setting("sinks.<name>.fallback_path", "`<base>/_unfiled.log`",
            "a path template: the file for lines whose own path cannot hold a file (a link, a directory)", "file"),
    Setting("sinks.<name>.address", "`/dev/log` (syslog); required (relp)",
            "syslog: a unix socket path, `udp://host:port` or `tcp://host:port` (RFC 6587 octet counting); relp: "
            "`tcp://host[:port]` (port 2514)", SYSLOG),
    Setting("sinks.<name>.facility", "`user`", "`kern`, `user`, `daemon`, `local0` … `local7`, …", SYSLOG),
    Setting("sinks.<name>.tag", "`bridged`", "the APP-NAME / TAG (1 to 48 printable ASCII characters)", SYSLOG),
    Setting("sinks.<name>.protocol", "`local` for a socket path, else `rfc5424`",
            "`local` (syslog(3)'s format, as rsyslog's imuxsock and journald parse it), `rfc5424` or `rfc3164` "
            "(relp: `rfc5424` or `rfc3164`)", SYSLOG),
    Setting("sinks.<name>.severity", "`info`", "for messages without a known notification priority", SYSLOG),
    Setting("sinks.<name>.severity_map", "see below",
            "notification priority → severity, merged over the defaults", SYSLOG),
    Setting("sinks.<name>.max_size", "`8096`",
            "bytes per message, header included (a stock rsyslog's own limit): a longer JSON line becomes a "
            "valid, smaller JSON record, other text is cut and marked; at most 65507 on unix and UDP", SYSLOG),
    Setting("sinks.<name>.timeout", "`5`", "seconds per connect and send (relp: and per answer)", SYSLOG),
    Setting("sinks.<name>.window", "`128`", "frames sent and not yet answered", "relp"),
    Setting("sinks.<name>.tls", "off", "TLS to the server: the keys of `broker.tls`", "relp"),
]  # fmt: skip

BINDINGS = [
    Setting("bindings.<name>.exchange", "required (or `exchanges`)", "the exchange to bind to"),
    Setting("bindings.<name>.exchange_type", "`topic`", "`fanout`, `direct` or `topic`"),
    Setting("bindings.<name>.routing_keys", "topic: `[\"#\"]`",
            "topic patterns (`*` one word, `#` zero or more) or direct keys (at least one); ignored for fanout"),
    Setting("bindings.<name>.exchanges", "none",
            "instead of `exchange` and its keys: one queue bound to several exchanges, a mapping of exchange "
            "name → `{exchange_type, routing_keys}`; a missing one does not hold up the others"),
    Setting("bindings.<name>.exchange_declare", "`passive`",
            "`passive`: only check that the exchange exists, never create or alter it, and wait for its "
            "service (checked every 0.5 s for a minute after each connect, then up to every 10 s); `create`: "
            "declare it, for an exchange bridged owns. `amq.*` exchanges are only checked"),
    Setting("bindings.<name>.exchange_durable", "`true`", "with `exchange_declare: create` only"),
    Setting("bindings.<name>.queue", "`bridged.<name>`",
            "the queue; two bindings on one queue are a config error (two consumers split the messages)"),
    Setting("bindings.<name>.queue_declare", "`create`",
            "`create`: bridged's own queue, declared and bound on every connect; `passive`: a queue the services "
            "declare (oslo.messaging's `<topic>.<priority>`), only waited for and consumed, nothing declared or "
            "bound (then no exchange keys, and `queue` is required)"),
    Setting("bindings.<name>.durable", "`true`", "the queue survives a broker restart"),
    Setting("bindings.<name>.auto_delete", "`false`", "the queue goes with its last consumer"),
    Setting("bindings.<name>.exclusive", "`false`", "the queue is this connection's only"),
    Setting("bindings.<name>.queue_arguments", "`{}`",
            "passed to `queue.declare`; the ones RabbitMQ knows are checked for type when the config is loaded"),
    Setting("bindings.<name>.address", "required (AMQP 1.0)",
            "an AMQP 1.0 broker's node to read (RabbitMQ 3.x: `/amq/queue/NAME`); instead of every exchange and "
            "queue key"),
    Setting("bindings.<name>.prefetch", "`1000`", "unacked deliveries in flight (AMQP 1.0: link credit)"),
    Setting("bindings.<name>.batch_size", "min(256, prefetch/4)",
            "lines written and acked together (never more than `prefetch`)"),
    Setting("bindings.<name>.batch_delay", "`0.02`",
            "seconds a line may wait for its batch to fill before it is written anyway"),
    Setting("bindings.<name>.sink", "required (or `sinks`)", "the sink to write to"),
    Setting("bindings.<name>.sinks", "none", "several sinks: a message is acked once all of them took it"),
    Setting("bindings.<name>.format", "`raw`", "`raw`, `json`, `oslo`, or a template of `{fields}`"),
    Setting("bindings.<name>.max_redeliveries", "none (off)",
            "reject (to the queue's dead-letter exchange) a message redelivered more than this many times"),
    Setting("bindings.<name>.redact", "`true`",
            "mask secrets in `json`, `oslo` and template lines: `true`, a list of key words, or `false`"),
    Setting("bindings.<name>.filter.keep", "none", "`{field: [globs]}`: write only what matches every field"),
    Setting("bindings.<name>.filter.drop", "none", "`{field: [globs]}`: never write what matches a field"),
]  # fmt: skip

SECTIONS: dict[str, list[Setting]] = {
    "broker": BROKER, "reconnect": RECONNECT, "metrics": METRICS, "sinks": SINKS, "bindings": BINDINGS,
}  # fmt: skip
