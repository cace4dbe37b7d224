"""Tenants and API keys. Keys are shown once, stored as sha256 hashes, identified by a prefix."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from . import audit
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
# The "scope" of a route that every valid key may call, whatever its scopes (GET /api/v1/whoami).
ANY_SCOPE = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: UUID
    key_id: UUID
    key_prefix: str
    scopes: frozenset[str]
    rate_limit: int | None

    def require(self, scope: str) -> None:
        if scope != ANY_SCOPE and scope not in self.scopes:
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
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def create_tenant(name: str, actor: audit.Actor | None = audit.SYSTEM) -> UUID:
    """A new tenant. `actor=None` writes no audit event (test and benchmark set-up only)."""
    tenant_id = uuid.uuid4()
    with transaction() as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant_id, name))
        if actor is not None:
            audit.record(conn, tenant_id, actor, "tenant.create", "tenant", tenant_id, {"name": name})
    return tenant_id


def create_api_key(
    tenant_id: UUID,
    name: str = "",
    scopes: tuple[str, ...] = SCOPES,
    rate_limit: int | None = None,
    actor: audit.Actor | None = audit.SYSTEM,
) -> IssuedKey:
    """A new key (its hash stored, the key returned once). `actor=None` writes no audit event (test
    and benchmark set-up only)."""
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
        if actor is not None:
            audit.record(
                conn,
                tenant_id,
                actor,
                "api_key.create",
                "api_key",
                key_id,
                {"name": name, "prefix": prefix, "scopes": list(scopes), "rate_limit": rate_limit},
            )
    return IssuedKey(key_id, tenant_id, prefix, key, tuple(scopes))


def list_api_keys(tenant_id: UUID) -> list[dict[str, Any]]:
    with transaction() as conn:
        return conn.execute(
            "SELECT id, name, prefix, scopes, rate_limit, created_at, last_used_at, revoked_at"
            " FROM api_keys WHERE tenant_id = %s ORDER BY created_at DESC",
            (tenant_id,),
        ).fetchall()


def revoke_api_key(prefix: str, actor: audit.Actor = audit.SYSTEM) -> bool:
    with transaction() as conn:
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL"
            " RETURNING id, tenant_id",
            (prefix,),
        ).fetchone()
        if row is not None:
            audit.record(
                conn, row["tenant_id"], actor, "api_key.revoke", "api_key", row["id"], {"prefix": prefix}
            )
    clear_cache()
    return row is not None


class _Lru:
    """A bounded mapping that forgets its least recently used entry when full (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[float, Principal | None] | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                self._data.move_to_end(key)
            return entry

    def put(self, key: bytes, entry: tuple[float, Principal | None]) -> None:
        with self._lock:
            self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data


# A short in-process cache spares the database one round trip per request; a revoked key stops
# working in this container within API_KEY_CACHE_SECONDS (0 disables the cache). Known keys and
# unknown ones are kept apart, each bounded and least-recently-used first out, so that a flood of
# random keys only cycles the small cache of misses and never pushes out the keys in use.
_cache = _Lru(10_000)
_misses = _Lru(1_000)


def clear_cache() -> None:
    _cache.clear()
    _misses.clear()


def key_from_headers(headers: dict[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    auth = lowered.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return lowered.get("x-api-key", "").strip() or None


def authenticate(key: str | None, before_lookup: Callable[[], None] | None = None) -> Principal:
    """The principal of `key`, from this container's cache or the database. `before_lookup` runs
    before a database lookup and may refuse it by raising (the per-source failure throttle)."""
    if not key:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-Api-Key'")
    if len(key) > 256:  # keys are 46 characters; nothing this long is worth a hash and a query
        raise Unauthorized("the API key is unknown or revoked")
    digest = hash_key(key)
    ttl = get_settings().api_key_cache_seconds
    now = time.monotonic()
    cached = (_cache.get(digest) or _misses.get(digest)) if ttl > 0 else None
    if cached is not None and cached[0] > now:
        principal = cached[1]
    else:
        if before_lookup is not None:
            before_lookup()
        principal = _load_principal(digest)
        if ttl > 0:
            (_cache if principal is not None else _misses).put(digest, (now + ttl, principal))
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked")
    return principal


# `last_used_at` is written by the lookup itself (no extra round trip), and only when it is older than
# this: at most one write per key per interval, however many requests and containers use the key.
LAST_USED_RESOLUTION = "1 minute"


def _load_principal(digest: bytes) -> Principal | None:
    with transaction() as conn:
        row = conn.execute(
            "WITH k AS (SELECT id, tenant_id, prefix, scopes, rate_limit, last_used_at FROM api_keys"
            " WHERE key_hash = %s AND revoked_at IS NULL),"
            " touched AS (UPDATE api_keys SET last_used_at = now() WHERE id IN"
            f" (SELECT id FROM k WHERE last_used_at IS NULL OR last_used_at < now() - interval '{LAST_USED_RESOLUTION}'))"
            " SELECT id, tenant_id, prefix, scopes, rate_limit FROM k",
            (digest,),
        ).fetchone()
    if row is None:
        return None
    return Principal(row["tenant_id"], row["id"], row["prefix"], frozenset(row["scopes"]), row["rate_limit"])
