"""The building blocks of config validation: a section that tracks its keys, typed checks, one-line errors.

config.py reads the file's structure with them; each sink module reads its
own settings with them. Every error names the key path where it was found
(`bindings.nova.exchange_type: ...`), is one line, and never repeats a
value longer than a few dozen characters.
"""

from __future__ import annotations

import difflib
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

# An error message quotes what it found; a 10,000-character value is cut.
MAX_MESSAGE = 1000
# Larger than any duration or size a setting takes; bigger numbers would overflow a float.
MAX_NUMBER = 1e12
# A password, key or certificate file is small; /dev/zero is not.
MAX_SECRET_FILE = 1 << 20

T = TypeVar("T")
_MISSING = object()


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


class StrictLoader(yaml.SafeLoader):
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

    def construct_huge_int(self, node: yaml.ScalarNode) -> int:
        """An integer, even one longer than Python reads from text (4,300 digits): a number of the same sign and
        size stands in for it, so the key's own check refuses it with the key path."""
        text = str(self.construct_scalar(node)).replace("_", "")
        digits = text.lstrip("+-")
        if digits.isdigit() and len(digits) > sys.get_int_max_str_digits() > 0:
            return int((-1 if text.startswith("-") else 1) * 10 ** (len(digits) - 1))
        return int(super().construct_yaml_int(node))


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_huge_int)


class Expanded(str):
    """A string that came from ${VAR} expansion: where a number or a boolean is expected, it is read as one."""


def scalar_from_env(value: Any) -> Any:
    """`heartbeat: ${HB:-30}` gives 30, `verify: ${V}` with V=false gives False, as YAML would read them."""
    if not isinstance(value, Expanded):
        return value
    try:
        parsed = yaml.load(value, Loader=StrictLoader)  # noqa: S506 - SafeLoader subclass
    except (yaml.YAMLError, ValueError, RecursionError):
        return value
    return parsed if isinstance(parsed, bool | int | float) else value


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class Section:
    """A mapping being validated: tracks which keys were read, so leftovers are errors."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a mapping, got {kind(raw)}")
        for key in raw:
            if not isinstance(key, str):
                raise ConfigError(path, f"key {key!r} must be a string")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.known: list[str] = []

    def get(self, key: str, check: Callable[[Any, str], T], default: Any = _MISSING) -> T:
        self.known.append(key)
        where = join(self.path, key)
        if key not in self.raw or (self.raw[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise ConfigError(where, "is required")
            return default  # type: ignore[no-any-return]
        return check(self.raw[key], where)

    def section(self, key: str, required: bool = True) -> Section:
        self.known.append(key)
        where = join(self.path, key)
        if key not in self.raw or self.raw[key] is None:
            if required:
                raise ConfigError(where, "is required")
            return Section({}, where)
        return Section(self.raw[key], where)

    def done(self, extension_prefix: str | None = None) -> None:
        """Refuse keys nobody asked for, with a did-you-mean hint."""
        for key in self.raw:
            if extension_prefix and key.startswith(extension_prefix):
                continue
            if key not in self.known:
                hint = difflib.get_close_matches(key, self.known, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                choices = ", ".join(sorted(set(self.known)))
                raise ConfigError(join(self.path, key), f"unknown key{extra}; known keys: {choices}")


def shown(value: Any) -> str:
    """*value* as an error message quotes it: cut short, and a number too long to print named by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"  # str() would refuse (4,300 digits)
    return short(repr(value))


def short(text: str, limit: int = 60) -> str:
    """*text* cut for an error message (a 5,000-digit number is not worth repeating)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}  # fmt: skip
    if isinstance(value, str):
        return "a string"  # also text from ${VAR}
    return names.get(type(value), type(value).__name__)


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {kind(value)}")
    return value


def name(value: Any, where: str) -> str:
    text = string(value, where)
    if not text.strip():
        raise ConfigError(where, "must not be empty")
    return text


def boolean(value: Any, where: str) -> bool:
    value = scalar_from_env(value)
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {kind(value)}")
    return value


def number(minimum: float, strict: bool = False) -> Callable[[Any, str], float]:
    def check(value: Any, where: str) -> float:
        value = scalar_from_env(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, f"expected a number, got {kind(value)}")
        if value != value or value in (float("inf"), float("-inf")) or abs(value) > MAX_NUMBER:
            raise ConfigError(where, f"must be a finite number below {MAX_NUMBER:g}")
        if value < minimum or (strict and value == minimum):
            relation = "greater than" if strict else "at least"
            raise ConfigError(where, f"must be {relation} {minimum:g}, got {value:g}")
        return float(value)

    return check


def integer(minimum: int, maximum: int | None = None) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        value = scalar_from_env(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected an integer, got {kind(value)}")
        if value < minimum:
            raise ConfigError(where, f"must be at least {minimum}, got {shown(value)}")
        if maximum is not None and value > maximum:
            raise ConfigError(where, f"must be at most {maximum}, got {shown(value)}")
        return value

    return check


def choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(where, f"{shown(value)} is not one of {', '.join(choices)}")
        return str(value)

    return check


def string_list(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(name(item, f"{where}[{i}]" if isinstance(value, list) else where)
                 for i, item in enumerate(items))  # fmt: skip


def tls_settings(section: Section) -> TLSConfig:
    tls = TLSConfig(
        verify=section.get("verify", boolean, True),
        ca_file=section.get("ca_file", readable_file, None),
        cert_file=section.get("cert_file", readable_file, None),
        key_file=section.get("key_file", readable_file, None),
        server_hostname=section.get("server_hostname", name, None),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError(join(section.path, "key_file"), "cert_file and key_file go together")
    section.done()
    return tls


def read_small_file(path: str, where: str) -> bytes:
    """The content of a regular file of at most MAX_SECRET_FILE bytes; never blocks on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(where, f"cannot read {short(path)}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(where, "the path contains a NUL character") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(where, f"{short(path)} is not a regular file")
        if info.st_size > MAX_SECRET_FILE:
            raise ConfigError(where, f"{short(path)} is larger than {MAX_SECRET_FILE} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_SECRET_FILE + 1)[:MAX_SECRET_FILE]
    except OSError as exc:
        raise ConfigError(where, f"cannot read {short(path)}: {exc.strerror}") from None
    finally:
        os.close(fd)


def readable_file(value: Any, where: str) -> str:
    path = name(value, where)
    read_small_file(path, where)
    return path


def read_secret(path: str, where: str) -> str:
    data = read_small_file(path, where)
    try:
        secret = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(where, f"cannot read {short(path)}: not UTF-8 text") from None
    if not secret:
        raise ConfigError(where, f"{short(path)} is empty")
    if "\x00" in secret or "\n" in secret:
        raise ConfigError(where, f"{short(path)} must hold the password alone on one line")
    return secret


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, f"expected a mapping, got {kind(value)}")
    return value
