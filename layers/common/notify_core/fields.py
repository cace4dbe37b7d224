"""Field types for everything a client sends: bodies, headers, query and path parameters.

Every string the API stores goes through `storable`: PostgreSQL cannot hold U+0000 in `text` or
`jsonb`, and an unpaired surrogate (U+D800 to U+DFFF, which a JSON `\\ud800` escape produces) cannot be
encoded as UTF-8 at all; both used to reach the database and come back as a 500. Every string has
an upper bound. Numbers and booleans are strict (`true` is not 1, `"5"` is not 5); phone numbers
take ASCII digits only; instants must fall in a range that every layer can represent.

Each type here is an `Annotated` alias: use it as a field's type in a model, or as the type of a
Powertools `Query()`/`Header()`/`Path()` parameter.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, Strict, StringConstraints

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> str:
    """The string unchanged, or ValueError when PostgreSQL could not store it."""
    if value.isascii():
        if "\x00" in value:
            raise ValueError("must not contain the NUL character (U+0000)")
        return value
    found = _UNSTORABLE.search(value)
    if found is None:
        return value
    if found.group() == "\x00":
        raise ValueError("must not contain the NUL character (U+0000)")
    raise ValueError("must not contain unpaired surrogates (U+D800 to U+DFFF)")


# Put it after a StringConstraints with a max_length: `Annotated[str, StringConstraints(...), Storable]`.
Storable = AfterValidator(storable)

# ---------------------------------------------------------------- plain strings

Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), Storable]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$"), Storable]

# ---------------------------------------------------------------- addresses

# E.164: a plus, a non-zero digit, 7 to 15 digits in all; ASCII digits only (`\d` would take any
# script's digits, and a full-width digit is no number a carrier routes).
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
_E164 = re.compile(E164_PATTERN)


def _e164(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError("must be an E.164 phone number such as +14155550100")
    return value


Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=16),
    Field(json_schema_extra={"pattern": E164_PATTERN, "examples": ["+14155550100"]}),
    AfterValidator(_e164),
]

# WHATWG's definition of a valid e-mail address (what browsers accept), plus a dotted domain with an
# alphabetic TLD. Plain addresses matching it skip email-validator, which costs ~80 µs per address;
# anything else (IDN, quoted local parts, errors) goes through email-validator for its precise message.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


def _email(value: str) -> str:
    value = value.strip()
    if (
        _PLAIN_EMAIL.fullmatch(value)
        and ".." not in value
        and not value.startswith(".")
        and ".@" not in value
    ):
        return value
    from email_validator import EmailNotValidError, validate_email  # ~25 ms import: only when needed

    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from exc


Email = Annotated[
    str,
    StringConstraints(max_length=320),
    Field(json_schema_extra={"format": "email", "examples": ["ada@example.com"]}),
    Storable,
    AfterValidator(_email),
]

PushToken = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096), Storable]

# FCM topic names: what firebase-admin accepts (without the optional "/topics/" prefix).
Topic = Annotated[
    str, StringConstraints(min_length=1, max_length=900, pattern=r"^[a-zA-Z0-9\-_.~%]+$"), Storable
]

# ---------------------------------------------------------------- locale and time zone

_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def _locale(value: str) -> str:
    if not _LOCALE.fullmatch(value):
        raise ValueError("must be a locale tag such as en or pt-BR")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Europe/Paris") from exc
    return value


Locale = Annotated[
    str,
    StringConstraints(max_length=35),
    Field(json_schema_extra={"examples": ["en", "pt-BR"]}),
    Storable,
    AfterValidator(_locale),
]
Timezone = Annotated[
    str,
    StringConstraints(max_length=64),
    Field(json_schema_extra={"examples": ["Europe/Paris"]}),
    Storable,
    AfterValidator(_timezone),
]

# ---------------------------------------------------------------- idempotency keys


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


IdempotencyKey = Short
# The header form: an empty `Idempotency-Key:` header means "no key", as before.
IdempotencyKeyHeader = Annotated[IdempotencyKey | None, BeforeValidator(_blank_is_none)]

# ---------------------------------------------------------------- numbers and booleans

StrictInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]


def _ascii_integer(value: Any) -> Any:
    """Query parameters arrive as text: only ASCII digits make a number (int() takes '١٢' and '1_0')."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,9}", value):
        raise ValueError("must be a whole number written with the digits 0-9")
    return value


QueryInt = Annotated[int, BeforeValidator(_ascii_integer)]

# ---------------------------------------------------------------- instants

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _instant_text(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > 40:
            raise ValueError("must be an RFC 3339 date-time such as 2026-12-01T09:00:00Z")
        return value
    if isinstance(value, datetime):
        return value
    raise ValueError("must be an RFC 3339 date-time string such as 2026-12-01T09:00:00Z")


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return value


Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_instant_text),
    Field(json_schema_extra={"format": "date-time", "examples": ["2026-12-01T09:00:00Z"]}),
    AfterValidator(_in_range),
]

# ---------------------------------------------------------------- opaque cursors

Cursor = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")]
