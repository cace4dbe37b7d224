"""Rate limits in Redis: one atomic script (GCRA), one round trip per check.

When Redis cannot be reached the outcome follows RATE_LIMIT_FAIL_MODE: `open` (default) lets the
request through, logs a warning and counts a metric, because refusing every notification while the
cache is down would turn a cache outage into a product outage; `closed` answers 503 instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis

from . import clients
from .config import get_settings

# Generic cell rate algorithm: one key per limit holding the theoretical arrival time (ms).
# Returns {allowed, remaining, retry_after_ms, reset_after_ms}.
_GCRA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local dry_run = ARGV[4] == '1'
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = period / limit
local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - period
if allow_at > now then
  local remaining = math.floor((period - (tat - now)) / interval)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now)}
end
if not dry_run then
  redis.call('SET', key, new_tat, 'PX', math.ceil(new_tat - now))
end
local remaining = math.floor((period - (new_tat - now)) / interval)
return {1, remaining, 0, math.ceil(new_tat - now)}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int
    degraded: bool = False  # Redis was unreachable and the fail-open policy let it through

    def headers(self) -> dict[str, str]:
        if self.degraded:
            return {}
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out


class RedisUnavailable(RuntimeError):
    pass


def _build() -> tuple[redis.Redis, Any]:
    s = get_settings()
    client = redis.Redis.from_url(
        s.redis_url,
        socket_timeout=s.redis_timeout_seconds,
        socket_connect_timeout=s.redis_timeout_seconds,
        health_check_interval=30,
    )
    return client, client.register_script(_GCRA)


def _client_and_script() -> tuple[redis.Redis, Any]:
    return clients.get("redis", _build, lambda pair: pair[0].close())


def get_redis() -> redis.Redis:
    return _client_and_script()[0]


def check(name: str, limit: int, period_s: int, cost: int = 1, *, dry_run: bool = False) -> Decision:
    """Take `cost` tokens from limit `name` (limit requests per period_s seconds). With `dry_run`,
    only say whether they could be taken."""
    client, script = _client_and_script()
    key = f"{get_settings().redis_key_prefix}rl:{name}"
    try:
        allowed, remaining, retry_ms, reset_ms = script(
            keys=[key], args=[limit, period_s * 1000, cost, "1" if dry_run else "0"], client=client
        )
    except redis.RedisError as exc:
        raise RedisUnavailable(str(exc)) from exc
    return Decision(
        allowed=bool(allowed),
        limit=limit,
        remaining=int(remaining),
        retry_after_s=max(1, math.ceil(int(retry_ms) / 1000)) if not allowed else 0,
        reset_s=math.ceil(int(reset_ms) / 1000),
    )
