"""Outgoing webhooks through the local runtime, as a developer runs it (`notify-local` in its own
process: API, sender, webhook dispatcher, sweeper), to a receiver in this process that answers in
--receiver-ms (50 ms) and verifies every request with the `standardwebhooks` library.

State changes: notifications created over HTTP at --rate per second (batches of 10) with the
`console` provider, each becoming `sent` at once: one `notification.sent` event each, for the
development tenant's endpoint. Latency is from the event's own timestamp (taken in the transaction
that records the send) to its arrival at the receiver.

Two phases of --seconds each:
1. the receiver answers 200: p99 state change → webhook received, and every event received;
2. the receiver fails 50 % of the requests (503): every event delivered after retries. The run
   uses a SHORT retry schedule (WebhookRetrySchedule below: 20 retries over ~80 s, not the
   production ~27 h), so the phase ends in minutes; 21 attempts at 50 % lose one event in ~2M.

Targets: phase 1 p99 ≤ 2 s and 0 lost; phase 2 every event delivered.

    .venv/bin/python -m bench.webhooks [--rate 100] [--seconds 60] [--receiver-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from datetime import datetime

import psycopg

from bench.common import local_runtime, percentile
from notify_local.webhook_receiver import Received, WebhookReceiver

SHORT_SCHEDULE = "1,1,1,2,2,2,3,3,3,5,5,5,5,5,5,5,5,5,5,5"


def call(base: str, key: str, method: str, path: str, body: object = None) -> dict[str, object]:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "X-Api-Key": key},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read() or b"null")


def load(base: str, key: str, rate: int, seconds: int) -> int:
    """Open loop, batches of 10 on schedule; returns how many notifications were accepted."""
    from concurrent.futures import ThreadPoolExecutor

    item = {
        "channel": "email",
        "provider": "console",
        "payload": {"to": "a@example.com", "subject": "s", "body": "b"},
    }
    per_second = rate / 10
    total = int(seconds * per_second)
    accepted = 0

    def post() -> int:
        reply = call(base, key, "POST", "/api/v1/notifications/batch", {"notifications": [item] * 10})
        return int(reply["accepted"])  # type: ignore[call-overload]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = []
        for i in range(total):
            delay = t0 + i / per_second - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(post))
        accepted = sum(f.result() for f in futures)
    return accepted


def latencies(received: list[Received]) -> dict[str, float]:
    """event id -> seconds from the event's timestamp to its first 2xx arrival."""
    out: dict[str, float] = {}
    for r in received:
        if 200 <= r.status < 300 and r.webhook_id not in out:
            stamp = datetime.fromisoformat(r.json["timestamp"].replace("Z", "+00:00")).timestamp()
            out[r.webhook_id] = r.time - stamp
    return out


def phase(
    name: str,
    base: str,
    key: str,
    receiver: WebhookReceiver,
    args: argparse.Namespace,
    fail_rate: float,
    wait: float,
) -> dict[str, object]:
    receiver.configure(delay_ms=args.receiver_ms, fail_rate=fail_rate, seed=7)
    start = len(receiver.received)
    accepted = load(base, key, args.rate, args.seconds)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        got = latencies(receiver.received[start:])
        if len(got) >= accepted:
            break
        time.sleep(0.5)
    got = latencies(receiver.received[start:])
    requests = receiver.received[start:]
    unverified = sum(1 for r in requests if not r.verified)
    values = sorted(got.values())
    result: dict[str, object] = {
        "events": accepted,
        "received": len(got),
        "lost": accepted - len(got),
        "requests": len(requests),
        "failed_answers": sum(1 for r in requests if r.status >= 500),
        "unverified": unverified,
        "p50_s": round(percentile(values, 50), 3) if values else None,
        "p99_s": round(percentile(values, 99), 3) if values else None,
        "max_s": round(values[-1], 3) if values else None,
    }
    print(f"{name}: {json.dumps(result)}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=100, help="state changes (events) per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--receiver-ms", type=int, default=50)
    parser.add_argument("--port", type=int, default=3078)
    args = parser.parse_args()

    params = [
        f"WebhookRetrySchedule={SHORT_SCHEDULE}",
        # Powertools' Metrics keeps one metric set per process: the local runtime's concurrent
        # invocations (one process for every function) race on its flush ("Must contain at least one
        # metric" → a 502 now and then). Each Lambda container runs one invocation at a time.
        "POWERTOOLS_METRICS_DISABLED=true",
    ]
    print(f"retry schedule for this run: {SHORT_SCHEDULE} (seconds)")
    with local_runtime("bench-webhooks", args.port, params) as runtime, WebhookReceiver() as receiver:
        base, key, database_url = runtime.base, runtime.key, runtime.database_url
        endpoint = call(
            base, key, "POST", "/api/v1/webhooks", {"url": receiver.url, "events": ["notification.sent"]}
        )
        receiver.secrets.append(str(endpoint["secret"]))
        healthy = phase("receiver answering 200", base, key, receiver, args, 0.0, wait=60)
        failing = phase("receiver failing 50 %", base, key, receiver, args, 0.5, wait=240)
        with psycopg.connect(database_url) as conn:
            statuses: dict[str, int] = dict(
                conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY status").fetchall()
            )
            notifications: dict[str, int] = dict(
                conn.execute("SELECT status, count(*) FROM notifications GROUP BY status").fetchall()
            )
            (attempts,) = conn.execute("SELECT count(*) FROM webhook_attempts").fetchone() or (0,)
        print(
            f"notifications by status: {notifications}; deliveries by status: {statuses}; attempts {attempts}"
        )
        print(
            "RESULT "
            + json.dumps(
                {
                    "rate": args.rate,
                    "seconds": args.seconds,
                    "receiver_ms": args.receiver_ms,
                    "p99_s": healthy["p99_s"],
                    "p50_s": healthy["p50_s"],
                    "lost": healthy["lost"],
                    "failing_lost": failing["lost"],
                    "failing_p99_s": failing["p99_s"],
                    "unverified": int(healthy["unverified"]) + int(failing["unverified"]),  # type: ignore[call-overload]
                    "deliveries": statuses,
                    "notifications": notifications,
                    "retry_schedule": SHORT_SCHEDULE,
                }
            )
        )


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    main()
