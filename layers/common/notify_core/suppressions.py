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


# pragma: no mutate end
