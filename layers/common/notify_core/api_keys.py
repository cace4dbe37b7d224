"""API keys over HTTP: create (the key shown once), list, revoke — within the caller's tenant.

A key can only hand out what it holds: the scopes asked for must be among the creating key's own
(else 403, naming the missing ones), and its rate limit at most the creating key's. Revocation takes
effect at once in the container that revoked and within API_KEY_CACHE_SECONDS everywhere else (each
container caches a key lookup that long). Every change is audited in its own transaction; the key
itself never reaches the database, a log or the audit log (only its prefix and hash).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from . import audit, auth, pagination
from .auth import Principal
from .config import get_settings
from .db import transaction
from .errors import Forbidden, NotFound, ValidationFailed
from .fields import Short, StrictInt
from .models import Page, Strict

Scope = Annotated[str, Field(max_length=64, examples=["notifications:write"])]


class ApiKeyCreate(Strict):
    """A new key for the caller's tenant, with some of the caller's scopes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "ci", "scopes": ["notifications:read", "notifications:write"], "rate_limit": 100}
            ]
        }
    )

    name: Short = Field(description="What the key is for")
    scopes: list[Scope] = Field(
        min_length=1, max_length=len(auth.SCOPES), description="Each among the caller's"
    )
    rate_limit: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="Requests per window; at most the caller's own (default: the stage's)"
    )


class ApiKey(BaseModel):
    id: UUID
    name: str
    prefix: str = Field(description="Identifies the key in lists and logs; not enough to authenticate")
    scopes: list[str]
    rate_limit: int | None
    created_at: datetime
    last_used_at: datetime | None = Field(description="Kept to the minute")
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    key: str | None = Field(
        description="The key, shown this once; null when the reply is a replay of an idempotent create",
        examples=["nk_1a2b3c4d_..."],
    )


COLUMNS = "id, name, prefix, scopes, rate_limit, created_at, last_used_at, revoked_at"


def create(caller: Principal, data: ApiKeyCreate, actor: audit.Actor) -> tuple[ApiKey, str]:
    """The new key's record and the key itself (to show once)."""
    scopes = list(dict.fromkeys(data.scopes))
    unknown = sorted(set(scopes) - set(auth.SCOPES))
    if unknown:
        raise ValidationFailed(
            f"unknown scopes {unknown}",
            [{"field": "scopes", "message": f"unknown scopes {unknown}; known: {list(auth.SCOPES)}"}],
        )
    missing = sorted(set(scopes) - caller.scopes)
    if missing:
        raise Forbidden(
            f"a key can only grant scopes it holds itself; this key lacks {missing}",
            [{"field": "scopes", "message": f"not held by the creating key: {', '.join(missing)}"}],
        )
    own = caller.rate_limit or get_settings().rate_limit_requests
    if data.rate_limit is not None and data.rate_limit > own:
        raise Forbidden(
            f"a key can only grant a rate limit up to its own ({own})",
            [{"field": "rate_limit", "message": f"at most {own}"}],
        )
    issued = auth.create_api_key(caller.tenant_id, data.name, tuple(scopes), data.rate_limit, actor=actor)
    return get(caller.tenant_id, issued.id), issued.key


def get(tenant_id: UUID, key_id: UUID) -> ApiKey:
    with transaction() as conn:
        row = conn.execute(
            f"SELECT {COLUMNS} FROM api_keys WHERE tenant_id = %s AND id = %s", (tenant_id, key_id)
        ).fetchone()
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return ApiKey.model_validate(row)


def list_page(
    tenant_id: UUID, *, limit: int = 20, cursor: str | None = None, revoked: bool = False
) -> Page[ApiKey]:
    where = ["tenant_id = %s"] + ([] if revoked else ["revoked_at IS NULL"])
    rows, next_cursor = pagination.fetch_page("api_keys", COLUMNS, where, [tenant_id], limit, cursor)
    return Page[ApiKey](data=[ApiKey.model_validate(r) for r in rows], next_cursor=next_cursor)


def revoke(tenant_id: UUID, key_id: UUID, actor: audit.Actor) -> None:
    """Revoke (idempotent: a revoked key stays revoked, without a second audit event)."""
    with transaction() as conn:
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = %s AND id = %s AND revoked_at IS NULL"
            " RETURNING prefix",
            (tenant_id, key_id),
        ).fetchone()
        if row is None:
            exists = conn.execute(
                "SELECT 1 FROM api_keys WHERE tenant_id = %s AND id = %s", (tenant_id, key_id)
            ).fetchone()
            if exists is None:
                raise NotFound(f"API key {key_id} not found")
            return
        audit.record(conn, tenant_id, actor, "api_key.revoke", "api_key", key_id, {"prefix": row["prefix"]})
    auth.clear_cache()


# ---------------------------------------------------------------- who am I (the console, issue 14)


class WhoAmI(BaseModel):
    tenant_id: UUID
    tenant_name: str
    key_id: UUID
    key_prefix: str = Field(description="The calling key's prefix")
    scopes: list[str] = Field(
        description="What this key may do, sorted", examples=[["dlq:read", "metrics:read"]]
    )
    rate_limit: int = Field(description="Requests per window for this key")
    rate_limit_window_seconds: int


def whoami(caller: Principal) -> WhoAmI:
    """The calling key's tenant and scopes: what a client (the console) may offer."""
    with transaction() as conn:
        row = conn.execute("SELECT name FROM tenants WHERE id = %s", (caller.tenant_id,)).fetchone()
    if row is None:  # the key's tenant went away between the gate and here
        raise NotFound(f"tenant {caller.tenant_id} not found")
    settings = get_settings()
    return WhoAmI(
        tenant_id=caller.tenant_id,
        tenant_name=row["name"],
        key_id=caller.key_id,
        key_prefix=caller.key_prefix,
        scopes=sorted(caller.scopes),
        rate_limit=caller.rate_limit or settings.rate_limit_requests,
        rate_limit_window_seconds=settings.rate_limit_window_seconds,
    )
