"""Config parsing: defaults, ${VAR}, and one clear error per mistake."""

from __future__ import annotations

import re

import pytest
import yaml

from bridged.config import ConfigError, parse_config

BASE = {
    "sinks": {"out": {"type": "stdout"}},
    "bindings": {"glance": {"exchange": "glance", "sink": "out"}},
}


def parse(raw: dict | str, environ: dict | None = None):
    text = raw if isinstance(raw, str) else yaml.safe_dump(raw)
    return parse_config(text, "test.yaml", environ or {})


def with_binding(**fields) -> dict:
    return {**BASE, "bindings": {"glance": {"exchange": "glance", "sink": "out", **fields}}}


def error(raw: dict | str, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw, environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults():
    """A minimal config gets the documented defaults."""
    config = parse(BASE)
    binding = config.bindings["glance"]
    assert config.broker.urls == ("amqp://guest:guest@127.0.0.1:5672//",)
    assert config.broker.heartbeat == 30
    assert config.reconnect.max_attempts is None
    assert binding.sources[0].exchange_type == "topic" and binding.sources[0].routing_keys == ("#",)
    assert binding.queue == "bridged.glance"
    assert binding.durable and binding.exchange_durable and not binding.auto_delete and not binding.exclusive
    assert binding.prefetch == 1000 and binding.format == "raw" and binding.sinks == ("out",)


def test_full_binding_and_sink_list():
    """Every binding key is read; sinks: takes a list."""
    config = parse({
        "broker": {"url": ["amqp://a//", "amqp://b//"], "heartbeat": 0},
        "sinks": {"out": {"type": "stdout"}, "f": {"type": "file", "path": "/tmp/x.log"},
                  "s": {"type": "syslog", "address": "tcp://127.0.0.1:514", "facility": "local3", "tag": "nova",
                        "protocol": "rfc3164"}},
        "bindings": {"nova": {"exchange": "nova", "exchange_type": "direct", "routing_keys": ["a", "b"],
                              "queue": "q", "durable": False, "auto_delete": True, "exclusive": True,
                              "queue_arguments": {"x-queue-type": "quorum"}, "prefetch": 10,
                              "sinks": ["out", "f", "s"], "format": "{body}"}},
    })  # fmt: skip
    nova = config.bindings["nova"]
    assert config.broker.urls == ("amqp://a//", "amqp://b//")
    assert nova.sources[0].routing_keys == ("a", "b") and nova.sinks == ("out", "f", "s")
    assert nova.batch_size == 2  # default: a quarter of the prefetch window
    assert parse(with_binding(prefetch=10, batch_size=50)).bindings["glance"].batch_size == 10  # never above it
    assert parse(BASE).bindings["glance"].batch_size == 250
    assert config.sinks["s"].facility == 19 and config.sinks["s"].protocol == "rfc3164"


def test_fanout_ignores_routing_keys():
    assert parse(with_binding(exchange_type="fanout", routing_keys=["x"])).bindings["glance"].sources[
        0
    ].routing_keys == ("",)


def test_environment_variables_are_expanded():
    """${VAR} is replaced anywhere; $$ is a literal dollar."""
    config = parse(
        {**BASE, "broker": {"url": "amqp://u:${PASS}@h//"}, "sinks": {"out": {"type": "file", "path": "/x/$$/${D}"}}},
        {"PASS": "pw", "D": "d"},
    )
    assert config.broker.urls == ("amqp://u:pw@h//",)
    assert config.sinks["out"].path == "/x/$/d"
    config = parse({**BASE, "broker": {"url": "${URL:-amqp://h//}"}}, {})
    assert config.broker.urls == ("amqp://h//",)
    assert parse({**BASE, "broker": {"url": "${URL:-amqp://h//}"}}, {"URL": "amqp://x//"}).broker.urls == (
        "amqp://x//",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            with_binding(exchange_type="fanot"),
            "bindings.glance.exchange_type: 'fanot' is not one of fanout, direct, topic",
        ),
        (with_binding(exchange_type="direct"), "bindings.glance.routing_keys: a direct exchange needs at least one"),
        (with_binding(exchange=5), "bindings.glance.exchange: expected a string, got an integer"),
        (with_binding(exchange=""), "bindings.glance.exchange: must not be empty"),
        (with_binding(durable="yes"), "bindings.glance.durable: expected true or false, got a string"),
        (with_binding(prefetch=-1), "bindings.glance.prefetch: must be at least 1, got -1"),
        (with_binding(prefetch=1.5), "bindings.glance.prefetch: expected an integer, got a number"),
        (with_binding(prefetch=True), "bindings.glance.prefetch: expected an integer, got a boolean"),
        (with_binding(sink="nope"), "bindings.glance.sink: sink 'nope' is not declared under sinks"),
        (with_binding(sink="ou"), "(did you mean 'out'?)"),
        ({**BASE, "bindings": {"g": {"exchange": "e", "sinks": ["out", "x"]}}}, "bindings.g.sinks[1]: sink 'x' is not"),
        ({**BASE, "bindings": {"g": {"exchange": "e", "sinks": []}}}, "bindings.g.sink: is required"),
        ({**BASE, "bindings": {"g": {"exchange": "e"}}}, "bindings.g.sink: is required"),
        (with_binding(sinks=["out"], sink="out"), "bindings.glance.sinks: give either sink or sinks, not both"),
        (with_binding(routing_key="a"), "bindings.glance.routing_key: unknown key (did you mean 'routing_keys'?)"),
        (with_binding(queue_arguments=[1]), "bindings.glance.queue_arguments: expected a mapping, got a list"),
        (with_binding(format="yaml"), "bindings.glance.format: 'yaml' is not one of raw, json, oslo"),
        (with_binding(format="{body!r}"), "only plain {name} fields"),
        (with_binding(format="{body:>10}"), "only plain {name} fields"),
        (with_binding(format="{body[0]}"), "unknown field"),
        (with_binding(format="{0}"), "unknown field"),
        (with_binding(format="{body"), "invalid template"),
        (with_binding(format="{body}\n{body}"), "single line"),
        ({"bindings": BASE["bindings"]}, "sinks: is required"),
        ({"sinks": BASE["sinks"]}, "bindings: is required"),
        ({**BASE, "bindings": {}}, "bindings: declare at least one binding"),
        ({**BASE, "sinks": {}}, "sinks: declare at least one sink"),
        ({**BASE, "bindings": {"g": "glance"}}, "bindings.g: expected a mapping, got a string"),
        ({**BASE, "extra": 1}, "extra: unknown key"),
        ({**BASE, "binding": {}}, "(did you mean 'bindings'?)"),
        ({**BASE, "sinks": {"out": {"type": "kafka"}}}, "sinks.out.type: 'kafka' is not one of file, stdout, syslog"),
        ({**BASE, "sinks": {"out": {"type": "file"}}}, "sinks.out.path: is required"),
        ({**BASE, "sinks": {"out": {"type": "stdout", "path": "x"}}}, "sinks.out.path: unknown key"),
        ({**BASE, "sinks": {"out": {"type": "syslog", "address": "http://x:1"}}}, "sinks.out.address:"),
        ({**BASE, "sinks": {"out": {"type": "syslog", "address": "udp://x"}}}, "sinks.out.address:"),
        (
            {**BASE, "sinks": {"out": {"type": "syslog", "facility": "local9"}}},
            "sinks.out.facility: 'local9' is not one of",
        ),
        ({**BASE, "sinks": {"out": {"type": "syslog", "tag": "has space"}}}, "sinks.out.tag:"),
        ({**BASE, "sinks": {"out": {"type": "syslog", "max_size": 10}}}, "sinks.out.max_size: must be at least 480"),
        ({**BASE, "broker": {"url": "amqp://h:99999//"}}, "broker.url: malformed broker URL"),
        ({**BASE, "broker": {"url": "amqp:///vhost"}}, "broker.url: broker URL 'amqp:///vhost' names no host"),
        ({**BASE, "broker": {"url": []}}, "broker.url: must name at least one broker URL"),
        ({**BASE, "broker": {"url": ["amqp://h//", "kafka://h"]}}, "broker.url[1]: broker URL 'kafka://h' must start"),
        ({**BASE, "broker": {"heartbeat": -5}}, "broker.heartbeat: must be at least 0, got -5"),
        ({**BASE, "broker": {"heartbeat": ".nan"}}, "broker.heartbeat: expected a number, got a string"),
        ({**BASE, "reconnect": {"initial_delay": 0}}, "reconnect.initial_delay: must be greater than 0"),
        (
            {**BASE, "reconnect": {"initial_delay": 10, "max_delay": 1}},
            "reconnect.max_delay: must be at least initial_delay",
        ),
        ({**BASE, "reconnect": {"max_attempts": 0}}, "reconnect.max_attempts: must be at least 1, got 0"),
        ({**BASE, "reconnect": {"multiplier": 0.5}}, "reconnect.multiplier: must be at least 1, got 0.5"),
        ({**BASE, "reconnect": 3}, "reconnect: expected a mapping, got an integer"),
        ({**BASE, 1: 2}, "key 1 must be a string"),
        (
            {
                **BASE,
                "bindings": {
                    "info": {"queue_declare": "passive", "queue": "bridged.info", "exchange": "nova", "sink": "out"}
                },
            },
            "bindings.info.exchange: has no use with queue_declare: passive",
        ),
        (
            {**BASE, "bindings": {"info": {"queue_declare": "passive", "sink": "out"}}},
            "bindings.info.queue: is required with queue_declare: passive",
        ),
        (
            {**BASE, "bindings": {"info": {"queue_declare": "maybe", "queue": "q", "sink": "out"}}},
            "bindings.info.queue_declare: 'maybe' is not one of create, passive",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_the_key_path(raw, expected):
    """Each config mistake raises one ConfigError whose line names the key path."""
    assert expected in error(raw)


def test_unset_variable_names_the_variable_and_path():
    assert (
        error({**BASE, "broker": {"url": "amqp://u:${NOPE}@h//"}}) == "broker.url: environment variable NOPE is not set"
    )
    assert "not a valid environment variable name" in error({**BASE, "broker": {"url": "${1X}"}})


def test_passwords_never_appear_in_errors():
    """A malformed URL is quoted with its password masked."""
    message = error({**BASE, "broker": {"url": "amqp://user:s3cret@h:port//"}})
    assert "s3cret" not in message and "user:****@" in message


def test_nan_and_infinity_are_refused():
    assert "finite" in error("broker: {heartbeat: .nan}\n" + yaml.safe_dump(BASE))
    assert "finite" in error("reconnect: {max_delay: .inf}\n" + yaml.safe_dump(BASE))


def test_yaml_errors():
    """Invalid YAML, duplicate keys, python tags and alias bombs are refused with a line each."""
    assert "invalid YAML (line 1" in error("a: [")
    assert "duplicate key 'sinks'" in error("sinks: {}\nsinks: {}\n")
    assert "invalid YAML" in error("!!python/object/apply:os.system ['true']")
    assert "too large or too deeply nested" in error("a: &a [*a]")
    assert error("") == "the file is empty"
    assert "a mapping key must be a plain value" in error("? [a, b]\n: c\n")


def test_anchors_for_shared_settings_work():
    """Anchors and merge keys work; top-level x-… keys hold them, other unknown keys stay errors."""
    text = (
        """
sinks: {out: {type: stdout}}
defaults: &defaults {exchange_type: topic, sink: out, exchange_durable: false}
"""
        + "bindings:\n  nova: {<<: *defaults, exchange: nova}\n  glance: {<<: *defaults, exchange: glance}\n"
    )
    assert "defaults: unknown key" in error(text)
    config = parse(text.replace("defaults: &defaults", "x-defaults: &defaults"))
    assert config.bindings["nova"].sources[0].exchange == "nova" and not config.bindings["nova"].exchange_durable
    assert config.bindings["glance"].sinks == ("out",)


def test_password_file_fills_every_url(tmp_path):
    """broker.password_file keeps the secret out of the YAML; it is URL-quoted into each URL."""
    secret = tmp_path / "pw"
    secret.write_text("p@ss/word\n")
    config = parse({**BASE, "broker": {"url": ["amqp://u:old@h1//", "amqp://h2:5673/v"], "password_file": str(secret)}})
    assert config.broker.urls == ("amqp://u:p%40ss%2Fword@h1//", "amqp://guest:p%40ss%2Fword@h2:5673/v")
    from bridged.secrets import url_password

    assert url_password(config.broker.urls[0]) == "p@ss/word"
    assert "broker.password_file: cannot read" in error({**BASE, "broker": {"password_file": str(tmp_path / "no")}})
    (tmp_path / "empty").write_text("\n")
    assert "is empty" in error({**BASE, "broker": {"password_file": str(tmp_path / "empty")}})


def test_datagram_syslog_max_size_is_capped():
    sink = {"type": "syslog", "address": "udp://127.0.0.1:514", "max_size": 100_000}
    assert "sinks.out.max_size: must be at most 65507" in error({**BASE, "sinks": {"out": sink}})
    assert parse({**BASE, "sinks": {"out": {**sink, "address": "tcp://127.0.0.1:514"}}})


def test_max_redeliveries():
    assert parse(with_binding(max_redeliveries=3)).bindings["glance"].max_redeliveries == 3
    assert parse(BASE).bindings["glance"].max_redeliveries is None
    assert "must be at least 0" in error(with_binding(max_redeliveries=-1))


def test_tls_settings(tmp_path):
    """broker.tls: verify is a boolean, files must be readable, cert and key go together."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    tls = parse({**BASE, "broker": {"url": "amqps://h//", "tls": {"ca_file": str(ca)}}}).broker.tls
    assert tls.verify and tls.ca_file == str(ca)
    assert parse(BASE).broker.tls.verify
    assert "broker.tls.verify: expected true or false" in error({**BASE, "broker": {"tls": {"verify": "no"}}})
    assert "broker.tls.ca_file: cannot read" in error({**BASE, "broker": {"tls": {"ca_file": str(tmp_path / "x")}}})
    assert "cert_file and key_file go together" in error({**BASE, "broker": {"tls": {"cert_file": str(ca)}}})
    assert "broker.tls.veryfy: unknown key (did you mean 'verify'?)" in error(
        {**BASE, "broker": {"tls": {"veryfy": 1}}}
    )


def test_config_path_that_is_not_a_regular_file(tmp_path):
    """A FIFO as config path is refused at once (reading it would block forever)."""
    import os

    from bridged.config import load_config

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)


def test_openstack_safe_defaults():
    """Exchanges are only checked, redaction is on, a local syslog socket speaks syslog(3)'s format."""
    config = parse({**BASE, "sinks": {"out": {"type": "syslog"}, "net": {"type": "syslog", "address": "udp://h:514"}}})
    binding = config.bindings["glance"]
    assert binding.exchange_declare == "passive"
    assert "password" in binding.redact and "token" in binding.redact
    assert config.sinks["out"].protocol == "local" and config.sinks["net"].protocol == "rfc5424"
    assert config.sinks["out"].severity == 6 and config.sinks["out"].severity_map["ERROR"] == 3


def test_exchange_declare_and_redact_choices():
    assert parse(with_binding(exchange_declare="create")).bindings["glance"].exchange_declare == "create"
    assert "bindings.glance.exchange_declare: 'maybe' is not one of passive, create" in error(
        with_binding(exchange_declare="maybe")
    )
    assert parse(with_binding(redact=False)).bindings["glance"].redact is None
    assert parse(with_binding(redact=["API_Key"])).bindings["glance"].redact == ("api_key",)
    assert "bindings.glance.redact: expected true, false or a list" in error(with_binding(redact="yes"))
    assert "redact: false" in error(with_binding(redact=[]))


def test_severity_settings():
    sinks = {"out": {"type": "syslog", "severity": "notice", "severity_map": {"audit": "warning"}}}
    sink = parse({**BASE, "sinks": sinks}).sinks["out"]
    assert sink.severity == 5 and sink.severity_map["AUDIT"] == 4 and sink.severity_map["ERROR"] == 3
    bad = {"out": {"type": "syslog", "severity_map": {"INFO": "loud"}}}
    assert "sinks.out.severity_map.INFO: 'loud' is not one of" in error({**BASE, "sinks": bad})


def test_rpc_bindings_on_control_exchanges_are_warned_about():
    from bridged.config import warnings

    config = parse(
        {
            **BASE,
            "bindings": {
                "nova": {"exchange": "nova", "sink": "out"},
                "glance": {"exchange": "glance", "sink": "out", "routing_keys": ["notifications.*"]},
                "mine": {"exchange": "mine", "sink": "out"},
            },
        }
    )
    found = warnings(config)
    assert len(found) == 1 and found[0].startswith("bindings.nova.routing_keys[0]: '#' on OpenStack control exchange")


def test_first_contact_config_mistakes():
    """The mistakes new operators make get one line naming the key (or the fix)."""
    assert error({"sink": {"o": {"type": "stdout"}}, "bindings": BASE["bindings"]}).startswith(
        "sink: unknown key (did you mean 'sinks'?)"
    )
    assert "queue_arguments.x-message-ttl: expected an integer, got a string" in error(
        with_binding(queue_arguments={"x-message-ttl": "86400000"})
    )
    assert "queue_arguments.x-queue-type: 'qorum' is not one of classic, quorum, stream" in error(
        with_binding(queue_arguments={"x-queue-type": "qorum"})
    )
    two = {**BASE, "bindings": {"a": {"exchange": "e", "sink": "out", "queue": "q"},
                                "b": {"exchange": "f", "sink": "out", "queue": "q"}}}  # fmt: skip
    assert error(two).startswith("bindings.b.queue: queue 'q' is already consumed by binding 'a'")
    assert "must be a finite number" in error({**BASE, "broker": {"heartbeat": 10**401}})
    assert "got 100000000000000000000" in error(with_binding(prefetch=10**401))  # cut, not 401 digits


def test_environment_values_become_numbers_and_booleans_where_expected():
    raw = {**BASE, "broker": {"heartbeat": "${HB:-30}", "url": "amqp://u:${PASS}@h//"},
           "bindings": {"glance": {"exchange": "glance", "sink": "out", "durable": "${D}",
                                   "queue_arguments": {"x-message-ttl": "${TTL}"}}}}  # fmt: skip
    config = parse(raw, {"D": "false", "TTL": "60000", "PASS": "123"})
    assert config.broker.heartbeat == 30 and config.bindings["glance"].durable is False
    assert config.bindings["glance"].queue_arguments["x-message-ttl"] == 60000
    assert config.broker.urls == ("amqp://u:123@h//",)  # a string stays a string where one is expected
    assert "expected true or false, got a string" in error(raw, {"D": "maybe", "TTL": "1", "PASS": "x"})


def test_dates_are_text_and_broken_tags_are_one_line():
    assert parse(with_binding(exchange="2024-02-30")).bindings["glance"].sources[0].exchange == "2024-02-30"
    for text in ("!!bool topic", "!!int x", "!!set {a, b}", "!!timestamp 2024-13-45", "!!binary ???"):
        message = error(yaml.safe_dump(BASE).replace("exchange: glance", f"exchange: {text}"))
        assert message.startswith(("invalid YAML", "bindings.glance.exchange")), message


def test_an_unencoded_password_is_refused_without_showing_it():
    message = error({**BASE, "broker": {"url": "amqp://guest:s3cr@t/pa#ss@h:5672//"}})
    assert "must be percent-encoded" in message and "s3cr" not in message and "pa#ss" not in message
    assert "'amqp://guest:****@h:5672//'" in message
    assert parse({**BASE, "broker": {"url": "amqp://guest:s3cr%40t@h//"}}).broker.urls


def test_several_exchanges_per_binding():
    """exchanges: one queue bound to several exchanges, each with its own type and keys."""
    raw = with_binding(exchanges={"nova": {"routing_keys": ["notifications.*", "versioned_notifications.*"]},
                                  "glance": {"routing_keys": ["notifications.*"]},
                                  "audit": {"exchange_type": "fanout"}})  # fmt: skip
    del raw["bindings"]["glance"]["exchange"]
    sources = parse(raw).bindings["glance"].sources
    assert sorted((s.exchange, s.exchange_type, s.routing_keys) for s in sources) == [
        ("audit", "fanout", ("",)),
        ("glance", "topic", ("notifications.*",)),
        ("nova", "topic", ("notifications.*", "versioned_notifications.*")),
    ]
    assert "bindings.glance.exchange: give exchange (with its keys) or exchanges, not both" in error(
        with_binding(exchanges={"nova": None})
    )
    bad = with_binding(exchanges={"nova": {"exchange_type": "x"}})
    del bad["bindings"]["glance"]["exchange"]
    assert "bindings.glance.exchanges.nova.exchange_type: 'x' is not one of" in error(bad)
    warned = with_binding(exchanges={"nova": {"routing_keys": ["#"]}})
    del warned["bindings"]["glance"]["exchange"]
    from bridged.config import warnings

    assert warnings(parse(warned))[0].startswith("bindings.glance.exchanges.nova.routing_keys[0]: '#'")


def test_filters_sink_formats_and_path_templates_are_validated_with_key_paths():
    assert "bindings.glance.filter.keep.event_typ: unknown field (did you mean 'event_type'?)" in error(
        with_binding(filter={"keep": {"event_typ": ["x"]}})
    )
    assert "bindings.glance.filter.drop: unknown key" not in error(with_binding(filter={"dorp": {}}))
    assert "bindings.glance.filter.dorp: unknown key (did you mean 'drop'?)" in error(with_binding(filter={"dorp": {}}))
    config = parse(with_binding(filter={"keep": {"header.tenant": "t1"}, "drop": {"priority": ["debug"]}}))
    assert config.bindings["glance"].keep == {"header.tenant": ("t1",)}
    sinks = {"out": {"type": "stdout"}, "f": {"type": "file", "path": "/l/{event_type}.log", "format": "json"}}
    config = parse({**BASE, "sinks": sinks, "bindings": {"glance": {"exchange": "g", "sinks": ["out", "f"]}}})
    assert config.bindings["glance"].sink_formats == ("raw", "json")
    assert config.sinks["f"].max_open_files == 64
    bad = {"out": {"type": "file", "path": "{event_type}.log"}}
    assert error({**BASE, "sinks": bad}).startswith("sinks.out.path: needs a fixed directory before the first {field}")
    bad = {"out": {"type": "file", "path": "/l/{nope}.log"}}
    assert error({**BASE, "sinks": bad}).startswith("sinks.out.path: unknown field {nope}")
    bad = {"out": {"type": "stdout", "format": "{nope}"}}
    assert error({**BASE, "sinks": bad}).startswith("sinks.out.format: unknown field {nope}")


AMQP10 = """
broker: {url: %s}
sinks: {o: {type: stdout}}
bindings:
  b: %s
"""


@pytest.mark.parametrize(
    ("url", "binding", "expected"),
    [
        ("amqp10://h", "{exchange: x, sink: o}", "bindings.b.exchange: is for AMQP 0-9-1 brokers"),
        ("amqp10://h", "{address: q, queue_arguments: {}, sink: o}", "bindings.b.queue_arguments: is for AMQP 0-9-1"),
        ("amqp10://h", "{sink: o}", "bindings.b.address: is required"),
        ("amqp://h", "{address: q, sink: o}", "bindings.b.address: is for AMQP 1.0 brokers"),
        ("[amqp10://a, amqp://b]", "{address: q, sink: o}", "broker.url[1]: mixes AMQP 1.0"),
        ("'http://h'", "{address: q, sink: o}", "must start with amqp://, amqps://, amqp10:// or amqp10s://"),
    ],
)
def test_amqp10_bindings_take_an_address_only(url, binding, expected):
    """On an amqp10:// broker a binding reads one address; 0-9-1 keys there (and address on 0-9-1) name the key."""
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config(AMQP10 % (url, binding), "t", {})


def test_amqp10_binding():
    config = parse_config(AMQP10 % ("amqp10s://u:p@h:5671", "{address: /queues/q, prefetch: 50, sink: o}"), "t", {})
    binding = config.bindings["b"]
    assert config.broker.amqp10 and binding.address == "/queues/q" and binding.queue == "/queues/q"
    assert binding.sources == () and binding.prefetch == 50


def test_a_passive_queue_binding_needs_no_exchange():
    """queue_declare: passive consumes the services' queue: no exchange, nothing to declare or bind."""
    config = parse({**BASE, "bindings": {"info": {"queue_declare": "passive", "queue": "bridged.info", "sink": "out"}}})
    binding = config.bindings["info"]
    assert binding.queue_declare == "passive" and binding.queue == "bridged.info" and binding.sources == ()


@pytest.mark.parametrize("key", ["prefetch", "exchange_type", "batch_size"])
def test_a_number_too_long_to_print_is_one_line_naming_its_size(key):
    """A hex literal of 16,000 bits is a valid YAML int that str() refuses (over 4,300 digits): still one line."""
    huge = "0x" + "F" * 4000
    message = error(
        f"sinks: {{out: {{type: stdout}}}}\nbindings: {{glance: {{exchange: glance, sink: out, {key}: {huge}}}}}"
    )
    assert message.startswith(f"bindings.glance.{key}: ") and "a number of about 4817 digits" in message


def test_a_decimal_integer_longer_than_python_reads_names_its_key():
    """5,000 decimal digits: Python's int() refuses them (4,300); the loader's stand-in is refused by the key."""
    message = error(f"broker: {{heartbeat: {'9' * 5000}}}\nsinks: {{out: {{type: stdout}}}}\n"
                    "bindings: {glance: {exchange: glance, sink: out}}")  # fmt: skip
    assert message.startswith("broker.heartbeat: ")
    message = error(f"sinks: {{out: {{type: stdout}}}}\nbindings: {{glance: {{exchange: glance, sink: out, "
                    f"prefetch: -{'1' * 5000}}}}}")  # fmt: skip
    assert message.startswith("bindings.glance.prefetch: ") and "a number of about 5000 digits" in message
