"""Categories: what a notification is about. `critical` ones bypass preferences and quiet hours (and
the `unsubscribe` suppression, never a hard one); `default_channels` are a message's channels when
the message names none."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import audit, pagination
from ..db import transaction
from ..errors import Conflict
from ..fields import Short, Slug, StrictBool
from ..models import Channel, Page

COLUMNS = "id, key, name, critical, default_channels, created_at, updated_at"


class CategoryCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"key": "orders", "name": "Orders", "critical": False, "default_channels": ["push", "email"]}
            ]
        },
    )

    key: Slug = Field(description="Lower-case slug, unique per tenant", examples=["orders"])
    name: Short = Field(examples=["Orders"])
    critical: StrictBool = Field(
        default=False,
        description="Bypasses preferences and quiet hours (and an unsubscribe, never a hard suppression)",
    )
    default_channels: list[Channel] = Field(
        default_factory=list, max_length=3, description="A message's channels, in order, when it names none"
    )

    @field_validator("default_channels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value


class Category(BaseModel):
    id: UUID
    key: str
    name: str
    critical: bool
    default_channels: list[Channel]
    created_at: datetime
    updated_at: datetime


def create(tenant_id: UUID, data: CategoryCreate, actor: audit.Actor) -> Category:
    try:
        with transaction() as conn:
            row = conn.execute(
                f"INSERT INTO categories (id, tenant_id, key, name, critical, default_channels)"
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
                (uuid.uuid4(), tenant_id, data.key, data.name, data.critical, data.default_channels),
            ).fetchone()
            assert row is not None
            audit.record(conn, tenant_id, actor, "category.create", "category", data.key, data.model_dump())
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(
            f"a category with key {data.key!r} already exists",
            [{"field": "key", "message": "already used by another category of this tenant"}],
        ) from exc
    return Category.model_validate(row)


def list_page(tenant_id: UUID, *, limit: int = 20, cursor: str | None = None) -> Page[Category]:
    rows, next_cursor = pagination.fetch_page(
        "categories", COLUMNS, ["tenant_id = %s"], [tenant_id], limit, cursor
    )
    return Page[Category](data=[Category.model_validate(r) for r in rows], next_cursor=next_cursor)


def lookup(conn: Any, tenant_id: UUID, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The tenant's categories among `keys`, in one query."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT key, critical, default_channels FROM categories WHERE tenant_id = %s AND key = ANY(%s)",
        (tenant_id, wanted),
    ).fetchall()
    return {r["key"]: r for r in rows}
