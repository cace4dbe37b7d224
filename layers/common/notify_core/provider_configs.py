"""Provider configs: a tenant's provider route per channel (which providers, in which order, with
whose credentials), and the per-container provider instances built from them.

* A config names a channel, a provider serving it, a priority (unique among the tenant's active
  configs of the channel; lowest first), the provider's settings and its credentials. What a provider
  needs is declared on its class (``credentials_model``, ``options_model``): a config missing a
  required credential, or with a setting the provider does not take, is a 422 when saved, never a
  surprise at send time.
* Credentials are write-only: they go to Secrets Manager (one secret per config, under
  PROVIDER_CONFIG_SECRET_PREFIX), the row keeps the secret's ARN and the version it reads, and only
  the names of the fields given. They are never returned, logged or audited.
* Nothing is half-saved: the row is written in the transaction that also creates the secret (or
  stores its new version) and records the audit event; a secret created for a transaction that then
  fails is deleted again. A superseded version stays readable, so a row never points at a version
  that is gone. Secrets left behind by a double failure are removed by ``remove_orphan_secrets``
  (the cleanup job).
* The sender builds one provider instance per config and container (``ConfigProviders``), from the
  deployment's endpoints and timeouts plus the config's settings and credentials, and keeps it for
  PROVIDER_CONFIG_CACHE_SECONDS or until the config changes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import audit, clients, pagination
from .config import get_settings
from .db import transaction
from .errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from .fields import StrictBool, StrictInt
from .models import Channel, Page, ProviderName, Strict, details_from
from .observability import describe_exception, logger
from .providers import PROVIDERS, PermanentProviderError, Provider, TransientProviderError
from .providers.base import ProviderSettings, config_settings

# ---------------------------------------------------------------- the HTTP models

Priority = Annotated[StrictInt, Field(ge=0, le=1000, description="Lower goes first; unique per channel")]
Values = Annotated[dict[str, Any], Field(max_length=20)]

CREATE_EXAMPLE: dict[str, Any] = {
    "channel": "email",
    "provider": "sendgrid",
    "priority": 10,
    "credentials": {"api_key": "SG.xxxxxxxx"},
    "settings": {"default_from": "notifications@example.com"},
    "active": True,
}


class ProviderConfigCreate(Strict):
    """A provider for one of the tenant's channels. `credentials` are written to Secrets Manager and
    never returned; which fields `credentials` and `settings` take depends on the provider: sendgrid
    {api_key} {default_from}; twilio {account_sid, auth_token} {from_number | messaging_service_sid};
    fcm {service_account_json} {project_id}; ses and sns {access_key_id, secret_access_key} or none
    (the platform's own AWS account) {region, default_from, configuration_set} / {region, sender_id,
    sms_type}; console none."""

    model_config = ConfigDict(json_schema_extra={"examples": [dict(CREATE_EXAMPLE)]})

    channel: Channel
    provider: ProviderName
    priority: Priority
    credentials: Values = Field(default_factory=dict, description="Write-only: never returned")
    settings: Values = Field(default_factory=dict, description="The provider's settings")
    active: StrictBool = True


class ProviderConfigPatch(Strict):
    """Only the fields present change. `credentials` and `settings` replace the whole object. The
    channel and the provider of a config never change: create another config instead."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"priority": 20, "active": False}, {"credentials": {"api_key": "SG.new"}}]
        }
    )

    priority: Priority | None = None
    credentials: Values | None = Field(default=None, description="Write-only: replaces the credentials")
    settings: Values | None = None
    active: StrictBool | None = None
    channel: None = Field(default=None, description="Cannot be changed")
    provider: None = Field(default=None, description="Cannot be changed")

    @field_validator("channel", "provider", mode="before")
    @classmethod
    def _fixed(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("cannot be changed: create a new config and delete this one")
        return value


class ProviderConfig(BaseModel):
    id: UUID
    channel: Channel
    provider: ProviderName
    priority: int = Field(description="Lower goes first among the channel's active configs")
    settings: dict[str, Any]
    credential_fields: list[str] = Field(
        description="The names of the credential fields stored; their values are never returned",
        examples=[["api_key"]],
    )
    active: bool
    created_at: datetime
    updated_at: datetime


COLUMNS = "id, channel, provider, priority, settings, credential_fields, active, created_at, updated_at"

# ---------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class Checked:
    options: dict[str, Any]  # as stored in `settings`
    credentials: dict[str, Any]  # plain values, for the secret only
    credential_fields: list[str]


def check(
    channel: str, provider: str, settings: Mapping[str, Any], credentials: Mapping[str, Any]
) -> Checked:
    """The config's settings and credentials validated against what `provider` declares; a 422
    naming each problem (`provider`, `settings.<field>`, `credentials.<field>`) otherwise."""
    cls = PROVIDERS.get(provider)
    if cls is None:
        raise ValidationFailed.field("provider", f"unknown provider; known: {', '.join(sorted(PROVIDERS))}")
    if channel not in cls.channels:
        raise ValidationFailed.field(
            "provider",
            f"{provider} cannot send on the {channel} channel (it serves {', '.join(sorted(cls.channels))})",
        )
    details: list[dict[str, str]] = []
    options: BaseModel | None = None
    secret: BaseModel | None = None
    try:
        options = provider_class(provider).options_model.model_validate(dict(settings))
    except ValidationError as exc:
        details += details_from(exc, "settings")
    try:
        secret = provider_class(provider).credentials_model.model_validate(dict(credentials))
    except ValidationError as exc:
        details += details_from(exc, "credentials")
    if details or options is None or secret is None:
        raise ValidationFailed(f"the {provider} config is incomplete or invalid", details)
    plain = {
        name: value.get_secret_value() if hasattr(value, "get_secret_value") else value
        for name, value in secret.model_dump(exclude_none=True).items()
    }
    return Checked(options.model_dump(mode="json", exclude_none=True), plain, sorted(plain))


def provider_class(name: str) -> Any:
    """The provider's class, with its declarations (`credentials_model`, `options_model`)."""
    return PROVIDERS[name]


# ---------------------------------------------------------------- Secrets Manager


class CredentialStoreUnavailable(ServiceUnavailable):
    """Secrets Manager refused or could not be reached: nothing was saved."""


def _secrets() -> Any:
    return clients.aws_client("secretsmanager")


def _unavailable(exc: Exception) -> CredentialStoreUnavailable:
    logger.warning("secrets manager call failed", extra={"error": describe_exception(exc)})
    return CredentialStoreUnavailable(
        "the credential store is unavailable; nothing was saved, retry shortly", retry_after=5
    )


def secret_name(tenant_id: UUID, config_id: UUID) -> str:
    return f"{get_settings().provider_config_secret_prefix}{tenant_id}/{config_id}"


def create_secret(tenant_id: UUID, config_id: UUID, values: Mapping[str, Any]) -> tuple[str, str]:
    """A new secret holding `values`: (ARN, version id)."""
    try:
        reply = _secrets().create_secret(
            Name=secret_name(tenant_id, config_id),
            Description="notification platform: provider config credentials",
            SecretString=json.dumps(dict(values)),
            Tags=[
                {"Key": "notify:tenant", "Value": str(tenant_id)},
                {"Key": "notify:provider-config", "Value": str(config_id)},
            ],
        )
    except Exception as exc:  # botocore's ClientError / BotoCoreError: one reply for every failure
        raise _unavailable(exc) from exc
    return str(reply["ARN"]), str(reply["VersionId"])


def put_secret(arn: str, values: Mapping[str, Any]) -> str:
    """A new version of the secret; the previous one stays readable (AWSPREVIOUS)."""
    try:
        reply = _secrets().put_secret_value(SecretId=arn, SecretString=json.dumps(dict(values)))
    except Exception as exc:  # botocore's ClientError / BotoCoreError
        raise _unavailable(exc) from exc
    return str(reply["VersionId"])


def delete_secret(arn: str) -> bool:
    """Delete at once (no recovery window: credentials should not outlive their config). False, and
    a warning, when it failed: the secret is then an orphan for `remove_orphan_secrets`."""
    try:
        _secrets().delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    except Exception as exc:  # noqa: BLE001 — best effort; the cleanup job removes what remains
        logger.warning("provider config secret not deleted", extra={"error": describe_exception(exc)})
        return False
    return True


def read_secret(arn: str, version: str) -> dict[str, Any]:
    """The credentials at `version` (a send-time read: typed provider errors, which fail over)."""
    from .aws import AwsServiceError, AwsTransportError

    try:
        value = _secrets().get_secret_value(SecretId=arn, VersionId=version)["SecretString"]
    except AwsServiceError as exc:
        code = exc.code
        if code in (
            "ResourceNotFoundException",
            "AccessDeniedException",
            "DecryptionFailure",
            "InvalidRequestException",
        ):
            raise PermanentProviderError(
                f"the config's credentials cannot be read: {code}", "not_configured", fault="provider"
            ) from exc
        raise TransientProviderError(
            f"the config's credentials are unavailable: {code or exc}", "secrets_unavailable"
        ) from exc
    except AwsTransportError as exc:
        raise TransientProviderError(
            f"the config's credentials are unavailable: {type(exc).__name__}", "secrets_unavailable"
        ) from exc
    data = json.loads(value)
    if not isinstance(data, dict):
        raise PermanentProviderError("the config's credentials are not a JSON object", "not_configured")
    return data


# ---------------------------------------------------------------- create, list, change, delete


def _model(row: Mapping[str, Any]) -> ProviderConfig:
    return ProviderConfig.model_validate(row)


def _priority_taken(priority: int, channel: str) -> Conflict:
    return Conflict(
        f"another active {channel} config already has priority {priority}",
        [{"field": "priority", "message": f"{priority} is taken by another active {channel} config"}],
    )


def _check_priority(
    conn: Any, tenant_id: UUID, channel: str, priority: int, exclude: UUID | None = None
) -> None:
    taken = conn.execute(
        "SELECT 1 FROM provider_configs WHERE tenant_id = %s AND channel = %s AND priority = %s AND active"
        " AND id IS DISTINCT FROM %s",
        (tenant_id, channel, priority, exclude),
    ).fetchone()
    if taken is not None:
        raise _priority_taken(priority, channel)


def create(tenant_id: UUID, data: ProviderConfigCreate, actor: audit.Actor) -> ProviderConfig:
    checked = check(data.channel, data.provider, data.settings, data.credentials)
    config_id = uuid.uuid4()
    created: str | None = None
    try:
        with transaction() as conn:
            if data.active:
                _check_priority(conn, tenant_id, data.channel, data.priority)
            arn = version = None
            if checked.credentials:
                arn, version = create_secret(tenant_id, config_id, checked.credentials)
                created = arn
            row = conn.execute(
                f"INSERT INTO provider_configs (id, tenant_id, channel, provider, priority, settings, secret_arn,"
                f" secret_version, credential_fields, active) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)"
                f" RETURNING {COLUMNS}",
                (
                    config_id,
                    tenant_id,
                    data.channel,
                    data.provider,
                    data.priority,
                    json.dumps(checked.options),
                    arn,
                    version,
                    checked.credential_fields,
                    data.active,
                ),
            ).fetchone()
            audit.record(
                conn,
                tenant_id,
                actor,
                "provider_config.create",
                "provider_config",
                config_id,
                _audited(data.channel, data.provider, data.priority, checked.options, data.active, bool(arn)),
            )
    except psycopg.errors.UniqueViolation as exc:
        _forget(created)
        raise _priority_taken(data.priority, data.channel) from exc
    except BaseException:
        _forget(created)
        raise
    route_cache.forget()  # this container routes by the change at once
    assert row is not None
    return _model(row)


def _audited(
    channel: str | None,
    provider: str | None,
    priority: int | None,
    settings: Any,
    active: bool | None,
    credentials: bool,
) -> dict[str, Any]:
    """The changed fields for the audit log: never the credentials, only that they changed."""
    changes = {
        "channel": channel,
        "provider": provider,
        "priority": priority,
        "settings": settings,
        "active": active,
    }
    out = {name: value for name, value in changes.items() if value is not None}
    if credentials:
        out["credentials"] = audit.REDACTED
    return out


def _forget(arn: str | None) -> None:
    """Undo a secret created for a transaction that did not commit."""
    if arn is not None:
        delete_secret(arn)


def get(tenant_id: UUID, config_id: UUID) -> ProviderConfig:
    with transaction() as conn:
        row = conn.execute(
            f"SELECT {COLUMNS} FROM provider_configs WHERE tenant_id = %s AND id = %s", (tenant_id, config_id)
        ).fetchone()
    if row is None:
        raise NotFound(f"provider config {config_id} not found")
    return _model(row)


def list_page(
    tenant_id: UUID, *, limit: int = 20, cursor: str | None = None, channel: str | None = None
) -> Page[ProviderConfig]:
    where: list[str] = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    if channel is not None:
        where.append("channel = %s")
        params.append(channel)
    rows, next_cursor = pagination.fetch_page("provider_configs", COLUMNS, where, params, limit, cursor)
    return Page[ProviderConfig](data=[_model(r) for r in rows], next_cursor=next_cursor)


def update(
    tenant_id: UUID, config_id: UUID, patch: ProviderConfigPatch, actor: audit.Actor
) -> ProviderConfig:
    """Change priority, settings, credentials or active, in one transaction with its audit event.
    New credentials become a new version of the config's secret (or a new secret); the row points at
    it only if the transaction commits."""
    given = patch.model_dump(exclude_unset=True, exclude={"channel", "provider"})
    if not given:
        return get(tenant_id, config_id)
    for name in ("priority", "active", "settings", "credentials"):
        if name in given and given[name] is None:
            raise ValidationFailed.field(name, "must not be null")
    created: str | None = None
    superseded: str | None = None
    channel = "this"
    try:
        with transaction() as conn:
            row = conn.execute(
                "SELECT channel, provider, priority, settings, active, secret_arn, secret_version, credential_fields"
                " FROM provider_configs WHERE tenant_id = %s AND id = %s FOR UPDATE",
                (tenant_id, config_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"provider config {config_id} not found")
            channel = row["channel"]
            values: dict[str, Any] = {}
            if "settings" in given or "credentials" in given:
                # Only what was given is checked against the provider; the stored half is valid.
                cls = provider_class(row["provider"])
                details: list[dict[str, str]] = []
                if "settings" in given:
                    try:
                        cls.options_model.model_validate(given["settings"])
                    except ValidationError as exc:
                        details += details_from(exc, "settings")
                checked_credentials: dict[str, Any] = {}
                if "credentials" in given:
                    try:
                        model = cls.credentials_model.model_validate(given["credentials"])
                    except ValidationError as exc:
                        details += details_from(exc, "credentials")
                    else:
                        checked_credentials = {
                            name: value.get_secret_value() if hasattr(value, "get_secret_value") else value
                            for name, value in model.model_dump(exclude_none=True).items()
                        }
                if details:
                    raise ValidationFailed(f"the {row['provider']} config is invalid", details)
                if "settings" in given:
                    values["settings"] = json.dumps(
                        cls.options_model.model_validate(given["settings"]).model_dump(
                            mode="json", exclude_none=True
                        )
                    )
                if "credentials" in given:
                    if checked_credentials and row["secret_arn"]:
                        values["secret_version"] = put_secret(row["secret_arn"], checked_credentials)
                    elif checked_credentials:
                        arn, version = create_secret(tenant_id, config_id, checked_credentials)
                        created = arn
                        values["secret_arn"], values["secret_version"] = arn, version
                    else:  # none needed (ses/sns on the platform's account): drop the secret after commit
                        superseded = row["secret_arn"]
                        values["secret_arn"] = values["secret_version"] = None
                    values["credential_fields"] = sorted(checked_credentials)
            if "priority" in given:
                values["priority"] = given["priority"]
            if "active" in given:
                values["active"] = given["active"]
            active = values.get("active", row["active"])
            priority = values.get("priority", row["priority"])
            if active and (priority != row["priority"] or not row["active"]):
                _check_priority(conn, tenant_id, row["channel"], priority, exclude=config_id)
            assignments = ", ".join(
                f"{name} = %s::jsonb" if name == "settings" else f"{name} = %s" for name in values
            )
            updated = conn.execute(
                f"UPDATE provider_configs SET {assignments}, updated_at = now()"
                f" WHERE tenant_id = %s AND id = %s RETURNING {COLUMNS}",
                [*values.values(), tenant_id, config_id],
            ).fetchone()
            audit.record(
                conn,
                tenant_id,
                actor,
                "provider_config.update",
                "provider_config",
                config_id,
                _audited(
                    None,
                    None,
                    given.get("priority"),
                    json.loads(values["settings"]) if "settings" in values else None,
                    given.get("active"),
                    "credentials" in given,
                ),
            )
    except psycopg.errors.UniqueViolation as exc:
        _forget(created)
        raise _priority_taken(int(given.get("priority") or 0), channel) from exc
    except BaseException:
        _forget(created)
        raise
    route_cache.forget()
    if superseded:
        delete_secret(superseded)
    assert updated is not None
    return _model(updated)


def delete(tenant_id: UUID, config_id: UUID, actor: audit.Actor) -> None:
    """Remove the config (and its audit event) in one transaction; then its secret."""
    with transaction() as conn:
        row = conn.execute(
            "DELETE FROM provider_configs WHERE tenant_id = %s AND id = %s RETURNING channel, provider, secret_arn",
            (tenant_id, config_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"provider config {config_id} not found")
        audit.record(
            conn,
            tenant_id,
            actor,
            "provider_config.delete",
            "provider_config",
            config_id,
            {"channel": row["channel"], "provider": row["provider"]},
        )
    route_cache.forget()
    if row["secret_arn"]:
        delete_secret(row["secret_arn"])


def _created(value: Any) -> datetime | None:
    """A secret's CreatedDate: epoch seconds on the wire (a datetime from boto3)."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return value if isinstance(value, datetime) else None


def remove_orphan_secrets(min_age_seconds: float = 3600, limit: int = 100) -> int:
    """Delete secrets under the prefix that no config references (a transaction and its undo both
    failed, or a delete's secret removal failed), older than `min_age_seconds`. Returns how many."""
    prefix = get_settings().provider_config_secret_prefix
    found: list[tuple[str, datetime | None]] = []
    try:
        token: str | None = None
        while len(found) < 10 * limit:
            page = _secrets().list_secrets(
                Filters=[{"Key": "name", "Values": [prefix]}],
                MaxResults=100,
                **({"NextToken": token} if token else {}),
            )
            found += [
                (s["ARN"], _created(s.get("CreatedDate")))
                for s in page.get("SecretList", [])
                if s["Name"].startswith(prefix)
            ]
            token = page.get("NextToken")
            if not token:
                break
    except Exception as exc:  # noqa: BLE001 — cleanup is best effort; it runs again tomorrow
        logger.warning("provider config secrets not listed", extra={"error": describe_exception(exc)})
        return 0
    if not found:
        return 0
    with transaction() as conn:
        used = {
            r["secret_arn"]
            for r in conn.execute(
                "SELECT secret_arn FROM provider_configs WHERE secret_arn = ANY(%s)",
                ([arn for arn, _ in found],),
            ).fetchall()
        }
    now = time.time()
    orphans = [
        arn
        for arn, created in found
        if arn not in used and (created is None or now - created.timestamp() >= min_age_seconds)
    ][:limit]
    return sum(delete_secret(arn) for arn in orphans)


# ---------------------------------------------------------------- the sender's side


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One active config as the sender reads it."""

    id: UUID
    tenant_id: UUID
    channel: str
    provider: str
    priority: int
    settings: Mapping[str, Any]
    secret_arn: str | None
    secret_version: str | None
    updated_at: datetime


ROUTE_COLUMNS = "id, tenant_id, channel, provider, priority, settings, secret_arn, secret_version, updated_at"


class RouteCache:
    """Routes per (tenant, channel), kept PROVIDER_ROUTE_CACHE_SECONDS per container (an empty route
    too), so that a steady stream of batches costs no query for them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[UUID, str], tuple[float, list[RouteConfig]]] = {}
        self._lock = threading.Lock()

    def routes(
        self,
        pairs: Iterable[tuple[UUID, str]],
        load: Callable[[set[tuple[UUID, str]]], dict[tuple[UUID, str], list[RouteConfig]]],
    ) -> dict[tuple[UUID, str], list[RouteConfig]]:
        """The non-empty routes of `pairs`, reading only the ones not cached (one `load` call)."""
        ttl = get_settings().provider_route_cache_seconds
        now = self._clock()
        found: dict[tuple[UUID, str], list[RouteConfig]] = {}
        missing: set[tuple[UUID, str]] = set()
        for pair in set(pairs):
            entry = self._entries.get(pair)
            if entry is not None and entry[0] > now:
                if entry[1]:
                    found[pair] = entry[1]
            else:
                missing.add(pair)
        if missing:
            loaded = load(missing)
            found.update(loaded)
            if ttl > 0:
                with self._lock:
                    for pair in missing:
                        self._entries[pair] = (now + ttl, loaded.get(pair, []))
                    if len(self._entries) > 50_000:  # bounded: forget the expired ones
                        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        return found

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()


route_cache = RouteCache()
clients.on_reset(route_cache.forget)


def load_routes(conn: Any, pairs: Iterable[tuple[UUID, str]]) -> dict[tuple[UUID, str], list[RouteConfig]]:
    """The active configs of each (tenant, channel) in priority order, for all pairs in one query."""
    wanted = sorted(set(pairs), key=str)
    if not wanted:
        return {}
    rows = conn.execute(
        f"SELECT {ROUTE_COLUMNS} FROM provider_configs"
        " WHERE active AND (tenant_id, channel) IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))"
        " ORDER BY tenant_id, channel, priority",
        ([t for t, _ in wanted], [c for _, c in wanted]),
    ).fetchall()
    routes: dict[tuple[UUID, str], list[RouteConfig]] = {}
    for row in rows:
        routes.setdefault((row["tenant_id"], row["channel"]), []).append(RouteConfig(**row))
    return routes


@dataclass
class _Built:
    key: tuple[Any, ...]
    expires: float
    provider: Provider


class ConfigProviders:
    """One provider instance per config, per container: built from the deployment's endpoints and
    timeouts plus the config's settings and credentials (read from Secrets Manager at the config's
    version), kept for PROVIDER_CONFIG_CACHE_SECONDS or until the config changes. Building one
    config never waits for another's."""

    def __init__(
        self,
        read: Callable[[str, str], Mapping[str, Any]] = read_secret,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._built: dict[UUID, _Built] = {}
        self._locks: dict[UUID, threading.Lock] = {}
        self._lock = threading.Lock()

    def __call__(self, config: RouteConfig) -> Provider:
        key = (config.updated_at, config.secret_version, config.provider)
        built = self._built.get(config.id)
        if built is not None and built.key == key and built.expires > self._clock():
            return built.provider
        with self._lock:
            lock = self._locks.setdefault(config.id, threading.Lock())
        with lock:
            built = self._built.get(config.id)
            if built is not None and built.key == key and built.expires > self._clock():
                return built.provider
            provider = self._build(config)
            old, self._built[config.id] = (
                self._built.get(config.id),
                _Built(key, self._clock() + get_settings().provider_config_cache_seconds, provider),
            )
        if old is not None:
            _close(old.provider)
        return provider

    def _build(self, config: RouteConfig) -> Provider:
        if config.provider not in PROVIDERS:
            raise PermanentProviderError(
                f"config {config.id} names an unknown provider {config.provider!r}", "unknown_provider"
            )
        cls = provider_class(config.provider)
        credentials = (
            self._read(config.secret_arn, config.secret_version)
            if config.secret_arn and config.secret_version
            else {}
        )
        try:
            settings = config_settings(
                config.provider,
                cls.credentials_model,
                cls.options_model,
                _deployment_settings(),
                config.settings,
                credentials,
            )
        except ValidationError as exc:
            raise PermanentProviderError(
                f"config {config.id} cannot be used: {exc.error_count()} invalid setting(s)",
                "not_configured",
                provider=config.provider,
            ) from None
        try:
            return cls(settings)
        except ImportError as exc:
            raise PermanentProviderError(
                f"the {config.provider} SDK is not installed ({exc})",
                "not_configured",
                provider=config.provider,
            ) from exc

    def forget(self) -> None:
        with self._lock:
            built, self._built = self._built, {}
        for item in built.values():
            _close(item.provider)


def _close(provider: Provider) -> None:
    close = getattr(provider, "close", None)
    if callable(close):
        close()


def _deployment_settings() -> ProviderSettings:
    """The deployment's endpoints and timeouts (the environment only: never its provider secret)."""
    return ProviderSettings.from_env(secret_loader=lambda arn: {})


def config_providers() -> ConfigProviders:
    """The container's instances (forgotten by clients.reset())."""
    return clients.get("provider-configs", ConfigProviders, lambda cache: cache.forget())
