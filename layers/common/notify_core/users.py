"""Recipients: CRUD, always within the caller's tenant."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from . import audit
from .db import transaction
from .errors import Conflict, NotFound
from .models import User, UserCreate, UserPatch

COLUMNS = "id, email, phone, push_tokens, username, external_id, locale, timezone, created_at, updated_at"


def _conflict(exc: psycopg.errors.UniqueViolation) -> Conflict:
    return Conflict(
        "a user with this external_id already exists",
        [{"field": "external_id", "message": "already used by another user of this tenant"}],
    )


def create_user(tenant_id: UUID, data: UserCreate, actor: audit.Actor = audit.SYSTEM) -> User:
    user_id = uuid.uuid4()
    try:
        with transaction() as conn:
            row = conn.execute(
                f"INSERT INTO users (id, tenant_id, email, phone, push_tokens, username, external_id, locale,"
                f" timezone) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
                (
                    user_id,
                    tenant_id,
                    data.email,
                    data.phone,
                    data.push_tokens,
                    data.username,
                    data.external_id,
                    data.locale,
                    data.timezone,
                ),
            ).fetchone()
            audit.record(
                conn, tenant_id, actor, "user.create", "user", user_id, data.model_dump(exclude_unset=True)
            )
    except psycopg.errors.UniqueViolation as exc:
        raise _conflict(exc) from exc
    assert row is not None
    return User.model_validate(row)


def get_user(tenant_id: UUID, user_id: UUID) -> User:
    with transaction() as conn:
        row = conn.execute(
            f"SELECT {COLUMNS} FROM users WHERE tenant_id = %s AND id = %s", (tenant_id, user_id)
        ).fetchone()
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return User.model_validate(row)


def update_user(tenant_id: UUID, user_id: UUID, patch: UserPatch, actor: audit.Actor = audit.SYSTEM) -> User:
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    if "push_tokens" in changes and changes["push_tokens"] is None:
        changes["push_tokens"] = []
    if not changes:
        return get_user(tenant_id, user_id)
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(column)) for column in changes)
    query = sql.SQL(
        "UPDATE users SET {}, updated_at = now() WHERE tenant_id = %s AND id = %s RETURNING {}"
    ).format(assignments, sql.SQL(COLUMNS))
    try:
        with transaction() as conn:
            row = conn.execute(query, [*changes.values(), tenant_id, user_id]).fetchone()
            if row is not None:
                audit.record(conn, tenant_id, actor, "user.update", "user", user_id, changes)
    except psycopg.errors.UniqueViolation as exc:
        raise _conflict(exc) from exc
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return User.model_validate(row)


def delete_user(tenant_id: UUID, user_id: UUID, actor: audit.Actor = audit.SYSTEM) -> None:
    with transaction() as conn:
        row = conn.execute(
            "DELETE FROM users WHERE tenant_id = %s AND id = %s RETURNING id", (tenant_id, user_id)
        ).fetchone()
        if row is not None:
            audit.record(conn, tenant_id, actor, "user.delete", "user", user_id)
    if row is None:
        raise NotFound(f"user {user_id} not found")


def recipients(
    conn: psycopg.Connection[Any], tenant_id: UUID, user_ids: set[UUID]
) -> dict[UUID, dict[str, Any]]:
    """The tenant's users among `user_ids`, in one query."""
    if not user_ids:
        return {}
    rows = conn.execute(
        "SELECT id, email, phone, push_tokens FROM users WHERE tenant_id = %s AND id = ANY(%s)",
        (tenant_id, list(user_ids)),
    ).fetchall()
    return {row["id"]: row for row in rows}
