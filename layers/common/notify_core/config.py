"""Settings from the environment, validated once per container (cold start)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator

# audience (issue 10): the signing key of unsubscribe links in the dev stage only (see Settings)
DEV_UNSUBSCRIBE_SECRET = "dev-only-unsubscribe-signing-key"  # noqa: S105 - refused outside dev


class SettingsError(RuntimeError):
    """A setting is missing or malformed: the function must not start."""


class Settings(BaseModel):
    stage: str = "dev"
    database_url: str = ""
    database_secret_arn: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "notify:"
    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    notifications_queue_url: str = ""
    aws_endpoint_url: str = ""
    # Where the API is reached from outside (scheme, host, stage path, no trailing slash): provider
    # status callbacks and one-click unsubscribe links point here.
    public_base_url: str = "http://127.0.0.1:3000"
    rate_limit_requests: int = Field(default=600, ge=1)
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    rate_limit_fail_mode: Literal["open", "closed"] = "open"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    # per source address: after this many failed authentications in the window, 429 before any lookup
    auth_failure_limit: int = Field(default=30, ge=1)
    auth_failure_window_seconds: int = Field(default=60, ge=1)
    idempotency_window_hours: int = Field(default=24, ge=1)
    db_pool_max_size: int = Field(default=4, ge=1)
    # Fail fast: all well below the shortest function timeout (the API's 25 s).
    db_pool_timeout_seconds: float = Field(default=3.0, gt=0, le=20)
    db_connect_timeout_seconds: int = Field(default=3, ge=1, le=20)
    db_statement_timeout_ms: int = Field(default=5000, ge=0, le=60_000)  # 0: the server's own
    default_max_attempts: int = Field(default=5, ge=1, le=50)
    # delivery
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_cap_seconds: float = Field(default=3600.0, gt=0)
    # A claim's lease: the invocation's remaining time plus this margin, at most CLAIM_LEASE_SECONDS.
    claim_lease_seconds: int = Field(default=120, ge=5)
    claim_lease_margin_seconds: float = Field(default=5.0, ge=0)
    send_concurrency: int = Field(default=10, ge=1, le=100)
    # Outcomes are committed in small groups while the batch is still sending: at most this long
    # after the send that produced them finished.
    outcome_flush_ms: int = Field(default=50, ge=1, le=5000)
    # A send whose outcome is unknown (the request reached the provider, the answer did not come
    # back): `retry` sends again (at-least-once), `fail` dead-letters it (at-most-once).
    ambiguous_sends: Literal["retry", "fail"] = "retry"
    # A `queued` row whose message can no longer arrive is re-enqueued by the sweeper after this
    # many seconds; 0 derives it from the queue (VisibilityTimeout x maxReceiveCount + max delay).
    stale_queued_seconds: int = Field(default=0, ge=0)
    warm_providers: str = ""  # "sendgrid,twilio": built in the sender's init phase, not its first batch
    provider_rate_limits: str = ""  # "sendgrid=100,twilio=10": messages per second per provider
    recipient_hourly_caps: str = ""  # "sms=10,email=50": per recipient and channel, per hour
    sweep_batch_size: int = Field(default=500, ge=1, le=10_000)
    sweep_max_batches: int = Field(default=20, ge=1)
    dlq_retention_days: int = Field(default=30, ge=1)
    attempt_retention_days: int = Field(default=90, ge=1)
    audit_retention_days: int = Field(default=365, ge=1)
    cleanup_batch_size: int = Field(default=5000, ge=1)
    # ---- audience (issue 10): one-click unsubscribe links (RFC 8058)
    # HMAC key of the signed /u/{token} links. Empty: a fixed development key, refused outside the
    # dev stage (set the UnsubscribeSigningSecret parameter, NoEcho, for staging and prod).
    unsubscribe_signing_secret: SecretStr = SecretStr("")
    unsubscribe_token_days: int = Field(default=60, ge=1, le=3650)

    @model_validator(mode="after")
    def _unsubscribe_secret(self) -> Settings:
        secret = self.unsubscribe_signing_secret.get_secret_value()
        if not secret and self.stage != "dev":
            raise ValueError("UNSUBSCRIBE_SIGNING_SECRET must be set outside the dev stage")
        if secret and len(secret) < 16:
            raise ValueError("UNSUBSCRIBE_SIGNING_SECRET must be at least 16 characters")
        return self

    def unsubscribe_key(self) -> bytes:
        secret = self.unsubscribe_signing_secret.get_secret_value()
        return (secret or DEV_UNSUBSCRIBE_SECRET).encode()

    # --- feedback: provider callbacks and outgoing webhooks (integrations/)
    # A provider callback older (or newer) than this is refused (SendGrid's signed timestamp).
    callback_max_age_seconds: int = Field(default=300, ge=1, le=3600)
    webhook_queue_url: str = ""
    # Local mode: http:// and private/loopback targets allowed (never cloud metadata addresses).
    webhook_allow_private_targets: bool = False
    # Seconds before each retry after the first attempt (Standard Webhooks' schedule, ~27 h in all);
    # jittered by up to 10 %. The delivery fails once every delay is spent.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_connect_timeout_seconds: float = Field(default=3.0, gt=0, le=10)
    webhook_read_timeout_seconds: float = Field(default=10.0, gt=0, le=20)
    webhook_max_response_bytes: int = Field(default=65_536, ge=1024, le=1_048_576)
    webhook_send_concurrency: int = Field(default=10, ge=1, le=50)
    # An endpoint whose delivery has spent its retries while it has been failing this long, without
    # one success, is disabled (and the change audited).
    webhook_disable_after_seconds: int = Field(default=86_400, ge=1)
    # An outbox row (or a due retry) whose message has not been acted on after this long is
    # re-enqueued by the sweeper.
    webhook_outbox_grace_seconds: int = Field(default=60, ge=1)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    def webhook_retry_delays(self) -> tuple[float, ...]:
        return parse_schedule(self.webhook_retry_schedule)

    # ---- operating: provider routes and failover, provider configs (issue 12)
    # Transient provider faults one notification may meet on one config before its next attempt
    # moves to the next config of the route.
    provider_transient_budget: int = Field(default=1, ge=1, le=50)
    # After this many provider faults in a row on one config (in one container), its route skips it
    # for PROVIDER_BREAKER_SECONDS; 0 switches the breaker off.
    provider_breaker_failures: int = Field(default=5, ge=0, le=1000)
    provider_breaker_seconds: float = Field(default=30.0, gt=0, le=3600)
    # How long a container keeps a config's credentials and provider instance before reading again.
    provider_config_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    # How long a sender container keeps a tenant's route for a channel (0: read it for every batch);
    # a changed route applies at once in the container that changed it, within this time elsewhere.
    provider_route_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # Secrets Manager name prefix of the configs' credentials (the functions may touch only these).
    provider_config_secret_prefix: str = Field(
        default="notify/provider-configs/", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9/_+=.@-]+$"
    )

    @field_validator("rate_limit_fail_mode", "ambiguous_sends", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("provider_rate_limits", "recipient_hourly_caps")
    @classmethod
    def _pairs(cls, value: str) -> str:
        parse_pairs(value)
        return value

    def rate_for(self, provider: str) -> int | None:
        return parse_pairs(self.provider_rate_limits).get(provider)

    def cap_for(self, channel: str) -> int | None:
        return parse_pairs(self.recipient_hourly_caps).get(channel)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw = {name: env[name.upper()] for name in cls.model_fields if env.get(name.upper(), "") != ""}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"invalid settings: {problems}") from exc

    def resolved_database_url(self) -> str:
        """The connection URL, from DATABASE_URL or the Secrets Manager secret (RDS secret shape)."""
        if self.database_url:
            return self.database_url
        if not self.database_secret_arn:
            raise SettingsError("DATABASE_URL or DATABASE_SECRET_ARN must be set")
        from . import aws

        secret = aws.client("secretsmanager", endpoint_url=self.aws_endpoint_url or None).get_secret_value(
            SecretId=self.database_secret_arn
        )
        value = secret["SecretString"]
        if value.startswith("postgres"):
            return value
        data = json.loads(value)
        if "url" in data:
            return str(data["url"])
        return (
            f"postgresql://{data['username']}:{data['password']}@{data['host']}:{data.get('port', 5432)}"
            f"/{data.get('dbname', 'postgres')}"
        )


@lru_cache(maxsize=32)
def parse_pairs(text: str) -> dict[str, int]:
    """'a=1,b=2' -> {'a': 1, 'b': 2}; positive integers only."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, number = part.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"expected name=positive integer, got {part!r}")
        out[name.strip()] = int(number)
    return out


@lru_cache(maxsize=8)
def parse_schedule(text: str) -> tuple[float, ...]:
    """'5,300,1800' -> (5.0, 300.0, 1800.0): non-negative seconds, at most 20 of them (feedback)."""
    delays: list[float] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"expected seconds, got {part!r}") from None
        if not 0 <= value <= 86_400 * 7:
            raise ValueError(f"a delay must lie between 0 and 604800 seconds, got {part!r}")
        delays.append(value)
    if len(delays) > 20:
        raise ValueError("at most 20 retries")
    return tuple(delays)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
