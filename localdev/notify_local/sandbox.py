"""An isolated environment over real services: its own database (migrated), Redis key prefix and
queues built from template.yaml, with the API function's environment applied to os.environ.
Tests (one per xdist worker) and benchmarks use it, so neither ever sees another run's rows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import psycopg
from psycopg import sql

from notify_core import auth, clients, db

from .stack import Stack


def reset_clients() -> None:
    """Forget every per-container client so the next use reads the current environment."""
    clients.reset()
    auth.clear_cache()


@dataclass
class Sandbox:
    name: str
    admin_url: str
    database_url: str
    redis_url: str
    sqs_endpoint: str
    stack: Stack
    sqs: Any

    @property
    def queue_url(self) -> str:
        return self.stack.queues["NotificationsQueue"].url

    @property
    def dlq_url(self) -> str:
        return self.stack.queues["NotificationsDLQ"].url


@contextmanager
def sandbox(
    name: str,
    admin_url: str,
    redis_url: str,
    sqs_endpoint: str,
    function: str = "ApiFunction",
    overrides: dict[str, str] | None = None,
    pooler_url: str | None = None,
) -> Iterator[Sandbox]:
    """`pooler_url`: a connection pooler (PgBouncer in transaction mode) in front of `admin_url`'s
    server; the functions, the migrations and the tests then reach the database through it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = psycopg.conninfo.make_conninfo(pooler_url or admin_url, dbname=name)
    db.migrate(database_url)
    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    stack = Stack.load(
        name.replace("_", "-"),
        overrides={"DatabaseUrl": database_url, "RedisUrl": redis_url, **(overrides or {})},
    )
    stack.create_queues(sqs)
    saved = dict(os.environ)
    os.environ.update(stack.function_environment(function))
    os.environ.update(
        AWS_ENDPOINT_URL=sqs_endpoint,
        REDIS_KEY_PREFIX=f"{name}:",
        POWERTOOLS_TRACE_DISABLED="1",
        POWERTOOLS_LOG_LEVEL=saved.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
    )
    reset_clients()
    try:
        yield Sandbox(name, admin_url, database_url, redis_url, sqs_endpoint, stack, sqs)
    finally:
        _delete_config_secrets(sqs_endpoint, os.environ.get("PROVIDER_CONFIG_SECRET_PREFIX", ""))
        reset_clients()
        os.environ.clear()
        os.environ.update(saved)
        stack.delete_queues(sqs)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _delete_config_secrets(endpoint: str, prefix: str) -> None:
    """Provider-config secrets this sandbox's tests left in the (shared) local Secrets Manager."""
    if not prefix:
        return
    client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1")
    try:
        pages = client.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}])
        for page in pages:
            for secret in page.get("SecretList", []):
                if secret["Name"].startswith(prefix):
                    client.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)
    except Exception as exc:  # noqa: BLE001 — tidying up a local emulator; never fails a run
        print(f"sandbox: provider config secrets under {prefix} not removed ({type(exc).__name__})")
