"""Failover benchmark: a tenant's email route is SendGrid (priority 1) then Amazon SES (priority 2);
SendGrid (the provider stub, in its own process) answers 503 to everything. 1,000 notifications go
through the real pipeline: ingest (SQS), five sender invocations in parallel polling the queue as
Lambda's event source mapping does, the real SendGrid SDK against the stub and boto3 against the
local AWS emulator's SES (LocalStack when it serves ses, else moto's server in its own process).

Prints, per run (default: the breaker as deployed, then without it):
- whether every notification ended `sent` through SES;
- the time from the first failure on SendGrid to the first send through SES, against the retry
  delay of one attempt (RETRY_BASE_SECONDS: attempt 1 waits between half and all of it);
- per notification that failed on SendGrid, the time from that failure to its send through SES;
- how many attempts SendGrid took (the breaker skips it after a few faults in a row) and the wall
  time for all 1,000.

    .venv/bin/python -m bench.failover [--notifications 1000] [--runs 3]

The five invocations share this process's breaker; in AWS each sender container learns on its own
(a few more failed attempts per container).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg

from bench.common import bench_sandbox, percentile, spread, stub_process
from notify_core import audit, auth, clients, notifications, provider_configs
from notify_core.observability import logger
from notify_local.lambda_env import LambdaContext, load_handler, sqs_event
from notify_local.provider_stub import STUB_SENDGRID_API_KEY
from notify_local.sandbox import Sandbox

SENDER = "failover@example.com"
INVOCATIONS = 5  # the template's SenderMaxConcurrency


def _serves_ses(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=3) as reply:
            return json.load(reply)["services"].get("ses") not in (None, "disabled")
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def ses_endpoint(sqs_endpoint: str) -> Iterator[tuple[str, str]]:
    """(endpoint, kind): the SQS endpoint's LocalStack when it serves SES, else moto in a process."""
    given = os.environ.get("BENCH_SES_ENDPOINT")
    if given or _serves_ses(sqs_endpoint):
        yield (given or sqs_endpoint), "localstack"
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint, "moto"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def drain(box: Sandbox, total_ids: set[str], timeout_s: float) -> float:
    """Five pollers invoke the sender until every notification is final; returns the wall time."""
    queue = box.stack.queues["NotificationsQueue"]
    sqs = boto3.client("sqs", endpoint_url=box.sqs_endpoint, region_name="us-east-1")
    done = threading.Event()
    started = time.perf_counter()

    def poll(instance: int) -> None:
        sender = load_handler("functions/sender/", "app.handler", instance)
        while not done.is_set():
            got = sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                continue
            reply = sender(sqs_event(got, queue.arn), LambdaContext("SenderFunction", 512, 30))
            failed = {f["itemIdentifier"] for f in reply["batchItemFailures"]}
            entries: list[Any] = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(got)
                if m["MessageId"] not in failed
            ]
            if entries:
                sqs.delete_message_batch(QueueUrl=queue.url, Entries=entries)

    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(INVOCATIONS)]
    for t in threads:
        t.start()
    with psycopg.connect(box.database_url) as conn:
        while time.perf_counter() - started < timeout_s:
            (left,) = conn.execute(
                "SELECT count(*) FROM notifications WHERE id = ANY(%s::uuid[])"
                " AND status NOT IN ('sent', 'failed')",
                (list(total_ids),),
            ).fetchone()  # type: ignore[misc]
            if left == 0:
                break
            time.sleep(0.1)
    wall = time.perf_counter() - started
    done.set()
    for t in threads:
        t.join(timeout=5)
    return wall


def run(box: Sandbox, n: int, breaker: bool) -> dict[str, Any]:
    os.environ["PROVIDER_BREAKER_FAILURES"] = "5" if breaker else "0"
    clients.reset()
    tenant = auth.create_tenant(f"failover-{breaker}", actor=None)
    for body in (
        {
            "channel": "email",
            "provider": "sendgrid",
            "priority": 1,
            "credentials": {"api_key": STUB_SENDGRID_API_KEY},
            "settings": {"default_from": SENDER},
        },
        {"channel": "email", "provider": "ses", "priority": 2, "settings": {"default_from": SENDER}},
    ):
        provider_configs.create(
            tenant, provider_configs.ProviderConfigCreate.model_validate(body), audit.SYSTEM
        )
    ids: set[str] = set()
    for start in range(0, n, 100):
        items = [
            {"channel": "email", "payload": {"to": f"u{i}@example.com", "subject": "Failover", "body": "Hi"}}
            for i in range(start, min(n, start + 100))
        ]
        outcomes = notifications.create(tenant, items)
        assert all(o.error is None for o in outcomes)
        ids |= {str(o.notification.id) for o in outcomes}
    wall = drain(box, ids, timeout_s=600)
    with psycopg.connect(box.database_url) as conn:
        statuses: dict[str, int] = dict(
            conn.execute(
                "SELECT status || '/' || provider, count(*) FROM notifications WHERE tenant_id = %s GROUP BY 1",
                (tenant,),
            ).fetchall()
        )
        attempts: dict[str, int] = dict(
            conn.execute(
                "SELECT provider || '/' || outcome, count(*) FROM notification_attempts WHERE tenant_id = %s"
                " GROUP BY 1",
                (tenant,),
            ).fetchall()
        )
        first_fail, first_secondary = conn.execute(
            "SELECT min(created_at) FILTER (WHERE provider = 'sendgrid' AND outcome <> 'sent'),"
            " min(created_at) FILTER (WHERE provider = 'ses' AND outcome = 'sent')"
            " FROM notification_attempts WHERE tenant_id = %s",
            (tenant,),
        ).fetchone()  # type: ignore[misc]
        per_row = [
            float(s)
            for (s,) in conn.execute(
                "SELECT extract(epoch FROM s.created_at - f.created_at) FROM notification_attempts f"
                " JOIN notification_attempts s ON s.notification_id = f.notification_id AND s.provider = 'ses'"
                " AND s.outcome = 'sent' WHERE f.tenant_id = %s AND f.provider = 'sendgrid'",
                (tenant,),
            ).fetchall()
        ]
    gap = (first_secondary - first_fail).total_seconds() if first_fail and first_secondary else None
    return {
        "breaker": breaker,
        "all_sent_via_ses": statuses == {"sent/ses": n},
        "statuses": statuses,
        "attempts": attempts,
        "first_failure_to_secondary_s": None if gap is None else round(gap, 3),
        "failover_per_notification_s": {
            "n": len(per_row),
            "p50": round(percentile(per_row, 50), 3) if per_row else None,
            "p99": round(percentile(per_row, 99), 3) if per_row else None,
            "max": round(max(per_row), 3) if per_row else None,
        },
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notifications", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="runs per breaker setting")
    args = parser.parse_args()
    logger.setLevel("ERROR")  # the breaker's warnings would bury the figures
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    with (
        stub_process() as stub,
        bench_sandbox("failover") as box,
        ses_endpoint(box.sqs_endpoint) as (ses, kind),
    ):
        print(f"secondary: SES on {ses} ({kind}); primary: SendGrid on the stub, 503 to everything")
        os.environ.update(stub.env(), SES_BASE_URL=ses)
        boto3.client("ses", endpoint_url=ses, region_name="us-east-1").verify_email_identity(
            EmailAddress=SENDER
        )
        stub.configure("sendgrid", fail_rate=1.0, failure="5xx")
        retry_base = float(os.environ.get("RETRY_BASE_SECONDS", "30"))
        runs: dict[str, list[dict[str, Any]]] = {"breaker": [], "no_breaker": []}
        for _ in range(args.runs):
            for breaker in (True, False):
                result = run(box, args.notifications, breaker)
                runs["breaker" if breaker else "no_breaker"].append(result)
                print(json.dumps(result))
        summary: dict[str, Any] = {
            "notifications": args.notifications,
            "secondary": f"ses ({kind})",
            "retry_delay_of_one_attempt_s": [retry_base / 2, retry_base],
        }
        for name, results in runs.items():
            gaps = [r["first_failure_to_secondary_s"] for r in results]
            per = [r["failover_per_notification_s"]["p99"] for r in results]
            walls = [r["wall_s"] for r in results]
            primary = [sum(v for k, v in r["attempts"].items() if k.startswith("sendgrid/")) for r in results]
            print(
                f"{name}: all sent via SES in {sum(r['all_sent_via_ses'] for r in results)}/{len(results)} runs;"
                f" first failure -> first SES send {spread(gaps, ' s', 3)};"
                f" per-notification failover p99 {spread(per, ' s', 3)}; SendGrid attempts {spread(primary, '', 0)};"
                f" wall {spread(walls, ' s')}"
            )
            summary[name] = {
                "all_sent_via_ses": all(r["all_sent_via_ses"] for r in results),
                "first_failure_to_secondary_s": {
                    "median": statistics.median(gaps),
                    "min": min(gaps),
                    "max": max(gaps),
                },
                "failover_p99_s": {"median": statistics.median(per), "max": max(per)},
                "sendgrid_attempts": {
                    "median": statistics.median(primary),
                    "min": min(primary),
                    "max": max(primary),
                },
                "wall_s": {"median": statistics.median(walls), "min": min(walls), "max": max(walls)},
                "within_one_retry_delay": max(gaps) <= retry_base / 2,
            }
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
