"""Listing benchmark: `GET /api/v1/notifications?status=<status>` on a tenant with 1M notifications
(another tenant beside it holds another 200k), through the domain's own query.

The statuses are distributed as a busy tenant's are (mostly sent, some failed, a few cancelled,
none `suppressed`): the rare and the absent status must stay fast as the table grows. Prints the
median (and range over runs) per status and the plan PostgreSQL chose.

Target: `?status=cancelled` ≤ 5 ms with an index scan (EXPLAIN names the index).

    .venv/bin/python -m bench.listing [--rows 1000000] [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import psycopg

from bench.common import bench_sandbox, spread
from notify_core import auth, notifications

# (status, share of the tenant's rows)
MIX = [("sent", 0.90), ("failed", 0.05), ("delivered", 0.0499), ("cancelled", 0.0001)]

FILL = """
INSERT INTO notifications (id, tenant_id, channel, provider, payload, status, max_attempts, created_at)
SELECT gen_random_uuid(), %(tenant)s, 'email', 'sendgrid', '{"to": "a@example.com", "subject": "s", "body": "b"}',
       %(status)s, 5, now() - (random() * interval '30 days')
FROM generate_series(1, %(count)s)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    result: dict[str, object] = {}
    with bench_sandbox("listing") as box:
        tenant, other = auth.create_tenant("big"), auth.create_tenant("neighbour")
        t0 = time.perf_counter()
        with psycopg.connect(box.database_url, autocommit=True) as conn:
            for status, share in MIX:
                conn.execute(FILL, {"tenant": tenant, "status": status, "count": int(args.rows * share)})
            conn.execute(FILL, {"tenant": other, "status": "cancelled", "count": args.rows // 5})
            conn.execute("VACUUM ANALYZE notifications")
        print(f"filled {args.rows:,} + {args.rows // 5:,} rows in {time.perf_counter() - t0:.0f} s")

        for status in ("cancelled", "suppressed", "failed", "sent"):
            notifications.list_page(tenant, status=status)  # warm the plan and the cache
            walls = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                page = notifications.list_page(tenant, status=status, limit=20)
                walls.append((time.perf_counter() - t0) * 1000)
            print(f"?status={status:<10} {spread(walls, ' ms')}, {len(page.data)} rows on the page")
            result[f"{status}_ms"] = round(statistics.median(walls), 2)

        with psycopg.connect(box.database_url) as conn:
            plan = conn.execute(
                "EXPLAIN (FORMAT JSON) SELECT id FROM notifications WHERE tenant_id = %s AND status = %s"
                " ORDER BY created_at DESC, id DESC LIMIT 21",
                (tenant, "cancelled"),
            ).fetchone()
        text = json.dumps(plan)
        index = "notifications_tenant_status_created_idx"
        result["uses_index"] = index in text
        print(f"plan for ?status=cancelled uses {index}: {index in text}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
