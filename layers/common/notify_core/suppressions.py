"""Suppressed addresses: per tenant, channel and normalized address, with a reason.

Written by provider callbacks (hard bounce, complaint, SMS STOP, dead push token), by one-click
unsubscribe and by people (manual); read by ingest and by the delivery engine (one query per
batch: `lookup`). Every reason blocks every send to the address, except `unsubscribe`, which a
critical category bypasses (`blocks`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Literal
from uuid import UUID

Reason = Literal["hard_bounce", "complaint", "sms_stop", "invalid_token", "unsubscribe", "manual"]
REASONS: tuple[Reason, ...] = (
    "hard_bounce",
    "complaint",
    "sms_stop",
    "invalid_token",
    "unsubscribe",
    "manual",
)
# What a critical category may still send through.
BYPASSED_BY_CRITICAL: frozenset[str] = frozenset({"unsubscribe"})

Key = tuple[UUID, str, str]  # (tenant, channel, normalized address)


def normalize(channel: str, address: str) -> str:
    """The form an address is stored and matched in: lower-cased email, E.164 phone without
    separators, push token as given (surrounding space removed)."""
    text = address.strip()
    if channel == "email":
        return text.lower()
    if channel == "sms":
        return "".join(ch for ch in text if ch == "+" or ch.isdigit())
    return text


def blocks(reasons: Iterable[str], critical: bool) -> str | None:
    """The reason a send is blocked, or None. Critical categories bypass `unsubscribe` only."""
    for reason in sorted(reasons):
        if not (critical and reason in BYPASSED_BY_CRITICAL):
            return reason
    return None


# pragma: no mutate start
# (SQL: pinned by the integration tier, tests/integration/test_suppressions_store.py)
def add(
    conn: Any,
    tenant_id: UUID,
    channel: str,
    address: str,
    reason: Reason,
    *,
    notification_id: UUID | None = None,
    note: str | None = None,
) -> UUID | None:
    """Suppress an address (inside the caller's transaction); None if it already was, for this reason."""
    row = conn.execute(
        "INSERT INTO suppressions (id, tenant_id, channel, address, reason, notification_id, note)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, channel, address, reason) DO NOTHING RETURNING id",
        (uuid.uuid4(), tenant_id, channel, normalize(channel, address), reason, notification_id, note),
    ).fetchone()
    return None if row is None else row["id"]


def lookup(conn: Any, keys: Iterable[Key]) -> dict[Key, set[str]]:
    """The reasons each of `keys` is suppressed for, in one query (addresses normalized here)."""
    wanted = {(t, c, normalize(c, a)) for t, c, a in keys}
    if not wanted:
        return {}
    tenants, channels, addresses = (list(column) for column in zip(*wanted, strict=True))
    rows = conn.execute(
        "SELECT s.tenant_id, s.channel, s.address, s.reason FROM suppressions s"
        " JOIN unnest(%s::uuid[], %s::text[], %s::text[]) AS k(tenant_id, channel, address)"
        " USING (tenant_id, channel, address)",
        (tenants, channels, addresses),
    ).fetchall()
    found: dict[Key, set[str]] = {}
    for row in rows:
        found.setdefault((row["tenant_id"], row["channel"], row["address"]), set()).add(row["reason"])
    return found


# ---------------------------------------------------------------- audience (issue 10): the API's side
# List, create and lift, each change audited in its own transaction (the routes under
# /api/v1/suppressions); one-click unsubscribe writes through `create_row`.

COLUMNS = "id, channel, address, reason, notification_id, note, created_at"


def create_row(
    conn: Any,
    tenant_id: UUID,
    channel: str,
    address: str,
    reason: Reason,
    actor: Any,
    *,
    note: str | None = None,
) -> dict[str, Any] | None:
    """Suppress an address and audit it, inside the caller's transaction; None if it already was."""
    from . import audit

    row = conn.execute(
        "INSERT INTO suppressions (id, tenant_id, channel, address, reason, note)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (tenant_id, channel, address, reason) DO NOTHING RETURNING {COLUMNS}",
        (uuid.uuid4(), tenant_id, channel, normalize(channel, address), reason, note),
    ).fetchone()
    if row is not None:
        audit.record(
            conn,
            tenant_id,
            actor,
            "suppression.create",
            "suppression",
            row["id"],
            {"channel": channel, "address": row["address"], "reason": reason},
        )
    return row


def create(tenant_id: UUID, channel: str, address: str, reason: Reason, actor: Any, note: str | None) -> Any:
    from .db import transaction
    from .errors import Conflict

    with transaction() as conn:
        row = create_row(conn, tenant_id, channel, address, reason, actor, note=note)
    if row is None:
        raise Conflict(
            "this address is already suppressed for this reason",
            [{"field": "address", "message": f"already suppressed on {channel} ({reason})"}],
        )
    return row


def list_page(
    tenant_id: UUID,
    *,
    limit: int = 20,
    cursor: str | None = None,
    channel: str | None = None,
    reason: str | None = None,
    address: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; `address` matches its normalized form (on `channel`, or on any channel)."""
    from . import pagination

    where: list[str] = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    for column, value in (("channel", channel), ("reason", reason)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if address is not None:
        forms = sorted({normalize(c, address) for c in ([channel] if channel else ["email", "sms", "push"])})
        where.append("address = ANY(%s)")
        params.append(forms)
    return pagination.fetch_page("suppressions", COLUMNS, where, params, limit, cursor)


def lift(tenant_id: UUID, suppression_id: UUID, actor: Any) -> None:
    from . import audit
    from .db import transaction
    from .errors import NotFound

    with transaction() as conn:
        row = conn.execute(
            "DELETE FROM suppressions WHERE tenant_id = %s AND id = %s RETURNING channel, address, reason",
            (tenant_id, suppression_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"suppression {suppression_id} not found")
        audit.record(conn, tenant_id, actor, "suppression.delete", "suppression", suppression_id, dict(row))


# pragma: no mutate end
