"""Metrics: the roll-up equals a direct count over the same rows, its percentiles are within 5% of
the exact ones, it is incremental (only what changed is recounted; late changes are caught) and
idempotent; GET /api/v1/metrics refuses reversed, too long and malformed ranges."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row

from notify_core import metrics_rollup
from notify_local.lambda_env import LambdaContext, load_handler
from notify_local.sandbox import Sandbox

from .conftest import EMAIL, SMS, Api, Pipeline, Tenant, create

pytestmark = pytest.mark.integration

PATH = "/api/v1/metrics"
START = datetime(2026, 10, 1, tzinfo=UTC)
HOURS = 30


def sql(test_env: Sandbox, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(test_env.database_url, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def fill(test_env: Sandbox, tenant_id: UUID, n: int = 4000, seed: float = 0.42) -> None:
    """`n` notifications over HOURS hours from START: channels, providers, statuses and categories
    mixed, sent ones with a log-normal latency (10 ms to minutes)."""
    with psycopg.connect(test_env.database_url) as conn:
        conn.execute("SELECT setseed(%s)", (seed,))
        conn.execute(
            "INSERT INTO notifications (id, tenant_id, channel, provider, payload, category, status, max_attempts,"
            " created_at, sent_at)"
            " SELECT gen_random_uuid(), %(tenant)s, ch, pr, '{}'::jsonb, cat, st, 5, at,"
            "   CASE WHEN st IN ('sent', 'delivered') THEN at + make_interval(secs => exp(ln(0.05) + 2.2 * g)) END"
            " FROM (SELECT %(start)s::timestamptz + random() * make_interval(hours => %(hours)s) AS at,"
            "   (ARRAY['email', 'email', 'sms', 'push'])[1 + floor(random() * 4)::int] AS ch,"
            "   (ARRAY['sent', 'sent', 'sent', 'delivered', 'failed', 'queued'])[1 + floor(random() * 6)::int] AS st,"
            "   (ARRAY[NULL, 'orders', 'marketing'])[1 + floor(random() * 3)::int] AS cat,"
            "   sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS g"
            "  FROM generate_series(1, %(n)s)) r,"
            " LATERAL (SELECT CASE ch WHEN 'email' THEN (ARRAY['sendgrid', 'ses'])[1 + floor(random() * 2)::int]"
            "   WHEN 'sms' THEN 'twilio' ELSE 'fcm' END AS pr) p",
            {"tenant": tenant_id, "start": START, "hours": HOURS, "n": n},
        )


def get(api: Api, **query: str) -> dict[str, Any]:
    reply = api("GET", PATH, query=query)
    assert reply.status == 200, reply.raw
    return dict(reply.json)


def window(**extra: str) -> dict[str, str]:
    return {"from": START.isoformat(), "to": (START + timedelta(hours=HOURS)).isoformat(), **extra}


def test_the_rollup_equals_a_direct_count(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    fill(test_env, tenant.id)
    metrics_rollup.rollup()
    report = get(api, **window(group_by="channel,provider,status,category"))
    got = {
        (
            b["bucket"],
            b["group"]["channel"],
            b["group"]["provider"],
            b["group"]["status"],
            b["group"]["category"],
        ): b["count"]
        for b in report["data"]
    }
    direct = sql(
        test_env,
        "SELECT to_char(date_trunc('hour', created_at, 'UTC') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS b,"
        " channel, provider, status, coalesce(category, '') AS category, count(*) AS n"
        " FROM notifications WHERE tenant_id = %s GROUP BY 1, 2, 3, 4, 5",
        (tenant.id,),
    )
    assert got == {(r["b"], r["channel"], r["provider"], r["status"], r["category"]): r["n"] for r in direct}
    assert sum(got.values()) == 4000


def test_percentiles_are_within_five_percent_of_exact(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    fill(test_env, tenant.id, n=6000, seed=0.17)
    metrics_rollup.rollup()
    exact_sql = (
        "SELECT date_trunc(%(unit)s, created_at, 'UTC') AS b, channel,"
        " percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM sent_at - created_at) * 1000) AS p, count(sent_at) AS n"
        " FROM notifications WHERE tenant_id = %(tenant)s AND sent_at IS NOT NULL GROUP BY 1, 2"
    )
    checked = 0
    for unit in ("hour", "day"):
        exact = {
            (r["b"], r["channel"]): ([float(v) for v in r["p"]], r["n"])
            for r in sql(test_env, exact_sql, {"unit": unit, "tenant": tenant.id})
        }
        for bucket in get(api, **window(granularity=unit, group_by="channel"))["data"]:
            latency = bucket["latency_ms"]
            when = datetime.fromisoformat(bucket["bucket"])
            truth, sent = exact[(when, bucket["group"]["channel"])]
            assert latency["count"] == sent
            for estimate, value in zip((latency["p50"], latency["p95"], latency["p99"]), truth, strict=True):
                assert abs(estimate - value) <= 0.05 * value, (unit, bucket["bucket"], estimate, value)
                checked += 1
    assert checked > 100


def test_days_are_the_sum_of_their_hours(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    fill(test_env, tenant.id, n=1500, seed=0.9)
    metrics_rollup.rollup()
    hours = get(api, **window(group_by="status"))["data"]
    days = get(api, **window(granularity="day", group_by="status"))["data"]
    per_day: dict[tuple[str, str], int] = defaultdict(int)
    for b in hours:
        per_day[(b["bucket"][:10], b["group"]["status"])] += b["count"]
    assert {(b["bucket"][:10], b["group"]["status"]): b["count"] for b in days} == per_day
    assert all(b["bucket"].endswith("T00:00:00Z") for b in days)


def test_the_rollup_is_idempotent_and_incremental(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    fill(test_env, tenant.id, n=800, seed=0.3)
    first = metrics_rollup.rollup()
    assert first["hours"] >= HOURS
    snapshot = sql(
        test_env,
        "SELECT * FROM metrics_hourly WHERE tenant_id = %s ORDER BY 1, 2, 3, 4, 5, 6, 7",
        (tenant.id,),
    )
    # nothing changed: nothing to recount, nothing written
    assert metrics_rollup.rollup()["hours"] == 0
    # recounting the same window writes the same rows
    metrics_rollup.rollup_window(START, START + timedelta(hours=HOURS), tenant.id)
    again = sql(
        test_env,
        "SELECT * FROM metrics_hourly WHERE tenant_id = %s ORDER BY 1, 2, 3, 4, 5, 6, 7",
        (tenant.id,),
    )
    assert again == snapshot


def test_a_late_change_is_caught_by_the_next_run(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    fill(test_env, tenant.id, n=300, seed=0.5)
    metrics_rollup.rollup()

    def by_status() -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for b in get(api, **window(group_by="status"))["data"]:
            total[b["group"]["status"]] += b["count"]
        return dict(total)

    before = by_status()
    # Given five notifications of hours already rolled up are sent late
    late = sql(
        test_env,
        "UPDATE notifications SET status = 'sent', sent_at = created_at + interval '2 seconds'"
        " WHERE id IN (SELECT id FROM notifications WHERE tenant_id = %s AND status = 'queued' LIMIT 5)"
        " RETURNING id",
        (tenant.id,),
    )
    assert len(late) == 5
    assert by_status() == before  # not yet rolled up
    assert 1 <= metrics_rollup.rollup()["hours"] <= 5  # only the hours that changed
    after = by_status()
    assert (after["queued"], after["sent"]) == (before["queued"] - 5, before["sent"] + 5)


def test_the_scheduled_function_rolls_up_what_was_sent(api: Api, pipeline: Pipeline) -> None:
    ids = [create(api, "email", EMAIL) for _ in range(3)] + [create(api, "sms", SMS)]
    pipeline.drain_sender()
    handler = load_handler("functions/metrics_rollup/", "app.handler")
    assert (
        handler(
            {"detail-type": "Scheduled Event", "source": "aws.events"}, LambdaContext("rollup", 256, 240)
        )["hours"]
        >= 1
    )
    report = get(api, group_by="channel,status")
    counts = {(b["group"]["channel"], b["group"]["status"]): b["count"] for b in report["data"]}
    assert counts == {("email", "sent"): 3, ("sms", "sent"): 1}
    email = next(b for b in report["data"] if b["group"]["channel"] == "email")
    assert email["latency_ms"]["count"] == 3 and email["latency_ms"]["p50"] > 0
    assert len(ids) == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2026-10-02T00:00:00Z", "to": "2026-10-01T00:00:00Z"}, "from"),
        ({"from": "2026-10-01T00:00:00Z", "to": "2026-10-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-04-02T00:00:00Z"}, "to"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2026-04-02T00:00:00Z", "granularity": "day"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-10-01T00:00:00"}, "from"),
        ({"to": "1970-01-01T00:00:00Z"}, "to"),
        ({"granularity": "minute"}, "granularity"),
        ({"group_by": "channel,tenant"}, "group_by"),
        ({"group_by": ""}, "group_by"),
    ],
)
def test_bad_ranges_are_refused(api: Api, query: dict[str, str], field: str) -> None:
    reply = api("GET", PATH, query=query)
    assert reply.status == 422, reply.raw
    assert reply.error["details"][0]["field"] == field


def test_long_ranges_at_day_granularity_are_fine(api: Api) -> None:
    report = get(api, **{"from": "2026-01-01T00:00:00Z", "to": "2026-04-02T00:00:00Z", "granularity": "day"})
    assert report["from"] == "2026-01-01T00:00:00Z" and report["data"] == []


def test_the_scope_is_required_and_tenants_see_only_their_own(
    api: Api,
    tenant: Tenant,
    test_env: Sandbox,
    make_tenant: Callable[..., Tenant],
    make_api: Callable[..., Api],
) -> None:
    fill(test_env, tenant.id, n=50)
    metrics_rollup.rollup()
    assert get(api, **window())["data"]
    assert get(make_api(make_tenant("other").key), **window())["data"] == []
    assert make_api(make_tenant(scopes=("notifications:read",)).key)("GET", PATH).status == 403


def test_a_backlog_is_worked_off_in_chunks_oldest_first(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    fill(test_env, tenant.id, n=500, seed=0.7)
    assert metrics_rollup.rollup(budget_s=0)["left"] == 1  # out of time: the marks wait
    first = metrics_rollup.rollup(budget_s=60, chunk=7)
    assert first["hours"] == HOURS and first["left"] == 0
    hours = sql(
        test_env, "SELECT DISTINCT hour FROM metrics_hourly WHERE tenant_id = %s ORDER BY 1", (tenant.id,)
    )
    assert [h["hour"] for h in hours] == [START + timedelta(hours=i) for i in range(HOURS)]
    assert sum(b["count"] for b in get(api, **window())["data"]) == 500
