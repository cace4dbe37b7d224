"""The engine's PostgreSQL and Redis: claiming rows, recording outcomes, taking rate tokens."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import sql

from .. import ratelimit
from ..db import transaction
from ..dead_letters import record_dead_letters
from ..states import apply_outcomes, transition
from .engine import Claimed
from .outcomes import Outcome, columns
from .steps import Claim, LimiterUnavailable

CLAIMABLE = ("pending", "queued", "retrying")
DUE_SKEW = timedelta(seconds=2)  # SQS delays and the database clock may disagree by this much
CLAIM_COLUMNS = (
    "id, tenant_id, user_id, channel, provider, payload, attempt_count, max_attempts, last_error,"
    " EXISTS (SELECT 1 FROM notification_attempts a WHERE a.notification_id = notifications.id"
    " AND a.outcome = 'ambiguous') AS ambiguous_before"
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
            if missing:  # rare: duplicates, cancelled or sent rows, early delayed messages
                for row in conn.execute(
                    "SELECT id, tenant_id, status, next_attempt_at FROM notifications"
                    " WHERE id = ANY(%s) AND status IN ('queued', 'retrying') AND next_attempt_at > %s",
                    (missing, now + DUE_SKEW),
                ).fetchall():
                    left = (row["next_attempt_at"] - now).total_seconds()
                    claimed.early[row["id"]] = (row["tenant_id"], row["status"], left)
        return claimed

    def prefetch(self, rows: Sequence[Claim]) -> dict[str, Any]:
        return {}

    def record(self, claim_id: UUID, outcomes: Sequence[Outcome], rows: dict[UUID, Claim]) -> set[UUID]:
        """One transaction: the notifications' new states (one UPDATE, only rows this claim still
        holds), then, for the rows that moved, their attempts and dead letters (one INSERT each)."""
        now = datetime.now(UTC)
        changes = []
        for o in outcomes:
            row = rows[o.notification_id]
            values = columns(o, row.attempt_count, row.last_error, now)
            if values["provider_response"] is not None:
                values["provider_response"] = json.dumps(values["provider_response"])
            changes.append((o.notification_id, o.rule.status or "", values))
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
                    record_dead_letters(
                        conn, [(o.notification_id, o.reason or "permanent_error", o.error) for o in dead]
                    )
        return moved


def _insert_attempts(conn: Any, attempts: Sequence[Outcome]) -> None:
    conn.execute(
        "INSERT INTO notification_attempts (notification_id, tenant_id, attempt_number, provider, outcome,"
        " error, error_code, provider_message_id, duration_ms)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::int[], %s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::int[])",
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
        ],
    )


class RedisLimiter:
    """The steps' limiter over ratelimit's GCRA script; Redis trouble → LimiterUnavailable."""

    def check(self, name: str, limit: int, period_s: int) -> ratelimit.Decision:
        try:
            return ratelimit.check(name, limit, period_s)
        except ratelimit.RedisUnavailable as exc:
            raise LimiterUnavailable(str(exc)) from exc
