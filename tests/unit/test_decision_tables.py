"""Small decision tables, each pinned value by value: the outcome table, cursors, suppression
addresses and what a critical category bypasses."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from notify_core import pagination, suppressions
from notify_core.delivery.outcomes import OUTCOMES, Outcome, Rule, columns
from notify_core.errors import ValidationFailed


def test_the_outcome_table_is_what_the_engine_promises() -> None:
    table = dict(OUTCOMES)
    assert table == {
        "sent": Rule("sent", attempt=True, metric="NotificationsSent", event="notification.sent"),
        "retry": Rule("retrying", attempt=True, requeue=True, metric="NotificationsRetried"),
        "failed": Rule(
            "failed",
            attempt=True,
            dead_letter=True,
            metric="NotificationsFailed",
            event="notification.failed",
        ),
        "suppressed": Rule("suppressed", metric="NotificationsSuppressed", event="notification.suppressed"),
        "deferred": Rule("retrying", requeue=True, metric="SendsDeferred"),
        "unstarted": Rule("retrying", requeue=True, metric="SendsNotStarted"),
        "released": Rule("queued", report_failure=True, metric="SendsReleased"),
        "skipped": Rule(None),
        "early": Rule(None, requeue=True),
        "unborn": Rule(None, requeue=True, metric="MessagesBeforeTheirRow"),
        "held": Rule("scheduled", requeue=True, metric="NotificationsHeld"),
    }


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ID = uuid.UUID("da5f23ce-a045-4e08-967c-cb0b5f08f75e")


def test_columns_after_each_kind_of_outcome() -> None:
    sent = Outcome("sent", ID, ID, attempt=3, provider_message_id="pm", provider_response={"a": 1})
    assert columns(sent, 2, "old error", NOW) == {
        "attempt_count": 3,
        "next_attempt_at": None,
        "claimed_until": None,
        "claim_id": None,
        "last_error": None,
        "provider_message_id": "pm",
        "provider_response": {"a": 1},
        "sent_at": NOW,
        "failed_at": None,
    }
    retry = Outcome(
        "retry",
        ID,
        ID,
        attempt=3,
        error="http_503: busy",
        delay_s=12.5,
        provider_message_id="x",
        provider_response={"status": 503},
    )
    assert columns(retry, 2, "old error", NOW) == {
        "attempt_count": 3,
        "next_attempt_at": NOW + timedelta(seconds=12.5),
        "claimed_until": None,
        "claim_id": None,
        "last_error": "http_503: busy",
        "provider_message_id": None,
        "provider_response": None,
        "sent_at": None,
        "failed_at": None,
    }
    failed = Outcome("failed", ID, ID, attempt=5, error="http_400: no")
    assert columns(failed, 4, None, NOW) == {
        "attempt_count": 5,
        "next_attempt_at": None,
        "claimed_until": None,
        "claim_id": None,
        "last_error": "http_400: no",
        "provider_message_id": None,
        "provider_response": None,
        "sent_at": None,
        "failed_at": NOW,
    }
    # kinds that count no attempt keep the count, and the earlier error when they bring none
    deferred = Outcome("deferred", ID, ID, attempt=9, delay_s=3)
    values = columns(deferred, 2, "old error", NOW)
    assert (values["attempt_count"], values["last_error"], values["next_attempt_at"]) == (
        2,
        "old error",
        NOW + timedelta(seconds=3),
    )
    released = columns(Outcome("released", ID, ID), 2, "old error", NOW)
    assert (released["attempt_count"], released["next_attempt_at"], released["last_error"]) == (
        2,
        None,
        "old error",
    )


def test_attempt_outcomes() -> None:
    assert Outcome("sent", ID, ID, ambiguous=True).attempt_outcome == "sent"
    assert Outcome("retry", ID, ID, ambiguous=True).attempt_outcome == "ambiguous"
    assert Outcome("failed", ID, ID, ambiguous=True, permanent=True).attempt_outcome == "ambiguous"
    assert Outcome("failed", ID, ID, permanent=True).attempt_outcome == "permanent_error"
    assert Outcome("failed", ID, ID).attempt_outcome == "transient_error"
    assert Outcome("retry", ID, ID).rule is OUTCOMES["retry"]


# ---------------------------------------------------------------- cursors


def test_a_cursor_holds_its_position_and_nothing_more() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    cursor = pagination.encode(when, ID)
    assert "=" not in cursor
    assert json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))) == [
        when.isoformat(),
        str(ID),
    ]
    assert pagination.decode(cursor) == (when, ID)


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        _cursor({"a": 1}),
        _cursor(["2026-01-01T00:00:00+00:00"]),
        _cursor(["2026-01-01T00:00:00+00:00", str(ID), 3]),
        _cursor(["2026-01-01T00:00:00+00:00", 17]),
        _cursor([17, str(ID)]),
        _cursor(["2026-01-01T00:00:00+00:00" + " " * 20, str(ID)]),
        _cursor(["2026-01-01T00:00:00", str(ID)]),  # naive
        _cursor(["1999-12-31T23:59:59+00:00", str(ID)]),  # before the range
        _cursor(["2100-01-01T00:00:00+00:00", str(ID)]),  # after it
        _cursor(["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
        _cursor(["not a date", str(ID)]),
    ],
)
def test_a_forged_cursor_is_a_422_on_the_cursor(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        pagination.decode(cursor)
    assert caught.value.details == [{"field": "cursor", "message": "is not a cursor this API returned"}]


@pytest.mark.parametrize("seconds", [0, 1, 2, 3])
def test_every_cursor_fits_the_cursor_field_whatever_its_length(seconds: int) -> None:
    # base64 of a position pads differently with its length: no padding leaves this API
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(microseconds=seconds * 10)
    cursor = pagination.encode(when, ID)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor), cursor
    assert pagination.decode(cursor) == (when, ID)
    assert pagination.decode(cursor + "=" * (-len(cursor) % 4)) == (when, ID)  # padded works too


def test_a_cursor_is_compact_json() -> None:
    raw = base64.urlsafe_b64decode(pagination.encode(NOW, ID) + "==")
    assert raw == f'["{NOW.isoformat()}","{ID}"]'.encode()


def test_the_longest_time_a_cursor_may_hold() -> None:
    forty = "2026-01-01T00:00:00." + "0" * 14 + "+00:00"
    assert len(forty) == 40 and pagination.decode(_cursor([forty, str(ID)]))[1] == ID
    with pytest.raises(ValidationFailed):
        pagination.decode(_cursor(["2026-01-01T00:00:00." + "0" * 15 + "+00:00", str(ID)]))


def test_the_range_edges_of_a_cursor() -> None:
    assert pagination.decode(_cursor(["2000-01-01T00:00:00+00:00", str(ID)]))[0].year == 2000
    assert pagination.decode(_cursor(["2099-12-31T23:59:59+00:00", str(ID)]))[0].year == 2099
    # a time zone that moves it across the edge counts in UTC
    with pytest.raises(ValidationFailed):
        pagination.decode(_cursor(["2000-01-01T00:30:00+01:00", str(ID)]))


# ---------------------------------------------------------------- suppressions


@pytest.mark.parametrize(
    ("channel", "address", "stored"),
    [
        ("email", "  Ada@Example.COM ", "ada@example.com"),
        ("sms", " +1 (415) 555-0100 ", "+14155550100"),
        ("sms", "+44.7700.900123", "+447700900123"),
        ("push", "  Token-ABC  ", "Token-ABC"),
    ],
)
def test_addresses_are_stored_in_one_form(channel: str, address: str, stored: str) -> None:
    assert suppressions.normalize(channel, address) == stored


def test_what_blocks_a_send() -> None:
    for reason in suppressions.REASONS:
        assert suppressions.blocks({reason}, critical=False) == reason
        assert suppressions.blocks({reason}, critical=True) == (None if reason == "unsubscribe" else reason)
    assert suppressions.blocks({"unsubscribe", "manual"}, critical=True) == "manual"
    assert suppressions.blocks({"unsubscribe", "manual"}, critical=False) == "manual"  # the first by name
    assert suppressions.blocks(set(), critical=True) is None


def test_an_illegal_transition_says_which() -> None:
    from notify_core import states

    with pytest.raises(states.IllegalTransition, match=r"^\['sent', 'cancelled'\] -> queued is not allowed$"):
        states.check(["sent", "cancelled"], "queued")
    assert states.check(["pending", "retrying"], "queued") == ("pending", "retrying")
