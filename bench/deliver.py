"""Delivery benchmark: the sender function in-process against real PostgreSQL, Redis and SQS, with
the real SendGrid SDK talking to the provider stub, which answers each send after M ms.

Prints, each figure the median of --rounds batches with the range over them:
- the batch's wall time as a multiple of the provider time, for batch sizes N with N sends in
  flight (SEND_CONCURRENCY = N): a table for N = 10, 50, 100 and M = 50, 100, 500, or the one
  combination given with --batch-size/--provider-ms (targets: ≤ 1.15 at N = 10, ≤ 1.3 at N = 100);
- a batch of 10 where one send takes 5 s (`slow_batch_s`), and when the nine others' outcomes were
  committed (`others_recorded_s`: they no longer wait for the slow one);
- the original design as it ran: five workers in parallel, each taking one message at a time (one
  SELECT, one send, one UPDATE), against five sender invocations in parallel (the template's
  SenderMaxConcurrency) with batches of 10, over the same messages at the same latency
  (`baseline_msgs_per_s`, `msgs_per_s`, `speedup`).

With --audience (issue 10) every notification goes through the audience's steps doing real work:
it belongs to a user with preferences and quiet hours (outside the window), in a non-critical
category (so each email gets a signed List-Unsubscribe link), with suppressions on other addresses
in the table; target at N = 10, M = 100: ≤ 1.2.

    .venv/bin/python -m bench.deliver [--batch-size N --provider-ms M] [--rounds 5] [--audience]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench.common import bench_sandbox, spread, stub_process
from notify_core import auth, clients, notifications, providers
from notify_core.providers import OutgoingMessage, get_provider
from notify_local.lambda_env import LambdaContext, load_handler, sqs_event

PAYLOAD = {"from": "ops@example.com", "subject": "Bench", "body": "Hello"}
SMS = {"to": "+14155550100", "body": "slow"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--provider-ms", type=int)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-messages", type=int, default=200)
    parser.add_argument(
        "--audience", action="store_true", help="users, preferences, categories, suppressions"
    )
    args = parser.parse_args()
    sizes = [args.batch_size] if args.batch_size else [10, 50, 100]
    latencies = [args.provider_ms] if args.provider_ms else [50, 100, 500]
    result: dict[str, Any] = {"multiple": {}}

    with stub_process() as stub, bench_sandbox("deliver") as box:
        os.environ.update(stub.env())
        tenant = auth.create_tenant("bench")
        arn = box.stack.queues["NotificationsQueue"].arn
        audience_users = audience_setup(tenant, max(sizes)) if args.audience else []
        serial = iter(range(10**9))

        def batch(
            n: int, channel: str = "email", payload: dict[str, Any] | None = None, audience: bool = False
        ) -> list[dict[str, Any]]:
            """n notifications stored and enqueued by the real ingest; the sender's event built from them."""
            items: list[dict[str, Any]] = [
                {"channel": channel, "payload": payload or {**PAYLOAD, "to": f"u{i}@example.com"}}
                for i in range(n)
            ]
            if audience:
                # audience: each to a user (the address from the user), in a category
                items = [
                    {
                        "channel": channel,
                        "payload": PAYLOAD,
                        "category": "orders",
                        "user_id": str(audience_users[next(serial) % len(audience_users)]),
                    }
                    for _ in range(n)
                ]
            outcomes = notifications.create(tenant, items)
            assert all(o.error is None for o in outcomes)
            return [message(o.notification.id) for o in outcomes]

        def message(nid: uuid.UUID) -> dict[str, Any]:
            body = json.dumps({"id": str(nid), "tenant_id": str(tenant)})
            return {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "rh", "Body": body, "Attributes": {}}

        def invoke(messages: list[dict[str, Any]], instance: int = 0) -> float:
            sender = load_handler("functions/sender/", "app.handler", instance)
            t0 = time.perf_counter()
            reply = sender(sqs_event(messages, arn), LambdaContext("SenderFunction", 512, 30))
            wall = time.perf_counter() - t0
            assert reply == {"batchItemFailures": []}, reply
            return wall

        def configure(concurrency: int, **env: str) -> None:
            os.environ.update(SEND_CONCURRENCY=str(concurrency), **env)
            clients.reset()

        # ---------------------------------------------------------------- the table
        for n in sizes:
            configure(n)
            for ms in latencies:
                stub.configure("sendgrid", delay_ms=ms)
                invoke(batch(n))  # warm-up: provider client, pool, Redis, threads
                if args.audience:  # the same batches without and with the audience's work, alternating
                    invoke(batch(n, audience=True))
                    plain, walls = [], []
                    for _ in range(args.rounds):
                        plain.append(invoke(batch(n)) * 1000 / ms)
                        walls.append(invoke(batch(n, audience=True)) * 1000 / ms)
                    result["multiple_without_audience"] = round(statistics.median(plain), 3)
                    print(
                        f"batch {n:3d}, {n:3d} in flight, provider {ms:3d} ms, no audience work: "
                        f"{spread(plain, 'x')} the provider time"
                    )
                else:
                    walls = [invoke(batch(n)) * 1000 / ms for _ in range(args.rounds)]
                result["multiple"][f"{n}x{ms}ms"] = round(statistics.median(walls), 3)
                label = ", audience steps working" if args.audience else ""
                print(
                    f"batch {n:3d}, {n:3d} in flight, provider {ms:3d} ms{label}: "
                    f"{spread(walls, 'x')} the provider time"
                )

        if args.audience:
            result["audience"] = True
        if args.batch_size or args.provider_ms:
            (result["multiple"],) = result["multiple"].values()  # one figure when one combination is asked
            print("RESULT " + json.dumps(result))
            return

        # ---------------------------------------------------------------- one slow send
        configure(10, TWILIO_TIMEOUT_SECONDS="10")
        stub.configure("sendgrid", delay_ms=100)
        stub.configure("twilio", delay_ms=5000)
        slow, others = [], []
        for _ in range(max(3, args.rounds // 2)):
            messages = batch(9) + batch(1, "sms", SMS)
            started = time.time()
            slow.append(invoke(messages))
            ids = [json.loads(m["Body"])["id"] for m in messages[:9]]
            with psycopg.connect(box.database_url) as conn:
                (last,) = conn.execute(
                    "SELECT max(extract(epoch FROM sent_at)) FROM notifications WHERE id = ANY(%s::uuid[])",
                    (ids,),
                ).fetchone()  # type: ignore[misc]
            others.append(float(last) - started)
        result["slow_batch_s"] = round(statistics.median(slow), 2)
        result["others_recorded_s"] = round(statistics.median(others), 3)
        print(
            f"batch of 10 with one 5 s send: invocation {spread(slow, ' s')}; the nine others committed after "
            f"{spread(others, ' s')}"
        )

        # ---------------------------------------------------------------- the original design
        configure(10)
        stub.configure("sendgrid", delay_ms=100)
        total = args.baseline_messages
        ids = [json.loads(m["Body"])["id"] for m in batch(total)]
        provider = get_provider("sendgrid")
        queue_lock = threading.Lock()

        def worker() -> None:
            with psycopg.connect(box.database_url) as conn:
                while True:
                    with queue_lock:
                        if not ids:
                            return
                        nid = ids.pop()
                    row = conn.execute(
                        "SELECT id, tenant_id, payload FROM notifications WHERE id = %s", (nid,)
                    ).fetchone()
                    assert row is not None
                    provider.send(OutgoingMessage.build(row[0], row[1], "email", "sendgrid", row[2], 1))
                    conn.execute(
                        "UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = %s", (nid,)
                    )
                    conn.commit()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=5) as pool:
            for future in [pool.submit(worker) for _ in range(5)]:
                future.result()
        baseline = total / (time.perf_counter() - t0)

        batches = [batch(10) for _ in range(total // 10)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=5) as pool:  # five sender invocations, each its own copy
            slots = iter(range(len(batches)))
            lock = threading.Lock()

            def invocation(instance: int) -> None:
                while True:
                    with lock:
                        k = next(slots, None)
                    if k is None:
                        return
                    invoke(batches[k], instance)

            for future in [pool.submit(invocation, i) for i in range(5)]:
                future.result()
        ours = total / (time.perf_counter() - t0)
        result.update(
            baseline_msgs_per_s=round(baseline, 1),
            msgs_per_s=round(ours, 1),
            speedup=round(ours / baseline, 2),
        )
        print(
            f"original design, 5 workers one message at a time: {baseline:,.0f} messages/s; "
            f"5 sender invocations, batches of 10: {ours:,.0f} messages/s; speedup {ours / baseline:.1f}x"
        )
        providers.reset_providers()
    print("RESULT " + json.dumps(result))


def audience_setup(tenant: uuid.UUID, count: int) -> list[uuid.UUID]:
    """A category, `count` users with preferences that allow email and quiet hours that do not
    cover now, and suppressions of other addresses: what the audience steps read and decide on."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from notify_core import audit, suppressions
    from notify_core.audience import categories, preferences
    from notify_core.db import transaction
    from notify_core.models import UserCreate
    from notify_core.users import create_user

    categories.create(tenant, categories.CategoryCreate(key="orders", name="Orders"), audit.SYSTEM)
    local = datetime.now(UTC).astimezone(ZoneInfo("Europe/Berlin"))
    quiet = {
        "start": (local + timedelta(hours=2)).strftime("%H:%M"),
        "end": (local + timedelta(hours=3)).strftime("%H:%M"),
    }
    users = []
    for i in range(2 * count):
        user = create_user(tenant, UserCreate(email=f"bench{i}@example.com", timezone="Europe/Berlin"))
        preferences.replace(
            tenant,
            user.id,
            {
                "channels": {"sms": False},
                "categories": {"orders": {"channels": {"push": False}}},
                "quiet_hours": quiet,
            },
            audit.SYSTEM,
        )
        users.append(user.id)
    with transaction() as conn:
        for i in range(200):
            suppressions.add(conn, tenant, "email", f"gone{i}@example.com", "hard_bounce")
    return users


if __name__ == "__main__":
    main()
