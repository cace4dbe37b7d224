"""Provider routes and failover: the pure decisions (`delivery.routing`) and the engine running rows
through a tenant's route with in-memory fakes (one fake provider per config). No services."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core import states
from notify_core.delivery import Deadline, Incoming, deliver
from notify_core.delivery.outcomes import Outcome
from notify_core.delivery.routing import (
    CHOICES,
    HISTORY,
    ROUTES,
    Breaker,
    Hop,
    Router,
    after_fault,
    choose,
)
from notify_core.delivery.steps import Claim
from notify_core.provider_configs import RouteConfig
from notify_core.providers import PermanentProviderError, Receipt, TransientProviderError

from .fakes import TENANT, FakeProvider, FakeStore, Row, World, message, world

UPDATED = datetime(2026, 11, 1, tzinfo=UTC)


def config(priority: int, provider: str = "fake", channel: str = "email") -> RouteConfig:
    return RouteConfig(uuid.uuid4(), TENANT, channel, provider, priority, {}, None, None, UPDATED)


def transient(code: str = "http_503", **kw: Any) -> TransientProviderError:
    return TransientProviderError("try later", code, provider="fake", **kw)


def auth() -> PermanentProviderError:
    return PermanentProviderError("credentials refused", "auth", provider="fake")


def invalid_number() -> PermanentProviderError:
    return PermanentProviderError("no such number", "invalid_number", provider="fake")


# ---------------------------------------------------------------- pure decisions


def test_the_first_config_goes_first_and_a_spent_budget_moves_on() -> None:
    a, b, c = config(1), config(2), config(3)
    assert choose([a, b, c], [], budget=1) == a
    assert choose([a, b, c], [Hop(a.id, "transient_error", "provider")], budget=1) == b
    assert choose([a, b, c], [Hop(a.id, "transient_error", "provider")], budget=2) == a
    two = [Hop(a.id, "transient_error", "provider"), Hop(b.id, "ambiguous", "provider")]
    assert choose([a, b, c], two, budget=1) == c
    # every config had its turn: round again from the top
    three = [*two, Hop(c.id, "transient_error", "provider")]
    assert choose([a, b, c], three, budget=1) == a


def test_rejected_credentials_exclude_a_config_for_the_cycle() -> None:
    a, b = config(1), config(2)
    rejected = [Hop(a.id, "permanent_error", "provider", "auth")]
    assert choose([a, b], rejected, budget=1) == b
    assert choose([a, b], [*rejected, Hop(b.id, "transient_error", "provider")], budget=1) == b
    assert choose([a, b], [*rejected, Hop(b.id, "permanent_error", "provider")], budget=1) is None


def test_recipient_faults_and_the_deployments_attempts_do_not_count() -> None:
    a, b = config(1), config(2)
    history = [
        Hop(a.id, "permanent_error", "recipient", "invalid_number"),
        Hop(None, "transient_error", "provider"),
    ]
    assert choose([a, b], history, budget=1) == a
    # attempts recorded before faults were: classified by their outcome and code
    assert Hop(a.id, "permanent_error", None, "auth").provider_fault
    assert Hop(a.id, "transient_error", None, "http_503").provider_fault
    assert not Hop(a.id, "permanent_error", None, "http_400").provider_fault


def test_an_open_breaker_is_skipped_unless_every_config_is_open() -> None:
    a, b = config(1), config(2)
    assert choose([a, b], [], 1, is_open=lambda i: i == a.id) == b
    assert choose([a, b], [], 1, is_open=lambda i: True) == a


def test_failover_goes_at_once_to_a_config_that_has_not_had_its_turn() -> None:
    a, b = config(1), config(2)
    first = [Hop(a.id, "transient_error", "provider")]
    moved = after_fault([a, b], first, a, transient(), budget=1)
    assert moved is not None and (moved.to, moved.immediate) == (b, True)
    # b fails too: back to a, after the backoff
    both = [*first, Hop(b.id, "transient_error", "provider")]
    moved = after_fault([a, b], both, b, transient(), budget=1)
    assert moved is not None and (moved.to, moved.immediate) == (a, False)
    # within the budget: stays, with the backoff
    moved = after_fault([a, b], first, a, transient(), budget=2)
    assert moved is not None and (moved.to, moved.immediate) == (a, False)


def test_rejected_credentials_fail_over_at_once_and_recipient_faults_never() -> None:
    a, b = config(1), config(2)
    moved = after_fault([a, b], [Hop(a.id, "permanent_error", "provider", "auth")], a, auth(), budget=1)
    assert moved is not None and (moved.to, moved.immediate) == (b, True)
    assert after_fault([a, b], [Hop(a.id, "permanent_error", "recipient")], a, invalid_number(), 1) is None
    last = [Hop(a.id, "permanent_error", "provider"), Hop(b.id, "permanent_error", "provider")]
    assert after_fault([a, b], last, b, auth(), budget=1) is None


HOPS = st.sampled_from(["transient", "ambiguous", "auth", "recipient"])


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=4),
    faults=st.lists(st.tuples(st.integers(min_value=0, max_value=3), HOPS), max_size=10),
    budget=st.integers(min_value=1, max_value=3),
    open_mask=st.integers(min_value=0, max_value=15),
)
def test_choices_respect_the_rules(
    n: int, faults: list[tuple[int, str]], budget: int, open_mask: int
) -> None:
    configs = [config(i) for i in range(n)]
    outcome = {
        "transient": "transient_error",
        "ambiguous": "ambiguous",
        "auth": "permanent_error",
        "recipient": "permanent_error",
    }
    history = [
        Hop(configs[i % n].id, outcome[kind], "recipient" if kind == "recipient" else "provider")
        for i, kind in faults
    ]
    is_open = lambda config_id: bool(open_mask & (1 << [c.id for c in configs].index(config_id)))  # noqa: E731
    rejected = {h.config_id for h in history if h.outcome == "permanent_error" and h.fault == "provider"}
    picked = choose(configs, history, budget, is_open)
    # never a rejected config; None only when all are
    assert (picked is None) == (rejected == {c.id for c in configs})
    if picked is None:
        return
    assert picked.id not in rejected
    usable = [c for c in configs if c.id not in rejected]
    spent = {
        c.id: sum(1 for h in history if h.config_id == c.id and h.outcome != "permanent_error") // budget
        for c in usable
    }
    closed = [c for c in usable if not is_open(c.id)]
    pool = closed or usable
    # the fewest spent budgets among the closed configs (all, when every one is open), then priority
    assert spent[picked.id] == min(spent[c.id] for c in pool)
    assert picked == min((c for c in pool if spent[c.id] == spent[picked.id]), key=configs.index)
    # a recipient's fault never moves anything
    assert after_fault(configs, history, picked, invalid_number(), budget, is_open) is None


def test_the_breaker_opens_after_faults_in_a_row_and_closes_after_a_success_or_its_time() -> None:
    now = [0.0]
    breaker = Breaker(clock=lambda: now[0])
    key = uuid.uuid4()
    assert not any(breaker.fault(key, 3, 30) for _ in range(2))
    assert breaker.fault(key, 3, 30) and breaker.is_open(key)
    now[0] = 31.0
    assert not breaker.is_open(key)
    breaker.fault(key, 3, 30)
    breaker.ok(key)
    assert not any(breaker.fault(key, 3, 30) for _ in range(2))
    assert not breaker.fault(uuid.uuid4(), 0, 30)  # 0: off


# ---------------------------------------------------------------- the engine with a route


class RoutedStore(FakeStore):
    """FakeStore that also keeps which config each attempt used, and prefetches routes and history
    as PgStore does."""

    def __init__(self, routes: list[RouteConfig]) -> None:
        super().__init__()
        self.routes = routes
        self.hops: dict[UUID, list[Hop]] = {}
        self.outcomes: list[Outcome] = []

    def prefetch(self, rows: Sequence[Claim]) -> dict[str, Any]:
        history = {
            r.id: list(self.hops.get(r.id, []))[len(self.hops.get(r.id, [])) - r.attempt_count :]
            for r in rows
        }
        return {ROUTES: {(TENANT, "email"): list(self.routes)}, HISTORY: history, CHOICES: {}}

    def record(self, claim_id: UUID, outcomes: Sequence[Outcome], rows: dict[UUID, Claim]) -> set[UUID]:
        moved = super().record(claim_id, outcomes, rows)
        for o in outcomes:
            if o.notification_id in moved and o.rule.attempt:
                self.hops.setdefault(o.notification_id, []).append(
                    Hop(o.provider_config_id, o.attempt_outcome, o.fault, o.error_code)
                )
                self.outcomes.append(o)
        return moved


def routed_world(*routes: RouteConfig, **settings: Any) -> tuple[World, dict[UUID, FakeProvider]]:
    w = world(**settings)
    store = RoutedStore(list(routes))
    w.store, w.queue.store = store, store
    providers = {c.id: FakeProvider() for c in routes}
    w.router = Router(providers=lambda c: providers[c.id], breaker=Breaker())  # type: ignore[attr-defined]
    return w, providers


def run(w: World, row: Row) -> Any:
    deps = w.deps()
    deps.router = getattr(w, "router", None)
    return deliver([Incoming("m0", message(row))], Deadline(60_000), deps)


def again(w: World, row: Row) -> Any:
    row.next_attempt_at = None  # as if the delay had passed
    return run(w, row)


def test_a_provider_outage_moves_the_next_attempt_to_the_secondary_at_once() -> None:
    primary, secondary = config(1), config(2)
    w, providers = routed_world(primary, secondary)
    row = w.store.add()
    providers[primary.id].script[row.id] = [transient()]
    first = run(w, row).outcomes["m0"]
    assert (first.kind, first.delay_s, first.provider_config_id, first.fault) == (
        "retry",
        0.0,
        primary.id,
        "provider",
    )
    second = again(w, row).outcomes["m0"]
    assert (second.kind, second.provider_config_id) == ("sent", secondary.id)
    assert providers[secondary.id].sent == [row.id]
    assert row.status == "sent" and row.attempt_count == 2


def test_a_recipient_error_fails_without_trying_the_secondary() -> None:
    primary, secondary = config(1), config(2)
    w, providers = routed_world(primary, secondary)
    row = w.store.add()
    providers[primary.id].script[row.id] = [invalid_number()]
    outcome = run(w, row).outcomes["m0"]
    assert (outcome.kind, outcome.fault) == ("failed", "recipient")
    assert providers[secondary.id].sent == [] and row.status == "failed"


def test_rejected_credentials_fail_over_and_the_last_config_decides() -> None:
    primary, secondary = config(1), config(2)
    w, providers = routed_world(primary, secondary)
    row = w.store.add()
    providers[primary.id].script[row.id] = [auth()]
    providers[secondary.id].script[row.id] = [auth()]
    first = run(w, row).outcomes["m0"]
    assert (first.kind, first.delay_s, first.attempt_outcome) == ("retry", 0.0, "permanent_error")
    second = again(w, row).outcomes["m0"]
    assert (second.kind, second.reason, second.provider_config_id) == (
        "failed",
        "permanent_error",
        secondary.id,
    )
    assert w.store.dead_letters == [(row.id, "permanent_error")]


def test_failover_attempts_count_against_max_attempts() -> None:
    primary, secondary = config(1), config(2)
    w, providers = routed_world(primary, secondary)
    row = w.store.add(max_attempts=1)
    providers[primary.id].script[row.id] = [auth()]
    assert run(w, row).outcomes["m0"].kind == "failed"
    assert providers[secondary.id].sent == []


def test_the_breaker_sends_new_notifications_straight_to_the_secondary() -> None:
    primary, secondary = config(1), config(2)
    w, providers = routed_world(primary, secondary, provider_breaker_failures=2)
    first, second, third = w.store.add(), w.store.add(), w.store.add()
    for row in (first, second):
        providers[primary.id].script[row.id] = [transient()]
        run(w, row)
    run(w, third)
    assert providers[primary.id].sent == [first.id, second.id]
    assert providers[secondary.id].sent == [third.id]
    assert "ProviderBreakerOpened" in w.metrics


def test_without_a_route_the_notifications_own_provider_sends() -> None:
    w = world()
    row = w.store.add()
    outcome = deliver([Incoming("m0", message(row))], Deadline(60_000), w.deps()).outcomes["m0"]
    assert (outcome.kind, outcome.provider, outcome.provider_config_id) == ("sent", "fake", None)


RESULTS = st.sampled_from(["ok", "transient", "ambiguous", "auth", "recipient"])


@settings(max_examples=150, deadline=None)
@given(
    scripts=st.lists(st.lists(RESULTS, max_size=6), min_size=1, max_size=3),
    max_attempts=st.integers(min_value=1, max_value=6),
    budget=st.integers(min_value=1, max_value=2),
)
def test_any_route_and_faults_keep_the_rules(
    scripts: list[list[str]], max_attempts: int, budget: int
) -> None:
    routes = [config(i) for i in range(len(scripts))]
    w, providers = routed_world(*routes, retry_base_seconds=1.0, provider_transient_budget=budget)
    row = w.store.add(max_attempts=max_attempts)
    errors = {
        "ok": Receipt("m", {}),
        "transient": transient(),
        "ambiguous": transient("timeout", ambiguous=True),
        "auth": auth(),
        "recipient": invalid_number(),
    }
    for c, script in zip(routes, scripts, strict=True):
        providers[c.id].script[row.id] = [errors[r] for r in script]
    for _ in range(max_attempts + 1):
        if row.status in states.TERMINAL:
            break
        again(w, row)
    outcomes = w.store.outcomes  # type: ignore[attr-defined]
    # every attempt went through a config of the route, and the transitions were legal (FakeStore)
    assert all(o.provider_config_id in {c.id for c in routes} for o in outcomes)
    assert row.attempt_count <= max_attempts and len(outcomes) == row.attempt_count
    # a recipient's fault ends it there; nothing is sent twice
    recipient = [i for i, o in enumerate(outcomes) if o.fault == "recipient"]
    if recipient:
        assert recipient == [len(outcomes) - 1] and row.status == "failed"
    assert sum(o.kind == "sent" for o in outcomes) == (row.status == "sent")
    # a config whose credentials were refused is never tried again in the cycle
    refused: set[UUID] = set()
    for o in outcomes:
        assert o.provider_config_id not in refused
        if o.attempt_outcome == "permanent_error" and o.fault == "provider":
            refused.add(o.provider_config_id)


def test_routes_are_cached_per_container_empty_ones_too() -> None:
    from notify_core.provider_configs import RouteCache

    now = [0.0]
    cache = RouteCache(clock=lambda: now[0])
    routed, plain = (TENANT, "email"), (TENANT, "sms")
    a = config(1)
    loads: list[set[tuple[UUID, str]]] = []

    def load(pairs: set[tuple[UUID, str]]) -> dict[tuple[UUID, str], list[RouteConfig]]:
        loads.append(set(pairs))
        return {routed: [a]} if routed in pairs else {}

    assert cache.routes([routed, plain], load) == {routed: [a]}
    assert cache.routes([routed, plain], load) == {routed: [a]}
    assert loads == [{routed, plain}]  # the second batch cost no query
    now[0] = 5.01  # PROVIDER_ROUTE_CACHE_SECONDS (5) later
    cache.routes([plain], load)
    cache.forget()  # a config changed in this container
    cache.routes([routed], load)
    assert loads == [{routed, plain}, {plain}, {routed}]
