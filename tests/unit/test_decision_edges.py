"""Edges of the decision modules that the example-based tests left open (found by `make mutate`):
quiet hours at their boundaries and in odd time zones, preference merging, the audience's per-row
decisions, cursors of every length, and the API-key cache's expiry. Pure values, no services."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notify_core import auth, pagination
from notify_core.audience import delivery as audience
from notify_core.audience import preferences, unsubscribe
from notify_core.audience.quiet_hours import (
    Window,
    first_reading,
    hold_until,
    inside_by_the_clock,
    last_reading,
    parse_clock,
    zone_of,
)
from notify_core.config import Settings
from notify_core.errors import Unauthorized, ValidationFailed

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")
AZORES = ZoneInfo("Atlantic/Azores")
NIGHT = Window.parse("22:00", "07:00")
TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")
USER = uuid.UUID("00000000-0000-4000-8000-000000000002")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Berlin in November 2026 (CET, UTC+1), as the UTC instant."""
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


# ---------------------------------------------------------------- quiet hours: readings


def test_readings_are_utc_instants() -> None:
    plain = first_reading(NY, date(2026, 6, 1), time(22, 0))
    assert plain == utc(2026, 6, 2, 2, 0) and plain.tzinfo is UTC
    # 01:30 on the fall-back night is read twice: at 05:30 UTC (EDT) and 06:30 UTC (EST)
    first = first_reading(NY, date(2026, 11, 1), time(1, 30))
    last = last_reading(NY, date(2026, 11, 1), time(1, 30))
    assert (first, last) == (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30))
    assert first.tzinfo is UTC and last.tzinfo is UTC


def test_a_reading_inside_a_gap_is_the_jump_wherever_it_lies_in_the_gap() -> None:
    # New York jumps from 02:00 EST to 03:00 EDT at 07:00 UTC; 02:05 is near the gap's start, so
    # the search must narrow to the second, not stop a second or two past the jump
    for minute in (1, 5, 30, 55, 59):
        assert first_reading(NY, date(2026, 3, 8), time(2, minute)) == utc(2026, 3, 8, 7, 0)
        assert last_reading(NY, date(2026, 3, 8), time(2, minute)) == utc(2026, 3, 8, 7, 0)


def test_gaps_next_to_utc_itself() -> None:
    # London jumps from 01:00 GMT (UTC+0) to 02:00 BST; the Azores from 00:00 (UTC-1) to 01:00 (UTC+0):
    # one side of each gap reads like UTC, and that must not pass for a reading of the zone
    assert first_reading(LONDON, date(2026, 3, 29), time(1, 30)) == utc(2026, 3, 29, 1, 0)
    assert first_reading(AZORES, date(2026, 3, 29), time(0, 30)) == utc(2026, 3, 29, 1, 0)


def test_a_whole_day_window_chains_at_most_four_times() -> None:
    # a window from 12:00 to 12:00 lasts a day, and each day's starts where the last one ends:
    # hold_until follows the chain four windows far, no further
    always = Window.parse("12:00", "12:00")
    assert hold_until(always, ZoneInfo("UTC"), utc(2026, 6, 1, 13, 0)) == utc(2026, 6, 5, 12, 0)


def test_a_window_that_starts_as_it_ends_crosses_midnight() -> None:
    always = Window.parse("12:00", "12:00")
    assert inside_by_the_clock(always, ZoneInfo("UTC"), utc(2026, 6, 1, 15, 0))
    assert inside_by_the_clock(always, ZoneInfo("UTC"), utc(2026, 6, 1, 9, 0))


def test_by_the_clock_a_night_window_holds_both_sides_of_midnight() -> None:
    assert inside_by_the_clock(NIGHT, BERLIN, berlin(25, 22, 0))  # the start itself
    assert inside_by_the_clock(NIGHT, BERLIN, berlin(25, 23, 0))  # tonight's window
    assert inside_by_the_clock(NIGHT, BERLIN, berlin(26, 3, 0))  # last night's window
    assert not inside_by_the_clock(NIGHT, BERLIN, berlin(26, 7, 0))  # its end is outside
    assert not inside_by_the_clock(NIGHT, BERLIN, berlin(26, 12, 0))
    assert not inside_by_the_clock(NIGHT, BERLIN, berlin(25, 21, 59))
    day = Window.parse("09:00", "17:00")
    assert inside_by_the_clock(day, BERLIN, berlin(26, 12, 0))
    assert not inside_by_the_clock(day, BERLIN, berlin(26, 17, 0))


def test_by_the_clock_a_window_applies_only_on_its_days() -> None:
    friday = Window.parse("22:00", "07:00", ["fri"])  # 2026-11-27 is a Friday
    assert inside_by_the_clock(friday, BERLIN, berlin(27, 23, 0))  # Thursday's is skipped, Friday's holds
    assert inside_by_the_clock(friday, BERLIN, berlin(28, 3, 0))  # Friday night, read on Saturday
    assert not inside_by_the_clock(friday, BERLIN, berlin(28, 23, 0))
    assert not inside_by_the_clock(friday, BERLIN, berlin(27, 3, 0))  # Thursday night


@pytest.mark.parametrize(
    "bad", ["12:x5", "12-30", "12:3", "1:300", "24:00", "12:60", "\uff11\uff12:\uff13\uff10"]
)
def test_malformed_clock_times_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^must be a time of day as HH:MM, 00:00 to 23:59$"):
        parse_clock(bad)


def test_a_user_without_a_known_zone_is_in_utc() -> None:
    for name in (None, "", "Mars/Olympus_Mons"):
        assert zone_of(name).key == "UTC"
    assert zone_of("Europe/Berlin").key == "Europe/Berlin"


# ---------------------------------------------------------------- preferences


def test_the_blocked_reason_names_the_category_when_there_is_one() -> None:
    assert preferences.blocked_reason(None, "sms") == "preference: the user turned off sms"
    assert preferences.blocked_reason("news", "sms") == "preference: the user turned off news on sms"


def test_merge_patch_over_nothing_and_removing_what_is_not_there() -> None:
    assert preferences.merge_patch(None, {"a": 1}) == {"a": 1}
    assert preferences.merge_patch("text", {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert preferences.merge_patch({"a": 1}, {"b": None}) == {"a": 1}
    assert preferences.merge_patch({"a": 1}, [1]) == [1]


def test_the_window_of_preferences_keeps_its_days() -> None:
    window = preferences.window_of(
        {"quiet_hours": {"start": "22:00", "end": "07:00", "days": ["fri", "sat"]}}
    )
    assert window == Window(time(22, 0), time(7, 0), frozenset({4, 5}))
    every = preferences.window_of({"quiet_hours": {"start": "22:00", "end": "07:00"}})
    assert every == Window(time(22, 0), time(7, 0), None)
    assert preferences.window_of({"quiet_hours": None}) is None and preferences.window_of(None) is None


def test_the_quiet_hours_model_gives_its_window() -> None:
    model = preferences.QuietHours(start="23:00", end="06:30", days=["mon"])
    assert model.window() == Window(time(23, 0), time(6, 30), frozenset({0}))


# ---------------------------------------------------------------- the audience's per-row decisions


def row(**fields: Any) -> Any:
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "user_id": USER,
        "channel": "email",
        "payload": {"to": "ada@example.com", "subject": "s", "body": "b"},
        "category": "news",
    }
    return SimpleNamespace(**(values | fields))


def test_critical_categories_pass_an_unsubscribe_but_not_a_bounce() -> None:
    view = audience.AudienceView(
        critical={(TENANT, "security")},
        suppressed={(TENANT, "email", "ada@example.com"): {"unsubscribe"}},
    )
    assert audience.suppression_reason(view, row(category="security")) is None
    assert audience.suppression_reason(view, row()) == "unsubscribe: the address is suppressed"
    # the same category key of another tenant is not critical
    other = row(category="security", tenant_id=uuid.uuid4())
    view.suppressed[(other.tenant_id, "email", "ada@example.com")] = {"unsubscribe"}
    assert audience.suppression_reason(view, other) == "unsubscribe: the address is suppressed"
    view.suppressed[(TENANT, "email", "ada@example.com")] = {"hard_bounce", "unsubscribe"}
    assert (
        audience.suppression_reason(view, row(category="security"))
        == "hard_bounce: the address is suppressed"
    )


def test_a_preference_is_per_channel_and_critical_categories_ignore_it() -> None:
    user = {"channels": {"email": False}, "categories": {"news": {"channels": {"sms": False}}}}
    view = audience.AudienceView(critical={(TENANT, "security")}, users={USER: user})
    assert audience.preference_reason(view, row(category="security")) is None
    assert audience.preference_reason(view, row(category=None)) == "preference: the user turned off email"
    assert audience.preference_reason(
        view, row(category="news", channel="sms", payload={"to": "+4915112345678"})
    ) == ("preference: the user turned off news on sms")
    assert (
        audience.preference_reason(view, row(category="news", channel="push", payload={"token": "t"})) is None
    )
    elsewhere = row(category="security", tenant_id=uuid.uuid4())
    assert audience.preference_reason(view, elsewhere) == "preference: the user turned off security on email"
    assert audience.preference_reason(view, row(user_id=None)) is None


def test_quiet_hours_are_read_on_the_users_own_clock() -> None:
    user = {"timezone": "Europe/Berlin", "quiet_hours": {"start": "22:00", "end": "07:00"}}
    view = audience.AudienceView(critical={(TENANT, "security")}, users={USER: user})
    # 21:30 UTC is 22:30 in Berlin: held until 07:00 there (06:00 UTC);
    # 06:30 UTC is 07:30 in Berlin (outside), but inside the window read in UTC
    assert audience.held_until(view, row(), utc(2026, 11, 26, 6, 30)) is None
    assert audience.held_until(view, row(), utc(2026, 11, 25, 21, 30)) == utc(2026, 11, 26, 6, 0)
    assert audience.held_until(view, row(category="security"), utc(2026, 11, 25, 21, 30)) is None
    assert audience.held_until(view, row(user_id=None), utc(2026, 11, 25, 21, 30)) is None


def test_unsubscribe_headers_sign_the_rows_own_tenant_user_address_and_category() -> None:
    settings = Settings(public_base_url="https://api.example.com/v1")
    headers = audience.headers(audience.AudienceView(), row(), settings)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"]
    assert url.startswith("<https://api.example.com/v1/u/") and url.endswith(">")
    prefix = "<https://api.example.com/v1/u/"

    def claims(headers: dict[str, str]) -> tuple[Any, ...]:
        got = unsubscribe.verify(headers["List-Unsubscribe"][len(prefix) : -1], settings.unsubscribe_key())
        return (got.tenant_id, got.user_id, got.address, got.category)

    assert claims(headers) == (TENANT, USER, None, "news")  # a user's: the user is unsubscribed
    anonymous = audience.headers(audience.AudienceView(), row(user_id=None, category=None), settings)
    assert claims(anonymous) == (TENANT, None, "ada@example.com", None)  # no user: the address is
    critical = audience.AudienceView(critical={(TENANT, "news")})
    assert audience.headers(critical, row(), settings) == {}
    assert audience.headers(None, row(), settings)["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert audience.headers(None, row(channel="sms", payload={"to": "+4915112345678"}), settings) == {}


# ---------------------------------------------------------------- cursors


def test_cursors_round_trip() -> None:
    for micro in (0, 1, 123456):
        for offset in (0, 5, 330):
            when = datetime(2026, 11, 25, 12, 0, 0, micro, tzinfo=UTC) + timedelta(minutes=offset)
            row_id = uuid.UUID(int=micro * 1000 + offset)
            cursor = pagination.encode(when, row_id)
            assert "=" not in cursor
            assert pagination.decode(cursor) == (when, row_id)


@pytest.mark.parametrize(
    "iso",
    [
        "2026-11-25T12:00:00+00:00",
        "2026-11-25T12:00:00.000001+00:00",
        "2026-11-25T12:00:00Z",
        "2026-11-25T12:00+00:00",
        "2026-11-25T12:00:00.5+00:00",
    ],
)
@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_a_cursor_of_any_length_is_read_without_its_padding(iso: str, separators: tuple[str, str]) -> None:
    row_id = uuid.UUID(int=1)
    raw = json.dumps([iso, str(row_id)], separators=separators).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert pagination.decode(cursor) == (datetime.fromisoformat(iso), row_id)


# ---------------------------------------------------------------- the API-key cache


class Keys:
    """The api_keys table as `auth._load_principal` reads it, and a settable monotonic clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ttl: float) -> None:
        self.rows: dict[bytes, auth.Principal] = {}
        self.lookups = 0
        self.now = 1000.0
        self.settings = Settings(api_key_cache_seconds=ttl)
        monkeypatch.setattr(auth, "_load_principal", self.load)
        monkeypatch.setattr(auth, "get_settings", lambda: self.settings)
        monkeypatch.setattr(auth.time, "monotonic", lambda: self.now)
        auth.clear_cache()

    def load(self, digest: bytes) -> auth.Principal | None:
        self.lookups += 1
        return self.rows.get(digest)

    def add(self, key: str) -> auth.Principal:
        who = auth.Principal(TENANT, uuid.uuid4(), key[:11], frozenset({"users:read"}), None)
        self.rows[auth.hash_key(key)] = who
        return who


KEY = "nk_abcd1234_" + "s" * 32


def test_a_cached_key_is_trusted_until_its_time_is_up_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys(monkeypatch, ttl=5)
    who = keys.add(KEY)
    assert auth.authenticate(KEY) == who
    del keys.rows[auth.hash_key(KEY)]  # revoked in the database
    keys.now += 4.999
    assert auth.authenticate(KEY) == who and keys.lookups == 1
    keys.now = 1005.0  # the entry's expiry itself: looked up again
    with pytest.raises(Unauthorized, match=r"^the API key is unknown or revoked$"):
        auth.authenticate(KEY)
    assert keys.lookups == 2


def test_unknown_keys_are_cached_too(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys(monkeypatch, ttl=5)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            auth.authenticate(KEY)
    assert keys.lookups == 1


def test_a_cache_time_under_a_second_still_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys(monkeypatch, ttl=0.5)
    keys.add(KEY)
    auth.authenticate(KEY)
    auth.authenticate(KEY)
    assert keys.lookups == 1


def test_with_no_cache_time_nothing_is_kept_or_read(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys(monkeypatch, ttl=5)
    who = keys.add(KEY)
    auth.authenticate(KEY)  # cached while the cache was on
    keys.settings = Settings(api_key_cache_seconds=0)
    del keys.rows[auth.hash_key(KEY)]
    with pytest.raises(Unauthorized):
        auth.authenticate(KEY)  # the old entry is not read
    auth.clear_cache()
    keys.rows[auth.hash_key(KEY)] = who
    auth.authenticate(KEY)
    assert len(auth._cache) == 0 and len(auth._misses) == 0
    assert keys.lookups == 3


def test_key_length_and_missing_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys(monkeypatch, ttl=0)
    with pytest.raises(Unauthorized, match=r"^the API key is unknown or revoked$"):
        auth.authenticate("k" * 256)  # long, but still looked up
    assert keys.lookups == 1
    with pytest.raises(Unauthorized, match=r"^the API key is unknown or revoked$"):
        auth.authenticate("k" * 257)  # too long to be a key: no lookup
    assert keys.lookups == 1
    for nothing in (None, ""):
        with pytest.raises(Unauthorized) as refused:
            auth.authenticate(nothing)
        assert (
            refused.value.message
            == "an API key is required: send 'Authorization: Bearer <key>' or 'X-Api-Key'"
        )
    assert keys.lookups == 1


def test_a_key_with_a_lone_surrogate_hashes_its_code_units() -> None:
    assert auth.hash_key("nk_\ud800") == hashlib.sha256(b"nk_\xed\xa0\x80").digest()


def test_unknown_scopes_are_refused_before_anything_is_stored() -> None:
    with pytest.raises(ValidationFailed) as refused:
        auth.create_api_key(TENANT, "k", ("users:read", "root", "admin"))
    assert refused.value.details == [
        {"field": "scopes", "message": f"unknown scopes ['admin', 'root']; known: {list(auth.SCOPES)}"}
    ]


def test_keys_are_read_from_either_header() -> None:
    assert auth.key_from_headers({"authorization": "Bearer  abc "}) == "abc"
    assert auth.key_from_headers({"AUTHORIZATION": "bearer abc"}) == "abc"
    assert auth.key_from_headers({"Authorization": "Bearer "}) is None
    assert auth.key_from_headers({"Authorization": "Basic abc", "X-Api-Key": " k "}) == "k"
    assert auth.key_from_headers({"x-api-key": "  "}) is None
    assert auth.key_from_headers({}) is None


def test_a_principal_requires_its_scope() -> None:
    who = auth.Principal(TENANT, uuid.uuid4(), "nk_x", frozenset({"users:read"}), None)
    who.require("users:read")
    with pytest.raises(auth.Forbidden) as refused:
        who.require("users:write")
    assert refused.value.message == "this API key lacks the scope 'users:write'"
    assert refused.value.details == [{"field": "scope", "message": "users:write"}]


def test_the_lru_forgets_its_least_recently_used_entry() -> None:
    lru = auth._Lru(2)
    lru.put(b"a", (1.0, None))
    lru.put(b"b", (1.0, None))
    assert lru.get(b"a") == (1.0, None)  # a is now the most recent
    lru.put(b"c", (1.0, None))
    assert b"b" not in lru and b"a" in lru and b"c" in lru and len(lru) == 2


# ---------------------------------------------------------------- keys and tenants: what is written


class Db:
    """`auth.transaction` over a recording connection: each statement and its parameters, with the
    rows the test says each statement returns (in order); audit events recorded apart."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *results: Any) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.results = list(results)
        self.audit: list[tuple[Any, ...]] = []
        monkeypatch.setattr(auth, "transaction", self.transaction)
        monkeypatch.setattr(
            auth.audit, "record", lambda conn, *args: self.audit.append((conn is self, *args))
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Db]:
        yield self

    def execute(self, sql: str, params: Any = None) -> Any:
        self.statements.append((sql, params))
        result = self.results.pop(0) if self.results else None
        return SimpleNamespace(fetchone=lambda: result, fetchall=lambda: result)


def test_a_new_key_is_stored_as_its_hash_and_audited(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Db(monkeypatch, {"?column?": 1})
    issued = auth.create_api_key(TENANT, scopes=("users:read", "dlq:read"), rate_limit=7)
    assert re.fullmatch(r"nk_[0-9a-f]{8}", issued.prefix)
    assert re.fullmatch(re.escape(issued.prefix) + r"_[A-Za-z0-9_-]{32}", issued.key)
    assert (issued.tenant_id, issued.scopes) == (TENANT, ("users:read", "dlq:read"))
    assert isinstance(issued.id, uuid.UUID)
    assert db.statements == [
        ("SELECT 1 FROM tenants WHERE id = %s", (TENANT,)),
        (
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, rate_limit)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (issued.id, TENANT, "", issued.prefix, auth.hash_key(issued.key), ["users:read", "dlq:read"], 7),
        ),
    ]
    assert db.audit == [
        (
            True,
            TENANT,
            auth.audit.SYSTEM,
            "api_key.create",
            "api_key",
            issued.id,
            {"name": "", "prefix": issued.prefix, "scopes": ["users:read", "dlq:read"], "rate_limit": 7},
        )
    ]


def test_keys_are_made_only_for_tenants_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Db(monkeypatch, None)
    with pytest.raises(auth.NotFound) as refused:
        auth.create_api_key(TENANT, "k")
    assert refused.value.message == f"tenant {TENANT} does not exist"
    assert len(db.statements) == 1 and db.audit == []


def test_set_up_keys_and_tenants_may_skip_the_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Db(monkeypatch, {"?column?": 1})
    auth.create_api_key(TENANT, "bench", actor=None)
    tenant = auth.create_tenant("Acme", actor=None)
    assert db.audit == []
    assert db.statements[-1] == ("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, "Acme"))


def test_a_new_tenant_is_audited(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Db(monkeypatch)
    tenant = auth.create_tenant("Acme")
    assert isinstance(tenant, uuid.UUID)
    assert db.statements == [("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, "Acme"))]
    assert db.audit == [
        (True, tenant, auth.audit.SYSTEM, "tenant.create", "tenant", tenant, {"name": "Acme"})
    ]


def test_revoking_a_key_audits_it_and_empties_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    key_id = uuid.uuid4()
    db = Db(monkeypatch, {"id": key_id, "tenant_id": TENANT}, None)
    auth._cache.put(b"k", (1.0, None))
    auth._misses.put(b"m", (1.0, None))
    actor = auth.audit.Actor("api_key", "nk_00000000")
    assert auth.revoke_api_key("nk_12345678", actor) is True
    assert len(auth._cache) == 0 and len(auth._misses) == 0
    assert db.statements == [
        (
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL"
            " RETURNING id, tenant_id",
            ("nk_12345678",),
        )
    ]
    assert db.audit == [(True, TENANT, actor, "api_key.revoke", "api_key", key_id, {"prefix": "nk_12345678"})]
    assert auth.revoke_api_key("nk_12345678") is False  # already revoked: nothing audited
    assert len(db.audit) == 1


def test_keys_are_listed_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"id": uuid.uuid4()}]
    db = Db(monkeypatch, rows)
    assert auth.list_api_keys(TENANT) == rows
    assert db.statements == [
        (
            "SELECT id, name, prefix, scopes, rate_limit, created_at, last_used_at, revoked_at"
            " FROM api_keys WHERE tenant_id = %s ORDER BY created_at DESC",
            (TENANT,),
        )
    ]


def test_a_key_is_loaded_by_its_hash_and_touched_at_most_once_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id = uuid.uuid4()
    found = {"id": key_id, "tenant_id": TENANT, "prefix": "nk_1", "scopes": ["users:read"], "rate_limit": 9}
    db = Db(monkeypatch, found, None)
    digest = auth.hash_key("nk_1_x")
    assert auth._load_principal(digest) == auth.Principal(
        TENANT, key_id, "nk_1", frozenset({"users:read"}), 9
    )
    assert auth._load_principal(digest) is None
    sql, params = db.statements[0]
    assert params == (digest,)
    assert sql == (
        "WITH k AS (SELECT id, tenant_id, prefix, scopes, rate_limit, last_used_at FROM api_keys"
        " WHERE key_hash = %s AND revoked_at IS NULL),"
        " touched AS (UPDATE api_keys SET last_used_at = now() WHERE id IN"
        " (SELECT id FROM k WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))"
        " SELECT id, tenant_id, prefix, scopes, rate_limit FROM k"
    )
