"""Messages benchmark: `POST /api/v1/messages` to 100 users x 2 channels (email, sms) from a template
with a loop and 5 variables, against creating the same 200 notifications with ready payloads
through `POST /api/v1/notifications/batch` (two calls of 100). The API handler in-process against
real PostgreSQL, Redis and SQS, as bench.ingest does.

After a warm-up, each round times one message and one pair of batch calls, alternating (so both
see the same queue depth and table size); each figure is the median over --rounds rounds (≥ 5)
of --per-round repetitions, with the range over rounds. `ratio` = message notifications/s ÷ batch
notifications/s (target ≥ 0.8).

    .venv/bin/python -m bench.messages [--rounds 7] [--per-round 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from bench.common import bench_sandbox, spread
from notify_core import auth
from notify_local.lambda_env import LambdaContext, load_handler, rest_event

USERS = 100
TEMPLATE = {
    "key": "order-shipped",
    "name": "Order shipped",
    "variants": [
        {
            "channel": "email",
            "subject": "Order {{ order.id }} shipped",
            "body": (
                "Hi {{ name }}, your order {{ order.id }} is on its way:\n"
                "{% for item in items %}- {{ item.qty }} x {{ item.name }}\n{% endfor %}"
                "Total {{ total }} {{ currency }}."
            ),
        },
        {
            "channel": "sms",
            "body": "{{ name }}: order {{ order.id }} ({% for item in items %}{{ item.name }} {% endfor %}) shipped, "
            "{{ total }} {{ currency }}",
        },
    ],
}
DATA = {
    "name": "Ada",
    "order": {"id": "A-1042"},
    "items": [{"name": "Book", "qty": 1}, {"name": "Pen", "qty": 3}, {"name": "Lamp", "qty": 1}],
    "total": "42.00",
    "currency": "EUR",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=5)
    args = parser.parse_args()

    with bench_sandbox("messages", overrides={"RateLimitRequests": "1000000"}):
        tenant = auth.create_tenant("bench")
        key = auth.create_api_key(tenant).key
        handler = load_handler("functions/api/", "app.handler")
        headers = {"X-Api-Key": key, "Content-Type": "application/json"}

        def call(path: str, body: Any) -> dict[str, Any]:
            event = rest_event("POST", path, headers=headers, body=json.dumps(body))
            reply = handler(event, LambdaContext("ApiFunction", 512, 25))
            assert reply["statusCode"] < 300, reply["body"][:300]
            return reply

        call("/api/v1/templates", TEMPLATE)
        users = [
            json.loads(
                call("/api/v1/users", {"email": f"user{i}@example.com", "phone": f"+1415555{i:04d}"})["body"]
            )["id"]
            for i in range(USERS)
        ]
        rendered = {
            "email": {
                "subject": "Order A-1042 shipped",
                "body": "Hi Ada, your order A-1042 is on its way:\n- 1 x Book\n- 3 x Pen\n- 1 x Lamp\nTotal 42.00 EUR.",
            },
            "sms": {"body": "Ada: order A-1042 (Book Pen Lamp ) shipped, 42.00 EUR"},
        }
        batches = [
            {"notifications": [{"user_id": u, "channel": ch, "payload": rendered[ch]} for u in users]}
            for ch in ("email", "sms")
        ]
        message = {"to": users, "template": "order-shipped", "data": DATA, "channels": ["email", "sms"]}

        def timed_message() -> float:
            t0 = time.perf_counter()
            reply = call("/api/v1/messages", message)
            elapsed = time.perf_counter() - t0
            created = json.loads(reply["body"])
            assert len(created["notifications"]) == 2 * USERS
            assert not created["skipped"], created["skipped"]
            return elapsed

        def timed_batches() -> float:
            t0 = time.perf_counter()
            for batch in batches:
                reply = call("/api/v1/notifications/batch", batch)
                assert reply["statusCode"] == 202
            return time.perf_counter() - t0

        for _ in range(5):  # warm-up: pool, plans, LocalStack's queue, the template cache
            timed_message()
            timed_batches()
        message_rates: list[float] = []
        batch_rates: list[float] = []
        ratios: list[float] = []
        for _ in range(args.rounds):
            m_s: list[float] = []
            b_s: list[float] = []
            for _ in range(args.per_round):
                m_s.append(timed_message())
                b_s.append(timed_batches())
            message_rates.append(2 * USERS / statistics.median(m_s))
            batch_rates.append(2 * USERS / statistics.median(b_s))
            ratios.append(message_rates[-1] / batch_rates[-1])
        print(f"POST /messages, {USERS} users x 2 channels: {spread(message_rates, '/s', 0)} notifications/s")
        print(f"batch create, 2 x 100 ready payloads:   {spread(batch_rates, '/s', 0)} notifications/s")
        print(f"ratio messages/batch: {spread(ratios)} (target >= 0.8)")
        result = {
            "message_per_s": round(statistics.median(message_rates)),
            "batch_per_s": round(statistics.median(batch_rates)),
            "ratio": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
        }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
