"""Usage metrics: hourly roll-ups of the notifications, and the query over them (GET /api/v1/metrics).

* A row of `metrics_hourly` counts the notifications one tenant accepted in one hour (UTC) per
  channel, provider, current status and category, with a histogram of their accepted→sent latency
  (`sent_at - created_at`) over fixed log-spaced bins: bin b holds [2^(b/8), 2^((b+1)/8)) ms, 256 bins
  up to ~45 days. Histograms of the same bins merge by adding counts, so days (and any group) come from
  hour rows, and a percentile read from the merged bins (nearest rank, the bin's geometric middle)
  is within 2^(1/16) - 1 = 4.4% of the exact one.
* Incremental: every statement that changes notifications marks the (tenant, hour) pairs it touched
  (a statement trigger into `metrics_stale_hours`, migration 0007). The roll-up takes the marks that
  are committed, recounts exactly those hours from the notifications, replaces their rows, and
  deletes exactly the marks it took, in one transaction. A mark committed while it runs stays for
  the next run, so a late change (a notification sent or delivered after its hour was rolled) is
  caught on the next run.
* Idempotent: an hour's rows are a function of its notifications, recounted from scratch; running
  again over the same hours (`rollup_window`) changes nothing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from .db import transaction
from .errors import ValidationFailed
from .observability import logger

BINS_PER_DOUBLING = 8
MAX_BIN = 255
ROLLUP_LOCK_ID = 0x6D657472  # "metr": one roll-up at a time
MAX_HOUR_RANGE = timedelta(days=90)
MAX_DAY_RANGE = timedelta(days=732)
DIMENSIONS = ("channel", "provider", "status", "category")
Granularity = Literal["hour", "day"]


def latency_bin(ms: float) -> int:
    """The bin of a latency in milliseconds (what the roll-up's SQL computes)."""
    return min(MAX_BIN, max(0, math.floor(BINS_PER_DOUBLING * math.log2(max(ms, 1.0)))))


def bin_value(index: int) -> float:
    """The geometric middle of a bin, in milliseconds."""
    return float(2 ** ((index + 0.5) / BINS_PER_DOUBLING))


def percentile(bins: dict[int, int], p: float) -> float | None:
    """The nearest-rank percentile `p` (0-100) of a histogram; None when it is empty."""
    total = sum(bins.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            return round(bin_value(index), 1)
    return round(bin_value(max(bins)), 1)  # not reached: the ranks add up to total


# ---------------------------------------------------------------- the roll-up

_BIN_SQL = (
    f"least({MAX_BIN}, greatest(0, floor({BINS_PER_DOUBLING} * ln(greatest("
    "extract(epoch FROM n.sent_at - n.created_at) * 1000, 1)) / ln(2))))::smallint"
)

_RECOUNT = f"""
WITH stale AS (SELECT DISTINCT * FROM unnest(%(tenants)s::uuid[], %(hours)s::timestamptz[]) AS s(tenant_id, hour)),
binned AS (
    SELECT n.tenant_id, s.hour, n.channel, n.provider, n.status, coalesce(n.category, '') AS category,
           CASE WHEN n.sent_at IS NOT NULL THEN {_BIN_SQL} END AS bin
    FROM stale s JOIN notifications n
      ON n.tenant_id = s.tenant_id AND n.created_at >= s.hour AND n.created_at < s.hour + interval '1 hour'
),
per_bin AS (
    SELECT tenant_id, hour, channel, provider, status, category, bin, count(*) AS c
    FROM binned GROUP BY tenant_id, hour, channel, provider, status, category, bin
)
INSERT INTO metrics_hourly (tenant_id, hour, channel, provider, status, category, count, latency_bins,
                            latency_counts)
SELECT tenant_id, hour, channel, provider, status, category, sum(c),
       coalesce(array_agg(bin ORDER BY bin) FILTER (WHERE bin IS NOT NULL), '{{}}'),
       coalesce(array_agg(c ORDER BY bin) FILTER (WHERE bin IS NOT NULL), '{{}}')
FROM per_bin GROUP BY tenant_id, hour, channel, provider, status, category
"""

_FORGET = """
DELETE FROM metrics_hourly m
USING (SELECT DISTINCT * FROM unnest(%(tenants)s::uuid[], %(hours)s::timestamptz[]) AS s(tenant_id, hour)) s
WHERE m.tenant_id = s.tenant_id AND m.hour = s.hour
"""


def _recount(conn: Any, stale: Sequence[tuple[UUID, datetime]], chunk: int = 500) -> int:
    """Replace the rows of these (tenant, hour) pairs with a fresh count; the rows written."""
    written = 0
    for i in range(0, len(stale), chunk):
        part = stale[i : i + chunk]
        params = {"tenants": [t for t, _ in part], "hours": [h for _, h in part]}
        conn.execute(_FORGET, params)
        written += conn.execute(_RECOUNT, params).rowcount
    return written


def rollup(statement_timeout_ms: int = 240_000) -> dict[str, int]:
    """Recount every hour a committed change marked stale (one transaction, one roll-up at a time:
    a run that finds another in progress does nothing). Returns the hours recounted and rows written."""
    with transaction() as conn:
        conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (ROLLUP_LOCK_ID,)).fetchone()
        if not (locked and locked["ok"]):
            logger.info("metrics roll-up already running elsewhere; skipped")
            return {"hours": 0, "rows": 0, "skipped": 1}
        taken = conn.execute("DELETE FROM metrics_stale_hours RETURNING tenant_id, hour").fetchall()
        stale = sorted({(r["tenant_id"], r["hour"]) for r in taken}, key=lambda p: (p[1], str(p[0])))
        # A deleted tenant's marks: its rows went with it, nothing to count.
        written = _recount(conn, stale) if stale else 0
    result = {"hours": len(stale), "rows": written, "marks": len(taken), "skipped": 0}
    logger.info("metrics roll-up done", extra=result)
    return result


def rollup_window(start: datetime, end: datetime, tenant_id: UUID | None = None) -> dict[str, int]:
    """Recount every hour in [start, end) (a backfill, or a check that nothing changes), for one
    tenant or all."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    with transaction() as conn:
        conn.execute("SET LOCAL statement_timeout = 600000")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_ID,))
        tenants = (
            [tenant_id]
            if tenant_id is not None
            else [r["id"] for r in conn.execute("SELECT id FROM tenants").fetchall()]
        )
        hours = []
        at = first
        while at < end:
            hours.append(at)
            at += timedelta(hours=1)
        stale = [(t, h) for t in tenants for h in hours]
        written = _recount(conn, stale)
    return {"hours": len(stale), "rows": written}


# ---------------------------------------------------------------- the query


class LatencyPercentiles(BaseModel):
    count: int = Field(description="Notifications of the bucket that were sent (their latency is known)")
    p50: float | None = Field(description="Milliseconds from acceptance to the provider taking it")
    p95: float | None
    p99: float | None


class MetricsBucket(BaseModel):
    bucket: datetime = Field(description="Start of the hour or day (UTC) the notifications were accepted in")
    group: dict[str, str] = Field(
        description="The values of the group_by dimensions", examples=[{"channel": "email"}]
    )
    count: int = Field(description="Notifications accepted in the bucket")
    by_status: dict[str, int] = Field(
        description="The same, by current status", examples=[{"sent": 98, "failed": 2}]
    )
    latency_ms: LatencyPercentiles | None = Field(description="Accepted→sent; null when none was sent")


class MetricsReport(BaseModel):
    start: datetime = Field(alias="from", description="The first bucket's start")
    end: datetime = Field(alias="to", description="Buckets start before this")
    granularity: Granularity
    group_by: list[str]
    data: list[MetricsBucket] = Field(description="Non-empty buckets, oldest first")

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


GroupBy = Annotated[
    str,
    Field(
        pattern=r"^(channel|provider|status|category)(,(channel|provider|status|category)){0,3}$",
        max_length=40,
        examples=["channel", "channel,status"],
    ),
]


def _window(
    start: datetime | None, end: datetime | None, granularity: Granularity
) -> tuple[datetime, datetime]:
    end = (end or datetime.now(UTC)).astimezone(UTC)
    start = (start or end - timedelta(days=1)).astimezone(UTC)
    if start >= end:
        raise ValidationFailed(
            "the range is empty or reversed: from must be before to",
            [{"field": "from", "message": "must be before to"}],
        )
    limit = MAX_HOUR_RANGE if granularity == "hour" else MAX_DAY_RANGE
    if end - start > limit:
        raise ValidationFailed(
            f"the range is too long for {granularity} buckets: at most {limit.days} days",
            [
                {
                    "field": "to",
                    "message": f"at most {limit.days} days after from at {granularity} granularity",
                }
            ],
        )
    first = start.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        first = first.replace(hour=0)
    return first, end


def query(
    tenant_id: UUID,
    start: datetime | None = None,
    end: datetime | None = None,
    granularity: Granularity = "hour",
    group_by: str | None = None,
) -> MetricsReport:
    """Counts per bucket and group, and accepted→sent percentiles, from the hourly rows (two queries)."""
    first, end = _window(start, end, granularity)
    dims = list(dict.fromkeys(group_by.split(","))) if group_by else []
    assert all(d in DIMENSIONS for d in dims), "GroupBy's pattern admits only the four dimensions"
    cols = "".join(f", {d}" for d in dims)
    params = {"tenant": tenant_id, "first": first, "end": end, "unit": granularity}
    where = "tenant_id = %(tenant)s AND hour >= %(first)s AND hour < %(end)s"
    with transaction() as conn:
        counts = conn.execute(
            f"SELECT date_trunc(%(unit)s, hour, 'UTC') AS bucket{cols}, status AS _status, sum(count)::bigint AS n"
            f" FROM metrics_hourly WHERE {where} GROUP BY 1{cols}, status",
            params,
        ).fetchall()
        bins = conn.execute(
            f"SELECT date_trunc(%(unit)s, hour, 'UTC') AS bucket{cols}, u.bin, sum(u.c)::bigint AS n"
            f" FROM metrics_hourly, unnest(latency_bins, latency_counts) AS u(bin, c)"
            f" WHERE {where} AND latency_bins <> '{{}}' GROUP BY 1{cols}, u.bin",
            params,
        ).fetchall()
    return MetricsReport(
        start=first, end=end, granularity=granularity, group_by=dims, data=_buckets(counts, bins, dims)
    )


def _buckets(
    counts: Iterable[dict[str, Any]], bins: Iterable[dict[str, Any]], dims: list[str]
) -> list[MetricsBucket]:
    totals: dict[tuple[Any, ...], dict[str, int]] = defaultdict(dict)
    for row in counts:
        key = (row["bucket"], *(row[d] for d in dims))
        totals[key][row["_status"]] = totals[key].get(row["_status"], 0) + int(row["n"])
    histograms: dict[tuple[Any, ...], dict[int, int]] = defaultdict(dict)
    for row in bins:
        key = (row["bucket"], *(row[d] for d in dims))
        histograms[key][int(row["bin"])] = int(row["n"])
    out = []
    for key in sorted(totals, key=lambda k: (k[0], *map(str, k[1:]))):
        histogram = histograms.get(key, {})
        sent = sum(histogram.values())
        latency = (
            LatencyPercentiles(
                count=sent,
                p50=percentile(histogram, 50),
                p95=percentile(histogram, 95),
                p99=percentile(histogram, 99),
            )
            if sent
            else None
        )
        out.append(
            MetricsBucket(
                bucket=key[0],
                group=dict(zip(dims, map(str, key[1:]), strict=True)),
                count=sum(totals[key].values()),
                by_status=dict(sorted(totals[key].items())),
                latency_ms=latency,
            )
        )
    return out
