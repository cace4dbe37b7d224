"""SendGrid's Event Webhook: what SendGrid's callbacks mean, on the provider side.

SendGrid POSTs a JSON array of events, signed with ECDSA (P-256, SHA-256) over the timestamp header
followed by the raw body; the verification key is the base64 DER public key SendGrid shows in its
settings (SENDGRID_WEBHOOK_PUBLIC_KEY). `verify` checks it with the SDK's `EventWebhook` helper and
refuses a timestamp more than CALLBACK_MAX_AGE_SECONDS away; `parse` maps each event to a
`ProviderEvent`. Our sends carry `custom_args` notification_id and tenant_id, which SendGrid puts
on every event as top-level fields: that is how an event finds its notification.

| SendGrid event            | stored as  | notification | suppression |
|---------------------------|------------|--------------|-------------|
| delivered                 | delivered  | → delivered  |             |
| bounce (type bounce)      | bounced    | → failed     | hard_bounce |
| bounce (type blocked)     | bounced    | → failed     |             |
| dropped                   | dropped    | → failed     | hard_bounce |
| deferred                  | deferred   |              |             |
| open / click              | opened / clicked |        |             |
| spamreport                | complained |              | complaint   |
| processed, unsubscribes…  | not stored (acknowledged)               |
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .. import jsontext
from .events import Malformed, NotConfigured, Parsed, ProviderEvent, Unverified, instant, text, uuid_or_none

NAME = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_EVENT_ID = 300


@functools.lru_cache(maxsize=4)
def _public_key(key: str) -> Any:
    from sendgrid.helpers.eventwebhook import EventWebhook

    try:
        return EventWebhook().convert_public_key_to_ecdsa(key)
    except (ValueError, TypeError) as exc:
        raise NotConfigured("SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid base64 DER public key") from exc


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def verify(headers: Mapping[str, str], raw: bytes, public_key: str, now: datetime, max_age_s: int) -> str:
    """The body as text when SendGrid signed it within `max_age_s` of `now`; Unverified otherwise."""
    signature, timestamp = _header(headers, SIGNATURE_HEADER), _header(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise Unverified("the event webhook signature or timestamp header is missing")
    if not public_key:
        raise NotConfigured("SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
    key = _public_key(public_key.strip())
    if not timestamp.isascii() or not timestamp.strip().isdigit() or len(timestamp) > 12:
        raise Unverified("the event webhook timestamp is not a unix time")
    age = now.timestamp() - int(timestamp)
    if math.fabs(age) > max_age_s:
        raise Unverified(f"the event webhook timestamp is {int(age)} s away from now (at most {max_age_s})")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unverified("the body is not UTF-8, as SendGrid sends it") from None
    from sendgrid.helpers.eventwebhook import EventWebhook

    try:
        ok = EventWebhook().verify_signature(body, signature, timestamp, key)
    except (ValueError, TypeError):  # binascii.Error is a ValueError: the signature is not base64
        ok = False
    if not ok:
        raise Unverified("the event webhook signature does not match")
    return body


def _event(item: dict[str, Any], now: datetime) -> ProviderEvent | None:
    kind = item.get("event")
    event_id = item.get("sg_event_id")
    notification_id = uuid_or_none(item.get("notification_id"))
    tenant_id = uuid_or_none(item.get("tenant_id"))
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID:
        return None
    if notification_id is None or tenant_id is None:
        return None  # not one of our sends (or sent without custom_args)
    detail = {
        k: v
        for k, v in {
            "event": text(kind, 50),
            "reason": text(item.get("reason")),
            "status": text(item.get("status"), 50),
            "response": text(item.get("response")),
            "bounce_type": text(item.get("type"), 50),
            "url": text(item.get("url"), 2048),
            "attempt": text(item.get("attempt"), 10),
            "sg_message_id": text(item.get("sg_message_id"), 200),
        }.items()
        if v is not None
    }
    common: dict[str, Any] = {
        "provider": NAME,
        "event_id": event_id,
        "notification_id": notification_id,
        "tenant_id": tenant_id,
        "occurred_at": instant(item.get("timestamp"), now),
        "detail": detail,
    }
    reason = detail.get("reason") or detail.get("response")
    if kind == "delivered":
        return ProviderEvent(type="delivered", effect="delivered", **common)
    if kind == "bounce":
        blocked = item.get("type") == "blocked"
        return ProviderEvent(
            type="bounced",
            effect="failed",
            suppression=None if blocked else "hard_bounce",
            error=f"{'blocked' if blocked else 'bounced'}: {reason or 'no reason given'}",
            **common,
        )
    if kind == "dropped":
        return ProviderEvent(
            type="dropped",
            effect="failed",
            suppression="hard_bounce",
            error=f"dropped: {reason or 'no reason given'}",
            **common,
        )
    if kind == "deferred":
        return ProviderEvent(type="deferred", **common)
    if kind == "open":
        return ProviderEvent(type="opened", **common)
    if kind == "click":
        return ProviderEvent(type="clicked", **common)
    if kind == "spamreport":
        return ProviderEvent(type="complained", suppression="complaint", **common)
    return None  # processed, unsubscribe, group_(un|re)subscribe, or a kind we do not know


def parse(body: str, now: datetime) -> Parsed:
    """A verified body: a JSON array of event objects (400 for anything else). Items that are not
    ours or not kinds we store are counted as ignored."""
    try:
        items = jsontext.loads(body)
    except jsontext.JsonTextError as exc:
        raise Malformed(f"the body is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise Malformed("the body must be a JSON array of events")
    parsed = Parsed()
    for item in items:
        event = _event(item, now) if isinstance(item, dict) else None
        if event is None:
            parsed.ignored += 1
        else:
            parsed.events.append(event)
    return parsed
