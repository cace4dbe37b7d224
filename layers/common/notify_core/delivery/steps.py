"""The steps a claimed notification goes through, in order; the first step that decides ends it.

A step is a function of the claimed row and the batch's context that returns an `Outcome` or
None ("not mine to decide"). The context holds what was prefetched for the whole batch and the
collaborators a step may consult (limiter, providers, clock), so every step runs in unit tests
with in-memory fakes. Only `send` talks to the outside world beyond the limiter.

Adding a step: write it here, list it in `STEPS`, test it in tests/unit/test_delivery_steps.py.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from ..channels import CHANNELS
from ..config import Settings
from ..providers import OutgoingMessage, PermanentProviderError, Provider, TransientProviderError
from ..ratelimit import Decision
from .outcomes import Outcome


@dataclass(frozen=True, slots=True)
class Claim:
    """A notification this invocation holds in `sending`."""

    id: UUID
    tenant_id: UUID
    user_id: UUID | None
    channel: str
    provider: str
    payload: Mapping[str, Any]
    attempt_count: int
    max_attempts: int
    last_error: str | None = None
    # An earlier attempt's answer was lost (ambiguous): the provider may already have the message.
    ambiguous_before: bool = False

    def outcome(self, kind: Any, **fields: Any) -> Outcome:
        return Outcome(kind, self.id, self.tenant_id, channel=self.channel, provider=self.provider, **fields)

    @property
    def address(self) -> str:
        return CHANNELS[self.channel].recipient(self.payload) or str(self.id)


class Limiter(Protocol):
    """Takes tokens from a named limit; raises LimiterUnavailable when the store is unreachable."""

    def check(self, name: str, limit: int, period_s: int) -> Decision: ...


class LimiterUnavailable(RuntimeError):
    pass


class Deadline(Protocol):
    def remaining_s(self) -> float: ...


@dataclass
class BatchContext:
    """What the steps of one batch share: settings, collaborators and prefetched data."""

    settings: Settings
    deadline: Deadline
    limiter: Limiter
    provider: Callable[[str], Provider]
    now: Callable[[], datetime]
    warn: Callable[[str, dict[str, Any]], None] = lambda message, extra: None
    metric: Callable[[str, int], None] = lambda name, value: None
    jitter: Callable[[float, float], float] = random.uniform
    prefetched: dict[str, Any] = field(default_factory=dict)  # per-batch data of later steps


Step = Callable[[Claim, BatchContext], Outcome | None]


# ---------------------------------------------------------------- retry policy (pure)


def backoff_seconds(
    attempt: int,
    settings: Settings,
    retry_after: float | None = None,
    jitter: Callable[[float, float], float] = random.uniform,
) -> float:
    """Exponential backoff with 'equal jitter': between half and all of base·2^(attempt-1), capped,
    and never sooner than the provider's Retry-After."""
    ceiling = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2 ** max(attempt - 1, 0))
    delay = jitter(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


# ---------------------------------------------------------------- steps


def recipient_cap(row: Claim, ctx: BatchContext) -> Outcome | None:
    """Over the recipient's hourly cap for the channel (RECIPIENT_HOURLY_CAPS) → suppressed. Keyed
    by the user when there is one, else by the address. Fails open when Redis is unreachable."""
    cap = ctx.settings.cap_for(row.channel)
    if cap is None:
        return None
    recipient = str(row.user_id) if row.user_id else row.address
    decision = _limit(ctx, f"recipient:{row.tenant_id}:{row.channel}:{recipient}", cap, 3600)
    if decision is None or decision.allowed:
        return None
    return row.outcome("suppressed", error=f"recipient cap of {cap} {row.channel} per hour reached")


def provider_rate(row: Claim, ctx: BatchContext) -> Outcome | None:
    """Over the provider's send rate (PROVIDER_RATE_LIMITS) → deferred without counting an attempt.
    Fails open when Redis is unreachable."""
    rate = ctx.settings.rate_for(row.provider)
    if rate is None:
        return None
    decision = _limit(ctx, f"provider:{row.provider}", rate, 1)
    if decision is None or decision.allowed:
        return None
    return row.outcome("deferred", delay_s=max(1.0, float(decision.retry_after_s)))


def send(row: Claim, ctx: BatchContext) -> Outcome:
    """Send through the row's provider, unless the send could outlive the invocation."""
    attempt = row.attempt_count + 1
    try:
        provider = ctx.provider(row.provider)
        if ctx.deadline.remaining_s() < provider.max_send_seconds + GUARD_MARGIN_S:
            return row.outcome("unstarted")
        message = OutgoingMessage.build(
            row.id, row.tenant_id, row.channel, row.provider, row.payload, attempt
        )
    except PermanentProviderError as exc:  # unknown provider, not configured, invalid payload
        return _failed(row, attempt, exc, 0, "permanent_error")
    except TransientProviderError as exc:  # e.g. the provider secret could not be fetched
        return _transient(row, attempt, exc, 0, ctx)
    started = time.perf_counter()
    try:
        receipt = provider.send(message)
    except TransientProviderError as exc:
        return _transient(row, attempt, exc, _ms(started), ctx)
    except PermanentProviderError as exc:
        return _failed(row, attempt, exc, _ms(started), "permanent_error")
    return row.outcome(
        "sent",
        attempt=attempt,
        duration_ms=_ms(started),
        provider_message_id=receipt.provider_message_id,
        provider_response=receipt.response,
    )


# Before a send starts, the invocation must have this much time left beyond the provider's
# longest send: for recording the outcome.
GUARD_MARGIN_S = 2.0

# The order matters: the first step that decides ends the row. The provider's rate comes before the
# recipient's cap, so that a send deferred for the rate does not use up the recipient's allowance.
STEPS: tuple[Step, ...] = (provider_rate, recipient_cap, send)


def run_steps(row: Claim, ctx: BatchContext, steps: tuple[Step, ...] = STEPS) -> Outcome:
    for step in steps:
        outcome = step(row, ctx)
        if outcome is not None:
            return outcome
    raise RuntimeError("no step decided")  # `send` always decides


# ---------------------------------------------------------------- helpers


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _limit(ctx: BatchContext, name: str, limit: int, period_s: int) -> Decision | None:
    try:
        return ctx.limiter.check(name, limit, period_s)
    except LimiterUnavailable as exc:
        ctx.warn("send limits unavailable; sending anyway", {"error": str(exc)})
        ctx.metric("RateLimiterUnavailable", 1)
        return None


def _failed(row: Claim, attempt: int, exc: Exception, ms: int, reason: Any) -> Outcome:
    return row.outcome(
        "failed",
        attempt=attempt,
        error=str(exc),
        error_code=getattr(exc, "code", None),
        duration_ms=ms,
        permanent=reason == "permanent_error",
        ambiguous=reason == "ambiguous",
        # After an ambiguous attempt the provider may have the message: the dead letter must not
        # claim it was not sent, whatever the last attempt's error.
        reason="ambiguous" if row.ambiguous_before else reason,
    )


def _transient(row: Claim, attempt: int, exc: TransientProviderError, ms: int, ctx: BatchContext) -> Outcome:
    if exc.ambiguous:
        ctx.metric("AmbiguousSends", 1)
        if ctx.settings.ambiguous_sends == "fail":
            return _failed(row, attempt, exc, ms, "ambiguous")
    if attempt >= row.max_attempts:
        return _failed(row, attempt, exc, ms, "ambiguous" if exc.ambiguous else "max_attempts")
    return row.outcome(
        "retry",
        attempt=attempt,
        error=str(exc),
        error_code=exc.code,
        ambiguous=exc.ambiguous,
        duration_ms=ms,
        delay_s=backoff_seconds(attempt, ctx.settings, exc.retry_after, ctx.jitter),
    )
