"""A local webhook endpoint: receives the platform's outgoing webhooks and verifies each with the
`standardwebhooks` library, as a customer would. For tests, benchmarks and `make dev`
(`python -m notify_local.webhook_receiver --port 8090 --secret whsec_...` prints what arrives).

It can answer slowly (`delay_ms`) and fail a fraction of requests (`fail_rate`, with a 503), to
exercise the dispatcher's retries. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: str
    time: float  # epoch seconds when it arrived
    status: int  # what the receiver answered
    verified: bool  # the signature matched a known secret (and the timestamp was fresh)
    error: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Behaviour:
    delay_ms: int = 0
    fail_rate: float = 0.0
    status: int = 200
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)


class WebhookReceiver:
    def __init__(self, secrets: list[str] | None = None, port: int = 0) -> None:
        self.secrets = list(secrets or [])
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.receiver = self  # type: ignore[attr-defined]
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def configure(
        self, *, delay_ms: int = 0, fail_rate: float = 0.0, status: int = 200, seed: int | None = None
    ) -> None:
        with self._lock:
            self.behaviour = Behaviour(delay_ms, fail_rate, status, seed, random.Random(seed))

    def verify(self, body: str, headers: dict[str, str]) -> str | None:
        """None when one of the secrets verifies the request, else why not."""
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        if not self.secrets:
            return "no secret to verify with"
        error = "no secret"
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                return None
            except WebhookVerificationError as exc:
                error = str(exc)
        return error

    def wait_for(self, count: int, timeout: float = 20, ok_only: bool = True) -> list[Received]:
        """Block until `count` requests (answered 2xx, unless ok_only=False) arrived."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                got = [r for r in self.received if not ok_only or 200 <= r.status < 300]
                left = deadline - time.monotonic()
                if len(got) >= count or left <= 0:
                    return got
                self._arrived.wait(timeout=left)

    def _record(self, item: Received) -> None:
        with self._arrived:
            self.received.append(item)
            self._arrived.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # listen backlog (set before bind): the default 5 drops bursts of connects


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        receiver: WebhookReceiver = self.server.receiver  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        arrived = time.time()
        headers = {k.lower(): v for k, v in self.headers.items()}
        with receiver._lock:
            behaviour = receiver.behaviour
            fail = behaviour.fail_rate > 0 and behaviour.rng.random() < behaviour.fail_rate
        if behaviour.delay_ms:
            time.sleep(behaviour.delay_ms / 1000)
        error = receiver.verify(body, headers)
        status = 401 if error else (503 if fail else behaviour.status)
        receiver._record(Received(headers, body, arrived, status, error is None, error))
        reply = b'{"ok": true}' if status < 300 else b'{"ok": false}'
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):  # the sender gave up (its timeout)
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m notify_local.webhook_receiver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--secret", action="append", default=[], help="whsec_... (repeatable: during a rotation)"
    )
    args = parser.parse_args(argv)
    receiver = WebhookReceiver(args.secret, args.port).start()
    print(f"webhook receiver on {receiver.url}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            for item in receiver.received[seen:]:
                mark = "verified" if item.verified else f"NOT verified ({item.error})"
                print(f"{item.headers.get('webhook-id')} {mark}: {item.body}", flush=True)
            seen = len(receiver.received)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
