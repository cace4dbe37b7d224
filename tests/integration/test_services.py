"""notify_local.services: each ensure_* gives a working endpoint; what it starts, it can stop."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest
import redis

from notify_local import services
from notify_local.services import SqsService, ensure_postgres, ensure_redis, ensure_sqs, start_moto

pytestmark = pytest.mark.integration

# The suite's shared state dir (the repo's .local/), so these tests reuse what the rest started.
STATE_DIR = Path(__file__).resolve().parents[2] / ".local"


def _sqs_round_trip(endpoint_url: str) -> None:
    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    queue_url = sqs.create_queue(QueueName=f"svc-test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    try:
        sqs.send_message(QueueUrl=queue_url, MessageBody="hello")
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=2)
        bodies = [m["Body"] for m in received.get("Messages", [])]
        assert bodies == ["hello"]
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


def test_ensure_postgres_gives_an_admin_url() -> None:
    url = ensure_postgres(os.environ.get("DATABASE_URL"), STATE_DIR)
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (True,)


def test_ensure_postgres_skips_an_unreachable_url() -> None:
    url = ensure_postgres("postgresql://postgres@127.0.0.1:1/postgres", STATE_DIR)
    assert ":1/" not in url
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ensure_redis_gives_a_working_url() -> None:
    url = ensure_redis(os.environ.get("REDIS_URL"), STATE_DIR)
    client = redis.Redis.from_url(url)
    key = f"svc-test:{uuid.uuid4().hex}"
    try:
        assert client.ping()
        client.set(key, "1", ex=10)
        assert client.get(key) == b"1"
    finally:
        client.delete(key)
        client.close()


def test_ensure_redis_skips_an_unreachable_url() -> None:
    url = ensure_redis("redis://127.0.0.1:1/0", STATE_DIR)
    assert url != "redis://127.0.0.1:1/0"
    assert redis.Redis.from_url(url).ping()


def test_ensure_sqs_round_trip() -> None:
    svc = ensure_sqs(os.environ.get("AWS_ENDPOINT_URL"), STATE_DIR)
    try:
        assert svc.endpoint_url.startswith("http://127.0.0.1:") or svc.kind == "external"
        _sqs_round_trip(svc.endpoint_url)
    finally:
        # A LocalStack is shared with the other xdist workers and later runs: leave it up.
        if svc.kind == "moto":
            svc.stop()


def test_start_moto_stop_stops_it() -> None:
    svc = start_moto()
    assert svc.kind == "moto"
    port = int(svc.endpoint_url.rsplit(":", 1)[1])
    assert services._port_open("127.0.0.1", port)
    _sqs_round_trip(svc.endpoint_url)
    svc.stop()
    assert not services._port_open("127.0.0.1", port)
    svc.stop()  # a second stop is a no-op


def test_reachable_endpoint_is_external_and_not_stopped() -> None:
    moto = start_moto()
    try:
        ext = ensure_sqs(moto.endpoint_url, STATE_DIR)
        assert (ext.kind, ext.endpoint_url) == ("external", moto.endpoint_url)
        ext.stop()
        _sqs_round_trip(moto.endpoint_url)
    finally:
        moto.stop()


def test_ensure_sqs_without_localstack_uses_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_LOCALSTACK_PYTHON", str(tmp_path / "no-such-python"))
    free_port = services._free_port()
    svc: SqsService = ensure_sqs(None, tmp_path, port=free_port)
    try:
        assert svc.kind == "moto"
        _sqs_round_trip(svc.endpoint_url)
    finally:
        svc.stop()


def test_started_redis_is_stopped_by_down(tmp_path: Path) -> None:
    """The fallback used on a machine without Redis running: start, use, `down`."""
    url = services._start_redis(tmp_path)
    assert url.startswith("redis://127.0.0.1:")
    assert redis.Redis.from_url(url).ping()
    assert services.main(["down", "--state-dir", str(tmp_path)]) == 0
    assert not services._redis_ok(url)


def test_started_pgserver_is_stopped_by_down(tmp_path: Path) -> None:
    """The fallback used on a machine without PostgreSQL: an embedded server on a unix socket."""
    pytest.importorskip("pgserver")
    url = services._start_pgserver(tmp_path)
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        conn.execute("CREATE DATABASE svc_test")
        conn.execute("DROP DATABASE svc_test")
    assert services.main(["down", "--state-dir", str(tmp_path)]) == 0
    assert not services._postgres_ok(url)
