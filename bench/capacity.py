"""Database capacity: the PostgreSQL work each notification costs, and what a database core carries.

A notification costs the database: its ingest (notifications.create: the INSERT, then the UPDATE
marking it queued), its claim (the sender's one UPDATE per batch) and its outcome (the sender's
pipelined transaction: the UPDATE to `sent` and the attempt INSERT). This runs that real domain code
- notifications.create, and the sender's handler on SQS events for those notifications, each worker
thread with its own copy of the handler module as each Lambda container has - with N concurrent
workers over a pool of N connections to the local PostgreSQL. What is not database work is taken
out: SQS (queue.send answers "sent" without a call) and the provider (the `console` provider, no
network).

The figure that transfers to another machine is CPU time: the CPU the database's backends serving
this run spent (read from /proc for the backends connected to the run's own database), per
notification; notifications/s per database core = 1000 / that. Wall-clock throughput is printed too,
but on a small machine the Python client shares the cores with PostgreSQL and bounds it.

    .venv/bin/python -m bench.capacity [--connections 1,2,4,8] [--seconds 8] [--ingest-batch 1,100]

Ingest batch 1 is POST /notifications (one row per transaction), 100 is POST /notifications/batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from bench.common import bench_sandbox
from notify_core import auth, db, notifications, queue
from notify_core.observability import logger
from notify_local.lambda_env import LambdaContext, load_handler
from notify_local.sandbox import Sandbox, reset_clients

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SENDER_BATCH = 10


def backend_cpu_seconds(database_url: str, dbname: str) -> dict[int, float] | None:
    """CPU seconds (user + system) of every backend connected to `dbname`, by pid; None when /proc
    of the server's processes cannot be read (a remote or containerised server)."""
    with psycopg.connect(database_url, autocommit=True, prepare_threshold=None) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
            ).fetchall()
        ]
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return out or None


@dataclass
class Phase:
    name: str
    connections: int
    notifications: int = 0
    wall_s: float = 0.0
    db_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.notifications / self.wall_s if self.wall_s else 0.0

    @property
    def db_cpu_ms_per_notification(self) -> float | None:
        if self.db_cpu_s is None or not self.notifications:
            return None
        return self.db_cpu_s * 1000 / self.notifications


def run_phase(
    phase: Phase,
    box: Sandbox,
    work: Callable[[int], int],
    seconds: float,
) -> Phase:
    """`work(worker)` does one unit and returns the notifications it covered; N workers for `seconds`."""
    dbname = str(psycopg.conninfo.conninfo_to_dict(box.database_url)["dbname"])
    stop = threading.Event()
    counts = [0] * phase.connections
    lock = threading.Lock()

    def loop(worker: int) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            done = work(worker)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                counts[worker] += done
                phase.latencies_ms.append(elapsed)

    before = backend_cpu_seconds(box.admin_url, dbname)
    client0 = time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(phase.connections)]
    # the handler's metrics (EMF lines on stdout) are not figures of this benchmark
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
    phase.wall_s = time.perf_counter() - started
    phase.client_cpu_s = time.process_time() - client0
    after = backend_cpu_seconds(box.admin_url, dbname)
    phase.notifications = sum(counts)
    if before is not None and after is not None:
        phase.db_cpu_s = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", default="1,2,4,8", help="concurrent workers = pool size")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured phase")
    parser.add_argument("--ingest-batch", default="1,100", help="notifications per ingest call")
    args = parser.parse_args()
    levels = [int(n) for n in args.connections.split(",")]
    ingest_sizes = [int(n) for n in args.ingest_batch.split(",")]

    logger.setLevel("WARNING")  # the console provider logs every message it "sends"
    results: list[dict[str, Any]] = []
    with bench_sandbox("capacity") as box:
        # Not database work: the queue answers "sent" without a call (the sender's events are built
        # from the ids), and the provider is the console one.
        queue.send = lambda messages, queue_url=None: queue.SendResult(
            sent=[m.notification_id for m in messages]
        )
        tenant = auth.create_tenant("capacity")
        arn = box.stack.queues["NotificationsQueue"].arn
        pending: list[list[UUID]] = []  # batches of SENDER_BATCH ids, as SQS delivers them
        loose: list[UUID] = []
        pending_lock = threading.Lock()

        def item(n: int) -> dict[str, Any]:
            return {
                "channel": "email",
                "provider": "console",
                "payload": {"to": f"c{n}.{uuid.uuid4().hex[:8]}@example.com", "subject": "s", "body": "b"},
            }

        def ingest(size: int) -> Callable[[int], int]:
            def work(worker: int) -> int:
                outcomes = notifications.create(tenant, [item(i) for i in range(size)], batch=size > 1)
                ids = [o.notification.id for o in outcomes if o.error is None]
                with pending_lock:
                    loose.extend(ids)
                    while len(loose) >= SENDER_BATCH:
                        pending.append(loose[:SENDER_BATCH])
                        del loose[:SENDER_BATCH]
                return len(ids)

            return work

        def sender(handlers: list[Any]) -> Callable[[int], int]:
            def work(worker: int) -> int:
                with pending_lock:
                    ids = pending.pop() if pending else None
                if ids is None:
                    time.sleep(0.01)
                    return 0
                event = {"Records": [_record(i, tenant, arn) for i in ids]}
                reply = handlers[worker](event, LambdaContext("SenderFunction", 512, 30))
                if reply.get("batchItemFailures"):
                    raise RuntimeError(f"sender failures: {reply}")
                return len(ids)

            return work

        for n in levels:
            os.environ["DB_POOL_MAX_SIZE"] = str(n)
            reset_clients()
            handlers = [
                load_handler("functions/sender/", "app.handler", instance=1000 * n + i) for i in range(n)
            ]
            for size in ingest_sizes:
                pending.clear()
                loose.clear()
                # warm-up: the pool opens its connections, the handlers their first batches
                run_phase(Phase("warm-up", n), box, ingest(size), 1.0)
                run_phase(Phase("warm-up", n), box, sender(handlers), 0.5)
                pending.clear()
                loose.clear()
                ing = run_phase(Phase(f"ingest x{size}", n), box, ingest(size), args.seconds)
                snd = run_phase(Phase("claim + outcome x10", n), box, sender(handlers), args.seconds)
                row = summarize(n, size, ing, snd)
                results.append(row)
                print(
                    f"connections {n:2}  ingest x{size:<3}  ingest {ing.per_s:7.0f}/s"
                    f" ({_ms(ing.db_cpu_ms_per_notification)} DB CPU each)"
                    f"  claim+outcome {snd.per_s:7.0f}/s ({_ms(snd.db_cpu_ms_per_notification)} each)"
                    f"  => {_fmt(row['per_db_core_per_s'])} notifications/s per DB core"
                )
            with db.transaction() as conn:
                conn.execute("TRUNCATE notifications CASCADE")

    # Sizing uses the most concurrent run: contention makes each notification a little dearer.
    top = max(levels)
    summary = {
        size: {
            "connections": top,
            "db_cpu_ms_per_notification": r["db_cpu_ms_per_notification"],
            "per_db_core_per_s": r["per_db_core_per_s"],
        }
        for size in ingest_sizes
        for r in results
        if r["ingest_batch"] == size and r["connections"] == top
    }
    print(f"per notification, with {top} connections:")
    for size, s in summary.items():
        print(
            f"  ingest x{size}: {s['db_cpu_ms_per_notification']} ms of DB CPU;"
            f" {_fmt(s['per_db_core_per_s'])} notifications/s per DB core"
        )
    print("RESULT " + json.dumps({"runs": results, "summary": summary}, sort_keys=True))


def _record(notification_id: UUID, tenant: UUID, arn: str) -> dict[str, Any]:
    now = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "capacity",
        "body": json.dumps({"id": str(notification_id), "tenant_id": str(tenant)}),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now,
            "SenderId": "000000000000",
            "ApproximateFirstReceiveTimestamp": now,
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


def summarize(n: int, size: int, ing: Phase, snd: Phase) -> dict[str, Any]:
    cpu_in, cpu_out = ing.db_cpu_ms_per_notification, snd.db_cpu_ms_per_notification
    total = cpu_in + cpu_out if cpu_in is not None and cpu_out is not None else None
    return {
        "connections": n,
        "ingest_batch": size,
        "ingest_per_s": round(ing.per_s),
        "sender_per_s": round(snd.per_s),
        "ingest_call_ms_p50": round(statistics.median(ing.latencies_ms), 2) if ing.latencies_ms else None,
        "db_cpu_ms": {
            "ingest": _round(cpu_in),
            "claim_and_outcome": _round(cpu_out),
        },
        "db_cpu_ms_per_notification": _round(total),
        "per_db_core_per_s": round(1000 / total) if total else None,
        "client_cpu_s": round(ing.client_cpu_s + snd.client_cpu_s, 2),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


if __name__ == "__main__":
    main()
