"""Provider callbacks: verified events stored once, and what they do.

The provider modules verify and parse (`providers.sendgrid_events`, `providers.twilio_status`);
here, in ONE transaction per callback request:

1. the notifications the events name are read (and row-locked) by id AND tenant, so an event for an
   unknown notification, another tenant's, or one on a channel the provider does not serve is
   acknowledged and ignored;
2. the events are inserted once each (unique on provider + provider event id: a replay inserts
   nothing and does nothing);
3. for each new event: its suppression (`suppressions.add`), its status effect through
   `states.apply_outcomes` (`sent` → `delivered` / `failed`), and the webhook event of that change
   into the outbox.

An effect that arrives while its notification is not yet `sent` (a callback that overtook the
sender's commit) is stored unapplied; `apply_pending` applies it in the transaction that records
the send. The row locks of step 1 make the two meet: whichever commits second sees the other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from .. import pagination, suppressions
from ..channels import CHANNELS
from ..config import get_settings
from ..db import transaction
from ..errors import MalformedRequest, NotFound, ServiceUnavailable, Unauthorized
from ..models import Page
from ..observability import logger, metrics
from ..providers import ProviderSettings, sendgrid_events, serves, twilio_status
from ..providers.events import Malformed, NotConfigured, Parsed, ProviderEvent, Unverified
from ..states import apply_outcomes
from . import outbox

# A notification in one of these has not been sent yet: a status effect waits for it.
NOT_YET_SENT = frozenset({"pending", "scheduled", "queued", "sending", "retrying"})
WEBHOOK_EVENT = {"delivered": "notification.delivered", "failed": "notification.failed"}


class CallbackResult(BaseModel):
    """What a provider callback did: its events, each stored once."""

    received: int = Field(description="Events in the request", examples=[2])
    stored: int = Field(description="Events stored now", examples=[2])
    duplicates: int = Field(description="Events already stored by an earlier delivery of them", examples=[0])
    ignored: int = Field(
        description="Events that do not belong here: kinds not stored, unknown notifications, another"
        " tenant's",
        examples=[0],
    )


class DeliveryEvent(BaseModel):
    id: UUID = Field(description="The stored event's id")
    type: str = Field(
        description="delivered, bounced, dropped, deferred, opened, clicked, complained, undelivered"
    )
    provider: str = Field(examples=["sendgrid"])
    occurred_at: datetime = Field(description="When the provider says it happened")
    received_at: datetime = Field(description="When the platform stored it")
    detail: dict[str, Any] = Field(description="What the provider said: reason, status, url, error code")


def _provider_settings() -> ProviderSettings:
    from .. import clients

    return clients.get("callback-provider-settings", ProviderSettings.from_env)


# ---------------------------------------------------------------- entry points (one per provider)


@contextmanager
def _replies(provider: str) -> Iterator[None]:
    """The provider modules' refusals as the API's errors: unverified 401 (nothing stored),
    verification not configured 503 (the provider retries until it is), malformed 400."""
    try:
        yield
    except Unverified as exc:
        metrics.add_metric(name="CallbacksUnverified", unit="Count", value=1)
        logger.warning("provider callback refused", extra={"provider": provider, "reason": str(exc)})
        raise Unauthorized(f"the {provider} callback could not be verified: {exc}") from None
    except NotConfigured as exc:
        logger.error(
            "provider callbacks cannot be verified", extra={"provider": provider, "reason": str(exc)}
        )
        raise ServiceUnavailable(
            f"{provider} callbacks cannot be verified yet: {exc}", retry_after=60
        ) from None
    except Malformed as exc:
        raise MalformedRequest(str(exc), [{"field": "body", "message": str(exc)}]) from None


def receive_sendgrid(headers: Mapping[str, str], raw: bytes, now: datetime | None = None) -> CallbackResult:
    now = now or datetime.now(UTC)
    with _replies("sendgrid"):
        key = _provider_settings().sendgrid_webhook_public_key
        body = sendgrid_events.verify(headers, raw, key, now, get_settings().callback_max_age_seconds)
        parsed = sendgrid_events.parse(body, now)
    return store(parsed)


def receive_twilio(
    query: Mapping[str, str], headers: Mapping[str, str], raw: bytes, now: datetime | None = None
) -> CallbackResult:
    now = now or datetime.now(UTC)
    with _replies("twilio"):
        notification_id, tenant_id = twilio_status.ids(query)
        try:
            form = twilio_status.read_form(raw)
        except Malformed:  # unreadable, so it cannot be verified either
            raise Unverified("the body is not a form Twilio signed") from None
        token = _provider_settings().twilio_auth_token.get_secret_value()
        twilio_status.verify(get_settings().public_base_url, notification_id, tenant_id, form, headers, token)
        parsed = twilio_status.parse(form, notification_id, tenant_id, now)
    return store(parsed)


# ---------------------------------------------------------------- storing


@dataclass
class _Target:
    id: UUID
    tenant_id: UUID
    channel: str
    provider: str
    address: str | None
    status: str


@dataclass
class _Effect:
    notification_id: UUID
    tenant_id: UUID
    effect: str
    event_type: str
    occurred_at: datetime
    error: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def store(parsed: Parsed) -> CallbackResult:
    """Store verified events once each and apply what they do (one transaction), then enqueue the
    webhooks their changes caused."""
    received = len(parsed.events) + parsed.ignored
    if not parsed.events:
        return CallbackResult(received=received, stored=0, duplicates=0, ignored=parsed.ignored)
    with transaction() as conn:
        targets = _targets(conn, parsed.events)
        mine = [
            e
            for e in parsed.events
            if (t := targets.get(e.notification_id)) is not None
            and t.tenant_id == e.tenant_id
            and serves(e.provider, t.channel)
        ]
        new = _insert(conn, mine, targets)
        for event in new:
            target = targets[event.notification_id]
            if event.suppression and target.address:
                suppressions.add(
                    conn,
                    target.tenant_id,
                    target.channel,
                    target.address,
                    event.suppression,
                    notification_id=target.id,
                    note=f"{event.provider} {event.type}",
                )
        effects = [
            _Effect(e.notification_id, e.tenant_id, e.effect, e.type, e.occurred_at, e.error)
            for e in new
            if e.effect and targets[e.notification_id].status not in NOT_YET_SENT
        ]
        rows = outbox.emit(conn, apply_effects(conn, effects, targets))
    outbox.enqueue(rows)
    return CallbackResult(
        received=received,
        stored=len(new),
        duplicates=len(mine) - len(new),
        ignored=parsed.ignored + len(parsed.events) - len(mine),
    )


def _targets(conn: Any, events: Sequence[ProviderEvent]) -> dict[UUID, _Target]:
    pairs = {(e.notification_id, e.tenant_id) for e in events}
    ids, tenants = [p[0] for p in pairs], [p[1] for p in pairs]
    rows = conn.execute(
        "SELECT n.id, n.tenant_id, n.channel, n.provider, n.payload, n.status FROM notifications n"
        " JOIN unnest(%s::uuid[], %s::uuid[]) AS k(id, tenant_id) ON n.id = k.id AND n.tenant_id = k.tenant_id"
        " ORDER BY n.id FOR NO KEY UPDATE OF n",
        (ids, tenants),
    ).fetchall()
    return {
        r["id"]: _Target(
            r["id"],
            r["tenant_id"],
            r["channel"],
            r["provider"],
            CHANNELS[r["channel"]].recipient(r["payload"]),
            r["status"],
        )
        for r in rows
    }


def _insert(
    conn: Any, events: Sequence[ProviderEvent], targets: Mapping[UUID, _Target]
) -> list[ProviderEvent]:
    """Insert once each; returns the events that were new (in their order)."""
    if not events:
        return []
    by_key = {(e.provider, e.event_id): e for e in events}
    unique = list(by_key.values())
    rows = conn.execute(
        "INSERT INTO delivery_events (id, tenant_id, notification_id, provider, provider_event_id, type,"
        " occurred_at, detail, effect, applied)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[],"
        " %s::timestamptz[], %s::jsonb[], %s::text[], %s::bool[])"
        " ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING provider, provider_event_id",
        [
            [uuid.uuid4() for _ in unique],
            [e.tenant_id for e in unique],
            [e.notification_id for e in unique],
            [e.provider for e in unique],
            [e.event_id for e in unique],
            [e.type for e in unique],
            [e.occurred_at for e in unique],
            [json.dumps({**e.detail, **({"error": e.error} if e.error else {})}) for e in unique],
            [e.effect for e in unique],
            [not (e.effect and targets[e.notification_id].status in NOT_YET_SENT) for e in unique],
        ],
    ).fetchall()
    inserted = {(r["provider"], r["provider_event_id"]) for r in rows}
    return [e for e in unique if (e.provider, e.event_id) in inserted]


def apply_effects(
    conn: Any, effects: Iterable[_Effect], targets: Mapping[UUID, _Target] | None = None
) -> list[outbox.Event]:
    """Move `sent` notifications to `delivered` / `failed` (the earliest effect per notification
    wins, as if the events had come one by one); returns the webhook events of the moves."""
    first: dict[UUID, _Effect] = {}
    for effect in sorted(effects, key=lambda e: e.occurred_at):
        first.setdefault(effect.notification_id, effect)
    if not first:
        return []
    now = datetime.now(UTC)
    changes = [
        (
            e.notification_id,
            e.effect,
            {
                "failed_at": now if e.effect == "failed" else None,
                "last_error": e.error if e.effect == "failed" else None,
            },
        )
        for e in first.values()
    ]
    moved = set(apply_outcomes(conn, "sent", changes))
    events = []
    for e in first.values():
        if e.notification_id not in moved:
            continue
        target = (targets or {}).get(e.notification_id)
        data: dict[str, Any] = {
            "id": str(e.notification_id),
            "status": e.effect,
            "provider_event": e.event_type,
            "occurred_at": e.occurred_at.isoformat(),
        }
        if target is not None:
            data |= {"channel": target.channel, "provider": target.provider}
        if e.error:
            data["error"] = e.error
        events.append(outbox.Event(e.tenant_id, WEBHOOK_EVENT[e.effect], data | e.extra))
    return events


def apply_pending(conn: Any, sent: Sequence[UUID]) -> list[outbox.Event]:
    """In the transaction that records sends: the effects of callbacks that arrived before them."""
    if not sent:
        return []
    rows = conn.execute(
        "UPDATE delivery_events SET applied = true WHERE notification_id = ANY(%s) AND NOT applied"
        " RETURNING notification_id, tenant_id, effect, type, occurred_at, detail->>'error' AS error",
        (list(sent),),
    ).fetchall()
    effects = [
        _Effect(r["notification_id"], r["tenant_id"], r["effect"], r["type"], r["occurred_at"], r["error"])
        for r in rows
        if r["effect"]
    ]
    return apply_effects(conn, effects)


# ---------------------------------------------------------------- reading

COLUMNS = "id, type, provider, occurred_at, created_at, detail"


def list_page(
    tenant_id: UUID, notification_id: UUID, *, limit: int = 20, cursor: str | None = None
) -> Page[DeliveryEvent]:
    """What providers reported about one notification, newest first."""
    rows, next_cursor = pagination.fetch_page(
        "delivery_events",
        COLUMNS,
        ["tenant_id = %s", "notification_id = %s"],
        [tenant_id, notification_id],
        limit,
        cursor,
    )
    if not rows and cursor is None:
        with transaction() as conn:
            found = conn.execute(
                "SELECT 1 FROM notifications WHERE tenant_id = %s AND id = %s", (tenant_id, notification_id)
            ).fetchone()
        if found is None:
            raise NotFound(f"notification {notification_id} not found")
    return Page[DeliveryEvent](
        data=[
            DeliveryEvent(
                id=r["id"],
                type=r["type"],
                provider=r["provider"],
                occurred_at=r["occurred_at"],
                received_at=r["created_at"],
                detail=r["detail"],
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )
