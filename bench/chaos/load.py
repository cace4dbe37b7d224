"""Open-loop load over the HTTP API: batches of email notifications leave on schedule whatever the
replies do, and every request's fate is kept (when it left, how long its answer took, the status,
the ids it accepted). A request without an answer (refused, reset, no answer within 30 s) is kept
too, with `status` None."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

CLIENT_TIMEOUT_S = 30.0


@dataclass
class Request:
    started: float  # epoch seconds when it left
    latency_s: float | None = None  # None: no answer
    status: int | None = None
    error: str | None = None  # why there was no answer
    accepted: list[str] = field(default_factory=list)  # notification ids the reply accepted


@dataclass
class Load:
    base_url: str
    api_key: str
    rate: float  # notifications per second
    seconds: float
    batch_size: int = 10
    on_accepted: Callable[[list[str]], None] | None = None
    requests: list[Request] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0  # when the last answer (or its absence) was known
    late: int = 0  # requests that left more than 50 ms after their time (the client fell behind)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _counter: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    @property
    def total_requests(self) -> int:
        return int(self.seconds * self.rate / self.batch_size)

    def accepted(self) -> list[str]:
        with self._lock:
            return [nid for r in self.requests for nid in r.accepted]

    def start(self) -> None:
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        interval = self.batch_size / self.rate
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=160, thread_name_prefix="load") as pool:
            for i in range(self.total_requests):
                delay = t0 + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.05:
                    self.late += 1
                pool.submit(self._post)
        self.ended_at = time.time()

    def _body(self) -> bytes:
        items = []
        for _ in range(self.batch_size):
            n = next(self._counter)
            items.append(
                {
                    "channel": "email",
                    "provider": "sendgrid",
                    "payload": {
                        "to": f"user{n}@example.com",
                        "from": "ops@example.com",
                        "subject": f"chaos {n}",
                        "body": "Hello from the fault-injection suite.",
                    },
                }
            )
        return json.dumps({"notifications": items}).encode()

    def _post(self) -> None:
        request = urllib.request.Request(
            self.base_url + "/api/v1/notifications/batch",
            data=self._body(),
            method="POST",
            headers={"Content-Type": "application/json", "X-Api-Key": self.api_key},
        )
        record = Request(started=time.time())
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as reply:
                raw = reply.read()
                record.status = reply.status
        except urllib.error.HTTPError as exc:
            exc.read()
            record.status = exc.code
            raw = b""
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            record.error = type(reason).__name__
            raw = b""
        if record.status is not None:
            record.latency_s = time.perf_counter() - t0
        if record.status in (202, 207) and raw:
            record.accepted = [str(item["id"]) for item in json.loads(raw)["results"] if "id" in item]
        with self._lock:
            self.requests.append(record)
        if record.accepted and self.on_accepted is not None:
            self.on_accepted(record.accepted)
