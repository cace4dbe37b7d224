"""What a transaction-pooling proxy (PgBouncer, RDS Proxy) needs from the database code: no
server-side prepared statements and no reliance on session state. `make test-pgbouncer` runs the
whole suite through PgBouncer in transaction mode; these tests hold the rules in every mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from notify_core import db
from notify_local import services
from notify_local.sandbox import reset_clients

from .conftest import Api, ServiceEnv


@pytest.fixture
def new_york_sessions(test_env: ServiceEnv) -> Iterator[None]:
    """New sessions of the worker's database start with TimeZone America/New_York."""
    name = str(psycopg.conninfo.conninfo_to_dict(test_env.database_url)["dbname"])
    with psycopg.connect(test_env.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET timezone TO 'America/New_York'").format(sql.Identifier(name))
        )
    _drop_server_sessions(name)
    reset_clients()
    yield
    with psycopg.connect(test_env.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RESET timezone").format(sql.Identifier(name)))
    _drop_server_sessions(name)
    reset_clients()


def _drop_server_sessions(dbname: str) -> None:
    """Behind PgBouncer, make the next transactions run on new server sessions."""
    pooler = os.environ.get("NOTIFY_TEST_POOLER")
    if pooler:
        services.pgbouncer_command(pooler, f"RECONNECT {dbname}")


def test_pool_connections_use_no_prepared_statements_and_set_nothing(test_env: ServiceEnv) -> None:
    # Given the container's pool
    with db.transaction() as conn:
        # Then its connections never prepare server-side, and carry the database's own TimeZone
        assert conn.prepare_threshold is None
        default = conn.execute("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'").fetchone()
        current = conn.execute("SHOW TimeZone").fetchone()
    assert default is not None and current is not None
    assert current["TimeZone"] == default["reset_val"]


@pytest.mark.usefixtures("new_york_sessions")
def test_times_are_right_whatever_the_session_time_zone(api: Api) -> None:
    # Given sessions whose TimeZone is not UTC
    with db.transaction() as conn:
        zone = conn.execute("SHOW TimeZone").fetchone()
    assert zone is not None and zone["TimeZone"] == "America/New_York"
    # When notifications are created, read and paged through
    before = datetime.now(UTC)
    ids = [
        api(
            "POST",
            "/api/v1/notifications",
            {"channel": "sms", "provider": "console", "payload": {"to": "+14155550100", "body": str(i)}},
        ).json["id"]
        for i in range(3)
    ]
    one = api("GET", f"/api/v1/notifications/{ids[0]}").json
    first = api("GET", "/api/v1/notifications", query={"limit": "2"}).json
    second = api("GET", "/api/v1/notifications", query={"limit": "2", "cursor": first["next_cursor"]}).json

    # Then the instants are the real ones and the keyset pages neither skip nor repeat a row
    created = datetime.fromisoformat(one["created_at"])
    assert created.tzinfo is not None
    assert before - timedelta(seconds=5) <= created <= datetime.now(UTC) + timedelta(seconds=5)
    paged = [n["id"] for n in first["data"]] + [n["id"] for n in second["data"]]
    assert set(ids) <= set(paged) and len(paged) == len(set(paged))
