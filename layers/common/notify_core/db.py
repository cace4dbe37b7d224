"""PostgreSQL access: one lazily created pool per container, transactions, migrations.

Works directly, through RDS Proxy and through PgBouncer in transaction pooling, where consecutive
transactions of one connection may run on different server sessions. So: no server-side prepared
statements (``prepare_threshold=None``), and no session state: nothing is SET on a connection (a SET
outside a transaction would stay on whichever server session ran it, and RDS Proxy pins a session
that issues one). Timestamps are ``timestamptz`` and come back as aware datetimes whatever the
session's TimeZone; transaction-scoped settings use ``SET LOCAL``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from . import clients
from .config import get_settings
from .errors import DatabaseUnavailable

MIGRATION_LOCK_ID = 0x6E6F7469  # "noti": advisory lock key for migrations

Pool = ConnectionPool[psycopg.Connection[dict[str, Any]]]


def _connect_options(settings: Any) -> dict[str, Any]:
    """No session state (PgBouncer in transaction pooling hands a session's connection to others):
    no server-side prepared statements, no SET. The statement timeout travels as a startup option
    (DB_STATEMENT_TIMEOUT_MS; 0 leaves it to the server or the pooler, e.g. PgBouncer's
    query_timeout, for poolers that refuse startup options)."""
    options: dict[str, Any] = {
        "row_factory": dict_row,
        "prepare_threshold": None,
        "connect_timeout": settings.db_connect_timeout_seconds,
    }
    if settings.db_statement_timeout_ms:
        options["options"] = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    return options


def _build_pool() -> Pool:
    """Bounded everywhere, so that a database outage turns into a quick, clear error rather than a
    request that hangs until API Gateway gives up: connecting (DB_CONNECT_TIMEOUT_SECONDS), waiting
    for a free connection (DB_POOL_TIMEOUT_SECONDS) and each statement (DB_STATEMENT_TIMEOUT_MS)."""
    settings = get_settings()
    return ConnectionPool(
        settings.resolved_database_url(),
        min_size=1,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_pool_timeout_seconds,
        kwargs=_connect_options(settings),
        check=ConnectionPool.check_connection,
        reconnect_timeout=60,
        open=True,
        name="notify",
    )


def get_pool() -> Pool:
    """The container's pool, created on first use (not at import, so tests can point it anywhere)."""
    return clients.get("postgres", _build_pool, lambda pool: pool.close())


def close_pool() -> None:
    clients.forget("postgres")


@contextmanager
def transaction() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection inside one transaction: committed on success, rolled back on error.

    A database that cannot be reached, a pool with no free connection within its timeout, or a
    statement cut by the statement timeout raise `DatabaseUnavailable` (HTTP 503 with Retry-After):
    the caller may retry; nothing was committed."""
    try:
        with get_pool().connection() as conn:
            yield conn
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise DatabaseUnavailable(
            "the database is unavailable; retry shortly", retry_after=RETRY_AFTER_SECONDS
        ) from exc


RETRY_AFTER_SECONDS = 5


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
