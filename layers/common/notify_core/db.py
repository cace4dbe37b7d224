"""PostgreSQL access: one lazily created pool per container, transactions, migrations.

Works directly, through RDS Proxy and through PgBouncer in transaction pooling, where consecutive
transactions of one connection may run on different server sessions. So: no server-side prepared
statements (``prepare_threshold=None``), and no session state: nothing is SET on a connection (a SET
outside a transaction would stay on whichever server session ran it, and RDS Proxy pins a session
that issues one). Timestamps are ``timestamptz`` and come back as aware datetimes whatever the
session's TimeZone; transaction-scoped settings use ``SET LOCAL``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .config import get_settings

MIGRATION_LOCK_ID = 0x6E6F7469  # "noti": advisory lock key for migrations

_pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] | None = None
_pool_lock = threading.Lock()


def get_pool() -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
    """The container's pool, created on first use (not at import, so tests can point it anywhere)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                settings = get_settings()
                _pool = ConnectionPool(
                    settings.resolved_database_url(),
                    min_size=1,
                    max_size=settings.db_pool_max_size,
                    kwargs={"row_factory": dict_row, "prepare_threshold": None},
                    check=ConnectionPool.check_connection,
                    open=True,
                    name="notify",
                )
    return _pool


def close_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


@contextmanager
def transaction() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection inside one transaction: committed on success, rolled back on error."""
    with get_pool().connection() as conn:
        yield conn


def ping() -> bool:
    with transaction() as conn:
        return conn.execute("SELECT 1 AS ok").fetchone() is not None


def _migration_files() -> list[tuple[str, str]]:
    folder = resources.files("notify_core") / "migrations"
    files = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text(encoding="utf-8")) for name in files]


def migrate(url: str | None = None) -> list[str]:
    """Apply pending migrations in order, each in the one transaction, under an advisory lock.

    Safe to run twice and from two processes at once: the second waits for the lock, then finds
    nothing to do. Returns the versions applied by this call.
    """
    dsn = url or get_settings().resolved_database_url()
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=False, prepare_threshold=None) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in _migration_files():
            if version in done:
                continue
            conn.execute(sql.encode())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
        conn.commit()
    return applied
