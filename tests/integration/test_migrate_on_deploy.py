"""The migration custom resource: applies migrations on Create/Update and always answers
CloudFormation (a PUT to the ResponseURL), with FAILED and the reason when it cannot migrate."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from notify_core import db
from notify_local.lambda_env import LambdaContext, load_handler

EVENT = Path(__file__).resolve().parents[2] / "events" / "migrate_create.json"


@pytest.fixture
def cloudformation() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for the pre-signed S3 URL CloudFormation waits on."""
    answers: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            answers.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/response", answers
    server.shutdown()
    server.server_close()


@pytest.fixture
def fresh_database(test_env: Any) -> Iterator[str]:
    admin = os.environ["NOTIFY_TEST_PG"]
    name = f"notify_deploy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_create_and_update_migrate_and_answer_success(
    cloudformation: tuple[str, list[dict[str, Any]]], fresh_database: str, settings_env: Callable[..., None]
) -> None:
    url, answers = cloudformation
    settings_env(DATABASE_URL=fresh_database)
    handler = load_handler("functions/migrate/", "app.handler")
    event = {**json.loads(EVENT.read_text()), "ResponseURL": url}
    assert handler(event, LambdaContext("MigrationFunction", 256, 300)) == "SUCCESS"
    assert (
        handler(
            {**event, "RequestType": "Update", "PhysicalResourceId": "DatabaseMigrations"},
            LambdaContext("MigrationFunction", 256, 300),
        )
        == "SUCCESS"
    )
    first, second = answers
    assert first["Status"] == "SUCCESS"
    versions = [version for version, _ in db._migration_files()]
    assert versions[:2] == ["0001_foundation", "0002_delivery_engine"]
    assert first["Data"] == {"Applied": ",".join(versions)}
    assert second["Data"] == {"Applied": "none"}
    assert first["RequestId"] == event["RequestId"]
    assert first["PhysicalResourceId"] == "DatabaseMigrations"
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(versions),)


def test_failure_is_reported_not_left_hanging(
    cloudformation: tuple[str, list[dict[str, Any]]], settings_env: Callable[..., None]
) -> None:
    url, answers = cloudformation
    settings_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    handler = load_handler("functions/migrate/", "app.handler")
    event = {**json.loads(EVENT.read_text()), "ResponseURL": url}
    assert handler(event, LambdaContext("MigrationFunction", 256, 300)) == "FAILED"
    (answer,) = answers
    assert answer["Status"] == "FAILED"
    assert "OperationalError" in answer["Reason"]


def test_delete_does_nothing_but_answer(cloudformation: tuple[str, list[dict[str, Any]]]) -> None:
    url, answers = cloudformation
    handler = load_handler("functions/migrate/", "app.handler")
    event = {
        **json.loads(EVENT.read_text()),
        "ResponseURL": url,
        "RequestType": "Delete",
        "PhysicalResourceId": "x",
    }
    assert handler(event, LambdaContext("MigrationFunction", 256, 300)) == "SUCCESS"
    assert answers[0]["PhysicalResourceId"] == "x"
