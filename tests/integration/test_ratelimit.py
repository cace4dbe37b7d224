from __future__ import annotations

from .conftest import Api, Tenant


def test_limit_per_key_with_headers(make_tenant, make_api) -> None:
    limited = make_tenant(rate_limit=3)
    api: Api = make_api(limited.key)
    replies = [api("GET", "/api/v1/notifications") for _ in range(4)]
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in replies[:3]] == ["2", "1", "0"]
    assert all(r.headers["RateLimit-Limit"] == "3" for r in replies)
    over = replies[3]
    assert over.error["code"] == "rate_limited"
    assert int(over.headers["Retry-After"]) >= 1
    assert int(over.headers["RateLimit-Reset"]) >= 1
    # another key of another tenant is not affected
    assert make_api(make_tenant().key)("GET", "/api/v1/notifications").status == 200


def test_redis_unreachable_fails_open_by_default(api: Api, settings_env) -> None:
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    reply = api("GET", "/api/v1/notifications")
    assert reply.status == 200
    assert "RateLimit-Limit" not in reply.headers  # no limit was applied, so none is claimed


def test_redis_unreachable_can_fail_closed(api: Api, settings_env, tenant: Tenant) -> None:
    settings_env(REDIS_URL="redis://127.0.0.1:1/0", RATE_LIMIT_FAIL_MODE="closed")
    reply = api("GET", "/api/v1/notifications")
    assert reply.status == 503 and reply.error["code"] == "service_unavailable"
