"""The steps a claimed notification goes through, in order; the first step that decides ends it.

A step is a function of the claimed row and the batch's context that returns an `Outcome` or
None ("not mine to decide"). The context holds what was prefetched for the whole batch and the
collaborators a step may consult (limiter, providers, clock), so every step runs in unit tests
with in-memory fakes. Only `send` talks to the outside world beyond the limiter.

Adding a step: write it here, list it in `STEPS`, test it in tests/unit/test_delivery_steps.py.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from ..audience import delivery as audience_delivery
from ..channels import CHANNELS
from ..config import Settings
from ..providers import (
    OutgoingMessage,
    PermanentProviderError,
    Provider,
    ProviderError,
    TransientProviderError,
)
from . import routing
from .outcomes import Outcome

if TYPE_CHECKING:  # redis is imported only where limits are configured (cold start: ~40 ms)
    from ..ratelimit import Decision


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
    category: str | None = None  # audience (issue 10)
    # An earlier attempt's answer was lost (ambiguous): the provider may already have the message.
    ambiguous_before: bool = False

    def outcome(self, kind: Any, **fields: Any) -> Outcome:
        fields.setdefault("provider", self.provider)  # the send step names the provider it routed to
        return Outcome(kind, self.id, self.tenant_id, channel=self.channel, **fields)

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
    clock: Callable[[], float] = time.perf_counter  # for attempt durations
    prefetched: dict[str, Any] = field(default_factory=dict)  # per-batch data of later steps
    router: routing.Router | None = None  # provider routes: config providers, breaker (None: the container's)


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
    provider = routing.chosen(row, ctx).provider  # the provider this attempt is routed to
    rate = ctx.settings.rate_for(provider)
    if rate is None:
        return None
    decision = _limit(ctx, f"provider:{provider}", rate, 1)
    if decision is None or decision.allowed:
        return None
    return row.outcome("deferred", delay_s=max(1.0, float(decision.retry_after_s)))


def send(row: Claim, ctx: BatchContext) -> Outcome:
    """Send through the provider the route step chose, unless the send could outlive the invocation.
    A provider's fault may move the next attempt to the next config of the route (`routing`)."""
    attempt = row.attempt_count + 1
    choice = routing.chosen(row, ctx)
    try:
        provider = routing.provider_for(choice, ctx)
        if ctx.deadline.remaining_s() < provider.max_send_seconds + GUARD_MARGIN_S:
            return row.outcome("unstarted")
        message = OutgoingMessage.build(
            row.id, row.tenant_id, row.channel, choice.provider, row.payload, attempt
        )
        extra = _audience_headers(row, ctx)  # audience: one-click unsubscribe for non-critical email
        if extra:
            message = dataclasses.replace(message, headers={**message.headers, **extra})
    except PermanentProviderError as exc:  # unknown provider, not configured, invalid payload
        return _permanent(row, attempt, exc, 0, ctx, choice)
    except TransientProviderError as exc:  # e.g. the provider secret could not be fetched
        return _transient(row, attempt, exc, 0, ctx, choice)
    started = ctx.clock()
    try:
        receipt = provider.send(message)
    except TransientProviderError as exc:
        return _transient(row, attempt, exc, _ms(ctx, started), ctx, choice)
    except PermanentProviderError as exc:
        return _permanent(row, attempt, exc, _ms(ctx, started), ctx, choice)
    routing.succeeded(choice, ctx)
    return row.outcome(
        "sent",
        attempt=attempt,
        duration_ms=_ms(ctx, started),
        provider_message_id=receipt.provider_message_id,
        provider_response=receipt.response,
        provider=choice.provider,
        provider_config_id=choice.config_id,
    )


# Before a send starts, the invocation must have this much time left beyond the provider's
# longest send: for recording the outcome.
GUARD_MARGIN_S = 2.0

# ---------------------------------------------------------------- audience (issue 10)
# Suppressions, preferences and quiet hours, decided from what `PgStore.prefetch` read for the whole
# batch (`prefetched["audience"]`, an audience.delivery.AudienceView); without it they pass.


def _audience(ctx: BatchContext) -> Any:
    return ctx.prefetched.get("audience")


def suppression(row: Claim, ctx: BatchContext) -> Outcome | None:
    """A suppressed address → `suppressed`, its reason first in last_error (critical categories
    pass an `unsubscribe` only)."""
    view = _audience(ctx)
    reason = audience_delivery.suppression_reason(view, row) if view is not None else None
    return None if reason is None else row.outcome("suppressed", error=reason)


def preference(row: Claim, ctx: BatchContext) -> Outcome | None:
    """The user turned the category or channel off since ingest → `suppressed`, `preference: ...`."""
    view = _audience(ctx)
    reason = audience_delivery.preference_reason(view, row) if view is not None else None
    return None if reason is None else row.outcome("suppressed", error=reason)


def quiet_hours(row: Claim, ctx: BatchContext) -> Outcome | None:
    """Due inside the user's quiet hours (retries too) → held, `scheduled` until the window ends."""
    view = _audience(ctx)
    if view is None:
        return None
    now = ctx.now()
    until = audience_delivery.held_until(view, row, now)
    if until is None:
        return None
    return row.outcome("held", delay_s=max((until - now).total_seconds(), 1.0))


def _audience_headers(row: Claim, ctx: BatchContext) -> dict[str, str]:
    return audience_delivery.headers(_audience(ctx), row, ctx.settings)


AUDIENCE_STEPS: tuple[Step, ...] = (suppression, preference, quiet_hours)

# The order matters: the first step that decides ends the row. The provider's rate comes before the
# recipient's cap, so that a send deferred for the rate does not use up the recipient's allowance.
# The audience's steps come first: a row they stop takes no rate token and no recipient allowance.
# The route step then picks the provider the rest of the steps work with.
STEPS: tuple[Step, ...] = (*AUDIENCE_STEPS, routing.route, provider_rate, recipient_cap, send)


def run_steps(row: Claim, ctx: BatchContext, steps: tuple[Step, ...] = STEPS) -> Outcome:
    for step in steps:
        outcome = step(row, ctx)
        if outcome is not None:
            return outcome
    raise RuntimeError("no step decided")  # `send` always decides


# ---------------------------------------------------------------- helpers


def _ms(ctx: BatchContext, started: float) -> int:
    return int((ctx.clock() - started) * 1000)


def _limit(ctx: BatchContext, name: str, limit: int, period_s: int) -> Decision | None:
    try:
        return ctx.limiter.check(name, limit, period_s)
    except LimiterUnavailable as exc:
        ctx.warn("send limits unavailable; sending anyway", {"error": str(exc)})
        ctx.metric("RateLimiterUnavailable", 1)
        return None


def _routed(choice: routing.Choice, exc: ProviderError) -> dict[str, Any]:
    """The attempt's provider and config, and whose fault the error was."""
    return {"fault": exc.fault, "provider": choice.provider, "provider_config_id": choice.config_id}


def _failed(
    row: Claim, attempt: int, exc: ProviderError, ms: int, reason: Any, choice: routing.Choice
) -> Outcome:
    return row.outcome(
        "failed",
        attempt=attempt,
        error=str(exc),
        error_code=exc.code,
        duration_ms=ms,
        permanent=reason == "permanent_error",
        ambiguous=reason == "ambiguous",
        # After an ambiguous attempt the provider may have the message: the dead letter must not
        # claim it was not sent, whatever the last attempt's error.
        reason="ambiguous" if row.ambiguous_before else reason,
        **_routed(choice, exc),
    )


def _permanent(
    row: Claim, attempt: int, exc: PermanentProviderError, ms: int, ctx: BatchContext, choice: routing.Choice
) -> Outcome:
    """A permanent error fails the notification, unless it is the provider's fault (its credentials
    or configuration rejected) and the route has another config: then the next attempt goes there."""
    moved = routing.failover(row, ctx, choice, exc)
    if moved is None or attempt >= row.max_attempts:
        return _failed(row, attempt, exc, ms, "permanent_error", choice)
    return row.outcome(
        "retry",
        attempt=attempt,
        error=str(exc),
        error_code=exc.code,
        permanent=True,
        duration_ms=ms,
        delay_s=0.0 if moved.immediate else backoff_seconds(attempt, ctx.settings, None, ctx.jitter),
        **_routed(choice, exc),
    )


def _transient(
    row: Claim,
    attempt: int,
    exc: TransientProviderError,
    ms: int,
    ctx: BatchContext,
    choice: routing.Choice,
) -> Outcome:
    if exc.ambiguous:
        ctx.metric("AmbiguousSends", 1)
        if ctx.settings.ambiguous_sends == "fail":
            return _failed(row, attempt, exc, ms, "ambiguous", choice)
    moved = routing.failover(row, ctx, choice, exc)
    if attempt >= row.max_attempts:
        return _failed(row, attempt, exc, ms, "ambiguous" if exc.ambiguous else "max_attempts", choice)
    # Failing over to a config that has not had its turn goes at once: the other provider need not
    # wait for this one to recover.
    delay = 0.0 if moved is not None and moved.immediate else None
    return row.outcome(
        "retry",
        attempt=attempt,
        error=str(exc),
        error_code=exc.code,
        ambiguous=exc.ambiguous,
        duration_ms=ms,
        delay_s=delay
        if delay is not None
        else backoff_seconds(attempt, ctx.settings, exc.retry_after, ctx.jitter),
        **_routed(choice, exc),
    )
