"""Property-based fuzzing of the HTTP API with Schemathesis: requests generated from the OpenAPI
document the API serves, sent over HTTP to the local runtime (notify-local's Runtime: the template's
routes, API Gateway's own replies, the real ApiFunction), against the worker's real PostgreSQL,
Redis and SQS. Valid and invalid requests alike (Schemathesis' positive and negative modes, with
NUL characters allowed); each reply must

* not be a 5xx (not_a_server_error), and
* conform to the document: a documented status, content type, headers and body schema.

`make test` runs a few examples per operation (FUZZ_EXAMPLES, default 10); `make fuzz` runs
thousands and writes the figures to FUZZ_RESULT (bench-style `RESULT {json}`), counting every
violation instead of stopping at the first (FUZZ_MODE=count).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from notify_core import auth, clients
from notify_local import provider_callbacks
from notify_local.lambda_env import LambdaContext, load_handler, rest_event
from notify_local.runtime import Runtime
from notify_local.sandbox import Sandbox

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
COUNT_ONLY = os.environ.get("FUZZ_MODE") == "count"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    nonconforming: int = 0
    slowest_ms: float = 0.0
    total_ms: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def result(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "nonconforming": self.nonconforming,
            "duration_s": round(time.monotonic() - self.started, 1),
            "slowest_ms": round(self.slowest_ms, 1),
            "mean_ms": round(self.total_ms / max(1, self.requests), 1),
            "examples_per_operation": EXAMPLES,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(self.failures.most_common(20)),
        }


@dataclass
class Target:
    url: str
    headers: dict[str, str]
    session: requests.Session
    tally: Tally


@pytest.fixture(scope="module")
def fuzz_target(test_env: Sandbox) -> Iterator[Target]:
    # A tenant whose key has every scope and a rate limit the fuzzer does not reach: the point is
    # what the API does with the input, not the limiter (tested elsewhere).
    tenant = auth.create_tenant("fuzz")
    key = auth.create_api_key(tenant, "fuzz", auth.SCOPES, rate_limit=1_000_000).key
    runtime = Runtime(test_env.stack, test_env.sqs, port=0, kinds=("api",), functions={"ApiFunction"})
    # a deployment configured to verify provider callbacks (without a key they are a 503, by design)
    saved = {name: os.environ.get(name) for name in ("SENDGRID_WEBHOOK_PUBLIC_KEY", "TWILIO_AUTH_TOKEN")}
    os.environ.update(
        SENDGRID_WEBHOOK_PUBLIC_KEY=provider_callbacks.sendgrid_public_key(), TWILIO_AUTH_TOKEN="fuzz"
    )
    clients.forget("callback-provider-settings")
    runtime.start()
    tally = Tally()
    try:
        with requests.Session() as session:
            assert session.get(f"{runtime.url}/swagger?format=json", timeout=10).json() == DOCUMENT
            yield Target(runtime.url, {"X-Api-Key": key, "Authorization": f"Bearer {key}"}, session, tally)
    finally:
        runtime.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clients.forget("callback-provider-settings")
        if os.environ.get("FUZZ_RESULT"):
            with open(os.environ["FUZZ_RESULT"], "w", encoding="utf-8") as out:
                json.dump(tally.result(), out)


def served_document() -> dict[str, Any]:
    """The document as the API serves it (GET /swagger?format=json, in-process: tests are generated
    at collection, before any server runs; the fixture checks the runtime serves the same)."""
    handler = load_handler("functions/api/", "app.handler")
    event = rest_event("GET", "/swagger", query={"format": "json"})
    event["requestContext"]["path"] = "/swagger"  # as notify-local serves it: no stage in the path
    reply = handler(event, LambdaContext("ApiFunction", 512, 25))
    assert reply["statusCode"] == 200, reply
    document: dict[str, Any] = json.loads(reply["body"])
    return document


DOCUMENT = served_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(
    max_examples=EXAMPLES,
    allow_x00=True,  # NUL characters in generated strings: the inputs that used to be 500s
    with_security_parameters=False,  # the fixture's key is sent; a random one would only be a 401
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not COUNT_ONLY,  # make test: the same inputs every run; make fuzz: new ones each time
    suppress_health_check=list(HealthCheck),
)
def test_no_input_is_a_5xx_and_every_reply_conforms_to_the_document(case: Any, fuzz_target: Target) -> None:
    started = time.perf_counter()
    response = case.call(
        base_url=fuzz_target.url, session=fuzz_target.session, headers=fuzz_target.headers, timeout=10
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    tally = fuzz_target.tally
    with tally.lock:
        tally.requests += 1
        tally.statuses[response.status_code] += 1
        tally.slowest_ms = max(tally.slowest_ms, elapsed_ms)
        tally.total_ms += elapsed_ms
        if response.status_code >= 500:
            tally.server_errors += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=fuzz_target.headers)
    except (FailureGroup, AssertionError) as failure:
        with tally.lock:
            if response.status_code < 500:
                tally.nonconforming += 1
            tally.failures[
                f"{case.method} {case.path} {response.status_code}: {str(failure).splitlines()[0]}"
            ] += 1
        if not COUNT_ONLY:
            raise
