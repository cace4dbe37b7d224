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
    # queued -> pending: stored as queued while its message travelled, and SQS refused the message
    "queued": frozenset({"sending", "cancelled", "failed", "suppressed", "pending"}),
    "sending": frozenset(
        {"sent", "retrying", "failed", "suppressed", "queued", "sending", "scheduled"}
    ),  # sending: re-claim after the lease expired; scheduled: held for quiet hours (audience)
    "retrying": frozenset({"queued", "sending", "cancelled", "failed", "suppressed"}),
    "sent": frozenset({"delivered", "failed"}),
    "delivered": frozenset(),
    "failed": frozenset({"pending"}),  # a replay from the dead-letter queue (then enqueued as usual)
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


# What follows builds SQL; what it does is pinned by the integration tier against the real database
# (the claim guard, outcomes written only while the claim holds), which `make mutate` does not run.
# Its mutants are therefore left out of the unit-tier mutation score, not hidden in it.
# pragma: no mutate start
def transition(
    conn: psycopg.Connection[Any],
    ids: Sequence[UUID],
    from_states: Iterable[str],
    to_state: str,
    *,
    tenant_id: UUID | None = None,
    sets: dict[str, Any] | None = None,
    where: sql.Composable | None = None,
    where_params: Sequence[Any] = (),
    returning: str = "id",
) -> list[dict[str, Any]]:
    """Move `ids` that are in one of `from_states` to `to_state` in one UPDATE; return the moved rows.

    Rows in any other state are left alone, which makes duplicate deliveries and races harmless.
    `sets` are extra column assignments (values as parameters; sql.SQL values are inlined as-is);
    `where` is an extra condition (e.g. the claim's due-time guard).
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
    conditions: list[sql.Composable] = [sql.SQL("id = ANY(%s)"), sql.SQL("status = ANY(%s)")]
    params += [list(ids), list(states)]
    if tenant_id is not None:
        conditions.append(sql.SQL("tenant_id = %s"))
        params.append(tenant_id)
    if where is not None:
        conditions.append(where)
        params.extend(where_params)
    query = sql.SQL("UPDATE notifications SET {} WHERE {} RETURNING {}").format(
        sql.SQL(", ").join(assignments), sql.SQL(" AND ").join(conditions), sql.SQL(returning)
    )
    return conn.execute(query, params).fetchall()


def apply_outcomes(
    conn: psycopg.Connection[Any],
    from_state: str,
    outcomes: Sequence[tuple[UUID, str, dict[str, Any]]],
    where: dict[str, Any] | None = None,
) -> list[UUID]:
    """Move many rows out of `from_state`, each to its own state with its own column values, in one
    UPDATE (one array per column). `outcomes` holds (id, to_state, columns); every row must set the
    same columns. `where` adds column = value conditions (e.g. the claim that holds the rows). Rows
    no longer in `from_state` (or not matching `where`) are left alone. Returns the ids moved."""
    if not outcomes:
        return []
    for _, to_state, _ in outcomes:
        check([from_state], to_state)
    names = list(outcomes[0][2])
    arrays: list[list[Any]] = [[o[0] for o in outcomes], [o[1] for o in outcomes]]
    arrays += [[o[2][name] for o in outcomes] for name in names]
    types = ["uuid", "text", *(_SQL_TYPES[name] for name in names)]
    conditions = sql.SQL("").join(
        sql.SQL(" AND n.{} = %s").format(sql.Identifier(column)) for column in (where or {})
    )
    query = sql.SQL(
        "UPDATE notifications n SET status = o.status, updated_at = now(){sets}"
        " FROM unnest({arrays}) AS o(id, status{cols})"
        " WHERE n.id = o.id AND n.status = %s{conditions} RETURNING n.id"
    ).format(
        sets=sql.SQL("").join(
            sql.SQL(", {} = o.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in names
        ),
        arrays=sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in types),
        cols=sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(n)) for n in names),
        conditions=conditions,
    )
    params = [*arrays, from_state, *(where or {}).values()]
    return [row["id"] for row in conn.execute(query, params).fetchall()]


# Column types for apply_outcomes' arrays.
_SQL_TYPES = {
    "attempt_count": "int",
    "next_attempt_at": "timestamptz",
    "claimed_until": "timestamptz",
    "claim_id": "uuid",
    "last_error": "text",
    "provider_message_id": "text",
    "provider_response": "jsonb",
    "sent_at": "timestamptz",
    "failed_at": "timestamptz",
    "provider": "text",  # the provider of the latest attempt (provider routes)
}
# pragma: no mutate end
