"""Field types, the JSON limits, media types, the key cache and log hygiene: pure logic, no services."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel, ValidationError

from notify_core import auth, jsontext
from notify_core.errors import DomainError, MalformedRequest, UnsupportedMediaType, ValidationFailed
from notify_core.fields import (
    Cursor,
    Email,
    IdempotencyKeyHeader,
    Instant,
    Phone,
    QueryInt,
    Short,
    StrictBool,
    StrictInt,
    storable,
)
from notify_core.http import check_media_type, parse_media_type, read_json, require_object
from notify_core.models import EmailPayload, PushPayload, SmsPayload, parse
from notify_core.observability import SafeFormatter, describe_exception


class Probe(BaseModel):
    short: Short | None = None
    email: Email | None = None
    phone: Phone | None = None
    when: Instant | None = None
    count: StrictInt | None = None
    flag: StrictBool | None = None
    limit: QueryInt | None = None
    cursor: Cursor | None = None
    key: IdempotencyKeyHeader = None


def rejects(**data: Any) -> str:
    with pytest.raises(ValidationError) as err:
        Probe.model_validate(data)
    return str(err.value.errors()[0]["msg"])


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("plain", True),
        ("ünïcödé ✓", True),
        ("\ufffe\uffff", True),
        ("a\x00", False),
        ("\ud800", False),
        ("\udfff x", False),
    ],
)
def test_storable(value: str, ok: bool) -> None:
    if ok:
        assert storable(value) == value
    else:
        with pytest.raises(ValueError, match=r"NUL|surrogate"):
            storable(value)


def test_strings_are_bounded_stripped_and_storable() -> None:
    assert Probe(short="  x  ").short == "x"
    assert "at most 255" in rejects(short="x" * 256)
    assert "NUL" in rejects(short="a\x00b")
    assert "at least 1" in rejects(short="   ")


@pytest.mark.parametrize(
    "phone",
    [
        "+\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff10",
        "+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660",
        "+0123456789",
        "+1415555010012345",
    ],
)
def test_phone_numbers_are_ascii_e164(phone: str) -> None:
    rejects(phone=phone)


def test_numbers_and_booleans_are_strict() -> None:
    for value in (True, "5", 5.0):
        rejects(count=value)
    for value in (1, "true", "yes"):
        rejects(flag=value)
    assert Probe(count=5, flag=False).count == 5


@pytest.mark.parametrize("text", ["\u0661\u0660", "1_0", " 10", "+10", "10.0", "1" * 10])
def test_query_integers_are_ascii_digits(text: str) -> None:
    rejects(limit=text)


def test_query_integer_accepts_plain_digits() -> None:
    assert Probe(limit="42").limit == 42


@pytest.mark.parametrize(
    "when",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2026-12-01T09:00:00",
        1764579600,
        "x" * 41,
    ],
)
def test_instants_are_aware_strings_within_range(when: Any) -> None:
    rejects(when=when)


def test_instant_in_range() -> None:
    assert Probe(when="2026-12-01T09:00:00+01:00").when == datetime(2026, 12, 1, 8, tzinfo=UTC)


def test_blank_idempotency_header_is_no_key_and_a_long_one_is_refused() -> None:
    assert Probe(key="  ").key is None
    assert Probe(key=" k ").key == "k"
    assert "at most 255" in rejects(key="k" * 8192)


def test_cursor_is_base64url_and_bounded() -> None:
    rejects(cursor="a b")
    rejects(cursor="A" * 513)
    assert Probe(cursor="eyJ4IjoxfQ").cursor == "eyJ4IjoxfQ"


# ---------------------------------------------------------------- JSON text


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a":' * 33 + "1" + "}" * 33,
        "9" * 5000,
        "9" * 41,
        "1e999",
        "-Infinity",
        "NaN",
        "{",
        "",
    ],
)
def test_json_text_beyond_the_limits_is_refused(text: str) -> None:
    with pytest.raises(jsontext.JsonTextError):
        jsontext.loads(text)


def test_json_text_within_the_limits() -> None:
    deep = '{"a":' * 31 + "[1]" + "}" * 31
    assert jsontext.depth(jsontext.loads(deep)) == 32
    assert jsontext.loads('{"n": 12345678901234567890, "f": 1.5e300}') == {
        "n": 12345678901234567890,
        "f": 1.5e300,
    }


def test_body_bytes_are_strict_utf8() -> None:
    import base64

    assert read_json(base64.b64encode('{"a": "é"}'.encode()).decode(), True) == {"a": "é"}
    for raw in (b"\xff", '{"a": 1}'.encode("utf-16"), b"\xef\xbb\xbf{}"):
        with pytest.raises(MalformedRequest):
            read_json(base64.b64encode(raw).decode(), True)
    with pytest.raises(MalformedRequest):
        read_json('"\ud800"', False)
    assert read_json(None, False) is None
    with pytest.raises(ValidationFailed):
        require_object([{"a": 1}])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", ("application/json", {})),
        (" Application/JSON ; Charset=UTF-8 ", ("application/json", {"charset": "UTF-8"})),
        ('application/json; charset="utf-8"', ("application/json", {"charset": "utf-8"})),
        ("application/jsonx", ("application/jsonx", {})),
        ("application/json x", None),
        ("json", None),
        ("application/json; charset", None),
    ],
)
def test_media_types_are_parsed(value: str, expected: Any) -> None:
    assert parse_media_type(value) == expected


@pytest.mark.parametrize(
    "value",
    ["application/jsonx", "text/json", "application/json; charset=latin-1", "application/problem+json", "x"],
)
def test_only_json_in_utf8_is_accepted(value: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_media_type(value)


# ---------------------------------------------------------------- what a provider would refuse


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (PushPayload, {"token": "t", "topic": "news", "title": "t", "body": "b"}),
        (PushPayload, {"topic": "a/b", "title": "t", "body": "b"}),
        (PushPayload, {"token": "t", "title": "t", "body": "b", "data": {"gcm.x": "1"}}),
        (PushPayload, {"token": "t", "title": "t", "body": "b", "data": {"notification": "1"}}),
        (PushPayload, {"token": "t", "title": "t", "body": "b", "data": {"k": 1}}),
        (PushPayload, {"token": "t", "title": "t" * 1000, "body": "b" * 3100}),
        (EmailPayload, {"to": "a@example.com", "subject": "a\nb", "body": "b"}),
        (EmailPayload, {"to": "a@example.com", "from": "nobody", "subject": "s", "body": "b"}),
        (SmsPayload, {"to": "+14155550100", "body": "x" * 1601}),
    ],
)
def test_payloads_a_provider_would_reject_are_refused(model: type[BaseModel], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as err:
        parse(model, data, prefix="payload")
    assert all(d["field"].startswith("payload") for d in err.value.details)


def test_push_with_topic_or_token_and_string_data_is_fine() -> None:
    assert (
        parse(PushPayload, {"topic": "news", "title": "t", "body": "b", "data": {"k": "v"}}).topic == "news"
    )
    assert parse(PushPayload, {"token": "t", "title": "t", "body": "b"}).token == "t"


# ---------------------------------------------------------------- the key cache


def test_key_cache_forgets_the_least_recently_used_entry() -> None:
    cache = auth._Lru(3)
    principal = auth.Principal(uuid.uuid4(), uuid.uuid4(), "nk_x", frozenset(), None)
    for key in (b"a", b"b", b"c"):
        cache.put(key, (1.0, principal))
    assert cache.get(b"a") is not None  # a is now the most recently used
    cache.put(b"d", (1.0, principal))
    assert b"b" not in cache and all(k in cache for k in (b"a", b"c", b"d")) and len(cache) == 3


def test_unknown_keys_never_push_known_ones_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from notify_core.config import get_settings

    monkeypatch.setenv("API_KEY_CACHE_SECONDS", "60")
    get_settings.cache_clear()
    principal = auth.Principal(uuid.uuid4(), uuid.uuid4(), "nk_known", frozenset(), None)
    known = auth.hash_key("nk_known_key")
    lookups: list[bytes] = []

    def load(digest: bytes) -> auth.Principal | None:  # the database, for this test: one known key
        lookups.append(digest)
        return principal if digest == known else None

    monkeypatch.setattr(auth, "_load_principal", load)
    auth.clear_cache()
    try:
        assert auth.authenticate("nk_known_key") is principal
        for i in range(auth._misses.capacity * 2):
            with pytest.raises(auth.Unauthorized):
                auth.authenticate(f"nk_guess_{i}")
        assert auth.authenticate("nk_known_key") is principal
        assert lookups.count(known) == 1  # still cached: no second lookup
        assert len(auth._misses) == auth._misses.capacity
        with pytest.raises(auth.Unauthorized):
            auth.authenticate("k" * 257)  # not hashed, not looked up
        assert len(lookups) == 1 + auth._misses.capacity * 2
    finally:
        auth.clear_cache()
        get_settings.cache_clear()


def test_a_refusing_before_lookup_hook_prevents_the_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_load_principal", lambda digest: pytest.fail("looked up"))

    def refuse() -> None:
        raise DomainError("blocked")

    with pytest.raises(DomainError, match="blocked"):
        auth.authenticate("nk_anything", before_lookup=refuse)


# ---------------------------------------------------------------- logs


def test_exception_logs_keep_frames_and_types_but_never_messages() -> None:
    def store() -> None:
        try:
            raise psycopg.errors.UntranslatableCharacter(
                'unsupported Unicode escape sequence\nCONTEXT: JSON data, line 1: {"to": "bob@example.com"'
            )
        except psycopg.Error as exc:
            raise RuntimeError("while storing +14155550100") from exc

    try:
        store()
    except RuntimeError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "unhandled error", None, __import__("sys").exc_info()
        )
    line = SafeFormatter(serialize_stacktrace=False).format(record)
    logged = json.loads(line)
    assert "bob@example.com" not in line and "+14155550100" not in line and "CONTEXT" not in line
    assert "psycopg.errors.UntranslatableCharacter" in logged["exception"]
    assert "builtins.RuntimeError" in logged["exception"] and "in store" in logged["exception"]
    assert describe_exception(ValueError("x@example.com")) == "builtins.ValueError"
