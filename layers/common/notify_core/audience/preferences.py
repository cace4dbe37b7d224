"""Users' preferences: channels, categories, category+channel, and quiet hours.

Resolution (`allowed`, pure): a critical category is always allowed; otherwise the most specific
setting that exists decides — category+channel, else the category, else the channel — and when
none exists the notification is allowed. Checked at ingest (what is blocked is not created) and by
the delivery engine's `preference` step (a later opt-out ends `suppressed`, reason `preference`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import audit
from ..db import transaction
from ..errors import NotFound, ValidationFailed
from ..fields import Slug, StrictBool
from ..models import Channel, details_from
from .quiet_hours import DAYS, Window, parse_clock

Day = str


class QuietHours(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"start": "22:00", "end": "07:00", "days": ["mon", "tue"]}]},
    )

    start: str = Field(description="HH:MM in the user's time zone", examples=["22:00"], max_length=5)
    end: str = Field(
        description="HH:MM; at or before `start` means the window crosses midnight",
        examples=["07:00"],
        max_length=5,
    )
    days: list[Day] | None = Field(
        default=None,
        max_length=7,
        description="The days the window starts on (mon … sun); every day when omitted",
        examples=[["mon", "tue", "wed", "thu", "fri"]],
    )

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        parse_clock(value)
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [d for d in value if d not in DAYS]
        if unknown:
            raise ValueError(f"days must be among {', '.join(DAYS)}")
        if len(set(value)) != len(value):
            raise ValueError("a day is listed twice")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end are the same time: the window would be empty")
        return self

    def window(self) -> Window:
        return Window.parse(self.start, self.end, self.days)


class CategoryPreference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool | None = Field(default=None, description="The whole category on or off")
    channels: dict[Channel, StrictBool] = Field(
        default_factory=dict, description="Per channel, for this category only"
    )


class Preferences(BaseModel):
    """A user's preferences; every part optional. PUT replaces them, PATCH merges (JSON Merge
    Patch: a null removes a setting)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "channels": {"sms": False},
                    "categories": {
                        "marketing": {"enabled": False},
                        "orders": {"channels": {"email": False}},
                    },
                    "quiet_hours": {"start": "22:00", "end": "07:00", "days": ["mon", "tue", "wed"]},
                }
            ]
        },
    )

    channels: dict[Channel, StrictBool] = Field(default_factory=dict, description="Per channel, any category")
    categories: dict[Slug, CategoryPreference] = Field(
        default_factory=dict, max_length=200, description="Per category (and channel within it)"
    )
    quiet_hours: QuietHours | None = Field(default=None, description="In the user's timezone")


class UserPreferences(Preferences):
    user_id: UUID
    timezone: str | None = Field(description="The user's IANA time zone (UTC when none)")


# ---------------------------------------------------------------- resolution (pure)


def allowed(prefs: Mapping[str, Any] | None, category: str | None, channel: str, critical: bool) -> bool:
    """Whether the user's preferences let `category` through on `channel` (stored JSON form)."""
    if critical or not prefs:
        return True
    if category is not None:
        cat = (prefs.get("categories") or {}).get(category)
        if cat:
            by_channel = (cat.get("channels") or {}).get(channel)
            if by_channel is not None:
                return bool(by_channel)
            if cat.get("enabled") is not None:
                return bool(cat["enabled"])
    by_channel = (prefs.get("channels") or {}).get(channel)
    return True if by_channel is None else bool(by_channel)


def blocked_reason(category: str | None, channel: str) -> str:
    what = f"{category} on {channel}" if category else channel
    return f"preference: the user turned off {what}"


def window_of(prefs: Mapping[str, Any] | None) -> Window | None:
    quiet = (prefs or {}).get("quiet_hours")
    if not quiet:
        return None
    return Window.parse(quiet["start"], quiet["end"], quiet.get("days"))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---------------------------------------------------------------- storage


# pragma: no mutate start
# (storage: pinned by the integration tier, tests/integration/test_audience*.py)
def _load(conn: Any, tenant_id: UUID, user_id: UUID) -> dict[str, Any]:
    row = conn.execute(
        "SELECT u.id, u.timezone, p.channels, p.categories, p.quiet_hours FROM users u"
        " LEFT JOIN user_preferences p ON p.user_id = u.id WHERE u.tenant_id = %s AND u.id = %s",
        (tenant_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return row


def _reply(row: Mapping[str, Any], prefs: Preferences | None = None) -> UserPreferences:
    data = (
        prefs.model_dump()
        if prefs is not None
        else {
            "channels": row["channels"] or {},
            "categories": row["categories"] or {},
            "quiet_hours": row["quiet_hours"],
        }
    )
    return UserPreferences(user_id=row["id"], timezone=row["timezone"], **data)


def get(tenant_id: UUID, user_id: UUID) -> UserPreferences:
    with transaction() as conn:
        return _reply(_load(conn, tenant_id, user_id))


def replace(
    tenant_id: UUID, user_id: UUID, body: Any, actor: audit.Actor, *, patch: bool = False
) -> UserPreferences:
    """PUT (replace) or PATCH (merge) a user's preferences; unknown categories are a 422."""
    with transaction() as conn:
        row = _load(conn, tenant_id, user_id)
        current = {
            "channels": row["channels"] or {},
            "categories": row["categories"] or {},
            "quiet_hours": row["quiet_hours"],
        }
        merged = merge_patch(current, body) if patch else body
        try:
            prefs = Preferences.model_validate(merged)
        except ValidationError as exc:
            raise ValidationFailed("the preferences are not valid", details_from(exc)) from exc
        keys = list(prefs.categories)
        if keys:
            known = {
                r["key"]
                for r in conn.execute(
                    "SELECT key FROM categories WHERE tenant_id = %s AND key = ANY(%s)", (tenant_id, keys)
                ).fetchall()
            }
            unknown = [k for k in keys if k not in known]
            if unknown:
                raise ValidationFailed(
                    "a preference names an unknown category",
                    [{"field": f"categories.{k}", "message": "no category with this key"} for k in unknown],
                )
        stored = prefs.model_dump(mode="json", exclude_none=True)
        conn.execute(
            "INSERT INTO user_preferences (user_id, tenant_id, channels, categories, quiet_hours)"
            " VALUES (%s, %s, %s::jsonb, %s::jsonb, %s::jsonb) ON CONFLICT (user_id) DO UPDATE SET"
            " channels = excluded.channels, categories = excluded.categories,"
            " quiet_hours = excluded.quiet_hours, updated_at = now()",
            (
                user_id,
                tenant_id,
                _json(stored.get("channels", {})),
                _json(_categories(prefs)),
                _json(stored.get("quiet_hours")),
            ),
        )
        changes = {k: v for k, v in stored.items() if v != current.get(k)}
        audit.record(conn, tenant_id, actor, "preferences.update", "user", user_id, changes)
    return _reply(row, prefs)


def _categories(prefs: Preferences) -> dict[str, Any]:
    return {
        key: {k: v for k, v in value.model_dump(mode="json").items() if v not in (None, {})}
        for key, value in prefs.categories.items()
    }


def _json(value: Any) -> str | None:
    import json

    return None if value is None else json.dumps(value)


def turn_off_email(conn: Any, tenant_id: UUID, user_id: UUID, category: str, actor: audit.Actor) -> bool:
    """One-click unsubscribe: `category` off on email for the user. False when the user is gone."""
    row = conn.execute(
        "INSERT INTO user_preferences (user_id, tenant_id, categories)"
        " SELECT u.id, u.tenant_id, jsonb_build_object(%s::text, jsonb_build_object('channels',"
        " jsonb_build_object('email', false))) FROM users u WHERE u.tenant_id = %s AND u.id = %s"
        " ON CONFLICT (user_id) DO UPDATE SET categories = jsonb_set(user_preferences.categories,"
        " ARRAY[%s::text], coalesce(user_preferences.categories -> %s::text, '{}'::jsonb)"
        " || jsonb_build_object('channels', coalesce(user_preferences.categories -> %s::text -> 'channels',"
        " '{}'::jsonb) || '{\"email\": false}'::jsonb)), updated_at = now() RETURNING user_id",
        (category, tenant_id, user_id, category, category, category),
    ).fetchone()
    if row is None:
        return False
    audit.record(
        conn,
        tenant_id,
        actor,
        "preferences.unsubscribe",
        "user",
        user_id,
        {"categories": {category: {"channels": {"email": False}}}},
    )
    return True


# pragma: no mutate end


class QuietHoursPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(default=None, max_length=5)
    end: str | None = Field(default=None, max_length=5)
    days: list[Day] | None = Field(default=None, max_length=7)


class CategoryPreferencePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool | None = None
    channels: dict[Channel, StrictBool | None] | None = None


class PreferencesPatch(BaseModel):
    """JSON Merge Patch (RFC 7396) of a user's preferences: what is given is merged, a null removes
    it. The result must be valid preferences."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "channels": {"sms": None},
                    "categories": {"marketing": {"enabled": True}},
                    "quiet_hours": None,
                }
            ]
        },
    )

    channels: dict[Channel, StrictBool | None] | None = None
    categories: dict[Slug, CategoryPreferencePatch | None] | None = Field(default=None, max_length=200)
    quiet_hours: QuietHoursPatch | None = None
