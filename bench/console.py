"""Console benchmark (issue 14): the bundle's size, and the first meaningful paint of the activity
feed with 100k notifications in the tenant (another 100k beside it in a neighbour tenant).

* bundle: every file under notify_core/console/static gzipped (-9), split into what the feed's
  first paint loads (the page, its style sheet, the shell and the feed's modules) and the rest
  (other sections, uPlot: fetched when first opened). Target: the whole ≤ 500 KB gzipped.
* first paint: Chromium (Debian's, through Playwright) opens /console on notify-local's API runtime
  with the key already in the tab (a returning operator), and reads the page's `feed-painted`
  performance mark: from navigation start to the first 50 rows in the table. A fresh browser context
  per run (nothing cached). The runtime is warmed with one request first; the paint of the very first
  run, whose requests start the API function's execution environments (a cold start per parallel
  request, as on Lambda), is reported on its own. Target: ≤ 1 s.
* the feed's queries through the domain at 100k rows: no filter, each filter the console offers.

    .venv/bin/python -m bench.console [--rows 100000] [--runs 7]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import bench_sandbox, spread
from notify_core import auth, console, notifications
from notify_local.runtime import Runtime

FIRST_PAINT = ("index.html", "console.css", "app.js", "api.js", "dom.js", "feed.js", "icon.svg")
FILL = """
INSERT INTO notifications (id, tenant_id, channel, provider, payload, category, status, max_attempts,
                           attempt_count, created_at, sent_at)
SELECT gen_random_uuid(), %(tenant)s, 'email', 'sendgrid',
       jsonb_build_object('to', 'user' || g || '@example.com', 'subject', 'Hi', 'body', 'Hello'),
       (ARRAY['orders', 'marketing', 'security'])[1 + g %% 3], 'sent', 5, 1,
       now() - g * interval '20 seconds', now() - g * interval '20 seconds'
FROM generate_series(1, %(count)s) AS g
"""


def bundle() -> dict[str, Any]:
    sizes = {}
    for name in [*console.names(), "index.html"]:
        raw = (console.STATIC / name).read_bytes()
        sizes[name] = (len(raw), len(gzip.compress(raw, compresslevel=9)))
    first = sum(gz for name, (_, gz) in sizes.items() if name in FIRST_PAINT)
    total = sum(gz for _, gz in sizes.values())
    for name, (raw, gz) in sorted(sizes.items(), key=lambda item: -item[1][1]):
        print(f"  {name:<22} {raw / 1024:7.1f} KB  {gz / 1024:6.1f} KB gz")
    print(f"bundle: {total / 1024:.1f} KB gz in all; {first / 1024:.1f} KB gz before the feed's first paint")
    return {"bundle_gz_kb": round(total / 1024, 1), "first_paint_gz_kb": round(first / 1024, 1)}


def paint(browser: Any, url: str, key: str) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        context.add_init_script(f"sessionStorage.setItem('notify-console-key', {key!r})")
        page = context.new_page()
        page.goto(f"{url}/console#/feed")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # polled from here: the console's policy forbids evaluating strings in the page
            found = page.evaluate("performance.getEntriesByName('feed-painted').map((e) => e.startTime)")
            if found:
                rows = page.locator("table.feed tbody tr").count()
                assert rows == 50, f"{rows} rows painted"
                return float(found[0])
            time.sleep(0.01)
        raise RuntimeError("the feed never painted")
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    result: dict[str, Any] = bundle()
    with bench_sandbox("console") as box:
        tenant, neighbour = auth.create_tenant("big"), auth.create_tenant("neighbour")
        key = auth.create_api_key(tenant, "bench", auth.SCOPES, actor=None).key
        t0 = time.perf_counter()
        with psycopg.connect(box.database_url, autocommit=True) as conn:
            conn.execute(FILL, {"tenant": tenant, "count": args.rows})
            conn.execute(FILL, {"tenant": neighbour, "count": args.rows})
            conn.execute("VACUUM ANALYZE notifications")
        print(f"filled {args.rows:,} + {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")

        # the feed's queries, through the domain (what GET /api/v1/notifications runs)
        now = datetime.now(UTC)
        queries: dict[str, dict[str, Any]] = {
            "none": {},
            "category": {"category": "security"},
            "q_recipient_prefix": {"q": "user4242"},
            "q_id": {"q": str(notifications.list_page(tenant, limit=1).data[0].id)},
            "time_range": {
                "created_after": now - timedelta(hours=6),
                "created_before": now - timedelta(hours=5),
            },
            "category_and_range": {"category": "orders", "created_after": now - timedelta(hours=6)},
        }
        for name, filters in queries.items():
            notifications.list_page(tenant, limit=50, **filters)  # warm
            walls = []
            for _ in range(20):
                started = time.perf_counter()
                page = notifications.list_page(tenant, limit=50, **filters)
                walls.append((time.perf_counter() - started) * 1000)
            print(f"feed query {name:<20} {spread(walls, ' ms')}, {len(page.data)} rows")
            result[f"query_{name}_ms"] = round(statistics.median(walls), 2)

        from playwright.sync_api import sync_playwright

        runtime = Runtime(box.stack, box.sqs, port=0, kinds=("api",), functions={"ApiFunction"})
        runtime.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=["--no-sandbox"]
                )
                try:
                    cold = paint(browser, runtime.url, key)
                    request = urllib.request.Request(
                        f"{runtime.url}/api/v1/whoami", headers={"X-Api-Key": key}
                    )
                    with urllib.request.urlopen(request, timeout=10) as reply:
                        assert reply.status == 200
                    paints = [paint(browser, runtime.url, key) for _ in range(args.runs)]
                finally:
                    browser.close()
        finally:
            runtime.stop()
    print(f"feed first paint, {args.rows:,} notifications: {spread(paints, ' ms', 0)}")
    print(f"  (the first run, starting the API function's environments: {cold:.0f} ms)")
    result["feed_first_paint_ms"] = round(statistics.median(paints))
    result["feed_first_paint_max_ms"] = round(max(paints))
    result["feed_first_paint_cold_runtime_ms"] = round(cold)
    result["rows"] = args.rows
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
