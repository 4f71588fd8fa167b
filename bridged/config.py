"""YAML config -> frozen, typed objects; every error names its key path."""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from bridged.filters import field_names, valid_field
from bridged.formats import FORMAT_NAMES, TemplateError, compile_template
from bridged.redact import DEFAULT_REDACT_KEYS
from bridged.secrets import mask_broker_url, mask_url

EXCHANGE_TYPES = ("fanout", "direct", "topic")
SINK_TYPES = ("file", "stdout", "syslog", "relp")
# local: the syslog(3) format rsyslog's imuxsock and journald parse on /dev/log.
SYSLOG_PROTOCOLS = ("rfc5424", "rfc3164", "local")
EXCHANGE_DECLARE = ("passive", "create")
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp")
# AMQP 1.0 brokers (Qpid, Artemis, RabbitMQ's amqp1_0 plugin), read with qpid-proton.
AMQP10_SCHEMES = ("amqp10", "amqp10s")
# What a binding on an AMQP 1.0 broker cannot have: it reads one address, declares nothing.
AMQP091_ONLY_KEYS = ("exchange", "exchanges", "exchange_type", "routing_keys", "exchange_durable", "exchange_declare",
                     "queue", "durable", "auto_delete", "exclusive", "queue_arguments")  # fmt: skip

# Walking a YAML alias bomb or a self-referencing alias would never end:
# no real config comes near these numbers.
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64

# An error message quotes what it found; a 10,000-character value is cut.
MAX_MESSAGE = 1000
# Larger than any duration or size a setting takes; bigger numbers would overflow a float.
MAX_NUMBER = 1e12

# RELP: rsyslog's imrelp listens here unless told otherwise.
RELP_DEFAULT_PORT = 2514
# RELP frames in flight before waiting for answers: librelp's own default window.
RELP_DEFAULT_WINDOW = 128

# The largest UDP payload over IPv4; unix datagram sockets refuse less than that.
MAX_DATAGRAM = 65507

# RFC 5424 section 6.2.1 facility names and codes.
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip


# RFC 5424 section 6.2.1 severities, with the spellings people also write.
SYSLOG_SEVERITIES = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7,
    "emergency": 0, "critical": 2, "error": 3, "warn": 4,
}  # fmt: skip
# oslo.messaging notification priorities (upper-cased) -> syslog severity.
DEFAULT_SEVERITY_MAP = {
    "CRITICAL": 2, "ERROR": 3, "WARN": 4, "WARNING": 4,
    "AUDIT": 5, "INFO": 6, "SAMPLE": 6, "DEBUG": 7,
}  # fmt: skip

# OpenStack services' control exchanges (oslo.messaging's control_exchange):
# they carry RPC next to notifications, so binding '#' there copies RPC traffic.
OPENSTACK_EXCHANGES = frozenset((
    "openstack", "nova", "glance", "neutron", "cinder", "keystone", "heat", "ironic", "octavia",
    "designate", "manila", "barbican", "magnum", "trove", "sahara", "aodh", "ceilometer", "placement",
    "swift", "zaqar", "mistral", "senlin", "watcher", "masakari", "cyborg", "blazar", "zun", "murano",
    "tacker", "vitrage", "cloudkitty", "gnocchi", "freezer", "monasca",
))  # fmt: skip


TOP_LEVEL_KEYS = ("broker", "reconnect", "metrics", "sinks", "bindings")


class ConfigError(Exception):
    """A config mistake, with the key path where it was found."""

    def __init__(self, path: str, message: str) -> None:
        text = " ".join((f"{path}: {message}" if path else message).split())  # one line, whatever the parser said
        super().__init__(text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "...")
        self.path = path


@dataclass(frozen=True)
class TLSConfig:
    """amqps:// settings; the default verifies the chain and the host name."""

    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname: str | None = None


@dataclass(frozen=True)
class BrokerConfig:
    urls: tuple[str, ...]
    heartbeat: float
    connect_timeout: float
    tls: TLSConfig = field(default_factory=TLSConfig)

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
class SinkConfig:
    name: str
    type: str
    path: str | None = None
    address: str = "/dev/log"
    facility: int = SYSLOG_FACILITIES["user"]
    tag: str = "bridged"
    protocol: str = "rfc5424"
    max_size: int = 8192
    timeout: float = 5.0
    severity: int = SYSLOG_SEVERITIES["info"]  # for messages that carry no known priority
    severity_map: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))
    format: str | None = None  # this sink's format; None: each binding's own
    max_open_files: int = 64  # a file sink whose path has {fields}: files open at once
    window: int = RELP_DEFAULT_WINDOW  # relp: frames sent and not yet answered
    tls: TLSConfig | None = None  # relp: TLS to the server (None: plain TCP)


@dataclass(frozen=True)
class Source:
    """An exchange a binding's queue is bound to, with its routing keys."""

    exchange: str
    exchange_type: str
    routing_keys: tuple[str, ...]
    where: str  # the key path that declared it, for messages that name the key to change


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
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
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
        raise ConfigError("", f"invalid YAML: a value does not fit its type ({_short(str(exc))})") from None
    if raw is None:
        raise ConfigError("", "the file is empty")
    raw = _expand(raw, "", environ, [0], 0)
    top = _Section(raw, "")
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


def _metrics(section: _Section) -> MetricsConfig:
    metrics = MetricsConfig(
        listen=section.get("listen", _listen_address, None),
        stats_interval=section.get("stats_interval", _number(0), 60.0),
        backlog_interval=section.get("backlog_interval", _number(0.1), 5.0),
    )
    section.done()
    return metrics


def _listen_address(value: Any, where: str) -> tuple[str, int]:
    """host:port, [v6]:port, or :port for every address."""
    text = _name(value, where)
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(where, f"{text!r} is not host:port (e.g. 127.0.0.1:9125, [::1]:9125)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host, int(port_text)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last, and reads dates as text.

    No setting is a date: `exchange: 2024-02-30` is a name, not an impossible day.
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML reads this class attribute
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden by the mapping's own keys
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


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
        return _Expanded(_VAR.sub(lambda m: _lookup(m, path, environ), value))
    if isinstance(value, dict):
        return {k: _expand(v, _join(path, k), environ, count, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", environ, count, depth + 1) for i, v in enumerate(value)]
    return value


class _Expanded(str):
    """A string that came from ${VAR} expansion: where a number or a boolean is expected, it is read as one."""


def _scalar_from_env(value: Any) -> Any:
    """`heartbeat: ${HB:-30}` gives 30, `verify: ${V}` with V=false gives False, as YAML would read them."""
    if not isinstance(value, _Expanded):
        return value
    try:
        parsed = yaml.load(value, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except (yaml.YAMLError, ValueError, RecursionError):
        return value
    return parsed if isinstance(parsed, bool | int | float) else value


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


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


T = TypeVar("T")
_MISSING = object()


class _Section:
    """A mapping being validated: tracks which keys were read, so leftovers are errors."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a mapping, got {_kind(raw)}")
        for key in raw:
            if not isinstance(key, str):
                raise ConfigError(path, f"key {key!r} must be a string")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.known: list[str] = []

    def get(self, key: str, check: Callable[[Any, str], T], default: Any = _MISSING) -> T:
        self.known.append(key)
        where = _join(self.path, key)
        if key not in self.raw or (self.raw[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise ConfigError(where, "is required")
            return default  # type: ignore[no-any-return]
        return check(self.raw[key], where)

    def section(self, key: str, required: bool = True) -> _Section:
        self.known.append(key)
        where = _join(self.path, key)
        if key not in self.raw or self.raw[key] is None:
            if required:
                raise ConfigError(where, "is required")
            return _Section({}, where)
        return _Section(self.raw[key], where)

    def done(self, extension_prefix: str | None = None) -> None:
        """Refuse keys nobody asked for, with a did-you-mean hint."""
        for key in self.raw:
            if extension_prefix and key.startswith(extension_prefix):
                continue
            if key not in self.known:
                hint = difflib.get_close_matches(key, self.known, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                choices = ", ".join(sorted(set(self.known)))
                raise ConfigError(_join(self.path, key), f"unknown key{extra}; known keys: {choices}")


def _short(text: str, limit: int = 60) -> str:
    """*text* cut for an error message (a 5,000-digit number is not worth repeating)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}  # fmt: skip
    if isinstance(value, str):
        return "a string"  # also text from ${VAR}
    return names.get(type(value), type(value).__name__)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {_kind(value)}")
    return value


def _name(value: Any, where: str) -> str:
    text = _string(value, where)
    if not text.strip():
        raise ConfigError(where, "must not be empty")
    return text


def _boolean(value: Any, where: str) -> bool:
    value = _scalar_from_env(value)
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {_kind(value)}")
    return value


def _number(minimum: float, strict: bool = False) -> Callable[[Any, str], float]:
    def check(value: Any, where: str) -> float:
        value = _scalar_from_env(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, f"expected a number, got {_kind(value)}")
        if value != value or value in (float("inf"), float("-inf")) or abs(value) > MAX_NUMBER:
            raise ConfigError(where, f"must be a finite number below {MAX_NUMBER:g}")
        if value < minimum or (strict and value == minimum):
            relation = "greater than" if strict else "at least"
            raise ConfigError(where, f"must be {relation} {minimum:g}, got {value:g}")
        return float(value)

    return check


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        value = _scalar_from_env(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected an integer, got {_kind(value)}")
        if value < minimum:
            raise ConfigError(where, f"must be at least {minimum}, got {_short(str(value))}")
        if maximum is not None and value > maximum:
            raise ConfigError(where, f"must be at most {maximum}, got {_short(str(value))}")
        return value

    return check


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(where, f"{_short(repr(value))} is not one of {', '.join(choices)}")
        return str(value)

    return check


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(_name(item, f"{where}[{i}]" if isinstance(value, list) else where)
                 for i, item in enumerate(items))  # fmt: skip


_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _broker_url(value: Any, where: str) -> str:
    url = _name(value, where)
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


def _broker(section: _Section) -> BrokerConfig:
    urls = section.get("url", _url_list, ("amqp://guest:guest@127.0.0.1:5672//",))
    # ${VAR:-} may leave it empty (etc/openstack.yaml): that means no password file.
    password_file = section.get("password_file", _string, None) or None
    if password_file is not None:
        password = _read_secret(password_file, _join(section.path, "password_file"))
        urls = tuple(_with_password(url, password) for url in urls)
    broker = BrokerConfig(
        urls=urls,
        heartbeat=section.get("heartbeat", _number(0), 30.0),
        connect_timeout=section.get("connect_timeout", _number(0, strict=True), 10.0),
        tls=_tls(section.section("tls", required=False)),
    )
    section.done()
    return broker


def broker_from_url(url: str, where: str = "--url") -> BrokerConfig:
    """The broker settings of a tool given only a URL: the config file's defaults, *url* checked as in the file."""
    return BrokerConfig(urls=(_broker_url(url, where),), heartbeat=30.0, connect_timeout=10.0)


def _tls(section: _Section) -> TLSConfig:
    tls = TLSConfig(
        verify=section.get("verify", _boolean, True),
        ca_file=section.get("ca_file", _readable_file, None),
        cert_file=section.get("cert_file", _readable_file, None),
        key_file=section.get("key_file", _readable_file, None),
        server_hostname=section.get("server_hostname", _name, None),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError(_join(section.path, "key_file"), "cert_file and key_file go together")
    section.done()
    return tls


# A password, key or certificate file is small; /dev/zero is not.
MAX_SECRET_FILE = 1 << 20


def _read_small_file(path: str, where: str) -> bytes:
    """The content of a regular file of at most MAX_SECRET_FILE bytes; never blocks on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(where, f"cannot read {_short(path)}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(where, "the path contains a NUL character") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(where, f"{_short(path)} is not a regular file")
        if info.st_size > MAX_SECRET_FILE:
            raise ConfigError(where, f"{_short(path)} is larger than {MAX_SECRET_FILE} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_SECRET_FILE + 1)[:MAX_SECRET_FILE]
    except OSError as exc:
        raise ConfigError(where, f"cannot read {_short(path)}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _readable_file(value: Any, where: str) -> str:
    path = _name(value, where)
    _read_small_file(path, where)
    return path


def _read_secret(path: str, where: str) -> str:
    data = _read_small_file(path, where)
    try:
        secret = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(where, f"cannot read {_short(path)}: not UTF-8 text") from None
    if not secret:
        raise ConfigError(where, f"{_short(path)} is empty")
    if "\x00" in secret or "\n" in secret:
        raise ConfigError(where, f"{_short(path)} must hold the password alone on one line")
    return secret


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


def _reconnect(section: _Section) -> ReconnectConfig:
    reconnect = ReconnectConfig(
        initial_delay=section.get("initial_delay", _number(0, strict=True), 1.0),
        max_delay=section.get("max_delay", _number(0, strict=True), 60.0),
        multiplier=section.get("multiplier", _number(1), 2.0),
        max_attempts=section.get("max_attempts", _integer(1), None),
    )
    if reconnect.max_delay < reconnect.initial_delay:
        raise ConfigError(
            _join(section.path, "max_delay"),
            f"must be at least initial_delay ({reconnect.initial_delay:g}), got {reconnect.max_delay:g}",
        )
    section.done()
    return reconnect


def _sinks(section: _Section) -> dict[str, SinkConfig]:
    if not section.raw:
        raise ConfigError(section.path, "declare at least one sink")
    sinks = {}
    for name in section.raw:
        sinks[name] = _sink(name, section.section(name))
    return sinks


def _sink(name: str, section: _Section) -> SinkConfig:
    sink = _sink_of_type(name, section)
    if "format" in section.raw:
        sink = replace(sink, format=section.get("format", _format))
    section.done()
    return sink


def _sink_of_type(name: str, section: _Section) -> SinkConfig:
    kind = section.get("type", _choice(SINK_TYPES))
    if kind == "file":
        path = section.get("path", _file_path)
        if "{" in path:
            sink = SinkConfig(
                name, kind, path=path, max_open_files=section.get("max_open_files", _integer(1, 10_000), 64)
            )
        else:
            sink = SinkConfig(name, kind, path=path)
    elif kind == "stdout":
        sink = SinkConfig(name, kind)
    elif kind == "relp":
        sink = _syslog_settings(
            name, kind, section, section.get("address", _relp_address), ("rfc5424", "rfc3164"), "rfc5424",
            window=section.get("window", _integer(1, 10_000), RELP_DEFAULT_WINDOW),
            tls=_tls(section.section("tls")) if "tls" in section.raw else None,
        )  # fmt: skip
    else:
        address = section.get("address", _syslog_address, "/dev/log")
        # A local socket speaks syslog(3)'s format (imuxsock and journald mis-parse RFC 5424 there).
        default_protocol = "local" if address.startswith("/") else "rfc5424"
        sink = _syslog_settings(name, kind, section, address, SYSLOG_PROTOCOLS, default_protocol)
    if kind == "syslog" and not sink.address.startswith("tcp://") and sink.max_size > MAX_DATAGRAM:
        raise ConfigError(
            _join(section.path, "max_size"),
            f"must be at most {MAX_DATAGRAM} for a datagram address (a larger datagram is refused, not truncated)",
        )
    return sink


def _syslog_settings(name: str, kind: str, section: _Section, address: str, protocols: tuple[str, ...],
                     default_protocol: str, **extra: Any) -> SinkConfig:  # fmt: skip
    """The settings every syslog-speaking sink has: message format, severity, size, timeout."""
    return SinkConfig(
        name,
        kind,
        address=address,
        facility=SYSLOG_FACILITIES[section.get("facility", _choice(tuple(SYSLOG_FACILITIES)), "user")],
        tag=section.get("tag", _syslog_tag, "bridged"),
        protocol=section.get("protocol", _choice(protocols), default_protocol),
        max_size=section.get("max_size", _integer(480, 1 << 20), 8192),
        timeout=section.get("timeout", _number(0, strict=True), 5.0),
        severity=SYSLOG_SEVERITIES[section.get("severity", _choice(tuple(SYSLOG_SEVERITIES)), "info")],
        severity_map={**DEFAULT_SEVERITY_MAP, **section.get("severity_map", _severity_map, {})},
        **extra,
    )


def _relp_address(value: Any, where: str) -> str:
    """tcp://host[:port] (port 2514 by default), normalised to carry its port."""
    address = _name(value, where)
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(where, f"malformed RELP address {address!r}: {exc}") from None
    if parts.scheme != "tcp" or not parts.hostname or port == 0 or parts.path not in ("", "/"):
        raise ConfigError(where, f"{address!r} is not tcp://host or tcp://host:port")
    return f"tcp://{parts.netloc}" if port else f"tcp://{parts.netloc}:{RELP_DEFAULT_PORT}"


def _syslog_address(value: Any, where: str) -> str:
    address = _name(value, where)
    if address.startswith("/"):
        return address
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(where, f"malformed syslog address {address!r}: {exc}") from None
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or not port:
        raise ConfigError(where, f"{address!r} is not a socket path, udp://host:port or tcp://host:port")
    return address


def _file_path(value: Any, where: str) -> str:
    """A file path, or a path template with {fields} under a fixed directory."""
    path = _name(value, where)
    if "{" in path or "}" in path:
        from bridged.sinks.paths import PathTemplateError, parse_path_template  # the sinks import config

        try:
            parse_path_template(path)
        except PathTemplateError as exc:
            raise ConfigError(where, str(exc)) from None
    return path


def _severity_map(value: Any, where: str) -> dict[str, int]:
    """Notification priority -> severity name; priorities compare upper-cased."""
    mapping = _mapping(value, where)
    out = {}
    for priority, severity in mapping.items():
        key = _name(priority, where).upper()
        out[key] = SYSLOG_SEVERITIES[_choice(tuple(SYSLOG_SEVERITIES))(severity, _join(where, priority))]
    return out


def _syslog_tag(value: Any, where: str) -> str:
    tag = _name(value, where)
    # RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters, no space.
    if len(tag) > 48 or not all(33 <= ord(c) <= 126 for c in tag):
        raise ConfigError(where, f"{tag!r} must be 1-48 printable ASCII characters without spaces")
    return tag


def _format(value: Any, where: str) -> str:
    text = _name(value, where)
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


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, f"expected a mapping, got {_kind(value)}")
    return value


def _bindings(section: _Section, sinks: Mapping[str, SinkConfig], amqp10: bool = False) -> dict[str, BindingConfig]:
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
                _join(_join(section.path, name), key),
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
    arguments = dict(_mapping(value, where))
    for key, item in arguments.items():
        at = _join(where, key)
        if key in _INTEGER_ARGUMENTS:
            arguments[key] = _integer(_INTEGER_ARGUMENTS[key])(item, at)
        elif key in _CHOICE_ARGUMENTS:
            arguments[key] = _choice(_CHOICE_ARGUMENTS[key])(item, at)
        elif key in _STRING_ARGUMENTS:
            arguments[key] = _string(item, at)
        elif key in _BOOLEAN_ARGUMENTS:
            arguments[key] = _boolean(item, at)
    return arguments


def _source(exchange: str, section: _Section) -> Source:
    """exchange_type and routing_keys from *section* (a binding, or one entry of its exchanges)."""
    exchange_type = section.get("exchange_type", _choice(EXCHANGE_TYPES), "topic")
    keys_where = _join(section.path, "routing_keys")
    keys = section.get("routing_keys", _string_list, ())
    if exchange_type == "topic" and not keys:
        keys = ("#",)
    elif exchange_type == "direct" and not keys:
        raise ConfigError(keys_where, "a direct exchange needs at least one routing key")
    elif exchange_type == "fanout":
        keys = ("",)
    return Source(exchange, exchange_type, keys, section.path)


def _sources(section: _Section) -> tuple[Source, ...]:
    """`exchange:` (with exchange_type, routing_keys) or `exchanges:`, a mapping of several."""
    if "exchanges" in section.raw:
        for key in ("exchange", "exchange_type", "routing_keys"):
            if key in section.raw:
                raise ConfigError(_join(section.path, key), "give exchange (with its keys) or exchanges, not both")
        exchanges = section.section("exchanges")
        if not exchanges.raw:
            raise ConfigError(exchanges.path, "name at least one exchange")
        sources = []
        for exchange in exchanges.raw:
            entry = exchanges.section(exchange, required=False)
            sources.append(_source(_name(exchange, entry.path), entry))
            entry.done()
        return tuple(sources)
    return (_source(section.get("exchange", _name), section),)


def _binding(name: str, section: _Section, sinks: Mapping[str, SinkConfig], amqp10: bool = False) -> BindingConfig:
    if amqp10:
        for key in AMQP091_ONLY_KEYS:
            if key in section.raw:
                raise ConfigError(_join(section.path, key), "is for AMQP 0-9-1 brokers: a binding on an AMQP 1.0 "
                                  "broker (amqp10://) reads one address: give address: instead")  # fmt: skip
        address = section.get("address", _name)
        sources: tuple[Source, ...] = ()
    else:
        if "address" in section.raw:
            raise ConfigError(_join(section.path, "address"), "is for AMQP 1.0 brokers (amqp10:// URLs); "
                              "on AMQP 0-9-1 a binding names its exchange and queue")  # fmt: skip
        address = None
        sources = _sources(section)
    prefetch = section.get("prefetch", _integer(1, 65535), 1000)
    has_sink, has_sinks = "sink" in section.raw, "sinks" in section.raw
    if has_sink and has_sinks:
        raise ConfigError(_join(section.path, "sinks"), "give either sink or sinks, not both")
    sink_key = "sinks" if has_sinks else "sink"
    sink_names = section.get(sink_key, _string_list, None)
    if not sink_names:
        raise ConfigError(_join(section.path, "sink"), "is required (name one of the declared sinks)")
    for i, sink in enumerate(sink_names):
        if sink not in sinks:
            where = _join(section.path, sink_key) + (f"[{i}]" if has_sinks else "")
            hint = difflib.get_close_matches(sink, list(sinks), n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(where, f"sink {sink!r} is not declared under sinks{extra}")
    binding_format = section.get("format", _format, "raw")
    binding = BindingConfig(
        name=name,
        sources=sources,
        exchange_durable=section.get("exchange_durable", _boolean, True),
        exchange_declare=section.get("exchange_declare", _choice(EXCHANGE_DECLARE), "passive"),
        queue=address if address is not None else section.get("queue", _name, f"bridged.{name}"),
        durable=section.get("durable", _boolean, True),
        auto_delete=section.get("auto_delete", _boolean, False),
        exclusive=section.get("exclusive", _boolean, False),
        queue_arguments=section.get("queue_arguments", _queue_arguments, {}),
        prefetch=prefetch,
        # A batch the size of the prefetch window stalls the broker until the ack;
        # bench/tuning.py measured 0.58x the ceiling at batch = prefetch = 100.
        batch_size=min(prefetch, section.get("batch_size", _integer(1, 65535), min(256, max(1, prefetch // 4)))),
        batch_delay=section.get("batch_delay", _number(0, strict=True), 0.02),
        sinks=tuple(dict.fromkeys(sink_names)),
        sink_formats=tuple(sinks[sink].format or binding_format for sink in dict.fromkeys(sink_names)),
        format=binding_format,
        max_redeliveries=section.get("max_redeliveries", _integer(0), None),
        redact=section.get("redact", _redact, DEFAULT_REDACT_KEYS),
        address=address,
        **_filter(section.section("filter", required=False)),
    )
    section.done()
    return binding


def _filter(section: _Section) -> dict[str, dict[str, tuple[str, ...]]]:
    """filter: {keep: {field: [globs]}, drop: {field: [globs]}}."""
    rules = {"keep": _rules(section.section("keep", required=False)),
             "drop": _rules(section.section("drop", required=False))}  # fmt: skip
    section.done()
    return rules


def _rules(section: _Section) -> dict[str, tuple[str, ...]]:
    rules = {}
    for name in section.raw:
        where = _join(section.path, name)
        if not valid_field(name):
            hint = difflib.get_close_matches(name, field_names(), n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(where, f"unknown field{extra}; fields: {', '.join(field_names())}")
        rules[name] = section.get(name, _string_list)
    return rules


def _redact(value: Any, where: str) -> tuple[str, ...] | None:
    """true: the default key words; false: off (spelled out); a list: these words instead."""
    if value is True:
        return DEFAULT_REDACT_KEYS
    if value is False:
        return None
    if not isinstance(value, list):
        raise ConfigError(where, f"expected true, false or a list of key words, got {_kind(value)}")
    words = _string_list(value, where)
    if not words:
        raise ConfigError(where, "an empty list would mask nothing: write redact: false to turn redaction off")
    return tuple(w.lower() for w in words)


def warnings(config: Config) -> list[str]:
    """Valid but risky settings, one line each (printed by --check, logged at start)."""
    found = []
    for binding in config.bindings.values():
        for source in binding.sources:
            if source.exchange not in OPENSTACK_EXCHANGES or source.exchange_type != "topic":
                continue
            for i, key in enumerate(source.routing_keys):
                if "notifications" not in key.split(".")[0]:
                    found.append(
                        f"{source.where}.routing_keys[{i}]: {key!r} on OpenStack control exchange "
                        f"{source.exchange!r} also copies RPC messages; bind notifications.* "
                        "(and versioned_notifications.* for nova) instead"
                    )
    return found


def describe(config: Config) -> str:
    """One line summarising a valid config, with passwords masked."""
    urls = ", ".join(mask_url(u) for u in config.broker.urls)
    return f"{config.path}: OK ({len(config.bindings)} bindings, {len(config.sinks)} sinks, broker {urls})"
