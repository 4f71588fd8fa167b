"""The json record has one shape: the fast path (text spliced) and the general one (a dict dumped) agree."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bridged.delivery import Delivery
from bridged.formats import make_formatter
from bridged.formats.jsonline import make_json, record
from bridged.formats.jsontext import dump
from bridged.redact import DEFAULT_REDACT_KEYS, Redactor
from tests.unit.helpers import make_delivery

REDACTOR = Redactor(DEFAULT_REDACT_KEYS)

KEYS = st.sampled_from(["id", "event_type", "payload", "password", "_context_auth_token", "nested", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(KEYS, inner, max_size=4)),
                      max_leaves=20)  # fmt: skip
# What publishers send: JSON documents, oslo envelopes around them, and text that is not JSON.
BODIES = st.one_of(
    VALUES.map(lambda v: json.dumps(v).encode("ascii")),
    st.dictionaries(KEYS, VALUES, max_size=5).map(
        lambda v: json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(v)}).encode("ascii")
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.encode),
    # what one parser may take and another refuse: huge numbers, lone surrogates, NaN
    st.sampled_from([b"123456789012345678901234567890", b"[1e400]", b'"\\ud800"', b"NaN", b"[-0.0]", b"1E+2"]),
)
PROPERTIES = st.one_of(
    st.just({"delivery_mode": 2}),
    st.fixed_dictionaries({}, optional={"delivery_mode": st.sampled_from([1, 2]), "message_id": st.text(max_size=8),
                                        "application_headers": st.dictionaries(KEYS, SCALARS, max_size=3)}),
)  # fmt: skip


def _number(text: str) -> int | float:
    """An integer as the parsers read it: beyond 64 bits orjson (the general path) gives a float, while the
    fast path copies the digits as they were; the same number either way."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(value)


def loads(line: bytes) -> object:
    return json.loads(line, parse_int=_number)


@settings(max_examples=400, deadline=None)
@given(body=BODIES, properties=PROPERTIES, redelivered=st.booleans(), redact=st.booleans())
def test_fast_and_general_paths_write_the_same_record(body, properties, redelivered, redact):
    """Property: for any ASCII one-line body, the spliced line parses to the dict the general path dumps."""
    redactor = REDACTOR if redact else None
    delivery = make_delivery(body, redelivered=redelivered, **properties)
    fast = loads(make_json("b", redactor)(delivery))
    general = loads(dump(record(delivery, "b", redactor)))
    fast.pop("received_at"), general.pop("received_at")
    assert fast == general


STREAMS = st.lists(
    st.tuples(BODIES, st.integers(0, 2), st.sampled_from(["nova", "glance", "x\u00e9"]),
              st.sampled_from(["notifications.info", "k\n", ""]), st.booleans()),
    min_size=1, max_size=12,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(stream=STREAMS, pool=st.lists(PROPERTIES, min_size=3, max_size=3), fmt=st.sampled_from(["json", "oslo"]),
       redact=st.booleans())  # fmt: skip
def test_a_long_lived_formatter_writes_what_a_fresh_one_writes(stream, pool, fmt, redact):
    """Property: the formatter's memory (the properties' JSON for a dict the reader shares between deliveries,
    record beginnings per exchange, routing key and redelivered flag) never leaks one message's fields into
    another's line."""
    redactor = REDACTOR if redact else None
    long_lived = make_formatter(fmt, "b", redactor)
    for body, which, exchange, routing_key, redelivered in stream:
        shared = pool[which]  # the same dict object for every delivery drawn from this slot, as the reader does
        delivery = Delivery(body, exchange, routing_key, redelivered, 1, shared)
        fresh = make_formatter(fmt, "b", redactor)(Delivery(body, exchange, routing_key, redelivered, 1,
                                                            dict(shared)))  # fmt: skip
        got = loads(long_lived(delivery))
        want = loads(fresh)
        got.pop("received_at", None), want.pop("received_at", None)
        assert got == want
