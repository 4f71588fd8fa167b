"""YAML config -> frozen, typed objects: the file's structure (broker, reconnect, metrics, sinks, bindings).

Every error names its key path (configkit.py has the checks); each sink
type reads its own settings (bridged/sinks/, registry.py).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from bridged import configkit as ck
from bridged.configkit import ConfigError as ConfigError  # the error contract, for every caller
from bridged.configkit import TLSConfig
from bridged.filters import field_names, valid_field
from bridged.formats import FORMAT_NAMES, TemplateError, compile_template
from bridged.redact import DEFAULT_REDACT_KEYS
from bridged.secrets import mask_broker_url, mask_url
from bridged.sinks import FileSinkConfig, SinkConfig, parse_sink
from bridged.sinks.beneath import NAME_MAX
from bridged.sinks.paths import longest_name

EXCHANGE_TYPES = ("fanout", "direct", "topic")
EXCHANGE_DECLARE = ("passive", "create")
# queue_declare: create (bridged's own queue, declared and bound on every connect) or passive (a queue
# the services declare, e.g. oslo.messaging's <topic>.<priority>: only waited for and consumed).
QUEUE_DECLARE = ("create", "passive")
# What a binding with queue_declare: passive has no use for: it declares and binds nothing.
DECLARATION_KEYS = ("exchange", "exchanges", "exchange_type", "routing_keys", "exchange_durable", "exchange_declare",
                    "durable", "auto_delete", "exclusive", "queue_arguments")  # fmt: skip
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp")
# AMQP 1.0 brokers (Qpid, Artemis, RabbitMQ's amqp1_0 plugin), read with qpid-proton.
AMQP10_SCHEMES = ("amqp10", "amqp10s")
# What a binding on an AMQP 1.0 broker cannot have: it reads one address, declares nothing.
AMQP091_ONLY_KEYS = ("exchange", "exchanges", "exchange_type", "routing_keys", "exchange_durable", "exchange_declare",
                     "queue", "durable", "auto_delete", "exclusive", "queue_arguments", "queue_declare")  # fmt: skip

# Walking a YAML alias bomb or a self-referencing alias would never end:
# no real config comes near these numbers.
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64


# OpenStack services' control exchanges (oslo.messaging's control_exchange):
# they carry RPC next to notifications, so binding '#' there copies RPC traffic.
OPENSTACK_EXCHANGES = frozenset((
    "openstack", "nova", "glance", "neutron", "cinder", "keystone", "heat", "ironic", "octavia",
    "designate", "manila", "barbican", "magnum", "trove", "sahara", "aodh", "ceilometer", "placement",
    "swift", "zaqar", "mistral", "senlin", "watcher", "masakari", "cyborg", "blazar", "zun", "murano",
    "tacker", "vitrage", "cloudkitty", "gnocchi", "freezer", "monasca",
))  # fmt: skip


# RabbitMQ 3.x refuses messages over 128 MiB (its max_message_size); 4.x over 16 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024

TOP_LEVEL_KEYS = ("broker", "reconnect", "metrics", "sinks", "bindings")


@dataclass(frozen=True)
class BrokerConfig:
    urls: tuple[str, ...]
    heartbeat: float
    connect_timeout: float
    tls: TLSConfig = field(default_factory=TLSConfig)
    # AMQP 1.0: the largest message assembled from its transfers; a larger one is refused (dead-lettered).
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    @property
    def amqp10(self) -> bool:
        """An AMQP 1.0 broker (amqp10:// URLs; the config refuses a mix)."""
        return self.urls[0].startswith(AMQP10_SCHEMES)


@dataclass(frozen=True)
class ReconnectConfig:
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    max_attempts: int | None = None


@dataclass(frozen=True)
class Source:
    """An exchange a binding's queue is bound to, with its routing keys."""

    exchange: str
    exchange_type: str
    routing_keys: tuple[str, ...]
    where: str  # the key path that declared it, for messages that name the key to change
    keys_where: str = ""  # where the routing keys came from, when not <where>.routing_keys (tail's ROUTING_KEY)

    def key_path(self, index: int) -> str:
        """Where routing key *index* was given, for a message that names what to change."""
        return self.keys_where or f"{self.where}.routing_keys[{index}]"


@dataclass(frozen=True)
class BindingConfig:
    name: str
    sources: tuple[Source, ...]
    exchange_durable: bool
    exchange_declare: str
    queue: str
    durable: bool
    auto_delete: bool
    exclusive: bool
    queue_arguments: Mapping[str, Any]
    prefetch: int
    batch_size: int
    batch_delay: float
    sinks: tuple[str, ...]
    format: str
    sink_formats: tuple[str, ...]  # per sink, parallel to sinks: the sink's own format, else the binding's
    max_redeliveries: int | None = None
    # Key-name words whose values are masked in json/oslo/template lines; None: redaction off.
    redact: tuple[str, ...] | None = DEFAULT_REDACT_KEYS
    address: str | None = None  # AMQP 1.0: the node (queue) address read; queue then names it too
    browse: bool = False  # AMQP 1.0: read copies (distribution-mode copy), taking nothing (bridged tail)
    queue_declare: str = "create"  # passive: a queue the services declare, only waited for (no sources)
    # filter.keep / filter.drop: field -> glob patterns (see bridged/filters.py)
    keep: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    drop: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[str, int] | None = None  # the HTTP endpoint; off unless configured
    stats_interval: float = 60.0  # the `stats` log line; 0 turns it off
    backlog_interval: float = 5.0  # how often each binding reads its queue's depth (passive declare)


@dataclass(frozen=True)
class Config:
    path: str
    broker: BrokerConfig
    reconnect: ReconnectConfig
    sinks: Mapping[str, SinkConfig]
    bindings: Mapping[str, BindingConfig] = field(default_factory=dict)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the YAML file at *path*."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode):
            raise ConfigError("", f"cannot read {path}: not a regular file")
        text = Path(path).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError("", f"cannot read {path}: it is a directory") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read {path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_config(text, str(path), os.environ if environ is None else environ)


def parse_config(text: str, path: str, environ: Mapping[str, str]) -> Config:
    """Validate YAML *text*; *path* is only used in messages."""
    try:
        raw = yaml.load(text, Loader=ck.StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError("", f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError("", "invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        # A tag the value does not fit (!!int x, !!bool topic, !!binary ...), or an integer
        # too long to convert: PyYAML's constructors raise these instead of a YAMLError.
        raise ConfigError("", f"invalid YAML: a value does not fit its type ({ck.short(str(exc))})") from None
    if raw is None:
        raise ConfigError("", "the file is empty")
    raw = _expand(raw, "", environ, [0], 0)
    top = ck.Section(raw, "")
    # An unknown top-level key (`sink:` for `sinks:`) is named before a missing one is.
    top.known.extend(TOP_LEVEL_KEYS)
    top.done(extension_prefix="x-")
    top.known.clear()
    config = Config(
        path=path,
        broker=_broker(top.section("broker", required=False)),
        reconnect=_reconnect(top.section("reconnect", required=False)),
        sinks=_sinks(top.section("sinks")),
        bindings={},
    )
    bindings = _bindings(top.section("bindings"), config.sinks, config.broker.amqp10)
    metrics = _metrics(top.section("metrics", required=False))
    top.done(extension_prefix="x-")  # x-… keys hold YAML anchors for shared settings
    return Config(config.path, config.broker, config.reconnect, config.sinks, bindings, metrics)


def _metrics(section: ck.Section) -> MetricsConfig:
    metrics = MetricsConfig(
        listen=section.get("listen", _listen_address, None),
        stats_interval=section.get("stats_interval", ck.number(0), 60.0),
        backlog_interval=section.get("backlog_interval", ck.number(0.1), 5.0),
    )
    section.done()
    return metrics


def _listen_address(value: Any, where: str) -> tuple[str, int]:
    """host:port, [v6]:port, or :port for every address."""
    text = ck.name(value, where)
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(where, f"{text!r} is not host:port (e.g. 127.0.0.1:9125, [::1]:9125)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host, int(port_text)


_VAR = re.compile(r"\$\$|\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _expand(value: Any, path: str, environ: Mapping[str, str], count: list[int], depth: int) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; bound the walk against alias bombs."""
    count[0] += 1
    if count[0] > MAX_CONFIG_NODES or depth > MAX_CONFIG_DEPTH:
        shown = path if len(path) <= 40 else path[:40] + "..."
        raise ConfigError(shown, "the config is too large or too deeply nested (a YAML alias loop?)")
    if isinstance(value, str):
        if "$" not in value:
            return value
        return ck.Expanded(_VAR.sub(lambda m: _lookup(m, path, environ), value))
    if isinstance(value, dict):
        return {k: _expand(v, ck.join(path, k), environ, count, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", environ, count, depth + 1) for i, v in enumerate(value)]
    return value


def _lookup(match: re.Match[str], path: str, environ: Mapping[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    name, has_default, default = match.group(1).partition(":-")
    if not _VAR_NAME.match(name):
        raise ConfigError(path, f"'${{{match.group(1)}}}' is not a valid environment variable name")
    if environ.get(name):
        return str(environ[name])
    if has_default:
        return default
    if name not in environ:
        raise ConfigError(path, f"environment variable {name} is not set")
    return ""


_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _broker_url(value: Any, where: str) -> str:
    url = ck.name(value, where)
    userinfo = url.partition("://")[2].rpartition("@")[0]
    if userinfo and (any(c in userinfo for c in "/?#@") or _PERCENT_ESCAPE.search(userinfo)):
        raise ConfigError(
            where,
            f"the user or password in {mask_broker_url(url)!r} holds a character that must be percent-encoded "
            "(@ as %40, / as %2F, # as %23, ? as %3F, % as %25); or put the password in broker.password_file, "
            "which takes it as it is",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(where, f"malformed broker URL {mask_broker_url(url)!r}: {exc}") from None
    if parts.scheme not in BROKER_SCHEMES + AMQP10_SCHEMES:
        raise ConfigError(
            where, f"broker URL {mask_broker_url(url)!r} must start with amqp://, amqps://, amqp10:// or amqp10s://"
        )
    if not parts.hostname:
        raise ConfigError(where, f"broker URL {mask_broker_url(url)!r} names no host")
    if port == 0:
        raise ConfigError(where, f"broker URL {mask_broker_url(url)!r} has port 0")
    return url


def _broker(section: ck.Section) -> BrokerConfig:
    urls = section.get("url", _url_list, ("amqp://guest:guest@127.0.0.1:5672//",))
    # ${VAR:-} may leave either empty (etc/openstack.yaml): that means none.
    password_file = section.get("password_file", ck.string, None) or None
    password = section.get("password", ck.string, None) or None
    if password is not None and password_file is not None:
        raise ConfigError(ck.join(section.path, "password"), "give password or password_file, not both")
    if password_file is not None:
        password = ck.read_secret(password_file, ck.join(section.path, "password_file"))
    if password is not None:  # as it is, any character: it is encoded into each URL here
        urls = tuple(_with_password(url, password) for url in urls)
    broker = BrokerConfig(
        urls=urls,
        heartbeat=section.get("heartbeat", ck.number(0), 30.0),
        connect_timeout=section.get("connect_timeout", ck.number(0, strict=True), 10.0),
        tls=ck.tls_settings(section.section("tls", required=False)),
        max_message_size=section.get("max_message_size", ck.integer(1024, 1 << 40), DEFAULT_MAX_MESSAGE_SIZE),
    )
    section.done()
    return broker


def broker_from_url(url: str, where: str = "--url") -> BrokerConfig:
    """The broker settings of a tool given only a URL: the config file's defaults, *url* checked as in the file."""
    return BrokerConfig(urls=(_broker_url(url, where),), heartbeat=30.0, connect_timeout=10.0)


def _with_password(url: str, password: str) -> str:
    """*url* with its password replaced (user defaults to guest): the file wins over the URL."""
    parts = urlsplit(url)
    user = parts.username or "guest"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _url_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, list):
        if not value:
            raise ConfigError(where, "must name at least one broker URL")
        urls = tuple(_broker_url(item, f"{where}[{i}]") for i, item in enumerate(value))
        for i, url in enumerate(urls):
            if url.startswith(AMQP10_SCHEMES) != urls[0].startswith(AMQP10_SCHEMES):
                raise ConfigError(f"{where}[{i}]", "mixes AMQP 1.0 (amqp10://) and AMQP 0-9-1 URLs: one protocol")
        return urls
    return (_broker_url(value, where),)


def _reconnect(section: ck.Section) -> ReconnectConfig:
    reconnect = ReconnectConfig(
        initial_delay=section.get("initial_delay", ck.number(0, strict=True), 1.0),
        max_delay=section.get("max_delay", ck.number(0, strict=True), 60.0),
        multiplier=section.get("multiplier", ck.number(1), 2.0),
        max_attempts=section.get("max_attempts", ck.integer(1), None),
    )
    if reconnect.max_delay < reconnect.initial_delay:
        raise ConfigError(
            ck.join(section.path, "max_delay"),
            f"must be at least initial_delay ({reconnect.initial_delay:g}), got {reconnect.max_delay:g}",
        )
    section.done()
    return reconnect


def _sinks(section: ck.Section) -> dict[str, SinkConfig]:
    if not section.raw:
        raise ConfigError(section.path, "declare at least one sink")
    sinks = {}
    for name in section.raw:
        sinks[name] = _sink(name, section.section(name))
    return sinks


def _sink(name: str, section: ck.Section) -> SinkConfig:
    sink = parse_sink(name, section)
    if "format" in section.raw:
        sink = replace(sink, format=section.get("format", _format))
    section.done()
    return sink


def _format(value: Any, where: str) -> str:
    text = ck.name(value, where)
    if text in FORMAT_NAMES:
        return text
    if "{" not in text:
        raise ConfigError(where, f"{text!r} is not one of {', '.join(FORMAT_NAMES)} nor a template with {{fields}}")
    try:
        compile_template(text)
    except TemplateError as exc:
        raise ConfigError(where, str(exc)) from None
    return text


def check_format(value: str, where: str) -> str:
    """*value* as a binding's format (a name or a template), or ConfigError naming *where*."""
    return _format(value, where)


def _bindings(section: ck.Section, sinks: Mapping[str, SinkConfig], amqp10: bool = False) -> dict[str, BindingConfig]:
    if not section.raw:
        raise ConfigError(section.path, "declare at least one binding")
    bindings: dict[str, BindingConfig] = {}
    consumers: dict[str, str] = {}
    for name in section.raw:
        binding = bindings[name] = _binding(name, section.section(name), sinks, amqp10)
        first = consumers.setdefault(binding.queue, name)
        if first != name:
            key, what = ("address", "address") if amqp10 else ("queue", "queue")
            raise ConfigError(
                ck.join(ck.join(section.path, name), key),
                f"{what} {binding.queue!r} is already consumed by binding {first!r}: two consumers on one {what} "
                f"split its messages between them; give each binding its own {what}",
            )
    return bindings


# RabbitMQ's queue arguments and what each must be: a wrong type passes YAML
# and fails only at the broker (`x-message-ttl: "86400000"` is refused there).
_INTEGER_ARGUMENTS = {
    "x-message-ttl": 0, "x-expires": 1, "x-max-length": 0, "x-max-length-bytes": 0, "x-max-priority": 0,
    "x-delivery-limit": 0, "x-quorum-initial-group-size": 1, "x-stream-max-segment-size-bytes": 1,
}  # fmt: skip
_CHOICE_ARGUMENTS = {
    "x-queue-type": ("classic", "quorum", "stream"),
    "x-overflow": ("drop-head", "reject-publish", "reject-publish-dlx"),
    "x-queue-mode": ("default", "lazy"),
    "x-dead-letter-strategy": ("at-most-once", "at-least-once"),
}
_STRING_ARGUMENTS = ("x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-age", "x-queue-master-locator",
                     "x-queue-leader-locator")  # fmt: skip
_BOOLEAN_ARGUMENTS = ("x-single-active-consumer",)


def _queue_arguments(value: Any, where: str) -> dict[str, Any]:
    """queue.declare arguments, the ones RabbitMQ knows checked for type; others pass as they are."""
    arguments = dict(ck.mapping(value, where))
    for key, item in arguments.items():
        at = ck.join(where, key)
        if key in _INTEGER_ARGUMENTS:
            arguments[key] = ck.integer(_INTEGER_ARGUMENTS[key])(item, at)
        elif key in _CHOICE_ARGUMENTS:
            arguments[key] = ck.choice(_CHOICE_ARGUMENTS[key])(item, at)
        elif key in _STRING_ARGUMENTS:
            arguments[key] = ck.string(item, at)
        elif key in _BOOLEAN_ARGUMENTS:
            arguments[key] = ck.boolean(item, at)
    return arguments


def _source(exchange: str, section: ck.Section) -> Source:
    """exchange_type and routing_keys from *section* (a binding, or one entry of its exchanges)."""
    exchange_type = section.get("exchange_type", ck.choice(EXCHANGE_TYPES), "topic")
    keys_where = ck.join(section.path, "routing_keys")
    keys = section.get("routing_keys", ck.string_list, ())
    if exchange_type == "topic" and not keys:
        keys = ("#",)
    elif exchange_type == "direct" and not keys:
        raise ConfigError(keys_where, "a direct exchange needs at least one routing key")
    elif exchange_type == "fanout":
        keys = ("",)
    return Source(exchange, exchange_type, keys, section.path)


def _sources(section: ck.Section) -> tuple[Source, ...]:
    """`exchange:` (with exchange_type, routing_keys) or `exchanges:`, a mapping of several."""
    if "exchanges" in section.raw:
        for key in ("exchange", "exchange_type", "routing_keys"):
            if key in section.raw:
                raise ConfigError(ck.join(section.path, key), "give exchange (with its keys) or exchanges, not both")
        exchanges = section.section("exchanges")
        if not exchanges.raw:
            raise ConfigError(exchanges.path, "name at least one exchange")
        sources = []
        for exchange in exchanges.raw:
            entry = exchanges.section(exchange, required=False)
            sources.append(_source(ck.name(exchange, entry.path), entry))
            entry.done()
        return tuple(sources)
    return (_source(section.get("exchange", ck.name), section),)


def _binding(name: str, section: ck.Section, sinks: Mapping[str, SinkConfig], amqp10: bool = False) -> BindingConfig:
    if amqp10:
        for key in AMQP091_ONLY_KEYS:
            if key in section.raw:
                raise ConfigError(ck.join(section.path, key), "is for AMQP 0-9-1 brokers: a binding on an AMQP 1.0 "
                                  "broker (amqp10://) reads one address: give address: instead")  # fmt: skip
        address = section.get("address", ck.name)
        sources: tuple[Source, ...] = ()
    else:
        if "address" in section.raw:
            raise ConfigError(ck.join(section.path, "address"), "is for AMQP 1.0 brokers (amqp10:// URLs); "
                              "on AMQP 0-9-1 a binding names its exchange and queue")  # fmt: skip
        address = None
        sources = () if _passive_queue(section) else _sources(section)
    prefetch = section.get("prefetch", ck.integer(1, 65535), 1000)
    has_sink, has_sinks = "sink" in section.raw, "sinks" in section.raw
    if has_sink and has_sinks:
        raise ConfigError(ck.join(section.path, "sinks"), "give either sink or sinks, not both")
    sink_key = "sinks" if has_sinks else "sink"
    sink_names = section.get(sink_key, ck.string_list, None)
    if not sink_names:
        raise ConfigError(ck.join(section.path, "sink"), "is required (name one of the declared sinks)")
    for i, sink in enumerate(sink_names):
        if sink not in sinks:
            where = ck.join(section.path, sink_key) + (f"[{i}]" if has_sinks else "")
            hint = difflib.get_close_matches(sink, list(sinks), n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(where, f"sink {sink!r} is not declared under sinks{extra}")
    binding_format = section.get("format", _format, "raw")
    binding = BindingConfig(
        name=name,
        sources=sources,
        exchange_durable=section.get("exchange_durable", ck.boolean, True),
        exchange_declare=section.get("exchange_declare", ck.choice(EXCHANGE_DECLARE), "passive"),
        queue=address if address is not None else section.get("queue", ck.name, f"bridged.{name}"),
        durable=section.get("durable", ck.boolean, True),
        auto_delete=section.get("auto_delete", ck.boolean, False),
        exclusive=section.get("exclusive", ck.boolean, False),
        queue_arguments=section.get("queue_arguments", _queue_arguments, {}),
        prefetch=prefetch,
        # A batch the size of the prefetch window stalls the broker until the ack;
        # bench/tuning.py measured 0.58x the ceiling at batch = prefetch = 100.
        batch_size=min(prefetch, section.get("batch_size", ck.integer(1, 65535), min(256, max(1, prefetch // 4)))),
        batch_delay=section.get("batch_delay", ck.number(0, strict=True), 0.02),
        sinks=tuple(dict.fromkeys(sink_names)),
        sink_formats=tuple(sinks[sink].format or binding_format for sink in dict.fromkeys(sink_names)),
        format=binding_format,
        max_redeliveries=section.get("max_redeliveries", ck.integer(0), None),
        redact=section.get("redact", _redact, DEFAULT_REDACT_KEYS),
        address=address,
        queue_declare="create" if amqp10 else section.get("queue_declare", ck.choice(QUEUE_DECLARE), "create"),
        **_filter(section.section("filter", required=False)),
    )
    section.done()
    return binding


def _passive_queue(section: ck.Section) -> bool:
    """queue_declare: passive: the queue is named, nothing about declaring or binding it is."""
    if section.get("queue_declare", ck.choice(QUEUE_DECLARE), "create") != "passive":
        return False
    for key in DECLARATION_KEYS:
        if key in section.raw:
            raise ConfigError(ck.join(section.path, key), "has no use with queue_declare: passive (bridged declares "
                              "and binds nothing: the services declare the queue); remove it")  # fmt: skip
    if section.raw.get("queue") is None:
        raise ConfigError(
            ck.join(section.path, "queue"),
            "is required with queue_declare: passive: the queue the "
            "services declare (bridged.info for [oslo_messaging_notifications] topics = ...,bridged)",
        )
    return True


class _Filters(TypedDict):
    keep: dict[str, tuple[str, ...]]
    drop: dict[str, tuple[str, ...]]


def _filter(section: ck.Section) -> _Filters:
    """filter: {keep: {field: [globs]}, drop: {field: [globs]}}."""
    rules = _Filters(keep=_rules(section.section("keep", required=False)),
                     drop=_rules(section.section("drop", required=False)))  # fmt: skip
    section.done()
    return rules


def _rules(section: ck.Section) -> dict[str, tuple[str, ...]]:
    rules = {}
    for name in section.raw:
        where = ck.join(section.path, name)
        if not valid_field(name):
            hint = difflib.get_close_matches(name, field_names(), n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(where, f"unknown field{extra}; fields: {', '.join(field_names())}")
        rules[name] = section.get(name, ck.string_list)
    return rules


def _redact(value: Any, where: str) -> tuple[str, ...] | None:
    """true: the default key words; false: off (spelled out); a list: these words instead."""
    if value is True:
        return DEFAULT_REDACT_KEYS
    if value is False:
        return None
    if not isinstance(value, list):
        raise ConfigError(where, f"expected true, false or a list of key words, got {ck.kind(value)}")
    words = ck.string_list(value, where)
    if not words:
        raise ConfigError(where, "an empty list would mask nothing: write redact: false to turn redaction off")
    return tuple(w.lower() for w in words)


def warnings(config: Config) -> list[str]:
    """Valid but risky settings, one line each (printed by --check, logged at start)."""
    found = []
    for name, sink in config.sinks.items():
        if isinstance(sink, FileSinkConfig) and sink.templated and (longest := longest_name(sink.path)) > NAME_MAX:
            found.append(
                f"sinks.{name}.path: a file name it builds can reach {longest} bytes (Linux allows "
                f"{NAME_MAX}): longer ones are shortened to their start, a hash and their extension"
            )
    for binding in config.bindings.values():
        for source in binding.sources:
            if source.exchange not in OPENSTACK_EXCHANGES or source.exchange_type != "topic":
                continue
            for i, key in enumerate(source.routing_keys):
                if "notifications" not in key.split(".")[0]:
                    found.append(
                        f"{source.key_path(i)}: {key!r} on OpenStack control exchange "
                        f"{source.exchange!r} also copies RPC messages; bind notifications.* "
                        "(and versioned_notifications.* for nova) instead"
                    )
    return found


def plural(count: int, noun: str) -> str:
    """`1 binding`, `2 bindings`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe(config: Config) -> str:
    """One line summarising a valid config, with passwords masked."""
    urls = ", ".join(mask_url(u) for u in config.broker.urls)
    return (f"{config.path}: OK ({plural(len(config.bindings), 'binding')}, {plural(len(config.sinks), 'sink')}, "
            f"broker {urls})")  # fmt: skip
