"""The audit log: who changed what, written in the same transaction as the change.

Every mutating API call and CLI command calls `record(conn, ...)` inside the transaction that makes
the change, so a change and its audit event commit or roll back together. Secrets never reach the
log: fields named like a secret are replaced by "[redacted]" at any depth, and callers pass only
the fields that changed. Sends are not audited here: a notification's own row, attempts and
events are its record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from . import pagination
from .models import Page

ActorType = Literal["api_key", "cli", "system"]

# Field names whose values are never logged, whatever their nesting.
SECRET_WORDS = ("secret", "password", "token", "credential", "api_key", "auth", "private_key", "key_hash")
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an API key (by its prefix, never the key), the operator CLI, or the system."""

    type: ActorType
    prefix: str | None = None
    request_id: str | None = None

    @classmethod
    def api_key(cls, prefix: str, request_id: str | None = None) -> Actor:
        return cls("api_key", prefix, request_id)


CLI = Actor("cli")
SYSTEM = Actor("system")


def redact(value: Any) -> Any:
    """`value` with every secret-named field replaced, at any depth."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def record(
    conn: Any,
    tenant_id: UUID,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: Any,
    changes: Mapping[str, Any] | None = None,
) -> None:
    """One audit event, inside the caller's transaction."""
    conn.execute(
        "INSERT INTO audit_events (id, tenant_id, actor_type, actor_prefix, action, target_type, target_id,"
        " request_id, changes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
        (
            uuid.uuid4(),
            tenant_id,
            actor.type,
            actor.prefix,
            action,
            target_type,
            None if target_id is None else str(target_id),
            actor.request_id,
            json.dumps(redact(dict(changes or {})), default=str),
        ),
    )


class AuditEvent(BaseModel):
    id: UUID
    at: datetime = Field(description="When the change committed")
    actor: dict[str, str | None] = Field(
        description="type: api_key, cli or system; prefix: the API key's prefix (never the key)",
        examples=[{"type": "api_key", "prefix": "nk_1a2b3c4d"}],
    )
    action: str = Field(description="<resource>.<verb>", examples=["api_key.revoke"])
    target: dict[str, str | None] = Field(examples=[{"type": "api_key", "id": "8f14e45f-..."}])
    request_id: str | None = Field(description="API Gateway's request id of the call that made the change")
    changes: dict[str, Any] = Field(description="The fields that changed; secrets never appear")


COLUMNS = "id, created_at, actor_type, actor_prefix, action, target_type, target_id, request_id, changes"


def list_page(
    tenant_id: UUID,
    *,
    limit: int = 20,
    cursor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    actor: str | None = None,
) -> Page[AuditEvent]:
    """Newest first; `actor` is an API key prefix, or `cli` / `system`."""
    where: list[str] = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    for column, value in (("action", action), ("target_type", target_type), ("target_id", target_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if actor is not None:
        where.append("(actor_prefix = %s OR (actor_prefix IS NULL AND actor_type = %s))")
        params += [actor, actor]
    rows, next_cursor = pagination.fetch_page("audit_events", COLUMNS, where, params, limit, cursor)
    return Page[AuditEvent](
        data=[
            AuditEvent(
                id=r["id"],
                at=r["created_at"],
                actor={"type": r["actor_type"], "prefix": r["actor_prefix"]},
                action=r["action"],
                target={"type": r["target_type"], "id": r["target_id"]},
                request_id=r["request_id"],
                changes=r["changes"],
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )
