"""Provider routes and failover: which provider, through which of the tenant's configs, an attempt
goes, and where the next attempt goes after a fault.

* The route of a notification is the tenant's active configs for its channel, in priority order
  (prefetched for the whole batch in one query, kept PROVIDER_ROUTE_CACHE_SECONDS per container, with
  the attempt history of the batch's routed rows in another: `prefetch`). A tenant without configs for the channel keeps the deployment's provider:
  the notification's own `provider`, configured from the environment, without failover.
* `route` (the first step) picks the config: the first in priority order that this notification has
  not exhausted in its current cycle (since it was created or replayed), skipping configs whose
  breaker is open while another is available.
* A fault moves on only when it is the provider's (`ProviderError.fault`): a permanent one (its
  credentials or configuration rejected: `auth`, `not_configured`) excludes that config for the
  cycle; transient ones count against PROVIDER_TRANSIENT_BUDGET per config. A recipient's fault
  (an invalid number, an unregistered token, an invalid payload) never fails over. Moving to a config
  that has not had its turn yet happens at once (no backoff: another provider need not wait for the
  first to recover); once every config had its turn, the usual backoff applies.
* The breaker (per container): after PROVIDER_BREAKER_FAILURES provider faults in a row on a config,
  new attempts skip it for PROVIDER_BREAKER_SECONDS, so an outage costs a few failed sends, not one
  per notification. It never makes a route refuse to send: with every config open, the usual order
  applies.

Every attempt records the config it went through and whose fault a failure was; the notification's
`provider` becomes the provider of its latest attempt (the one that sent it, once sent).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .. import clients
from ..provider_configs import RouteConfig, config_providers, load_routes, route_cache
from ..providers import Provider, ProviderError
from ..providers.base import PROVIDER_FAULT_CODES

if TYPE_CHECKING:
    from .outcomes import Outcome
    from .steps import BatchContext, Claim

# Keys of BatchContext.prefetched
ROUTES = "routing.routes"  # (tenant, channel) -> [RouteConfig] in priority order
HISTORY = "routing.history"  # notification id -> [Hop] of its current cycle, oldest first
CHOICES = "routing.choices"  # notification id -> Choice (written by the `route` step)


@dataclass(frozen=True, slots=True)
class Hop:
    """One past attempt: the config it went through (None: the deployment's provider), its outcome
    (`sent`, `transient_error`, `permanent_error`, `ambiguous`) and whose fault a failure was."""

    config_id: UUID | None
    outcome: str
    fault: str | None = None
    code: str | None = None

    @property
    def provider_fault(self) -> bool:
        if self.outcome == "sent":
            return False
        if self.fault is not None:
            return self.fault == "provider"
        # attempts recorded before faults were: the rules of providers.base
        return self.outcome in ("transient_error", "ambiguous") or self.code in PROVIDER_FAULT_CODES


@dataclass(frozen=True, slots=True)
class Choice:
    """Where an attempt goes: a provider, through one of the tenant's configs or not."""

    provider: str
    config: RouteConfig | None = None

    @property
    def config_id(self) -> UUID | None:
        return self.config.id if self.config else None


# ---------------------------------------------------------------- decisions (pure)


def tally(history: Sequence[Hop]) -> tuple[Counter[UUID], set[UUID]]:
    """(transient provider faults per config, configs whose credentials/configuration were rejected)."""
    transient: Counter[UUID] = Counter()
    rejected: set[UUID] = set()
    for hop in history:
        if hop.config_id is None or not hop.provider_fault:
            continue
        if hop.outcome == "permanent_error":
            rejected.add(hop.config_id)
        else:
            transient[hop.config_id] += 1
    return transient, rejected


def choose(
    configs: Sequence[RouteConfig],
    history: Sequence[Hop],
    budget: int,
    is_open: Callable[[UUID], bool] = lambda config_id: False,
) -> RouteConfig | None:
    """The config for the next attempt: among those not rejected in this cycle, the fewest spent
    transient budgets first, then priority; a config whose breaker is open only when all are. None
    when every config was rejected (or there are none)."""
    transient, rejected = tally(history)
    usable = [c for c in configs if c.id not in rejected]
    if not usable:
        return None
    ranked = sorted(usable, key=lambda c: (transient[c.id] // budget, configs.index(c)))
    return next((c for c in ranked if not is_open(c.id)), ranked[0])


@dataclass(frozen=True, slots=True)
class Failover:
    """After a provider's fault: the config the next attempt goes to, and whether it goes at once."""

    to: RouteConfig
    immediate: bool


def after_fault(
    configs: Sequence[RouteConfig],
    history: Sequence[Hop],
    current: RouteConfig,
    error: ProviderError,
    budget: int,
    is_open: Callable[[UUID], bool] = lambda config_id: False,
) -> Failover | None:
    """Where the next attempt goes after `error` on `current` (history includes that attempt).

    None: no failover — a recipient's fault, or no other config to go to (a permanent fault on the
    last usable config). A transient fault that does not spend the budget stays on `current`
    (immediate False: the usual backoff)."""
    if error.fault != "provider":
        return None
    nxt = choose(configs, history, budget, is_open)
    if nxt is None:
        return None
    transient, _ = tally(history)
    if error.transient:
        immediate = nxt.id != current.id and transient[nxt.id] < transient[current.id]
    else:
        immediate = transient[nxt.id] <= transient[current.id]
    return Failover(nxt, immediate)


# ---------------------------------------------------------------- the breaker


class Breaker:
    """Provider faults in a row per config, in this container; open for a while after too many."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._faults: Counter[UUID] = Counter()
        self._open_until: dict[UUID, float] = {}
        self._lock = threading.Lock()

    def is_open(self, config_id: UUID) -> bool:
        until = self._open_until.get(config_id)
        return until is not None and until > self._clock()

    def fault(self, config_id: UUID, threshold: int, seconds: float) -> bool:
        """Count one provider fault; True when it opened the breaker."""
        if threshold <= 0:
            return False
        with self._lock:
            self._faults[config_id] += 1
            if self._faults[config_id] < threshold:
                return False
            self._faults[config_id] = 0
            self._open_until[config_id] = self._clock() + seconds
            return True

    def ok(self, config_id: UUID) -> None:
        with self._lock:
            self._faults.pop(config_id, None)
            self._open_until.pop(config_id, None)


@dataclass
class Router:
    """The collaborators of routing: provider instances per config and the breaker."""

    providers: Callable[[RouteConfig], Provider] = field(default=lambda config: config_providers()(config))
    breaker: Breaker = field(default_factory=Breaker)


def production_router() -> Router:
    """The container's router (its breaker lives as long as the container)."""
    return clients.get("provider-router", Router)


# ---------------------------------------------------------------- prefetch (one query each)


def prefetch(conn: Any, rows: Sequence[Claim]) -> dict[str, Any]:
    """The routes of the batch's (tenant, channel) pairs (from the container's route cache, else one
    query for the pairs it lacks), and the current cycle's attempts of the routed rows that have had
    any (one query). A batch whose routes are cached and whose rows are fresh costs no query."""
    routes = route_cache.routes(
        {(r.tenant_id, r.channel) for r in rows}, lambda pairs: load_routes(conn, pairs)
    )
    history: dict[UUID, list[Hop]] = {}
    tried = {
        r.id: r.attempt_count for r in rows if r.attempt_count > 0 and (r.tenant_id, r.channel) in routes
    }
    if tried:
        found = conn.execute(
            "SELECT notification_id, provider_config_id, outcome, fault, error_code"
            " FROM notification_attempts WHERE notification_id = ANY(%s) ORDER BY notification_id, id",
            (list(tried),),
        ).fetchall()
        for row in found:
            history.setdefault(row["notification_id"], []).append(
                Hop(row["provider_config_id"], row["outcome"], row["fault"], row["error_code"])
            )
        # The cycle: the row's last `attempt_count` attempts (a replay starts a new one at 0).
        history = {nid: hops[len(hops) - tried[nid] :] for nid, hops in history.items()}
    return {ROUTES: routes, HISTORY: history, CHOICES: {}}


# ---------------------------------------------------------------- the step and its helpers


def router(ctx: BatchContext) -> Router:
    return ctx.router if ctx.router is not None else production_router()


def configs_of(row: Claim, ctx: BatchContext) -> Sequence[RouteConfig]:
    routes: Mapping[tuple[UUID, str], Sequence[RouteConfig]] = ctx.prefetched.get(ROUTES, {})
    return routes.get((row.tenant_id, row.channel), ())


def history_of(row: Claim, ctx: BatchContext) -> list[Hop]:
    return list(ctx.prefetched.get(HISTORY, {}).get(row.id, ()))


def route(row: Claim, ctx: BatchContext) -> Outcome | None:
    """Pick the provider (and config) of this attempt; never decides the row by itself."""
    configs = configs_of(row, ctx)
    if not configs:
        choice = Choice(row.provider)
    else:
        budget = ctx.settings.provider_transient_budget
        config = choose(configs, history_of(row, ctx), budget, router(ctx).breaker.is_open)
        # Every config was rejected in this cycle (the route changed since): try the first again,
        # its credentials may have been fixed.
        config = config or configs[0]
        choice = Choice(config.provider, config)
    ctx.prefetched.setdefault(CHOICES, {})[row.id] = choice
    return None


def chosen(row: Claim, ctx: BatchContext) -> Choice:
    """The route step's choice for `row` (the notification's own provider when it did not run)."""
    found: Choice | None = ctx.prefetched.get(CHOICES, {}).get(row.id)
    return found or Choice(row.provider)


def provider_for(choice: Choice, ctx: BatchContext) -> Provider:
    """The provider instance: the deployment's by name, or the config's own."""
    if choice.config is None:
        return ctx.provider(choice.provider)
    return router(ctx).providers(choice.config)


def succeeded(choice: Choice, ctx: BatchContext) -> None:
    if choice.config is not None:
        router(ctx).breaker.ok(choice.config.id)


def failover(row: Claim, ctx: BatchContext, choice: Choice, error: ProviderError) -> Failover | None:
    """After a failed attempt through `choice`: count the fault on the breaker, and where the next
    attempt goes (None: no failover, the usual rules apply)."""
    if choice.config is None:
        return None
    settings = ctx.settings
    if error.fault == "provider":
        opened = router(ctx).breaker.fault(
            choice.config.id, settings.provider_breaker_failures, settings.provider_breaker_seconds
        )
        if opened:
            ctx.metric("ProviderBreakerOpened", 1)
            ctx.warn(
                "provider config skipped for a while after repeated faults",
                {"provider_config_id": str(choice.config.id), "provider": choice.provider},
            )
    outcome = (
        "permanent_error"
        if not error.transient
        else "ambiguous"
        if getattr(error, "ambiguous", False)
        else "transient_error"
    )
    history = [*history_of(row, ctx), Hop(choice.config.id, outcome, error.fault, error.code)]
    return after_fault(
        configs_of(row, ctx),
        history,
        choice.config,
        error,
        settings.provider_transient_budget,
        router(ctx).breaker.is_open,
    )
