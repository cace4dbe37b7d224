from __future__ import annotations

import os
import threading
import uuid

import psycopg
from psycopg import sql

from notify_core import db


def test_migrations_run_once_even_when_raced() -> None:
    admin = os.environ["NOTIFY_TEST_PG"]
    name = f"notify_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    try:
        results: list[list[str]] = []
        threads = [threading.Thread(target=lambda: results.append(db.migrate(url))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        applied = [r for r in results if r]
        assert len(results) == 3 and len(applied) == 1  # one applied, the others waited and found nothing
        assert applied[0][0] == "0001_foundation"
        assert db.migrate(url) == []
        with psycopg.connect(url) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
            tables = {
                r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
        assert versions == applied[0]
        assert {
            "tenants",
            "api_keys",
            "users",
            "notifications",
            "notification_attempts",
            "notification_dlq",
        } <= tables
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
