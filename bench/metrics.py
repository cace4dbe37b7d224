"""Metrics benchmark: GET /api/v1/metrics over 30 days at hour granularity grouped by channel, on a
tenant with 1M notifications, through the API function's handler (gate, key, rate limit, query,
reply), against real PostgreSQL and Redis.

1. fills 1M notifications over 30 days with one INSERT ... generate_series (channels, providers,
   statuses, categories mixed; sent ones with a log-normal accepted->sent latency), which marks the
   720 hours stale through the statement trigger;
2. rolls them up (every hour recounted from the notifications) and reports the time and rows;
3. times the endpoint: warm-up, then --requests calls; median, range and p95 (target: <= 200 ms);
   prints the plan of the endpoint's query with the rows and buffers it reads;
4. times an incremental roll-up after 1,000 late changes spread over the month, and a re-run with
   nothing changed.

    .venv/bin/python -m bench.metrics [--notifications 1000000] [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import bench_sandbox, percentile, spread
from notify_core import auth, metrics_rollup
from notify_local.lambda_env import LambdaContext, load_handler, rest_event

END = datetime(2026, 11, 1, tzinfo=UTC)
START = END - timedelta(days=30)


def fill(url: str, tenant: Any, n: int) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            "INSERT INTO notifications (id, tenant_id, channel, provider, payload, category, status, max_attempts,"
            " created_at, sent_at)"
            " SELECT gen_random_uuid(), %(tenant)s, ch, pr, '{}'::jsonb, cat, st, 5, at,"
            "   CASE WHEN st IN ('sent', 'delivered') THEN at + make_interval(secs => exp(ln(0.2) + 1.2 * g)) END"
            " FROM (SELECT %(start)s::timestamptz + random() * interval '30 days' AS at,"
            "   (ARRAY['email', 'email', 'sms', 'push'])[1 + floor(random() * 4)::int] AS ch,"
            "   (ARRAY['sent', 'sent', 'sent', 'sent', 'delivered', 'delivered', 'failed', 'suppressed',"
            "          'cancelled', 'queued'])[1 + floor(random() * 10)::int] AS st,"
            "   (ARRAY[NULL, 'orders', 'marketing'])[1 + floor(random() * 3)::int] AS cat,"
            "   sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS g"
            "  FROM generate_series(1, %(n)s)) r,"
            " LATERAL (SELECT CASE ch WHEN 'email' THEN (ARRAY['sendgrid', 'ses'])[1 + floor(random() * 2)::int]"
            "   WHEN 'sms' THEN (ARRAY['twilio', 'sns'])[1 + floor(random() * 2)::int] ELSE 'fcm' END AS pr) p",
            {"tenant": tenant, "start": START, "n": n},
        )
        conn.execute("ANALYZE notifications")
    return time.perf_counter() - t0


def plans(url: str, tenant: Any) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the endpoint's query for 30 days x hour x channel."""
    query = (
        "SELECT extract(epoch FROM hour)::bigint, channel, count, latency_bins, latency_counts FROM metrics_hourly"
        " WHERE tenant_id = %(tenant)s AND dims = %(dims)s AND hour >= %(first)s AND hour < %(end)s"
    )
    with psycopg.connect(url) as conn:
        params = {"tenant": tenant, "first": START, "end": END, "dims": metrics_rollup.BITS["channel"]}
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params).fetchall()
    return ["\n".join(r[0] for r in rows)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notifications", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    result: dict[str, Any] = {"notifications": args.notifications}
    with bench_sandbox("metrics") as box:
        tenant = auth.create_tenant("metrics", actor=None)
        key = auth.create_api_key(tenant, "bench", ("metrics:read",), rate_limit=1_000_000, actor=None).key

        filled = fill(box.database_url, tenant, args.notifications)
        print(f"filled {args.notifications:,} notifications over 30 days in {filled:.1f} s")
        t0 = time.perf_counter()
        rolled = metrics_rollup.rollup(budget_s=3600, chunk=100)
        rollup_s = time.perf_counter() - t0
        with psycopg.connect(box.database_url) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM metrics_hourly").fetchone()  # type: ignore[misc]
            (bins,) = conn.execute(  # type: ignore[misc]
                "SELECT sum(cardinality(latency_bins)) FROM metrics_hourly"
            ).fetchone()
        print(
            f"roll-up: {rolled['hours']} hours recounted, {rows:,} hourly rows ({bins:,} histogram bins) in {rollup_s:.1f} s"
        )
        result.update(
            fill_s=round(filled, 1), rollup_s=round(rollup_s, 1), hourly_rows=rows, histogram_bins=int(bins)
        )

        handler = load_handler("functions/api/", "app.handler")
        query = {
            "from": START.isoformat(),
            "to": END.isoformat(),
            "granularity": "hour",
            "group_by": "channel",
        }

        def call(q: dict[str, str]) -> tuple[float, dict[str, Any]]:
            event = rest_event("GET", "/api/v1/metrics", headers={"X-Api-Key": key}, query=q)
            t = time.perf_counter()
            reply = handler(event, LambdaContext("ApiFunction", 512, 25))
            ms = (time.perf_counter() - t) * 1000
            assert reply["statusCode"] == 200, reply["body"][:300]
            return ms, json.loads(reply["body"])

        for _ in range(3):
            call(query)  # warm-up: imports, pool, key cache, PostgreSQL's buffers
        times = []
        body: dict[str, Any] = {}
        for _ in range(args.requests):
            ms, body = call(query)
            times.append(ms)
        buckets = len(body["data"])
        counted = sum(b["count"] for b in body["data"])
        print(
            f"GET /api/v1/metrics 30 days x hour x channel: {spread(times, ' ms', 1)}, p95"
            f" {percentile(times, 95):.1f} ms; {buckets} buckets, {counted:,} notifications counted"
        )
        result["metrics_ms"] = {
            "median": round(statistics.median(times), 1),
            "min": round(min(times), 1),
            "max": round(max(times), 1),
            "p95": round(percentile(times, 95), 1),
            "n": len(times),
        }
        result.update(buckets=buckets, counted=counted, target_ms=200)
        day_times = [call({**query, "granularity": "day"})[0] for _ in range(10)]
        full_times = [call({**query, "group_by": "channel,provider,status,category"})[0] for _ in range(10)]
        print(f"the same at day granularity: {spread(day_times, ' ms', 1)}")
        print(f"hour x all four dimensions: {spread(full_times, ' ms', 1)}")
        result["day_ms_median"] = round(statistics.median(day_times), 1)
        result["all_dimensions_ms_median"] = round(statistics.median(full_times), 1)
        for plan in plans(box.database_url, tenant):
            print(plan)

        # incremental: 1,000 late changes spread over the month, then a run with nothing changed
        with psycopg.connect(box.database_url) as conn:
            conn.execute(
                "UPDATE notifications SET status = 'sent', sent_at = created_at + interval '3 seconds'"
                " WHERE id IN (SELECT id FROM notifications WHERE tenant_id = %s AND status = 'queued' LIMIT 1000)",
                (tenant,),
            )
        t0 = time.perf_counter()
        late = metrics_rollup.rollup()
        late_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        idle = metrics_rollup.rollup()
        idle_s = time.perf_counter() - t0
        print(
            f"incremental roll-up after 1,000 late changes: {late['hours']} hours in {late_s:.2f} s;"
            f" with nothing changed: {idle['hours']} hours in {idle_s * 1000:.0f} ms"
        )
        result.update(
            incremental_hours=late["hours"], incremental_s=round(late_s, 2), idle_ms=round(idle_s * 1000)
        )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
