"""The delivery steps with a provider route (routing.route, send, failover, the breaker) as plain
values: what each attempt records, where the next one goes, and what the breaker says. No services."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from notify_core import clients
from notify_core.audience.delivery import AudienceView
from notify_core.config import Settings
from notify_core.delivery import routing, steps
from notify_core.delivery.routing import CHOICES, HISTORY, ROUTES, Breaker, Choice, Hop, Router
from notify_core.delivery.steps import BatchContext, Claim
from notify_core.provider_configs import RouteConfig
from notify_core.providers import PermanentProviderError, Receipt, TransientProviderError

from .fakes import EMAIL, NOW, TENANT, FakeLimiter, FakeProvider

UPDATED = datetime(2026, 11, 1, tzinfo=UTC)


def config(priority: int, provider: str) -> RouteConfig:
    return RouteConfig(uuid.uuid4(), TENANT, "email", provider, priority, {}, None, None, UPDATED)


PRIMARY, SECONDARY, THIRD = config(1, "sendgrid"), config(2, "ses"), config(3, "smtp")


def claim(**fields: Any) -> Claim:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": TENANT,
        "user_id": None,
        "channel": "email",
        "provider": "fake",
        "payload": EMAIL,
        "attempt_count": 0,
        "max_attempts": 5,
    }
    return Claim(**(values | fields))


class Ticks:
    """Attempt durations: 1.5 s per reading."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.5
        return self.t


class Now:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


class Routed:
    """A BatchContext with a route of configs, one FakeProvider per config, and a breaker on a clock
    the test moves."""

    def __init__(self, *configs: RouteConfig, failures: int = 3, budget: int = 1, **settings: Any) -> None:
        self.clock = Now()
        self.providers = {c.id: FakeProvider() for c in configs}
        self.made: list[RouteConfig] = []
        self.router = Router(providers=self.make, breaker=Breaker(clock=self.clock))
        self.warnings: list[tuple[str, dict[str, Any]]] = []
        self.metrics: list[tuple[str, int]] = []
        values = {
            "retry_base_seconds": 10.0,
            "retry_cap_seconds": 1000.0,
            "provider_breaker_failures": failures,
            "provider_breaker_seconds": 30,
            "provider_transient_budget": budget,
        } | settings
        self.ctx = BatchContext(
            settings=Settings(**values),
            deadline=type("Plenty", (), {"remaining_s": lambda self: 60.0})(),
            limiter=FakeLimiter(),
            provider=lambda name: FakeProvider(),
            now=lambda: NOW,
            warn=lambda message, extra: self.warnings.append((message, extra)),
            metric=lambda name, value: self.metrics.append((name, value)),
            jitter=lambda low, high: low,
            clock=Ticks(),
            prefetched={ROUTES: {(TENANT, "email"): list(configs)}, HISTORY: {}, CHOICES: {}},
            router=self.router,
        )
        self.fail_before_send: dict[UUID, Exception] = {}

    def make(self, c: RouteConfig) -> Any:
        self.made.append(c)
        if c.id in self.fail_before_send:
            raise self.fail_before_send[c.id]
        return self.providers[c.id]

    def attempt(self, row: Claim) -> Any:
        assert routing.route(row, self.ctx) is None
        return steps.send(row, self.ctx)


def auth_refused(code: str = "auth") -> PermanentProviderError:
    return PermanentProviderError("credentials refused", code, provider="sendgrid")


# ---------------------------------------------------------------- the route step


def test_the_route_step_records_its_choice_and_nothing_else() -> None:
    r = Routed(PRIMARY, SECONDARY)
    row = claim()
    assert routing.route(row, r.ctx) is None
    assert r.ctx.prefetched[CHOICES] == {row.id: Choice("sendgrid", PRIMARY)}
    unrouted = claim(tenant_id=uuid.uuid4())
    assert routing.configs_of(unrouted, r.ctx) == ()
    assert routing.route(unrouted, r.ctx) is None
    assert r.ctx.prefetched[CHOICES][unrouted.id] == Choice("fake")


def test_with_every_config_rejected_the_first_is_tried_again() -> None:
    r = Routed(PRIMARY, SECONDARY)
    row = claim(attempt_count=2)
    r.ctx.prefetched[HISTORY] = {
        row.id: [
            Hop(PRIMARY.id, "permanent_error", "provider"),
            Hop(SECONDARY.id, "permanent_error", "provider"),
        ]
    }
    routing.route(row, r.ctx)
    assert routing.chosen(row, r.ctx) == Choice("sendgrid", PRIMARY)


def test_a_batch_without_prefetched_history_routes_from_the_top() -> None:
    r = Routed(PRIMARY, SECONDARY)
    del r.ctx.prefetched[HISTORY]
    row = claim()
    assert routing.history_of(row, r.ctx) == []
    routing.route(row, r.ctx)
    assert routing.chosen(row, r.ctx).config == PRIMARY


def test_the_containers_router_is_made_once() -> None:
    clients.forget("provider-router")
    made = routing.production_router()
    assert isinstance(made, Router) and routing.production_router() is made
    clients.forget("provider-router")


def test_without_its_own_router_the_step_uses_the_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Routed(PRIMARY, SECONDARY)
    r.ctx.router = None
    container = Router(providers=r.make, breaker=Breaker(clock=r.clock))
    monkeypatch.setattr(clients, "get", lambda name, make: container if name == "provider-router" else make())
    assert routing.production_router() is container
    container.breaker.fault(PRIMARY.id, 1, 30)  # the container's breaker is open for the primary
    row = claim()
    routing.route(row, r.ctx)
    assert routing.chosen(row, r.ctx).config == SECONDARY


# ---------------------------------------------------------------- send and failover


def test_a_routed_send_names_the_configs_provider() -> None:
    r = Routed(PRIMARY, SECONDARY)
    row = claim()
    r.providers[PRIMARY.id].script[row.id] = [Receipt("sg-1", {"status": 202})]
    outcome = r.attempt(row)
    assert (outcome.kind, outcome.provider, outcome.provider_config_id) == ("sent", "sendgrid", PRIMARY.id)
    assert r.made == [PRIMARY]


def test_a_transient_fault_moves_at_once_and_records_where_it_happened() -> None:
    r = Routed(PRIMARY, SECONDARY)
    row = claim()
    r.providers[PRIMARY.id].script[row.id] = [TransientProviderError("busy", "http_503", provider="sendgrid")]
    outcome = r.attempt(row)
    assert (outcome.kind, outcome.delay_s, outcome.provider, outcome.provider_config_id, outcome.fault) == (
        "retry",
        0.0,
        "sendgrid",
        PRIMARY.id,
        "provider",
    )


def test_rejected_credentials_retry_on_the_next_config_at_once() -> None:
    r = Routed(PRIMARY, SECONDARY)
    row = claim(attempt_count=1)
    r.providers[PRIMARY.id].script[row.id] = [auth_refused()]
    outcome = r.attempt(row)
    assert (outcome.kind, outcome.attempt, outcome.error, outcome.error_code) == (
        "retry",
        2,
        "auth: credentials refused",
        "auth",
    )
    assert (outcome.permanent, outcome.duration_ms, outcome.delay_s) == (True, 1500, 0.0)
    assert (outcome.provider, outcome.provider_config_id, outcome.fault) == (
        "sendgrid",
        PRIMARY.id,
        "provider",
    )


def test_a_permanent_provider_fault_back_on_a_config_that_had_its_turn_waits_the_backoff() -> None:
    # the secondary already failed transiently once; the primary's credentials are refused now:
    # the next attempt goes to the secondary, but after the backoff (it has had its turn)
    r = Routed(PRIMARY, SECONDARY, budget=2)
    row = claim(attempt_count=3)
    r.ctx.prefetched[HISTORY] = {row.id: [Hop(SECONDARY.id, "transient_error", "provider")]}
    r.ctx.prefetched[ROUTES] = {(TENANT, "email"): [PRIMARY, SECONDARY]}
    r.providers[PRIMARY.id].script[row.id] = [auth_refused()]
    outcome = r.attempt(row)
    assert (outcome.kind, outcome.attempt, outcome.delay_s) == ("retry", 4, 40.0)  # 10 · 2³ halved


def test_a_provider_fault_with_any_code_excludes_the_config() -> None:
    # a permanent error whose fault the provider declared (whatever its code) rejects the config
    r = Routed(PRIMARY, SECONDARY)
    row = claim()
    error = PermanentProviderError("account suspended", "http_401", provider="sendgrid", fault="provider")
    moved = routing.failover(row, r.ctx, Choice("sendgrid", PRIMARY), error)
    assert moved is not None and (moved.to, moved.immediate) == (SECONDARY, True)


def test_failover_skips_a_config_whose_breaker_is_open() -> None:
    r = Routed(PRIMARY, SECONDARY, THIRD)
    r.router.breaker.fault(SECONDARY.id, 1, 30)
    row = claim()
    error = TransientProviderError("busy", "http_503", provider="sendgrid")
    moved = routing.failover(row, r.ctx, Choice("sendgrid", PRIMARY), error)
    assert moved is not None and (moved.to, moved.immediate) == (THIRD, True)


def test_the_breaker_opening_is_counted_and_said_once() -> None:
    r = Routed(PRIMARY, SECONDARY, failures=2)
    error = TransientProviderError("busy", "http_503", provider="sendgrid")
    routing.failover(claim(), r.ctx, Choice("sendgrid", PRIMARY), error)
    assert (r.metrics, r.warnings) == ([], [])
    routing.failover(claim(), r.ctx, Choice("sendgrid", PRIMARY), error)
    assert r.metrics == [("ProviderBreakerOpened", 1)]
    assert r.warnings == [
        (
            "provider config skipped for a while after repeated faults",
            {"provider_config_id": str(PRIMARY.id), "provider": "sendgrid"},
        )
    ]
    # a recipient's fault is not the provider's: not counted
    routing.failover(claim(), r.ctx, Choice("sendgrid", SECONDARY), auth_refused("invalid_email"))
    assert r.metrics == [("ProviderBreakerOpened", 1)]


def test_failing_before_the_send_is_routed_too() -> None:
    r = Routed(PRIMARY, SECONDARY)
    r.fail_before_send[PRIMARY.id] = PermanentProviderError(
        "not configured", "not_configured", provider="sendgrid"
    )
    row = claim()
    outcome = r.attempt(row)
    assert (outcome.kind, outcome.delay_s, outcome.provider_config_id, outcome.duration_ms) == (
        "retry",
        0.0,
        PRIMARY.id,
        0,
    )
    r.fail_before_send[PRIMARY.id] = TransientProviderError("secret unavailable", "secret_unavailable")
    outcome = r.attempt(claim())
    assert (outcome.kind, outcome.delay_s, outcome.provider, outcome.provider_config_id) == (
        "retry",
        0.0,
        "sendgrid",
        PRIMARY.id,
    )


def test_an_ambiguous_send_failed_by_policy_names_its_route() -> None:
    r = Routed(PRIMARY, SECONDARY, ambiguous_sends="fail")
    row = claim()
    r.providers[PRIMARY.id].script[row.id] = [
        TransientProviderError("no answer", "timeout", ambiguous=True, provider="sendgrid")
    ]
    outcome = r.attempt(row)
    assert (outcome.kind, outcome.reason, outcome.provider, outcome.provider_config_id) == (
        "failed",
        "ambiguous",
        "sendgrid",
        PRIMARY.id,
    )


def test_a_success_resets_the_configs_breaker() -> None:
    r = Routed(PRIMARY, SECONDARY)
    breaker = r.router.breaker
    breaker.fault(PRIMARY.id, 3, 30)
    breaker.fault(PRIMARY.id, 3, 30)
    routing.succeeded(Choice("sendgrid", PRIMARY), r.ctx)
    assert not breaker.fault(PRIMARY.id, 3, 30) and not breaker.fault(PRIMARY.id, 3, 30)
    assert breaker.fault(PRIMARY.id, 3, 30) and breaker.is_open(PRIMARY.id)
    routing.succeeded(Choice("sendgrid", PRIMARY), r.ctx)  # closes it at once
    assert not breaker.is_open(PRIMARY.id)
    routing.succeeded(Choice("fake"), r.ctx)  # the deployment's provider has no breaker


# ---------------------------------------------------------------- the breaker


def test_the_breaker_counts_afresh_after_opening_and_closes_when_its_time_is_up() -> None:
    now = [0.0]
    breaker = Breaker(clock=lambda: now[0])
    key = uuid.uuid4()
    assert breaker.fault(key, 1, 30)  # a threshold of one opens at the first fault
    assert breaker.is_open(key)
    now[0] = 30.0  # its time is up exactly
    assert not breaker.is_open(key)
    assert [breaker.fault(key, 2, 30) for _ in range(4)] == [False, True, False, True]


# ---------------------------------------------------------------- audience headers on the send


def test_a_non_critical_email_carries_the_one_click_unsubscribe_headers() -> None:
    r = Routed()
    provider = FakeProvider()
    r.ctx.provider = lambda name: provider
    r.ctx.prefetched["audience"] = AudienceView(critical={(TENANT, "security")})
    steps.send(claim(category="news"), r.ctx)
    steps.send(claim(category="security"), r.ctx)
    news, security = provider.messages
    assert set(news.headers) == {"List-Unsubscribe", "List-Unsubscribe-Post"}
    assert security.headers == {}


def test_without_an_audience_view_the_audience_steps_pass() -> None:
    r = Routed()
    row = claim(user_id=uuid.uuid4())
    assert (steps.suppression(row, r.ctx), steps.preference(row, r.ctx), steps.quiet_hours(row, r.ctx)) == (
        None,
        None,
        None,
    )


def test_a_hold_is_at_least_a_second() -> None:
    r = Routed()
    user = uuid.uuid4()
    r.ctx.prefetched["audience"] = AudienceView(
        users={user: {"timezone": "UTC", "quiet_hours": {"start": "11:00", "end": "12:00"}}}
    )
    r.ctx.now = lambda: NOW - timedelta(milliseconds=300)  # 11:59:59.7, 0.3 s before the end
    outcome = steps.quiet_hours(claim(user_id=user), r.ctx)
    assert outcome is not None and (outcome.kind, outcome.delay_s) == ("held", 1.0)
    r.ctx.now = lambda: NOW - timedelta(seconds=90)
    outcome = steps.quiet_hours(claim(user_id=user), r.ctx)
    assert outcome is not None and outcome.delay_s == 90.0


# ---------------------------------------------------------------- prefetch


class Conn:
    def __init__(self, attempts: list[dict[str, Any]]) -> None:
        self.attempts = attempts
        self.queries: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any) -> Any:
        self.queries.append((sql, params))
        return type("Cursor", (), {"fetchall": lambda _: list(self.attempts)})()


class Cache:
    """The container's route cache, empty: every pair is read through the loader it is given."""

    def __init__(self) -> None:
        self.asked: list[set[tuple[UUID, str]]] = []

    def routes(self, pairs: set[tuple[UUID, str]], load: Any) -> dict[tuple[UUID, str], list[RouteConfig]]:
        self.asked.append(pairs)
        return dict(load(set(pairs)))


def stored_routes(
    monkeypatch: pytest.MonkeyPatch, routes: dict[tuple[UUID, str], list[RouteConfig]]
) -> tuple[Cache, list[tuple[Any, set[tuple[UUID, str]]]]]:
    cache, loads = Cache(), []

    def load_routes(conn: Any, pairs: set[tuple[UUID, str]]) -> dict[tuple[UUID, str], list[RouteConfig]]:
        loads.append((conn, pairs))
        return {p: routes[p] for p in pairs if p in routes}

    monkeypatch.setattr(routing, "route_cache", cache)
    monkeypatch.setattr(routing, "load_routes", load_routes)
    return cache, loads


def attempt_row(
    notification: UUID, config_id: UUID | None, outcome: str, fault: str | None, code: str | None
) -> Any:
    return {
        "notification_id": notification,
        "provider_config_id": config_id,
        "outcome": outcome,
        "fault": fault,
        "error_code": code,
    }


def test_prefetch_reads_the_current_cycle_of_routed_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    other_tenant = uuid.uuid4()
    cache, loads = stored_routes(monkeypatch, {(TENANT, "email"): [PRIMARY, SECONDARY]})
    replayed = claim(attempt_count=1)  # two earlier attempts, then a replay: only the last is this cycle's
    fresh = claim(attempt_count=0)
    unrouted = claim(attempt_count=2, tenant_id=other_tenant)
    conn = Conn(
        [
            attempt_row(replayed.id, PRIMARY.id, "transient_error", "provider", "http_503"),
            attempt_row(replayed.id, PRIMARY.id, "permanent_error", "provider", "auth"),
            attempt_row(replayed.id, SECONDARY.id, "ambiguous", "provider", "timeout"),
        ]
    )
    out = routing.prefetch(conn, [replayed, fresh, unrouted])
    assert cache.asked == [{(TENANT, "email"), (other_tenant, "email")}]
    assert loads == [(conn, {(TENANT, "email"), (other_tenant, "email")})]
    assert out == {
        ROUTES: {(TENANT, "email"): [PRIMARY, SECONDARY]},
        HISTORY: {replayed.id: [Hop(SECONDARY.id, "ambiguous", "provider", "timeout")]},
        CHOICES: {},
    }
    ((sql, params),) = conn.queries
    assert sql == (
        "SELECT notification_id, provider_config_id, outcome, fault, error_code"
        " FROM notification_attempts WHERE notification_id = ANY(%s) ORDER BY notification_id, id"
    )
    assert params == ([replayed.id],)


def test_prefetch_of_fresh_rows_costs_no_query(monkeypatch: pytest.MonkeyPatch) -> None:
    stored_routes(monkeypatch, {(TENANT, "email"): [PRIMARY]})
    conn = Conn([])
    out = routing.prefetch(conn, [claim(), claim(attempt_count=3, tenant_id=uuid.uuid4())])
    assert out == {ROUTES: {(TENANT, "email"): [PRIMARY]}, HISTORY: {}, CHOICES: {}}
    assert conn.queries == []
