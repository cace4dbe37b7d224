"""End-to-end benchmark through the local runtime, as a developer runs it (`notify-local`, a real
subprocess): the time from the command to the API answering, then sustained load over HTTP
(default 200 notifications/s for 60 s, in batches of 10 = 20 requests/s; --batch-size 1 sends
single creates) with the console provider, and accepted→sent latency p50/p99 and throughput, taken
from the database's own timestamps (created_at → sent_at).

Targets: p99 ≤ 1 s at 200/s; start ≤ 60 s with venvs present.

    .venv/bin/python -m bench.e2e [--rate 200] [--seconds 60] [--batch-size 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from bench.common import ROOT, percentile
from notify_local import services


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=200, help="notifications per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--port", type=int, default=3077)
    args = parser.parse_args()

    state = ROOT / ".local" / "bench-e2e"
    state.mkdir(parents=True, exist_ok=True)
    admin = services.ensure_postgres(None, ROOT / ".local")
    name = f"notify_bench_e2e_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    (state / "dev-api-key.json").unlink(missing_ok=True)

    command = [
        str(ROOT / ".venv/bin/notify-local"),
        "--port",
        str(args.port),
        "--state-dir",
        str(state),
        "--stack-name",
        f"bench-{uuid.uuid4().hex[:6]}",
        "--env-json",
        str(state / "env.json"),
        "--keep-sqs",
        "-p",
        f"DatabaseUrl={database_url}",
        "-p",
        "RateLimitRequests=1000000",
        "-p",
        "LogLevel=ERROR",
    ]
    started = time.perf_counter()
    runtime = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_healthy(base, runtime, timeout=120)
        print(
            f"start: {time.perf_counter() - started:.1f} s from the command to /health answering (venvs present)"
        )
        key = json.loads((state / "dev-api-key.json").read_text())["key"]
        run_load(base, key, args)
        result = report(database_url, args)
    finally:
        runtime.send_signal(signal.SIGINT)
        try:
            runtime.wait(30)
        except subprocess.TimeoutExpired:
            runtime.kill()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    print("RESULT " + json.dumps(result, sort_keys=True))


def wait_healthy(base: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"notify-local exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise SystemExit("the API did not answer in time")


def run_load(base: str, key: str, args: argparse.Namespace) -> None:
    per_request = args.batch_size
    path = "/api/v1/notifications/batch" if per_request > 1 else "/api/v1/notifications"
    requests_per_second = args.rate / per_request
    total = int(args.seconds * requests_per_second)
    item = {
        "channel": "email",
        "provider": "console",
        "payload": {"to": "a@example.com", "subject": "s", "body": "b"},
    }
    body = json.dumps({"notifications": [item] * per_request} if per_request > 1 else item).encode()
    errors: list[str] = []
    late = 0
    lock = threading.Lock()

    def post() -> None:
        request = urllib.request.Request(
            base + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "X-Api-Key": key},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                if reply.status != 202:
                    with lock:
                        errors.append(str(reply.status))
        except urllib.error.HTTPError as exc:
            with lock:
                errors.append(str(exc.code))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i in range(total):  # open loop: requests leave on schedule whatever the replies do
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
        f"accepted; errors {len(errors)}; requests that left late {late}"
    )


def report(database_url: str, args: argparse.Namespace, wait: float = 60) -> dict[str, object]:
    expected = int(args.seconds * args.rate / args.batch_size) * args.batch_size
    deadline = time.monotonic() + wait
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            (sent,) = conn.execute("SELECT count(*) FROM notifications WHERE status = 'sent'").fetchone() or (
                0,
            )
            if sent >= expected:
                break
            time.sleep(0.5)
        rows = conn.execute(
            "SELECT extract(epoch FROM sent_at - created_at) * 1000, created_at, sent_at FROM notifications"
            " WHERE status = 'sent'"
        ).fetchall()
        by_status: dict[str, int] = dict(
            conn.execute("SELECT status, count(*) FROM notifications GROUP BY status").fetchall()
        )
    latencies = [float(r[0]) for r in rows]
    if not latencies:
        raise SystemExit(f"nothing was sent: {by_status}")
    span = (max(r[2] for r in rows) - min(r[1] for r in rows)).total_seconds()
    print(f"statuses: {by_status} (expected {expected} sent)")
    print(
        f"accepted→sent: p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms, "
        f"max {max(latencies):.0f} ms (target p99 ≤ 1000 ms); throughput {len(rows) / span:.0f} sent/s"
    )
    return {
        "statuses": by_status,
        "expected_sent": expected,
        "accepted_to_sent_ms": {
            "p50": round(percentile(latencies, 50)),
            "p99": round(percentile(latencies, 99)),
            "max": round(max(latencies)),
        },
        "sent_per_s": round(len(rows) / span),
    }


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    main()
