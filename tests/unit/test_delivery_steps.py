"""Each delivery step on its own, with exact expected outcomes: the fields every outcome carries,
the limits the steps ask for, the deadline guard's boundary, and what a step says when the
limiter is away. In-memory fakes only (tests/unit/fakes.py)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from notify_core.config import Settings
from notify_core.delivery.outcomes import Outcome
from notify_core.delivery.steps import (
    GUARD_MARGIN_S,
    BatchContext,
    Claim,
    backoff_seconds,
    provider_rate,
    recipient_cap,
    run_steps,
    send,
)
from notify_core.providers import PermanentProviderError, Receipt, TransientProviderError

from .fakes import EMAIL, NOW, TENANT, FakeLimiter, FakeProvider

ROW = Claim(
    id=uuid.UUID("00000000-0000-4000-8000-0000000000aa"),
    tenant_id=TENANT,
    user_id=None,
    channel="email",
    provider="fake",
    payload=EMAIL,
    attempt_count=2,
    max_attempts=5,
)


class Ticks:
    """A clock that advances 1.5 s per reading: every send lasts exactly 1,500 ms."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 1.5
        return self.t


class Remaining:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def remaining_s(self) -> float:
        return self.seconds


class Context:
    """A BatchContext over fakes, recording warnings and metrics."""

    def __init__(self, remaining: float = 60.0, **settings: Any) -> None:
        self.limiter = FakeLimiter()
        self.provider = FakeProvider(max_send_seconds=1.0)
        self.warnings: list[tuple[str, dict[str, Any]]] = []
        self.metrics: list[tuple[str, int]] = []
        self.asked: list[str] = []
        values = {"retry_base_seconds": 10.0, "retry_cap_seconds": 1000.0} | settings
        self.ctx = BatchContext(
            settings=Settings(**values),
            deadline=Remaining(remaining),
            limiter=self.limiter,
            provider=self.lookup,
            now=lambda: NOW,
            warn=lambda message, extra: self.warnings.append((message, extra)),
            metric=lambda name, value: self.metrics.append((name, value)),
            jitter=lambda low, high: low,
            clock=Ticks(),
        )

    def lookup(self, name: str) -> Any:
        self.asked.append(name)
        if name != "fake":
            raise PermanentProviderError(f"unknown provider {name!r}", "unknown_provider")
        return self.provider


def expected(kind: str, **fields: Any) -> Outcome:
    return Outcome(kind, ROW.id, TENANT, channel="email", provider="fake", **fields)


# ---------------------------------------------------------------- send


def test_a_send_carries_the_next_attempt_number_and_the_receipt() -> None:
    c = Context()
    c.provider.script[ROW.id] = [Receipt("pm-1", {"status": 202})]
    outcome = send(ROW, c.ctx)
    assert outcome == expected(
        "sent", attempt=3, duration_ms=1500, provider_message_id="pm-1", provider_response={"status": 202}
    )
    (message,) = c.provider.messages
    assert (message.notification_id, message.tenant_id, message.attempt) == (ROW.id, TENANT, 3)
    assert (message.channel, message.provider, message.payload.to) == ("email", "fake", "ada@example.com")
    assert c.asked == ["fake"]


def test_a_permanent_error_fails_with_the_error_its_code_and_duration() -> None:
    c = Context()
    c.provider.script[ROW.id] = [PermanentProviderError("bad address", "http_400")]
    assert send(ROW, c.ctx) == expected(
        "failed",
        attempt=3,
        error="http_400: bad address",
        error_code="http_400",
        duration_ms=1500,
        permanent=True,
        reason="permanent_error",
        fault="recipient",  # the address: another provider would refuse it too
    )


def test_a_transient_error_retries_after_the_backoff() -> None:
    c = Context()
    c.provider.script[ROW.id] = [TransientProviderError("busy", "http_503")]
    assert send(ROW, c.ctx) == expected(
        "retry",
        attempt=3,
        error="http_503: busy",
        error_code="http_503",
        duration_ms=1500,
        delay_s=20.0,
        fault="provider",
    )
    assert c.metrics == []


def test_an_ambiguous_error_is_counted_and_retried_or_failed_by_the_policy() -> None:
    lost = TransientProviderError("no answer", "timeout", ambiguous=True)
    c = Context()
    c.provider.script[ROW.id] = [lost]
    assert send(ROW, c.ctx) == expected(
        "retry",
        attempt=3,
        error="timeout: no answer",
        error_code="timeout",
        ambiguous=True,
        duration_ms=1500,
        delay_s=20.0,
        fault="provider",
    )
    assert c.metrics == [("AmbiguousSends", 1)]
    c = Context(ambiguous_sends="fail")
    c.provider.script[ROW.id] = [lost]
    assert send(ROW, c.ctx) == expected(
        "failed",
        attempt=3,
        error="timeout: no answer",
        error_code="timeout",
        ambiguous=True,
        duration_ms=1500,
        reason="ambiguous",
        fault="provider",
    )


def test_the_last_attempt_fails_with_max_attempts_or_ambiguous() -> None:
    last = replace(ROW, attempt_count=4)
    c = Context()
    c.provider.script[ROW.id] = [TransientProviderError("busy", "http_503")]
    assert send(last, c.ctx) == expected(
        "failed",
        attempt=5,
        error="http_503: busy",
        error_code="http_503",
        duration_ms=1500,
        reason="max_attempts",
        fault="provider",
    )
    c.provider.script[ROW.id] = [TransientProviderError("no answer", "timeout", ambiguous=True)]
    outcome = send(last, c.ctx)
    assert (outcome.kind, outcome.reason, outcome.ambiguous, outcome.error) == (
        "failed",
        "ambiguous",
        True,
        "timeout: no answer",
    )


def test_failing_before_the_send_costs_an_attempt_but_no_time() -> None:
    c = Context()
    unknown = replace(ROW, provider="pigeon")
    assert send(unknown, c.ctx) == Outcome(
        "failed",
        ROW.id,
        TENANT,
        channel="email",
        provider="pigeon",
        attempt=3,
        error="unknown_provider: unknown provider 'pigeon'",
        error_code="unknown_provider",
        permanent=True,
        reason="permanent_error",
        fault="provider",  # a configuration the platform cannot send with, not the address
    )
    broken = replace(ROW, payload={"to": "ada@example.com"})
    outcome = send(broken, c.ctx)
    assert (outcome.kind, outcome.error_code, outcome.attempt, outcome.duration_ms) == (
        "failed",
        "invalid_payload",
        3,
        0,
    )
    assert c.provider.sent == []


def test_a_provider_that_cannot_be_reached_before_sending_is_retried() -> None:
    c = Context()

    def unavailable(name: str) -> Any:
        raise TransientProviderError("secret unavailable", "secrets_unavailable")

    c.ctx.provider = unavailable
    assert send(ROW, c.ctx) == expected(
        "retry",
        attempt=3,
        error="secrets_unavailable: secret unavailable",
        error_code="secrets_unavailable",
        delay_s=20.0,
        fault="provider",
    )


@pytest.mark.parametrize(("remaining", "kind"), [(3.0, "sent"), (2.999, "unstarted")])
def test_the_deadline_guard_starts_a_send_only_with_time_for_its_longest_send(
    remaining: float, kind: str
) -> None:
    # the provider's longest send (1 s) plus the margin (2 s) is the boundary
    assert GUARD_MARGIN_S == 2.0
    c = Context(remaining=remaining)
    assert send(ROW, c.ctx).kind == kind


# ---------------------------------------------------------------- limits


def test_the_provider_rate_asks_for_its_rate_per_second_and_defers_by_the_retry_after() -> None:
    c = Context(provider_rate_limits="fake=7")
    assert provider_rate(ROW, c.ctx) is None
    c.limiter.refuse["provider:"] = 1
    assert provider_rate(ROW, c.ctx) == expected("deferred", delay_s=1.0)
    c.limiter.refuse["provider:"] = 4
    assert provider_rate(ROW, c.ctx) == expected("deferred", delay_s=4.0)
    assert c.limiter.calls == [("provider:fake", 7, 1)] * 3
    assert provider_rate(ROW, Context().ctx) is None  # no rate configured: no question asked


def test_the_recipient_cap_asks_per_hour_and_suppresses_with_the_reason() -> None:
    c = Context(recipient_hourly_caps="email=3")
    assert recipient_cap(ROW, c.ctx) is None
    c.limiter.refuse["recipient:"] = 60
    assert recipient_cap(ROW, c.ctx) == expected(
        "suppressed", error="recipient cap of 3 email per hour reached"
    )
    assert c.limiter.calls == [(f"recipient:{TENANT}:email:ada@example.com", 3, 3600)] * 2


def test_limits_fail_open_and_say_so_when_the_limiter_is_away() -> None:
    c = Context(provider_rate_limits="fake=1", recipient_hourly_caps="email=1")
    c.limiter.unavailable = True
    assert provider_rate(ROW, c.ctx) is None
    assert recipient_cap(ROW, c.ctx) is None
    assert c.warnings == [("send limits unavailable; sending anyway", {"error": "redis down"})] * 2
    assert c.metrics == [("RateLimiterUnavailable", 1)] * 2


def test_run_steps_stops_at_the_first_decision_and_refuses_to_decide_nothing() -> None:
    c = Context()
    first = expected("suppressed", error="first")
    calls: list[str] = []

    def one(row: Claim, ctx: BatchContext) -> Outcome | None:
        calls.append("one")
        return None

    def two(row: Claim, ctx: BatchContext) -> Outcome | None:
        calls.append("two")
        return first

    def three(row: Claim, ctx: BatchContext) -> Outcome | None:
        calls.append("three")
        return None

    assert run_steps(ROW, c.ctx, (one, two, three)) is first
    assert calls == ["one", "two"]
    with pytest.raises(RuntimeError, match=r"^no step decided$"):
        run_steps(ROW, c.ctx, (one,))


def test_backoff_never_goes_below_retry_after_or_zero() -> None:
    s = Settings(retry_base_seconds=0.5, retry_cap_seconds=10.0)
    assert backoff_seconds(1, s, None, jitter=lambda low, high: low) == 0.25
    assert backoff_seconds(1, s, 3.0, jitter=lambda low, high: low) == 3.0
