"""Feedback's decisions without services: which addresses a webhook may reach (property-based over
the IP ranges), URL rules and DNS rebinding through the resolver seam, what each provider event
means, both providers' signatures (made by the stub's independent signers, checked with the SDK
helpers), the retry schedule, and the suppression step of the delivery engine."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify_core import states, suppressions
from notify_core.config import Settings
from notify_core.delivery import Deadline, Incoming, deliver
from notify_core.integrations import addresses, guarded_http
from notify_core.integrations.callbacks import WEBHOOK_EVENT
from notify_core.integrations.dispatcher import retry_delay
from notify_core.providers import events as provider_events
from notify_core.providers import sendgrid_events, twilio_status
from notify_local import provider_callbacks

from .fakes import TENANT, message, world

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

# ---------------------------------------------------------------- addresses


def in_network(network: str) -> st.SearchStrategy[addresses.IPAddress]:
    net = ipaddress.ip_network(network)
    first, last = int(net.network_address), int(net.broadcast_address)
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    return st.integers(first, last).map(make)


BLOCKED = [str(n) for n, _ in (*addresses.BLOCKED_V4, *addresses.BLOCKED_V6)]
# Public unicast ranges (allocated to RIRs / big networks), clear of every special-purpose block.
PUBLIC = ["8.0.0.0/9", "52.0.0.0/10", "151.101.0.0/16", "2a00::/16", "2600::/16", "2400:cb00::/32"]


@given(st.sampled_from(BLOCKED).flatmap(in_network))
def test_every_address_of_a_blocked_range_is_refused(ip: addresses.IPAddress) -> None:
    assert addresses.refusal(ip) is not None


@given(st.sampled_from(PUBLIC).flatmap(in_network))
def test_public_unicast_addresses_pass(ip: addresses.IPAddress) -> None:
    assert addresses.refusal(ip) is None


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_an_ipv4_mapped_address_is_always_refused(v4: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert addresses.refusal(mapped) is not None


@given(
    st.sampled_from(
        ["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10", "192.168.0.0/16"]
    ).flatmap(in_network)
)
def test_a_refused_ipv4_address_is_refused_inside_6to4_and_nat64(v4: addresses.IPAddress) -> None:
    as_int = int(v4)
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (as_int << 80))
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | as_int)
    assert addresses.refusal(six_to_four) is not None
    assert addresses.refusal(nat64) is not None


@given(st.sampled_from(sorted(addresses.METADATA, key=str)), st.booleans())
def test_metadata_addresses_are_refused_even_in_local_mode(ip: addresses.IPAddress, allow: bool) -> None:
    assert addresses.refusal(ip, allow_private=allow) == "cloud metadata address"
    if isinstance(ip, ipaddress.IPv4Address):
        assert addresses.refusal(ipaddress.IPv6Address(f"::ffff:{ip}"), allow) is not None


@given(
    st.sampled_from(["10.0.0.0/8", "127.0.0.0/8", "192.168.0.0/16", "fc00::/7", "::1/128"]).flatmap(
        in_network
    )
)
def test_local_mode_allows_private_and_loopback(ip: addresses.IPAddress) -> None:
    if ip not in addresses.METADATA:
        assert addresses.refusal(ip, allow_private=True) is None


def test_named_reasons() -> None:
    assert addresses.refusal(ipaddress.ip_address("100.100.1.1")) == "carrier-grade NAT (shared) address"
    assert addresses.refusal(ipaddress.ip_address("fd12::1")) == "unique-local address"
    assert addresses.refusal(ipaddress.ip_address("::ffff:8.8.8.8")) == "IPv4-mapped IPv6 address"
    assert addresses.refusal(ipaddress.ip_address("169.254.169.254")) == "cloud metadata address"


# ---------------------------------------------------------------- URLs and resolution


def fixed(*found: str) -> guarded_http.Resolver:
    return lambda host, port: list(found)


STRICT = Settings(webhook_allow_private_targets=False)
LOCAL = Settings(webhook_allow_private_targets=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/", "https"),
        ("https://", "no host"),
        ("https://u:p@example.com/", "user name"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://exa mple.com/", "whitespace"),
        ("https://2130706433/", "not a valid address"),
        ("https://0177.0.0.1/", "not a valid address"),
        ("https://example.com/" + "x" * 2040, "2048"),
    ],
)
def test_urls_refused_before_any_lookup(url: str, reason: str) -> None:
    with pytest.raises(guarded_http.TargetRefused, match=reason):
        guarded_http.check_url(url, STRICT, resolver=fixed("93.184.216.34"))


def test_a_name_is_refused_when_any_of_its_addresses_is() -> None:
    assert (
        guarded_http.check_url("https://example.com/h", STRICT, fixed("93.184.216.34"))
        == "https://example.com/h"
    )
    with pytest.raises(guarded_http.TargetRefused, match="private address"):
        guarded_http.check_url("https://example.com/h", STRICT, fixed("93.184.216.34", "10.0.0.1"))
    with pytest.raises(guarded_http.TargetRefused, match="does not resolve"):
        guarded_http.check_url("https://example.com/h", STRICT, fixed())


def test_dns_rebinding_is_caught_at_send(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a name that resolved to a public address when the endpoint was created
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    assert guarded_http.check_url("https://rebind.example/h", STRICT, rebinding)
    # When it resolves to loopback at send time, the request is refused before any connection
    result = guarded_http.post("https://rebind.example/h", b"{}", {}, STRICT, rebinding)
    assert result.status is None and result.error is not None
    assert result.error.startswith("refused: the host rebind.example resolves to a loopback address")


def test_local_mode_takes_http_and_does_not_resolve_names_at_creation() -> None:
    def never(host: str, port: int) -> list[str]:
        raise AssertionError("resolved")

    assert guarded_http.check_url("http://receiver.local:8090/h", LOCAL, never)
    with pytest.raises(guarded_http.TargetRefused, match="metadata"):
        guarded_http.check_url("http://169.254.169.254/", LOCAL, never)


def test_the_connection_goes_to_the_checked_address_with_the_name_for_tls() -> None:
    target = guarded_http.parse_url("https://hooks.example.com:8443/a?b=1", False)
    assert (target.host, target.port, target.path) == ("hooks.example.com", 8443, "/a?b=1")
    conn = guarded_http._PinnedTlsConnection(target, "93.184.216.34", 1, 1, guarded_http._tls_context())
    assert conn.host == "hooks.example.com" and conn._address == "93.184.216.34"


# ---------------------------------------------------------------- SendGrid events


def sg(kind: str, **extra: object) -> dict[str, object]:
    return {
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "notification_id": str(uuid.uuid4()),
        "tenant_id": str(TENANT),
        "timestamp": 1795000000,
        **extra,
    }


@pytest.mark.parametrize(
    ("item", "stored", "effect", "suppression"),
    [
        (sg("delivered"), "delivered", "delivered", None),
        (sg("bounce", type="bounce"), "bounced", "failed", "hard_bounce"),
        (sg("bounce", type="blocked"), "bounced", "failed", None),
        (sg("dropped", reason="Invalid"), "dropped", "failed", "hard_bounce"),
        (sg("deferred"), "deferred", None, None),
        (sg("open"), "opened", None, None),
        (sg("click", url="https://x"), "clicked", None, None),
        (sg("spamreport"), "complained", None, "complaint"),
    ],
)
def test_what_each_sendgrid_event_means(
    item: dict[str, object], stored: str, effect: str | None, suppression: str | None
) -> None:
    (event,) = sendgrid_events.parse(json.dumps([item]), NOW).events
    assert (event.type, event.effect, event.suppression) == (stored, effect, suppression)
    assert event.occurred_at == datetime.fromtimestamp(1795000000, UTC)


@pytest.mark.parametrize(
    "item",
    [
        sg("processed"),
        sg("unsubscribe"),
        sg("nonsense"),
        sg("delivered", notification_id=None),
        sg("delivered", sg_event_id=""),
        5,
        None,
        [],
    ],
)
def test_events_that_are_not_ours_or_not_stored_are_ignored(item: object) -> None:
    parsed = sendgrid_events.parse(json.dumps([item]), NOW)
    assert (parsed.events, parsed.ignored) == ([], 1)


@pytest.mark.parametrize("body", ['{"event": "delivered"}', "[", '"x"', "[" * 40 + "]" * 40])
def test_a_body_that_is_not_an_array_of_events_is_malformed(body: str) -> None:
    with pytest.raises(provider_events.Malformed):
        sendgrid_events.parse(body, NOW)


def test_provider_text_is_made_storable_and_bounded() -> None:
    (event,) = sendgrid_events.parse(json.dumps([sg("dropped", reason="a\x00b" + "x" * 5000)]), NOW).events
    assert "\x00" not in event.detail["reason"] and len(event.detail["reason"]) <= 1001
    (event,) = sendgrid_events.parse(json.dumps([sg("delivered", timestamp=10**12)]), NOW).events
    assert event.occurred_at == NOW  # out of range: when it arrived


def test_sendgrid_signatures_from_the_stub_verify_with_the_sdk_helper() -> None:
    key = provider_callbacks.sendgrid_public_key()
    body, headers = provider_callbacks.sendgrid_request([sg("delivered")])
    now = datetime.now(UTC)
    assert sendgrid_events.verify(headers, body, key, now, 300) == body.decode()
    with pytest.raises(provider_events.Unverified, match="does not match"):
        sendgrid_events.verify(headers, body + b" ", key, now, 300)
    stale = datetime.fromtimestamp(time.time() + 301, UTC)
    with pytest.raises(provider_events.Unverified, match="away from now"):
        sendgrid_events.verify(headers, body, key, stale, 300)
    with pytest.raises(provider_events.NotConfigured):
        sendgrid_events.verify(headers, body, "", now, 300)
    with pytest.raises(provider_events.NotConfigured):
        sendgrid_events.verify(headers, body, "bm90IGEga2V5", now, 300)


# ---------------------------------------------------------------- Twilio


def test_twilio_signatures_from_the_stub_verify_with_the_request_validator() -> None:
    nid, tid = uuid.uuid4(), uuid.uuid4()
    url = twilio_status.status_callback_url("https://api.example.com/dev/", nid, tid)
    assert url == f"https://api.example.com/dev/callbacks/twilio?notification_id={nid}&tenant_id={tid}"
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "To": "+14155550100"}
    body, headers = provider_callbacks.twilio_request(url, params, "token")
    form = twilio_status.read_form(body)
    twilio_status.verify("https://api.example.com/dev", nid, tid, form, headers, "token")
    for base, token, other in (
        ("https://api.example.com/dev", "other-token", tid),
        ("https://api.example.com/prod", "token", tid),
        ("https://api.example.com/dev", "token", uuid.uuid4()),
    ):
        with pytest.raises(provider_events.Unverified):
            twilio_status.verify(base, nid, other, form, headers, token)
    with pytest.raises(provider_events.NotConfigured):
        twilio_status.verify("https://api.example.com/dev", nid, tid, form, headers, "")


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("delivered", None, ("delivered", "delivered", None)),
        ("undelivered", "30003", ("undelivered", "failed", None)),
        ("failed", "21610", ("undelivered", "failed", "sms_stop")),
        ("undelivered", "21610", ("undelivered", "failed", "sms_stop")),
    ],
)
def test_what_each_twilio_status_means(
    status: str, code: str | None, expected: tuple[str, str, str | None]
) -> None:
    form = {"MessageSid": ["SM1"], "MessageStatus": [status], **({"ErrorCode": [code]} if code else {})}
    (event,) = twilio_status.parse(form, uuid.uuid4(), TENANT, NOW).events
    assert (event.type, event.effect, event.suppression) == expected
    assert event.event_id == f"SM1:{status}"


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "accepted", "read"])
def test_intermediate_twilio_statuses_are_acknowledged_not_stored(status: str) -> None:
    parsed = twilio_status.parse(
        {"MessageSid": ["SM1"], "MessageStatus": [status]}, uuid.uuid4(), TENANT, NOW
    )
    assert (parsed.events, parsed.ignored) == ([], 1)


def test_twilio_form_without_sid_or_status_is_malformed() -> None:
    with pytest.raises(provider_events.Malformed):
        twilio_status.parse({"MessageStatus": ["delivered"]}, uuid.uuid4(), TENANT, NOW)
    with pytest.raises(provider_events.Malformed):
        twilio_status.read_form(b"\xff\xfe")


# ---------------------------------------------------------------- effects, retries


def test_every_callback_effect_is_a_legal_transition_from_sent() -> None:
    for effect in WEBHOOK_EVENT:
        states.check(["sent"], effect)


def test_the_default_retry_schedule_spans_about_a_day_and_ends() -> None:
    settings = Settings()
    delays = [retry_delay(n, settings, jitter=lambda low, high: low) for n in range(1, 9)]
    assert delays[-1] is None
    total = sum(d for d in delays if d is not None)
    assert 20 * 3600 <= total <= 30 * 3600
    jittered = retry_delay(2, settings, jitter=lambda low, high: high)
    assert jittered == pytest.approx(330.0)


@given(st.lists(st.floats(0, 3600), max_size=20), st.integers(1, 25))
def test_retry_delay_follows_any_schedule(schedule: list[float], attempt: int) -> None:
    settings = Settings(webhook_retry_schedule=",".join(f"{d:.3f}" for d in schedule))
    delay = retry_delay(attempt, settings)
    if attempt > len(schedule):
        assert delay is None
    else:
        base = settings.webhook_retry_delays()[attempt - 1]
        assert delay is not None and base <= delay <= base * 1.1 + 1e-9


# ---------------------------------------------------------------- the suppression step


def test_a_suppressed_address_ends_suppressed_without_a_send_unless_another_tenants() -> None:
    w = world()
    blocked = w.store.add(payload={"to": "Ada@Example.com", "subject": "s", "body": "b"})
    free = w.store.add(payload={"to": "bob@example.com", "subject": "s", "body": "b"})
    other_tenant = w.store.add(
        tenant_id=uuid.uuid4(), payload={"to": "ada@example.com", "subject": "s", "body": "b"}
    )
    w.store.audience.suppressed[(TENANT, "email", suppressions.normalize("email", "ada@example.com"))] = {
        "hard_bounce"
    }
    report = deliver(
        [Incoming(f"m{i}", message(r)) for i, r in enumerate((blocked, free, other_tenant))],
        Deadline(60_000),
        w.deps(),
    )
    assert [report.outcomes[k].kind for k in ("m0", "m1", "m2")] == ["suppressed", "sent", "sent"]
    assert blocked.status == "suppressed" and (blocked.last_error or "").startswith("hard_bounce")
    assert set(w.provider.sent) == {free.id, other_tenant.id}


def test_at_most_the_cap_of_a_reply_is_read() -> None:
    class Endless:
        def __init__(self) -> None:
            self.read_total = 0

        def read(self, n: int) -> bytes:
            self.read_total += n
            return b"x" * n

    reply = Endless()
    assert guarded_http._read_capped(reply, 65_536) == 65_536
    assert reply.read_total == 65_536
