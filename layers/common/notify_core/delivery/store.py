"""The engine's PostgreSQL and Redis: claiming rows, recording outcomes, taking rate tokens."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg import sql

from ..audience import delivery as audience_delivery
from ..db import transaction
from ..dead_letters import record_dead_letters
from ..integrations import outbox, recording
from ..states import apply_outcomes, transition
from . import routing
from .engine import Claimed
from .outcomes import Outcome, columns
from .steps import Claim, LimiterUnavailable

if TYPE_CHECKING:
    from ..ratelimit import Decision

CLAIMABLE = ("pending", "queued", "retrying")
DUE_SKEW = timedelta(seconds=2)  # SQS delays and the database clock may disagree by this much
RACED_DELAY_S = 1.0  # a message whose row became visible only after the claim: back this soon
CLAIM_COLUMNS = (
    "id, tenant_id, user_id, channel, provider, payload, attempt_count, max_attempts, last_error,"
    " category,"  # audience (issue 10)
    # an earlier attempt's answer was lost (looked up only for rows that have had an attempt)
    " (attempt_count > 0 AND EXISTS (SELECT 1 FROM notification_attempts a"
    " WHERE a.notification_id = notifications.id AND a.outcome = 'ambiguous')) AS ambiguous_before"
)
# A row may be claimed when it is waiting (pending, queued, retrying) and due, or when it is
# `sending` under a lease that expired (its sender died). A `pending` row is always due: it was
# stored for sending now, and its next_attempt_at is only the sweeper's grace.
CLAIM_GUARD = sql.SQL(
    "(status <> 'sending' OR claimed_until < now())"
    " AND (status = 'pending' OR next_attempt_at IS NULL OR next_attempt_at <= %s)"
)


class PgStore:
    def claim(self, ids: Sequence[UUID], claim_id: UUID, lease_until: datetime) -> Claimed:
        """Claim every due row among `ids` in one UPDATE. Rows that are claimable but not due
        yet are reported as `early`, so that their message can be put back with the remaining delay."""
        now = datetime.now(UTC)
        with transaction() as conn:
            rows = transition(
                conn,
                list(ids),
                [*CLAIMABLE, "sending"],
                "sending",
                sets={"claimed_until": lease_until, "claim_id": claim_id},
                where=CLAIM_GUARD,
                where_params=[now + DUE_SKEW],
                returning=CLAIM_COLUMNS,
            )
            claimed = Claimed(rows={row["id"]: Claim(**row) for row in rows})
            missing = [i for i in ids if i not in claimed.rows]
            if missing:  # rare: duplicates, cancelled or sent rows, early messages, unborn rows
                found = conn.execute(
                    "SELECT id, tenant_id, status, next_attempt_at FROM notifications WHERE id = ANY(%s)",
                    (missing,),
                ).fetchall()
                claimed.absent = set(missing) - {row["id"] for row in found}
                for row in found:
                    due = row["next_attempt_at"]
                    if row["status"] in ("queued", "retrying") and due is not None and due > now + DUE_SKEW:
                        claimed.early[row["id"]] = (
                            row["tenant_id"],
                            row["status"],
                            (due - now).total_seconds(),
                        )
                    elif row["status"] in CLAIMABLE:
                        # Claimable and due, yet the UPDATE did not see it: its ingest committed
                        # between the UPDATE and this SELECT (READ COMMITTED takes a snapshot per
                        # statement). Dropping the message would strand the row; put it back briefly.
                        claimed.early[row["id"]] = (row["tenant_id"], row["status"], RACED_DELAY_S)
        return claimed

    def prefetch(self, rows: Sequence[Claim]) -> dict[str, Any]:
        """What the steps need for the whole batch, in a constant number of queries: the audience's
        (issue 10: categories, users' preferences and quiet hours, suppressions) and the provider
        routes' (issue 12: the batch's routes, cached per container, and its routed rows' attempt
        history)."""
        with transaction() as conn:
            return {"audience": audience_delivery.prefetch(conn, rows), **routing.prefetch(conn, rows)}

    def record(self, claim_id: UUID, outcomes: Sequence[Outcome], rows: dict[UUID, Claim]) -> set[UUID]:
        """One transaction: the notifications' new states (one UPDATE, only rows this claim still
        holds), then, for the rows that moved, their attempts and dead letters (one INSERT each)."""
        now = datetime.now(UTC)
        changes = []
        for o in outcomes:
            row = rows[o.notification_id]
            values = columns(o, row.attempt_count, row.last_error, now)
            values["provider"] = o.provider or row.provider  # the provider of the latest attempt (routing)
            if values["provider_response"] is not None:
                values["provider_response"] = json.dumps(values["provider_response"])
            changes.append((o.notification_id, o.rule.status or "", values))
        letters: list[dict[str, Any]] = []
        with transaction() as conn:
            moved = set(apply_outcomes(conn, "sending", changes, where={"claim_id": claim_id}))
            if not moved:
                return moved
            with conn.pipeline():
                attempts = [o for o in outcomes if o.rule.attempt and o.notification_id in moved]
                if attempts:
                    _insert_attempts(conn, attempts)
                dead = [o for o in outcomes if o.rule.dead_letter and o.notification_id in moved]
                if dead:
                    letters = record_dead_letters(
                        conn, [(o.notification_id, o.reason or "permanent_error", o.error) for o in dead]
                    )
            # --- feedback: dead push tokens, callbacks that came first, webhook events (outbox)
            webhooks = recording.after_outcomes(conn, outcomes, rows, moved, letters)
        outbox.enqueue(webhooks)
        return moved


def _insert_attempts(conn: Any, attempts: Sequence[Outcome]) -> None:
    conn.execute(
        "INSERT INTO notification_attempts (notification_id, tenant_id, attempt_number, provider, outcome,"
        " error, error_code, provider_message_id, duration_ms, provider_config_id, fault)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::int[], %s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::int[], %s::uuid[], %s::text[])",
        [
            [o.notification_id for o in attempts],
            [o.tenant_id for o in attempts],
            [o.attempt for o in attempts],
            [o.provider for o in attempts],
            [o.attempt_outcome for o in attempts],
            [o.error for o in attempts],
            [o.error_code for o in attempts],
            [o.provider_message_id for o in attempts],
            [o.duration_ms for o in attempts],
            [o.provider_config_id for o in attempts],
            [o.fault if o.kind != "sent" else None for o in attempts],
        ],
    )


class RedisLimiter:
    """The steps' limiter over ratelimit's GCRA script; Redis trouble → LimiterUnavailable. The
    redis client is imported on the first check: without limits configured (the default) the
    sender never talks to Redis, and its cold start does not pay for the import."""

    def check(self, name: str, limit: int, period_s: int) -> Decision:
        from .. import ratelimit

        try:
            return ratelimit.check(name, limit, period_s)
        except ratelimit.RedisUnavailable as exc:
            raise LimiterUnavailable(str(exc)) from exc
