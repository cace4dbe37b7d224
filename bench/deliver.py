"""Delivery benchmark: the sender function in-process against real PostgreSQL, Redis and SQS, with
the real SendGrid SDK talking to the provider stub, which answers every send in 100 ms.

Prints: a batch of 10 through the sender — wall time as a multiple of the provider time (target
≤ 1.3x) and messages/s for one sender; the same messages sent one at a time as the original design
does (one SELECT, one send, one UPDATE each) and the ratio; then the cold-start cost (fresh
process: import + init) of the sender and the API handler, median of 10 (targets: sender ≤ 500 ms,
API ≤ 300 ms).

    .venv/bin/python -m bench.deliver [--batches 20] [--provider-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from bench.common import ROOT, bench_sandbox, describe
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
    parser.add_argument("--cold-runs", type=int, default=10)
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
                provider.send(OutgoingMessage.build(row[0], row[1], "email", "sendgrid", row[2], 1))
                conn.execute(
                    "UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = %s", (nid,)
                )
                conn.commit()
        sequential = (time.perf_counter() - t0) * 1000
        print(
            f"one at a time (original design): {sequential:.0f} ms for 10 = {10 / (sequential / 1000):,.0f} messages/s;"
            f" concurrent batch is {sequential / median:.1f}x faster"
        )

    for name, path in (("sender", "functions/sender/"), ("api", "functions/api/")):
        times = cold_starts(path, args.cold_runs)
        target = 500 if name == "sender" else 300
        print(
            f"cold start {name}: median {statistics.median(times):.0f} ms over {len(times)} fresh processes"
            f" (min {min(times):.0f}, max {max(times):.0f}; target ≤ {target} ms)"
        )


COLD = """
import time
from notify_local.lambda_env import load_handler  # the loader (PyYAML, template code) is not Lambda's cost
t0 = time.perf_counter()
handler = load_handler({path!r}, "app.handler")
print((time.perf_counter() - t0) * 1000)
"""


def cold_starts(path: str, runs: int) -> list[float]:
    """Import + init of a function's module in a fresh interpreter (what Lambda's init phase pays on
    top of the runtime itself), measured inside the process so interpreter start-up is excluded."""
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": os.environ.get("POWERTOOLS_TRACE_DISABLED", "true")}
    out = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", COLD.format(path=path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        out.append(float(result.stdout.strip().splitlines()[-1]))
    return out


if __name__ == "__main__":
    main()
