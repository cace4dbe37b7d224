"""The delivery engine's audience steps: what they read for a batch, and what they decide (pure).

`prefetch` reads, for a whole batch and in a constant number of queries (one round trip), the
categories of its rows (critical or not), its users' preferences, quiet hours and time zones, and
the suppressions of its addresses. The steps (`delivery.steps`: suppression, preference,
quiet_hours) then decide per row from that view alone:

* a suppressed address ends `suppressed`, the reason first in last_error (`hard_bounce: ...`);
  critical categories pass an `unsubscribe` suppression only;
* a category or channel the user has since turned off ends `suppressed` (`preference: ...`);
* a non-critical notification due inside the user's quiet hours is held: `scheduled` until the
  window ends (outcome `held`), retries included; never dropped.

Non-critical email also gets RFC 8058's List-Unsubscribe headers at send time (`headers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from .. import suppressions
from ..channels import CHANNELS
from ..config import Settings
from . import preferences, quiet_hours, unsubscribe


@dataclass
class AudienceView:
    critical: set[tuple[UUID, str]] = field(default_factory=set)  # (tenant, category) of critical ones
    users: dict[UUID, Mapping[str, Any]] = field(default_factory=dict)  # preferences + timezone
    suppressed: dict[tuple[UUID, str, str], set[str]] = field(default_factory=dict)

    def is_critical(self, tenant_id: UUID, category: str | None) -> bool:
        return category is not None and (tenant_id, category) in self.critical


# pragma: no mutate start
# (SQL: pinned by the integration tier, which counts its statements per batch)
def prefetch(conn: Any, rows: Sequence[Any]) -> AudienceView:
    """Three queries whatever the batch's size, sent in one round trip."""
    pairs = sorted({(str(r.tenant_id), r.category) for r in rows if r.category})
    user_ids = sorted({r.user_id for r in rows if r.user_id}, key=str)
    keys = [
        (r.tenant_id, r.channel, address)
        for r in rows
        if (address := CHANNELS[r.channel].recipient(r.payload))
    ]
    view = AudienceView()
    with conn.pipeline():
        critical = conn.execute(
            "SELECT c.tenant_id, c.key FROM categories c"
            " JOIN unnest(%s::uuid[], %s::text[]) AS k(tenant_id, key) USING (tenant_id, key)"
            " WHERE c.critical",
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        )
        users = conn.execute(
            "SELECT u.id, u.timezone, p.channels, p.categories, p.quiet_hours FROM users u"
            " JOIN user_preferences p ON p.user_id = u.id WHERE u.id = ANY(%s)",
            (user_ids,),
        )
        found = suppressions.lookup(conn, keys) if keys else {}
        view.critical = {(r["tenant_id"], r["key"]) for r in critical.fetchall()}
        view.users = {r["id"]: r for r in users.fetchall()}
    view.suppressed = found
    return view


# ---------------------------------------------------------------- decisions (pure)


# pragma: no mutate end


def suppression_reason(view: AudienceView, row: Any) -> str | None:
    address = CHANNELS[row.channel].recipient(row.payload)
    if not address:
        return None
    reasons = view.suppressed.get((row.tenant_id, row.channel, suppressions.normalize(row.channel, address)))
    blocking = suppressions.blocks(reasons or (), view.is_critical(row.tenant_id, row.category))
    return None if blocking is None else f"{blocking}: the address is suppressed"


def preference_reason(view: AudienceView, row: Any) -> str | None:
    user = view.users.get(row.user_id) if row.user_id else None
    if user is None or preferences.allowed(
        user, row.category, row.channel, view.is_critical(row.tenant_id, row.category)
    ):
        return None
    return preferences.blocked_reason(row.category, row.channel)


def held_until(view: AudienceView, row: Any, now: datetime) -> datetime | None:
    user = view.users.get(row.user_id) if row.user_id else None
    if user is None or view.is_critical(row.tenant_id, row.category):
        return None
    return quiet_hours.hold_until(preferences.window_of(user), quiet_hours.zone_of(user.get("timezone")), now)


def headers(view: AudienceView | None, row: Any, settings: Settings) -> dict[str, str]:
    """List-Unsubscribe and List-Unsubscribe-Post for a non-critical email; nothing otherwise."""
    if row.channel != "email":
        return {}
    if view is not None and view.is_critical(row.tenant_id, row.category):
        return {}
    address = CHANNELS["email"].recipient(row.payload)
    if not address:
        return {}
    return unsubscribe.headers(settings, row.tenant_id, row.user_id, address, row.category)
