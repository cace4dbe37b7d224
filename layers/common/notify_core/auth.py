"""Tenants and API keys. Keys are shown once, stored as sha256 hashes, identified by a prefix."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from .config import get_settings
from .db import transaction
from .errors import Forbidden, NotFound, Unauthorized, ValidationFailed

SCOPES = (
    "users:read",
    "users:write",
    "notifications:read",
    "notifications:write",
    "dlq:read",
    "dlq:write",
    # v1.1
    "templates:read",
    "templates:write",
    "preferences:read",
    "preferences:write",
    "messages:write",
    "suppressions:read",
    "suppressions:write",
    "webhooks:read",
    "webhooks:write",
    "keys:admin",
    "audit:read",
    "metrics:read",
    "providers:admin",
)
KEY_PREFIX = "nk_"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: UUID
    key_id: UUID
    key_prefix: str
    scopes: frozenset[str]
    rate_limit: int | None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the scope {scope!r}", [{"field": "scope", "message": scope}])


@dataclass(frozen=True, slots=True)
class IssuedKey:
    id: UUID
    tenant_id: UUID
    prefix: str
    key: str  # the only time the whole key exists outside the client
    scopes: tuple[str, ...]


def hash_key(key: str) -> bytes:
    # API keys carry 190 bits of randomness, so a fast hash is safe (no password stretching needed).
    return hashlib.sha256(key.encode()).digest()


def create_tenant(name: str) -> UUID:
    tenant_id = uuid.uuid4()
    with transaction() as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant_id, name))
    return tenant_id


def create_api_key(
    tenant_id: UUID, name: str = "", scopes: tuple[str, ...] = SCOPES, rate_limit: int | None = None
) -> IssuedKey:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValidationFailed.field("scopes", f"unknown scopes {unknown}; known: {list(SCOPES)}")
    prefix = KEY_PREFIX + secrets.token_hex(4)
    key = f"{prefix}_{secrets.token_urlsafe(24)}"
    key_id = uuid.uuid4()
    with transaction() as conn:
        if conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,)).fetchone() is None:
            raise NotFound(f"tenant {tenant_id} does not exist")
        conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, rate_limit)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (key_id, tenant_id, name, prefix, hash_key(key), list(scopes), rate_limit),
        )
    return IssuedKey(key_id, tenant_id, prefix, key, tuple(scopes))


def list_api_keys(tenant_id: UUID) -> list[dict[str, Any]]:
    with transaction() as conn:
        return conn.execute(
            "SELECT id, name, prefix, scopes, rate_limit, created_at, last_used_at, revoked_at"
            " FROM api_keys WHERE tenant_id = %s ORDER BY created_at DESC",
            (tenant_id,),
        ).fetchall()


def revoke_api_key(prefix: str) -> bool:
    with transaction() as conn:
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL RETURNING id",
            (prefix,),
        ).fetchone()
    _cache.clear()
    return row is not None


# A short in-process cache spares the database one round trip per request; a revoked key stops
# working in this container within API_KEY_CACHE_SECONDS (0 disables the cache).
_cache: dict[bytes, tuple[float, Principal | None]] = {}
_cache_lock = threading.Lock()


def key_from_headers(headers: dict[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    auth = lowered.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return lowered.get("x-api-key", "").strip() or None


def authenticate(key: str | None) -> Principal:
    if not key:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-Api-Key'")
    digest = hash_key(key)
    ttl = get_settings().api_key_cache_seconds
    now = time.monotonic()
    cached = _cache.get(digest) if ttl > 0 else None
    if cached is not None and cached[0] > now:
        principal = cached[1]
    else:
        principal = _load_principal(digest)
        if ttl > 0:
            with _cache_lock:
                if len(_cache) > 10_000:
                    _cache.clear()
                _cache[digest] = (now + ttl, principal)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    return principal


def _load_principal(digest: bytes) -> Principal | None:
    with transaction() as conn:
        row = conn.execute(
            "SELECT id, tenant_id, prefix, scopes, rate_limit FROM api_keys"
            " WHERE key_hash = %s AND revoked_at IS NULL",
            (digest,),
        ).fetchone()
    if row is None:
        return None
    return Principal(row["tenant_id"], row["id"], row["prefix"], frozenset(row["scopes"]), row["rate_limit"])
