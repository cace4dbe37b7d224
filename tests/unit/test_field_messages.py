"""What a client is told, word for word, for each kind of bad value (these sentences reach the 422's
details), and the exact edges of each limit: numbers, nesting, instants, phone numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from notify_core import jsontext
from notify_core.fields import (
    EARLIEST,
    LATEST,
    Email,
    Instant,
    Locale,
    Phone,
    QueryInt,
    Short,
    Timezone,
    storable,
)


class Form(BaseModel):
    short: Short | None = None
    phone: Phone | None = None
    email: Email | None = None
    locale: Locale | None = None
    zone: Timezone | None = None
    count: QueryInt | None = None
    when: Instant | None = None


def message(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Form(**fields)
    (error,) = caught.value.errors(include_url=False)
    return str(error["msg"]).removeprefix("Value error, ")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"short": "a\x00b"}, "must not contain the NUL character (U+0000)"),
        ({"short": "é\x00"}, "must not contain the NUL character (U+0000)"),
        ({"phone": "+141555"}, "must be an E.164 phone number such as +14155550100"),
        ({"locale": "english!"}, "must be a locale tag such as en or pt-BR"),
        ({"zone": "Mars/Olympus"}, "must be an IANA time zone such as Europe/Paris"),
        ({"count": "1_0"}, "must be a whole number written with the digits 0-9"),
        (
            {"when": "2026-12-01T09:00:00Z" + " " * 21},
            "must be an RFC 3339 date-time such as 2026-12-01T09:00:00Z",
        ),
        ({"when": 1700000000}, "must be an RFC 3339 date-time string such as 2026-12-01T09:00:00Z"),
        ({"when": "1999-12-31T23:59:59Z"}, "must lie between 2000-01-01 and 2100-01-01 (UTC)"),
        ({"when": "9999-12-31T23:59:59-14:00"}, "must lie between 2000-01-01 and 2100-01-01 (UTC)"),
    ],
)
def test_each_refusal_says_what_is_expected(fields: dict[str, Any], expected: str) -> None:
    assert message(**fields) == expected


def test_an_invalid_email_says_why() -> None:
    assert message(email="ada@@example.com").startswith("value is not a valid email address: ")


def test_the_edges_of_instants() -> None:
    assert Form(when=EARLIEST.isoformat()).when == EARLIEST
    assert Form(when=(LATEST - timedelta(microseconds=1)).isoformat()).when is not None
    assert message(when=LATEST.isoformat()) == "must lie between 2000-01-01 and 2100-01-01 (UTC)"
    assert message(when=(EARLIEST - timedelta(microseconds=1)).isoformat()).startswith("must lie between")
    # counted in UTC: 00:30 at +01:00 on 2000-01-01 is still 1999 in UTC
    assert message(when="2000-01-01T00:30:00+01:00").startswith("must lie between")
    forty = "2026-12-01T09:00:00.000000000000000+00:00"
    assert len(forty) == 41 and message(when=forty).startswith("must be an RFC 3339 date-time such as")
    assert Form(when="2026-12-01T09:00:00.00000000000000+00:00").when == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert Form(when=datetime(2026, 12, 1, 10, tzinfo=timezone(timedelta(hours=1)))).when is not None


def test_storable_takes_everything_postgresql_can_hold() -> None:
    assert storable("plain ascii") == "plain ascii"
    assert storable("émoji 😀 and 漢字") == "émoji 😀 and 漢字"
    # pydantic refuses a lone surrogate in a str field itself; storable is the check for the
    # values it is called on directly
    with pytest.raises(ValueError, match=r"^must not contain unpaired surrogates \(U\+D800 to U\+DFFF\)$"):
        storable("é\ud800")


# ---------------------------------------------------------------- JSON text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1" * 41, "a number has more than 40 characters"),
        ("1." + "1" * 39, "a number has more than 40 characters"),
        ("1e999", "a number is too large"),
        ("NaN", "NaN is not a JSON value"),
        ("-Infinity", "-Infinity is not a JSON value"),
        ("{broken", "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[" * 33 + "]" * 33, "nested deeper than 32 levels"),
        ("[" * 5000 + "]" * 5000, "nested deeper than 32 levels"),
    ],
)
def test_json_text_refusals_say_why(text: str, expected: str) -> None:
    with pytest.raises(jsontext.JsonTextError) as caught:
        jsontext.loads(text)
    assert str(caught.value) == expected


def test_json_text_at_its_limits_is_fine() -> None:
    assert jsontext.loads("1" * 40) == int("1" * 40)
    assert jsontext.loads("1." + "1" * 38) == float("1." + "1" * 38)
    assert jsontext.loads("[" * 32 + "]" * 32) is not None


def test_depth_counts_every_branch() -> None:
    assert jsontext.depth(5) == 0
    assert jsontext.depth([]) == 1
    assert jsontext.depth({"a": [1, {"b": []}]}) == 4
    # a scalar met first does not end the walk
    assert jsontext.depth([[[[]]], 1]) == 4
    assert jsontext.depth([1, [[[]]]]) == 4
    assert jsontext.depth({"x": 1, "y": [[[]]]}) == 4
