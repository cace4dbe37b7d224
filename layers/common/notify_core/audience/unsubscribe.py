"""One-click unsubscribe (RFC 8058): signed, expiring links in every non-critical email.

The sender adds `List-Unsubscribe: <PUBLIC_BASE_URL/u/{token}>` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (`headers`). The token is
`base64url(claims).base64url(HMAC-SHA256(key, claims))`: the tenant, the user (or the address, for a
notification without a user), the category and an expiry (UNSUBSCRIBE_TOKEN_DAYS), signed with
UNSUBSCRIBE_SIGNING_SECRET. `POST /u/{token}` needs no API key: the signature is the authority, and
the tenant comes from what it verified. It turns the category off on email for the user; without a
category or a user it suppresses the address (`unsubscribe`, which critical categories bypass).
`GET /u/{token}` shows a minimal page (no external assets, a strict CSP) with the one-click form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from .. import audit, suppressions
from ..config import Settings
from ..db import transaction
from ..errors import NotFound
from . import preferences

MAX_TOKEN_CHARS = 2048
VERSION = 1


@dataclass(frozen=True, slots=True)
class Claims:
    tenant_id: UUID
    user_id: UUID | None
    address: str | None  # when there is no user
    category: str | None
    expires: int  # epoch seconds


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: Claims, key: bytes) -> str:
    body = json.dumps(
        [
            VERSION,
            str(claims.tenant_id),
            str(claims.user_id) if claims.user_id else None,
            None if claims.user_id else claims.address,
            claims.category,
            claims.expires,
        ],
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


class InvalidToken(NotFound):
    """An unsubscribe link that is forged, damaged or expired: answered as a missing resource."""


def verify(token: str, key: bytes, now: float | None = None) -> Claims:
    invalid = InvalidToken(
        "this unsubscribe link is not valid", [{"field": "token", "message": "not a valid unsubscribe link"}]
    )
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1 or not token.isascii():
        raise invalid
    body_text, mac_text = token.split(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except ValueError:
        raise invalid from None
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise invalid
    try:
        version, tenant, user, address, category, expires = json.loads(body)
        claims = Claims(UUID(tenant), UUID(user) if user else None, address, category, int(expires))
    except (ValueError, TypeError):  # signed by us, so only a format change can get here
        raise invalid from None
    if version != VERSION:
        raise invalid
    if claims.expires < (time.time() if now is None else now):
        raise InvalidToken(
            "this unsubscribe link has expired",
            [{"field": "token", "message": "expired; use the link of a more recent email"}],
        )
    return claims


def headers(
    settings: Settings,
    tenant_id: UUID,
    user_id: UUID | None,
    address: str,
    category: str | None,
    now: float | None = None,
) -> dict[str, str]:
    """RFC 8058's two headers for one email."""
    expires = int((time.time() if now is None else now) + settings.unsubscribe_token_days * 86400)
    token = sign(Claims(tenant_id, user_id, address, category, expires), settings.unsubscribe_key())
    url = f"{settings.public_base_url.rstrip('/')}/u/{token}"
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


class Unsubscribed(BaseModel):
    """What a one-click unsubscribe did (or, for GET, would do)."""

    done: bool = Field(description="false for GET: nothing changed yet")
    scope: str = Field(description="'category' (one category off on email) or 'address' (all but critical)")
    category: str | None
    email: str | None = Field(description="The address, masked: a***@example.com")


def describe(claims: Claims, done: bool) -> Unsubscribed:
    return Unsubscribed(
        done=done,
        scope="category" if claims.category and claims.user_id else "address",
        category=claims.category,
        email=_mask(claims.address),
    )


def _mask(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def apply(claims: Claims) -> Unsubscribed:
    """Turn the category off on email for the user; without a user or a category (or once the user
    is gone), suppress the address for reason `unsubscribe`. Idempotent; audited as the system."""
    with transaction() as conn:
        done = False
        if claims.user_id and claims.category:
            done = preferences.turn_off_email(
                conn, claims.tenant_id, claims.user_id, claims.category, audit.SYSTEM
            )
        if not done:
            address = claims.address or _user_email(conn, claims)
            if address is None:
                raise InvalidToken(
                    "this unsubscribe link's recipient no longer exists",
                    [{"field": "token", "message": "the recipient was deleted"}],
                )
            suppressions.create_row(
                conn, claims.tenant_id, "email", address, "unsubscribe", audit.SYSTEM, note="one-click"
            )
    return describe(claims, done=True)


def _user_email(conn: Any, claims: Claims) -> str | None:
    if claims.user_id is None:
        return None
    row = conn.execute(
        "SELECT email FROM users WHERE tenant_id = %s AND id = %s", (claims.tenant_id, claims.user_id)
    ).fetchone()
    return row["email"] if row else None


# ---------------------------------------------------------------- the page

STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "button{font:inherit;padding:.5rem 1rem;border:1px solid #444;border-radius:4px;background:#fff;cursor:pointer}"
)
_STYLE_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() + "'"
# Nothing loads from anywhere; the form may post only back to this page's own URL.
POLICY = f"default-src 'none'; style-src {_STYLE_HASH}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"


def page(title: str, text: str, form: bool) -> str:
    button = (
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
        if form
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{button}</body></html>\n"
    )


def confirmation_page(info: Unsubscribed) -> str:
    who = f" ({info.email})" if info.email else ""
    if info.done:
        what = (
            f"You will no longer get {info.category} emails"
            if info.scope == "category"
            else ("You will no longer get these emails")
        )
        return page("Unsubscribed", f"{what}{who}.", form=False)
    what = f"Stop {info.category} emails" if info.scope == "category" else "Stop these emails"
    return page("Unsubscribe", f"{what}{who}? One click below; nothing else is needed.", form=True)
