"""The operator console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
installed by scripts/bootstrap.sh and .ci/run; no `playwright install`, no network) against the
local runtime serving the real template.yaml: the API (and /console) over HTTP, the SQS pollers, the
schedules, the provider stub standing in for SendGrid and Twilio.

One system per module (its own database and queues: a sandbox named for this worker and `browser`,
so that it never meets the integration tier's), one browser per module, a fresh browser context
(its own sessionStorage) per test. Screenshots go to .local/screenshots/.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from notify_core import auth, providers
from notify_local.provider_stub import ProviderStub
from notify_local.runtime import Runtime
from notify_local.sandbox import Sandbox, reset_clients, sandbox

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".local" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.integration)


@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class System:
    runtime: Runtime
    env: Sandbox
    stub: ProviderStub
    tenant_id: Any
    key: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.runtime.url

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> Reply:
        headers = {"X-Api-Key": key or self.key, "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=15) as reply:
                raw, status = reply.read(), reply.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        return Reply(status, json.loads(raw) if raw else None)

    def create(self, payload: dict[str, Any], channel: str = "email", **extra: Any) -> str:
        reply = self.call("POST", "/api/v1/notifications", {"channel": channel, "payload": payload, **extra})
        assert reply.status == 202, reply.body
        return str(reply.body["id"])

    def status(self, nid: str) -> str:
        return str(self.call("GET", f"/api/v1/notifications/{nid}").body["status"])

    def wait_status(self, nid: str, status: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(nid) == status:
                return
            time.sleep(0.2)
        raise AssertionError(f"{nid} is {self.status(nid)!r} after {timeout} s, expected {status!r}")

    def sql(self, statement: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.env.database_url, row_factory=dict_row) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def new_key(self, scopes: tuple[str, ...] = auth.SCOPES, tenant_id: Any = None) -> auth.IssuedKey:
        return auth.create_api_key(tenant_id or self.tenant_id, "browser", scopes, actor=None)


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    if not os.environ.get("NOTIFY_TEST_SQS"):
        pytest.fail("integration services were not started (see tests/conftest.py)")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    patch = pytest.MonkeyPatch()
    with (
        sandbox(
            f"notify_test_{os.environ['NOTIFY_TEST_RUN']}_{worker}_browser",
            os.environ["NOTIFY_TEST_PG"],
            os.environ["NOTIFY_TEST_REDIS"],
            os.environ["NOTIFY_TEST_SQS"],
            overrides={"ApiKeyCacheSeconds": "0"},
            pooler_url=os.environ.get("NOTIFY_TEST_POOLER"),
        ) as env,
        ProviderStub() as stub,
    ):
        local = {"RETRY_BASE_SECONDS": "1", "RETRY_CAP_SECONDS": "2", "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"}
        for name, value in {**stub.env(), **local}.items():
            patch.setenv(name, value)
        reset_clients()
        providers.reset_providers()
        tenant_id = auth.create_tenant("Browser Co", actor=None)
        issued = auth.create_api_key(tenant_id, "console", auth.SCOPES, actor=None)
        # the retry sweeper's rate(1 minute) fires every 2 s
        runtime = Runtime(env.stack, env.sqs, port=0, poll_wait=1, schedule_speedup=30)
        runtime.start()
        system = System(runtime, env, stub, tenant_id, issued.key)
        try:
            yield system
        finally:
            runtime.stop()
            patch.undo()
            providers.reset_providers()
            if system.figures:
                SHOTS.mkdir(parents=True, exist_ok=True)
                (SHOTS / "figures.json").write_text(json.dumps(system.figures, indent=2))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/bootstrap.sh as root (apt-get install chromium)")
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root (CI containers)
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, system: System) -> Iterator[Any]:
    system.stub.reset()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    def take(page: Any, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def sign_in(page: Any, system: System, key: str | None = None) -> None:
    """Open the console and sign in with the keyboard (focus starts in the key field)."""
    page.goto(f"{system.url}/console")
    field = page.get_by_label("API key")
    field.wait_for()
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.keyboard.type(key or system.key)
    page.keyboard.press("Enter")
