"""What can happen to a claimed notification, as data: one table maps each outcome kind to the
status the row takes, whether an attempt is counted, whether it becomes a dead letter, goes back
on the queue or is reported to SQS as failed, the metric it counts and the webhook event it emits.
Recording outcomes is one loop over this table (`store.PgStore.record`, `engine.Recorder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

Kind = Literal[
    "sent",
    "retry",
    "failed",
    "suppressed",
    "deferred",
    "unstarted",
    "released",
    "skipped",
    "early",
    "unborn",
    "held",  # audience (issue 10)
]


@dataclass(frozen=True, slots=True)
class Rule:
    status: str | None  # the state the row moves to from `sending`; None: the row is not touched
    attempt: bool = False  # an attempt was made: counted, and an attempt row written
    dead_letter: bool = False
    requeue: bool = False  # back on the queue now with its delay (retries due after 15 min: the sweeper)
    report_failure: bool = False  # the SQS record is reported in batchItemFailures (SQS redelivers it)
    metric: str | None = None
    event: str | None = None  # the webhook event the change emits


OUTCOMES: dict[Kind, Rule] = {
    # the provider took it
    "sent": Rule("sent", attempt=True, metric="NotificationsSent", event="notification.sent"),
    # a transient error with attempts left: again after the backoff
    "retry": Rule("retrying", attempt=True, requeue=True, metric="NotificationsRetried"),
    # a permanent error, or the attempts are spent: a dead letter
    "failed": Rule(
        "failed",
        attempt=True,
        dead_letter=True,
        metric="NotificationsFailed",
        event="notification.failed",
    ),
    # a step decided it must not be sent (recipient cap, suppression, preference)
    "suppressed": Rule("suppressed", metric="NotificationsSuppressed", event="notification.suppressed"),
    # over the provider's send rate: later, without counting an attempt
    "deferred": Rule("retrying", requeue=True, metric="SendsDeferred"),
    # not started before the invocation's deadline: the claim is given back at once
    "unstarted": Rule("retrying", requeue=True, metric="SendsNotStarted"),
    # an unexpected error (a bug, infrastructure): the claim is given back and SQS redelivers
    "released": Rule("queued", report_failure=True, metric="SendsReleased"),
    # not claimable: already sent, cancelled, claimed by another invocation, a duplicate record
    "skipped": Rule(None),
    # claimable but not due (a delayed message that arrived early): back with the remaining delay
    "early": Rule(None, requeue=True),
    # no row yet (the message overtook its ingest's commit): back on the queue for a moment
    "unborn": Rule(None, requeue=True, metric="MessagesBeforeTheirRow"),
    # audience (issue 10): due inside the user's quiet hours: `scheduled` until the window ends
    # (back on the queue with the delay when it ends within 15 minutes, else for the sweeper)
    "held": Rule("scheduled", requeue=True, metric="NotificationsHeld"),
}

# Dead-letter reasons, and the attempt outcomes stored per attempt.
DeadLetterReason = Literal["permanent_error", "max_attempts", "ambiguous"]
AttemptOutcome = Literal["sent", "transient_error", "permanent_error", "ambiguous"]


@dataclass
class Outcome:
    kind: Kind
    notification_id: UUID
    tenant_id: UUID
    status: str = "sending"  # the state the row is in (for `early`: queued or retrying)
    attempt: int = 0  # the attempt's number, for kinds that count one
    channel: str = ""
    provider: str = ""
    error: str | None = None
    error_code: str | None = None
    ambiguous: bool = False  # the provider may have accepted it (see providers.base)
    permanent: bool = False
    delay_s: float = 0.0
    duration_ms: int = 0
    provider_message_id: str | None = None
    provider_response: dict[str, Any] | None = None
    reason: DeadLetterReason | None = None
    cause: BaseException | None = field(default=None, repr=False)  # for `released`
    # provider routes (delivery.routing): the tenant's config the attempt went through (None: the
    # deployment's provider), and whose fault a failure was (`provider` or `recipient`)
    provider_config_id: UUID | None = None
    fault: str | None = None
    first_sent_at: float | None = None  # `unborn`: when the row's first message was sent

    @property
    def rule(self) -> Rule:
        return OUTCOMES[self.kind]

    @property
    def attempt_outcome(self) -> AttemptOutcome:
        if self.kind == "sent":
            return "sent"
        if self.ambiguous:
            return "ambiguous"
        return "permanent_error" if self.permanent else "transient_error"


def columns(outcome: Outcome, attempt_count: int, last_error: str | None, now: datetime) -> dict[str, Any]:
    """The notification's columns after `outcome`, derived from its rule (every outcome sets the
    same columns, so that one UPDATE writes a whole group)."""
    rule = outcome.rule
    sent = rule.status == "sent"
    return {
        "attempt_count": outcome.attempt if rule.attempt else attempt_count,
        "next_attempt_at": (
            now + timedelta(seconds=outcome.delay_s) if rule.status in ("retrying", "scheduled") else None
        ),
        "claimed_until": None,
        "claim_id": None,
        "last_error": None if sent else (outcome.error or last_error),
        "provider_message_id": outcome.provider_message_id if sent else None,
        "provider_response": outcome.provider_response if sent else None,
        "sent_at": now if sent else None,
        "failed_at": now if rule.status == "failed" else None,
    }
