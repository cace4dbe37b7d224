"""Templates: a key with versions; per channel and locale a variant (email subject/body/html, sms
body, push title/body/data) in Liquid.

Liquid runs sandboxed (python-liquid): no `include`/`render` tags (no loader: a template reaches no
file and no other template), loop iterations, output size, context depth and local namespace
bounded (`Sandbox`), and undefined variables strict: `{{ name }}` without `name` in the data is an
error naming it (at ingest a 422 with `data.name`), while `{% if coupon %}` and `| default:` still
work for optional ones. Email HTML alone is autoescaped. Syntax errors are refused at creation with
their line and column. Templates are rendered at ingest: the notification stores the result.

Locale negotiation (babel): the requested locale (the request's, else the user's, else the tenant's
default) is matched against the channel's localized variants (`pt-BR` falls back to `pt`), then
the channel's default variant (one without a locale), then the tenant default locale's variant.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import psycopg
from babel.core import Locale as BabelLocale
from babel.core import UnknownLocaleError, negotiate_locale
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from .. import audit, pagination
from ..db import transaction
from ..errors import Conflict, NotFound, ValidationFailed
from ..fields import Locale, Short, Slug, Storable
from ..models import Channel, DataKey, Page

# What each channel's variant holds: part -> (required, autoescaped: email HTML alone). The Liquid
# environments live in `liquid_sandbox`, imported on the first render or syntax check: python-liquid
# costs ~65 ms of import, which an API cold start should not pay for a notification without template.
PARTS: dict[str, dict[str, tuple[bool, bool]]] = {
    "email": {"subject": (True, False), "body": (True, False), "html": (False, True)},
    "sms": {"body": (True, False)},
    "push": {"title": (True, False), "body": (True, False)},
}


# ---------------------------------------------------------------- models

Source = Annotated[str, StringConstraints(max_length=100_000), Storable]
SubjectSource = Annotated[str, StringConstraints(min_length=1, max_length=2_000), Storable]


class Variant(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "channel": "email",
                    "locale": "en",
                    "subject": "Order {{ order.id }} shipped",
                    "body": "Hi {{ name }}, {% for item in items %}{{ item.name }} {% endfor %}is on its way.",
                    "html": "<p>Hi {{ name }}, your order is on its way.</p>",
                }
            ]
        },
    )

    channel: Channel
    locale: Locale | None = Field(
        default=None, description="BCP 47 tag (en, pt-BR); omitted: the channel's default variant"
    )
    subject: SubjectSource | None = Field(default=None, description="email: required")
    body: Annotated[str, StringConstraints(min_length=1, max_length=100_000), Storable] = Field(
        description="email: the text part; sms: the message; push: the body"
    )
    html: Source | None = Field(default=None, description="email only; autoescaped")
    title: SubjectSource | None = Field(default=None, description="push: required")
    data: dict[DataKey, Annotated[str, StringConstraints(max_length=4096), Storable]] | None = Field(
        default=None, max_length=50, description="push only: string → Liquid string"
    )

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str | None) -> str | None:
        return None if value is None else canonical_locale(value)

    @model_validator(mode="after")
    def _parts(self) -> Variant:
        given = {name for name in ("subject", "body", "html", "title") if getattr(self, name) is not None}
        parts = PARTS[self.channel]
        missing = [p for p, (required, _) in parts.items() if required and p not in given]
        extra = sorted(given - set(parts))
        if self.data is not None and self.channel != "push":
            extra.append("data")
        if missing:
            raise ValueError(f"a {self.channel} variant needs {', '.join(missing)}")
        if extra:
            raise ValueError(f"a {self.channel} variant has no {', '.join(extra)}")
        return self


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Order shipped",
                    "category": "orders",
                    "variants": [
                        {
                            "channel": "email",
                            "locale": "en",
                            "subject": "Order {{ order.id }} shipped",
                            "body": "Hi {{ name }}, your order is on its way.",
                        },
                        {"channel": "sms", "body": "Order {{ order.id }} shipped"},
                    ],
                }
            ]
        },
    )

    name: Short
    category: Slug | None = Field(
        default=None, description="The notifications' category unless they give one"
    )
    variants: list[Variant] = Field(min_length=1, max_length=50)

    @field_validator("variants")
    @classmethod
    def _distinct(cls, value: list[Variant]) -> list[Variant]:
        seen: set[tuple[str, str | None]] = set()
        for v in value:
            if (v.channel, v.locale) in seen:
                raise ValueError(f"two {v.channel} variants for locale {v.locale or 'default'}")
            seen.add((v.channel, v.locale))
        return value


class TemplateCreate(TemplateUpdate):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "order-shipped",
                    "name": "Order shipped",
                    "category": "orders",
                    "variants": [
                        {
                            "channel": "email",
                            "locale": "en",
                            "subject": "Order {{ order.id }} shipped",
                            "body": "Hi {{ name }}, your order is on its way.",
                            "html": "<p>Hi {{ name }}, your order is on its way.</p>",
                        },
                        {
                            "channel": "email",
                            "locale": "pt",
                            "subject": "Pedido {{ order.id }} enviado",
                            "body": "Olá {{ name }}, o seu pedido está a caminho.",
                        },
                        {"channel": "sms", "body": "Order {{ order.id }} shipped"},
                    ],
                }
            ]
        },
    )

    key: Slug = Field(description="Lower-case slug, unique per tenant", examples=["order-shipped"])


class Template(BaseModel):
    key: str
    name: str
    category: str | None
    version: int = Field(description="This version's number")
    latest_version: int
    variants: list[Variant]
    created_at: datetime = Field(description="When the template was first created")
    updated_at: datetime = Field(description="When this version was created")


class PreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"channel": "email", "locale": "pt-BR", "data": {"name": "Ada", "order": {"id": "A-1"}}}
            ]
        },
    )

    channel: Channel
    locale: Locale | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="The template's variables")
    version: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] | None = Field(
        default=None, description="An older version; the latest when omitted"
    )

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str | None) -> str | None:
        return None if value is None else canonical_locale(value)


class Preview(BaseModel):
    key: str
    version: int
    channel: Channel
    locale: str | None = Field(description="The variant chosen (null: the channel's default variant)")
    payload: dict[str, Any] = Field(description="What the notification would carry (no address)")


# ---------------------------------------------------------------- locales


def canonical_locale(tag: str) -> str:
    """`pt_br`, `PT-BR` → `pt-BR`; ValueError for a tag babel does not know."""
    try:
        parsed = BabelLocale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown locale {tag!r}") from exc
    return str(parsed).replace("_", "-")


def _babel(tag: str | None) -> str | None:
    if not tag:
        return None
    try:
        return str(BabelLocale.parse(tag.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def choose_variant(
    variants: Sequence[Mapping[str, Any]], channel: str, wanted: str | None, tenant_default: str | None
) -> Mapping[str, Any] | None:
    """The variant for `channel` in `wanted` (else its language), else the default variant, else
    the tenant default locale's; None when the template has nothing for the channel."""
    mine = [v for v in variants if v["channel"] == channel]
    localized: dict[str, Mapping[str, Any]] = {}
    for v in mine:
        tag = _babel(v.get("locale"))
        if tag is not None:
            localized[tag] = v
    for tag in (wanted, None, tenant_default):
        if tag is None:
            default = next((v for v in mine if not v.get("locale")), None)
            if default is not None:
                return default
            continue
        want = _babel(tag)
        if want and localized:
            found = negotiate_locale([want], list(localized), sep="_")
            if found is not None:
                return localized[found]
    return None


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class Rendered:
    payload: dict[str, Any]
    locale: str | None


def render(variant: Mapping[str, Any], data: Mapping[str, Any], prefix: str = "") -> Rendered:
    """The payload fields of `variant` rendered with `data`; a 422 naming the undefined variable
    (`data.<name>`), the limit exceeded, or the filter that failed."""
    out: dict[str, Any] = {}
    for part, (_, html) in PARTS[variant["channel"]].items():
        source = variant.get(part)
        if source is not None:
            out[part] = _render_part(source, html, data, part, prefix)
    if variant.get("data"):
        out["data"] = {
            k: _render_part(v, False, data, f"data.{k}", prefix) for k, v in variant["data"].items()
        }
    return Rendered(out, variant.get("locale"))


def _render_part(source: str, html: bool, data: Mapping[str, Any], part: str, prefix: str) -> str:
    from liquid.exceptions import LiquidError, ResourceLimitError, UndefinedError

    from .liquid_sandbox import compile_part

    try:
        return compile_part(source, html).render(dict(data))
    except UndefinedError as exc:
        name = str(exc.message).removesuffix(" is undefined").strip("'\"")
        raise ValidationFailed(
            f"the template's {part} uses {name}, which the data does not define",
            [{"field": f"{prefix}data.{name}", "message": f"is undefined (used by the template's {part})"}],
        ) from exc
    except ResourceLimitError as exc:
        raise ValidationFailed(
            f"rendering the template's {part} exceeded a limit: {exc.message}",
            [{"field": f"{prefix}template", "message": f"{part}: {exc.message}"}],
        ) from exc
    except LiquidError as exc:  # a filter given the wrong type, a template that no longer parses
        raise ValidationFailed(
            f"the template's {part} could not be rendered: {exc.message}",
            [{"field": f"{prefix}data", "message": f"{part}: {exc.message}"}],
        ) from exc


def check_syntax(variants: Sequence[Variant]) -> None:
    """Every part of every variant must parse: a 422 per part with its line and column."""
    from liquid.exceptions import LiquidError

    from .liquid_sandbox import compile_part, syntax_error

    details = []
    for i, v in enumerate(variants):
        parts = [(p, getattr(v, p), PARTS[v.channel][p][1]) for p in PARTS[v.channel]]
        parts += [(f"data.{k}", s, False) for k, s in (v.data or {}).items()]
        for part, source, html in parts:
            if source is None:
                continue
            try:
                compile_part(source, html)
            except LiquidError as exc:
                details.append({"field": f"variants[{i}].{part}", "message": syntax_error(exc)})
    if details:
        raise ValidationFailed("a template part is not valid Liquid", details)


# ---------------------------------------------------------------- storage

LATEST = "id, key, version, name, category, variants, created_at, updated_at, archived_at"


def _template(row: Mapping[str, Any], latest: int | None = None) -> Template:
    return Template(
        key=row["key"],
        name=row["name"],
        category=row["category"],
        version=row["version"],
        latest_version=latest or row["version"],
        variants=[Variant.model_validate(v) for v in row["variants"]],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _check_category(conn: Any, tenant_id: UUID, category: str | None) -> None:
    if category is None:
        return
    found = conn.execute(
        "SELECT 1 FROM categories WHERE tenant_id = %s AND key = %s", (tenant_id, category)
    ).fetchone()
    if found is None:
        raise ValidationFailed.field("category", f"no category {category!r}; create it first")


def _stored(variants: Sequence[Variant]) -> str:
    import json

    return json.dumps([v.model_dump(mode="json", exclude_none=True) for v in variants])


def _summary(data: TemplateUpdate, version: int) -> dict[str, Any]:
    return {
        "name": data.name,
        "category": data.category,
        "version": version,
        "variants": [f"{v.channel}:{v.locale or 'default'}" for v in data.variants],
    }


def create(tenant_id: UUID, data: TemplateCreate, actor: audit.Actor) -> Template:
    check_syntax(data.variants)
    template_id = uuid.uuid4()
    try:
        with transaction() as conn:
            _check_category(conn, tenant_id, data.category)
            conn.execute(
                "INSERT INTO templates (id, tenant_id, key, latest_version) VALUES (%s, %s, %s, 1)",
                (template_id, tenant_id, data.key),
            )
            conn.execute(
                "INSERT INTO template_versions (template_id, version, name, category, variants)"
                " VALUES (%s, 1, %s, %s, %s::jsonb)",
                (template_id, data.name, data.category, _stored(data.variants)),
            )
            audit.record(conn, tenant_id, actor, "template.create", "template", data.key, _summary(data, 1))
            row = _latest(conn, tenant_id, data.key)
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(
            f"a template with key {data.key!r} already exists (PUT makes a new version)",
            [{"field": "key", "message": "already used by another template of this tenant"}],
        ) from exc
    return _template(row)


def update(tenant_id: UUID, key: str, data: TemplateUpdate, actor: audit.Actor) -> Template:
    """A new version (restoring an archived template); earlier versions stay readable."""
    check_syntax(data.variants)
    with transaction() as conn:
        row = conn.execute(
            "UPDATE templates SET latest_version = latest_version + 1, archived_at = NULL, updated_at = now()"
            " WHERE tenant_id = %s AND key = %s RETURNING id, latest_version",
            (tenant_id, key),
        ).fetchone()
        if row is None:
            raise NotFound(f"template {key!r} not found")
        _check_category(conn, tenant_id, data.category)
        conn.execute(
            "INSERT INTO template_versions (template_id, version, name, category, variants)"
            " VALUES (%s, %s, %s, %s, %s::jsonb)",
            (row["id"], row["latest_version"], data.name, data.category, _stored(data.variants)),
        )
        audit.record(
            conn, tenant_id, actor, "template.update", "template", key, _summary(data, row["latest_version"])
        )
        latest = _latest(conn, tenant_id, key)
    return _template(latest)


def _latest(conn: Any, tenant_id: UUID, key: str) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {LATEST} FROM template_latest WHERE tenant_id = %s AND key = %s", (tenant_id, key)
    ).fetchone()
    assert row is not None
    return row


def get(tenant_id: UUID, key: str, version: int | None = None) -> Template:
    with transaction() as conn:
        row = conn.execute(
            "SELECT t.key, v.version, v.name, v.category, v.variants, t.created_at,"
            " v.created_at AS updated_at, t.latest_version FROM templates t"
            " JOIN template_versions v ON v.template_id = t.id"
            " AND v.version = coalesce(%s, t.latest_version)"
            " WHERE t.tenant_id = %s AND t.key = %s AND t.archived_at IS NULL",
            (version, tenant_id, key),
        ).fetchone()
    if row is None:
        raise NotFound(f"template {key!r}{f' version {version}' if version else ''} not found")
    return _template(row, row["latest_version"])


def list_page(tenant_id: UUID, *, limit: int = 20, cursor: str | None = None) -> Page[Template]:
    rows, next_cursor = pagination.fetch_page(
        "template_latest", LATEST, ["tenant_id = %s", "archived_at IS NULL"], [tenant_id], limit, cursor
    )
    return Page[Template](data=[_template(r) for r in rows], next_cursor=next_cursor)


def archive(tenant_id: UUID, key: str, actor: audit.Actor) -> None:
    with transaction() as conn:
        row = conn.execute(
            "UPDATE templates SET archived_at = now(), updated_at = now()"
            " WHERE tenant_id = %s AND key = %s AND archived_at IS NULL RETURNING id",
            (tenant_id, key),
        ).fetchone()
        if row is None:
            raise NotFound(f"template {key!r} not found")
        audit.record(conn, tenant_id, actor, "template.archive", "template", key, {"archived": True})


def tenant_locale(conn: Any, tenant_id: UUID) -> str:
    row = conn.execute("SELECT default_locale FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    return str(row["default_locale"]) if row else "en"


def preview(tenant_id: UUID, key: str, request: PreviewRequest) -> Preview:
    template = get(tenant_id, key, request.version)
    with transaction() as conn:
        default = tenant_locale(conn, tenant_id)
    variants = [v.model_dump(exclude_none=True) for v in template.variants]
    variant = choose_variant(variants, request.channel, request.locale or default, default)
    if variant is None:
        raise ValidationFailed.field("channel", f"template {key!r} has no {request.channel} variant")
    rendered = render(variant, request.data)
    return Preview(
        key=key,
        version=template.version,
        channel=request.channel,
        locale=rendered.locale,
        payload=rendered.payload,
    )


def lookup(conn: Any, tenant_id: UUID, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The tenant's live templates among `keys` (latest versions), in one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT key, version, category, variants FROM template_latest"
        " WHERE tenant_id = %s AND key = ANY(%s) AND archived_at IS NULL",
        (tenant_id, wanted),
    ).fetchall()
    return {r["key"]: r for r in rows}
