"""What ingest asks of the audience: users with their preferences, templates, categories (`load`,
one round trip for a whole batch); rendering a notification's template (`render_item`); and the
screen every notification passes before it is stored (`screen`): the user's preferences, the
address's suppressions (one query) and the user's quiet hours.

A notification the user's preferences turn off is not created: a 422 naming the reason. One to a
suppressed address is stored `suppressed` with the reason and never sent (as the contract says of
a send to a suppressed address, and so that "did they get it, and if not why?" has an answer). One
due inside the user's quiet hours is stored `scheduled` until the window ends. Critical categories
bypass preferences, quiet hours and the `unsubscribe` suppression, never a hard one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .. import suppressions
from ..channels import CHANNELS
from ..errors import DomainError, ValidationFailed
from ..models import NotificationCreate, parse
from . import categories, preferences, quiet_hours, templates

if TYPE_CHECKING:
    from ..notifications import _Prepared

# The payload fields that address a message; with a template, a payload may hold only these.
ADDRESSING = {"email": ("to", "from", "reply_to"), "sms": ("to", "from"), "push": ("token", "topic")}

USER_COLUMNS = (
    "u.id, u.email, u.phone, u.push_tokens, u.external_id, u.locale, u.timezone,"
    " p.channels, p.categories, p.quiet_hours"
)


@dataclass
class View:
    users: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_locale: str = "en"

    def critical(self, category: str | None) -> bool:
        return bool(category and self.categories.get(category, {}).get("critical"))


def load_users(conn: Any, tenant_id: UUID, ids: Iterable[UUID] = (), external_ids: Iterable[str] = ()) -> Any:
    """The tenant's users (by id or external id) with their preferences: one query (a cursor, so a
    caller in pipeline mode fetches it when it needs it)."""
    return conn.execute(
        f"SELECT {USER_COLUMNS} FROM users u LEFT JOIN user_preferences p ON p.user_id = u.id"
        " WHERE u.tenant_id = %s AND (u.id = ANY(%s) OR u.external_id = ANY(%s))",
        (tenant_id, list(ids), list(external_ids)),
    )


def load(conn: Any, tenant_id: UUID, items: Sequence[_Prepared]) -> View:
    view = View()
    user_ids = {p.request.user_id for p in items if p.request.user_id}
    keys = {p.request.template for p in items if p.request.template}
    with conn.pipeline():
        users = load_users(conn, tenant_id, user_ids) if user_ids else None
        found = (
            conn.execute(
                "SELECT key, version, category, variants FROM template_latest"
                " WHERE tenant_id = %s AND key = ANY(%s) AND archived_at IS NULL",
                (tenant_id, sorted(keys)),
            )
            if keys
            else None
        )
        locale = (
            conn.execute("SELECT default_locale FROM tenants WHERE id = %s", (tenant_id,)) if keys else None
        )
        wanted = sorted({p.request.category for p in items if p.request.category})
        cats = (
            conn.execute(
                "SELECT key, critical, default_channels FROM categories WHERE tenant_id = %s"
                " AND (key = ANY(%s) OR key IN (SELECT category FROM template_latest"
                " WHERE tenant_id = %s AND key = ANY(%s)))",
                (tenant_id, wanted, tenant_id, sorted(keys)),
            )
            if wanted or keys
            else None
        )
        if users is not None:
            view.users = {r["id"]: r for r in users.fetchall()}
        if found is not None:
            view.templates = {r["key"]: r for r in found.fetchall()}
        if locale is not None:
            row = locale.fetchone()
            view.default_locale = row["default_locale"] if row else "en"
        if cats is not None:
            view.categories = {r["key"]: r for r in cats.fetchall()}
    return view


# ---------------------------------------------------------------- templates at ingest


def addressing(channel: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """With a template, the payload may only address the message; its content comes from the
    template. Values are checked with the whole payload after rendering."""
    allowed = ADDRESSING[channel]
    given = dict(payload or {})
    extra = [k for k in given if k not in allowed]
    if extra:
        raise ValidationFailed(
            "with a template, the payload may only give the address",
            [
                {
                    "field": f"payload.{k}",
                    "message": f"comes from the template (allowed: {', '.join(allowed)})",
                }
                for k in extra
            ],
        )
    return {k: v for k, v in given.items() if v is not None}


def canonical(req: NotificationCreate) -> dict[str, Any]:
    """What the idempotency hash adds for a templated notification."""
    if req.template is None:
        return {}
    return {"template": req.template, "data": req.data or {}, "locale": req.locale}


def render_item(item: _Prepared, view: View) -> None:
    """Render the item's template into its payload (its address fields kept); record the template
    and version, and take the template's category when the request gives none."""
    req = item.request
    if req.template is None:
        return
    template = view.templates.get(req.template)
    if template is None:
        raise ValidationFailed.field("template", f"no template {req.template!r} (or it is archived)")
    if req.locale is not None:
        try:
            templates.canonical_locale(req.locale)
        except ValueError as exc:
            raise ValidationFailed.field("locale", str(exc)) from exc
    user = view.users.get(req.user_id) if req.user_id else None
    wanted = req.locale or (user or {}).get("locale") or view.default_locale
    variant = templates.choose_variant(template["variants"], req.channel, wanted, view.default_locale)
    if variant is None:
        raise ValidationFailed.field("template", f"template {req.template!r} has no {req.channel} variant")
    rendered = templates.render(variant, req.data or {})
    item.payload = {**rendered.payload, **item.payload}
    item.template_key, item.template_version = req.template, template["version"]
    item.category = req.category or template["category"]


def validate_rendered(item: _Prepared) -> None:
    if item.request.template is None:
        return
    model = parse(CHANNELS[item.request.channel].payload_model, item.payload, prefix="payload")
    item.payload = model.model_dump(by_alias=True, exclude_none=True)


# ---------------------------------------------------------------- the screen


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None  # preference | suppressed | None (allowed)
    detail: str = ""
    hold_until: datetime | None = None


def verdict(
    user: Mapping[str, Any] | None,
    category: str | None,
    channel: str,
    critical: bool,
    suppressed_for: Iterable[str],
    due: datetime,
) -> Verdict:
    """Pure: whether a notification may be created, and until when it is held."""
    if user is not None and not preferences.allowed(user, category, channel, critical):
        return Verdict("preference", preferences.blocked_reason(category, channel))
    blocking = suppressions.blocks(suppressed_for, critical)
    if blocking is not None:
        return Verdict("suppressed", f"{blocking}: the address is suppressed")
    if user is not None and not critical:
        held = quiet_hours.hold_until(
            preferences.window_of(user), quiet_hours.zone_of(user.get("timezone")), due
        )
        if held is not None:
            return Verdict(None, hold_until=held)
    return Verdict(None)


def lookup_suppressions(
    conn: Any, tenant_id: UUID, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], set[str]]:
    """(channel, address) → reasons, in one query (addresses normalized)."""
    found = suppressions.lookup(conn, [(tenant_id, c, a) for c, a in pairs])
    return {(c, a): reasons for (_, c, a), reasons in found.items()}


def screen(
    conn: Any, tenant_id: UUID, items: Sequence[_Prepared], view: View, now: datetime
) -> Iterator[tuple[_Prepared, DomainError]]:
    """Yield each item that must not be created (the user's preferences turn it off) with its 422;
    mark the ones to a suppressed address (stored `suppressed` with the reason, never sent) and set
    `hold_until` on the held ones."""
    addresses = {
        (p.request.channel, address)
        for p in items
        if (address := CHANNELS[p.request.channel].recipient(p.payload))
    }
    found = lookup_suppressions(conn, tenant_id, addresses) if addresses else {}
    for p in items:
        channel = p.request.channel
        address = CHANNELS[channel].recipient(p.payload) or ""
        user = view.users.get(p.request.user_id) if p.request.user_id else None
        due = p.request.send_at if p.request.send_at and p.request.send_at > now else now
        decided = verdict(
            user,
            p.category,
            channel,
            view.critical(p.category),
            found.get((channel, suppressions.normalize(channel, address)), ()),
            due,
        )
        if decided.reason == "preference":
            field = "category" if p.category else "channel"
            yield (
                p,
                ValidationFailed(
                    "not created: the user's preferences turn this off",
                    [{"field": field, "message": decided.detail}],
                ),
            )
        elif decided.reason == "suppressed":
            p.suppressed = decided.detail  # stored `suppressed` with the reason, never sent
        else:
            p.hold_until = decided.hold_until


__all__ = ["View", "categories", "load", "render_item", "screen", "verdict"]
