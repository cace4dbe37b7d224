"""Ingest benchmark: the API handler in-process against real PostgreSQL, Redis and SQS.

Prints: single-create notifications/s with p50/p99 latency; batch-create notifications/s; the raw
rate at which the same rows and messages can be written with plain psycopg + SendMessageBatch (no
validation, no auth, no rate limit); and the ratio batch/raw (target ≥ 0.80).

    .venv/bin/python bench/ingest.py [--single 500] [--batches 30] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench.common import bench_sandbox, describe, percentile
from notify_core import auth
from notify_local.lambda_env import LambdaContext, load_handler, rest_event

PAYLOAD = {"to": "recipient@example.com", "from": "sender@example.com", "subject": "Bench", "body": "Hello"}


def payload(n: int) -> dict[str, str]:
    """Distinct recipients, as real traffic has (so no per-address cache could flatter the figures)."""
    return {**PAYLOAD, "to": f"user{n}.{uuid.uuid4().hex[:8]}@example.com"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=500)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    with bench_sandbox("ingest", overrides={"RateLimitRequests": "1000000"}) as box:
        tenant = auth.create_tenant("bench")
        key = auth.create_api_key(tenant).key
        handler = load_handler("functions/api/", "app.handler")
        headers = {"X-Api-Key": key, "Content-Type": "application/json"}

        def call(path: str, body: Any) -> dict[str, Any]:
            event = rest_event("POST", path, headers=headers, body=json.dumps(body))
            return handler(event, LambdaContext("ApiFunction", 512, 25))

        # warm-up: connection pool, boto3 client, Redis script, handler import
        for _ in range(20):
            assert (
                call("/api/v1/notifications", {"channel": "email", "payload": PAYLOAD})["statusCode"] == 202
            )

        latencies: list[float] = []
        started = time.perf_counter()
        for _ in range(args.single):
            t0 = time.perf_counter()
            reply = call("/api/v1/notifications", {"channel": "email", "payload": payload(0)})
            latencies.append((time.perf_counter() - t0) * 1000)
            assert reply["statusCode"] == 202, reply["body"]
        single_rate = args.single / (time.perf_counter() - started)
        print(f"single create: {single_rate:,.0f} notifications/s over {args.single}; {describe(latencies)}")

        # Batch through the API and the raw floor alternate, one batch each per round, so that both
        # see the same LocalStack, queue depth and table size (measured one after the other, the
        # second always ran against a warmer service and drifted the ratio by ±0.05).
        raw = RawWriter(box.database_url, box.sqs, box.queue_url, tenant)
        batch_ms: list[float] = []
        raw_ms: list[float] = []
        for _ in range(args.batches):
            items = [{"channel": "email", "payload": payload(n)} for n in range(args.batch_size)]
            t0 = time.perf_counter()
            reply = call("/api/v1/notifications/batch", {"notifications": items})
            batch_ms.append((time.perf_counter() - t0) * 1000)
            assert reply["statusCode"] == 202, reply["body"][:300]
            assert all(r["status"] == "queued" for r in json.loads(reply["body"])["results"])
            raw_ms.append(raw.write(args.batch_size))
        batch_rate = args.batch_size / (statistics.fmean(batch_ms) / 1000)
        raw_rate = args.batch_size / (statistics.fmean(raw_ms) / 1000)
        print(
            f"batch create ({args.batch_size}/call): {batch_rate:,.0f} notifications/s; per call {describe(batch_ms)}"
        )
        print(
            f"raw psycopg INSERT + SendMessageBatch: {raw_rate:,.0f} rows+messages/s; per batch {describe(raw_ms)}"
        )
        print(f"ratio batch/raw: {batch_rate / raw_rate:.2f} (target ≥ 0.80)")
    result = {
        "single_per_s": round(single_rate),
        "single_ms": {"p50": round(percentile(latencies, 50), 2), "p99": round(percentile(latencies, 99), 2)},
        "batch_per_s": round(batch_rate),
        "raw_per_s": round(raw_rate),
        "batch_over_raw": round(batch_rate / raw_rate, 2),
    }
    print("RESULT " + json.dumps(result, sort_keys=True))


class RawWriter:
    """The floor: the same rows and the same messages, one INSERT and ten SendMessageBatch per batch
    (sent concurrently, as the API does), with no validation, auth or rate limit."""

    INSERT = (
        "INSERT INTO notifications (id, tenant_id, channel, provider, payload, status, max_attempts)"
        " SELECT id, %s, 'email', 'sendgrid', payload::jsonb, 'queued', 5 FROM unnest(%s::uuid[], %s::text[])"
        " AS r(id, payload)"
    )

    def __init__(self, database_url: str, sqs: Any, queue_url: str, tenant: uuid.UUID) -> None:
        self.conn = psycopg.connect(database_url)
        self.sqs, self.queue_url, self.tenant = sqs, queue_url, tenant
        self.pool = ThreadPoolExecutor(max_workers=10)

    def write(self, size: int) -> float:
        """One batch; returns its wall time in ms."""
        ids = [uuid.uuid4() for _ in range(size)]
        payloads = [json.dumps(payload(n)) for n in range(size)]
        t0 = time.perf_counter()
        self.conn.execute(self.INSERT, (self.tenant, ids, payloads))
        self.conn.commit()
        chunks = [ids[k : k + 10] for k in range(0, size, 10)]
        list(self.pool.map(self._send, chunks))
        return (time.perf_counter() - t0) * 1000

    def _send(self, chunk: list[uuid.UUID]) -> None:
        self.sqs.send_message_batch(
            QueueUrl=self.queue_url,
            Entries=[
                {"Id": str(n), "MessageBody": json.dumps({"id": str(i), "tenant_id": str(self.tenant)})}
                for n, i in enumerate(chunk)
            ],
        )


if __name__ == "__main__":
    main()
