"""Delivery benchmark: the sender function in-process against real PostgreSQL, Redis and SQS, with
the real SendGrid SDK talking to the provider stub, which answers every send in 100 ms.

Prints: a batch of 10 through the sender — wall time as a multiple of the provider time (target
≤ 1.3x) and messages/s for one sender; the same messages sent one at a time as the original design
does (one SELECT, one send, one UPDATE each) and the ratio. Cold starts: bench.coldstart (the built
artifact, as Lambda runs it).

    .venv/bin/python -m bench.deliver [--batches 20] [--provider-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import psycopg

from bench.common import bench_sandbox, describe, percentile
from notify_core import auth, notifications, providers
from notify_core.providers import OutgoingMessage, get_provider
from notify_local.lambda_env import LambdaContext, load_handler, sqs_event
from notify_local.provider_stub import ProviderStub

PAYLOAD = {"from": "ops@example.com", "subject": "Bench", "body": "Hello"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--provider-ms", type=int, default=100)
    args = parser.parse_args()

    with ProviderStub() as stub, bench_sandbox("deliver") as box:
        os.environ.update(stub.env())
        providers.reset_providers()
        stub.configure("sendgrid", delay_ms=args.provider_ms)
        tenant = auth.create_tenant("bench")
        sender = load_handler("functions/sender/", "app.handler")
        arn = box.stack.queues["NotificationsQueue"].arn

        def enqueue(n: int) -> list[dict[str, Any]]:
            items = [
                {"channel": "email", "payload": {**PAYLOAD, "to": f"u{i}@example.com"}} for i in range(n)
            ]
            outcomes = notifications.create(tenant, items)
            assert all(o.error is None for o in outcomes)
            got: list[dict[str, Any]] = []
            while len(got) < n:
                got += box.sqs.receive_message(
                    QueueUrl=box.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
                ).get("Messages", [])
            return got

        # warm-up: provider client, pool, Redis
        sender(sqs_event(enqueue(10), arn), LambdaContext("SenderFunction", 512, 30))

        walls: list[float] = []
        for _ in range(args.batches):
            messages = enqueue(10)
            t0 = time.perf_counter()
            reply = sender(sqs_event(messages, arn), LambdaContext("SenderFunction", 512, 30))
            walls.append((time.perf_counter() - t0) * 1000)
            assert reply == {"batchItemFailures": []}, reply
            box.sqs.delete_message_batch(
                QueueUrl=box.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        median = statistics.median(walls)
        print(
            f"sender, batch of 10, provider {args.provider_ms} ms: wall {describe(walls)}; "
            f"median = {median / args.provider_ms:.2f}x the provider time (target ≤ 1.3x); "
            f"{10 / (median / 1000):,.0f} messages/s for one sender"
        )

        # the original design: per message one SELECT, one send, one UPDATE
        messages = enqueue(10)
        ids = [json.loads(m["Body"])["id"] for m in messages]
        provider = get_provider("sendgrid")
        t0 = time.perf_counter()
        with psycopg.connect(box.database_url) as conn:
            for nid in ids:
                row = conn.execute(
                    "SELECT id, tenant_id, payload FROM notifications WHERE id = %s", (nid,)
                ).fetchone()
                assert row is not None
                provider.send(OutgoingMessage(row[0], row[1], "email", "sendgrid", row[2], 1))
                conn.execute(
                    "UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = %s", (nid,)
                )
                conn.commit()
        sequential = (time.perf_counter() - t0) * 1000
        print(
            f"one at a time (original design): {sequential:.0f} ms for 10 = {10 / (sequential / 1000):,.0f} messages/s;"
            f" concurrent batch is {sequential / median:.1f}x faster"
        )
    result = {
        "batch_of_10_ms": {"p50": round(median, 1), "p99": round(percentile(walls, 99), 1)},
        "x_provider": round(median / args.provider_ms, 2),
        "messages_per_s_one_sender": round(10 / (median / 1000)),
        "one_at_a_time_ms": round(sequential),
        "speedup": round(sequential / median, 1),
    }
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
