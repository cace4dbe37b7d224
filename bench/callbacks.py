"""Callback ingest: SendGrid Event Webhook batches, signed by the stub's key, POSTed to the API
function in-process (real API Gateway events, real PostgreSQL), verified with the SDK helper,
stored once each, statuses and suppressions updated.

Each batch holds --batch events over --batch / 2 sent notifications: `delivered` for each, plus
`open` (most), `bounce` (2 %) and `spamreport` (1 %). Per round a fresh set of notifications; the
rate is events / wall time of the POST (verification + parsing + the one transaction). Afterwards
every stored event is counted against what was posted. The machine is shared: the figure is the
median of --rounds rounds with its range.

Target: ≥ 500 events/s per batch POST.

    .venv/bin/python -m bench.callbacks [--batch 1000] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.common import bench_sandbox, spread
from notify_core import auth, clients
from notify_local import provider_callbacks
from notify_local.lambda_env import LambdaContext, load_handler, rest_event


def notifications(database_url: str, tenant: uuid.UUID, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    payload = Jsonb({"to": "x@example.com", "subject": "s", "body": "b"})
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO notifications (id, tenant_id, channel, provider, payload, status, max_attempts, sent_at)"
            " SELECT i, %s, 'email', 'sendgrid', %s, 'sent', 5, now() FROM unnest(%s::uuid[]) AS i",
            (tenant, payload, ids),
        )
    return ids


def events_for(ids: list[str], tenant: uuid.UUID, size: int) -> list[dict[str, Any]]:
    now = int(time.time())
    out: list[dict[str, Any]] = []
    for n, nid in enumerate(ids):
        base = {
            "email": f"user{n}@example.com",
            "timestamp": now,
            "notification_id": nid,
            "tenant_id": str(tenant),
        }
        if n % 50 == 0:
            second = {"event": "bounce", "type": "bounce", "reason": "550 5.1.1 unknown user"}
        elif n % 100 == 1:
            second = {"event": "spamreport"}
        else:
            second = {"event": "open"}
        out.append({**base, "event": "delivered", "sg_event_id": uuid.uuid4().hex})
        out.append({**base, **second, "sg_event_id": uuid.uuid4().hex})
    return out[:size]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1000, help="events per POST")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with bench_sandbox("callbacks", overrides={"MaxBodyBytes": "4194304"}) as box:
        os.environ["SENDGRID_WEBHOOK_PUBLIC_KEY"] = provider_callbacks.sendgrid_public_key()
        clients.reset()
        tenant = auth.create_tenant("bench-callbacks")
        handler = load_handler("functions/api/", "app.handler")
        rates: list[float] = []
        posted = 0
        warm = True
        for _ in range(args.rounds + 1):
            ids = notifications(box.database_url, tenant, args.batch // 2)
            events = events_for(ids, tenant, args.batch)
            body, headers = provider_callbacks.sendgrid_request(events)
            event = rest_event("POST", "/callbacks/sendgrid", headers=headers, body=body.decode())
            t0 = time.perf_counter()
            reply = handler(event, LambdaContext("ApiFunction", 512, 25))
            elapsed = time.perf_counter() - t0
            result = json.loads(reply["body"])
            if reply["statusCode"] != 200 or result["stored"] != len(events):
                raise SystemExit(f"unexpected reply {reply['statusCode']}: {reply['body'][:300]}")
            posted += len(events)
            if warm:  # the first POST loads the SDK and warms the pool: not counted
                warm = False
                continue
            rates.append(len(events) / elapsed)
            print(
                f"  {len(events)} events ({len(body) / 1024:.0f} KiB) in {elapsed * 1000:.0f} ms = {len(events) / elapsed:.0f} events/s"
            )
        with psycopg.connect(box.database_url) as conn:
            (stored,) = conn.execute(
                "SELECT count(*) FROM delivery_events WHERE tenant_id = %s", (tenant,)
            ).fetchone() or (0,)
            statuses: dict[str, int] = dict(
                conn.execute(
                    "SELECT status, count(*) FROM notifications WHERE tenant_id = %s GROUP BY status",
                    (tenant,),
                ).fetchall()
            )
            (suppressed,) = conn.execute(
                "SELECT count(*) FROM suppressions WHERE tenant_id = %s", (tenant,)
            ).fetchone() or (0,)
    print(
        f"ingest: {spread(rates, ' events/s', 0)} per {args.batch}-event batch POST (target ≥ 500; shared, noisy machine)"
    )
    print(f"stored {stored} of {posted} events posted; notifications {statuses}; suppressions {suppressed}")
    print(
        "RESULT "
        + json.dumps(
            {
                "events_per_s_median": round(statistics.median(rates)),
                "events_per_s_min": round(min(rates)),
                "events_per_s_max": round(max(rates)),
                "batch": args.batch,
                "rounds": len(rates),
                "stored": stored,
                "posted": posted,
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    main()
