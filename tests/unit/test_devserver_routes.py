from __future__ import annotations

from notify_local.devserver import routes
from notify_local.stack import Stack


def test_every_api_event_of_the_template_becomes_a_route() -> None:
    table = routes(Stack.load("unit"))
    assert len(table) == 16

    def match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for m, resource, rx in table:
            hit = rx.match(path)
            if hit and m == method:
                return resource, hit.groupdict()
        return None

    assert match("GET", "/api/v1/notifications/abc") == ("/api/v1/notifications/{id}", {"id": "abc"})
    assert match("POST", "/api/v1/dlq/x/replay") == ("/api/v1/dlq/{id}/replay", {"id": "x"})
    assert match("GET", "/api/v1/dlq/stats") == ("/api/v1/dlq/stats", {})
    assert match("PUT", "/api/v1/users/1") is None
    assert match("GET", "/api/v1/users/1/extra") is None
