"""The audience's decisions as plain values: quiet hours across DST changes (with properties over
any window, zone and instant), preference resolution, locale negotiation, Liquid's sandbox and
unsubscribe tokens. No services."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core.audience import ingest, preferences, templates, unsubscribe
from notify_core.audience.quiet_hours import (
    Window,
    first_reading,
    hold_until,
    inside_by_the_clock,
    last_reading,
    parse_clock,
)
from notify_core.config import Settings
from notify_core.errors import ValidationFailed

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
NIGHT = Window.parse("22:00", "07:00")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ---------------------------------------------------------------- quiet hours, by example


def test_a_window_crossing_midnight_holds_until_the_morning() -> None:
    # 23:30 in Kolkata (UTC+5:30, no DST) is inside 22:00-07:00: held until 07:00 local
    assert hold_until(NIGHT, KOLKATA, utc(2026, 6, 1, 18, 0)) == utc(2026, 6, 2, 1, 30)
    assert hold_until(NIGHT, KOLKATA, utc(2026, 6, 2, 1, 30)) is None  # 07:00 itself is outside
    assert hold_until(NIGHT, KOLKATA, utc(2026, 6, 1, 12, 0)) is None  # 17:30
    day = Window.parse("09:00", "17:00")
    assert hold_until(day, BERLIN, utc(2026, 7, 1, 7, 0)) == utc(2026, 7, 1, 15, 0)  # 09:00 CEST → 17:00


def test_new_york_spring_forward_2026_03_08() -> None:
    # the night the clock jumps 02:00 → 03:00: a 22:00-07:00 window lasts 8 hours
    assert hold_until(NIGHT, NY, utc(2026, 3, 8, 5, 0)) == utc(2026, 3, 8, 11, 0)  # 00:00 EST → 07:00 EDT
    # a window starting inside the gap starts when the clock jumps past it
    gap = Window.parse("02:30", "04:00")
    assert first_reading(NY, date(2026, 3, 8), time(2, 30)) == utc(2026, 3, 8, 7, 0)
    assert hold_until(gap, NY, utc(2026, 3, 8, 6, 59)) is None  # 01:59 EST
    assert hold_until(gap, NY, utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 8, 8, 0)  # 03:00 EDT → 04:00 EDT


def test_new_york_fall_back_2026_11_01() -> None:
    # the night 01:00-02:00 happens twice: a window ending at 01:30 ends at the second 01:30
    assert first_reading(NY, date(2026, 11, 1), time(1, 30)) == utc(2026, 11, 1, 5, 30)
    assert last_reading(NY, date(2026, 11, 1), time(1, 30)) == utc(2026, 11, 1, 6, 30)
    short = Window.parse("23:00", "01:30")
    assert hold_until(short, NY, utc(2026, 11, 1, 5, 45)) == utc(2026, 11, 1, 6, 30)  # 01:45 EDT
    assert hold_until(short, NY, utc(2026, 11, 1, 6, 15)) == utc(2026, 11, 1, 6, 30)  # 01:15 EST
    # a 22:00-07:00 window lasts 10 hours that night
    assert hold_until(NIGHT, NY, utc(2026, 11, 1, 2, 0)) == utc(2026, 11, 1, 12, 0)


def test_berlin_changes_and_days() -> None:
    assert hold_until(NIGHT, BERLIN, utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 5, 0)  # 07:00 CEST
    assert hold_until(NIGHT, BERLIN, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 6, 0)  # 07:00 CET
    # a window that starts only on Fridays: Friday night into Saturday, not Saturday night
    friday = Window.parse("22:00", "07:00", ["fri"])
    assert hold_until(friday, BERLIN, utc(2026, 11, 27, 23, 0)) == utc(2026, 11, 28, 6, 0)  # Fri 24:00 CET
    assert hold_until(friday, BERLIN, utc(2026, 11, 28, 5, 0)) == utc(2026, 11, 28, 6, 0)  # Sat 06:00
    assert hold_until(friday, BERLIN, utc(2026, 11, 28, 23, 0)) is None  # Saturday night


def test_lord_howe_half_hour_shift() -> None:
    # 2026-10-04: 02:00 +10:30 → 02:30 +11; 2026-04-05: 02:00 +11 → 01:30 +10:30
    assert first_reading(LORD_HOWE, date(2026, 10, 4), time(2, 15)) == utc(2026, 10, 3, 15, 30)
    assert last_reading(LORD_HOWE, date(2026, 4, 5), time(1, 45)) == utc(2026, 4, 4, 15, 15)
    assert first_reading(LORD_HOWE, date(2026, 4, 5), time(1, 45)) == utc(2026, 4, 4, 14, 45)
    assert hold_until(NIGHT, LORD_HOWE, utc(2026, 10, 3, 14, 0)) == utc(2026, 10, 3, 20, 0)  # 07:00 +11


def test_clock_times_are_strict() -> None:
    for bad in ("25:00", "24:00", "7:00", "07:60", "0700", "\u0660\u0667:\u0660\u0660", "07:00 "):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_clock(bad)
    assert parse_clock("00:00") == time(0, 0) and parse_clock("23:59") == time(23, 59)


# ---------------------------------------------------------------- quiet hours, as properties

ZONES = st.sampled_from(
    [
        NY,
        BERLIN,
        KOLKATA,
        LORD_HOWE,
        ZoneInfo("UTC"),
        ZoneInfo("America/Sao_Paulo"),
        ZoneInfo("Pacific/Chatham"),
    ]
)
CLOCKS = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
# instants around the 2026 changes of every zone above, and anywhere in the year
INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(
        [
            utc(2026, 3, 8, 7),
            utc(2026, 11, 1, 6),
            utc(2026, 3, 29, 1),
            utc(2026, 10, 25, 1),
            utc(2026, 10, 3, 15, 30),
            utc(2026, 4, 4, 15),
            utc(2026, 9, 26, 14),
        ]
    ).flatmap(lambda t: st.integers(-36 * 60, 36 * 60).map(lambda m: t + timedelta(minutes=m))),
)
DAY_SETS = st.one_of(
    st.none(), st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1)
)


@settings(max_examples=400, deadline=None)
@given(start=CLOCKS, end=CLOCKS, days=DAY_SETS, zone=ZONES, at=INSTANTS)
def test_held_exactly_while_inside_and_never_past_the_window(
    start: time, end: time, days: set[str] | None, zone: ZoneInfo, at: datetime
) -> None:
    if start == end:
        return
    window = Window.parse(
        start.strftime("%H:%M"), end.strftime("%H:%M"), None if days is None else sorted(days)
    )
    until = hold_until(window, zone, at)
    # what the user's clock shows inside the window is always held
    if inside_by_the_clock(window, zone, at):
        assert until is not None
    if until is None:
        return
    # held into the future, at most a day and a few DST hours, to a moment that is free
    assert at < until <= at + timedelta(hours=27)
    assert hold_until(window, zone, until) is None
    assert not inside_by_the_clock(window, zone, until)
    # and every moment in between is still held, to the same end (never dropped, never early)
    for k in range(1, 5):
        between = at + (until - at) * k / 5
        assert hold_until(window, zone, between) == until


# ---------------------------------------------------------------- preferences

SETTING = st.one_of(st.none(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(channel=SETTING, category=SETTING, pair=SETTING, critical=st.booleans())
def test_preference_resolution_takes_the_most_specific_setting(
    channel: bool | None, category: bool | None, pair: bool | None, critical: bool
) -> None:
    prefs: dict[str, Any] = {"channels": {}, "categories": {"orders": {"channels": {}}}}
    if channel is not None:
        prefs["channels"]["email"] = channel
    if category is not None:
        prefs["categories"]["orders"]["enabled"] = category
    if pair is not None:
        prefs["categories"]["orders"]["channels"]["email"] = pair
    expected = True if critical else next((v for v in (pair, category, channel) if v is not None), True)
    assert preferences.allowed(prefs, "orders", "email", critical) is expected
    # another channel or category only follows the channel setting (or is allowed)
    assert preferences.allowed(prefs, "orders", "sms", False) is (category if category is not None else True)
    assert preferences.allowed(prefs, "other", "email", False) is (channel if channel is not None else True)


def test_merge_patch_removes_with_null() -> None:
    current = {"channels": {"sms": False, "push": True}, "quiet_hours": {"start": "22:00", "end": "07:00"}}
    patched = preferences.merge_patch(current, {"channels": {"sms": None}, "quiet_hours": {"start": "23:00"}})
    assert patched == {"channels": {"push": True}, "quiet_hours": {"start": "23:00", "end": "07:00"}}


def test_the_ingest_verdict_orders_preference_suppression_and_quiet_hours() -> None:
    user = {"channels": {"sms": False}, "quiet_hours": {"start": "00:00", "end": "23:59"}, "timezone": "UTC"}
    noon = utc(2026, 6, 1, 12)
    assert ingest.verdict(user, None, "sms", False, set(), noon).reason == "preference"
    assert ingest.verdict(user, None, "email", False, {"complaint"}, noon).reason == "suppressed"
    assert ingest.verdict(None, None, "email", True, {"unsubscribe"}, noon).reason is None
    assert ingest.verdict(user, None, "email", False, set(), noon).hold_until == utc(2026, 6, 1, 23, 59)
    assert ingest.verdict(user, None, "sms", True, set(), noon) == ingest.Verdict(None)  # critical


# ---------------------------------------------------------------- templates

VARIANTS = [
    {"channel": "email", "locale": "pt", "subject": "pt", "body": "pt"},
    {"channel": "email", "locale": "en-GB", "subject": "gb", "body": "gb"},
    {"channel": "email", "subject": "default", "body": "default"},
    {"channel": "sms", "locale": "de", "body": "de"},
]


@pytest.mark.parametrize(
    ("wanted", "tenant", "channel", "expected"),
    [
        ("pt-BR", "en", "email", "pt"),
        ("pt", "en", "email", "pt"),
        ("en-GB", "en", "email", "gb"),
        ("fr", "en", "email", "default"),
        ("not a locale", "en", "email", "default"),
        ("fr", "de", "sms", "de"),  # no default variant: the tenant default's
        ("fr", "en", "sms", None),
        ("fr", "en", "push", None),
    ],
)
def test_locale_negotiation(wanted: str, tenant: str, channel: str, expected: str | None) -> None:
    found = templates.choose_variant(VARIANTS, channel, wanted, tenant)
    assert (found or {}).get("body") == expected


def test_liquid_is_sandboxed_and_strict() -> None:
    def render(source: str, data: dict[str, Any], channel: str = "sms") -> str:
        return templates.render({"channel": channel, "body": source}, data).payload["body"]

    assert render("{% if coupon %}C{% endif %}{{ x | default: 'd' }}", {}) == "d"  # optional ones work
    with pytest.raises(ValidationFailed) as undefined:
        render("{{ order.total }}", {"order": {}})
    assert undefined.value.details[0]["field"] == "data.order.total"
    for source, what in (
        ("{% for i in (1..20000) %}{% endfor %}", "loop iteration limit"),
        ("{% for i in (1..9000) %}" + "y" * 150 + "{% endfor %}", "output stream limit"),
    ):
        with pytest.raises(ValidationFailed) as limited:
            render(source, {})
        assert what in limited.value.details[0]["message"]
    with pytest.raises(ValidationFailed) as bad:
        templates.check_syntax([templates.Variant(channel="sms", body="ok\n  {% if %}")])
    assert bad.value.details[0]["message"].startswith("line 2, column 6: ")
    html = templates.render(
        {"channel": "email", "subject": "{{ n }}", "body": "{{ n }}", "html": "{{ n }}"}, {"n": "<b>"}
    ).payload
    assert (html["subject"], html["body"], html["html"]) == ("<b>", "<b>", "&lt;b&gt;")


# ---------------------------------------------------------------- unsubscribe tokens


def test_tokens_are_signed_expire_and_name_the_category() -> None:
    key = Settings().unsubscribe_key()
    claims = unsubscribe.Claims(uuid.uuid4(), uuid.uuid4(), None, "orders", 2_000_000_000)
    token = unsubscribe.sign(claims, key)
    assert unsubscribe.verify(token, key, now=1_900_000_000) == claims
    with pytest.raises(unsubscribe.InvalidToken, match="expired"):
        unsubscribe.verify(token, key, now=2_000_000_001)
    with pytest.raises(unsubscribe.InvalidToken, match="not valid"):
        unsubscribe.verify(token, b"another key of sufficient length")
    body, mac = token.split(".")
    with pytest.raises(unsubscribe.InvalidToken, match="not valid"):
        unsubscribe.verify(f"{body}x.{mac}", key)


def test_settings_refuse_a_missing_or_short_secret_outside_dev() -> None:
    from notify_core.config import SettingsError

    with pytest.raises(SettingsError, match="UNSUBSCRIBE_SIGNING_SECRET"):
        Settings.from_env({"STAGE": "prod"})
    with pytest.raises(SettingsError, match="at least 16"):
        Settings.from_env({"UNSUBSCRIBE_SIGNING_SECRET": "short"})
    assert (
        Settings.from_env({"STAGE": "prod", "UNSUBSCRIBE_SIGNING_SECRET": "s" * 32}).unsubscribe_key()
        == b"s" * 32
    )


def test_headers_only_for_non_critical_email() -> None:
    from notify_core.audience.delivery import AudienceView, headers
    from notify_core.delivery.steps import Claim

    tenant = uuid.uuid4()
    row = Claim(
        uuid.uuid4(), tenant, None, "email", "sendgrid", {"to": "a@example.com"}, 0, 5, None, "orders"
    )
    out = headers(AudienceView(), row, Settings(public_base_url="https://api.example.com/prod"))
    assert out["List-Unsubscribe"].startswith("<https://api.example.com/prod/u/")
    assert out["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers(AudienceView(critical={(tenant, "orders")}), row, Settings()) == {}
    sms = Claim(uuid.uuid4(), tenant, None, "sms", "twilio", {"to": "+14155550100"}, 0, 5)
    assert headers(None, sms, Settings()) == {}


# ---------------------------------------------------------------- the document


def test_every_audience_route_is_documented_with_examples() -> None:
    import json as _json

    from notify_local.lambda_env import LambdaContext, load_handler, rest_event

    handler = load_handler("functions/api/", "app.handler")
    reply = handler(
        rest_event("GET", "/swagger", query={"format": "json"}), LambdaContext("ApiFunction", 512, 25)
    )
    document = _json.loads(reply["body"])
    schemas = document["components"]["schemas"]
    for name in (
        "TemplateCreate",
        "TemplateUpdate",
        "PreviewRequest",
        "CategoryCreate",
        "Preferences",
        "PreferencesPatch",
        "MessageCreate",
        "SuppressionCreate",
        "NotificationCreate",
    ):
        assert schemas[name]["examples"], name
    paths = document["paths"]
    for path in (
        "/api/v1/templates",
        "/api/v1/templates/{key}",
        "/api/v1/templates/{key}/preview",
        "/api/v1/categories",
        "/api/v1/users/{id}/preferences",
        "/api/v1/messages",
        "/api/v1/messages/{id}",
        "/api/v1/suppressions",
        "/api/v1/suppressions/{id}",
        "/u/{token}",
    ):
        assert path in paths, path
    # one-click unsubscribe: public, and truthful about its HTML beside the JSON
    for method in ("get", "post"):
        op = paths["/u/{token}"][method]
        assert "security" not in op
        assert set(op["responses"]["200"]["content"]) == {"application/json", "text/html"}
        assert set(op["responses"]["404"]["content"]) == {"application/json", "text/html"}
