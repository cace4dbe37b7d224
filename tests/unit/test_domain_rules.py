"""Validation rules, state machine, cursors and settings: pure logic, no services."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from notify_core import pagination, states
from notify_core.config import Settings, SettingsError
from notify_core.errors import ValidationFailed
from notify_core.models import EmailPayload, NotificationCreate, SmsPayload, UserCreate, field_path, parse


def test_payload_may_be_a_json_string_and_message_type_is_an_alias() -> None:
    req = parse(NotificationCreate, {"message_type": "sms", "payload": json.dumps({"body": "hi"})})
    assert req.channel == "sms"
    assert req.payload == {"body": "hi"}


@pytest.mark.parametrize("payload", ["[1]", "3", "{broken", "null"])
def test_payload_string_must_hold_an_object(payload: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        parse(NotificationCreate, {"channel": "email", "payload": payload})
    assert err.value.details == [
        {"field": "payload", "message": "must be an object or a string holding a JSON object"}
    ]


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("a@example.com", True),
        ("first.last+tag@sub.example.co.uk", True),
        ("ünïcode@exämple.com", True),  # IDN goes through email-validator
        ("no-at-sign", False),
        ("two@@example.com", False),
        ("dot..dot@example.com", False),
        (".lead@example.com", False),
        ("trail.@example.com", False),
        ("a@-bad-.com", False),
        ("", False),
    ],
)
def test_email_rules(address: str, ok: bool) -> None:
    data = {"to": address, "subject": "s", "body": "b"}
    if ok:
        assert parse(EmailPayload, data).to
    else:
        with pytest.raises(ValidationFailed) as err:
            parse(EmailPayload, data, prefix="payload")
        assert err.value.details[0]["field"] == "payload.to"


@pytest.mark.parametrize(
    ("phone", "ok"),
    [
        ("+14155550100", True),
        ("+447700900123", True),
        ("+1234567", True),  # 7 digits: the shortest E.164 number
        ("+123456", False),
        ("+123456789012345", True),  # 15 digits: the longest
        ("+1234567890123456", False),
        ("0044770", False),
        ("+0123456789", False),
        ("+1 415 555", False),
    ],
)
def test_e164(phone: str, ok: bool) -> None:
    if ok:
        assert parse(SmsPayload, {"to": phone, "body": "x"}).to == phone
    else:
        with pytest.raises(ValidationFailed):
            parse(SmsPayload, {"to": phone, "body": "x"})


def test_user_fields_and_unknown_fields() -> None:
    with pytest.raises(ValidationFailed) as err:
        parse(UserCreate, {"timezone": "Nowhere/City", "locale": "x", "push_tokens": ["ok", " "], "extra": 1})
    fields = sorted(d["field"] for d in err.value.details)
    assert fields == ["extra", "locale", "push_tokens[1]", "timezone"]


def test_field_path_formats_nested_locations() -> None:
    assert field_path(("payload", "data", "k")) == "payload.data.k"
    assert field_path(("notifications", 3, "payload"), "") == "notifications[3].payload"
    assert field_path(("to",), "payload") == "payload.to"


def test_every_transition_is_checked() -> None:
    assert states.check(["queued", "retrying"], "sending") == ("queued", "retrying")
    with pytest.raises(states.IllegalTransition):
        states.check(["sent"], "queued")
    for terminal in ("delivered", "cancelled", "suppressed"):
        assert states.ALLOWED[terminal] == frozenset()
    # every state named anywhere is a known state
    known = set(states.ALLOWED)
    assert all(target in known for targets in states.ALLOWED.values() for target in targets)


def test_cursor_round_trip_and_rejection() -> None:
    when, row_id = datetime(2026, 11, 24, 8, 0, tzinfo=UTC), uuid.uuid4()
    assert pagination.decode(pagination.encode(when, row_id)) == (when, row_id)
    for bad in ("garbage", "", "eyJ4IjoxfQ", pagination.encode(when, row_id)[:-3]):
        with pytest.raises(ValidationFailed):
            pagination.decode(bad)


def test_settings_are_validated_once_and_loudly() -> None:
    settings = Settings.from_env({"RATE_LIMIT_REQUESTS": "10", "RATE_LIMIT_FAIL_MODE": "CLOSED"})
    assert settings.rate_limit_requests == 10
    assert settings.rate_limit_fail_mode == "closed"
    with pytest.raises(SettingsError, match="RATE_LIMIT_REQUESTS"):
        Settings.from_env({"RATE_LIMIT_REQUESTS": "zero"})
    with pytest.raises(SettingsError, match="RATE_LIMIT_FAIL_MODE"):
        Settings.from_env({"RATE_LIMIT_FAIL_MODE": "sideways"})
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({}).resolved_database_url()
