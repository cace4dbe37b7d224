"""The notification state machine: every status change goes through `transition`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

TERMINAL = frozenset({"sent", "delivered", "failed", "cancelled", "suppressed"})

ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"queued", "sending", "cancelled", "failed"}),
    "scheduled": frozenset({"queued", "pending", "cancelled", "failed"}),
    "queued": frozenset({"sending", "cancelled", "failed", "suppressed"}),
    "sending": frozenset({"sent", "retrying", "failed", "suppressed", "queued"}),
    "retrying": frozenset({"queued", "sending", "cancelled", "failed", "suppressed"}),
    "sent": frozenset({"delivered", "failed"}),
    "delivered": frozenset(),
    "failed": frozenset({"queued"}),  # a replay from the dead-letter queue
    "cancelled": frozenset(),
    "suppressed": frozenset(),
}


class IllegalTransition(ValueError):
    pass


def check(from_states: Iterable[str], to_state: str) -> tuple[str, ...]:
    states = tuple(from_states)
    bad = [s for s in states if to_state not in ALLOWED[s]]
    if bad:
        raise IllegalTransition(f"{bad} -> {to_state} is not allowed")
    return states


def transition(
    conn: psycopg.Connection[Any],
    ids: Sequence[UUID],
    from_states: Iterable[str],
    to_state: str,
    *,
    tenant_id: UUID | None = None,
    sets: dict[str, Any] | None = None,
    returning: str = "id",
) -> list[dict[str, Any]]:
    """Move `ids` that are in one of `from_states` to `to_state` in one UPDATE; return the moved rows.

    Rows in any other state are left alone, which makes duplicate deliveries and races harmless.
    `sets` are extra column assignments (values as parameters; sql.SQL values are inlined as-is).
    """
    states = check(from_states, to_state)
    assignments: list[sql.Composable] = [sql.SQL("status = %s, updated_at = now()")]
    params: list[Any] = [to_state]
    for column, value in (sets or {}).items():
        if isinstance(value, sql.Composable):
            assignments.append(sql.SQL("{} = {}").format(sql.Identifier(column), value))
        else:
            assignments.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    where = [sql.SQL("id = ANY(%s)"), sql.SQL("status = ANY(%s)")]
    params += [list(ids), list(states)]
    if tenant_id is not None:
        where.append(sql.SQL("tenant_id = %s"))
        params.append(tenant_id)
    query = sql.SQL("UPDATE notifications SET {} WHERE {} RETURNING {}").format(
        sql.SQL(", ").join(assignments), sql.SQL(" AND ").join(where), sql.SQL(returning)
    )
    return conn.execute(query, params).fetchall()
