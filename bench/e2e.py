"""End-to-end benchmark through the local runtime, as a developer runs it (`notify-local`, a real
subprocess, its log kept in .local/bench-e2e/notify-local.log): the time from the command to the
API answering, then sustained load over HTTP (default 300 notifications/s for 60 s, in batches of
10 = 30 requests/s; --batch-size 1 sends single creates) through the real SendGrid SDK to the
provider stub (its own process) answering in 100 ms (--provider console: the logging provider).

Prints client-side latency (request start → response), accepted→sent latency from the database's
own timestamps (created_at → sent_at), throughput, and at the end the count of every status: rows
not final when the run stops are reported, never dropped from the figures.

Targets: ≥ 300/s sustained for 60 s with p99 accepted→sent ≤ 1 s and every notification final.

    .venv/bin/python -m bench.e2e [--rate 300] [--seconds 60] [--batch-size 10] [--provider sendgrid]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psycopg

from bench.common import local_runtime, percentile, stub_process


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=300, help="notifications per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--port", type=int, default=3077)
    parser.add_argument("--provider", choices=["sendgrid", "console"], default="sendgrid")
    parser.add_argument("--provider-ms", type=int, default=100)
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter for notify-local",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        stub_env: dict[str, str] = {}
        if args.provider == "sendgrid":
            stub = stack.enter_context(stub_process())
            stub.configure("sendgrid", delay_ms=args.provider_ms)
            stub_env = stub.env()
        run(args, stub_env)


def run(args: argparse.Namespace, stub_env: dict[str, str]) -> None:
    # the providers' base URLs and credentials -> the stub
    params = [f"{name}={value}" for name, value in stub_env.items()] + args.param
    with local_runtime("bench-e2e", args.port, params) as runtime:
        print(f"start: {runtime.started_s:.1f} s from the command to /health answering (venvs present)")
        client_ms = run_load(runtime.base, runtime.key, args)
        report(runtime.database_url, args, client_ms)


def run_load(base: str, key: str, args: argparse.Namespace) -> list[float]:
    """Open loop: requests leave on schedule whatever the replies do. Returns each request's
    client-side latency (start → response) in ms."""
    per_request = args.batch_size
    path = "/api/v1/notifications/batch" if per_request > 1 else "/api/v1/notifications"
    requests_per_second = args.rate / per_request
    total = int(args.seconds * requests_per_second)
    item = {
        "channel": "email",
        "provider": args.provider,
        "payload": {"to": "a@example.com", "from": "ops@example.com", "subject": "s", "body": "b"},
    }
    body = json.dumps({"notifications": [item] * per_request} if per_request > 1 else item).encode()
    errors: list[str] = []
    latencies: list[float] = []
    late = 0
    lock = threading.Lock()

    def post() -> None:
        request = urllib.request.Request(
            base + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "X-Api-Key": key},
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                reply.read()
                if reply.status != 202:
                    with lock:
                        errors.append(str(reply.status))
        except urllib.error.HTTPError as exc:
            with lock:
                errors.append(str(exc.code))
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            with lock:
                errors.append(type(exc).__name__)
        with lock:
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(total):
            delay = t0 + i / requests_per_second - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                late += 1
            pool.submit(post)
    elapsed = time.perf_counter() - t0
    print(
        f"load: {total * per_request} notifications in {total} requests scheduled over {args.seconds} s "
        f"({args.rate}/s offered); all answered after {elapsed:.1f} s = {total * per_request / elapsed:.0f}/s "
        f"accepted; errors {len(errors)} {sorted(set(errors))}; requests that left late {late}"
    )
    print(
        f"client latency (request start → response): p50 {percentile(latencies, 50):.0f} ms, "
        f"p99 {percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms"
    )
    return latencies


FINAL = ("sent", "delivered", "failed", "cancelled", "suppressed")


def report(database_url: str, args: argparse.Namespace, client_ms: list[float], wait: float = 60) -> None:
    """Waits (up to `wait` s) for every row to reach a final state, then counts every status."""
    deadline = time.monotonic() + wait
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            (open_rows,) = conn.execute(
                "SELECT count(*) FROM notifications WHERE NOT (status = ANY(%s))", (list(FINAL),)
            ).fetchone() or (0,)
            if open_rows == 0:
                break
            time.sleep(0.5)
        rows = conn.execute(
            "SELECT extract(epoch FROM sent_at - created_at) * 1000, created_at, sent_at FROM notifications"
            " WHERE status = 'sent'"
        ).fetchall()
        by_status: dict[str, int] = dict(
            conn.execute(
                "SELECT status, count(*) FROM notifications GROUP BY status ORDER BY status"
            ).fetchall()
        )
    latencies = [float(r[0]) for r in rows]
    if not latencies:
        raise SystemExit(f"nothing was sent: {by_status}")
    not_final = sum(n for status, n in by_status.items() if status not in FINAL)
    span = (max(r[2] for r in rows) - min(r[1] for r in rows)).total_seconds()
    expected = int(args.seconds * args.rate / args.batch_size) * args.batch_size
    print(f"statuses at the end: {by_status} ({expected} accepted expected; not final: {not_final})")
    print(
        f"accepted→sent: p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms, "
        f"max {max(latencies):.0f} ms (target p99 ≤ 1000 ms); throughput {len(rows) / span:.0f} sent/s"
    )
    result = {
        "p99_ms": round(percentile(latencies, 99)),
        "client_p99_ms": round(percentile(client_ms, 99)),
        "sent_per_s": round(len(rows) / span),
        "not_final": not_final,
        "statuses": by_status,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    main()
