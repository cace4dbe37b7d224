"""What the delivery engine's outcome recording adds for feedback, inside its one transaction
(`delivery.store.PgStore.record` calls `after_outcomes` after moving the rows):

* a push that failed because its token is dead (FCM `UNREGISTERED`, `fcm.is_token_invalid`): the
  token leaves the user's `push_tokens` and gets an `invalid_token` suppression;
* sends recorded now whose provider callback came first: that callback's effect (`apply_pending`);
* the webhook events: each moved outcome's `Rule.event` (the outcome table names them), the
  effects just applied, and `dlq.created` for each new dead letter, written to the outbox.

It returns the outbox rows; the caller enqueues them after the commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from .. import suppressions
from ..delivery.outcomes import Outcome
from ..delivery.steps import Claim
from ..providers.fcm import is_token_invalid
from . import callbacks, outbox


def outcome_event(outcome: Outcome, row: Claim) -> outbox.Event | None:
    event = outcome.rule.event
    if event is None:
        return None
    data: dict[str, Any] = {
        "id": str(outcome.notification_id),
        "status": outcome.rule.status,
        "channel": outcome.channel or row.channel,
        "provider": outcome.provider or row.provider,
        "attempt": outcome.attempt or row.attempt_count,
    }
    if row.user_id is not None:
        data["user_id"] = str(row.user_id)
    if outcome.provider_message_id:
        data["provider_message_id"] = outcome.provider_message_id
    if outcome.error and outcome.kind != "sent":
        data["error"] = outcome.error
    return outbox.Event(outcome.tenant_id, event, data)


def forget_dead_tokens(conn: Any, failed: Sequence[tuple[Outcome, Claim]]) -> None:
    for outcome, row in failed:
        token = row.payload.get("token")
        if row.channel != "push" or not token or not is_token_invalid(outcome.error_code):
            continue
        suppressions.add(
            conn, row.tenant_id, "push", str(token), "invalid_token", notification_id=row.id, note="fcm"
        )
        if row.user_id is not None:
            conn.execute(
                "UPDATE users SET push_tokens = array_remove(push_tokens, %s), updated_at = now()"
                " WHERE tenant_id = %s AND id = %s AND %s = ANY(push_tokens)",
                (token, row.tenant_id, row.user_id, token),
            )


def after_outcomes(
    conn: Any,
    outcomes: Sequence[Outcome],
    rows: Mapping[UUID, Claim],
    moved: set[UUID],
    letters: Sequence[Mapping[str, Any]] = (),
) -> list[outbox.Pending]:
    recorded = [(o, rows[o.notification_id]) for o in outcomes if o.notification_id in moved]
    forget_dead_tokens(conn, [(o, r) for o, r in recorded if o.rule.status == "failed"])
    events = [e for o, r in recorded if (e := outcome_event(o, r)) is not None]
    events += callbacks.apply_pending(
        conn, [o.notification_id for o, _ in recorded if o.rule.status == "sent"]
    )
    for letter in letters:
        events.append(
            outbox.Event(
                letter["tenant_id"],
                "dlq.created",
                {
                    "id": str(letter["id"]),
                    "notification_id": str(letter["notification_id"]),
                    "reason": letter["reason"],
                    "error": letter.get("last_error"),
                },
            )
        )
    return outbox.emit(conn, events)
